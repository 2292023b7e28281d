"""Likelihood-based and sample-based models compared on the same data, networks and budget.

:func:`compare` trains each requested model (a VAE, a deterministic autoencoder, a GAN with the
non-saturating or the WGAN-GP loss) for the same wall-clock budget with the same generator
network (the decoder of one :class:`~pyro_gen.vae.ModelSpec`), or loads finished runs, and
measures every model the same way:

- **likelihood** where a model defines one: the test ELBO and the importance-sampled test NLL
  (:mod:`pyro_gen.evaluate`; a VAE only — an autoencoder's guide has no density and a GAN has no
  likelihood);
- **sample quality** for every model (:mod:`pyro_gen.metrics`): FID, precision, recall,
  density and coverage in the feature space of a domain classifier, the entropy and class
  coverage of the samples' predicted classes, a mode-collapse flag;
- the training time.

A row ``data (train split)`` scores real training images exactly as samples are scored: the
floor of FID and the ceiling of the other metrics at this sample size.

The budget is wall-clock time: a model stops after the epoch during which its budget ran out
(an ``on_epoch`` callback raising :class:`StopTraining`), so every model trains at least one
epoch. The learning rates stay constant (the number of epochs is not known in advance). Every
trained model has the same networks, with leaky-ReLU activations unless told otherwise (a GAN
generator with the default softplus collapses, :mod:`pyro_gen.gan`). See ``docs/comparison.rst``
for how to read the table.
"""
from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from .checkpoint import CONFIG, METRICS, RunError, atomic_write, attempt, read_json, read_jsonl, write_json
from .data import load_data
from .families import FAMILIES, binarizes
from .gan import GANSettings, build_gan, fit_gan, gan_spec, output_likelihood
from .metrics import ClassifierInfo, domain_classifier, embed, sample_quality_from_embeddings
from .run import load_run, make_config, on_side_vectors, split_tensor
from .train import TrainSettings, fit
from .vae import ModelSpec
from .errors import InputError

__all__ = ["StopTraining", "WallClockBudget", "ComparisonRow", "Comparison", "compare",
           "MODEL_TRAINERS", "write_tables", "markdown_table"]


class StopTraining(Exception):
    """Raised by an ``on_epoch`` callback to end training after the epoch just saved."""


class WallClockBudget:
    """An ``on_epoch`` callback for :func:`~pyro_gen.train.fit` and :func:`~pyro_gen.gan.fit_gan`
    that raises :class:`StopTraining` after the first epoch that ends ``seconds`` or more after
    the callback was made.

    :param seconds: the budget.
    """

    def __init__(self, seconds: float):
        self.seconds = float(seconds)
        self.start = time.perf_counter()
        self.epochs = 0

    def __call__(self, row: dict) -> None:
        self.epochs += 1
        if time.perf_counter() - self.start >= self.seconds:
            raise StopTraining


@dataclass
class _Trained:
    name: str
    kind: str
    model: torch.nn.Module
    spec: ModelSpec
    run_dir: Path
    train_seconds: Optional[float]
    epochs: int


def _finish(run_dir: Path, seconds: float, budget: float, name: str, model, kind: str, spec: ModelSpec) -> _Trained:
    epochs = len(read_jsonl(run_dir / METRICS))
    write_json(run_dir / "summary.json", {"train_seconds": seconds, "epochs": epochs, "budget_seconds": budget})
    model.eval()
    return _Trained(name=name, kind=kind, model=model, spec=spec, run_dir=run_dir, train_seconds=seconds,
                    epochs=epochs)


def _train_vae(name: str, ds, data_spec: str, data_root, run_dir: Path, budget: float, max_epochs: int, seed: int,
               spec_kw: dict, progress: bool, device=None, *, guide: str) -> _Trained:
    spec = ModelSpec(image_shape=ds.image_shape, **{**spec_kw, "guide": guide})
    settings = TrainSettings(epochs=max_epochs, lr_schedule="constant", seed=seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / CONFIG, make_config(spec, settings, data_spec, data_root, model_kind=name,
                                             device=device or "cpu"))
    torch.manual_seed(seed)
    vae = spec.build().to(device or "cpu")
    t0 = time.perf_counter()
    try:
        fit(vae, ds.train_x, settings, run_dir=run_dir, progress=progress, on_epoch=WallClockBudget(budget))
    except StopTraining:
        pass
    return _finish(run_dir, time.perf_counter() - t0, budget, name, vae, name, spec)


def _train_gan(name: str, ds, data_spec: str, data_root, run_dir: Path, budget: float, max_epochs: int, seed: int,
               spec_kw: dict, progress: bool, device=None, *, loss: str) -> _Trained:
    spec = gan_spec(ds.image_shape, **spec_kw)
    settings = GANSettings(epochs=max_epochs, loss=loss, seed=seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / CONFIG, make_config(spec, settings, data_spec, data_root, model_kind="gan",
                                             device=device or "cpu"))
    torch.manual_seed(seed)
    gan = build_gan(spec, settings).to(device or "cpu")
    t0 = time.perf_counter()
    try:
        fit_gan(gan, ds.train_x, settings, run_dir=run_dir, progress=progress, on_epoch=WallClockBudget(budget))
    except StopTraining:
        pass
    return _finish(run_dir, time.perf_counter() - t0, budget, name, gan, "gan", spec)


#: ``--models`` names -> trainer. ``gan`` is the non-saturating GAN.
MODEL_TRAINERS: Dict[str, Callable[..., _Trained]] = {
    "vae": partial(_train_vae, guide="diagonal"),
    "ae": partial(_train_vae, guide="delta"),
    "gan": partial(_train_gan, loss="ns"),
    "wgan-gp": partial(_train_gan, loss="wgan-gp"),
}


def _loaded(run_dir, names: set, device=None) -> _Trained:
    run = load_run(run_dir)
    run.model.to(device or "cpu")
    if on_side_vectors(run.config):
        raise RunError(f"{run.path}: a cvae conditioned on side vectors has no unconditional samples to compare "
                       "(compare draws its samples without side information)")
    model = run.model
    name, i = run.path.name or str(run.path), 2
    while name in names:
        name, i = f"{run.path.name}-{i}", i + 1
    summary = run.path / "summary.json"
    seconds = read_json(summary).get("train_seconds") if summary.is_file() else None
    if seconds is None and run.history and all("seconds" in r for r in run.history):
        seconds = float(sum(r["seconds"] for r in run.history))
    return _Trained(name=name, kind=run.config.get("model_kind", "vae"), model=model, spec=run.spec, run_dir=run.path,
                    train_seconds=seconds, epochs=len(run.history))


@dataclass
class ComparisonRow:
    """One model's line of the comparison table (``None`` where a figure is not defined).

    :param model: the name in the table.
    :param kind: ``vae``, ``ae``, ``gan``, ... or ``data`` for the real-data reference row.
    :param run_dir: the run directory.
    :param epochs: epochs trained.
    :param train_seconds: wall-clock training time.
    :param test_elbo: test ELBO, nats per image (mean of ``draws`` draws).
    :param test_nll: importance-sampled test NLL, nats per image.
    :param fid: FID against the test images.
    :param precision: see :func:`pyro_gen.metrics.prdc`.
    :param recall: see :func:`pyro_gen.metrics.prdc`.
    :param density: see :func:`pyro_gen.metrics.prdc`.
    :param coverage: see :func:`pyro_gen.metrics.prdc`.
    :param class_entropy: entropy of the samples' predicted classes, nats.
    :param class_coverage: share of classes generated (see :class:`~pyro_gen.metrics.SampleQuality`).
    :param mode_collapse: the mode-collapse flag.
    :param class_histogram: the samples' predicted-class shares.
    """

    model: str
    kind: str
    run_dir: Optional[str] = None
    epochs: Optional[int] = None
    train_seconds: Optional[float] = None
    test_elbo: Optional[float] = None
    test_nll: Optional[float] = None
    fid: Optional[float] = None
    precision: Optional[float] = None
    recall: Optional[float] = None
    density: Optional[float] = None
    coverage: Optional[float] = None
    class_entropy: Optional[float] = None
    class_coverage: Optional[float] = None
    mode_collapse: Optional[bool] = None
    class_histogram: List[float] = field(default_factory=list)
    diversity: Optional[float] = None
    caveats: List[str] = field(default_factory=list)


@dataclass
class Comparison:
    """The result of :func:`compare`: the rows and the settings they were measured under."""

    rows: List[ComparisonRow]
    data: str
    classifier: ClassifierInfo
    budget_seconds: Optional[float]
    k: int
    draws: int
    n_samples: int
    nn_k: int
    num_classes: int
    wall_seconds: float
    out_dir: Optional[Path] = None
    #: optional outputs that could not be written (name -> "Type: message"); the tables were
    failures: Dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["out_dir"] = None if self.out_dir is None else str(self.out_dir)
        return d


def _likelihoods(t: _Trained, ds, k: int, draws: int, seed: int, progress: bool):
    """``(test ELBO, test NLL)`` of an unconditional model/guide pair with a guide density (any
    family with a density and no side inputs, a user's pair included); ``None`` where undefined."""
    from .evaluate import elbo_per_datum, has_density, importance_log_likelihood
    family, model = FAMILIES.get(t.kind), t.model
    if family is None or not family.density or family.inputs:
        return None, None
    x_test, _ = split_tensor(ds, binarizes(t.spec))
    if not has_density(model, x_test[:2]):
        return None, None  # the MAP objective of a point-mass guide is not a bound on log p(x)
    torch.manual_seed(seed)
    elbo = float(elbo_per_datum(model, x_test, num_draws=draws).mean())
    nll = -float(importance_log_likelihood(model, x_test, k=k, progress=progress).mean())
    return elbo, nll


def compare(models: Sequence[str] = ("vae", "gan"), *, runs: Sequence = (), data: Optional[str] = None,
            data_root=None, budget_seconds: float = 120.0, out_dir=None, spec_kw: Optional[dict] = None,
            k: int = 1000, draws: int = 10, n_samples: Optional[int] = None, nn_k: int = 5, max_epochs: int = 100000,
            seed: int = 0, classifier_cache=None, classifier_epochs: int = 5, progress: bool = True,
            log: Optional[Callable[[str], None]] = None, device=None) -> Comparison:
    """Train (or load) each model on the same data and score them the same way.

    :param models: names from :data:`MODEL_TRAINERS` to train, each for ``budget_seconds``.
    :param runs: finished run directories to score as they are (any ``model_kind``).
    :param data: data set (:func:`pyro_gen.data.load_data`); default: the first run's, else ``mnist-10k``.
    :param data_root: folder for ``mnist`` / ``fashion-mnist``.
    :param budget_seconds: wall-clock training budget of each trained model.
    :param out_dir: where the trained runs (``runs/NAME``), the tables and the figure go; required
        when ``models`` is not empty (``None`` with ``runs`` only: nothing is written).
    :param spec_kw: :class:`~pyro_gen.vae.ModelSpec` fields shared by every trained model
        (``latent_dim``, ``net``, ``hidden``, ``likelihood``, ``activation``): the same generator
        network for all. ``activation`` defaults to ``"leaky_relu"``, which a GAN generator needs
        (see :mod:`pyro_gen.gan`).
    :param k: importance samples per test image for the NLL.
    :param draws: ELBO draws per test image.
    :param n_samples: samples per model (default: the size of the test split, the reference set).
    :param nn_k: the neighbour of precision/recall/density/coverage.
    :param max_epochs: cap on the epochs of a trained model.
    :param seed: seeds training and sampling.
    :param classifier_cache: cache folder of the domain classifier (:func:`~pyro_gen.metrics.domain_classifier`).
    :param classifier_epochs: training epochs of the domain classifier.
    :param progress: show progress bars.
    :param log: called with one-line stage messages.
    :param device: where the models train, sample and are evaluated, and the domain classifier
        runs (default the CPU); the metrics' distances are computed on the CPU in float64.
    :returns: a :class:`Comparison`; with ``out_dir``, also ``comparison.md``, ``comparison.csv``,
        ``comparison.json`` and ``samples.png`` there.
    """
    t_start = time.perf_counter()
    log = log or (lambda msg: None)
    spec_kw = dict(spec_kw or {})
    spec_kw.setdefault("activation", "leaky_relu")
    unknown = [m for m in models if m not in MODEL_TRAINERS]
    if unknown:
        raise InputError(f"unknown model {unknown[0]!r}: expected one of {', '.join(MODEL_TRAINERS)}")
    if len(set(models)) != len(models):
        raise InputError(f"a model is named twice in {','.join(models)}")
    if not models and not runs:
        raise InputError("nothing to compare: name models to train or runs to load")
    gans = [m for m in models if getattr(MODEL_TRAINERS[m], "func", None) is _train_gan]
    if gans:  # refused before the other models train
        try:
            output_likelihood(spec_kw.get("likelihood", "bernoulli"))
        except InputError as e:
            raise InputError(f"--models {gans[0]}: {e}") from None
    out = None if out_dir is None else Path(out_dir)
    if models and out is None:
        raise InputError("training models for a comparison needs an output folder for their runs")
    if out is not None:
        taken = [out / "comparison.json"] + [out / "runs" / m for m in models]
        if any(p.exists() for p in taken):
            raise InputError(f"{out}: already holds a comparison (or its runs): choose another output folder")

    loaded: List[_Trained] = []
    names: set = set(models)
    for r in runs:
        loaded.append(_loaded(r, names, device))
        names.add(loaded[-1].name)
    if data is None and runs:
        first = read_json(Path(runs[0]) / CONFIG)["data"]
        data, data_root = first["spec"], first.get("root") if data_root is None else data_root
    data = data or "mnist-10k"
    ds = load_data(data, likelihood=spec_kw.get("likelihood", "bernoulli"), root=data_root)
    for t in loaded:
        shape = tuple(t.model.decoder.image_shape) if hasattr(t.model.decoder, "image_shape") else None
        if shape is not None and shape != tuple(ds.image_shape):
            raise RunError(f"{t.run_dir}: trained on images of shape {shape}, not the {tuple(ds.image_shape)} of {data}")
    if out is not None:  # made once the runs and the data have loaded: a refused comparison leaves no folder
        out.mkdir(parents=True, exist_ok=True)

    log(f"domain classifier for {data}")
    clf, info = domain_classifier(ds, classifier_cache, epochs=classifier_epochs, progress=progress, device=device)
    log(f"domain classifier: test accuracy {info.test_accuracy:.2%}")
    n = int(n_samples or len(ds.test_x))
    reference = embed(clf, ds.test_x)
    if nn_k >= min(n, len(ds.test_x)):
        raise InputError(f"precision/recall need more than k={nn_k} samples and test images, got {n} and {len(ds.test_x)}")

    trained: List[_Trained] = []
    for name in models:
        log(f"training {name} for {budget_seconds:g} s")
        trained.append(MODEL_TRAINERS[name](name, ds, data, data_root, out / "runs" / name, budget_seconds,
                                            max_epochs, seed, spec_kw, progress, device))
        log(f"{name}: {trained[-1].epochs} epochs in {trained[-1].train_seconds:.1f} s")

    rows: List[ComparisonRow] = []
    panels: Dict[str, np.ndarray] = {}
    idx = np.random.default_rng(seed).permutation(len(ds.train_x))[:n]
    real = ds.train_x[np.sort(idx)]
    q = sample_quality_from_embeddings(embed(clf, real), reference, clf.num_classes, k=nn_k)
    rows.append(ComparisonRow(model="data (train split)", kind="data", **_quality(q)))
    panels["data (train split)"] = real[:100]
    for t in trained + loaded:
        log(f"scoring {t.name}")
        images = t.model.sample(n, generator=torch.Generator().manual_seed(seed + 1)).cpu().numpy()
        q = sample_quality_from_embeddings(embed(clf, images), reference, clf.num_classes, k=nn_k)
        elbo, nll = _likelihoods(t, ds, k, draws, seed, progress)
        rows.append(ComparisonRow(model=t.name, kind=t.kind, run_dir=str(t.run_dir), epochs=t.epochs,
                                  train_seconds=t.train_seconds, test_elbo=elbo, test_nll=nll, **_quality(q)))
        panels[t.name] = images[:100]
    result = Comparison(rows=rows, data=data, classifier=info, budget_seconds=budget_seconds if models else None,
                        k=k, draws=draws, n_samples=n, nn_k=nn_k, num_classes=clf.num_classes,
                        wall_seconds=time.perf_counter() - t_start, out_dir=out)
    if out is not None:  # the tables first: a failing figure never loses the scores
        from .plots import plot_image_panels
        write_tables(result, out)
        attempt(result.failures, "samples.png",
                lambda: plot_image_panels(panels, out / "samples.png", title=f"100 samples per model ({data})"))
        result.wall_seconds = time.perf_counter() - t_start
        write_tables(result, out)
    return result


def _quality(q) -> dict:
    return dict(fid=q.fid, precision=q.precision, recall=q.recall, density=q.density, coverage=q.coverage,
                class_entropy=q.class_entropy, class_coverage=q.class_coverage, mode_collapse=q.mode_collapse,
                class_histogram=q.class_histogram, diversity=q.diversity, caveats=list(q.caveats))


#: (column title, row field, format) of the Markdown table.
_COLUMNS = [("model", "model", "{}"), ("epochs", "epochs", "{}"), ("train s", "train_seconds", "{:.1f}"),
            ("test ELBO", "test_elbo", "{:.2f}"), ("test NLL", "test_nll", "{:.2f}"), ("FID ↓", "fid", "{:.2f}"),
            ("precision", "precision", "{:.3f}"), ("recall", "recall", "{:.3f}"), ("density", "density", "{:.3f}"),
            ("coverage", "coverage", "{:.3f}"), ("class entropy", "class_entropy", "{:.3f}"),
            ("classes covered", "class_coverage", "{:.0%}"), ("diversity", "diversity", "{:.2f}"),
            ("mode collapse", "mode_collapse", "{}")]


def _cell(value, fmt: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return fmt.format(value)


def markdown_table(result: Comparison) -> str:
    """The comparison as a Markdown document (a table and the conditions it was measured under)."""
    ln_c = math.log(result.num_classes) if result.num_classes > 1 else float("nan")
    lines = [f"# Comparison on {result.data}", "",
             f"- {result.n_samples} samples per model, scored against the test split in the feature space of a "
             f"domain classifier; precision/recall/density/coverage with k = {result.nn_k}",
             f"- domain classifier: test accuracy {result.classifier.test_accuracy:.2%}; class entropy at most "
             f"ln {result.num_classes} = {ln_c:.3f} nats",
             f"- test ELBO: mean of {result.draws} draws; test NLL: importance sampled with K = {result.k} "
             "(nats per image, binarized test images for a Bernoulli likelihood; – where a model has no density)",
             (f"- training budget: {result.budget_seconds:g} s of wall-clock time per trained model"
              if result.budget_seconds is not None else "- runs loaded as they were trained"),
             f"- wall time of the comparison: {result.wall_seconds:.0f} s", "",
             "| " + " | ".join(c[0] for c in _COLUMNS) + " |",
             "|" + "|".join("---" for _ in _COLUMNS) + "|"]
    for row in result.rows:
        cells = [_cell(getattr(row, f), fmt) + (" ⚠" if f in ("precision", "density") and row.caveats else "")
                 for _, f, fmt in _COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    caveats = [f"- ⚠ {row.model}: {c}" for row in result.rows for c in row.caveats]
    if caveats:
        lines += ["", "Caveats (precision and density measure fidelity only):"] + caveats
    lines += ["", "FID: lower is better; precision/density: fidelity; recall/coverage: diversity; the "
              "`data (train split)` row scores real images the same way (the best a model can expect here). "
              "See docs/comparison.rst."]
    return "\n".join(lines) + "\n"


def write_tables(result: Comparison, out_dir) -> None:
    """Write ``comparison.md``, ``comparison.csv`` and ``comparison.json`` into ``out_dir`` (atomically)."""
    out = Path(out_dir)
    md = markdown_table(result).encode()
    atomic_write(out / "comparison.md", lambda f: f.write(md))
    keys = [f for f in ComparisonRow.__dataclass_fields__ if f not in ("class_histogram", "caveats")]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(keys)
    for row in result.rows:
        writer.writerow(["" if getattr(row, key) is None else getattr(row, key) for key in keys])
    data = buf.getvalue().encode()
    atomic_write(out / "comparison.csv", lambda f: f.write(data))
    write_json(out / "comparison.json", result.to_dict())
