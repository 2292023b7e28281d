"""Amortized guide families ``q(z | x)``.

Contract: a guide family is an :class:`torch.nn.Module` built from an encoder body (a network
with an ``out_features`` attribute, see :mod:`pyro_gen.nets`) and ``latent_dim``; its call maps a
batch of images ``(B, C, H, W)`` to a Pyro distribution with ``batch_shape == (B,)`` and
``event_shape == (latent_dim,)`` that is reparameterized (``has_rsample``) and whose
``log_prob`` is exact on its own samples. ``deterministic`` is True for point-mass guides (the
deterministic autoencoder), for which importance sampling is not defined.

Guides are built from spec strings by :func:`make_guide`: ``diagonal``, ``fullrank``,
``iaf[:L]`` and ``delta``. Importing this module also registers the closed-form
:math:`\\mathrm{KL}(\\mathcal{N}(\\mu, \\Sigma)\\,\\|\\,\\mathcal{N}(m, \\operatorname{diag} s^2))`
with :func:`torch.distributions.kl.register_kl`, so the ``fullrank`` guide gets an analytic KL
against the ``standard`` and ``learned`` priors.
"""
from __future__ import annotations

from typing import Optional, Sequence

import pyro.distributions as dist
import torch
from pyro.distributions.transforms import conditional_affine_autoregressive
from torch import nn
from torch.distributions import Independent, MultivariateNormal, Normal
from torch.distributions.kl import register_kl
from torch.nn import functional as F

from ._spec import SpecEntry, parse_spec, positive_int

__all__ = ["DiagonalNormal", "FullRankNormal", "IAF", "Delta", "make_guide", "GUIDES"]


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


class FullRankNormal(nn.Module):
    """A Normal with a full covariance per datum, :math:`q(z|x) = \\mathcal{N}(\\mu(x), L(x) L(x)^\\top)`,
    where the encoder's head gives :math:`\\mu(x)` and the Cholesky factor :math:`L(x)`: its
    strictly lower triangle as it is, its diagonal through
    :math:`\\operatorname{softplus}(\\cdot) + 10^{-4}` (so :math:`L` is a valid ``scale_tril``).
    Reparameterized as :math:`z = \\mu + L\\varepsilon`. It captures correlations between the
    coordinates of the posterior that a diagonal guide cannot, at ``D(D+1)/2`` head outputs
    instead of ``D``. The KL to the ``standard``/``learned`` priors is in closed form.

    :param encoder: the encoder body.
    :param latent_dim: size of z.
    """

    deterministic = False

    def __init__(self, encoder: nn.Module, latent_dim: int):
        super().__init__()
        self.encoder = encoder
        self.latent_dim = latent_dim
        rows, cols = torch.tril_indices(latent_dim, latent_dim, offset=-1)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        self.head = nn.Linear(encoder.out_features, 2 * latent_dim + len(rows))

    def forward(self, x: torch.Tensor) -> dist.TorchDistribution:
        d = self.latent_dim
        out = self.head(self.encoder(x))
        loc, raw_diag, off = out[..., :d], out[..., d:2 * d], out[..., 2 * d:]
        lower = out.new_zeros(out.shape[:-1] + (d, d))
        lower[..., self.rows, self.cols] = off
        scale_tril = lower + torch.diag_embed(F.softplus(raw_diag) + 1e-4)
        return dist.MultivariateNormal(loc, scale_tril=scale_tril)


class IAF(nn.Module):
    """A diagonal Normal followed by ``L`` inverse autoregressive flow steps conditioned on the
    encoder's features :math:`h(x)` (Kingma et al. 2016, "Improving Variational Inference with
    Inverse Autoregressive Flow"):

    .. math::

        z_0 = \\mu(x) + \\sigma(x) \\odot \\varepsilon, \\qquad
        z_l = s_l \\odot z_{l-1} + (1 - s_l) \\odot m_l, \\quad
        (m_l, \\operatorname{logit} s_l - b) = \\operatorname{MADE}_l(z_{l-1}, h(x)),

    .. math::

        \\log q(z_L|x) = \\log \\mathcal{N}(z_0; \\mu, \\operatorname{diag}\\sigma^2)
        - \\sum_{l=1}^L \\sum_d \\log s_{l,d},

    the numerically stable ("LSTM-type") update of the paper, with Pyro's
    :func:`~pyro.distributions.transforms.conditional_affine_autoregressive` (``stable=True``,
    bias :math:`b = 2` so each step starts close to the identity). Each step's network has its
    own random variable ordering. Sampling and scoring the guide's own samples cost one network
    pass per step (Pyro caches the inverse of a sample drawn from the distribution); scoring an
    arbitrary ``z`` inverts the flow (``latent_dim`` passes per step). The KL has no closed form
    (Monte Carlo), and the distribution has no closed-form mean
    (:meth:`pyro_gen.vae.VAE.encode` averages samples).

    :param encoder: the encoder body.
    :param latent_dim: size of z.
    :param num_layers: L.
    :param hidden: hidden widths of each step's network (default ``[10 * latent_dim]``).
    """

    deterministic = False

    def __init__(self, encoder: nn.Module, latent_dim: int, num_layers: int = 2,
                 hidden: Optional[Sequence[int]] = None):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.out_features, 2 * latent_dim)
        hidden = None if hidden is None else list(hidden)
        self.flows = nn.ModuleList([conditional_affine_autoregressive(latent_dim, encoder.out_features,
                                                                      hidden_dims=hidden, stable=True)
                                    for _ in range(num_layers)])

    def forward(self, x: torch.Tensor) -> dist.TorchDistribution:
        h = self.encoder(x)
        loc, raw = self.head(h).chunk(2, dim=-1)
        base = dist.Normal(loc, F.softplus(raw) + 1e-4).to_event(1)
        return dist.TransformedDistribution(base, [flow.condition(h) for flow in self.flows])


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


@register_kl(MultivariateNormal, Independent)
def _kl_mvn_diagonal_normal(q: MultivariateNormal, p: Independent) -> torch.Tensor:
    """:math:`\\mathrm{KL}(\\mathcal{N}(\\mu, \\Sigma)\\,\\|\\,\\mathcal{N}(m, \\operatorname{diag}s^2)) =
    \\frac12\\big[\\sum_d \\Sigma_{dd}/s_d^2 + \\sum_d (\\mu_d - m_d)^2/s_d^2 - D
    + \\sum_d \\log s_d^2 - \\log\\det\\Sigma\\big]`, with :math:`\\Sigma = LL^\\top`."""
    if not (isinstance(p.base_dist, Normal) and p.reinterpreted_batch_ndims == 1):
        raise NotImplementedError
    loc, scale = p.base_dist.loc, p.base_dist.scale
    tril = q.scale_tril
    trace = (tril.pow(2).sum(-1) / scale.pow(2)).sum(-1)
    mahalanobis = ((q.loc - loc) / scale).pow(2).sum(-1)
    log_det_ratio = 2 * (scale.log().sum(-1) - tril.diagonal(dim1=-2, dim2=-1).log().sum(-1))
    return 0.5 * (trace + mahalanobis - q.event_shape[0] + log_det_ratio)


#: Spec table of :func:`make_guide`: name -> factory, optional ``:``-separated arguments.
GUIDES = {
    "diagonal": SpecEntry(DiagonalNormal, (), "diagonal", "Normal with diagonal covariance (default)"),
    "fullrank": SpecEntry(FullRankNormal, (), "fullrank", "Normal with full covariance (Cholesky factor)"),
    "iaf": SpecEntry(IAF, (("num_layers", positive_int),), "iaf[:L]",
                     "diagonal Normal + L inverse autoregressive flow steps (default 2)"),
    "delta": SpecEntry(Delta, (), "delta", "point mass: the deterministic autoencoder"),
}


def make_guide(spec: str, encoder: nn.Module, latent_dim: int, **kwargs) -> nn.Module:
    """Build a guide family from a spec string (a row of :data:`GUIDES`) on an encoder body.

    :param spec: ``diagonal``, ``fullrank``, ``iaf[:L]`` or ``delta``.
    :param encoder: the encoder body (with ``out_features``).
    :param latent_dim: size of z.
    :param kwargs: more keyword arguments of the guide's class (e.g. ``hidden`` of :class:`IAF`).
    :raises ValueError: naming the problem with the spec.
    """
    entry, parsed = parse_spec(spec, GUIDES, "guide")
    return entry.factory(encoder, latent_dim, **parsed, **kwargs)
