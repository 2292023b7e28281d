"""Any model/guide pair, read through Pyro traces: the contract check, the log importance
weights and the per-site terms of the ELBO.

The contract (``docs/own_model.rst``): a ``torch.nn.Module`` with ``model(x, *args)`` and
``guide(x, *args)`` written as ordinary Pyro, every sample site inside a ``pyro.plate`` named
``"data"`` over the first dimension of ``x`` (per-datum sites), the guide sampling every latent
site of the model and nothing else. Then, with :math:`z_k \\sim q(z \\mid x)` drawn by running the
guide and the model replayed on its draws,

.. math::

    \\log w_k(x_n) = \\sum_{s \\in \\text{model}} \\log p_s(\\cdot_{kn})
    - \\sum_{s \\in \\text{guide}} \\log q_s(z_{kn}),

each site's log density summed over everything but the particle and the datum (its event
dimensions and any plate nested inside ``"data"``), without the scales an engine may apply
(:mod:`pyro_gen.handlers`). The mean of :math:`\\log w_k` is the ELBO, its log-mean-exp the
importance-sampled bound of Burda et al. (2015). The K particles are one vectorized plate to the
left of the pair's own plates, as Pyro's ``vectorize_particles``; a pair whose networks cannot
take the extra leading dimension is evaluated by repeating the data K times instead (the same
numbers, more encoder passes). A built-in model may provide a faster ``log_weights(x, num_samples,
*args)`` method; the tests hold every one equal to :func:`trace_log_weights`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.poutine.util import site_is_subsample

from .devices import rng_devices
from .errors import InputError

__all__ = ["DATA_PLATE", "PairSites", "inspect_pair", "trace_log_weights", "site_log_probs", "is_pair",
           "pair_name"]

#: The name of the plate over data that the contract asks for.
DATA_PLATE = "data"


def pair_name(pair) -> str:
    return type(pair).__name__


def is_pair(obj) -> bool:
    """Whether ``obj`` has callable ``model`` and ``guide`` (the whole structural contract)."""
    return callable(getattr(obj, "model", None)) and callable(getattr(obj, "guide", None))


@dataclass
class PairSites:
    """What one run of a pair shows: its sites, by role.

    :param latent: the latent sites, name -> event shape (the model's order).
    :param observed: the observed sites of the model.
    :param discrete: latent sites with a discrete distribution.
    :param point_mass: latent sites whose guide is a point mass (no density: no importance sampling).
    :param factorized: latent sites whose guide and prior both factorize over their last dimension
        (``Independent(univariate, 1)``), for the KL per dimension and free bits.
    :param plates: the plates that scale with the data (``"data"`` and any the pair declares).
    :param nesting: the number of plate dimensions the pair uses (``max_plate_nesting``).
    """

    latent: Dict[str, torch.Size] = field(default_factory=dict)
    observed: List[str] = field(default_factory=list)
    discrete: List[str] = field(default_factory=list)
    point_mass: List[str] = field(default_factory=list)
    factorized: List[str] = field(default_factory=list)
    plates: Tuple[str, ...] = (DATA_PLATE,)
    nesting: int = 1


def data_plates(pair) -> Tuple[str, ...]:
    """The plates over data of a pair: ``("data",)``, or the pair's own ``data_plates`` attribute
    (the semi-supervised VAE has a ``labelled`` and an ``unlabelled`` one)."""
    return tuple(getattr(pair, "data_plates", (DATA_PLATE,)))


def _data_frame(site, plates: Sequence[str]):
    for frame in site["cond_indep_stack"]:
        if frame.name in plates:
            return frame
    return None


def _sample_sites(trace) -> Dict[str, dict]:
    return {name: site for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site_is_subsample(site)}


def _traces(pair, args, kwargs):
    guide_trace = poutine.trace(pair.guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(pair.model, trace=guide_trace)).get_trace(*args, **kwargs)
    return model_trace, guide_trace


def _factorizes(d) -> bool:
    return (isinstance(d, torch.distributions.Independent) and d.reinterpreted_batch_ndims == 1
            and d.base_dist.event_shape == ())


@torch.no_grad()
def inspect_pair(pair, *args, **kwargs) -> PairSites:
    """Run the guide and the model (replayed on the guide's draws) once on ``args`` and check the
    contract; return the pair's sites by role.

    Runs on a forked random-number state: the caller's random stream is left as it was.

    :param pair: the model/guide pair.
    :param args: the arguments of both, e.g. a small batch ``x`` (and side vectors).
    :raises InputError: one line naming the site (or the method) that breaks the contract.
    """
    name = pair_name(pair)
    if not is_pair(pair):
        missing = [m for m in ("model", "guide") if not callable(getattr(pair, m, None))]
        raise InputError(f"{name} is not a model/guide pair: it has no {' and no '.join(missing)} method "
                         "(pyro_gen needs model(x, ...) and guide(x, ...) written in Pyro)")
    plates = data_plates(pair)
    with torch.random.fork_rng(devices=rng_devices(*args)), pyro.validation_enabled(False):
        try:
            model_trace, guide_trace = _traces(pair, args, kwargs)
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001 -- the user's code failed: say where, in one line
            raise InputError(f"{name}: running guide then model on a batch of {len(args[0])} failed "
                             f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from e
    model_sites, guide_sites = _sample_sites(model_trace), _sample_sites(guide_trace)
    out = PairSites(plates=plates)
    for site_name, site in list(model_sites.items()) + list(guide_sites.items()):
        where = "model" if site_name in model_sites and model_sites[site_name] is site else "guide"
        if _data_frame(site, plates) is None:
            raise InputError(f"{name}.{where}: site {site_name!r} is outside pyro.plate({DATA_PLATE!r}); pyro_gen "
                             f"needs every sample site inside the plate over data (per-datum latents), so that "
                             f"the data-set scale and log p(x) per datum are defined")
    for site_name, site in model_sites.items():
        if site["is_observed"]:
            out.observed.append(site_name)
            continue
        if site_name not in guide_sites:
            raise InputError(f"{name}: the guide does not sample the model's latent site {site_name!r} (it must "
                             f"sample every latent site of the model)")
        q, p = guide_sites[site_name]["fn"], site["fn"]
        out.latent[site_name] = torch.Size(site["fn"].event_shape)
        if getattr(p, "support", None) is not None and p.support.is_discrete:
            out.discrete.append(site_name)
        if isinstance(q, dist.Delta) or (isinstance(q, torch.distributions.Independent)
                                         and isinstance(q.base_dist, dist.Delta)):
            out.point_mass.append(site_name)
        if _factorizes(q) and _factorizes(p):
            out.factorized.append(site_name)
    for site_name in guide_sites:
        if site_name not in model_sites:
            raise InputError(f"{name}.guide: site {site_name!r} has no counterpart in the model (the guide may sample "
                             f"only the model's latent sites)")
    if not out.observed:
        raise InputError(f"{name}.model observes no site: pass the data as obs=x to a pyro.sample inside "
                         f"pyro.plate({DATA_PLATE!r})")
    frames = [f for t in (model_trace, guide_trace) for s in _sample_sites(t).values()
              for f in s["cond_indep_stack"] if f.vectorized]
    out.nesting = max([-f.dim for f in frames if f.dim is not None] + [1])
    return out


def _per_datum(log_p: torch.Tensor, site, plates: Sequence[str], full: int) -> torch.Tensor:
    """Sum a site's log density over everything but the particle dimension (``-full``) and the
    data plate's dimension: shape ``(K, B)``."""
    frame = _data_frame(site, plates)
    mask = site.get("mask")
    if mask is not None:
        log_p = torch.where(mask, log_p, log_p.new_zeros(()))
    while log_p.dim() < full:
        log_p = log_p.unsqueeze(0)
    data_axis = full + frame.dim
    other = [i for i in range(log_p.dim()) if i not in (0, data_axis)]
    if other:
        log_p = log_p.sum(other, keepdim=True)
    return log_p.reshape(log_p.shape[0], log_p.shape[data_axis])


def _vectorized(fn: Callable, k: int, dim: int) -> Callable:
    def wrapped(*args, **kwargs):
        with pyro.plate("_particles", k, dim=dim):
            return fn(*args, **kwargs)
    return wrapped


def _repeat(a, k: int):
    if isinstance(a, torch.Tensor) and a.dim() >= 1:
        return a.repeat((k,) + (1,) * (a.dim() - 1))
    return a


@torch.no_grad()
def site_log_probs(pair, x: torch.Tensor, num_samples: int, *args, sites: Optional[PairSites] = None,
                   vectorize: Optional[bool] = None, values: bool = False):
    """The log density of every site for ``num_samples`` draws of the guide per datum.

    :param pair: a model/guide pair.
    :param x: data ``(B, ...)``.
    :param num_samples: K.
    :param args: further arguments of model and guide (side vectors ``(B, ...)``).
    :param sites: :func:`inspect_pair`'s answer, if known.
    :param vectorize: draw the K particles as one vectorized plate (``None``: try it, and fall back
        to repeating the data K times if the pair's networks cannot take the extra dimension).
    :param values: also return the guide's draws.
    :returns: ``(model, guide)``: site name -> ``(K, B)`` tensor of :math:`\\log p` (model sites,
        observed included) and :math:`\\log q` (guide sites), each summed per datum; with
        ``values``, a third dict: latent site name -> draws ``(K, B, D)`` (event dimensions
        flattened), or ``None`` where the site's draws are not one row per datum.
    """
    sites = sites or inspect_pair(pair, x[:2], *(_head(a, 2) for a in args))
    b, k = x.shape[0], int(num_samples)
    full = sites.nesting + 1
    traces = None
    if vectorize is not False:
        try:
            with pyro.validation_enabled(False):
                traces = _traces(type("_V", (), {"model": staticmethod(_vectorized(pair.model, k, -full)),
                                                 "guide": staticmethod(_vectorized(pair.guide, k, -full))})(),
                                 (x,) + args, {})
            out = _collect(*traces, sites, full, k, b)
        except Exception:  # noqa: BLE001 -- networks that cannot broadcast over particles
            if vectorize:
                raise
            traces = None
    if traces is None:
        reps = (_repeat(x, k),) + tuple(_repeat(a, k) for a in args)
        with pyro.validation_enabled(False):
            traces = _traces(pair, reps, {})
        model, guide = _collect(*traces, sites, full, 1, k * b)
        out = ({n: v.reshape(k, b) for n, v in model.items()}, {n: v.reshape(k, b) for n, v in guide.items()})
    if not values:
        return out
    draws = {}
    for name, site in _sample_sites(traces[1]).items():
        v = site["value"]
        event = site["fn"].event_dim
        per = v.numel() // max(1, k * b)
        draws[name] = (v.reshape(k, b, per).double() if v.numel() == k * b * per and v.dim() - event >= 1
                       and math.prod(v.shape[v.dim() - event:]) == per else None)
    return out[0], out[1], draws


def _head(a, n: int):
    return a[:n] if isinstance(a, torch.Tensor) and a.dim() >= 1 else a


def _collect(model_trace, guide_trace, sites: PairSites, full: int, k: int, b: int):
    """Per-datum ``(k, b)`` log densities of every sample site of both traces."""
    out = []
    for trace in (model_trace, guide_trace):
        logs = {}
        for name, site in _sample_sites(trace).items():
            per = _per_datum(site["fn"].log_prob(site["value"]), site, sites.plates, full)
            logs[name] = per.expand(k, b) if per.shape != (k, b) else per
        out.append(logs)
    return out[0], out[1]


@torch.no_grad()
def trace_log_weights(pair, x: torch.Tensor, num_samples: int, *args, sites: Optional[PairSites] = None,
                      vectorize: Optional[bool] = None) -> torch.Tensor:
    """:math:`\\log w_k = \\log p(x, z_k) - \\log q(z_k \\mid x)` per datum from traces, shape
    ``(K, B)`` (see the module's description). Works on any pair that meets the contract."""
    model, guide = site_log_probs(pair, x, num_samples, *args, sites=sites, vectorize=vectorize)
    return sum(model.values()) - sum(guide.values())
