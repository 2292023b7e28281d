"""Priors ``p(z)`` over the latent code.

The prior contract (see ``docs/custom_priors.rst``): a prior is an :class:`torch.nn.Module`
whose call, with no arguments, returns a Pyro distribution over ``z`` with
``event_shape == (latent_dim,)`` and ``batch_shape == ()``. Learnable priors own their
parameters (they are trained with the rest of the model). The model puts the prior inside
the data plate, so Pyro broadcasts it to the batch. When the KL divergence between the guide
and the prior has no closed form, the ELBO falls back to a Monte Carlo estimate.
"""
from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

__all__ = ["StandardNormal", "make_prior", "PRIORS"]


class StandardNormal(nn.Module):
    """The isotropic standard Normal :math:`p(z) = \\mathcal{N}(0, I)`.

    :param latent_dim: size of z.
    """

    def __init__(self, latent_dim: int):
        super().__init__()
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self) -> dist.TorchDistribution:
        return dist.Normal(self.loc, self.scale).to_event(1)


PRIORS = {"standard": StandardNormal}


def make_prior(name: str, latent_dim: int, **kwargs) -> nn.Module:
    """Build a prior by name.

    :param name: a key of :data:`PRIORS`.
    :param latent_dim: size of z.
    """
    if name not in PRIORS:
        raise ValueError(f"unknown prior {name!r}: expected one of {', '.join(PRIORS)}")
    return PRIORS[name](latent_dim, **kwargs)
