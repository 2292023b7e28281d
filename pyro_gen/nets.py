"""Plain PyTorch encoder and decoder networks for images of any size.

Nothing in this module knows about Pyro: an *encoder body* maps a batch of images
``(B, C, H, W)`` to features ``(B, out_features)``; a *decoder* maps latent codes
``(..., latent_dim)`` to one raw output per pixel ``(..., C, H, W)`` that a likelihood
(:mod:`pyro_gen.likelihoods`) turns into a distribution. Guide families
(:mod:`pyro_gen.guides`) put their own output head on an encoder body.

Conditional models (Sohn et al. 2015, "Learning Structured Output Representation using Deep
Conditional Generative Models"; Kingma et al. 2014, model M2) see a side vector ``y`` as well:
:class:`ConditionedEncoder` and :class:`ConditionedDecoder` wrap the networks above without
changing them, and :func:`condition_vector` turns integer labels into one-hot vectors.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
from torch import nn
from .errors import InputError

__all__ = ["MLPEncoder", "MLPDecoder", "ConvEncoder", "ConvDecoder", "make_networks", "NETWORKS",
           "ConditionedEncoder", "ConditionedDecoder", "condition_vector", "ACTIVATIONS", "set_activation"]

Shape = Tuple[int, int, int]


def _mlp(sizes: Sequence[int], activate_last: bool) -> nn.Sequential:
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if activate_last or i < len(sizes) - 2:
            layers.append(nn.Softplus())
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """Flatten the image and apply fully connected layers with softplus activations.

    :param image_shape: ``(C, H, W)`` of one datum.
    :param hidden: widths of the hidden layers; the last one is ``out_features``.
    """

    def __init__(self, image_shape: Shape, hidden: Sequence[int] = (400,)):
        super().__init__()
        if not hidden:
            raise InputError("MLPEncoder needs at least one hidden layer")
        self.image_shape = tuple(image_shape)
        self.out_features = int(hidden[-1])
        self.net = _mlp([math.prod(image_shape), *hidden], activate_last=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(x.shape[: x.dim() - 3] + (-1,)))


class MLPDecoder(nn.Module):
    """Fully connected decoder: ``z -> hidden -> one output per pixel``.

    :param latent_dim: size of z.
    :param image_shape: ``(C, H, W)`` of one datum.
    :param hidden: widths of the hidden layers (from z outwards).
    """

    def __init__(self, latent_dim: int, image_shape: Shape, hidden: Sequence[int] = (400,)):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.net = _mlp([latent_dim, *hidden, math.prod(image_shape)], activate_last=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).reshape(z.shape[:-1] + self.image_shape)


def _conv_sizes(h: int, w: int, n: int) -> Tuple[int, int]:
    for _ in range(n):
        h, w = (h + 1) // 2, (w + 1) // 2
    return h, w


class ConvEncoder(nn.Module):
    """Two stride-2 convolutions then a fully connected layer; any ``H, W``.

    :param image_shape: ``(C, H, W)`` of one datum.
    :param hidden: ``hidden[-1]`` is the width of the output features.
    :param channels: channels of the two convolutions.
    """

    def __init__(self, image_shape: Shape, hidden: Sequence[int] = (400,), channels: Sequence[int] = (32, 64)):
        super().__init__()
        c, h, w = image_shape
        self.image_shape = tuple(image_shape)
        self.out_features = int(hidden[-1])
        convs = []
        for c_in, c_out in zip([c, *channels[:-1]], channels):
            convs += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.Softplus()]
        self.convs = nn.Sequential(*convs)
        fh, fw = _conv_sizes(h, w, len(channels))
        self.fc = nn.Sequential(nn.Linear(channels[-1] * fh * fw, self.out_features), nn.Softplus())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[:-3]
        h = self.convs(x.reshape((-1,) + self.image_shape))
        return self.fc(h.flatten(1)).reshape(batch + (-1,))


class ConvDecoder(nn.Module):
    """A fully connected layer then two stride-2 transposed convolutions, cropped to ``H, W``.

    :param latent_dim: size of z.
    :param image_shape: ``(C, H, W)`` of one datum.
    :param hidden: ``hidden[0]`` is the width of the first fully connected layer.
    :param channels: channels of the two transposed convolutions' inputs.
    """

    def __init__(self, latent_dim: int, image_shape: Shape, hidden: Sequence[int] = (400,),
                 channels: Sequence[int] = (64, 32)):
        super().__init__()
        c, h, w = image_shape
        self.image_shape = tuple(image_shape)
        self.start = (channels[0],) + _conv_sizes(h, w, len(channels))
        self.fc = nn.Sequential(nn.Linear(latent_dim, hidden[0]), nn.Softplus(),
                                nn.Linear(hidden[0], math.prod(self.start)), nn.Softplus())
        layers = []
        outs = [*channels[1:], c]
        for i, (c_in, c_out) in enumerate(zip(channels, outs)):
            layers.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1))
            if i < len(channels) - 1:
                layers.append(nn.Softplus())
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        batch = z.shape[:-1]
        h = self.fc(z.reshape(-1, z.shape[-1])).reshape((-1,) + self.start)
        _, height, width = self.image_shape
        out = self.deconvs(h)[..., :height, :width]
        return out.reshape(batch + self.image_shape)


NETWORKS = {"mlp": (MLPEncoder, MLPDecoder), "conv": (ConvEncoder, ConvDecoder)}


#: Hidden-layer activations by name. Softplus is the default of every network; a GAN generator
#: needs a kinked one (relu, leaky_relu): with small pre-activations softplus is almost linear, and
#: the generator trained adversarially collapses (see docs/comparison.rst).
ACTIVATIONS = {"softplus": nn.Softplus, "relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.2)}


def set_activation(module: nn.Module, activation: str) -> nn.Module:
    """Replace every :class:`~torch.nn.Softplus` inside ``module`` by the activation named
    ``activation`` (a key of :data:`ACTIVATIONS`), in place; parameters are unchanged.

    :returns: ``module``.
    """
    if activation not in ACTIVATIONS:
        raise InputError(f"unknown activation {activation!r}: expected one of {', '.join(ACTIVATIONS)}")
    if activation != "softplus":
        for parent in module.modules():
            for name, child in parent.named_children():
                if isinstance(child, nn.Softplus):
                    setattr(parent, name, ACTIVATIONS[activation]())
    return module


def make_networks(kind: str, image_shape: Shape, latent_dim: int,
                  hidden: Sequence[int] = (400,), condition_dim: int = 0,
                  activation: str = "softplus") -> Tuple[nn.Module, nn.Module]:
    """Build an ``(encoder_body, decoder)`` pair.

    :param kind: ``"mlp"`` or ``"conv"``.
    :param image_shape: ``(C, H, W)`` of one datum.
    :param latent_dim: size of z.
    :param hidden: hidden widths of the encoder; the decoder mirrors them.
    :param condition_dim: size of a side vector ``y`` both networks are conditioned on (0: none);
        the pair is then a :class:`ConditionedEncoder` (called with ``(x, y)``) and a
        :class:`ConditionedDecoder` (called with ``z, y``).
    :param activation: hidden-layer activation of both networks, a key of :data:`ACTIVATIONS`.
    :returns: the encoder body (with an ``out_features`` attribute) and the decoder.
    """
    if kind not in NETWORKS:
        raise InputError(f"unknown network kind {kind!r}: expected one of {', '.join(NETWORKS)}")
    if condition_dim < 0:
        raise InputError(f"condition_dim must be >= 0, got {condition_dim}")
    enc_cls, dec_cls = NETWORKS[kind]
    hidden = tuple(int(h) for h in hidden)
    encoder, decoder = enc_cls(image_shape, hidden), dec_cls(latent_dim + condition_dim, image_shape, hidden[::-1])
    if condition_dim:
        encoder, decoder = ConditionedEncoder(encoder, condition_dim), ConditionedDecoder(decoder, condition_dim)
    return set_activation(encoder, activation), set_activation(decoder, activation)


def condition_vector(y: torch.Tensor, condition_dim: int) -> torch.Tensor:
    """The side vector of ``y``: one-hot vectors ``(..., condition_dim)`` for integer labels
    ``(...)``; a floating-point ``(..., condition_dim)`` tensor as it is.

    :raises ValueError: for labels outside ``[0, condition_dim)`` or a vector of the wrong size.
    """
    if not torch.is_floating_point(y):
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= condition_dim):
            raise InputError(f"labels must lie in [0, {condition_dim}), got values in "
                             f"[{int(y.min())}, {int(y.max())}]")
        return nn.functional.one_hot(y.long(), condition_dim).to(torch.get_default_dtype())
    if y.shape[-1:] != (condition_dim,):
        raise InputError(f"the side vector must have {condition_dim} entries in its last dimension, "
                         f"got shape {tuple(y.shape)}")
    return y


def _concat(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``cat([a, b], -1)`` after broadcasting their batch dimensions against each other."""
    batch = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    return torch.cat([a.expand(batch + a.shape[-1:]), b.expand(batch + b.shape[-1:])], dim=-1)


class ConditionedEncoder(nn.Module):
    """An encoder body over an image and a side vector,
    :math:`h(x, y) = \\operatorname{softplus}(W\\,[f(x); y] + b)`, where :math:`f` is the wrapped
    body and :math:`y` the one-hot label (or side vector). Joining ``y`` after the body rather
    than at the pixels works for any body (MLP, convolutional, a user's) unchanged; through the
    extra layer every output feature depends on ``x`` and ``y`` jointly.

    It is called with the pair ``(x, y)``, so a guide family (:mod:`pyro_gen.guides`) built on
    it is called as ``guide((x, y))``. The batch dimensions of ``f(x)`` and of ``y`` broadcast
    (e.g. enumerated labels of shape ``(K, 1)`` against a batch ``(B,)``).

    :param body: an encoder body with ``out_features``.
    :param condition_dim: size of ``y``'s vector (the number of classes for labels).
    """

    def __init__(self, body: nn.Module, condition_dim: int):
        super().__init__()
        self.body = body
        self.condition_dim = int(condition_dim)
        self.out_features = body.out_features
        self.join = nn.Sequential(nn.Linear(body.out_features + self.condition_dim, body.out_features), nn.Softplus())

    def forward(self, inputs) -> torch.Tensor:
        if not isinstance(inputs, (tuple, list)) or len(inputs) != 2:
            raise InputError("this encoder is conditional: it needs the pair (x, y) of images and labels "
                             "(or side vectors), got images alone")
        x, y = inputs
        return self.join(_concat(self.body(x), condition_vector(y, self.condition_dim)))


class ConditionedDecoder(nn.Module):
    """A decoder of :math:`[z; y]`: the wrapped decoder, built for inputs of size
    ``latent_dim + condition_dim``, applied to the code concatenated with the one-hot label (or
    side vector); the batch dimensions of ``z`` and ``y`` broadcast.

    :param decoder: a decoder taking vectors of size ``latent_dim + condition_dim``.
    :param condition_dim: size of ``y``'s vector.
    """

    def __init__(self, decoder: nn.Module, condition_dim: int):
        super().__init__()
        self.decoder = decoder
        self.condition_dim = int(condition_dim)

    def forward(self, z: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        if y is None:
            raise InputError("this decoder is conditional: it needs labels (or side vectors) y as well as codes z")
        return self.decoder(_concat(z, condition_vector(y, self.condition_dim)))
