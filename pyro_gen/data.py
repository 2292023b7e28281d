"""Data sets for pyro_gen: IDX/MNIST readers, user arrays, binarization.

Every loader returns a :class:`Dataset` whose images are float32 arrays of shape
``(N, C, H, W)``. Bad input raises :class:`DataError` with a one-line message that
names the offending file.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from .errors import InputError

PathLike = Union[str, "os.PathLike[str]"]

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

_BUNDLED_DIR = Path(__file__).resolve().parent / "_bundled"
_BUNDLED_MD5 = {"t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
                "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"}
_BASE_URLS = {"mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
              "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"}
_CHECKSUMS = {
    "mnist": {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
              "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
              "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
              "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"},
    "fashion-mnist": {"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                      "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
                      "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
                      "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"},
}
# IDX type code -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataError(InputError):
    """Bad input data. ``str(e)`` is one line that names the file (when there is one) and the problem."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).splitlines()))


@dataclass
class Dataset:
    """Images as float32 ``(N, C, H, W)`` arrays, with optional int64 labels of shape ``(N,)``
    and optional float32 side vectors of shape ``(N, D)`` (``train_c``, ``test_c``: what a
    conditional VAE may be conditioned on instead of the labels)."""

    name: str
    train_x: np.ndarray
    test_x: np.ndarray
    train_y: Optional[np.ndarray]
    test_y: Optional[np.ndarray]
    train_c: Optional[np.ndarray] = None
    test_c: Optional[np.ndarray] = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """:returns: ``(C, H, W)`` of one image."""
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> Optional[int]:
        """:returns: the largest label + 1, or ``None`` when there are no labels."""
        labels = [y for y in (self.train_y, self.test_y) if y is not None and y.size]
        return int(max(y.max() for y in labels)) + 1 if labels else None

    @property
    def side_dim(self) -> Optional[int]:
        """:returns: D, the size of the side vectors, or ``None`` when there are none."""
        return None if self.train_c is None else int(self.train_c.shape[1])

    def __repr__(self) -> str:
        side = "" if self.side_dim is None else f", side_dim={self.side_dim}"
        return (f"Dataset(name={self.name!r}, train={len(self.train_x)}, test={len(self.test_x)}, "
                f"image_shape={self.image_shape}, num_classes={self.num_classes}{side})")


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise DataError(f"{path}: {'not a regular file' if path.exists() else 'no such file'}")


def _read_bytes(path: Path) -> bytes:
    _check_file(path)
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read file ({e.strerror or e})") from e


def read_idx(path: PathLike) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed; gzip is detected by its magic bytes).

    :param path: the file.
    :returns: the array in native byte order, with the shape stored in the header.
    :raises DataError: missing, truncated or corrupt file, bad magic number or unknown type code.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt gzip data ({e})") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number 0x{raw[:4].hex()})")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES or ndim == 0:
        raise DataError(f"{path}: bad magic number 0x{raw[:4].hex()} (type code 0x{code:02x}, {ndim} dimensions)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX file: header needs {header} bytes, found {len(raw)}")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[code])
    expected, found = math.prod(shape) * dtype.itemsize, len(raw) - header
    if found < expected:
        raise DataError(f"{path}: truncated IDX file: expected {expected} bytes of data, found {found}")
    if found > expected:
        raise DataError(f"{path}: corrupt IDX file: expected {expected} bytes of data, found {found} (trailing bytes)")
    data = np.frombuffer(raw, dtype=dtype, count=math.prod(shape), offset=header)
    return data.reshape(shape).astype(dtype.newbyteorder("="))


def md5sum(path: PathLike) -> str:
    """:param path: a file.
    :returns: its MD5 digest as 32 lowercase hex digits.
    """
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _split(name: str, x: np.ndarray, y: Optional[np.ndarray], c: Optional[np.ndarray] = None) -> Dataset:
    """The protocol split: image ``i`` (with its label and side vector) is a test image iff ``i % 10 == 0``."""
    test = np.arange(len(x)) % 10 == 0

    def parts(a):
        return (None, None) if a is None else (a[~test], a[test])
    return Dataset(name, x[~test], x[test], *parts(y), *parts(c))


def _mnist_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an images/labels IDX pair as (float32 (N,1,H,W) in [0,1], int64 (N,))."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{images_path}: expected uint8 images of shape N x H x W, "
                        f"got {images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{labels_path}: expected {len(images)} labels, got shape {labels.shape}")
    return (images.astype(np.float32) / 255)[:, None], labels.astype(np.int64)


def load_bundled() -> Dataset:
    """The MNIST-10k protocol on the bundled MNIST test files (MD5-verified).

    :returns: ``Dataset`` "mnist-10k": 9000 train / 1000 test images (``i % 10 == 0`` is test),
        float32 ``(N, 1, 28, 28)`` in [0, 1], int64 labels.
    :raises DataError: a bundled file is missing or its MD5 does not match.
    """
    paths = []
    for fname, expected in _BUNDLED_MD5.items():
        path = _BUNDLED_DIR / fname
        actual = hashlib.md5(_read_bytes(path)).hexdigest()
        if actual != expected:
            raise DataError(f"{path}: md5 mismatch: expected {expected}, got {actual}")
        paths.append(path)
    x, y = _mnist_pair(*paths)
    return _split("mnist-10k", x, y)


def default_root(name: str) -> Path:
    """:param name: "mnist" or "fashion-mnist".
    :returns: ``$PYRO_GEN_CACHE/<name>`` if that variable is set, else ``~/.cache/pyro_gen/<name>``.
    """
    base = os.environ.get("PYRO_GEN_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "pyro_gen") / name


def _check_name(name: str) -> None:
    if name not in _CHECKSUMS:
        raise DataError(f"unknown data set {name!r}: expected one of {', '.join(_CHECKSUMS)}")


def load_mnist_folder(root: PathLike, name: str = "mnist") -> Dataset:
    """Read MNIST or Fashion-MNIST (official train/test split) from the four standard IDX files.

    :param root: folder holding the files, each raw or with a ``.gz`` suffix.
    :param name: "mnist" or "fashion-mnist" (used for the data set name and the error hint).
    :returns: ``Dataset`` with float32 ``(N, 1, 28, 28)`` images in [0, 1] and int64 labels.
    :raises DataError: unknown name, missing or bad files.
    """
    _check_name(name)
    root = Path(root)
    found = [next((root / f for f in (b, b + ".gz") if (root / f).is_file()), None) for b in MNIST_FILES]
    missing = [b + "[.gz]" for b, f in zip(MNIST_FILES, found) if f is None]
    if missing:
        raise DataError(f"{root}: missing {', '.join(missing)}; fetch them with "
                        f"pyro_gen.data.download({name!r}, {str(root)!r})")
    train_x, train_y = _mnist_pair(found[0], found[1])
    test_x, test_y = _mnist_pair(found[2], found[3])
    return Dataset(name, train_x, test_x, train_y, test_y)


def download(name: str, root: Optional[PathLike] = None, progress: bool = True, *,
             base_url: Optional[str] = None) -> Path:
    """Fetch the four ``.gz`` files of "mnist" or "fashion-mnist", verifying each MD5.

    Files already present with the right MD5 are skipped; the others are written atomically.

    :param name: "mnist" or "fashion-mnist".
    :param root: target folder; default :func:`default_root` ``(name)``.
    :param progress: print one line per file to stderr.
    :param base_url: override the mirror (e.g. a ``file://`` URL in tests).
    :returns: the folder holding the files.
    :raises DataError: unknown name, network error or checksum mismatch.
    """
    _check_name(name)
    root = Path(root) if root is not None else default_root(name)
    root.mkdir(parents=True, exist_ok=True)
    base = (base_url or _BASE_URLS[name]).rstrip("/") + "/"
    for fname, expected in _CHECKSUMS[name].items():
        target = root / fname
        if target.is_file() and md5sum(target) == expected:
            continue
        url = base + fname
        if progress:
            print(f"pyro_gen: downloading {url}", file=sys.stderr, flush=True)
        fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{fname}.", suffix=".part")
        try:
            digest = hashlib.md5()
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != expected:
                raise DataError(f"{url}: md5 mismatch: expected {expected}, got {digest.hexdigest()}")
            os.replace(tmp, target)
        except (urllib.error.URLError, OSError) as e:
            raise DataError(f"{url}: download failed ({getattr(e, 'reason', None) or e})") from e
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return root


def _load_arrays(path: Path) -> tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
    """Read (images, labels or None, side vectors or None) from a .npz, .npy or IDX file."""
    name = path.name.lower()
    if "idx" in name and not name.endswith((".npz", ".npy")):
        return read_idx(path), None, None
    if not name.endswith((".npz", ".npy")):
        raise DataError(f"{path}: unsupported file type {path.suffix or '(no suffix)'!r}: "
                        "expected .npz, .npy or an IDX file")
    _check_file(path)
    try:  # open the file ourselves: np.load leaks its handle when a .npz is corrupt
        with open(path, "rb") as f:
            loaded = np.load(f, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                return loaded, None, None
            with loaded:
                if "images" not in loaded.files:
                    raise DataError(f"{path}: no array named 'images' in .npz "
                                    f"(it has: {', '.join(loaded.files) or 'no arrays'})")
                return tuple(loaded[k] if k in loaded.files else None for k in ("images", "labels", "condition"))
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        if isinstance(e, DataError):
            raise
        if "Object arrays" in str(e):
            raise DataError(f"{path}: contains object arrays, which are not loaded (allow_pickle=False); "
                            "save plain numeric arrays") from e
        if "pickled" in str(e):
            raise DataError(f"{path}: unreadable or corrupt file: not a NumPy .npy/.npz file") from e
        raise DataError(f"{path}: unreadable or corrupt file ({type(e).__name__}: {e})") from e


def _finite_float32(path: Path, a: np.ndarray, what: str = "") -> np.ndarray:
    """``a`` as float32, or a :class:`DataError` counting its NaN, infinite or float32-overflowing
    values (``what`` names the array in the message)."""
    with np.errstate(over="ignore"):
        x = a.astype(np.float32)
    bad = int(np.count_nonzero(~np.isfinite(x)))
    if bad:
        raise DataError(f"{path}: {bad} of {x.size} values{what} are NaN or infinite (or too large for float32)")
    return x


def _as_images(path: Path, images: np.ndarray, likelihood: str) -> np.ndarray:
    """Check and convert images to float32 (N, C, H, W)."""
    if images.size == 0:
        raise DataError(f"{path}: empty array of shape {images.shape}")
    if images.ndim not in (2, 3, 4):
        raise DataError(f"{path}: wrong rank: expected images of shape N x D, N x H x W or "
                        f"N x C x H x W, got shape {images.shape}")
    if len(images) < 2:
        raise DataError(f"{path}: need at least 2 images (for a train and a test split), got {len(images)}")
    kind = images.dtype.kind
    if kind == "b":
        x = images.astype(np.float32)
    elif kind in "iu":
        lo, hi = int(images.min()), int(images.max())
        if images.dtype != np.uint8 and (lo < 0 or hi > 255):
            raise DataError(f"{path}: integer pixel values out of range: expected 0..255, "
                            f"got min {lo}, max {hi}")
        x = images.astype(np.float32) / 255
    elif kind == "f":
        x = _finite_float32(path, images)
        lo, hi = float(x.min()), float(x.max())
        if not likelihood.startswith("gaussian") and (lo < 0 or hi > 1):
            raise DataError(f"{path}: values out of range for the {likelihood} likelihood: expected [0, 1], "
                            f"got min {lo:g}, max {hi:g} (rescale, or use likelihood 'gaussian')")
    else:
        raise DataError(f"{path}: unsupported dtype {images.dtype}: expected integer or float images")
    if x.ndim == 2:
        return x[:, None, None, :]
    return x[:, None] if x.ndim == 3 else x


def _as_labels(path: Path, labels: np.ndarray, n: int) -> np.ndarray:
    """Check labels: integer-valued, non-negative, shape (n,)."""
    if labels.shape != (n,):
        raise DataError(f"{path}: labels have the wrong length: expected shape ({n},), got {labels.shape}")
    if labels.dtype.kind == "f" and np.isfinite(labels).all() and (labels == np.round(labels)).all():
        labels = labels.astype(np.int64)
    if labels.dtype.kind not in "iu":
        raise DataError(f"{path}: labels must be integers, got dtype {labels.dtype}")
    if labels.min() < 0:
        raise DataError(f"{path}: labels must be non-negative, got min {labels.min()}")
    return labels.astype(np.int64)


def _as_side_vectors(path: Path, c: np.ndarray, n: int) -> np.ndarray:
    """Check side vectors: finite numbers, shape (n, D) or (n,) (then D = 1); float32 (n, D)."""
    if c.ndim not in (1, 2) or len(c) != n or c.size == 0:
        raise DataError(f"{path}: the 'condition' array must have shape ({n}, D) (one side vector per image), "
                        f"got {c.shape}")
    if c.dtype.kind not in "biuf":
        raise DataError(f"{path}: the 'condition' array must hold numbers, got dtype {c.dtype}")
    return _finite_float32(path, c, " of the 'condition' array").reshape(n, -1)


def load_array_file(path: PathLike, likelihood: str = "bernoulli") -> Dataset:
    """Load user images from ``.npz`` (arrays "images", optional "labels" and "condition"),
    ``.npy`` or IDX.

    Images may be ``N x H x W`` (one channel), ``N x C x H x W`` or flat ``N x D``
    (shape ``(1, 1, D)``), of any size. uint8 (or integers in 0..255) are divided by 255;
    floats must lie in [0, 1] unless ``likelihood`` is a Gaussian one ("gaussian", "gaussian-learned").
    "labels" are non-negative integers ``(N,)``; "condition" holds a side vector per image,
    ``(N, D)`` numbers (``(N,)`` is read as D = 1), that a conditional VAE can be conditioned on.
    Split: ``i % 10 == 0`` is test.

    :param path: the file.
    :param likelihood: name of the likelihood the data is meant for (see :mod:`pyro_gen.likelihoods`).
    :returns: ``Dataset`` named after the path.
    :raises DataError: on any problem with the file or its contents.
    """
    path = Path(path)
    images, labels, side = _load_arrays(path)
    x = _as_images(path, images, likelihood)
    y = None if labels is None else _as_labels(path, labels, len(x))
    c = None if side is None else _as_side_vectors(path, side, len(x))
    return _split(str(path), x, y, c)


def load_data(spec: str, likelihood: str = "bernoulli", root: Optional[PathLike] = None) -> Dataset:
    """Load a data set by name or path.

    :param spec: "mnist-10k" (bundled), "mnist" / "fashion-mnist" (from ``root``), or a file path.
    :param likelihood: passed to :func:`load_array_file` for files.
    :param root: folder for "mnist" / "fashion-mnist"; default :func:`default_root`.
    :returns: the ``Dataset``.
    :raises DataError: unknown name, missing or bad data.
    """
    key = str(spec).lower()
    if key == "mnist-10k":
        return load_bundled()
    if key in _CHECKSUMS:
        return load_mnist_folder(root if root is not None else default_root(key), key)
    path = Path(spec)
    looks_like_file = path.suffix.lower() in (".npz", ".npy", ".gz") or "idx" in key or os.sep in str(spec)
    if path.exists() or looks_like_file:
        return load_array_file(path, likelihood)
    raise DataError(f"unknown data set {str(spec)!r}: expected mnist-10k, mnist, fashion-mnist "
                    "or a .npz/.npy file")


def binarize(x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Dynamic binarization: each pixel is 1 with probability equal to its value.

    :param x: probabilities in [0, 1].
    :param generator: optional random generator.
    :returns: a 0/1 tensor of the same shape and dtype.
    """
    return torch.bernoulli(x, generator=generator)


def binarize_fixed(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """The protocol's fixed binarization, reproducible from ``seed``.

    :param x: probabilities in [0, 1].
    :param seed: seed for ``np.random.default_rng``.
    :returns: float32 0/1 array of the same shape.
    """
    return (np.random.default_rng(seed).random(x.shape) < x).astype(np.float32)
