"""Latent posterior draws of test data as ArviZ data (``posterior.nc``).

Groups (dimensions in brackets):

* ``posterior``: ``z`` [chain, draw, datum, latent] -- draws from the guide :math:`q(z|x)`.
* ``log_likelihood``: ``x`` [chain, draw, datum] -- :math:`\\log p(x|z)` of each draw.
* ``sample_stats``: ``log_weight`` (:math:`\\log p(x, z) - \\log q(z|x)`), ``log_prior``
  (:math:`\\log p(z)`) and ``log_q`` (:math:`\\log q(z|x)`) [chain, draw, datum].
* ``constant_data``: per datum [datum]: ``test_index`` (position in the test split), ``label``
  (when known), and any per-datum diagnostics given (e.g. ``pareto_k``, ``log_px``).

For a point-mass guide there is one draw (the code itself) and no ``log_weight``/``log_q``.
Read it with ``az.from_netcdf("posterior.nc")`` (arviz < 1) or ``xarray.open_datatree`` (arviz >= 1),
e.g. ``az.summary(idata, var_names=["z"], coords={"datum": [0]})``.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import torch

from ..devices import rng_devices
from ..evaluate import MAX_DECODED
from .latent import is_point_mass

__all__ = ["posterior_data"]


@torch.no_grad()
def posterior_data(vae, x: torch.Tensor, test_index: np.ndarray, labels: Optional[np.ndarray] = None,
                   num_draws: int = 100, per_datum: Optional[Dict[str, np.ndarray]] = None,
                   attrs: Optional[dict] = None, seed: int = 0, args: tuple = ()):
    """ArviZ data holding ``num_draws`` posterior draws of z for each datum of ``x``.

    :param vae: a :class:`~pyro_gen.vae.VAE`.
    :param x: data ``(N, C, H, W)``.
    :param test_index: the position of each datum in the test split ``(N,)``.
    :param labels: class labels ``(N,)``, if any.
    :param num_draws: draws per datum (one for a point-mass guide).
    :param per_datum: more per-datum arrays ``(N,)`` for ``constant_data``.
    :param attrs: attributes (strings and numbers) of every group.
    :param seed: seed of the draws (the global random state is left as it was).
    :param args: further arguments of the pair (the side vectors of a conditional model); then the
        draws are read through traces, one variable per latent site.
    :returns: an ``InferenceData`` (arviz 0.x) or ``DataTree`` (arviz 1.x), see :mod:`pyro_gen._arviz`.
    """
    from .. import _arviz  # imported here: ArviZ takes seconds to import
    from ..vae import VAE

    if not isinstance(vae, VAE) or args:
        return _pair_posterior_data(vae, x, test_index, labels, num_draws, per_datum, attrs, seed, args)
    point_mass = is_point_mass(vae)
    draws = 1 if point_mass else num_draws
    prior = vae.prior()
    z_all, ll_all, lp_all, lq_all = [], [], [], []
    with torch.random.fork_rng(devices=rng_devices(x)):
        torch.manual_seed(seed)
        batch = max(1, MAX_DECODED // draws)
        for start in range(0, len(x), batch):
            xb = x[start:start + batch]
            q = vae.guide_net(xb)
            z = q.sample((draws,))  # (S, B, D)
            z_all.append(z)
            ll_all.append(vae.likelihood(vae.decoder(z)).log_prob(xb))
            lp_all.append(prior.log_prob(z))
            if not point_mass:
                lq_all.append(q.log_prob(z))
    cat = lambda parts: torch.cat(parts, dim=1).cpu().numpy()[None].astype(np.float64)  # noqa: E731 (1, S, N, ...)
    z, ll, lp = cat(z_all), cat(ll_all), cat(lp_all)
    sample_stats = {"log_prior": lp}
    if not point_mass:
        lq = cat(lq_all)
        sample_stats.update(log_q=lq, log_weight=lp + ll - lq)
    constant = _constant_data(test_index, labels, per_datum)
    n, d = z.shape[2], z.shape[3]
    dims = {"z": ["datum", "latent"], "x": ["datum"], **{k: ["datum"] for k in list(sample_stats) + list(constant)}}
    coords = {"datum": np.arange(n), "latent": np.arange(d)}
    return _arviz.from_dict({"posterior": {"z": z}, "log_likelihood": {"x": ll}, "sample_stats": sample_stats,
                             "constant_data": constant}, coords=coords, dims=dims, attrs=attrs)


def _constant_data(test_index, labels, per_datum) -> dict:
    constant = {"test_index": np.asarray(test_index, dtype=np.int64)}
    if labels is not None:
        constant["label"] = np.asarray(labels, dtype=np.int64)
    for name, values in (per_datum or {}).items():
        constant[name] = np.asarray(values, dtype=np.float64)
    return constant


@torch.no_grad()
def _pair_posterior_data(pair, x, test_index, labels, num_draws, per_datum, attrs, seed, args=()):
    """:func:`posterior_data` of any pair, from traces: one posterior variable per latent site
    (``(chain, draw, datum, SITE_dim)``, event dimensions flattened), one log-likelihood variable
    per observed site, and the summed log prior, log q and log weight per draw."""
    from .. import _arviz
    from ..traces import inspect_pair, site_log_probs

    sites = inspect_pair(pair, x[:2], *(a[:2] for a in args))
    draws = 1 if sites.point_mass else num_draws
    with torch.random.fork_rng(devices=rng_devices(x)):
        torch.manual_seed(seed)
        model, guide, values = site_log_probs(pair, x, draws, *args, sites=sites, values=True)
    arr = lambda t: t.double().cpu().numpy()[None]  # noqa: E731 -- (1, S, N, ...)
    posterior = {name: arr(values[name]) for name in sites.latent if values.get(name) is not None}
    log_prior = sum(model[name] for name in sites.latent)
    log_q = sum(guide[name] for name in sites.latent)
    log_lik = {name: arr(model[name]) for name in sites.observed}
    stats = {"log_prior": arr(log_prior)}
    if not sites.point_mass:
        stats.update(log_q=arr(log_q), log_weight=arr(log_prior + sum(model[n] for n in sites.observed) - log_q))
    constant = _constant_data(test_index, labels, per_datum)
    dims = {**{name: ["datum", f"{name}_dim"] for name in posterior}, **{name: ["datum"] for name in log_lik},
            **{k: ["datum"] for k in list(stats) + list(constant)}}
    coords = {"datum": np.arange(len(x)), **{f"{name}_dim": np.arange(v.shape[-1]) for name, v in posterior.items()}}
    return _arviz.from_dict({"posterior": posterior, "log_likelihood": log_lik, "sample_stats": stats,
                             "constant_data": constant}, coords=coords, dims=dims, attrs=attrs)
