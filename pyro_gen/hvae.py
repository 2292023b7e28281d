"""A hierarchical VAE with two or more stochastic layers, written as a plain Pyro model/guide pair.

The generative model is a top-down chain and the guide a bottom-up one, the two-stochastic-layer
model of Burda, Grosse & Salakhutdinov (2015, "Importance Weighted Autoencoders", section 5) in
general depth :math:`L`:

.. math::

    p(z_L)\\,\\prod_{l=1}^{L-1} p_\\theta(z_l \\mid z_{l+1})\\; p_\\theta(x \\mid z_1), \\qquad
    q_\\phi(z_1 \\mid x) \\prod_{l=2}^{L} q_\\phi(z_l \\mid z_{l-1}),

every conditional a diagonal Normal whose mean and scale come from an MLP (softplus units), the
top prior :math:`p(z_L)` a standard Normal or any prior of :mod:`pyro_gen.priors` (a VampPrior
mixes the guide's posterior of the top layer over learned pseudo-images, as in the hierarchical
VampPrior VAE of Tomczak & Welling 2018), the likelihood one of :mod:`pyro_gen.likelihoods`. Sites ``z1`` ..
``zL`` and ``x`` sit inside ``pyro.plate("data")``: the pair uses only what the contract gives
(:mod:`pyro_gen.traces`), so training, evaluation and the diagnostics reach it through the generic
paths (the log weights, the ELBO's terms per site). Bottom-up inference was chosen over the
top-down inference of the ladder VAE (Sønderby et al. 2016) for its simplicity; see
``docs/own_model.rst`` for what it measured.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from torch import nn
from torch.nn import functional as F

from .devices import module_device, spawn_generator
from .errors import InputError
from .likelihoods import make_likelihood, mean_image
from .priors import make_prior, sample_prior

__all__ = ["HVAE", "GaussianLayer", "TopPosterior"]


class GaussianLayer(nn.Module):
    """An MLP from ``in_features`` to the mean and scale of a diagonal Normal over ``out_features``
    (scale :math:`\\operatorname{softplus}(\\cdot) + 10^{-4}`).

    :param in_features: input size.
    :param hidden: hidden widths (softplus units).
    :param out_features: size of the variable.
    """

    def __init__(self, in_features: int, hidden: Sequence[int], out_features: int):
        super().__init__()
        layers, n = [], in_features
        for h in hidden:
            layers += [nn.Linear(n, h), nn.Softplus()]
            n = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(n, 2 * out_features)

    def forward(self, v: torch.Tensor) -> dist.TorchDistribution:
        loc, raw = self.head(self.body(v)).chunk(2, dim=-1)
        return dist.Normal(loc, F.softplus(raw) + 1e-4).to_event(1)


class TopPosterior(nn.Module):
    """The guide's distribution of the top layer :math:`z_L` given an image, for the priors built
    from the guide (the VampPrior's components :math:`q(z_L \\mid u_k)`): top-down inference gives
    :math:`q(z_L \\mid x)` directly; bottom-up inference gives :math:`q(z_L \\mid \\bar z_{L-1})`
    with each lower layer at its guide's mean. It shares the HVAE's encoder modules.

    :param encoders: the HVAE's encoders (shared, not copied).
    :param features: its features of x for top-down inference, ``None`` for bottom-up.
    :param image_shape: ``(C, H, W)`` of an image (of a pseudo-input).
    """

    def __init__(self, encoders: nn.ModuleList, features: Optional[nn.Module], image_shape: Tuple[int, int, int]):
        super().__init__()
        self.encoders, self.features, self.image_shape = encoders, features, tuple(image_shape)

    def forward(self, images: torch.Tensor) -> dist.TorchDistribution:
        v = images.reshape(images.shape[: images.dim() - 3] + (-1,))
        if self.features is not None:  # top-down
            return self.encoders[-1](self.features(v))
        for encoder in self.encoders[:-1]:
            v = encoder(v).base_dist.loc
        return self.encoders[-1](v)


class HVAE(nn.Module):
    """A VAE with ``len(latent_dims)`` stochastic layers (see the module's description).

    :param image_shape: ``(C, H, W)`` of one datum.
    :param latent_dims: sizes of :math:`z_1, \\ldots, z_L` (bottom first), e.g. ``(64, 32)``.
    :param hidden: hidden widths between x and :math:`z_1`; the deeper layers use half of each.
    :param likelihood: a name of :data:`pyro_gen.likelihoods.LIKELIHOODS`.
    :param inference: ``"bottom-up"`` (:math:`q(z_1 \\mid x) \\prod q(z_{l+1} \\mid z_l)`) or
        ``"top-down"`` (:math:`q(z_L \\mid x) \\prod q(z_l \\mid z_{l+1}, x)`: features of x
        computed once, each lower layer conditioned on them and on the layer above, in the
        generative order, as in the ladder VAE of Sønderby et al. 2016).
    :param prior: a prior spec of :func:`pyro_gen.priors.make_prior` for the top layer (default
        ``standard``; ``vamp:K`` uses :class:`TopPosterior` as its guide).
    """

    def __init__(self, image_shape: Tuple[int, int, int], latent_dims: Sequence[int] = (64, 32),
                 hidden: Sequence[int] = (400,), likelihood: str = "bernoulli", inference: str = "bottom-up",
                 prior: str = "standard"):
        super().__init__()
        if inference not in ("bottom-up", "top-down"):
            raise InputError(f"inference must be bottom-up or top-down, got {inference!r}")
        self.inference = inference
        if len(latent_dims) < 2:
            raise InputError(f"a hierarchical VAE needs at least two stochastic layers, got {list(latent_dims)}")
        self.image_shape = tuple(image_shape)
        self.latent_dims = tuple(int(d) for d in latent_dims)
        pixels = math.prod(self.image_shape)
        deep = [max(1, h // 2) for h in hidden]
        self.likelihood = make_likelihood(likelihood)
        if inference == "bottom-up":  # q(z1 | x), q(z_{l+1} | z_l)
            self.encoders = nn.ModuleList([GaussianLayer(pixels, hidden, self.latent_dims[0])] + [
                GaussianLayer(a, deep, b) for a, b in zip(self.latent_dims[:-1], self.latent_dims[1:])])
        else:  # features h(x); q(z_L | h), q(z_l | h, z_{l+1}); encoders[l - 1] makes z_l
            body, n = [], pixels
            for h in hidden:
                body += [nn.Linear(n, h), nn.Softplus()]
                n = h
            self.features = nn.Sequential(*body)
            self.encoders = nn.ModuleList([GaussianLayer(n + b, deep, a)
                                           for a, b in zip(self.latent_dims[:-1], self.latent_dims[1:])]
                                          + [GaussianLayer(n, deep, self.latent_dims[-1])])
        # generation, top-down: p(z_l | z_{l+1}), then the pixels' raw outputs from z1
        self.decoders = nn.ModuleList([GaussianLayer(b, deep, a)
                                       for a, b in zip(self.latent_dims[:-1], self.latent_dims[1:])])
        body, n = [], self.latent_dims[0]
        for h in reversed(tuple(hidden)):
            body += [nn.Linear(n, h), nn.Softplus()]
            n = h
        self.pixels = nn.Sequential(*body, nn.Linear(n, pixels))
        # the standard Normal has no module: a run written before --prior applied to the hvae holds none
        self.prior = None if prior == "standard" else make_prior(
            prior, self.latent_dims[-1],
            guide=TopPosterior(self.encoders, getattr(self, "features", None), self.image_shape))

    def _x(self, z1: torch.Tensor) -> dist.TorchDistribution:
        out = self.pixels(z1).reshape(z1.shape[:-1] + self.image_shape)
        return self.likelihood(out)

    def _top(self, like: torch.Tensor, batch: int) -> dist.TorchDistribution:
        if self.prior is not None:
            return self.prior()
        d = self.latent_dims[-1]
        return dist.Normal(like.new_zeros(batch, d), like.new_ones(batch, d)).to_event(1)

    def model(self, x: torch.Tensor) -> None:
        """:math:`z_L \\sim p(z_L)`, :math:`z_l \\sim p(z_l \\mid z_{l+1})`, :math:`x \\sim p(x \\mid z_1)`."""
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample(f"z{len(self.latent_dims)}", self._top(x, x.shape[0]))
            for level in range(len(self.latent_dims) - 1, 0, -1):
                z = pyro.sample(f"z{level}", self.decoders[level - 1](z))
            pyro.sample("x", self._x(z), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        """Bottom-up: :math:`z_1 \\sim q(z_1 \\mid x)`, :math:`z_{l+1} \\sim q(z_{l+1} \\mid z_l)`;
        top-down: :math:`z_L \\sim q(z_L \\mid x)`, :math:`z_l \\sim q(z_l \\mid z_{l+1}, x)`."""
        with pyro.plate("data", x.shape[0]):
            v = x.reshape(x.shape[: x.dim() - 3] + (-1,))
            if self.inference == "bottom-up":
                for level, encoder in enumerate(self.encoders, start=1):
                    v = pyro.sample(f"z{level}", encoder(v))
                return
            h = self.features(v)
            top = len(self.latent_dims)
            z = pyro.sample(f"z{top}", self.encoders[-1](h))
            for level in range(top - 1, 0, -1):
                z = pyro.sample(f"z{level}", self.encoders[level - 1](torch.cat([h.expand(z.shape[:-1] + h.shape[-1:]),
                                                                                 z], -1)))

    @torch.no_grad()
    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Mean images of ``n`` draws of the top-down chain, shape ``(n, C, H, W)``."""
        device = module_device(self)  # noise drawn on the CPU from the generator, used where the model is
        if self.prior is not None:  # sample_prior reads the generator's state without moving it on
            z = sample_prior(self.prior, n, spawn_generator(generator))
        else:
            z = torch.randn(n, self.latent_dims[-1], generator=generator, device="cpu").to(device)
        for level in range(len(self.latent_dims) - 1, 0, -1):
            p = self.decoders[level - 1](z).base_dist
            z = p.loc + p.scale * torch.randn(p.loc.shape, generator=generator, device="cpu").to(device)
        return mean_image(self.likelihood, self.pixels(z).reshape((n,) + self.image_shape), generator)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean image of :math:`p(x \\mid z_1)` at a draw of the guide."""
        z1 = poutine.trace(self.guide).get_trace(x).nodes["z1"]["value"]
        return self.likelihood.mean(self.pixels(z1).reshape(x.shape))
