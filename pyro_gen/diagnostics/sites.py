"""The latent diagnostics of any model/guide pair, per latent site, from traces.

For a pair that is not the built-in :class:`~pyro_gen.vae.VAE` (a user's own pair, the
hierarchical VAE), everything comes from :func:`pyro_gen.traces.site_log_probs`: with
:math:`z^{(k)} \\sim q(z \\mid x)` drawn by the guide and the model replayed on them,

.. math::

    \\text{rec}(x) = \\overline{\\textstyle\\sum_{s \\text{ observed}} \\log p_s}, \\qquad
    \\mathrm{KL}_s(x) = \\overline{\\log q_s(z_s) - \\log p_s(z_s \\mid \\ldots)},

the bars averaging the K draws; the KL terms of all sites add up to the ELBO's KL term
(:math:`\\mathrm{ELBO} = \\text{rec} - \\sum_s \\mathrm{KL}_s`). For a hierarchy the KL of a lower
site is taken against its conditional prior :math:`p(z_l \\mid z_{l+1})` at the guide's draws.
A unit of a site is active when the variance over data of its posterior mean (the guide's mean
where its distribution has one, else the average of the K draws) exceeds 0.01 (Burda et al. 2015).

The mutual information :math:`I(x; z_s)` of a site is reported where it is defined from the
guide alone: for a site whose guide distribution depends on x only, not on the guide's other
draws (found by re-running the guide with the other sites' draws replaced; for a bottom-up
hierarchy, its first layer), as :math:`\\overline{\\log q(z_s|x_n) - \\log\\frac1N\\sum_m q(z_s|x_m)}`
over the ``N`` data (Hoffman & Johnson 2016; at most :math:`\\log N`). The aggregate posterior's
KL is not reported per site.
"""
from __future__ import annotations

import time
from typing import Dict, Optional, Sequence

import pyro
import pyro.poutine as poutine
import torch

from ..devices import rng_devices
from ..traces import _sample_sites, inspect_pair, site_log_probs
from .latent import (ACTIVE_THRESHOLD, COLLAPSE_ACTIVE, COLLAPSE_KL, LatentDiagnostics, _subset,
                     aggregate_posterior_draws)

__all__ = ["site_diagnostics", "decoder_dependence", "pair_epoch_metrics"]


@torch.no_grad()
def x_only_sites(pair, x: torch.Tensor, *args, names=None) -> Dict[str, object]:
    """The latent sites whose guide distribution depends on the data alone, not on the guide's
    other draws, each with that distribution for ``x`` (``batch_shape (N,)``, one event
    dimension). Found by running the guide twice and once more with every other site's draw
    taken from the second run: a site whose density of its own draw does not change is kept."""
    with pyro.validation_enabled(False):
        first = poutine.trace(pair.guide).get_trace(x, *args)
        second = poutine.trace(pair.guide).get_trace(x, *args)
        names = [n for n, s in _sample_sites(first).items() if not s["is_observed"] and (names is None or n in names)]
        out = {}
        for name in names:
            fn, value = first.nodes[name]["fn"], first.nodes[name]["value"]
            if fn.batch_shape != (len(x),) or len(fn.event_shape) != 1:
                continue
            data = {n: (first if n == name else second).nodes[n]["value"] for n in names}
            mixed = poutine.trace(poutine.condition(pair.guide, data=data)).get_trace(x, *args)
            if torch.allclose(mixed.nodes[name]["fn"].log_prob(value), fn.log_prob(value), atol=1e-5, rtol=1e-5):
                out[name] = fn
    return out


def _site_mutual_info(pair, x: torch.Tensor, args, names, known: Optional[Sequence[str]] = None) -> Dict[str, float]:
    """:math:`I(x; z_s)` per site that depends on the data alone (see the module's description);
    ``known``: those sites' names, found before (:func:`x_only_sites`), so that one guide trace
    gives their distributions."""
    out = {}
    try:  # on a forked random state, so that the draws below are the same whichever way the sites are found
        with torch.random.fork_rng(devices=rng_devices(x)):
            if len(x) < 2:
                roots = {}
            elif known is None:
                roots = x_only_sites(pair, x, *args, names=names)
            else:
                with pyro.validation_enabled(False):
                    trace = poutine.trace(pair.guide).get_trace(x, *args)
                roots = {name: trace.nodes[name]["fn"] for name in known}
    except Exception:  # noqa: BLE001 -- a guide that cannot be re-run conditioned: no I(x; z)
        return out
    for name, q in roots.items():
        try:
            _z, log_q_own, log_agg = aggregate_posterior_draws(q, num_samples=4)
        except Exception:  # noqa: BLE001 -- a distribution that cannot score foreign codes
            continue
        out[name] = float((log_q_own - log_agg).mean())
    return out


def _guide_means(pair, x: torch.Tensor, args, names, seed: int) -> Dict[str, torch.Tensor]:
    """Each latent site's guide mean ``(N, D)`` (float64) where its distribution has one and it is
    one row of D per datum (a lower site of a hierarchy: its mean given one draw of the sites it
    depends on). The activity of a unit is the variance over data of this mean (Burda et al. 2015);
    the average of K draws would add the guide's own variance / K (0.06 for a collapsed unit at
    K = 16, above the 0.01 threshold)."""
    out = {}
    with torch.random.fork_rng(devices=rng_devices(x)), pyro.validation_enabled(False):
        torch.manual_seed(seed + 2)
        try:
            trace = poutine.trace(pair.guide).get_trace(x, *args)
        except Exception:  # noqa: BLE001 -- measured from the draws instead
            return out
    for name in names:
        try:
            mean = trace.nodes[name]["fn"].mean
        except (NotImplementedError, AttributeError, KeyError):
            continue
        if mean.dim() >= 1 and mean.shape[0] == len(x) and mean.numel() % len(x) == 0:
            out[name] = mean.reshape(len(x), -1).double()
    return out


@torch.no_grad()
def site_diagnostics(pair, x: torch.Tensor, *args, num_samples: int = 16, max_points: int = 500, seed: int = 0,
                     min_kl: float = COLLAPSE_KL, min_active_units: int = COLLAPSE_ACTIVE,
                     active_threshold: float = ACTIVE_THRESHOLD,
                     x_only: Optional[Sequence[str]] = None) -> LatentDiagnostics:
    """Per-site latent diagnostics of any pair on (at most ``max_points`` of) ``x``.

    :param pair: a model/guide pair (the contract of :mod:`pyro_gen.traces`).
    :param x: data ``(N, ...)``.
    :param args: further arguments of model and guide.
    :param num_samples: K draws per datum.
    :param max_points: data used at most (evenly spaced).
    :param seed: seed of the draws (the global random state is left as it was).
    :param x_only: the names of the sites the guide draws from the data alone, if known
        (:func:`x_only_sites`; found here when ``None``).
    :returns: a :class:`~pyro_gen.diagnostics.latent.LatentDiagnostics` whose totals add the
        sites up and whose ``sites`` holds, per latent site, its KL, active units, activity and
        I(x; z_s) where defined.
    """
    t0 = time.perf_counter()
    x = _subset(x, max_points)
    sites = inspect_pair(pair, x[:2], *(a[:2] for a in args))
    with torch.random.fork_rng(devices=rng_devices(x)):
        torch.manual_seed(seed)
        model, guide, draws = site_log_probs(pair, x, num_samples, *args, sites=sites, values=True)
    rec = sum(model[name] for name in sites.observed).mean(0).double()
    per_site, activity, kl_total = {}, [], torch.zeros_like(rec)
    point_mass = bool(sites.point_mass)
    means = _guide_means(pair, x, args, sites.latent, seed)
    for name in sites.latent:
        kl = (guide[name] - model[name]).mean(0).double()
        kl_total = kl_total + kl
        v = means.get(name)
        if v is None and draws.get(name) is not None:  # no closed-form mean: the average of the K draws
            v = draws[name].mean(0)
        act = None if v is None or len(x) < 2 else v.var(0, unbiased=True)
        per_site[name] = {"kl": None if point_mass else float(kl.mean()),
                          "dims": None if act is None else int(act.numel()),
                          "active_units": None if act is None else int((act > active_threshold).sum()),
                          "activity": None if act is None else act.tolist()}
        if act is not None:
            activity += act.tolist()
    with torch.random.fork_rng(devices=rng_devices(x)):
        torch.manual_seed(seed + 1)
        mutual = {} if point_mass else _site_mutual_info(pair, x, args, sites.latent, x_only)
    for name in per_site:
        per_site[name]["mutual_info"] = mutual.get(name)
    n_active = sum(s["active_units"] or 0 for s in per_site.values())
    kl_mean = None if point_mass else float(kl_total.mean())
    reasons = []
    if kl_mean is not None and kl_mean < min_kl:
        reasons.append(f"mean KL {kl_mean:.3f} nats < {min_kl:g}")
    if n_active < min_active_units:
        reasons.append(f"{n_active} active units < {min_active_units}")
    single = len(per_site) == 1 and mutual  # one flat code: its I(x; z) is the model's
    note = (f"per latent site from traces (Monte Carlo over {num_samples} draws); I(x; z) per site where "
            "the guide draws it from the data alone"
            + ("" if mutual else " (no such site here)") + "; the aggregate posterior's KL is not reported for "
            "this pair")
    return LatentDiagnostics(
        rec=float(rec.mean()), kl=kl_mean, kl_closed_form=False,
        kl_per_dim=None, kl_per_dim_note="per site: see sites", activity=activity, active_units=n_active,
        mutual_info=next(iter(mutual.values())) if single else None, marginal_kl=None, collapse=bool(reasons),
        collapse_reason="; ".join(reasons),
        num_points=len(x), active_threshold=active_threshold, min_kl=min_kl, min_active_units=min_active_units,
        note=note, seconds=time.perf_counter() - t0, sites=per_site)


def pair_epoch_metrics(x_fallback: Optional[torch.Tensor] = None, **kwargs):
    """An ``epoch_metrics(pair, x_val)`` callable for :func:`pyro_gen.train.fit`: the
    :meth:`~pyro_gen.diagnostics.latent.LatentDiagnostics.row` of :func:`site_diagnostics` on
    held-out data (one intra-op thread, as :func:`~pyro_gen.diagnostics.latent.epoch_diagnostics`).
    Which sites the guide draws from the data alone is a property of the guide's structure: it is
    found on the first epoch and reused."""
    x_only = None

    def epoch_metrics(pair, x_val):
        nonlocal x_only
        x = x_val if x_val is not None else x_fallback
        if x is None or len(x) == 0:
            return {}
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            lat = site_diagnostics(pair, x, x_only=x_only, **kwargs)
        finally:
            torch.set_num_threads(threads)
        if x_only is None:
            x_only = [name for name, s in lat.sites.items() if s["mutual_info"] is not None]
        return lat.row()
    return epoch_metrics


@torch.no_grad()
def decoder_dependence(pair, x: torch.Tensor, *args, num_samples: int = 4, seed: int = 0) -> dict:
    """Does :math:`p(x \\mid z)` depend on z? The reconstruction term with z drawn from the guide,
    :math:`E_{q(z|x)}[\\log p(x \\mid z)]`, against the same term with z drawn from the prior,
    :math:`E_{p(z)}[\\log p(x \\mid z)]` (the model run on its own, x observed), in nats per datum.

    A decoder that ignores z scores x the same whatever z is, so the two agree; any decoder that
    uses z explains x better with codes inferred from x than with codes drawn blindly from the
    prior (on MNIST by tens to hundreds of nats). Active units alone cannot tell: an encoder can
    spread its codes over x while the decoder disregards them.

    :returns: ``{"rec_guide", "rec_prior", "difference"}`` (nats per datum, ``difference`` =
        ``rec_guide - rec_prior``).
    """
    import pyro.poutine as poutine
    from ..traces import _per_datum, _sample_sites, data_plates
    sites = inspect_pair(pair, x[:2], *(a[:2] for a in args))
    plates = data_plates(pair)
    with torch.random.fork_rng(devices=rng_devices(x)):
        torch.manual_seed(seed)
        model, _ = site_log_probs(pair, x, num_samples, *args, sites=sites)
        rec_guide = sum(model[name] for name in sites.observed).mean().item()
        total = 0.0
        for _ in range(num_samples):
            trace = poutine.trace(pair.model).get_trace(x, *args)
            observed = _sample_sites(trace)
            total += sum(_per_datum(observed[n]["fn"].log_prob(observed[n]["value"]), observed[n], plates,
                                    sites.nesting + 1).mean().item() for n in sites.observed)
    rec_prior = total / num_samples
    return {"rec_guide": rec_guide, "rec_prior": rec_prior, "difference": rec_guide - rec_prior}
