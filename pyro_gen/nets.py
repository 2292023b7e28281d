"""Plain PyTorch encoder and decoder networks for images of any size.

Nothing in this module knows about Pyro: an *encoder body* maps a batch of images
``(B, C, H, W)`` to features ``(B, out_features)``; a *decoder* maps latent codes
``(..., latent_dim)`` to one raw output per pixel ``(..., C, H, W)`` that a likelihood
(:mod:`pyro_gen.likelihoods`) turns into a distribution. Guide families
(:mod:`pyro_gen.guides`) put their own output head on an encoder body.
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import torch
from torch import nn

__all__ = ["MLPEncoder", "MLPDecoder", "ConvEncoder", "ConvDecoder", "make_networks", "NETWORKS"]

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
            raise ValueError("MLPEncoder needs at least one hidden layer")
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


def make_networks(kind: str, image_shape: Shape, latent_dim: int,
                  hidden: Sequence[int] = (400,)) -> Tuple[nn.Module, nn.Module]:
    """Build an ``(encoder_body, decoder)`` pair.

    :param kind: ``"mlp"`` or ``"conv"``.
    :param image_shape: ``(C, H, W)`` of one datum.
    :param latent_dim: size of z.
    :param hidden: hidden widths of the encoder; the decoder mirrors them.
    :returns: the encoder body (with an ``out_features`` attribute) and the decoder.
    """
    if kind not in NETWORKS:
        raise ValueError(f"unknown network kind {kind!r}: expected one of {', '.join(NETWORKS)}")
    enc_cls, dec_cls = NETWORKS[kind]
    hidden = tuple(int(h) for h in hidden)
    return enc_cls(image_shape, hidden), dec_cls(latent_dim, image_shape, hidden[::-1])
