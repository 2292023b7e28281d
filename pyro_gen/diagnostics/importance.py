"""Importance-sampling diagnostics from one set of log weights per datum: the IWAE bound as a
function of K, and the PSIS :math:`\\hat k` of each datum.

For :math:`z_k \\sim q(z|x)`, :math:`\\log w_k = \\log p(x, z_k) - \\log q(z_k|x)`
(:func:`pyro_gen.evaluate.log_weights`). The IWAE bound (Burda, Grosse & Salakhutdinov 2015)

.. math::

    \\mathcal L_K(x) = E\\Big[\\log \\frac1K \\sum_{k=1}^K w_k\\Big], \\qquad
    \\mathrm{ELBO} = \\mathcal L_1 \\le \\mathcal L_K \\le \\mathcal L_{K'} \\le \\log p(x) \\quad (K \\le K'),

is estimated for every :math:`K` from one set of :math:`K_{\\max}` weights by averaging
:math:`\\log\\frac1K\\sum w` over the :math:`\\lfloor K_{\\max}/K \\rfloor` disjoint groups of
:math:`K` consecutive weights -- an unbiased estimate of :math:`\\mathcal L_K` at the cost of
:math:`K_{\\max}` decoder passes in all.

The Pareto :math:`\\hat k` of the weights (Yao, Vehtari, Simpson & Gelman 2018, "Yes, but did it
work?") estimates how heavy their right tail is: :math:`\\hat k < 0.5` the importance-sampling
estimate of :math:`p(x)` has finite variance; :math:`0.5 \\le \\hat k \\le 0.7` it converges,
slowly; :math:`\\hat k > 0.7` it is unreliable: q misses regions where the posterior has mass.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import List, Optional, Sequence

import numpy as np
import torch
from .._progress import progress_bar

from ..evaluate import MAX_DECODED, log_weights, pair_sites
from ..errors import InputError

__all__ = ["log_weight_matrix", "IWAECurve", "iwae_curve", "default_ks", "pareto_k", "KHAT_GOOD", "KHAT_BAD"]

#: :math:`\\hat k` below this: the importance weights have finite variance.
KHAT_GOOD = 0.5
#: :math:`\\hat k` above this: importance sampling from q is unreliable (Yao et al. 2018).
KHAT_BAD = 0.7


@torch.no_grad()
def log_weight_matrix(vae, x: torch.Tensor, num_samples: int, progress: bool = False,
                      y: Optional[torch.Tensor] = None) -> torch.Tensor:
    """:math:`\\log w_{nk}` for ``num_samples`` draws from the guide per datum, in chunks of at
    most :data:`pyro_gen.evaluate.MAX_DECODED` decoded codes.

    :param vae: a VAE whose guide has a density.
    :param x: data ``(N, C, H, W)``.
    :param num_samples: :math:`K_{\\max}`.
    :param progress: show a progress bar.
    :param y: the side vectors of a conditional model, one per datum.
    :returns: a float32 tensor ``(N, num_samples)``.
    """
    batch = max(1, min(len(x), MAX_DECODED // min(num_samples, MAX_DECODED)))
    chunk = max(1, MAX_DECODED // batch)
    sites = pair_sites(vae, x, y)  # once, not once per chunk
    out = torch.empty(len(x), num_samples, device="cpu")  # the weights come back to host memory
    with progress_bar(total=len(x) * num_samples, enabled=progress, desc=f"log weights, K={num_samples}",
                      unit="sample", unit_scale=True, leave=False) as bar:
        for start in range(0, len(x), batch):
            xb = x[start:start + batch]
            yb = None if y is None else y[start:start + batch]
            for done in range(0, num_samples, chunk):
                k = min(chunk, num_samples - done)
                out[start:start + len(xb), done:done + k] = log_weights(vae, xb, k, yb, sites=sites).T.cpu()
                bar.update(k * len(xb))
    return out


def default_ks(k_max: int) -> List[int]:
    """1, 2, 5, 10, 20, 50, ... up to ``k_max``, and ``k_max`` itself."""
    ks, decade = [], 1
    while decade <= k_max:
        ks += [m * decade for m in (1, 2, 5) if m * decade <= k_max]
        decade *= 10
    return ks if ks[-1] == k_max else ks + [k_max]


@dataclass
class IWAECurve:
    """The IWAE bound against K, averaged over data (nats per datum).

    :param k: the K values.
    :param bound: the estimate of :math:`\\mathcal L_K` for each K (mean over data).
    :param stderr: its standard error over data.
    :param groups: how many disjoint groups of K weights each estimate averages per datum.
    :param num_data: how many data.
    :param gain: :math:`\\mathcal L_K - \\mathcal L_1` (mean over data).
    :param gain_stderr: its standard error over data (paired per datum, so much smaller than ``stderr``).
    """

    k: List[int]
    bound: List[float]
    stderr: List[float]
    groups: List[int]
    num_data: int
    gain: List[float]
    gain_stderr: List[float]

    def to_dict(self) -> dict:
        return asdict(self)


def _group_bounds(log_w: torch.Tensor, k: int) -> torch.Tensor:
    """Per datum, the mean over disjoint groups of ``k`` of :math:`\\log\\frac1k\\sum w`, ``(N,)``."""
    n, k_max = log_w.shape
    g = k_max // k
    groups = log_w[:, :g * k].double().reshape(n, g, k)
    return (torch.logsumexp(groups, -1) - math.log(k)).mean(-1)


def iwae_curve(log_w: torch.Tensor, ks: Optional[Sequence[int]] = None) -> IWAECurve:
    """Estimate :math:`\\mathcal L_K` for each K from one ``(N, K_max)`` matrix of log weights.

    :param log_w: log importance weights ``(N, K_max)`` (:func:`log_weight_matrix`).
    :param ks: the K values (default :func:`default_ks`); each must be in ``1..K_max``.
    :returns: an :class:`IWAECurve`.
    """
    n, k_max = log_w.shape
    ks = default_ks(k_max) if ks is None else [int(k) for k in ks]
    if not ks or min(ks) < 1 or max(ks) > k_max:
        raise InputError(f"each K must be in 1..{k_max}, got {ks}")
    bound, se, groups, gain, gain_se = [], [], [], [], []
    elbo = _group_bounds(log_w, 1)
    sem = (lambda v: float(v.std() / math.sqrt(n))) if n > 1 else (lambda v: float("nan"))
    for k in ks:
        per_datum = _group_bounds(log_w, k)
        bound.append(float(per_datum.mean()))
        se.append(sem(per_datum))
        gain.append(float((per_datum - elbo).mean()))
        gain_se.append(sem(per_datum - elbo))
        groups.append(k_max // k)
    return IWAECurve(k=ks, bound=bound, stderr=se, groups=groups, num_data=n, gain=gain, gain_stderr=gain_se)


def pareto_k(log_w) -> np.ndarray:
    """The PSIS :math:`\\hat k` of each datum's importance weights, through ArviZ
    (:func:`pyro_gen._arviz.psislw`).

    Where a datum's weights are constant to working precision (q is the posterior) they have no
    tail and :math:`\\hat k = -\\infty`; a NaN log weight gives a NaN :math:`\\hat k` (not
    estimated), a :math:`+\\infty` one :math:`+\\infty` (see :func:`pyro_gen._arviz.psislw`).

    :param log_w: log importance weights ``(N, S)``; S of at least 100 is advisable.
    :returns: ``(N,)`` float64.
    """
    from .._arviz import psislw

    lw = np.asarray(log_w.numpy() if isinstance(log_w, torch.Tensor) else log_w, dtype=np.float64)
    _, khat = psislw(lw)
    return np.array(khat, dtype=np.float64).reshape(lw.shape[:-1])
