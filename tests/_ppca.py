"""Shared by the closed-form tests: the linear decoder of probabilistic PCA."""
from torch import nn


class LinearDecoder(nn.Module):
    """The mean ``W z + b`` of pPCA's ``x | z``, as images of shape ``(1, 1, D)`` with ``D = W.shape[0]``."""

    def __init__(self, W, b):
        super().__init__()
        self.register_buffer("W", W)
        self.register_buffer("b", b)

    def forward(self, z):
        return (z @ self.W.T + self.b).reshape(z.shape[:-1] + (1, 1, self.W.shape[0]))
