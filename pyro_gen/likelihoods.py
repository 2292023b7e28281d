"""Likelihoods ``p(x | z)``: decoder output -> a Pyro distribution over one datum.

Contract: a likelihood is an :class:`torch.nn.Module` whose call maps the decoder output of
shape ``batch + (C, H, W)`` to a distribution with ``batch_shape == batch`` and
``event_shape == (C, H, W)``, and whose ``mean(output)`` gives the image a figure shows (a
likelihood with ``sequential = True`` needs draws for it and takes ``mean(output, generator)``;
:func:`mean_image` calls either). Its ``binarize``
attribute tells the trainer whether the data are binarized dynamically (Bernoulli) or used as
they are, and ``support`` names the range of data it accepts (used to validate input data).
"""
from __future__ import annotations

import math

from typing import Optional

import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import constraints
from torch.nn import functional as F
from .devices import spawn_generator
from .errors import InputError

__all__ = ["Bernoulli", "AutoregressiveBernoulli", "ContinuousBernoulli", "Gaussian", "make_likelihood",
           "mean_image", "LIKELIHOODS"]


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


class LocalContext(nn.Module):
    """The autoregressive part of :class:`AutoregressiveBernoulli`: a correction of each pixel's
    logit computed from the pixels before it in raster order within a ``window`` x ``window``
    square around it (the causal half of the square: the rows above, and the pixels to the left),
    through ``hidden`` ReLU units shared by all pixels; each channel on its own. (A masked
    convolution of PixelCNN's type A, van den Oord et al. 2016, followed by a 1 x 1 convolution.)

    :param hidden: hidden units (0: a linear correction).
    :param window: odd side of the square.
    """

    def __init__(self, hidden: int = 16, window: int = 5):
        super().__init__()
        if window < 3 or window % 2 == 0:
            raise InputError(f"the context window must be an odd number >= 3, got {window}")
        self.window, r = window, window // 2
        causal = torch.zeros(window, window, dtype=torch.bool)
        causal[:r] = True
        causal[r, :r] = True
        self.register_buffer("index", causal.flatten().nonzero().flatten(), persistent=False)
        self.positions = [(p // window, p % window) for p in self.index.tolist()]  # (row, column) in the window
        n = len(self.index)
        # every pattern of the context pixels (bit k: position k), for the lookup of forward
        patterns = (torch.arange(1 << n)[:, None] >> torch.arange(n)) & 1 if n <= 14 else torch.zeros(0, n)
        self.register_buffer("patterns", patterns.float(), persistent=False)
        # a generator of its own: building the likelihood leaves the global random stream alone
        g = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.randn(n, hidden, generator=g) / n ** 0.5) if hidden else None
        self.b = nn.Parameter(torch.zeros(hidden)) if hidden else None
        self.v = nn.Parameter(torch.zeros(hidden or n, 1))  # starts as the plain Bernoulli
        self.c = nn.Parameter(torch.zeros(()))

    def correction(self, context: torch.Tensor) -> torch.Tensor:
        """Logit corrections ``(..., 1)`` from the causal neighbourhoods ``(..., n)``."""
        h = context if self.w is None else F.relu(context @ self.w + self.b)
        return h @ self.v + self.c

    def _shifted(self, x: torch.Tensor):
        """The context pixels of every pixel: one ``(N, H, W)`` view per position of the window."""
        h, w = x.shape[-2:]
        r = self.window // 2
        padded = F.pad(x.reshape((-1, h, w)), (r, r, r, r))
        return [padded[:, a: a + h, b: b + w] for a, b in self.positions]

    def per_pixel(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` computed pixel by pixel (any real-valued ``x``)."""
        return self._per_pixel(x, self._shifted(x))

    def _per_pixel(self, x: torch.Tensor, shifted) -> torch.Tensor:
        return self.correction(torch.stack(shifted, -1)).reshape(x.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The correction of every pixel of ``x`` ``(..., C, H, W)`` given the pixels before it, same shape.

        For binary images (the likelihood's support) with at most 14 pixels of context, the
        correction is computed once for every pattern of the context and looked up by each pixel's
        pattern: the values of :meth:`per_pixel`, without a hidden layer per pixel (the likelihood's
        extra cost per training step of ``benchmarks/likelihood_step.py``: 3.6 ms instead of 13.6)."""
        shifted = self._shifted(x)
        if not len(self.patterns) or not bool(((x == 0) | (x == 1)).all()):
            return self._per_pixel(x, shifted)
        codes = sum(s * (1 << k) for k, s in enumerate(shifted)).long()
        return self.correction(self.patterns.to(x.dtype))[:, 0][codes].reshape(x.shape)

    @torch.no_grad()
    def draw(self, logits: torch.Tensor, generator: Optional[torch.Generator] = None):
        """One sequential draw, pixel by pixel in raster order: ``(images, probabilities)``, the
        second holding each pixel's probability given the pixels drawn before it."""
        shape, (h, w), r = logits.shape, logits.shape[-2:], self.window // 2
        base = logits.reshape((-1, h, w))
        padded = base.new_zeros((base.shape[0], h + 2 * r, w + 2 * r))  # pixels not drawn yet read as 0
        probs = torch.empty_like(base)
        for i in range(h):
            for j in range(w):
                context = padded[:, i: i + self.window, j: j + self.window].reshape(base.shape[0], -1)[:, self.index]
                p = torch.sigmoid(base[:, i, j] + self.correction(context)[:, 0])
                probs[:, i, j] = p
                # uniforms drawn on the CPU from the generator: the same draws on any device
                u = torch.rand(p.shape, generator=generator) if generator is not None else torch.rand(p.shape)
                padded[:, i + r, j + r] = (u.to(p.device) < p).to(p.dtype)
        return padded[:, r: r + h, r: r + w].reshape(shape), probs.reshape(shape)


class _AutoregressiveBernoulliDist(dist.TorchDistribution):
    """Binary images whose pixel logits are ``base`` plus the :class:`LocalContext` correction
    computed from the image itself (the pixels before each one). ``base`` may carry more leading
    dimensions (particles) than the value scored: the correction is computed once per image."""

    arg_constraints = {}
    support = constraints.independent(constraints.boolean, 3)

    def __init__(self, base: torch.Tensor, context: LocalContext):
        self.base, self.context = base, context
        super().__init__(base.shape[:-3], base.shape[-3:], validate_args=False)

    def expand(self, batch_shape, _instance=None):
        return _AutoregressiveBernoulliDist(self.base.expand(tuple(batch_shape) + self.event_shape), self.context)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        logits = self.base + self.context(value)
        return (value * logits - F.softplus(logits)).sum((-3, -2, -1))

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        return self.context.draw(self.base.expand(tuple(sample_shape) + self.base.shape))[0]


class AutoregressiveBernoulli(nn.Module):
    """Bernoulli pixels that depend on their neighbours: pixel :math:`i`'s logit is the decoder's
    output plus a learned function of the pixels before it in raster order within a 5 x 5 window
    (:class:`LocalContext`), so :math:`p(x \\mid z) = \\prod_i p(x_i \\mid z, x_{<i})` stays exact
    and normalized (a PixelCNN-style decoder with a small receptive field, as in Gulrajani et al.
    2017 and the variational lossy autoencoder of Chen et al. 2017: the window only sees strokes
    locally, so the code still has to carry the digit). Scoring an image is one pass; drawing one
    is sequential, pixel by pixel. Data are binarized dynamically, as for :class:`Bernoulli`.

    :param hidden: hidden units of the correction (0: linear).
    :param window: odd side of the context square.
    """

    binarize = True
    support = "unit_interval"
    sequential = True  #: drawing (and :meth:`mean`) goes pixel by pixel

    def __init__(self, hidden: int = 16, window: int = 5):
        super().__init__()
        self.context = LocalContext(hidden, window)

    def forward(self, logits: torch.Tensor) -> dist.TorchDistribution:
        return _AutoregressiveBernoulliDist(logits, self.context)

    def mean(self, logits: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """What a figure shows for decoder outputs ``logits``: each pixel's probability given the
        pixels before it along one sequential draw (the image's mean has no closed form). The draw
        uses a generator seeded from ``generator`` (which moves on by one number), so that it does
        not repeat the random numbers a caller's codes were drawn with."""
        return self.context.draw(logits, spawn_generator(generator))[1]


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
    "bernoulli-ar": AutoregressiveBernoulli,
    "cbernoulli": ContinuousBernoulli,
    "gaussian": Gaussian,
    "gaussian-learned": lambda: Gaussian(learn_scale=True),
}


def mean_image(likelihood: nn.Module, output: torch.Tensor, generator: Optional[torch.Generator] = None):
    """``likelihood.mean(output)``, with ``generator`` for a likelihood whose figure needs draws
    (``sequential``; a likelihood of your own may define ``mean(output)`` alone)."""
    if getattr(likelihood, "sequential", False):
        return likelihood.mean(output, generator)
    return likelihood.mean(output)


def make_likelihood(name: str) -> nn.Module:
    """Build a likelihood by name: ``bernoulli``, ``bernoulli-ar`` (:class:`AutoregressiveBernoulli`),
    ``cbernoulli``, ``gaussian`` (fixed scale 0.1) or ``gaussian-learned``."""
    if name not in LIKELIHOODS:
        raise InputError(f"unknown likelihood {name!r}: expected one of {', '.join(LIKELIHOODS)}")
    return LIKELIHOODS[name]()
