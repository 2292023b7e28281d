"""Amortized guide families ``q(z | x)``.

Contract: a guide family is an :class:`torch.nn.Module` built from an encoder body (a network
with an ``out_features`` attribute, see :mod:`pyro_gen.nets`) and ``latent_dim``; its call maps a
batch of images ``(B, C, H, W)`` to a Pyro distribution with ``batch_shape == (B,)`` and
``event_shape == (latent_dim,)``. ``deterministic`` is True for point-mass guides (the
deterministic autoencoder), for which importance sampling is not defined.
"""
from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["DiagonalNormal", "Delta", "make_guide", "GUIDES"]


class DiagonalNormal(nn.Module):
    """:math:`q(z|x) = \\mathcal{N}(\\mu(x), \\operatorname{diag}\\sigma(x)^2)` with
    :math:`\\sigma = \\operatorname{softplus}(\\cdot) + 10^{-4}` (Kingma & Welling 2014).

    :param encoder: the encoder body.
    :param latent_dim: size of z.
    """

    deterministic = False

    def __init__(self, encoder: nn.Module, latent_dim: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.out_features, 2 * latent_dim)

    def forward(self, x: torch.Tensor) -> dist.TorchDistribution:
        loc, raw = self.head(self.encoder(x)).chunk(2, dim=-1)
        return dist.Normal(loc, F.softplus(raw) + 1e-4).to_event(1)


class Delta(nn.Module):
    """A point mass at :math:`\\mu(x)`: with it the ELBO becomes the MAP objective
    :math:`\\log p(x|\\mu(x)) + \\log p(\\mu(x))`, i.e. a deterministic autoencoder
    regularized by the prior.

    :param encoder: the encoder body.
    :param latent_dim: size of z.
    """

    deterministic = True

    def __init__(self, encoder: nn.Module, latent_dim: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.out_features, latent_dim)

    def forward(self, x: torch.Tensor) -> dist.TorchDistribution:
        return dist.Delta(self.head(self.encoder(x)), event_dim=1)


GUIDES = {"diagonal": DiagonalNormal, "delta": Delta}


def make_guide(name: str, encoder: nn.Module, latent_dim: int, **kwargs) -> nn.Module:
    """Build a guide family by name (a key of :data:`GUIDES`) on an encoder body."""
    if name not in GUIDES:
        raise ValueError(f"unknown guide {name!r}: expected one of {', '.join(GUIDES)}")
    return GUIDES[name](encoder, latent_dim, **kwargs)
