"""Diagnose a trained run: every estimator of :mod:`pyro_gen.diagnostics` on its test data, the
figures, ``diagnostics.json``, ``posterior.nc`` and ``report.html`` (``pyro-gen diagnose``).

Cost is dominated by the :math:`K_{\\max}` log weights of each of the ``points`` test images
(:math:`K_{\\max} \\times` ``points`` decoder passes) and by the per-image optimization of the
amortization gap (``gap_steps`` :math:`\\times` ``gap_points`` :math:`\\times 8` decoder passes
forward and backward).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

from ..checkpoint import atomic_write, attempt
from ..devices import module_device, rng_devices
from ..evaluate import has_density
from ..vae import VAE
from ..data import binarize_fixed
from .gap import GapResult, amortization_gap, pair_amortization_gap
from .gradients import GradientNoise, gradient_noise, point_mass_note
from .importance import IWAECurve, iwae_curve, log_weight_matrix, pareto_k
from .latent import (POINT_MASS_NOTE, LatentDiagnostics, latent_diagnostics, posterior_means,
                     unsupported_reason)
from .sites import decoder_dependence, site_diagnostics
from .verdicts import Verdict, khat_threshold, make_verdicts, summary_line
from ..errors import InputError

__all__ = ["Diagnosis", "diagnose", "diagnose_run", "to_jsonable", "FIGURES"]

#: File names of the figures ``diagnose_run`` writes, by role.
FIGURES = {"elbo_terms": "elbo_terms.png", "kl_per_dim": "kl_per_dim.png", "iwae": "iwae_vs_k.png",
           "pareto_k": "pareto_k.png", "pca": "latent_pca.png", "traversals": "latent_traversals.png",
           "interpolations": "interpolations.png"}


def to_jsonable(obj):
    """Plain JSON data: numpy arrays and scalars to lists and numbers, non-finite floats to ``None``."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _evenly(n: int, m: int) -> np.ndarray:
    """``m`` indices spread evenly over ``range(n)`` (all of them when ``m >= n``)."""
    return np.arange(n) if m >= n else np.unique(np.linspace(0, n - 1, m).round().astype(np.int64))


@dataclass
class Diagnosis:
    """Everything :func:`diagnose` measured. Per-datum arrays are indexed like ``test_index``.

    :param test_index: the test images used for the IWAE curve, k-hat and the posterior draws.
    :param gap_index: the test images of the amortization-gap sample (a subset of ``test_index``).
    :param notes: per part, why it is missing or how it was restricted.
    :param failures: the parts (computations or output files) that failed, with the error; the
        others were computed and written.
    """

    settings: dict
    num_test: int
    test_index: np.ndarray
    latent: LatentDiagnostics
    iwae: Optional[IWAECurve] = None
    khat: Optional[np.ndarray] = None
    log_px: Optional[np.ndarray] = None
    gap: GapResult = field(default_factory=GapResult)
    gap_index: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    gradients: List[GradientNoise] = field(default_factory=list)
    notes: Dict[str, str] = field(default_factory=dict)
    seconds: Dict[str, float] = field(default_factory=dict)
    verdicts: List[Verdict] = field(default_factory=list)
    figures: Dict[str, str] = field(default_factory=dict)
    failures: Dict[str, str] = field(default_factory=dict)
    decoder: Optional[dict] = None
    data_shift: Optional[dict] = None
    run_dir: str = ""

    def to_dict(self) -> dict:
        """JSON-able summary (what ``diagnostics.json`` holds)."""
        khat = None
        if self.khat is not None:
            threshold = khat_threshold(int(self.settings.get("k_max", 5000)))
            bad = self.khat > threshold
            valid = self.khat[~np.isnan(self.khat)]  # NaN: not estimated (a NaN log weight)
            khat = {"num_data": int(len(self.khat)), "share_bad": float(bad.mean()),
                    "bad_index": self.test_index[bad].tolist(),
                    "median": float(np.median(valid)) if len(valid) else None,
                    "max": float(np.max(valid)) if len(valid) else None,
                    "share_above_0.5": float((self.khat > 0.5).mean()),
                    "num_not_estimated": int(len(self.khat) - len(valid)), "threshold": threshold,
                    "per_datum": self.khat.tolist()}
        return to_jsonable({
            "settings": self.settings, "num_test": self.num_test, "test_index": self.test_index,
            "latent": self.latent.to_dict(), "iwae": None if self.iwae is None else self.iwae.to_dict(),
            "pareto_k": khat, "log_px_per_datum": self.log_px,
            "gap": dict(self.gap.to_dict(), test_index=self.gap_index.tolist(),
                        log_px_per_datum=None if self.gap.log_px is None else self.gap.log_px),
            "gradients": [g.to_dict() for g in self.gradients], "notes": self.notes, "seconds": self.seconds,
            "verdicts": [v.to_dict() for v in self.verdicts], "summary": summary_line(self.verdicts),
            "figures": self.figures, "run_dir": self.run_dir,
            "failures": self.failures, "decoder": self.decoder, "data_shift": self.data_shift})


#: Default images of the amortization gap: for a built-in guide family (``False``) and for a
#: pair's own guide, refined on each image in turn (``True``).
GAP_POINTS = {False: 100, True: 10}


def diagnose(vae, x_test: torch.Tensor, *, x_train: Optional[torch.Tensor] = None, elbo: str = "trace",
             num_particles: int = 1, k_max: int = 5000, points: int = 500, gap_points: Optional[int] = None,
             gap_steps: int = 500, grad_repeats: int = 100, grad_batch: int = 128, seed: int = 0,
             progress: bool = False, log: Optional[Callable[[str], None]] = None,
             y_test: Optional[torch.Tensor] = None, y_train: Optional[torch.Tensor] = None) -> Diagnosis:
    """Run the diagnostics on a trained VAE or any other pair.

    :param vae: a :class:`~pyro_gen.vae.VAE` in eval mode.
    :param x_test: test data ``(N, C, H, W)`` (binarized already for a Bernoulli likelihood).
    :param x_train: training data for the gradient-noise minibatch (default: the test data).
    :param elbo: the training objective's name, for the gradient noise.
    :param num_particles: its particles per datum.
    :param k_max: importance samples per image for the IWAE curve and k-hat.
    :param points: test images (evenly spaced through the test set) for the IWAE curve, k-hat,
        the latent diagnostics and the posterior draws.
    :param gap_points: images of the amortization-gap sample (evenly spaced through ``points``;
        default :data:`GAP_POINTS`: 100 for the built-in guide families, whose free per-image
        parameters are optimized for all images at once, and 10 for any other pair, whose guide
        is refined on each image in turn).
    :param gap_steps: Adam steps of the per-image optimization.
    :param grad_repeats: gradient draws for the gradient noise.
    :param grad_batch: minibatch size for the gradient noise.
    :param seed: seeds every draw; the global random state is restored afterwards.
    :param progress: progress bars.
    :param log: called with a line per stage.
    :param y_test: the side vectors (or labels) of a conditional model, one per test datum; its
        densities are those of :math:`p(x \\mid y)`, read through traces (:mod:`pyro_gen.traces`).
    :param y_train: the same for ``x_train``.
    :returns: a :class:`Diagnosis` (verdicts not yet filled in: see :func:`diagnose_run`).
    """
    say = log or (lambda _msg: None)
    vae.eval()
    idx = _evenly(len(x_test), points)
    x = x_test[torch.as_tensor(idx, device=x_test.device)]
    y = () if y_test is None else (y_test[torch.as_tensor(idx, device=y_test.device)],)
    generic = not isinstance(vae, VAE) or bool(y)  # a pair read through traces, per latent site
    gap_points = gap_points or GAP_POINTS[generic]
    settings = dict(k_max=k_max, points=int(len(idx)), gap_points=gap_points, gap_steps=gap_steps,
                    grad_repeats=grad_repeats, grad_batch=grad_batch, seed=seed, elbo=elbo,
                    num_particles=num_particles)
    seconds, notes = {}, {}
    t = time.perf_counter()
    latent = (site_diagnostics(vae, x, *y, max_points=len(x), seed=seed) if generic
              else latent_diagnostics(vae, x, max_points=len(x), num_samples=4, seed=seed))
    seconds["latent"] = time.perf_counter() - t
    d = Diagnosis(settings=settings, num_test=len(x_test), test_index=idx, latent=latent, notes=notes, seconds=seconds)
    if len(idx) < len(x_test):
        notes["subset"] = (f"The IWAE curve, k-hat, latent diagnostics and posterior draws use {len(idx)} of the "
                           f"{len(x_test)} test images (evenly spaced), to bound the cost.")
    with torch.random.fork_rng(devices=rng_devices(x)):
        torch.manual_seed(seed)

        def importance():
            if not has_density(vae, x, *y):
                notes["importance"] = "IWAE bound, log p(x) and PSIS k-hat: " + POINT_MASS_NOTE
                return
            say(f"importance sampling: {k_max} draws for each of {len(idx)} test images")
            log_w = log_weight_matrix(vae, x, k_max, progress=progress, y=y[0] if y else None)
            d.iwae = iwae_curve(log_w)
            d.log_px = (torch.logsumexp(log_w.double(), 1) - math.log(k_max)).cpu().numpy()
            if k_max >= 100:
                t = time.perf_counter()
                d.khat = pareto_k(log_w)
                seconds["pareto_k"] = time.perf_counter() - t
            else:
                notes["pareto_k"] = f"PSIS k-hat needs at least 100 importance samples per image (--k-max {k_max})"

        _guarded(d, "importance_sampling", importance)

        def decoder():
            d.decoder = decoder_dependence(vae, x, *y, seed=seed + 3)

        _guarded(d, "decoder", decoder)
        gsel = _evenly(len(idx), gap_points)
        d.gap_index = idx[gsel]

        def gap():
            sel = torch.as_tensor(gsel, device=x.device)
            if generic:  # the pair's own guide refined on each image in turn (any pair)
                if not has_density(vae, x, *y):
                    d.gap = GapResult(note=POINT_MASS_NOTE)
                    return
                say(f"amortization gap: the guide refined by {gap_steps} Adam steps on each of {len(gsel)} "
                    "test images")
                d.gap = pair_amortization_gap(vae, x[sel], *(a[sel] for a in y), steps=gap_steps,
                                              log_px_samples=k_max, eval_samples=min(1000, max(k_max, 100)),
                                              seed=seed + 1, progress=progress)
                return
            say(f"amortization gap: {gap_steps} Adam steps on each of {len(gsel)} test images")
            d.gap = amortization_gap(vae, x[sel], steps=gap_steps, log_px_samples=k_max,
                                     eval_samples=min(1000, max(k_max, 100)), seed=seed + 1)

        _guarded(d, "amortization_gap", gap)

        def gradients():
            note = "" if has_density(vae, x, *y) else point_mass_note()
            if note:
                notes["gradients"] = note
                return
            source, side = (x_train, y_train) if x_train is not None else (x_test, y_test)
            say(f"gradient noise: {grad_repeats} gradients of the '{elbo}' objective on "
                f"{min(grad_batch, len(source))} images")
            d.gradients = gradient_noise(vae, source[:grad_batch], elbo=elbo, num_particles=num_particles,
                                         repeats=grad_repeats, seed=seed + 2,
                                         y=None if side is None else side[:grad_batch])
            if not d.gradients:
                notes["gradients"] = "the model has no trainable parameters"

        _guarded(d, "gradients", gradients)
    return d


def _guarded(d: "Diagnosis", name: str, compute: Callable[[], None]) -> None:
    """Run one part of the diagnosis; if it fails, record why in ``d.failures[name]`` and
    ``d.notes[name]`` and go on: one failed part never loses the others."""
    t = time.perf_counter()
    if not attempt(d.failures, name, compute):
        d.notes[name] = f"failed ({d.failures[name]}); the other parts were computed"
    d.seconds[name] = d.seconds.get(name, 0.0) + time.perf_counter() - t


def _traversal_images(vae, x_test: torch.Tensor, means: torch.Tensor, activity: np.ndarray, kl_dim, base: int):
    strength = np.asarray(kl_dim) if kl_dim is not None else activity
    order = np.argsort(-strength)[:min(8, len(activity))]
    lo, hi = np.quantile(means.cpu().numpy(), 0.02, axis=0), np.quantile(means.cpu().numpy(), 0.98, axis=0)
    z0 = means[base]
    rows, labels = [], []
    for dim in order:
        z = z0.repeat(9, 1)
        z[:, dim] = torch.linspace(float(lo[dim]), float(hi[dim]), 9, device=z.device)
        rows.append(vae.decode(z).cpu().numpy())
        labels.append(f"z{dim}" + (f" (KL {kl_dim[dim]:.2f})" if kl_dim is not None else "")
                      + ("" if activity[dim] > 0.01 else ", inactive"))
    return np.stack(rows), labels


def _interpolation_images(vae, x_test: torch.Tensor, means: torch.Tensor, labels: Optional[np.ndarray]):
    pairs, used = [], set()
    n = len(x_test)
    for i in range(n):
        for j in range(i + 1, min(n, i + 50)):
            if i in used or j in used:
                continue
            if labels is None or labels[i] != labels[j]:
                pairs.append((i, j))
                used.update((i, j))
                break
        if len(pairs) == 6:
            break
    rows = []
    t = torch.linspace(0, 1, 8, device=means.device)[:, None]
    for i, j in pairs:
        z = (1 - t) * means[i] + t * means[j]
        rows.append(np.concatenate([x_test[i:i + 1].cpu().numpy(), vae.decode(z).cpu().numpy(),
                                    x_test[j:j + 1].cpu().numpy()]))
    names = [f"#{i} -> #{j}" + ("" if labels is None else f" ({labels[i]} -> {labels[j]})") for i, j in pairs]
    return np.stack(rows), names


def write_figures(vae, d: Diagnosis, history: List[dict], x_test: torch.Tensor, y_test: Optional[np.ndarray],
                  out_dir: Path) -> Dict[str, str]:
    """Write the figures of a diagnosis into ``out_dir``; returns ``{role: file name}``."""
    from .. import diagnostic_plots as dp

    out = {}
    if history:
        dp.plot_elbo_terms(history, out_dir / FIGURES["elbo_terms"])
        out["elbo_terms"] = FIGURES["elbo_terms"]
    if d.latent.activity:
        dp.plot_kl_per_dim(d.latent.kl_per_dim, d.latent.activity, out_dir / FIGURES["kl_per_dim"],
                           threshold=d.latent.active_threshold, sites=d.latent.sites)
        out["kl_per_dim"] = FIGURES["kl_per_dim"]
    if d.iwae is not None:
        dp.plot_iwae_curve(d.iwae.k, d.iwae.bound, d.iwae.gain, d.iwae.gain_stderr, out_dir / FIGURES["iwae"])
        out["iwae"] = FIGURES["iwae"]
    if d.khat is not None:
        dp.plot_pareto_k(d.khat, d.test_index, out_dir / FIGURES["pareto_k"])
        out["pareto_k"] = FIGURES["pareto_k"]
    if not isinstance(vae, VAE) or vae.condition_dim:  # the code-space pictures need an unconditional VAE
        return out
    with torch.no_grad():
        means = posterior_means(vae, x_test)
    dp.plot_latent_pca(means.cpu().numpy(), y_test, out_dir / FIGURES["pca"])
    out["pca"] = FIGURES["pca"]
    activity = np.asarray(d.latent.activity)
    base = int(d.test_index[0])
    with torch.no_grad():
        rows, labels = _traversal_images(vae, x_test, means, activity, d.latent.kl_per_dim, base)
    dp.plot_image_rows(rows, out_dir / FIGURES["traversals"], labels,
                       f"Latent traversals from test image #{base}: one dimension varied per row "
                       f"({'largest KL' if d.latent.kl_per_dim is not None else 'most active'} first)",
                       "each row sweeps one dimension from its 2nd to its 98th percentile over the test set; "
                       "the others stay at the code of the image")
    out["traversals"] = FIGURES["traversals"]
    with torch.no_grad():
        rows, labels = _interpolation_images(vae, x_test, means, y_test)
    if len(rows):
        dp.plot_image_rows(rows, out_dir / FIGURES["interpolations"], labels,
                           "Interpolations between posterior means of two test images",
                           "first and last column: the test images; between: decoded means along the straight line")
        out["interpolations"] = FIGURES["interpolations"]
    return out


def diagnose_run(run_dir, data: Optional[str] = None, *, out_dir=None, k_max: int = 5000, points: int = 500,
                 gap_points: Optional[int] = None, gap_steps: int = 500, grad_repeats: int = 100, seed: int = 0,
                 progress: bool = False,
                 log: Optional[Callable[[str], None]] = None, posterior_points: int = 200,
                 posterior_draws: int = 100, device=None) -> Diagnosis:
    """``pyro-gen diagnose``: load a run, diagnose it on its test split (or ``data``'s), and write
    ``diagnostics.json``, ``posterior.nc``, the figures and ``report.html`` into ``out_dir``
    (default: the run directory). With ``device`` the model runs there (the data follow it; the
    results come back to the CPU).

    :raises pyro_gen.checkpoint.RunError: missing or broken run directory.
    :raises pyro_gen.data.DataError: unreadable data.
    """
    from .. import _arviz
    from ..report import write_report
    from ..families import binarizes
    from ..run import conditions, load_run, split_tensor
    from .posterior import posterior_data

    say = log or (lambda _msg: None)
    t_all = time.perf_counter()
    run = load_run(run_dir)
    if not run.family.density:
        raise InputError(f"{run.path} is a {run.family.name} run: diagnose needs a model with a likelihood and a "
                         "guide")
    if device is not None:
        run.vae.to(device)
    out_dir = Path(out_dir) if out_dir is not None else run.path
    vae = run.vae
    reason = unsupported_reason(vae)
    if reason:
        raise InputError(f"{run.path}: {reason}")
    ds = run.load_data(data)
    x_test, y_test = split_tensor(ds, binarizes(run.spec))
    x_train = ds.train_x[:128] if not binarizes(run.spec) else binarize_fixed(ds.train_x[:128], seed=seed)
    device = module_device(vae)  # the model's device (moved there by the caller): the data follow it
    x_test, x_train = x_test.to(device), torch.as_tensor(x_train, device=device)
    c_train, c_test = conditions(run.config, ds)  # the labels or side vectors of a conditional model
    side = lambda c: None if c is None else torch.as_tensor(np.asarray(c), device=device)  # noqa: E731
    train = run.config.get("train", {})
    d = diagnose(vae, x_test, x_train=x_train, elbo=train.get("elbo", "trace"),
                 num_particles=int(train.get("num_particles", 1)), k_max=k_max, points=points,
                 gap_points=gap_points, gap_steps=gap_steps, grad_repeats=grad_repeats, seed=seed,
                 progress=progress, log=say, y_test=side(c_test),
                 y_train=None if c_train is None else side(c_train[:128]))
    d.settings["data"] = data or run.config["data"]["spec"]
    _guarded(d, "data_shift", lambda: setattr(d, "data_shift", data_shift(run, ds, d)))
    summary = d.to_dict()
    d.verdicts = make_verdicts(summary, run.history, run.config)

    t = time.perf_counter()
    d.run_dir = str(run.path)
    _write_summary(d, out_dir, t_all)  # what was computed is saved before any optional output

    def posterior():
        sel = torch.as_tensor(d.test_index[:posterior_points], device=x_test.device)
        per_datum = {}
        if d.khat is not None:
            per_datum["pareto_k"] = d.khat[:posterior_points]
        if d.log_px is not None:
            per_datum["log_px"] = d.log_px[:posterior_points]
        with torch.no_grad():
            idata = posterior_data(vae, x_test[sel], d.test_index[:posterior_points],
                                   None if y_test is None else y_test[d.test_index[:posterior_points]],
                                   num_draws=posterior_draws, per_datum=per_datum, seed=seed,
                                   attrs={"pyro_gen_run": str(run.path), "guide": run.spec.guide,
                                          "note": "z drawn from the guide q(z|x) of each test image"},
                                   args=() if c_test is None else (side(c_test)[sel],))
        _arviz.to_netcdf(idata, out_dir / "posterior.nc")

    def figures():
        d.figures = write_figures(vae, d, run.history, x_test, y_test, out_dir)

    say("writing figures, report.html and posterior.nc")
    _guarded(d, "figures", figures)
    _guarded(d, "report.html", lambda: write_report(out_dir / "report.html", d.to_dict(), run, figures_dir=out_dir))
    _guarded(d, "posterior.nc", posterior)
    d.seconds["outputs"] = time.perf_counter() - t
    _write_summary(d, out_dir, t_all)
    return d


def data_shift(run, ds, d: Diagnosis) -> dict:
    """How the diagnosed data differ from the data the run was trained on: the ELBO of the run's
    own held-out data at the last epoch (``metrics.jsonl``) against the ELBO measured here (the
    IWAE curve's K = 1 point), and the mean pixel value of both training splits.

    :returns: ``{"same_data", "reference_elbo", "elbo", "drop", "pixel_mean_run", "pixel_mean_data"}``.
    """
    own = run.config["data"]["spec"]
    same = d.settings.get("data", own) == own
    rows = [r for r in run.history if r.get("val_elbo") is not None] or [r for r in run.history
                                                                         if r.get("train_elbo") is not None]
    reference = None if not rows else float(rows[-1].get("val_elbo", rows[-1].get("train_elbo")))
    elbo = None if d.iwae is None else float(d.iwae.bound[0])
    own_ds = ds if same else run.load_data()
    return {"same_data": same, "reference_elbo": reference, "elbo": elbo,
            "drop": None if reference is None or elbo is None else reference - elbo,
            "pixel_mean_run": float(np.mean(own_ds.train_x)), "pixel_mean_data": float(np.mean(ds.test_x))}


def _write_summary(d: Diagnosis, out_dir: Path, t_all: float) -> None:
    """Write ``diagnostics.json`` atomically (the total time so far included)."""
    d.seconds["total"] = time.perf_counter() - t_all
    data_bytes = (json.dumps(d.to_dict(), indent=2, sort_keys=True) + "\n").encode()
    atomic_write(out_dir / "diagnostics.json", lambda f: f.write(data_bytes))
