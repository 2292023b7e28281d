"""Evaluation: the test ELBO and the importance-sampled log-likelihood.

Both come from the log importance weights of the guide,

.. math::

    \\log w_k = \\log p(z_k) + \\log p_\\theta(x \\mid z_k) - \\log q_\\phi(z_k \\mid x),
    \\qquad z_k \\sim q_\\phi(z \\mid x),

the ELBO as their mean and the importance-sampled estimate of :math:`\\log p(x)` as
:math:`\\log \\frac{1}{K} \\sum_{k=1}^K w_k` (Burda, Grosse & Salakhutdinov 2015, "Importance
Weighted Autoencoders"), which is a lower bound on :math:`\\log p(x)` that increases with ``K``
and is consistent as ``K \\to \\infty``. Samples are drawn in chunks so memory stays bounded
whatever ``K``.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from ._progress import progress_bar
from .devices import module_device
from .errors import InputError

__all__ = ["log_weights", "pair_sites", "has_density", "importance_log_likelihood", "elbo_per_datum"]

#: Upper bound on ``particles x batch`` decoded at once. Memory is ~ this x pixels x 4 bytes x a few;
#: 5000 keeps the working set near the CPU caches (measured faster here than 20000 or 500).
MAX_DECODED = 5000


@torch.no_grad()
def log_weights(vae, x: torch.Tensor, num_samples: int, y: Optional[torch.Tensor] = None,
                sites=None) -> torch.Tensor:
    """Log importance weights :math:`\\log w_k` for each datum, of any model/guide pair.

    A pair's own ``log_weights(x, num_samples, y)`` method is its fast path (the built-in
    :class:`~pyro_gen.vae.VAE` and :class:`~pyro_gen.ssvae.SSVAE` have one, held equal to the generic
    path by the tests); any other pair is read through traces
    (:func:`pyro_gen.traces.trace_log_weights`).

    :param vae: a model/guide pair.
    :param x: data ``(B, C, H, W)``.
    :param num_samples: K, draws from the guide per datum.
    :param y: labels or side vectors ``(B, ...)`` of a conditional model (its weights are those of
        :math:`p(x \\mid y)`).
    :param sites: :func:`pair_sites` of the pair, when a caller scores many chunks (the generic
        path then inspects the pair once, not once per chunk).
    :returns: a tensor ``(K, B)``.
    """
    own = getattr(vae, "log_weights", None)
    if own is not None:
        return own(x, num_samples, y)
    from .traces import trace_log_weights
    return trace_log_weights(vae, x, num_samples, *(() if y is None else (y,)), sites=sites)


def pair_sites(vae, x: torch.Tensor, y: Optional[torch.Tensor] = None):
    """What :func:`log_weights` needs to know of a pair once: its sites
    (:func:`pyro_gen.traces.inspect_pair` on two data of ``x``), or ``None`` for a pair with a
    ``log_weights`` method of its own."""
    if getattr(vae, "log_weights", None) is not None:
        return None
    return _inspect(vae, x, y)


def has_density(vae, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> bool:
    """Whether every latent site of the pair's guide has a density (no point mass), so that
    importance sampling is defined; tried on two data of ``x`` (and their ``y``)."""
    return not _inspect(vae, x, y).point_mass


def _inspect(vae, x: torch.Tensor, y: Optional[torch.Tensor]):
    """:func:`pyro_gen.traces.inspect_pair` on two data of ``x`` (and ``y``), moved to the pair's device."""
    from .traces import inspect_pair
    device = module_device(vae)
    return inspect_pair(vae, x[:2].to(device), *(() if y is None else (y[:2].to(device),)))


def _batches(vae, x: torch.Tensor, k: int, batch_size: Optional[int], progress: bool, desc: str,
             y: Optional[torch.Tensor] = None):
    if batch_size is None:
        batch_size = max(1, min(len(x), MAX_DECODED // min(k, MAX_DECODED)))
    chunk = max(1, MAX_DECODED // batch_size)
    device = module_device(vae)  # each chunk of data goes to the pair's device, its weights come back
    sites = pair_sites(vae, x, y)
    bar = progress_bar(total=len(x) * k, enabled=progress, desc=desc, unit="sample", unit_scale=True, leave=False)
    try:
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size].to(device)
            yb = None if y is None else y[start:start + batch_size].to(device)
            parts = []
            for done in range(0, k, chunk):
                kk = min(chunk, k - done)
                parts.append(log_weights(vae, xb, kk, yb, sites=sites).cpu())
                bar.update(kk * len(xb))
            yield parts
    finally:
        bar.close()


@torch.no_grad()
def importance_log_likelihood(vae, x: torch.Tensor, k: int = 5000, batch_size: Optional[int] = None,
                              progress: bool = False, y: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The importance-sampled estimate :math:`\\log \\frac1K\\sum_k w_k` of :math:`\\log p(x)` per datum.

    :param vae: a VAE whose guide is not a point mass.
    :param x: data ``(N, C, H, W)``.
    :param k: importance samples per datum (5000 in the MNIST literature).
    :param batch_size: data per chunk (default: chosen so at most :data:`MAX_DECODED` codes are decoded at once).
    :param progress: show a progress bar.
    :param y: labels or side vectors of a conditional model (then the estimate is of :math:`\\log p(x \\mid y)`).
    :returns: a tensor ``(N,)`` of log-likelihood estimates in nats.
    """
    if not has_density(vae, x, y):
        raise InputError("importance sampling needs a guide with a density; this model's guide is a point mass")
    if k < 1:
        raise InputError(f"k must be a positive integer, got {k}")
    was_training = vae.training
    vae.eval()
    out = []
    for parts in _batches(vae, x, k, batch_size, progress, f"log p(x), K={k}", y):
        lse = torch.stack([torch.logsumexp(p, 0) for p in parts]).logsumexp(0)
        out.append(lse - math.log(k))
    vae.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def elbo_per_datum(vae, x: torch.Tensor, num_draws: int = 10, batch_size: Optional[int] = None,
                   y: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The single-sample ELBO averaged over ``num_draws`` draws, per datum (β = 1).

    For a point-mass guide this is the MAP objective :math:`\\log p(x|z) + \\log p(z)` at the code.
    With labels ``y`` of a conditional model it is the ELBO of :math:`\\log p(x \\mid y)`.

    :returns: a tensor ``(N,)`` in nats.
    """
    was_training = vae.training
    vae.eval()
    out = [torch.cat(parts).mean(0) for parts in _batches(vae, x, num_draws, batch_size, False, "", y)]
    vae.train(was_training)
    return torch.cat(out)
