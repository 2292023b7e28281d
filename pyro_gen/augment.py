"""Random geometric augmentation of image batches.

:class:`RandomAffine` warps each image of a batch by its own random rotation, scaling and
translation (bilinear resampling, zeros outside the image). The semi-supervised VAE uses it on
the labelled images of its classification term (:mod:`pyro_gen.ssvae`): with 10 labels per class,
a classifier that sees each labelled digit slightly rotated, scaled and shifted at every step
generalizes far better than one that sees the same 100 images again and again.

Draws come from torch's global generator, which :func:`pyro.set_rng_seed` (and so
``TrainSettings.seed``) seeds.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from .errors import InputError

__all__ = ["RandomAffine"]


class RandomAffine(nn.Module):
    """Warp each image by a random affine map: a rotation uniform in ``±rotation`` degrees, a
    scaling uniform in ``1 ± scale`` and a shift uniform in ``±translation`` pixels along each axis.

    :param rotation: largest rotation, degrees.
    :param scale: largest relative change of size.
    :param translation: largest shift, pixels.
    :raises ValueError: for a negative bound or ``scale >= 1``.
    """

    def __init__(self, rotation: float = 15.0, scale: float = 0.1, translation: float = 3.0):
        super().__init__()
        if min(rotation, scale, translation) < 0 or scale >= 1:
            raise InputError(f"RandomAffine needs rotation, translation >= 0 and 0 <= scale < 1, got rotation "
                             f"{rotation}, scale {scale}, translation {translation}")
        self.rotation, self.scale, self.translation = float(rotation), float(scale), float(translation)

    def extra_repr(self) -> str:
        return f"rotation={self.rotation}, scale={self.scale}, translation={self.translation}"

    def matrices(self, u: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """The ``(n, 2, 3)`` affine matrices of uniform draws ``u`` in ``[-1, 1]``, shape ``(n, 4)``
        (rotation, scaling, shift along the width, shift along the height: -1 and 1 are the
        bounds), in the normalized coordinates of :func:`torch.nn.functional.affine_grid`, which
        map each output position to the input position it is read from."""
        angle = u[:, 0] * math.radians(self.rotation)
        size = 1 + u[:, 1] * self.scale
        shift_x, shift_y = u[:, 2] * 2 * self.translation / width, u[:, 3] * 2 * self.translation / height
        cos, sin = torch.cos(angle) / size, torch.sin(angle) / size
        return torch.stack([torch.stack([cos, -sin, shift_x], -1), torch.stack([sin, cos, shift_y], -1)], -2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(..., C, H, W)`` -> warped images of the same shape."""
        if x.dim() < 3:
            raise InputError(f"RandomAffine needs images (..., C, H, W), got shape {tuple(x.shape)}")
        flat = x.reshape((-1,) + x.shape[-3:])
        if not len(flat):
            return x
        u = torch.rand(len(flat), 4, dtype=flat.dtype, device=flat.device) * 2 - 1
        theta = self.matrices(u, x.shape[-2], x.shape[-1])
        grid = nn.functional.affine_grid(theta, flat.shape, align_corners=False)
        return nn.functional.grid_sample(flat, grid, align_corners=False).reshape(x.shape)
