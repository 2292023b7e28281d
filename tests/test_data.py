"""Tests for pyro_gen.data. They use only the bundled MNIST test files and tmp folders (no network)."""
import gzip
import hashlib
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_gen import data
from pyro_gen.data import DataError

BUNDLED = data._BUNDLED_DIR
IMAGES_GZ = BUNDLED / "t10k-images-idx3-ubyte.gz"
LABELS_GZ = BUNDLED / "t10k-labels-idx1-ubyte.gz"


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    """Encode arr as an IDX file (big-endian payload)."""
    big = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(big).tobytes()


def write(path: Path, payload: bytes, gz: bool = False) -> Path:
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def raises_one_line(fn, *args, path=None, phrases=(), **kwargs) -> str:
    """Call fn, expect DataError; check it is one line naming path and containing each phrase."""
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg and "\r" not in msg, msg
    if path is not None:
        assert str(path) in msg, msg
    for phrase in phrases:
        assert phrase in msg, msg
    return msg


@pytest.fixture(scope="module")
def mnist_raw():
    return data.read_idx(IMAGES_GZ), data.read_idx(LABELS_GZ)


# --------------------------------------------------------------------------- read_idx

def test_read_idx_real_files(mnist_raw):
    images, labels = mnist_raw
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    assert labels[0] == 7 and labels[1] == 2  # well-known first MNIST test labels
    assert images.max() == 255 and images[0, 0, 0] == 0
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_read_idx_raw_and_gz_identical(tmp_path, mnist_raw):
    raw = write(tmp_path / "t10k-images-idx3-ubyte", gzip.decompress(IMAGES_GZ.read_bytes()))
    np.testing.assert_array_equal(data.read_idx(raw), mnist_raw[0])
    # gzip is detected by magic bytes, not by the suffix (both directions)
    no_suffix = tmp_path / "labels-compressed"
    shutil.copy(LABELS_GZ, no_suffix)
    np.testing.assert_array_equal(data.read_idx(no_suffix), mnist_raw[1])
    fake_gz = write(tmp_path / "labels-raw.gz", gzip.decompress(LABELS_GZ.read_bytes()))
    np.testing.assert_array_equal(data.read_idx(fake_gz), mnist_raw[1])


@pytest.mark.parametrize("code, values", [
    (0x08, np.array([[0, 1, 255]], np.uint8)),
    (0x09, np.array([-128, -1, 127], np.int8)),
    (0x0B, np.array([[-30000, 2], [3, 4]], np.int16)),
    (0x0C, np.array([-(2 ** 31), 70000, 2 ** 31 - 1], np.int32)),
    (0x0D, np.array([[[1.5, -2.25]]], np.float32)),
    (0x0E, np.array([1e300, -1e-300, 0.1], np.float64)),
])
def test_read_idx_all_types_big_endian(tmp_path, code, values):
    out = data.read_idx(write(tmp_path / "x.idx", idx_bytes(values, code)))
    assert out.dtype == values.dtype and out.dtype.isnative
    np.testing.assert_array_equal(out, values)


@pytest.mark.parametrize("payload, phrases", [
    (idx_bytes(np.arange(20, dtype=np.uint8).reshape(4, 5))[:-1],
     ["truncated IDX file: expected 20 bytes of data, found 19"]),
    (bytes([0, 0, 8, 3, 0, 0]), ["truncated IDX file", "header"]),
    (idx_bytes(np.zeros(3, np.uint8)) + b"\0", ["trailing bytes"]),
    (b"\x01\x02\x08\x01" + b"\0" * 8, ["bad magic number"]),
    (b"PK\x03\x04 not idx at all", ["bad magic number"]),
    (bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 5]), ["bad magic number", "type code 0x07"]),
    (bytes([0, 0, 8, 0]), ["bad magic number", "0 dimensions"]),
    (b"", ["bad magic number"]),
])
def test_read_idx_bad_files(tmp_path, payload, phrases):
    path = write(tmp_path / "bad-idx1-ubyte", payload)
    raises_one_line(data.read_idx, path, path=path, phrases=phrases)


def test_read_idx_bad_gzip(tmp_path):
    garbage = write(tmp_path / "garbage.gz", b"\x1f\x8b" + b"this is not deflate data" * 3)
    raises_one_line(data.read_idx, garbage, path=garbage, phrases=["corrupt gzip"])
    cut = write(tmp_path / "cut.gz", LABELS_GZ.read_bytes()[:2000])
    raises_one_line(data.read_idx, cut, path=cut, phrases=["corrupt gzip"])
    # a valid gzip stream around a truncated IDX payload
    short = write(tmp_path / "short.gz", idx_bytes(np.zeros((2, 3), np.uint8))[:-2], gz=True)
    raises_one_line(data.read_idx, short, path=short, phrases=["expected 6 bytes of data, found 4"])


def test_read_idx_missing_and_directory(tmp_path):
    missing = tmp_path / "nope-idx3-ubyte"
    raises_one_line(data.read_idx, missing, path=missing, phrases=["no such file"])
    raises_one_line(data.read_idx, tmp_path, path=tmp_path, phrases=["not a regular file"])


def test_md5sum():
    assert data.md5sum(IMAGES_GZ) == "9fb629c4189551a2d022fa330f9573f3"
    assert data.md5sum(LABELS_GZ) == hashlib.md5(LABELS_GZ.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- bundled protocol

def test_load_bundled_protocol(mnist_raw):
    images, labels = mnist_raw
    ds = data.load_bundled()
    assert ds.name == "mnist-10k"
    assert ds.train_x.shape == (9000, 1, 28, 28) and ds.test_x.shape == (1000, 1, 28, 28)
    assert ds.train_x.dtype == np.float32 and ds.test_x.dtype == np.float32
    assert ds.train_y.dtype == np.int64 and ds.train_y.shape == (9000,) and ds.test_y.shape == (1000,)
    np.testing.assert_array_equal(ds.test_x[0, 0], images[0].astype(np.float32) / 255)
    np.testing.assert_array_equal(ds.test_x[1, 0], images[10].astype(np.float32) / 255)
    np.testing.assert_array_equal(ds.train_x[0, 0], images[1].astype(np.float32) / 255)
    np.testing.assert_array_equal(ds.train_x[9, 0], images[11].astype(np.float32) / 255)
    np.testing.assert_array_equal(ds.test_y, labels[::10])
    np.testing.assert_array_equal(ds.train_y, labels[np.arange(10000) % 10 != 0])
    assert ds.test_y[0] == 7
    for x in (ds.train_x, ds.test_x):
        assert x.min() == 0.0 and x.max() == 1.0
    assert ds.image_shape == (1, 28, 28) and ds.num_classes == 10
    assert "mnist-10k" in repr(ds) and "9000" in repr(ds)


def test_load_bundled_md5_mismatch(tmp_path, monkeypatch):
    copy = tmp_path / "bundled"
    shutil.copytree(BUNDLED, copy)
    bad = copy / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(bad.read_bytes() + b"\0")
    monkeypatch.setattr(data, "_BUNDLED_DIR", copy)
    actual = hashlib.md5(bad.read_bytes()).hexdigest()
    raises_one_line(data.load_bundled, path=bad,
                    phrases=["md5 mismatch", "ec29112dd5afa0611ce80d1b7f02629c", actual])
    bad.unlink()
    raises_one_line(data.load_bundled, path=bad, phrases=["no such file"])


def test_load_bundled_expected_md5_patched(monkeypatch):
    monkeypatch.setitem(data._BUNDLED_MD5, "t10k-images-idx3-ubyte.gz", "0" * 32)
    raises_one_line(data.load_bundled, path=IMAGES_GZ, phrases=["md5 mismatch", "0" * 32])


# --------------------------------------------------------------------------- binarization

def test_binarize_fixed_reproduces_protocol():
    test = data.load_bundled().test_x
    out = data.binarize_fixed(test)
    np.testing.assert_array_equal(out, np.random.default_rng(0).random(test.shape) < test)
    assert out.dtype == np.float32 and out.shape == test.shape
    np.testing.assert_array_equal(out, data.binarize_fixed(test, seed=0))
    assert not np.array_equal(out, data.binarize_fixed(test, seed=1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_binarize_dynamic(dtype):
    x = torch.linspace(0, 1, 200_001, dtype=dtype)  # mean 0.5
    out = data.binarize(x, generator=torch.Generator().manual_seed(0))
    assert out.dtype == dtype and out.shape == x.shape
    assert set(out.unique().tolist()) == {0.0, 1.0}
    # std of the mean is about sqrt(1/6 / 2e5) ~ 0.0009, so 0.005 is over 5 sigma
    assert abs(out.mean().item() - x.mean().item()) < 0.005
    again = data.binarize(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    assert torch.equal(data.binarize(torch.tensor([0.0, 1.0], dtype=dtype)), torch.tensor([0.0, 1.0], dtype=dtype))


# --------------------------------------------------------------------------- user array files

def test_npz_uint8_nhw_any_size_with_labels(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(25, 16, 12), dtype=np.uint8)
    labels = np.arange(25) % 4
    path = tmp_path / "mine.npz"
    np.savez(path, images=images, labels=labels)
    ds = data.load_array_file(path)
    assert ds.name == str(path)
    assert ds.train_x.shape == (22, 1, 16, 12) and ds.test_x.shape == (3, 1, 16, 12)
    assert ds.train_x.dtype == np.float32 and ds.image_shape == (1, 16, 12)
    np.testing.assert_array_equal(ds.test_x[:, 0], images[::10].astype(np.float32) / 255)
    np.testing.assert_array_equal(ds.train_x[0, 0], images[1].astype(np.float32) / 255)
    np.testing.assert_array_equal(ds.test_y, labels[::10])
    assert ds.train_y.dtype == np.int64 and ds.num_classes == 4


def test_npz_side_vectors_split_with_their_images(tmp_path):
    """A .npz "condition" array gives float32 side vectors (N, D), split like the images; (N,) is D = 1."""
    images = np.random.default_rng(0).integers(0, 256, size=(23, 4, 4), dtype=np.uint8)
    side = np.arange(46, dtype=np.int64).reshape(23, 2)
    np.savez(tmp_path / "side.npz", images=images, condition=side)
    ds = data.load_array_file(tmp_path / "side.npz")
    assert ds.side_dim == 2 and ds.train_c.dtype == np.float32 and ds.train_y is None
    np.testing.assert_array_equal(ds.test_c, side[::10].astype(np.float32))
    np.testing.assert_array_equal(ds.train_c[:2], side[[1, 2]].astype(np.float32))
    assert ds.train_c.shape == (20, 2) and ds.test_c.shape == (3, 2)
    np.savez(tmp_path / "one.npz", images=images, labels=np.arange(23) % 3, condition=np.linspace(0, 1, 23))
    ds = data.load_array_file(tmp_path / "one.npz")
    assert ds.side_dim == 1 and ds.num_classes == 3 and ds.test_c.shape == (3, 1)
    np.testing.assert_allclose(ds.test_c[:, 0], np.linspace(0, 1, 23)[::10].astype(np.float32))
    assert data.load_array_file(tmp_path / "side.npz").side_dim == 2 and data.load_bundled().side_dim is None


def test_npy_float_nchw_and_flat(tmp_path):
    x = np.random.default_rng(1).random((12, 3, 8, 5))
    path = tmp_path / "rgb.npy"
    np.save(path, x)
    ds = data.load_array_file(path)
    assert ds.image_shape == (3, 8, 5) and len(ds.train_x) == 10 and len(ds.test_x) == 2
    assert ds.train_y is None and ds.test_y is None and ds.num_classes is None
    np.testing.assert_allclose(ds.test_x[1], x[10].astype(np.float32))
    flat = tmp_path / "flat.npz"
    np.savez(flat, images=x.reshape(12, -1).astype(np.float32))
    ds = data.load_array_file(flat, likelihood="cbernoulli")
    assert ds.image_shape == (1, 1, 120) and ds.train_x.dtype == np.float32
    np.testing.assert_array_equal(ds.train_x[0, 0, 0], x[1].reshape(-1).astype(np.float32))


def test_array_file_other_dtypes(tmp_path):
    ints = np.array([[0, 128], [255, 3]], np.int64)
    np.save(tmp_path / "ints.npy", ints)
    ds = data.load_array_file(tmp_path / "ints.npy")
    np.testing.assert_allclose(ds.test_x.ravel(), [0, 128 / 255], rtol=1e-6)
    wide = np.array([[-3.0, 7.5], [0.0, 1.0]])
    np.save(tmp_path / "wide.npy", wide)
    ds = data.load_array_file(tmp_path / "wide.npy", likelihood="gaussian")
    np.testing.assert_array_equal(ds.test_x.ravel(), [-3.0, 7.5])
    np.savez(tmp_path / "lab.npz", images=np.zeros((3, 2, 2)), labels=np.array([0.0, 2.0, 1.0]))
    assert data.load_array_file(tmp_path / "lab.npz").num_classes == 3
    raw = write(tmp_path / "x-idx3-ubyte.gz", idx_bytes(np.full((4, 3, 2), 51, np.uint8)), gz=True)
    ds = data.load_array_file(raw)
    assert ds.image_shape == (1, 3, 2) and ds.train_x.max() == pytest.approx(0.2)


def _obj_npz(p):
    np.savez(p, images=np.array([1, "a", None], dtype=object))


BAD_ARRAY_CASES = {
    "missing.npz": (None, ["no such file"]),
    "images.txt": (lambda p: p.write_text("1 2 3"), ["unsupported file type", "'.txt'"]),
    "noimages.npz": (lambda p: np.savez(p, x=np.zeros(3), y=np.zeros(3)), ["no array named 'images'", "x, y"]),
    "short_labels.npz": (lambda p: np.savez(p, images=np.zeros((5, 2, 2)), labels=np.zeros(4, int)),
                         ["wrong length", "(5,)", "(4,)"]),
    "frac_labels.npz": (lambda p: np.savez(p, images=np.zeros((5, 2, 2)), labels=np.full(5, 0.5)),
                        ["labels must be integers"]),
    "neg_labels.npz": (lambda p: np.savez(p, images=np.zeros((5, 2, 2)), labels=np.array([0, 1, -2, 0, 1])),
                       ["non-negative", "-2"]),
    "short_condition.npz": (lambda p: np.savez(p, images=np.zeros((5, 2, 2)), condition=np.zeros((4, 2))),
                            ["'condition' array must have shape (5, D)", "(4, 2)"]),
    "rank3_condition.npz": (lambda p: np.savez(p, images=np.zeros((5, 2, 2)), condition=np.zeros((5, 2, 2))),
                            ["'condition' array must have shape (5, D)", "(5, 2, 2)"]),
    "text_condition.npz": (lambda p: np.savez(p, images=np.zeros((5, 2, 2)), condition=np.array(list("abcde"))),
                           ["'condition' array must hold numbers", "<U1"]),
    "nan_condition.npz": (lambda p: np.savez(p, images=np.zeros((5, 2, 2)), condition=np.array([0, np.nan, 1, 2, np.inf])),
                          ["2 of 5 values of the 'condition' array are NaN or infinite"]),
    "nan.npy": (lambda p: np.save(p, np.array([[np.nan, 0.5], [np.inf, np.nan]])), ["3 of 4 values are NaN or infinite"]),
    "range.npy": (lambda p: np.save(p, np.array([[0.0, 2.0], [-0.5, 1.0]])),
                  ["out of range for the bernoulli likelihood", "min -0.5", "max 2"]),
    "int16.npy": (lambda p: np.save(p, np.array([[0, 300], [1, 2]], np.int16)), ["0..255", "max 300"]),
    "overflow.npy": (lambda p: np.save(p, np.array([[0.0, 1e300], [1.0, 2.0]])), ["1 of 4 values are NaN or infinite (or too large for float32)"]),
    "rank1.npy": (lambda p: np.save(p, np.zeros(5)), ["wrong rank", "(5,)"]),
    "rank5.npy": (lambda p: np.save(p, np.zeros((2, 1, 1, 2, 2))), ["wrong rank", "(2, 1, 1, 2, 2)"]),
    "empty.npy": (lambda p: np.save(p, np.zeros((0, 28, 28))), ["empty array", "(0, 28, 28)"]),
    "one.npy": (lambda p: np.save(p, np.zeros((1, 4, 4))), ["at least 2 images"]),
    "complex.npy": (lambda p: np.save(p, np.zeros((2, 2), complex)), ["unsupported dtype complex128"]),
    "garbage.npy": (lambda p: p.write_bytes(b"definitely not numpy"), ["unreadable or corrupt"]),
    "truncated.npy": (lambda p: (np.save(p, np.zeros((50, 5, 5))), p.write_bytes(p.read_bytes()[:-30])),
                      ["unreadable or corrupt"]),
    "truncated.npz": (lambda p: (np.savez(p, images=np.zeros((50, 5, 5))), p.write_bytes(p.read_bytes()[:-30])),
                      ["unreadable or corrupt"]),
    "object.npy": (lambda p: np.save(p, np.array([1, "a", None], dtype=object), allow_pickle=True),
                   ["object arrays"]),
    "object.npz": (_obj_npz, ["object arrays"]),
}


@pytest.mark.parametrize("fname", sorted(BAD_ARRAY_CASES))
def test_array_file_bad_inputs(tmp_path, fname):
    make, phrases = BAD_ARRAY_CASES[fname]
    path = tmp_path / fname
    if make is not None:
        make(path)
    raises_one_line(data.load_array_file, path, path=path, phrases=phrases)


def test_array_file_likelihood_ranges(tmp_path):
    path = tmp_path / "wide.npy"
    np.save(path, np.array([[-1.0, 5.0], [1.0, 2.0]]))
    assert data.load_array_file(path, likelihood="gaussian-learned").test_x.max() == 5.0
    raises_one_line(data.load_array_file, path, likelihood="cbernoulli", path=path,
                    phrases=["out of range for the cbernoulli likelihood"])
    np.save(path, np.array([[np.nan, 5.0], [1.0, 2.0]]))
    raises_one_line(data.load_array_file, path, likelihood="gaussian", path=path, phrases=["NaN or infinite"])


# --------------------------------------------------------------------------- MNIST folders, download

@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A file:// mirror with the real t10k files and tiny fake train files (their md5 patched in)."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    for f in (IMAGES_GZ, LABELS_GZ):
        shutil.copy(f, folder / f.name)
    train_x = np.arange(5 * 28 * 28, dtype=np.uint8).reshape(5, 28, 28)
    write(folder / "train-images-idx3-ubyte.gz", idx_bytes(train_x), gz=True)
    write(folder / "train-labels-idx1-ubyte.gz", idx_bytes(np.array([3, 1, 4, 1, 5], np.uint8)), gz=True)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        monkeypatch.setitem(data._CHECKSUMS["mnist"], name, data.md5sum(folder / name))
    return folder


def test_download_and_load_folder(tmp_path, mirror, mnist_raw):
    root = data.download("mnist", tmp_path / "cache", progress=False, base_url=mirror.as_uri())
    assert root == tmp_path / "cache"
    assert sorted(os.listdir(root)) == sorted(data._CHECKSUMS["mnist"])
    for name, md5 in data._CHECKSUMS["mnist"].items():
        assert data.md5sum(root / name) == md5
    ds = data.load_mnist_folder(root)
    assert ds.name == "mnist" and ds.train_x.shape == (5, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert ds.train_y.tolist() == [3, 1, 4, 1, 5] and ds.test_y.dtype == np.int64
    np.testing.assert_array_equal(ds.test_x[3, 0], mnist_raw[0][3].astype(np.float32) / 255)
    assert data.load_data("mnist", root=root).train_x.shape == (5, 1, 28, 28)


def test_download_skips_good_files_and_replaces_bad_ones(tmp_path, mirror):
    root = data.download("mnist", tmp_path / "cache", progress=False, base_url=mirror.as_uri())
    empty = tmp_path / "empty"
    empty.mkdir()
    data.download("mnist", root, progress=False, base_url=empty.as_uri())  # nothing fetched, so no error
    (root / "train-labels-idx1-ubyte.gz").write_bytes(b"stale")
    data.download("mnist", root, progress=False, base_url=mirror.as_uri())
    assert data.read_idx(root / "train-labels-idx1-ubyte.gz").tolist() == [3, 1, 4, 1, 5]


def test_download_checksum_mismatch_leaves_no_partial_file(tmp_path, mirror, monkeypatch):
    monkeypatch.setitem(data._CHECKSUMS["mnist"], "train-labels-idx1-ubyte.gz", "f" * 32)
    root = tmp_path / "cache"
    raises_one_line(data.download, "mnist", root, progress=False, base_url=mirror.as_uri(),
                    path="train-labels-idx1-ubyte.gz", phrases=["md5 mismatch", "f" * 32])
    assert os.listdir(root) == ["train-images-idx3-ubyte.gz"]  # the good file before it, nothing else


def test_download_missing_remote_file(tmp_path, mirror, capsys):
    (mirror / "t10k-images-idx3-ubyte.gz").unlink()
    root = tmp_path / "cache"
    raises_one_line(data.download, "mnist", root, base_url=mirror.as_uri(),
                    path="t10k-images-idx3-ubyte.gz", phrases=["download failed"])
    assert sorted(os.listdir(root)) == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    assert "downloading" in capsys.readouterr().err


def test_download_default_root_and_unknown_name(tmp_path, mirror, monkeypatch):
    monkeypatch.setenv("PYRO_GEN_CACHE", str(tmp_path / "env-cache"))
    assert data.default_root("fashion-mnist") == tmp_path / "env-cache" / "fashion-mnist"
    root = data.download("mnist", progress=False, base_url=mirror.as_uri())
    assert root == tmp_path / "env-cache" / "mnist" and len(os.listdir(root)) == 4
    monkeypatch.delenv("PYRO_GEN_CACHE")
    assert data.default_root("mnist") == Path.home() / ".cache" / "pyro_gen" / "mnist"
    raises_one_line(data.download, "cifar", tmp_path, phrases=["unknown data set 'cifar'"])


def test_load_mnist_folder_raw_and_gz_mixed(tmp_path, mirror):
    root = tmp_path / "fashion"
    root.mkdir()
    for f in mirror.iterdir():
        if f.name.startswith("train"):
            write(root / f.name[:-3], gzip.decompress(f.read_bytes()))  # uncompressed copies
        else:
            shutil.copy(f, root / f.name)
    ds = data.load_mnist_folder(root, name="fashion-mnist")
    assert ds.name == "fashion-mnist" and len(ds.train_x) == 5 and len(ds.test_x) == 10000
    assert ds.num_classes == 10


def test_load_mnist_folder_missing_files(tmp_path):
    shutil.copy(IMAGES_GZ, tmp_path / IMAGES_GZ.name)
    msg = raises_one_line(data.load_mnist_folder, tmp_path, path=tmp_path,
                          phrases=["missing", "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                   "t10k-labels-idx1-ubyte", "pyro_gen.data.download('mnist'"])
    assert "t10k-images" not in msg
    raises_one_line(data.load_mnist_folder, tmp_path, name="kmnist", phrases=["unknown data set"])


def test_load_mnist_folder_inconsistent_files(tmp_path, mirror):
    for f in mirror.iterdir():
        shutil.copy(f, tmp_path / f.name)
    labels = write(tmp_path / "train-labels-idx1-ubyte.gz", idx_bytes(np.zeros(4, np.uint8)), gz=True)
    raises_one_line(data.load_mnist_folder, tmp_path, path=labels, phrases=["expected 5 labels"])


# --------------------------------------------------------------------------- load_data

def test_load_data_dispatch(tmp_path, monkeypatch):
    ds = data.load_data("mnist-10k")
    assert ds.name == "mnist-10k" and len(ds.test_x) == 1000
    path = tmp_path / "mine.npz"
    np.savez(path, images=np.zeros((4, 3, 3), np.uint8))
    assert data.load_data(str(path)).image_shape == (1, 3, 3)
    raises_one_line(data.load_data, "cifar10", phrases=["unknown data set 'cifar10'", "mnist-10k", ".npz/.npy"])
    missing = tmp_path / "absent.npz"
    raises_one_line(data.load_data, str(missing), path=missing, phrases=["no such file"])
    monkeypatch.setenv("PYRO_GEN_CACHE", str(tmp_path / "cache"))
    raises_one_line(data.load_data, "fashion-mnist", path=tmp_path / "cache" / "fashion-mnist",
                    phrases=["missing", "download('fashion-mnist'"])
