"""The self-contained HTML report of a run (``RUN_DIR/report.html``).

One file, readable top to bottom with no server and no network: every figure is embedded as a
base64 PNG, the style sheet is inline, and there is no script. It says what was trained, how
training went, how the latent code is used, how good the approximate posterior is, and -- first of
all -- what looks wrong, as plain-language verdicts with the thresholds they apply
(:mod:`pyro_gen.diagnostics.verdicts`).
"""
from __future__ import annotations

import base64
import html
import math
import time
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

from . import __version__
from .checkpoint import atomic_write, read_json
from .errors import InputError

__all__ = ["write_report", "render_report"]

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.1em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
.meta { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.93em; }
th, td { border: 1px solid #ddd; padding: 0.35em 0.6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.badge { display: inline-block; min-width: 5em; text-align: center; border-radius: 3px; padding: 0.1em 0.4em;
         font-weight: bold; color: white; font-size: 0.85em; }
.ok { background: #2e7d32; } .note { background: #1565c0; } .warning { background: #ef6c00; }
.problem { background: #c62828; } .na { background: #757575; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #444; font-size: 0.92em; max-width: 900px; }
code, pre { background: #f6f6f6; padding: 0.1em 0.3em; border-radius: 3px; }
pre { padding: 0.6em; overflow-x: auto; }
.small { color: #555; font-size: 0.9em; }
"""

_STATUS_CLASS = {"ok": "ok", "note": "note", "warning": "warning", "problem": "problem", "n/a": "na"}


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _num(value, digits: int = 2, unit: str = "") -> str:
    if value is None:
        return "n/a"
    try:
        return f"{float(value):.{digits}f}{unit}"
    except (TypeError, ValueError):
        return _e(value)


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    """A table; cells are already HTML (escape them before)."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td class='num'>{c}</td>" if i in numeric else f"<td>{c}</td>"
                                     for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _figure(figures_dir: Path, name: Optional[str], caption: str, alt: str) -> str:
    if not name:
        return ""
    path = Path(figures_dir) / name
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f"<figure><img alt='{_e(alt)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{caption}</figcaption></figure>")


def _badge(status: str) -> str:
    return f"<span class='badge {_STATUS_CLASS.get(status, 'na')}'>{_e(status)}</span>"


def _verdict_rows(verdicts: List[dict], checks: Optional[Sequence[str]] = None) -> List[List[str]]:
    return [[_badge(v["status"]), _e(v["check"]), _e(v["value"]), _e(v["threshold"]), _e(v["advice"])]
            for v in verdicts if checks is None or any(v["check"].startswith(c) for c in checks)]


def _verdicts(verdicts: List[dict], checks: Sequence[str]) -> str:
    rows = _verdict_rows(verdicts, checks)
    return _table(["", "check", "measured", "rule", "what it means"], rows) if rows else ""


def _objective(train: dict) -> str:
    """What training maximized, with β, warm-up, free bits and weight decay: "meanfield ELBO, 1 particle
    per image, beta = 30"."""
    spec = train.get("objective", "elbo")
    text = (f"{train.get('elbo')} ELBO, {train.get('num_particles')} particle(s) per image" if spec == "elbo"
            else f"{spec} bound")
    if float(train.get("beta", 1.0)) != 1.0:
        text += f", KL weighted by beta = {float(train['beta']):g} (a beta-VAE: not the ELBO)"
    if int(train.get("warmup_epochs", 0) or 0):
        text += f", KL warm-up over {train['warmup_epochs']} epochs ({train.get('kl_schedule', 'linear')})"
    if float(train.get("free_bits", 0.0) or 0.0):
        text += f", free bits {float(train['free_bits']):g} nats per latent dimension"
    if float(train.get("weight_decay", 0.0) or 0.0):
        text += f", weight decay {float(train['weight_decay']):g} (AdamW)"
    return text


def _what_was_trained(config: dict, summary_json: dict, history: List[dict]) -> str:
    model, train, data = config.get("model", {}), config.get("train", {}), config.get("data", {})
    from .families import family_of
    try:
        family = family_of(config)
    except InputError:  # a kind this version does not know: named as it is
        family = None
    rows = [
        ("model", family.title if family is not None else config.get("model_kind", "?")),
        ("data", f"{data.get('spec')} (images of shape {tuple(model.get('image_shape', ()))})"),
        ("latent dimensions", model.get("latent_dim")),
        ("networks", f"{model.get('net')} encoder and decoder, hidden widths {tuple(model.get('hidden', ()))}"),
        ("likelihood p(x|z)", model.get("likelihood")),
        ("guide q(z|x)", model.get("guide")),
        ("prior p(z)", model.get("prior")),
    ]
    if family is not None and "guide" in family.refuses:  # the model defines its networks, guide and prior
        own = f"{family.title}, module:{config['module']}" if config.get("module") else family.help
        rows = rows[:2] + [("model and guide", own), ("settings given to it", f"latent dimensions "
                           f"{model.get('latent_dim')}, hidden widths {tuple(model.get('hidden', ()))}, likelihood "
                           f"{model.get('likelihood')}" + ("" if "prior" in family.refuses else
                                                           f", prior {model.get('prior')}"))]
    rows += [
        ("objective", _objective(train)),
        ("optimizer", f"{train.get('optimizer')}, learning rate {train.get('lr')} ({train.get('lr_schedule')} "
                      f"schedule), batch size {train.get('batch_size')}, seed {train.get('seed')}"),
        ("epochs", f"{len(history)} trained of {train.get('epochs')} planned"
                   + (" (stopped early)" if summary_json.get("stopped_early") else "")),
    ]
    if summary_json.get("train_seconds") is not None:
        rows.append(("training time", f"{summary_json['train_seconds']:.1f} s"))
    if summary_json.get("test_elbo") is not None:
        label = "test MAP objective" if family is not None and family.guide == "delta" else "test ELBO"
        rows.append((f"{label} after training", f"{summary_json['test_elbo']:.2f} nats per image"))
    return _table(["", ""], [[_e(k), _e(v)] for k, v in rows])


def _latent_section(lat: dict) -> str:
    rows = [["reconstruction E_q[log p(x|z)]", _num(lat["rec"])]]
    if lat.get("kl") is not None:
        rows += [["KL(q(z|x) || p(z)), mean per image" + ("" if lat["kl_closed_form"] else " (Monte Carlo)"),
                  _num(lat["kl"])],
                 ["ELBO = reconstruction - KL", _num(lat["rec"] - lat["kl"])],
                 ["mutual information I(x; z)", _num(lat["mutual_info"])],
                 ["KL(q(z) || p(z)), aggregate posterior vs prior", _num(lat["marginal_kl"])]]
    rows.append(["active units", f"{lat['active_units']} of {len(lat['activity'])}"])
    out = _table(["quantity (nats per image)", "value"], [[_e(a), b] for a, b in rows], numeric=[1])
    if lat.get("sites"):  # a pair read per latent site
        out += "<p>Per latent site:</p>" + _table(
            ["site", "dimensions", "KL (nats per image)", "active units",
             "I(x; z_site)" + (f" (at most log {lat['num_points']} = {math.log(lat['num_points']):.2f})"
                               if lat.get("num_points", 0) > 1 else "")],
            [[_e(name), _num(s.get("dims"), 0), _num(s.get("kl")), _num(s.get("active_units"), 0),
              _num(s.get("mutual_info"))]
             for name, s in lat["sites"].items()], numeric=[1, 2, 3, 4])
    if lat.get("note"):
        out += f"<p class='small'>{_e(lat['note'])}</p>"
    return out


def _importance_section(d: dict, figures_dir: Path, figures: dict) -> str:
    iwae = d.get("iwae")
    if iwae is None:
        return f"<p>{_e(d['notes'].get('importance', ''))}</p>"
    out = _figure(figures_dir, figures.get("iwae"),
                  "The importance-weighted bound L_K (Burda et al. 2015) for K importance samples per image, "
                  "estimated for every K from one set of K_max samples (averaging over disjoint groups of K). "
                  "L_1 is the ELBO; L_K rises towards log p(x) as K grows. A curve still rising at the right end "
                  "means log p(x) is higher than the last value.", "IWAE bound against K")
    out += _table(["K"] + [_e(k) for k in iwae["k"]],
                  [["L_K"] + [_num(b) for b in iwae["bound"]],
                   ["L_K - ELBO"] + [_num(g, 3) for g in iwae["gain"]],
                   ["± s.e."] + [_num(s, 3) for s in iwae["gain_stderr"]]],
                  numeric=range(1, len(iwae["k"]) + 1))
    out += (f"<p class='small'>Mean over {iwae['num_data']} test images; standard errors of the gain are paired "
            "per image.</p>")
    pk = d.get("pareto_k")
    if pk is not None:
        out += _figure(figures_dir, figures.get("pareto_k"),
                       "PSIS k-hat (Yao et al. 2018) of each test image's importance weights log p(x, z) - log q(z|x), "
                       "z ~ q(z|x), computed through ArviZ. Below 0.5 (green) the weights have finite variance; "
                       "0.5-0.7 (orange) importance sampling still converges, slowly; above 0.7 (red) it is "
                       "unreliable: q misses parts of the posterior of that image.", "k-hat per test image")
        if pk["bad_index"]:
            shown = ", ".join(str(i) for i in pk["bad_index"][:60]) + (" ..." if len(pk["bad_index"]) > 60 else "")
            out += f"<p>Test images with k-hat &gt; 0.7 ({len(pk['bad_index'])}): {_e(shown)}</p>"
        else:
            out += "<p>No test image has k-hat &gt; 0.7.</p>"
    elif d["notes"].get("pareto_k"):
        out += f"<p>{_e(d['notes']['pareto_k'])}</p>"
    return out


def _gap_section(gap: dict) -> str:
    if gap.get("log_px") is None:
        return f"<p>Amortization gap: {_e(gap.get('note', ''))}</p>"
    rows = [("log p(x), importance sampled", "log_px"), ("ELBO of the encoder's q(z|x)", "elbo_amortized"),
            ("ELBO of the best q of the same family, per image", "elbo_optimized"),
            ("approximation gap = log p(x) - ELBO(best q)", "approximation_gap"),
            ("amortization gap = ELBO(best q) - ELBO(encoder's q)", "amortization_gap")]
    table = _table(["quantity (nats per image, mean over the sample)", "value", "± s.e."],
                   [[_e(a), _num(gap[k]), _num(gap[k + "_stderr"], 3)] for a, k in rows], numeric=[1, 2])
    return ("<p>The inference gap log p(x) - ELBO splits into the price of the guide family (approximation gap) "
            "and the price of sharing one encoder across all images (amortization gap) (Cremer et al. 2018). "
            + (f"For each of {gap['num_data']} test images, the pair's own guide was refined on that image "
               "alone and restored afterwards (the parameters the guide uses and the model does not, from their "
               "trained values, "
               if gap.get("refined_guide") else
               f"For each of {gap['num_data']} test images, a q of the guide's family was optimized on its own "
               f"(started at the encoder's output, ")
            + f"{gap['steps']} Adam steps, {gap['num_samples']} draws per step); "
            f"ELBOs use {gap['eval_samples']} draws with common random numbers; log p(x) is importance sampled "
            f"with {gap['log_px_samples']} draws from the equal mixture of both q's. That estimate is itself a "
            f"stochastic lower bound: where k-hat is high it is too low, and so is the approximation gap."
            + (f" {_e(gap['note'])}." if gap.get("note") else "") + "</p>" + table)


def _gradient_section(grads: List[dict], note: str) -> str:
    if note or not grads:
        return f"<p>{_e(note or 'not measured')}</p>"
    rows = [[_e(g["group"]), _e(g["num_params"]), _num(g["median_snr"], 3), _num(g["mean_snr"], 3),
             _num(g["total_variance"], 4), _num(g["mean_grad_sq_norm"], 4)] for g in grads]
    return ("<p>The training objective's gradient on a fixed minibatch, drawn again and again: per parameter, "
            "SNR = |mean| / standard deviation (Rainforth et al. 2018). Only the Monte Carlo noise of the "
            "draws of z is measured, not that of picking the minibatch.</p>"
            + _table(["group", "parameters", "median SNR", "mean SNR", "total variance", "|mean gradient|²"], rows,
                     numeric=[1, 2, 3, 4, 5]))


def _training_caption(history: List[dict]) -> str:
    has = lambda key: any(row.get(key) is not None for row in history)  # noqa: E731
    parts = ["The ELBO per image during training (higher is better); the training value is a running mean over "
             "each epoch's minibatches, the held-out value is measured at the end of the epoch."]
    if has("rec"):
        parts.append("The ELBO's two terms on held-out images: the reconstruction E_q[log p(x|z)]"
                     + (" and the KL from the prior (how much the code says about each image)." if has("kl") else "."))
    if has("mutual_info"):
        parts.append("The KL split into the mutual information between images and codes and the divergence of the "
                     "aggregate posterior from the prior (Hoffman &amp; Johnson 2016).")
    if has("active_units"):
        parts.append("The number of active units"
                     + (". A KL falling to zero with no active units is posterior collapse." if has("kl") else "."))
    return " ".join(parts)


def render_report(d: dict, config: dict, history: List[dict], figures_dir, summary_json: Optional[dict] = None,
                  run_dir: str = "") -> str:
    """The report as one HTML string.

    :param d: the diagnosis (``diagnostics.json`` content, with ``figures``).
    :param config: the run's ``config.json``.
    :param history: the run's ``metrics.jsonl`` rows.
    :param figures_dir: where the figures named in ``d["figures"]`` are.
    :param summary_json: the run's ``summary.json`` (training time, test ELBO), if any.
    :param run_dir: shown in the header.
    """
    figures_dir, figures = Path(figures_dir), d.get("figures", {})
    verdicts, s = d.get("verdicts", []), d["settings"]
    worst = [v for v in verdicts if v["status"] in ("problem", "warning")]
    counted = f" <span class='small'>({_e(d.get('summary', ''))})</span>" if d.get("summary") else ""
    headline = ("<p><b>Nothing looks wrong.</b>" + counted + "</p>" if not worst else
                "<p><b>Look at:</b> " + "; ".join(f"{_e(v['check'])} ({_e(v['status'])})" for v in worst) + "."
                + counted + "</p>")
    lat = d["latent"]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>pyro_gen report: {_e(run_dir)}</title><style>{_STYLE}</style></head><body>",
        "<h1>Run report</h1>",
        f"<p class='meta'>{_e(run_dir)} &middot; written {_e(time.strftime('%Y-%m-%d %H:%M'))} by pyro_gen "
        f"{_e(__version__)}</p>",
        "<h2>Verdicts</h2>", headline,
        _table(["", "check", "measured", "rule", "what it means"], _verdict_rows(verdicts)),
        "<h2>1. What was trained</h2>", _what_was_trained(config, summary_json or {}, history),
        "<h2>2. How training went</h2>",
        _figure(figures_dir, figures.get("elbo_terms"), _training_caption(history), "ELBO terms per epoch")
        or "<p>No per-epoch metrics were recorded.</p>",
        _verdicts(verdicts, ["Training progress", "Overfitting", "Data shift"]),
        "<h2>3. How the latent code is used</h2>",
        f"<p>Measured on {lat['num_points']} test images.</p>", _latent_section(lat),
        _figure(figures_dir, figures.get("kl_per_dim"),
                ("Top: the KL of each latent dimension (its share of the rate). Bottom: each" if lat.get("kl_per_dim")
                 else "Each") + " unit's activity, the variance over test images of its posterior mean; a unit is "
                f"active above {lat['active_threshold']:g} (Burda et al. 2015). Inactive units (grey) carry no "
                "information about the image.", "KL and activity per latent dimension"),
        _verdicts(verdicts, ["Posterior collapse", "Decoder uses z", "Unused latent", "Information in the code"]),
        _figure(figures_dir, figures.get("pca"),
                "The posterior means of the test images projected on their first two principal components, coloured "
                "by class label. Classes that form separate clusters are encoded distinctly, without any labels "
                "being used in training.", "PCA of the latent means"),
        "<h2>4. How good is the approximate posterior</h2>",
        _importance_section(d, figures_dir, figures),
        _verdicts(verdicts, ["ELBO tightness", "Convergence", "Agreement", "PSIS"]),
        _gap_section(d["gap"]), _verdicts(verdicts, ["Amortization gap"]),
        "<h2>5. Gradient noise</h2>", _gradient_section(d.get("gradients") or [], d["notes"].get("gradients", "")),
        "<h2>6. Pictures of the model</h2>",
        _figure(figures_dir, "reconstructions.png", "Test images and their reconstructions (written by training).",
                "reconstructions"),
        _figure(figures_dir, "samples.png", "Mean images of codes drawn from the prior (written by training).",
                "samples"),
        _figure(figures_dir, figures.get("traversals"),
                "Each row changes one latent dimension of one test image's code and decodes; dimensions are sorted "
                "by activity. A row that does not change is an unused dimension.", "latent traversals"),
        _figure(figures_dir, figures.get("interpolations"),
                "Decoded points on the straight line between the posterior means of two test images. Smooth "
                "transitions through plausible images mean a well-organised latent space.", "interpolations"),
        "<h2>7. How this was measured</h2>",
        f"<p>Test data: {_e(s.get('data'))} ({d['num_test']} test images). {_e(d['notes'].get('subset', ''))} "
        + (f"Importance sampling: K_max = {_e(s['k_max'])} samples per image. " if d.get("iwae") else "")
        + (f"Amortization gap: {_e(d['gap']['num_data'])} images, {_e(s['gap_steps'])} Adam steps. "
           if d["gap"].get("log_px") is not None else "")
        + (f"Gradient noise: {_e(s['grad_repeats'])} gradients of the '{_e(s['elbo'])}' objective on "
           f"{_e(s['grad_batch'])} training images. " if d.get("gradients") else "")
        + f"Seed {_e(s['seed'])}. Time: {_num(d['seconds'].get('total'), 1)} s.</p>",
        "<p>Files in the run directory: <code>diagnostics.json</code> (every number above), "
        "<code>posterior.nc</code> (posterior draws of z for test images, with log-likelihoods, log weights and "
        "per-image k-hat, as ArviZ data), the figures (PNG), <code>metrics.jsonl</code> (per-epoch metrics).</p>",
        "<pre>import arviz as az\nidata = az.from_netcdf('posterior.nc')   # arviz &gt;= 1: xarray.open_datatree\n"
        "az.summary(idata, var_names=['z'], coords={'datum': [0]})</pre>",
        "<p class='small'>References: Burda, Grosse &amp; Salakhutdinov 2015 (IWAE, active units); Hoffman &amp; "
        "Johnson 2016 (ELBO surgery); Yao, Vehtari, Simpson &amp; Gelman 2018 (PSIS diagnostic for variational "
        "inference); Cremer, Li &amp; Duvenaud 2018 (inference suboptimality); Rainforth et al. 2018 (tighter "
        "bounds are not necessarily better).</p>",
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)


def write_report(path, d: dict, run, figures_dir=None) -> None:
    """Write ``report.html`` for a loaded :class:`~pyro_gen.run.Run` and its diagnosis (atomically).

    :param path: the HTML file.
    :param d: the diagnosis dict (``diagnostics.json`` content, with ``figures``).
    :param run: the run.
    :param figures_dir: folder of the figures (default: the run directory).
    """
    summary_path = Path(run.path) / "summary.json"
    summary_json = read_json(summary_path) if summary_path.is_file() else {}
    text = render_report(d, run.config, run.history, figures_dir or run.path, summary_json, str(run.path))
    data = text.encode("utf-8")
    atomic_write(path, lambda f: f.write(data))
