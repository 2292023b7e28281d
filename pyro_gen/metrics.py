"""Sample-quality metrics shared by every model: a domain classifier, FID, precision/recall,
density/coverage and class statistics.

A likelihood (:mod:`pyro_gen.evaluate`) says how much probability a model puts on held-out
data; it does not say whether its samples look like data, and the two can disagree arbitrarily
(Theis, van den Oord & Bethge 2016, "A note on the evaluation of generative models"). The
metrics here judge samples only, so they apply equally to a VAE, an autoencoder and a GAN.

**Domain classifier.** Instead of an ImageNet Inception network (a download, and a poor
feature space for 28x28 digits), a small CNN is trained on the training split of the data in
use and its penultimate activations :math:`\\phi(x) \\in \\mathbb{R}^F` are the feature space.
It is trained once per data set and cached (:func:`domain_classifier`).

**Fréchet distance** (Heusel et al. 2017, "GANs trained by a two time-scale update rule converge
to a local Nash equilibrium"): Gaussians fitted to the features of two image sets,

.. math::

    \\mathrm{FID} = \\lVert \\mu_1 - \\mu_2 \\rVert^2
        + \\operatorname{Tr}\\bigl(\\Sigma_1 + \\Sigma_2 - 2 (\\Sigma_1 \\Sigma_2)^{1/2}\\bigr),

computed in float64 as
:math:`\\operatorname{Tr}(\\Sigma_1\\Sigma_2)^{1/2} = \\operatorname{Tr}(\\Sigma_1^{1/2}\\Sigma_2\\Sigma_1^{1/2})^{1/2}`,
the square root of a symmetric positive semi-definite matrix taken by eigendecomposition.

**Precision, recall, density, coverage** by k-nearest neighbours in feature space. With
:math:`\\mathrm{NND}_k(x)` the distance from a point to its k-th nearest neighbour within its own
set, real points :math:`X_1..X_N` and generated points :math:`Y_1..Y_M`:

.. math::

    \\text{precision} &= \\tfrac1M \\textstyle\\sum_j 1[\\exists i: \\lVert Y_j - X_i\\rVert \\le \\mathrm{NND}_k(X_i)], \\\\
    \\text{recall} &= \\tfrac1N \\textstyle\\sum_i 1[\\exists j: \\lVert X_i - Y_j\\rVert \\le \\mathrm{NND}_k(Y_j)], \\\\
    \\text{density} &= \\tfrac1{kM} \\textstyle\\sum_j \\sum_i 1[\\lVert Y_j - X_i\\rVert \\le \\mathrm{NND}_k(X_i)], \\\\
    \\text{coverage} &= \\tfrac1N \\textstyle\\sum_i 1[\\exists j: \\lVert X_i - Y_j\\rVert \\le \\mathrm{NND}_k(X_i)]

(Kynkäänniemi et al. 2019, "Improved precision and recall metric for assessing generative
models"; Naeem et al. 2020, "Reliable fidelity and diversity metrics for generative models").
Precision and density measure fidelity, recall and coverage diversity; for two samples of the
same distribution the expected density is 1 and the expected coverage is
:math:`1 - \\prod_{i=1}^{k} \\frac{N - i}{N + M - i}`.

**Class statistics.** The classifier's predicted classes of the samples give a histogram whose
entropy (:math:`\\ln C` at most, for :math:`C` classes) and class coverage show missing modes.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from .devices import module_device, to_cpu
from ._progress import progress_bar

from .checkpoint import atomic_write, read_json, write_json
from .errors import InputError

__all__ = ["DomainClassifier", "ClassifierInfo", "train_classifier", "classifier_accuracy", "domain_classifier",
           "classifier_cache_dir", "data_checksum", "Embedding", "embed", "gaussian_stats", "frechet_distance",
           "fid", "PRDC", "prdc", "class_histogram", "entropy", "SampleQuality", "sample_quality",
           "sample_quality_from_embeddings"]

#: Bump when the classifier's architecture or training changes, so old cache entries are not reused.
CLASSIFIER_VERSION = 1


class DomainClassifier(nn.Module):
    """A small CNN: two stride-2 convolutions with batch normalization, a fully connected
    feature layer (the embedding used by the metrics) and a linear classification head.

    :param image_shape: ``(C, H, W)`` of one datum.
    :param num_classes: number of classes.
    :param channels: channels of the two convolutions.
    :param features: width of the penultimate (feature) layer.
    """

    def __init__(self, image_shape: Tuple[int, int, int], num_classes: int, channels: Sequence[int] = (16, 32),
                 features: int = 128):
        super().__init__()
        c, h, w = (int(s) for s in image_shape)
        self.image_shape = (c, h, w)
        self.num_classes = int(num_classes)
        self.feature_dim = int(features)
        c1, c2 = channels
        self.convs = nn.Sequential(
            nn.Conv2d(c, c1, 5, stride=2, padding=2), nn.BatchNorm2d(c1), nn.ReLU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.BatchNorm2d(c2), nn.ReLU())
        fh, fw = (h + 1) // 2, (w + 1) // 2
        fh, fw = (fh + 1) // 2, (fw + 1) // 2
        self.fc = nn.Sequential(nn.Linear(c2 * fh * fw, self.feature_dim), nn.ReLU())
        self.head = nn.Linear(self.feature_dim, self.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate activations :math:`\\phi(x)`, shape ``(B, features)``."""
        return self.fc(self.convs(x).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits, shape ``(B, num_classes)``."""
        return self.head(self.features(x))


@dataclass
class ClassifierInfo:
    """What is stored next to a cached classifier (``KEY.json``).

    :param data_checksum: SHA-256 of the data set's arrays (:func:`data_checksum`).
    :param weights_sha256: SHA-256 of the state-dict file, checked on loading.
    :param test_accuracy: accuracy on the data set's test split.
    :param image_shape: ``(C, H, W)``.
    :param num_classes: number of classes.
    :param epochs: training epochs.
    :param seed: training seed.
    :param train_seconds: wall-clock training time.
    :param version: :data:`CLASSIFIER_VERSION`.
    """

    data_checksum: str
    weights_sha256: str
    test_accuracy: float
    image_shape: Tuple[int, int, int]
    num_classes: int
    epochs: int
    seed: int
    train_seconds: float
    version: int = CLASSIFIER_VERSION


def _batches(n: int, batch_size: int):
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))


@contextlib.contextmanager
def _num_threads(n: Optional[int]):
    """Run the block with ``n`` torch threads (``None``: as it is), restoring the old number after."""
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def train_classifier(train_x: np.ndarray, train_y: np.ndarray, num_classes: Optional[int] = None, *,
                     epochs: int = 5, batch_size: int = 128, lr: float = 1e-2, max_shift: int = 2,
                     seed: int = 0, threads: Optional[int] = 1, progress: bool = False,
                     device=None) -> DomainClassifier:
    """Train a :class:`DomainClassifier` by Adam on the cross-entropy with a one-cycle learning-rate
    schedule (Smith & Topin 2019) and random translations of each minibatch by up to
    ``max_shift`` pixels.

    :param train_x: images ``(N, C, H, W)``.
    :param train_y: integer labels ``(N,)``.
    :param num_classes: number of classes (default ``max(train_y) + 1``).
    :param epochs: passes over the data (5 reach about 98.7% test accuracy on MNIST-10k).
    :param batch_size: minibatch size.
    :param lr: peak learning rate.
    :param max_shift: largest translation in pixels (0: none).
    :param seed: seeds the initial weights, minibatch order and translations.
    :param threads: torch threads while training (``None``: leave the setting alone). One thread is
        the default because on a CPU these small convolutions gain nothing from more, and on a
        machine shared with other work extra threads mostly wait for each other (we measured one
        thread 5 times faster than two on a busy 2-core machine).
    :param progress: show a progress bar.
    :param device: where it trains (default the CPU); the data stay in host memory and move there
        one minibatch at a time, and the draws come from a CPU generator (the same on any device).
    :returns: the trained classifier, in eval mode, on ``device``.
    """
    device = torch.device("cpu") if device is None else torch.device(device)
    x = torch.as_tensor(np.asarray(train_x), dtype=torch.float32, device="cpu")  # host memory
    y = torch.as_tensor(np.asarray(train_y), dtype=torch.long, device="cpu")
    num_classes = int(y.max()) + 1 if num_classes is None else int(num_classes)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        clf = DomainClassifier(tuple(x.shape[1:]), num_classes).to(device)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(clf.parameters(), lr=lr)
    steps = epochs * math.ceil(len(x) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    clf.train()
    with _num_threads(threads), \
            progress_bar(total=steps, enabled=progress, desc="domain classifier", unit="step", leave=False) as bar:
        for _ in range(epochs):
            perm = torch.randperm(len(x), generator=gen, device="cpu")
            for sl in _batches(len(x), batch_size):
                idx = perm[sl]
                xb = x[idx]
                if max_shift > 0:
                    dh, dw = torch.randint(-max_shift, max_shift + 1, (2,), generator=gen, device="cpu").tolist()
                    xb = torch.roll(xb, (dh, dw), dims=(2, 3))
                loss = F.cross_entropy(clf(xb.to(device)), y[idx].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.update(1)
    return clf.eval()


@torch.no_grad()
def classifier_accuracy(clf: DomainClassifier, x: np.ndarray, y: np.ndarray, batch_size: int = 1000) -> float:
    """The fraction of ``x`` whose predicted class is ``y``."""
    was_training = clf.training
    clf.eval()
    x, device = torch.as_tensor(np.asarray(x), dtype=torch.float32, device="cpu"), module_device(clf)
    pred = torch.cat([clf(x[sl].to(device)).argmax(1).cpu() for sl in _batches(len(x), batch_size)])
    clf.train(was_training)
    return float((pred.numpy() == np.asarray(y)).mean())


def data_checksum(ds) -> str:
    """SHA-256 of a :class:`~pyro_gen.data.Dataset`'s image and label arrays (shapes included)."""
    digest = hashlib.sha256()
    for a in (ds.train_x, ds.train_y, ds.test_x, ds.test_y):
        a = np.ascontiguousarray(a)
        digest.update(f"{a.dtype}{a.shape}".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def classifier_cache_dir(cache_dir=None) -> Path:
    """``cache_dir`` if given, else ``$PYRO_GEN_CACHE/classifier``, else ``~/.cache/pyro_gen/classifier``."""
    if cache_dir is not None:
        return Path(cache_dir)
    base = os.environ.get("PYRO_GEN_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "pyro_gen") / "classifier"


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _load_cached(weights: Path, meta: Path, checksum: str) -> Optional[Tuple[DomainClassifier, ClassifierInfo]]:
    """The cached classifier, or ``None`` (with a warning) if the entry is missing or damaged."""
    if not (weights.is_file() and meta.is_file()):
        return None
    try:
        d = read_json(meta)
        info = ClassifierInfo(**{**d, "image_shape": tuple(d["image_shape"])})
        if info.data_checksum != checksum or info.version != CLASSIFIER_VERSION:
            raise InputError("it was made for other data or by another version")
        if _sha256_file(weights) != info.weights_sha256:
            raise InputError("the weights file does not match its checksum")
        clf = DomainClassifier(info.image_shape, info.num_classes)
        clf.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    except Exception as e:  # a damaged cache entry is replaced, never trusted
        print(f"pyro_gen: ignoring the cached classifier {weights} ({' '.join(str(e).split())[:200]}); "
              "training a new one", file=sys.stderr)
        return None
    return clf.eval(), info


def domain_classifier(ds, cache_dir=None, *, epochs: int = 5, seed: int = 0, min_accuracy: float = 0.0,
                      progress: bool = True, device=None) -> Tuple[DomainClassifier, ClassifierInfo]:
    """The domain classifier of a data set: loaded from the cache, or trained on ``ds.train_x``
    and cached.

    The cache entry ``KEY.pt`` (a state dict, loaded with ``weights_only=True``) and ``KEY.json``
    (a :class:`ClassifierInfo` with the weights' checksum and the test accuracy) is keyed by
    :func:`data_checksum`, the epochs and the seed; a damaged entry is retrained. Both files are
    written atomically.

    :param ds: a :class:`~pyro_gen.data.Dataset` with labels.
    :param cache_dir: see :func:`classifier_cache_dir`.
    :param epochs: training epochs.
    :param seed: training seed.
    :param min_accuracy: raise ``ValueError`` if the test accuracy is lower.
    :param progress: show a progress bar while training.
    :param device: where the classifier trains and runs (default the CPU); the cache holds CPU tensors.
    :returns: the classifier (eval mode, on ``device``) and its :class:`ClassifierInfo`.
    :raises ValueError: if the data set has no labels, or the accuracy is below ``min_accuracy``.
    """
    if ds.train_y is None or ds.test_y is None:
        raise InputError(f"{ds.name}: sample-quality metrics need class labels to train the domain "
                         "classifier; this data set has none (give a .npz with a 'labels' array)")
    checksum = data_checksum(ds)
    folder = classifier_cache_dir(cache_dir)
    key = f"{checksum[:24]}-e{epochs}-s{seed}-v{CLASSIFIER_VERSION}"
    weights, meta = folder / f"{key}.pt", folder / f"{key}.json"
    cached = _load_cached(weights, meta, checksum)
    if cached is None:
        t0 = time.perf_counter()
        num_classes = int(max(ds.train_y.max(), ds.test_y.max())) + 1
        clf = train_classifier(ds.train_x, ds.train_y, num_classes, epochs=epochs, seed=seed, progress=progress,
                               device=device)
        seconds = time.perf_counter() - t0
        accuracy = classifier_accuracy(clf, ds.test_x, ds.test_y)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(weights, lambda f: torch.save(to_cpu(clf.state_dict()), f))
        info = ClassifierInfo(data_checksum=checksum, weights_sha256=_sha256_file(weights),
                              test_accuracy=accuracy, image_shape=tuple(clf.image_shape),
                              num_classes=num_classes, epochs=epochs, seed=seed, train_seconds=seconds)
        write_json(meta, asdict(info))
        cached = clf, info
    if cached[1].test_accuracy < min_accuracy:
        raise InputError(f"the domain classifier of {ds.name} reaches only {cached[1].test_accuracy:.1%} test "
                         f"accuracy (< {min_accuracy:.0%}): its features are not a trustworthy metric space")
    return cached[0].to("cpu" if device is None else device), cached[1]


class Embedding(NamedTuple):
    """Images seen through the classifier: penultimate features (float64 ``(N, F)``) and
    predicted classes (``(N,)``)."""

    features: np.ndarray
    labels: np.ndarray


@torch.no_grad()
def embed(clf: DomainClassifier, x, batch_size: int = 500) -> Embedding:
    """The :class:`Embedding` of images ``x`` ``(N, C, H, W)`` (array or tensor)."""
    was_training = clf.training
    clf.eval()
    x, device = torch.as_tensor(np.asarray(x), dtype=torch.float32, device="cpu"), module_device(clf)
    feats, labels = [], []
    for sl in _batches(len(x), batch_size):  # on the classifier's device, a chunk at a time
        f = clf.features(x[sl].to(device))
        feats.append(f.double().cpu())
        labels.append(clf.head(f).argmax(1).cpu())
    clf.train(was_training)
    return Embedding(torch.cat(feats).numpy(), torch.cat(labels).numpy())


def gaussian_stats(features: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of ``features`` ``(N, F)``, in float64."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise InputError(f"need at least 2 feature vectors of shape (N, F), got shape {f.shape}")
    return f.mean(0), np.atleast_2d(np.cov(f, rowvar=False))


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """The squared Fréchet (2-Wasserstein) distance between :math:`\\mathcal N(\\mu_1, \\Sigma_1)` and
    :math:`\\mathcal N(\\mu_2, \\Sigma_2)`,
    :math:`\\lVert\\mu_1-\\mu_2\\rVert^2 + \\operatorname{Tr}(\\Sigma_1+\\Sigma_2-2(\\Sigma_1\\Sigma_2)^{1/2})`
    (Dowson & Landau 1982), in float64. The trace of the matrix square root is
    :math:`\\sum_i \\sqrt{\\lambda_i}` over the eigenvalues of the symmetric positive semi-definite
    :math:`\\Sigma_1^{1/2}\\Sigma_2\\Sigma_1^{1/2}`, which is stable for singular covariances.

    :returns: the distance (negative rounding errors are clipped to 0).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if not (mu1.shape == mu2.shape and s1.shape == s2.shape == mu1.shape * 2):
        raise InputError(f"mismatched shapes: means {mu1.shape}, {mu2.shape}; covariances {s1.shape}, {s2.shape}")
    root1 = _sqrt_psd(s1)
    m = root1 @ s2 @ root1
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    d = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)
    return max(d, 0.0)


def fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """The Fréchet distance between Gaussians fitted to two feature sets (FID, Heusel et al. 2017).

    It is biased upwards for finite sets (by about :math:`\\operatorname{Tr}\\Sigma (1/N_a + 1/N_b)`
    for two sets from one distribution), so compare FIDs only at equal set sizes.
    """
    return frechet_distance(*gaussian_stats(features_a), *gaussian_stats(features_b))


class PRDC(NamedTuple):
    """Precision, recall (Kynkäänniemi et al. 2019), density and coverage (Naeem et al. 2020)."""

    precision: float
    recall: float
    density: float
    coverage: float


def _pairwise(a: torch.Tensor, b: torch.Tensor, chunk: int = 2048):
    for start in range(0, len(a), chunk):
        yield start, torch.cdist(a[start:start + chunk], b)


def _knn_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each point to its k-th nearest neighbour in ``x`` (the point itself excluded)."""
    out = torch.empty(len(x), dtype=x.dtype, device="cpu")
    for start, d in _pairwise(x, x):
        out[start:start + len(d)] = d.topk(k + 1, dim=1, largest=False).values[:, k]
    return out


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5) -> PRDC:
    """Precision, recall, density and coverage of ``fake`` against ``real`` feature vectors
    (formulas in the module docstring), by exact k-nearest neighbours in float64.

    :param real: ``(N, F)`` features of real data.
    :param fake: ``(M, F)`` features of generated data.
    :param k: the neighbour defining each ball (5, as recommended by Naeem et al. 2020).
    :returns: a :class:`PRDC`.
    """
    x = torch.as_tensor(np.asarray(real, dtype=np.float64), device="cpu")
    y = torch.as_tensor(np.asarray(fake, dtype=np.float64), device="cpu")
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise InputError(f"need feature arrays (N, F) and (M, F), got {tuple(x.shape)} and {tuple(y.shape)}")
    if not 1 <= k < min(len(x), len(y)):
        raise InputError(f"k must be in 1..{min(len(x), len(y)) - 1} for {len(x)} real and {len(y)} fake points, got {k}")
    r_real, r_fake = _knn_radii(x, k), _knn_radii(y, k)
    inside = torch.zeros(len(y), dtype=torch.float64, device="cpu")  # per fake: number of real balls holding it
    for start, d in _pairwise(y, x):
        inside[start:start + len(d)] = (d <= r_real).sum(1).double()
    covered = torch.zeros(len(x), dtype=torch.bool, device="cpu")  # per real: a fake inside its own ball
    recalled = torch.zeros(len(x), dtype=torch.bool, device="cpu")  # per real: inside some fake's ball
    for start, d in _pairwise(x, y):
        covered[start:start + len(d)] = d.min(1).values <= r_real[start:start + len(d)]
        recalled[start:start + len(d)] = (d <= r_fake).any(1)
    return PRDC(precision=float((inside > 0).double().mean()), recall=float(recalled.double().mean()),
                density=float(inside.sum() / (k * len(y))), coverage=float(covered.double().mean()))


def class_histogram(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """The share of each class among ``labels`` (sums to 1)."""
    labels = np.asarray(labels, dtype=np.int64)
    return np.bincount(labels, minlength=num_classes)[:num_classes] / max(1, len(labels))


def entropy(p: np.ndarray) -> float:
    """:math:`-\\sum_c p_c \\ln p_c` in nats (``0 \\ln 0 = 0``)."""
    p = np.asarray(p, dtype=np.float64)
    nz = p[p > 0]
    return max(0.0, float(-(nz * np.log(nz)).sum()))


@dataclass
class SampleQuality:
    """Sample-quality metrics of one set of generated images against a reference set.

    :param fid: Fréchet distance in classifier-feature space (lower is better).
    :param precision: share of samples inside the real data's manifold estimate (fidelity).
    :param recall: share of real data inside the samples' manifold estimate (diversity).
    :param density: fidelity counting neighbourhoods (about 1 when the distributions match).
    :param coverage: share of real points with a sample in their neighbourhood (diversity).
    :param class_entropy: entropy of the predicted-class histogram of the samples, nats.
    :param reference_entropy: the same for the reference images.
    :param class_coverage: share of classes that the samples hit at least ``min_share`` times as
        often as the reference does.
    :param mode_collapse: ``class_coverage < 1`` or ``class_entropy < collapse_ratio * reference_entropy``.
    :param class_histogram: the samples' predicted-class shares.
    :param n_samples: number of samples.
    :param n_reference: number of reference images.
    :param k: the neighbour used by precision/recall/density/coverage.
    :param diversity: the samples' mean pairwise distance in feature space over the reference
        images' (1: as diverse as the data; near 0: near-duplicates).
    :param caveats: why precision and density should not be read as quality here: they measure
        fidelity only, and a model that draws one typical image scores 1 on both.
    """

    fid: float
    precision: float
    recall: float
    density: float
    coverage: float
    class_entropy: float
    reference_entropy: float
    class_coverage: float
    mode_collapse: bool
    class_histogram: List[float] = field(default_factory=list)
    n_samples: int = 0
    n_reference: int = 0
    k: int = 5
    diversity: Optional[float] = None
    caveats: List[str] = field(default_factory=list)


def sample_quality_from_embeddings(samples: Embedding, reference: Embedding, num_classes: int, k: int = 5,
                                   min_share: float = 0.25, collapse_ratio: float = 0.9) -> SampleQuality:
    """:class:`SampleQuality` from precomputed embeddings (so a reference set is embedded once).

    :param samples: the generated images' :class:`Embedding`.
    :param reference: the real images' :class:`Embedding`.
    :param num_classes: number of classes of the classifier.
    :param k: neighbour for :func:`prdc`.
    :param min_share: a class counts as covered if its share among samples is at least
        ``min_share`` times its share among the reference images.
    :param collapse_ratio: flag mode collapse below this fraction of the reference entropy.
    """
    hist, ref_hist = class_histogram(samples.labels, num_classes), class_histogram(reference.labels, num_classes)
    present = ref_hist > 0
    covered = float((hist[present] >= min_share * ref_hist[present]).mean()) if present.any() else 0.0
    h, h_ref = entropy(hist), entropy(ref_hist)
    p = prdc(reference.features, samples.features, k=k)
    diversity = mean_pairwise_distance(samples.features) / max(mean_pairwise_distance(reference.features), 1e-12)
    caveats = []
    if p.recall < CAVEAT_SHARE or p.coverage < CAVEAT_SHARE:
        caveats.append(f"recall {p.recall:.3f} / coverage {p.coverage:.3f}: the samples reach almost none of the data, "
                       "so precision and density (fidelity only) say nothing about quality")
    if diversity < CAVEAT_DIVERSITY:
        caveats.append(f"the samples are near-duplicates (diversity {diversity:.2f} of the data's)")
    return SampleQuality(fid=fid(reference.features, samples.features), precision=p.precision, recall=p.recall,
                         density=p.density, coverage=p.coverage, class_entropy=h, reference_entropy=h_ref,
                         class_coverage=covered, mode_collapse=bool(covered < 1 or h < collapse_ratio * h_ref),
                         class_histogram=[float(v) for v in hist], n_samples=len(samples.labels),
                         n_reference=len(reference.labels), k=k, diversity=float(diversity), caveats=caveats)


#: A recall or coverage below this share makes precision/density meaningless (a caveat is shown).
CAVEAT_SHARE = 0.05
#: Samples whose mean pairwise distance is below this share of the data's are near-duplicates.
CAVEAT_DIVERSITY = 0.3


def mean_pairwise_distance(features, max_points: int = 2000) -> float:
    """The mean Euclidean distance between distinct rows of ``features`` (at most ``max_points``
    rows, evenly spaced), a measure of how diverse a set is in feature space."""
    f = torch.as_tensor(np.asarray(features), dtype=torch.float64, device="cpu")
    if len(f) > max_points:
        f = f[torch.linspace(0, len(f) - 1, max_points).round().long()]
    n = len(f)
    if n < 2:
        return 0.0
    d = torch.cdist(f, f)
    return float(d.sum() / (n * (n - 1)))


def sample_quality(clf: DomainClassifier, samples, reference, k: int = 5, **kwargs) -> SampleQuality:
    """Sample-quality metrics of generated images ``samples`` against real images ``reference``
    (both ``(N, C, H, W)``, pixel values as the classifier was trained on), in the feature space
    of ``clf``. Keyword arguments go to :func:`sample_quality_from_embeddings`.

    Use equal set sizes when comparing models: FID is biased by the set sizes.
    """
    return sample_quality_from_embeddings(embed(clf, samples), embed(clf, reference), clf.num_classes, k=k,
                                          **kwargs)
