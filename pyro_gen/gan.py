"""A GAN baseline built from the VAE's own networks (plain PyTorch, no Pyro).

The **generator** is the decoder of :func:`pyro_gen.nets.make_networks` followed by the
likelihood's mean (:math:`\\sigma(\\cdot)` for Bernoulli logits), so that a GAN and a VAE with
the same :class:`~pyro_gen.vae.ModelSpec` share the same generator network and the same
:math:`z \\sim \\mathcal N(0, I)`; only the training criterion differs. The **discriminator** is
an encoder body with the spec's widths, of the spec's network kind or another (``disc_net``),
with a linear head giving one real number per image, always with leaky-ReLU activations.

Softplus, the networks' default activation, is nearly linear for the small pre-activations of
freshly initialized layers. A nearly linear discriminator gives every generated image the same
gradient, and a nearly linear generator cannot bend away from it: on MNIST-10k both collapsed to
one image (predicted-class entropy 0) in our runs, while the same layers with (leaky) ReLU
learned digits. :func:`gan_spec` therefore defaults to ``activation="leaky_relu"``; a VAE
compared with a GAN should use the same activation (``pyro-gen compare`` does).

Two criteria (``loss``), with :math:`D` the discriminator's output, :math:`x` real and
:math:`\\tilde x = G(z)` generated images:

- ``"ns"``, the non-saturating GAN (Goodfellow et al. 2014, "Generative adversarial nets"):
  :math:`L_D = \\operatorname{softplus}(-D(x)) + \\operatorname{softplus}(D(\\tilde x))`,
  :math:`L_G = \\operatorname{softplus}(-D(\\tilde x))`.
- ``"wgan-gp"``, the Wasserstein GAN with gradient penalty (Gulrajani et al. 2017, "Improved
  training of Wasserstein GANs"):
  :math:`L_D = D(\\tilde x) - D(x) + \\lambda\\,(\\lVert\\nabla_{\\hat x} D(\\hat x)\\rVert_2 - 1)^2`
  with :math:`\\hat x = \\epsilon x + (1 - \\epsilon)\\tilde x`, :math:`\\epsilon \\sim U[0, 1]` per
  image, and :math:`L_G = -D(\\tilde x)`; the critic takes ``n_critic`` steps per generator step.

Two stabilisers are on by default (:class:`GANSettings`), both common practice:

- **spectral normalization** of the discriminator's layers for ``ns`` (Miyato et al. 2018,
  "Spectral normalization for generative adversarial networks", :func:`add_spectral_norm`);
  with it the non-saturating GAN kept all ten classes on MNIST-10k, without it it dropped some;
- **samples from an exponential moving average of the generator's weights** (Yazici et al.
  2019, "The unusual effectiveness of averaging in GAN training"; :meth:`GAN.update_average`):
  the iterates of GAN training circle around an equilibrium, and their average is nearer to it.
  On MNIST-10k it lowered the domain FID of the same run by 15 to 40 after two to four minutes
  of training in our measurements.

The discriminator's network kind can differ from the generator's (``disc_net``: e.g. a
convolutional discriminator for an MLP generator); the generator stays the spec's decoder.

The GAN is trained on the grey-level images in ``[0, 1]`` (not binarized): a discriminator would
otherwise tell binary data from the generator's grey-level means at once. A run directory has the
same layout as a VAE's (``config.json`` with ``model_kind: "gan"``, ``checkpoint.pt`` written
atomically each epoch, ``metrics.jsonl``), and :func:`pyro_gen.run.load_run` rebuilds it, as any run.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .devices import module_device
from .likelihoods import make_likelihood
from .nets import NETWORKS, make_networks
from .train import FitResult, adam, train_epochs
from .vae import ModelSpec
from .errors import InputError

__all__ = ["GAN", "Discriminator", "GANSettings", "AdversarialStep", "GAN_LOSSES", "build_gan", "fit_gan",
           "gradient_penalty", "discriminator_loss", "generator_loss", "gan_spec", "ema_decay",
           "add_spectral_norm", "output_likelihood"]


class Discriminator(nn.Module):
    """An encoder body (:mod:`pyro_gen.nets`) with a linear head: images ``(B, C, H, W)`` -> ``(B,)``.

    :param body: an encoder body with an ``out_features`` attribute.
    """

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body
        self.head = nn.Linear(body.out_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)).squeeze(-1)


def ema_decay(decay: float, step: int) -> float:
    """The decay of the generator's weight average at generator step ``step`` (1, 2, ...):
    :math:`\\min\\bigl(\\beta, \\frac{1 + t}{10 + t}\\bigr)`. The ramp (the ``num_updates`` rule
    of TensorFlow's ``ExponentialMovingAverage``) keeps the first steps, whose weights are those
    of a barely trained generator, from dominating the average of a short run."""
    return min(float(decay), (1.0 + step) / (10.0 + step))


class GAN(nn.Module):
    """Generator :math:`G(z) = \\text{mean}(\\text{decoder}(z))`, :math:`z \\sim \\mathcal N(0, I)`,
    and discriminator.

    With ``average=True`` the GAN also holds an exponential moving average of the generator's
    weights, :math:`\\bar\\theta_t = \\beta_t \\bar\\theta_{t-1} + (1 - \\beta_t)\\theta_t` after each
    generator step :math:`t` (:meth:`update_average`, :func:`ema_decay`), and draws its samples
    (:meth:`sample`, :meth:`decode`) from that averaged generator: GAN iterates circle around an
    equilibrium instead of converging to it, and their average is closer to it (Yazici et al. 2019,
    "The unusual effectiveness of averaging in GAN training", ICLR). Training (:meth:`generate`)
    always uses the current weights.

    :param decoder: a decoder network from :mod:`pyro_gen.nets`.
    :param discriminator: a :class:`Discriminator`.
    :param likelihood: the name (or the module) of the VAE likelihood whose mean maps the
        decoder's raw outputs to images (:math:`\\sigma(\\cdot)` for ``bernoulli``): the
        generator's output activation (:attr:`output`); a GAN has no likelihood.
    :param latent_dim: size of z.
    :param average: keep a moving average of the decoder's weights, used for sampling.
    """

    def __init__(self, decoder: nn.Module, discriminator: nn.Module, likelihood: str, latent_dim: int,
                 average: bool = False):
        super().__init__()
        self.decoder = decoder
        self.discriminator = discriminator
        # raw outputs -> images (a likelihood's mean; it holds no parameters): a name, or a likelihood module
        self.output = output_likelihood(likelihood).mean
        # checkpoints written when the output layer was a likelihood module held its (unused) buffers
        self._register_load_state_dict_pre_hook(_drop_likelihood_keys)
        self.latent_dim = int(latent_dim)
        self.average = copy.deepcopy(decoder).requires_grad_(False) if average else None

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """:math:`G(z)` with the current weights, differentiable, shape ``z.shape[:-1] + (C, H, W)``."""
        return self.output(self.decoder(z))

    @torch.no_grad()
    def update_average(self, decay: float) -> None:
        """:math:`\\bar\\theta \\leftarrow \\beta\\,\\bar\\theta + (1 - \\beta)\\,\\theta` for every parameter
        and floating-point buffer of the decoder (``decay`` :math:`= \\beta`); nothing without an average."""
        if self.average is None:
            return
        for avg, cur in zip(self.average.state_dict().values(), self.decoder.state_dict().values()):
            if avg.is_floating_point():
                avg.lerp_(cur, 1.0 - decay)
            else:
                avg.copy_(cur)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """:math:`G(z)` without gradients, with the averaged weights if the GAN keeps an average
        (the same method name as :meth:`pyro_gen.vae.VAE.decode`)."""
        net = self.decoder if self.average is None else self.average
        return self.output(net(z))

    @torch.no_grad()
    def sample(self, n: int, generator: Optional[torch.Generator] = None,
               y: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``n`` images :math:`G(z)`, :math:`z \\sim \\mathcal N(0, I)`, shape ``(n, C, H, W)``
        (the signature of :meth:`pyro_gen.vae.VAE.sample`; ``y`` must be ``None``: the GAN is unconditional)."""
        if y is not None:
            raise InputError("this GAN is unconditional: it cannot draw images of a given label")
        # drawn on the CPU: the same draws on any device
        z = torch.randn(n, self.latent_dim, generator=generator, device="cpu")
        return self.decode(z.to(module_device(self)))


def output_likelihood(likelihood) -> nn.Module:
    """The likelihood (a name or a module) whose mean is a GAN's output layer; refuses one whose
    mean image needs draws (``sequential``: ``bernoulli-ar``)."""
    likelihood = make_likelihood(likelihood) if isinstance(likelihood, str) else likelihood
    if getattr(likelihood, "sequential", False):
        raise InputError("the GAN's output layer is a likelihood's mean image, and the autoregressive likelihood "
                         "(bernoulli-ar) has none: use --likelihood bernoulli")
    return likelihood


def _drop_likelihood_keys(state_dict, prefix, *args) -> None:
    for key in [k for k in state_dict if k.startswith(prefix + "likelihood.")]:
        del state_dict[key]


def add_spectral_norm(module: nn.Module) -> nn.Module:
    """Put spectral normalization on every linear and convolutional layer of ``module``, in place:
    each weight :math:`W` is used as :math:`W / \\sigma(W)`, with :math:`\\sigma(W)` the largest
    singular value of :math:`W` (of its ``(out, -1)`` reshaping for a convolution) estimated by one
    power iteration per training forward pass, which bounds the Lipschitz constant of a
    discriminator with 1-Lipschitz activations by 1 (Miyato et al. 2018, "Spectral normalization
    for generative adversarial networks", ICLR). Uses :func:`torch.nn.utils.parametrizations.spectral_norm`.

    :returns: ``module``.
    """
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                setattr(parent, name, nn.utils.parametrizations.spectral_norm(child))
    return module


def build_gan(spec: ModelSpec, settings: Optional["GANSettings"] = None) -> GAN:
    """The :class:`GAN` with the networks of ``spec``: the generator is ``spec``'s decoder (with
    ``spec.activation``) and its likelihood's mean as output layer; the discriminator is the
    encoder body of kind ``settings.disc_net`` (default ``spec.net``) with ``spec``'s widths and
    leaky-ReLU activations plus a linear head, spectrally normalized if ``settings.spectral_norm``
    (:func:`add_spectral_norm`). With ``settings.ema > 0`` the GAN keeps the moving average of
    the generator's weights that it samples from. ``spec.guide`` and ``spec.prior`` are not used
    (z is standard Normal).

    :param spec: the networks shared with the VAE.
    :param settings: the :class:`GANSettings` (default ``GANSettings()``); only ``disc_net``,
        ``spectral_norm`` and ``ema`` matter here.
    """
    settings = GANSettings() if settings is None else settings
    if spec.condition_dim:
        raise InputError("the GAN baseline is unconditional: condition_dim must be 0")
    shape = tuple(spec.image_shape)
    decoder = make_networks(spec.net, shape, spec.latent_dim, spec.hidden, activation=spec.activation)[1]
    body = make_networks(settings.disc_net or spec.net, shape, spec.latent_dim, spec.hidden, activation="leaky_relu")[0]
    disc = Discriminator(body)
    if settings.spectral_norm:
        add_spectral_norm(disc)
    return GAN(decoder, disc, spec.likelihood, spec.latent_dim, average=settings.ema > 0)


# --- losses -----------------------------------------------------------------------------------

def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor,
                     eps: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """The WGAN-GP penalty :math:`\\frac1B\\sum_b (\\lVert\\nabla_{\\hat x} D(\\hat x_b)\\rVert_2 - 1)^2`
    at :math:`\\hat x_b = \\epsilon_b x_b + (1 - \\epsilon_b)\\tilde x_b` (Gulrajani et al. 2017, Algorithm 1),
    differentiable with respect to the critic's parameters.

    :param critic: maps images ``(B, C, H, W)`` to ``(B,)``.
    :param real: real images ``x``.
    :param fake: generated images :math:`\\tilde x` (detached from the generator).
    :param eps: the interpolation weights ``(B,)``; default :math:`U[0, 1]` draws.
    :param generator: random generator for ``eps``.
    """
    if eps is None:
        eps = torch.rand(real.shape[0], generator=generator, dtype=real.dtype, device="cpu").to(real.device)
    eps = eps.reshape((-1,) + (1,) * (real.dim() - 1))
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def _ns_d(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    return (F.softplus(-d_real) + F.softplus(d_fake)).mean()


def _ns_g(d_fake: torch.Tensor) -> torch.Tensor:
    return F.softplus(-d_fake).mean()


def _w_d(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    return (d_fake - d_real).mean()


def _w_g(d_fake: torch.Tensor) -> torch.Tensor:
    return -d_fake.mean()


#: loss name -> (discriminator loss without penalty, generator loss, uses the gradient penalty)
GAN_LOSSES: Dict[str, Tuple[Callable, Callable, bool]] = {"ns": (_ns_d, _ns_g, False), "wgan-gp": (_w_d, _w_g, True)}

#: Per-loss defaults: DCGAN's Adam settings for ``ns`` (Radford et al. 2016); five critic steps
#: per generator step and beta2 0.9 for ``wgan-gp`` (Gulrajani et al. 2017), with lr 2e-4 and
#: beta1 0.5 rather than the paper's 1e-4 and 0, which learned faster within minutes on MNIST-10k.
#: Spectral normalization (Miyato et al. 2018) is on for ``ns``, whose MLP discriminator otherwise
#: dropped classes within minutes on MNIST-10k, and off for ``wgan-gp``, whose critic the gradient
#: penalty already keeps near 1-Lipschitz.
LOSS_DEFAULTS = {"ns": dict(lr=2e-4, d_lr=2e-4, betas=(0.5, 0.999), n_critic=1, spectral_norm=True),
                 "wgan-gp": dict(lr=2e-4, d_lr=2e-4, betas=(0.5, 0.9), n_critic=5, spectral_norm=False)}


def discriminator_loss(loss: str, d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """The discriminator's (critic's) loss of ``loss`` ("ns" or "wgan-gp"), without the gradient penalty."""
    return GAN_LOSSES[loss][0](d_real, d_fake)


def generator_loss(loss: str, d_fake: torch.Tensor) -> torch.Tensor:
    """The generator's loss of ``loss`` ("ns" or "wgan-gp")."""
    return GAN_LOSSES[loss][1](d_fake)


@dataclass
class GANSettings:
    """How to train a GAN; stored in ``config.json`` under ``"train"``. ``None`` fields take the
    defaults of the loss (:data:`LOSS_DEFAULTS`).

    :param epochs: passes over the training data (by the discriminator).
    :param batch_size: minibatch size (real and generated images each).
    :param loss: ``"ns"`` or ``"wgan-gp"``.
    :param lr: the generator's learning rate.
    :param d_lr: the discriminator's learning rate.
    :param betas: Adam's ``(beta1, beta2)`` for both networks.
    :param n_critic: discriminator steps per generator step.
    :param gp_weight: :math:`\\lambda` of the gradient penalty (``wgan-gp``).
    :param seed: seeds parameters, minibatch order and the draws of z.
    :param disc_net: the discriminator's network kind, ``"mlp"`` or ``"conv"`` (:mod:`pyro_gen.nets`);
        ``None``: the spec's ``net``. The generator is always the spec's decoder.
    :param spectral_norm: spectrally normalize the discriminator's layers (Miyato et al. 2018,
        :func:`add_spectral_norm`); default on for ``ns``, off for ``wgan-gp``.
    :param ema: decay :math:`\\beta` of the moving average of the generator's weights that samples
        are drawn from (Yazici et al. 2019; :meth:`GAN.update_average`, :func:`ema_decay`); 0: sample
        from the current weights.
    """

    epochs: int = 100
    batch_size: int = 64
    loss: str = "ns"
    lr: Optional[float] = None
    d_lr: Optional[float] = None
    betas: Optional[Tuple[float, float]] = None
    n_critic: Optional[int] = None
    gp_weight: float = 10.0
    seed: int = 0
    disc_net: Optional[str] = None
    spectral_norm: Optional[bool] = None
    ema: float = 0.999

    def __post_init__(self):
        if self.loss not in GAN_LOSSES:
            raise InputError(f"unknown GAN loss {self.loss!r}: expected one of {', '.join(GAN_LOSSES)}")
        for name, value in LOSS_DEFAULTS[self.loss].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        self.betas = tuple(float(b) for b in self.betas)
        for name in ("epochs", "batch_size", "n_critic"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name.replace('_', '-')} must be a positive integer, got {getattr(self, name)}")
        for name in ("lr", "d_lr"):
            if not (getattr(self, name) > 0 and math.isfinite(getattr(self, name))):
                raise InputError(f"{name.replace('_', '-')} must be a positive number, got {getattr(self, name)}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise InputError(f"betas must be two numbers in [0, 1), got {self.betas}")
        if not self.gp_weight >= 0:
            raise InputError(f"gp-weight must be >= 0, got {self.gp_weight}")
        if self.disc_net is not None and self.disc_net not in NETWORKS:
            raise InputError(f"unknown discriminator network {self.disc_net!r}: expected one of {', '.join(NETWORKS)}")
        if not 0 <= self.ema < 1:
            raise InputError(f"ema must be in [0, 1), got {self.ema}")
        self.spectral_norm = bool(self.spectral_norm)


class _Frozen:
    """Turn off gradients of a module's parameters inside a ``with`` block."""

    def __init__(self, module: nn.Module):
        self.params = list(module.parameters())

    def __enter__(self):
        for p in self.params:
            p.requires_grad_(False)

    def __exit__(self, *exc):
        for p in self.params:
            p.requires_grad_(True)


class AdversarialStep:
    """The GAN's step in the engine's epoch loop (:func:`pyro_gen.train.train_epochs`): a
    discriminator (critic) step on each minibatch of real images against as many generated ones,
    and a generator step after every ``n_critic`` of them, each with its own Adam; the moving
    average of the generator follows each generator step. The draws of z and of the
    gradient penalty's interpolation weights come from the step's own generator on the CPU (the
    same numbers on any device). Each epoch's row has ``d_loss``, ``g_loss``, the mean
    discriminator outputs ``d_real`` / ``d_fake`` and ``gradient_penalty`` for ``wgan-gp``.
    """

    stop = False

    def __init__(self, settings: GANSettings):
        self.settings = settings
        self.d_loss_fn, self.g_loss_fn, self.penalized = GAN_LOSSES[settings.loss]

    def setup(self, gan: "GAN", x_all: torch.Tensor, y_all, steps_per_epoch: int, world: int) -> None:
        s = self.settings
        if world > 1:
            raise InputError("the GAN baseline trains in one process: run it without torchrun")
        if (s.ema > 0) != (gan.average is not None):
            raise InputError(f"settings.ema={s.ema} needs a GAN {'with' if s.ema > 0 else 'without'} a weight "
                             "average: build it with build_gan(spec, settings)")
        self.gan, self.n, self.device = gan, len(x_all), module_device(gan)
        self.opt_g = adam(gan.decoder.parameters(), s.lr, s.betas)
        self.opt_d = adam(gan.discriminator.parameters(), s.d_lr, s.betas)
        self.gen = torch.Generator().manual_seed(s.seed)  # z and the penalty's weights
        self.d_steps = 0

    def _z(self, b: int) -> torch.Tensor:
        return torch.randn(b, self.gan.latent_dim, generator=self.gen, device="cpu").to(self.device)

    def start_epoch(self, epoch: int) -> None:
        self.sums = dict(d_loss=0.0, g_loss=0.0, d_real=0.0, d_fake=0.0, gradient_penalty=0.0)
        self.g_steps = 0

    def __call__(self, real: torch.Tensor, y, epoch: int, step: int, first: bool) -> float:
        gan, s, sums, b = self.gan, self.settings, self.sums, len(real)
        with torch.no_grad():
            fake = gan.generate(self._z(b))
        d_real, d_fake = gan.discriminator(real), gan.discriminator(fake)
        d_loss = self.d_loss_fn(d_real, d_fake)
        if self.penalized:
            gp = gradient_penalty(gan.discriminator, real, fake, generator=self.gen)
            d_loss = d_loss + s.gp_weight * gp
            sums["gradient_penalty"] += gp.item() * b
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()
        self.d_steps += 1
        value = self.last_d = d_loss.item()
        sums["d_loss"] += value * b
        sums["d_real"] += float(d_real.detach().mean()) * b
        sums["d_fake"] += float(d_fake.detach().mean()) * b
        if self.d_steps % s.n_critic == 0:
            with _Frozen(gan.discriminator):
                g_loss = self.g_loss_fn(gan.discriminator(gan.generate(self._z(s.batch_size))))
                self.opt_g.zero_grad(set_to_none=True)
                g_loss.backward()
            self.opt_g.step()
            gan.update_average(ema_decay(s.ema, self.d_steps // s.n_critic))
            g_value = g_loss.item()
            sums["g_loss"] += g_value
            self.g_steps += 1
            value += g_value  # the guard watches both losses
        return value

    def shown(self, value: float) -> dict:
        return {"d_loss": f"{self.last_d:.3f}"}

    def advice(self, run_dir) -> str:
        return "resume with --resume and a lower --lr / --d-lr"

    def end_epoch(self, epoch: int, say: bool) -> dict:
        sums, n = self.sums, self.n
        row = {"d_loss": sums["d_loss"] / n, "g_loss": sums["g_loss"] / self.g_steps if self.g_steps else None,
               "d_real": sums["d_real"] / n, "d_fake": sums["d_fake"] / n}
        if self.penalized:
            row["gradient_penalty"] = sums["gradient_penalty"] / n
        return row

    def state_dict(self) -> dict:
        return {"opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(), "z_rng": self.gen.get_state(),
                "d_steps": self.d_steps}

    def load_state_dict(self, state: dict) -> None:
        self.opt_g.load_state_dict(state["opt_g"])  # a mismatch: RunError from the engine, naming the file
        self.opt_d.load_state_dict(state["opt_d"])
        for opt, lr in ((self.opt_g, self.settings.lr), (self.opt_d, self.settings.d_lr)):  # --lr / --d-lr may change
            for group in opt.param_groups:
                group["lr"] = lr
        self.gen.set_state(state.get("z_rng", state["data_rng"]))  # runs written before z had its own generator
        self.d_steps = state["d_steps"]

    def finish(self) -> None:
        pass


def fit_gan(gan: GAN, train_x: np.ndarray, settings: GANSettings = GANSettings(), *, run_dir=None,
            resume: bool = False, progress: bool = True,
            on_epoch: Optional[Callable[[dict], None]] = None) -> FitResult:
    """Train ``gan`` on ``train_x`` in the engine's epoch loop (:func:`pyro_gen.train.train_epochs`)
    with the :class:`AdversarialStep`: alternating Adam steps on the discriminator and generator losses.

    Each epoch appends a row to ``metrics.jsonl`` (``d_loss``, ``g_loss``, the mean discriminator
    outputs ``d_real`` / ``d_fake``, ``gradient_penalty`` for ``wgan-gp``, ``seconds``) and writes
    ``checkpoint.pt`` atomically, so a killed run resumes from its last complete epoch, bit-exactly.
    The GAN trains where its parameters are (``gan.to(device)``).

    :param gan: a :class:`GAN` built with the same settings (``build_gan(spec, settings)``).
    :param train_x: training images ``(N, C, H, W)`` in the generator's output range (grey levels).
    :param settings: a :class:`GANSettings`.
    :param run_dir: where ``checkpoint.pt`` and ``metrics.jsonl`` go (``None``: nothing is written).
    :param resume: continue from ``run_dir/checkpoint.pt``.
    :param progress: show a progress bar.
    :param on_epoch: called with each epoch's metrics row, after its checkpoint is written (an
        exception raised there stops training with that epoch saved).
    :returns: a :class:`~pyro_gen.train.FitResult`.
    """
    return train_epochs(gan, AdversarialStep(settings), train_x, epochs=settings.epochs,
                        batch_size=settings.batch_size, seed=settings.seed, run_dir=run_dir, resume=resume,
                        progress=progress, on_epoch=on_epoch)


# --- run directory ----------------------------------------------------------------------------

def gan_spec(image_shape, **model_kw) -> ModelSpec:
    """A :class:`~pyro_gen.vae.ModelSpec` for a GAN: the VAE's fields, with no guide (``None``) and
    ``activation="leaky_relu"`` unless ``model_kw`` gives another."""
    model_kw.setdefault("activation", "leaky_relu")
    return ModelSpec(image_shape=tuple(image_shape), guide=None, **model_kw)
