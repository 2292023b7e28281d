"""The variational autoencoder as a Pyro model/guide pair.

.. math::

    p_\\theta(x, z) = p(z)\\, p_\\theta(x \\mid z), \\qquad q_\\phi(z \\mid x)

``VAE.model`` samples ``z`` from the prior and observes ``x`` under the likelihood of the
decoder's output; ``VAE.guide`` samples ``z`` from the amortized guide family. Both run inside
a ``pyro.plate("data")``: the pair is a plain one (the contract of :mod:`pyro_gen.traces`). The
training engine scales it from outside (:mod:`pyro_gen.handlers`): the data plate by
``num_data / batch_size`` so that the ELBO of a minibatch is an unbiased estimate of the ELBO of the
whole data set (Hoffman et al. 2013), the latent site by β (β-VAE, KL warm-up), and free bits as a
correction of the loss (:func:`pyro_gen.objectives.free_bits_penalty`).

A *conditional* VAE (Sohn et al. 2015) is the same class built with conditioned networks
(:func:`pyro_gen.nets.make_networks` with ``condition_dim``, ``ModelSpec(condition_dim=...)``):
model and guide then take a side vector ``y`` (integer labels become one-hot vectors),
:math:`p_\\theta(x \\mid z, y)\\,p(z)` and :math:`q_\\phi(z \\mid x, y)`, and the ELBO bounds
:math:`\\log p(x \\mid y)`.

Any Pyro ELBO trains it: ``elbo.differentiable_loss(vae.model, vae.guide, x)``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Tuple

import pyro
import torch
from torch import nn

from .devices import module_device
from .guides import make_guide
from .likelihoods import make_likelihood, mean_image
from .nets import make_networks
from .errors import InputError
from .priors import make_prior, sample_prior

__all__ = ["VAE", "ModelSpec"]


class VAE(nn.Module):
    """A VAE (or, with a :class:`~pyro_gen.guides.Delta` guide, a deterministic autoencoder).

    :param guide: an amortized guide family (:mod:`pyro_gen.guides`) holding the encoder.
    :param decoder: a network from z to one output per pixel (:mod:`pyro_gen.nets`).
    :param prior: a prior module (:mod:`pyro_gen.priors`) returning a distribution over z.
    :param likelihood: a likelihood module (:mod:`pyro_gen.likelihoods`).
    """

    def __init__(self, guide: nn.Module, decoder: nn.Module, prior: nn.Module, likelihood: nn.Module):
        super().__init__()
        self.guide_net = guide
        self.decoder = decoder
        self.prior = prior
        self.likelihood = likelihood

    @property
    def latent_dim(self) -> int:
        return self.prior().event_shape[0]

    @property
    def condition_dim(self) -> int:
        """Size of the side vector ``y`` the model is conditioned on (0: unconditional)."""
        return getattr(self.decoder, "condition_dim", 0)

    def guide_dist(self, x: torch.Tensor, y: Optional[torch.Tensor] = None):
        """:math:`q_\\phi(z \\mid x)`, or :math:`q_\\phi(z \\mid x, y)` for a conditional model."""
        return self.guide_net(x if y is None else (x, y))

    def likelihood_dist(self, z: torch.Tensor, y: Optional[torch.Tensor] = None):
        """:math:`p_\\theta(x \\mid z)`, or :math:`p_\\theta(x \\mid z, y)` for a conditional model."""
        return self.likelihood(self.decoder(z) if y is None else self.decoder(z, y))

    def model(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> None:
        """:math:`z \\sim p(z)`, :math:`x \\sim p_\\theta(x \\mid z)` for a batch ``x`` of shape ``(B, C, H, W)``
        (and labels or side vectors ``y`` of a conditional model)."""
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior())
            pyro.sample("x", self.likelihood_dist(z, y), obs=x)

    def guide(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> None:
        """:math:`z \\sim q_\\phi(z \\mid x)` (or :math:`q_\\phi(z \\mid x, y)`)."""
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self.guide_dist(x, y))

    @torch.no_grad()
    def log_weights(self, x: torch.Tensor, num_samples: int, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The fast path of :func:`pyro_gen.traces.trace_log_weights` (the encoder runs once for
        all K draws, no traces): :math:`\\log p(z_k) + \\log p(x \\mid z_k) - \\log q(z_k \\mid x)`,
        shape ``(K, B)``; a test holds the two equal."""
        q = self.guide_dist(x, y)
        z = q.sample((num_samples,))
        return self.prior().log_prob(z) + self.likelihood_dist(z, y).log_prob(x) - q.log_prob(z)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, num_samples: int = 256, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The guide's mean of z for each image, shape ``(B, latent_dim)``; for a guide without
        a closed-form mean (e.g. :class:`~pyro_gen.guides.IAF`) the average of ``num_samples`` draws."""
        q = self.guide_dist(x, y)
        try:
            return q.mean
        except NotImplementedError:
            return q.sample((num_samples,)).mean(0)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, y: Optional[torch.Tensor] = None,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The likelihood's mean image for each code, shape ``z.shape[:-1] + (C, H, W)``."""
        return mean_image(self.likelihood, self.decoder(z) if y is None else self.decoder(z, y), generator)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Mean image of :math:`p(x \\mid z = E_q[z])`."""
        return self.decode(self.encode(x, y=y), y)

    @torch.no_grad()
    def sample(self, n: int, generator: Optional[torch.Generator] = None,
               y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Mean images of ``n`` codes drawn from the prior, shape ``(n, C, H, W)``. A conditional
        model draws image ``i`` given ``y[i]``; without ``y``, given the label ``i % condition_dim``."""
        device = module_device(self)
        if self.condition_dim and y is None:
            y = torch.arange(n, device=device) % self.condition_dim
        # drawn on the CPU from the generator (the same codes on any device), decoded where the model is
        z = sample_prior(self.prior, n, generator).to(device)
        return self.decode(z, None if y is None else y.to(device), generator)


@dataclass
class ModelSpec:
    """Everything needed to rebuild a model; stored as ``config.json`` in a run directory.

    :param image_shape: ``(C, H, W)`` of one datum.
    :param latent_dim: size of z.
    :param net: ``"mlp"`` or ``"conv"``.
    :param hidden: hidden widths of the encoder (the decoder mirrors them).
    :param likelihood: a name from :data:`pyro_gen.likelihoods.LIKELIHOODS`.
    :param guide: a guide spec string (:func:`pyro_gen.guides.make_guide`), e.g. ``"iaf:2"``;
        ``None`` for a model without one (the GAN's spec, :func:`pyro_gen.gan.gan_spec`).
    :param prior: a prior spec string (:func:`pyro_gen.priors.make_prior`), e.g. ``"vamp:50"`` or
        ``"module:my_priors:LaplacePrior"`` (imported again whenever the model is rebuilt).
    :param condition_dim: size of the side vector (the number of classes for one-hot labels) that
        encoder and decoder are conditioned on; 0 for an unconditional model.
    :param activation: hidden-layer activation of encoder and decoder, a key of
        :data:`pyro_gen.nets.ACTIVATIONS`.
    """

    image_shape: Tuple[int, int, int]
    latent_dim: int = 32
    net: str = "mlp"
    hidden: Tuple[int, ...] = (400,)
    likelihood: str = "bernoulli"
    guide: Optional[str] = "diagonal"
    prior: str = "standard"
    condition_dim: int = 0
    activation: str = "softplus"

    def build(self) -> VAE:
        """Construct the :class:`VAE` this spec describes."""
        if self.guide is None:
            raise InputError("this spec has no guide (a GAN's networks): it describes no VAE")
        encoder, decoder = make_networks(self.net, tuple(self.image_shape), self.latent_dim, self.hidden,
                                         condition_dim=self.condition_dim, activation=self.activation)
        guide = make_guide(self.guide, encoder, self.latent_dim)
        return VAE(guide=guide,
                   decoder=decoder,
                   prior=make_prior(self.prior, self.latent_dim, guide=guide),
                   likelihood=make_likelihood(self.likelihood))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        d = dict(d)
        d["image_shape"] = tuple(d["image_shape"])
        d["hidden"] = tuple(d["hidden"])
        if d.get("guide") == "none":  # GAN runs written before a spec could have no guide
            d["guide"] = None
        return cls(**d)
