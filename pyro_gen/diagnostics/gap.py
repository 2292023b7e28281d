"""The inference gap and its two parts (Cremer, Li & Duvenaud 2018, "Inference Suboptimality in
Variational Autoencoders").

For a datum x, with :math:`q_\\phi(z|x)` the amortized guide (the encoder's output) and
:math:`q^*(z)` the best member of the same family for that x alone,

.. math::

    \\log p(x) - \\mathrm{ELBO}(q_\\phi)
    = \\underbrace{\\log p(x) - \\mathrm{ELBO}(q^*)}_{\\text{approximation gap}}
    + \\underbrace{\\mathrm{ELBO}(q^*) - \\mathrm{ELBO}(q_\\phi)}_{\\text{amortization gap}} .

The approximation gap is the price of the guide family, the amortization gap the price of one
encoder for all data. :math:`q^*` is found by optimizing free per-datum parameters (for a
diagonal Normal: a location and a log scale per dimension; for a full-rank Normal: a location and
a Cholesky factor), initialized at the encoder's output, on a reparameterized Monte Carlo ELBO
with Adam, vectorized over the data. :math:`\\log p(x)` is importance sampled from the equal
mixture :math:`m = \\frac12(q_\\phi + q^*)`, half of the draws from each component, with weights
:math:`p(x, z)/m(z)` (multiple importance sampling with the balance heuristic, Veach & Guibas
1995): unbiased for :math:`p(x)`, and with weights bounded by :math:`2\\,p(x,z)/q(z)` for the
better of the two proposals, so a poor encoder cannot spoil the estimate.

Both ELBOs are estimated with the same standard-normal draws (common random numbers), so their
difference has far less noise than either.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import numpy as np
import pyro.distributions as dist
import torch
from torch.distributions import Independent, MultivariateNormal, Normal

from ..evaluate import MAX_DECODED
from ..train import cosine_factor
from .latent import POINT_MASS_NOTE, is_point_mass

__all__ = ["GapResult", "amortization_gap", "local_family"]


def local_family(q) -> Optional[Tuple[List[torch.Tensor], Callable[..., dist.TorchDistribution]]]:
    """Free per-datum parameters of the guide's family, initialized at ``q``, and the map from
    them back to a distribution; ``None`` for a family this module does not know.

    :param q: the amortized guide's distribution for a batch of data.
    :returns: ``(params, build)`` with ``build(*params)`` a distribution like ``q``.
    """
    if isinstance(q, Independent) and isinstance(q.base_dist, Normal) and q.reinterpreted_batch_ndims == 1:
        params = [q.base_dist.loc.detach().clone(), q.base_dist.scale.detach().log().clone()]
        return params, lambda loc, log_scale: dist.Normal(loc, log_scale.exp()).to_event(1)
    if isinstance(q, MultivariateNormal):
        tril = q.scale_tril.detach()
        raw = tril.tril(-1) + torch.diag_embed(tril.diagonal(dim1=-2, dim2=-1).log())
        params = [q.loc.detach().clone(), raw.clone()]

        def build(loc, raw):
            lower = raw.tril(-1) + torch.diag_embed(raw.diagonal(dim1=-2, dim2=-1).exp())
            return dist.MultivariateNormal(loc, scale_tril=lower)
        return params, build
    return None


def _log_joint(vae, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return vae.prior().log_prob(z) + vae.likelihood(vae.decoder(z)).log_prob(x)


def _elbo_draws(vae, q, x: torch.Tensor, num_samples: int) -> torch.Tensor:
    """Reparameterized Monte Carlo ELBO per datum, differentiable in ``q``'s parameters."""
    z = q.rsample((num_samples,))
    return (_log_joint(vae, x, z) - q.log_prob(z)).mean(0)


def _adam(loss_fn, params: List[torch.Tensor], steps: int, lr: float, betas=(0.9, 0.999), eps: float = 1e-8) -> None:
    """Adam (Kingma & Ba 2015) on ``params`` in place, learning rate decaying as a cosine to
    ``lr / 20``. Written out (a few lines) because constructing ``torch.optim.Adam`` the first
    time in a process imports torch's compiler stack, which costs seconds."""
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    for t in range(1, steps + 1):
        grads = torch.autograd.grad(loss_fn(*params), params)
        rate = lr * cosine_factor(t - 1, steps)
        with torch.no_grad():
            for p, g, m_i, v_i in zip(params, grads, m, v):
                m_i.mul_(betas[0]).add_(g, alpha=1 - betas[0])
                v_i.mul_(betas[1]).addcmul_(g, g, value=1 - betas[1])
                p.sub_(rate * (m_i / (1 - betas[0] ** t)) / ((v_i / (1 - betas[1] ** t)).sqrt() + eps))


def _chunks(total: int, batch: int):
    step = max(1, MAX_DECODED // max(batch, 1))
    for start in range(0, total, step):
        yield min(step, total - start)


@torch.no_grad()
def _elbo(vae, q, x: torch.Tensor, num_samples: int, seed: int) -> torch.Tensor:
    """Monte Carlo ELBO per datum with draws fixed by ``seed`` (common random numbers)."""
    total = torch.zeros(len(x), dtype=torch.float64, device=x.device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for s in _chunks(num_samples, len(x)):
            z = q.rsample((s,))
            total += (_log_joint(vae, x, z) - q.log_prob(z)).double().sum(0)
    return total / num_samples


@torch.no_grad()
def _mixture_log_px(vae, proposals, x: torch.Tensor, num_samples: int) -> torch.Tensor:
    """:math:`\\log \\frac1S\\sum_s p(x, z_s)/m(z_s)` per datum, :math:`m` the equal mixture of
    ``proposals``, ``num_samples // len(proposals)`` draws from each (stratified)."""
    per = max(1, num_samples // len(proposals))
    parts = []
    for q in proposals:
        for s in _chunks(per, len(x)):
            z = q.sample((s,))
            log_m = torch.logsumexp(torch.stack([r.log_prob(z) for r in proposals]), 0) - math.log(len(proposals))
            parts.append((_log_joint(vae, x, z) - log_m).double())
    lw = torch.cat(parts)  # (S, B)
    return torch.logsumexp(lw, 0) - math.log(len(lw))


@dataclass
class GapResult:
    """Per-datum gaps in nats (arrays of length ``num_data``), or a ``note`` saying why there are none.

    :param log_px: importance-sampled :math:`\\log p(x)`.
    :param elbo_amortized: :math:`\\mathrm{ELBO}(q_\\phi)`.
    :param elbo_optimized: :math:`\\mathrm{ELBO}(q^*)`.
    :param index: which of the given data these are (all of them).
    """

    log_px: Optional[np.ndarray] = None
    elbo_amortized: Optional[np.ndarray] = None
    elbo_optimized: Optional[np.ndarray] = None
    steps: int = 0
    lr: float = 0.0
    num_samples: int = 0
    eval_samples: int = 0
    log_px_samples: int = 0
    note: str = ""

    @property
    def approximation_gap(self) -> np.ndarray:
        """:math:`\\log p(x) - \\mathrm{ELBO}(q^*)` per datum."""
        return self.log_px - self.elbo_optimized

    @property
    def amortization_gap(self) -> np.ndarray:
        """:math:`\\mathrm{ELBO}(q^*) - \\mathrm{ELBO}(q_\\phi)` per datum."""
        return self.elbo_optimized - self.elbo_amortized

    def to_dict(self) -> dict:
        """Means and standard errors over data (nats), and the settings."""
        out = {"steps": self.steps, "lr": self.lr, "num_samples": self.num_samples,
               "eval_samples": self.eval_samples, "log_px_samples": self.log_px_samples, "note": self.note}
        if self.log_px is None:
            return out
        n = len(self.log_px)
        for name, v in [("log_px", self.log_px), ("elbo_amortized", self.elbo_amortized),
                        ("elbo_optimized", self.elbo_optimized), ("approximation_gap", self.approximation_gap),
                        ("amortization_gap", self.amortization_gap)]:
            out[name] = float(np.mean(v))
            out[name + "_stderr"] = float(np.std(v, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
        out["num_data"] = n
        return out


def amortization_gap(vae, x: torch.Tensor, steps: int = 500, lr: float = 1e-2, num_samples: int = 8,
                     eval_samples: int = 1000, log_px_samples: int = 5000, seed: int = 0) -> GapResult:
    """Approximation and amortization gaps on data ``x``.

    :param vae: a :class:`~pyro_gen.vae.VAE` (its parameters are not changed).
    :param x: data ``(M, C, H, W)``.
    :param steps: Adam steps of the per-datum optimization (learning rate decays as a cosine to
        ``lr / 20``).
    :param lr: Adam's learning rate.
    :param num_samples: reparameterized draws per datum per step.
    :param eval_samples: draws per datum for the final ELBO estimates.
    :param log_px_samples: importance samples per datum for :math:`\\log p(x)` (half from each proposal).
    :param seed: seed of all draws (the global random state is left as it was).
    :returns: a :class:`GapResult` (with only a ``note`` for guides it cannot handle).
    """
    settings = dict(steps=steps, lr=lr, num_samples=num_samples, eval_samples=eval_samples,
                    log_px_samples=log_px_samples)
    if is_point_mass(vae):
        return GapResult(note=POINT_MASS_NOTE, **settings)
    with torch.no_grad():
        q_amortized = vae.guide_net(x)
    family = local_family(q_amortized)
    if family is None:
        return GapResult(note=f"not available for the guide family {type(q_amortized).__name__} "
                              "(diagonal and full-rank Normal guides only)", **settings)
    params, build = family
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        params = [p.requires_grad_(True) for p in params]
        with torch.enable_grad():
            _adam(lambda *ps: -(_elbo_draws(vae, build(*ps), x, num_samples)).sum(), params, steps, lr)
        q_opt = build(*[p.detach() for p in params])
        elbo_amortized = _elbo(vae, q_amortized, x, eval_samples, seed + 1)
        elbo_optimized = _elbo(vae, q_opt, x, eval_samples, seed + 1)
        log_px = _mixture_log_px(vae, [q_amortized, q_opt], x, log_px_samples)
    return GapResult(log_px=log_px.cpu().numpy(), elbo_amortized=elbo_amortized.cpu().numpy(),
                     elbo_optimized=elbo_optimized.cpu().numpy(), **settings)
