"""Noise of the ELBO's gradient estimator, per parameter group (Rainforth et al. 2018, "Tighter
Variational Bounds are Not Necessarily Better").

On a fixed minibatch x, the training objective's gradient :math:`\\hat g` is a random vector (its
randomness is the Monte Carlo draws of z). Repeating it :math:`R` times gives, per parameter
element :math:`j`, its mean :math:`\\bar g_j` and standard deviation :math:`s_j`, and the
signal-to-noise ratio

.. math::

    \\mathrm{SNR}_j = \\frac{|E[\\hat g_j]|}{\\sqrt{\\mathrm{Var}[\\hat g_j]}} \\approx \\frac{|\\bar g_j|}{s_j}.

An SNR well below 1 means one step's gradient for that parameter is mostly noise. Rainforth et
al. show that tighter bounds (IWAE with large K) raise the decoder's SNR but lower the encoder's.
Only the Monte Carlo noise is measured here, not the noise of choosing a minibatch.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Optional

import numpy as np
import torch

from ..devices import rng_devices
from ..objectives import make_elbo, training_loss
from ..params import store_parameters
from ..errors import InputError

__all__ = ["GradientNoise", "gradient_noise", "parameter_groups", "point_mass_note"]


@dataclass
class GradientNoise:
    """Gradient noise of one parameter group.

    :param group: ``encoder``, ``decoder``, ``prior`` or ``likelihood``.
    :param num_params: parameter elements in the group.
    :param mean_snr: mean of the per-element SNR (elements whose gradient is exactly constant are left out).
    :param median_snr: its median.
    :param total_variance: :math:`\\sum_j \\mathrm{Var}[\\hat g_j]`, the trace of the gradient's covariance.
    :param mean_grad_sq_norm: :math:`\\|\\bar g\\|^2`, the squared norm of the mean gradient.
    :param repeats: gradient draws used.
    """

    group: str
    num_params: int
    mean_snr: float
    median_snr: float
    total_variance: float
    mean_grad_sq_norm: float
    repeats: int

    def to_dict(self) -> dict:
        return asdict(self)


#: Display names of a built-in model's submodules.
_GROUP_NAMES = {"guide_net": "encoder"}


def parameter_groups(pair) -> Dict[str, List[torch.nn.Parameter]]:
    """The trainable parameters of each named submodule of the pair (the VAE's ``encoder``,
    ``decoder``, ``prior``, ``likelihood``; a user's pair's own submodules), each parameter in the
    first group that holds it: a VampPrior's group has its pseudo-inputs, not the encoder it
    shares with the guide. Parameters created with ``pyro.param`` form the group ``pyro.param``."""
    seen, out = set(), {}
    children = list(pair.named_children()) if isinstance(pair, torch.nn.Module) else []
    for name, module in children:
        ps = [p for p in module.parameters() if p.requires_grad and id(p) not in seen]
        seen.update(id(p) for p in ps)
        if ps:
            out[_GROUP_NAMES.get(name, name)] = ps
    own = [p for p in (pair.parameters(recurse=False) if isinstance(pair, torch.nn.Module) else [])
           if p.requires_grad and id(p) not in seen]
    seen.update(id(p) for p in own)
    store = [p for p in store_parameters(pair).values() if p.requires_grad and id(p) not in seen]
    if own:
        out["module"] = own
    if store:
        out["pyro.param"] = store
    return out


def gradient_noise(vae, x: torch.Tensor, elbo: str = "trace", num_particles: int = 1, repeats: int = 100,
                   seed: int = 0, y: Optional[torch.Tensor] = None) -> List[GradientNoise]:
    """Variance and SNR of the gradient of ``elbo``'s loss on the minibatch ``x``, per group.

    :param vae: a :class:`~pyro_gen.vae.VAE` (its parameters and their ``.grad`` are not changed).
    :param x: a minibatch ``(B, C, H, W)``.
    :param elbo: the objective's name (:func:`pyro_gen.objectives.make_elbo`), normally the run's.
    :param num_particles: its particles per datum.
    :param repeats: independent gradient draws (:math:`R \\ge 2`).
    :param seed: seed of the draws (the global random state is left as it was).
    :param y: the side vectors of a conditional model, one per datum of ``x``.
    :returns: one :class:`GradientNoise` per group with parameters (none for a model without any).
    """
    if repeats < 2:
        raise InputError(f"repeats must be at least 2, got {repeats}")
    objective = make_elbo(elbo, num_particles)
    groups = parameter_groups(vae)
    params = [p for ps in groups.values() for p in ps]
    if not params:
        return []
    sums = [torch.zeros(p.numel(), dtype=torch.float64, device=p.device) for p in params]
    squares = [torch.zeros(p.numel(), dtype=torch.float64, device=p.device) for p in params]
    with torch.random.fork_rng(devices=rng_devices(x)), torch.enable_grad():
        torch.manual_seed(seed)
        for _ in range(repeats):
            grads = torch.autograd.grad(training_loss(objective, vae, x, *(() if y is None else (y,))), params,
                                        allow_unused=True)
            for i, g in enumerate(grads):
                if g is not None:
                    g = g.detach().reshape(-1).double()
                    sums[i] += g
                    squares[i] += g * g
    out, i = [], 0
    for name, ps in groups.items():
        mean = torch.cat([sums[j] / repeats for j in range(i, i + len(ps))])
        var = torch.cat([(squares[j] - sums[j] ** 2 / repeats) / (repeats - 1) for j in range(i, i + len(ps))])
        var = var.clamp_min(0)
        i += len(ps)
        std = var.sqrt()
        noisy = std > 1e-12 * (mean.abs() + 1e-30)
        snr = (mean.abs()[noisy] / std[noisy]).cpu().numpy()
        out.append(GradientNoise(group=name, num_params=int(mean.numel()),
                                 mean_snr=float(np.mean(snr)) if snr.size else float("inf"),
                                 median_snr=float(np.median(snr)) if snr.size else float("inf"),
                                 total_variance=float(var.sum()), mean_grad_sq_norm=float((mean ** 2).sum()),
                                 repeats=repeats))
    return out


def point_mass_note() -> str:
    """Why the gradient of a point-mass guide's objective has no Monte Carlo noise."""
    return ("the point-mass guide draws no samples: the gradient on a fixed minibatch has no Monte Carlo "
            "noise (SNR is infinite); only minibatch noise remains")
