"""Likelihoods ``p(x | z)``: decoder output -> a Pyro distribution over one datum.

Contract: a likelihood is an :class:`torch.nn.Module` whose call maps the decoder output of
shape ``batch + (C, H, W)`` to a distribution with ``batch_shape == batch`` and
``event_shape == (C, H, W)``. Its ``binarize`` attribute tells the trainer whether the
data are binarized dynamically (Bernoulli) or used as they are, and ``support`` names the
range of data it accepts (used to validate input data).
"""
from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F
from .errors import InputError

__all__ = ["Bernoulli", "ContinuousBernoulli", "Gaussian", "make_likelihood", "LIKELIHOODS"]


class _BernoulliLogits(dist.Bernoulli):
    """:class:`pyro.distributions.Bernoulli` whose ``log_prob`` is computed as
    :math:`x \\ell - \\operatorname{softplus}(\\ell)` (the same value as torch's
    ``-binary_cross_entropy_with_logits``, in fewer passes over memory)."""

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return value * self.logits - F.softplus(self.logits)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(_BernoulliLogits, _instance)
        return super().expand(batch_shape, _instance=new)


class Bernoulli(nn.Module):
    """Independent Bernoulli pixels with logits given by the decoder. Data are binarized
    dynamically during training (a fresh draw per pixel per minibatch)."""

    binarize = True
    support = "unit_interval"

    def forward(self, logits: torch.Tensor) -> dist.TorchDistribution:
        return _BernoulliLogits(logits=logits, validate_args=False).to_event(3)

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        """The mean image :math:`\\sigma(\\text{logits})`."""
        return torch.sigmoid(logits)


class ContinuousBernoulli(nn.Module):
    """The continuous Bernoulli on ``[0, 1]`` (Loaiza-Ganem & Cunningham 2019), the properly
    normalized version of a Bernoulli likelihood for grey-level data."""

    binarize = False
    support = "unit_interval"

    def forward(self, logits: torch.Tensor) -> dist.TorchDistribution:
        return dist.ContinuousBernoulli(logits=logits, validate_args=False).to_event(3)

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        return dist.ContinuousBernoulli(logits=logits, validate_args=False).mean


class Gaussian(nn.Module):
    """Independent Normal pixels with the decoder output as mean.

    :param scale: the standard deviation; with ``learn_scale=True`` its starting value.
    :param learn_scale: learn one shared scale (kept above ``min_scale``).
    :param min_scale: floor on a learned scale, so the likelihood stays bounded.
    """

    binarize = False
    support = "real"

    def __init__(self, scale: float = 0.1, learn_scale: bool = False, min_scale: float = 1e-3):
        super().__init__()
        if not scale > min_scale:
            raise InputError(f"Gaussian scale must be > {min_scale}, got {scale}")
        self.min_scale = min_scale
        raw = torch.tensor(math.log(math.expm1(scale - min_scale)))
        if learn_scale:
            self.raw_scale = nn.Parameter(raw)
        else:
            self.register_buffer("raw_scale", raw)

    @property
    def scale(self) -> torch.Tensor:
        return F.softplus(self.raw_scale) + self.min_scale

    def forward(self, loc: torch.Tensor) -> dist.TorchDistribution:
        return dist.Normal(loc, self.scale.expand(loc.shape), validate_args=False).to_event(3)

    def mean(self, loc: torch.Tensor) -> torch.Tensor:
        return loc


LIKELIHOODS = {
    "bernoulli": Bernoulli,
    "cbernoulli": ContinuousBernoulli,
    "gaussian": Gaussian,
    "gaussian-learned": lambda: Gaussian(learn_scale=True),
}


def make_likelihood(name: str) -> nn.Module:
    """Build a likelihood by name: ``bernoulli``, ``cbernoulli``, ``gaussian`` (fixed scale 0.1)
    or ``gaussian-learned``."""
    if name not in LIKELIHOODS:
        raise InputError(f"unknown likelihood {name!r}: expected one of {', '.join(LIKELIHOODS)}")
    return LIKELIHOODS[name]()
