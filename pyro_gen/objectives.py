"""Objectives: which Pyro ELBO trains the model.

``trace`` is :class:`pyro.infer.Trace_ELBO` (Monte Carlo KL); ``meanfield`` is
:class:`pyro.infer.TraceMeanField_ELBO`, which uses the closed-form
:math:`\\mathrm{KL}(q(z|x)\\,\\|\\,p(z))` where one is registered and falls back to Monte Carlo
otherwise. Particles are vectorized.
"""
from __future__ import annotations

import pyro.infer
import torch

__all__ = ["make_elbo", "training_loss", "ELBOS"]

ELBOS = {"trace": pyro.infer.Trace_ELBO, "meanfield": pyro.infer.TraceMeanField_ELBO}


def make_elbo(name: str = "trace", num_particles: int = 1) -> pyro.infer.ELBO:
    """Build a Pyro ELBO by name.

    :param name: ``"trace"`` or ``"meanfield"``.
    :param num_particles: Monte Carlo particles per datum (vectorized).
    """
    if name not in ELBOS:
        raise ValueError(f"unknown ELBO {name!r}: expected one of {', '.join(ELBOS)}")
    return ELBOS[name](num_particles=num_particles, vectorize_particles=num_particles > 1,
                       max_plate_nesting=1)


def training_loss(elbo: pyro.infer.ELBO, vae, x: torch.Tensor) -> torch.Tensor:
    """The negative ELBO per datum of the data set, differentiable.

    ``elbo.differentiable_loss`` of the VAE's model and guide estimates :math:`-\\sum_n
    \\mathrm{ELBO}(x_n)` over the whole data set (the data plate scales the minibatch);
    dividing by the data-set size gives the per-datum loss, whose gradients have the
    magnitude of an ordinary mean loss (sensible for gradient clipping and learning rates).

    :param elbo: a Pyro ELBO.
    :param vae: a :class:`~pyro_gen.vae.VAE`.
    :param x: a minibatch ``(B, C, H, W)``.
    """
    n = vae.num_data or x.shape[0]
    return elbo.differentiable_loss(vae.model, vae.guide, x) / n
