"""The closed-form oracle of the tests: probabilistic PCA, in one place.

z ~ N(0, I_L), x | z ~ N(W z + b, s^2 I_D) has the marginal p(x) = N(b, W W^T + s^2 I) and the
posterior N(M^-1 W^T (x - b), s^2 M^-1) with M = W^T W + s^2 I: diagonal when W has orthogonal
columns (then the library's diagonal guide family contains it; :class:`PosteriorGuide`).
:class:`PPCAPair` is the same model written as a plain Pyro pair with a linear amortized guide,
for the generic (trace-based) paths, and :func:`diagonal_kl_to_posterior` the KL of any diagonal
Normal to the exact posterior (W of any shape).
"""
import math

import pyro
import pyro.distributions as dist
import torch
from torch import nn


class LinearDecoder(nn.Module):
    """The mean ``W z + b`` of pPCA's ``x | z``, as images of shape ``(1, 1, D)`` with ``D = W.shape[0]``."""

    def __init__(self, W, b):
        super().__init__()
        self.register_buffer("W", W)
        self.register_buffer("b", b)

    def forward(self, z):
        return (z @ self.W.T + self.b).reshape(z.shape[:-1] + (1, 1, self.W.shape[0]))


def marginal(W, b, s) -> dist.MultivariateNormal:
    """p(x) of pPCA, in float64."""
    W, b = W.double(), b.double()
    return dist.MultivariateNormal(b, W @ W.T + s ** 2 * torch.eye(W.shape[0], dtype=torch.float64))


def exact_log_px(W, b, s, x) -> torch.Tensor:
    """log p(x) of data ``x`` ``(N, 1, 1, D)`` (or ``(N, D)``), float64."""
    return marginal(W, b, s).log_prob(x.reshape(x.shape[0], W.shape[0]).double())


def posterior(W, b, s, x):
    """``(mean (N, L), covariance (L, L))`` of the exact posterior, float64."""
    W, b = W.double(), b.double()
    m = W.T @ W + s ** 2 * torch.eye(W.shape[1], dtype=torch.float64)
    mean = torch.linalg.solve(m, W.T @ (x.reshape(x.shape[0], W.shape[0]).double() - b).T).T
    return mean, s ** 2 * torch.linalg.inv(m)


def diagonal_kl_to_posterior(loc, scale, W, b, s, x) -> torch.Tensor:
    """KL(N(loc, diag scale^2) || exact posterior) per datum, float64."""
    mean, cov = posterior(W, b, s, x)
    prec = torch.linalg.inv(cov)
    loc, var = loc.double(), scale.double() ** 2
    d = mean - loc
    L = W.shape[1]
    return 0.5 * ((torch.diagonal(prec) * var).sum(-1) + ((d @ prec) * d).sum(-1) - L
                  + torch.logdet(cov) - var.log().sum(-1))


class PosteriorGuide(nn.Module):
    """The exact posterior for W with orthogonal columns, as a guide network of the library's VAE:
    its scale multiplied by ``scale_factor`` and its mean shifted by ``shift`` (absolute) plus
    ``shift_sd`` posterior standard deviations."""

    deterministic = False

    def __init__(self, W, b, s, scale_factor=1.0, shift=0.0, shift_sd=0.0):
        super().__init__()
        self.W, self.b, self.s = W, b, float(s)
        self.scale_factor, self.shift, self.shift_sd = scale_factor, shift, shift_sd
        self.m_diag = (W ** 2).sum(0) + self.s ** 2

    def exact(self, x):
        mean = (x.reshape(x.shape[0], self.W.shape[0]) - self.b) @ self.W / self.m_diag
        return mean, (self.s / self.m_diag.sqrt()).expand_as(mean)

    def forward(self, x):
        mean, sd = self.exact(x)
        return dist.Normal(mean + self.shift + self.shift_sd * sd, sd * self.scale_factor).to_event(1)


class PPCAPair(nn.Module):
    """pPCA as a plain Pyro pair in the tutorial style: a fixed model (W, b, s are buffers) and a
    linear amortized guide q(z|x) = N(A^T (x - b) + c, diag(exp(log_scale))^2) whose parameters
    start at ``A``, ``c``, ``log_scale``."""

    def __init__(self, W, b, s, A, c, log_scale):
        super().__init__()
        self.register_buffer("W", W)
        self.register_buffer("b", b)
        self.s = float(s)
        self.A, self.c, self.log_scale = nn.Parameter(A.clone()), nn.Parameter(c.clone()), nn.Parameter(log_scale.clone())

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], self.W.shape[1]), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, self.s).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            loc = (x - self.b) @ self.A + self.c
            pyro.sample("z", dist.Normal(loc, self.log_scale.exp().expand_as(loc)).to_event(1))


def best_diagonal_kl(W, b, s) -> float:
    """KL of the best diagonal Normal (variances 1 / diag of the posterior precision, exact mean)
    to the exact posterior: the approximation gap of a diagonal family, the same for every datum."""
    _, cov = posterior(W, b, s, torch.zeros(1, W.shape[0]))
    prec = torch.linalg.inv(cov)
    return float(0.5 * (torch.log(torch.diagonal(prec)).sum() + torch.logdet(cov)))


def orthogonal_ppca(scale_factor=1.0, shift_sd=0.0, n=30, seed=1, D=6, L=2):
    """A pPCA VAE built from the library's VAE (Gaussian likelihood of fixed scale 0.1, standard
    prior) with W = Q diag(1.5, 0.8) of orthonormal Q, whose guide is the exact (diagonal)
    posterior scaled by ``scale_factor`` and shifted by ``shift_sd`` posterior sds; ``n`` data
    drawn from it with ``seed``, and their exact log p(x): ``(vae, x, log_px)``."""
    from pyro_gen.likelihoods import Gaussian
    from pyro_gen.priors import StandardNormal
    from pyro_gen.vae import VAE
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(D, L, generator=g))
    c = torch.tensor([1.5, 0.8])
    W, b = Q * c, torch.randn(D, generator=g)
    lik = Gaussian()
    s = float(lik.scale)
    guide = PosteriorGuide(W, b, s, scale_factor=scale_factor, shift_sd=shift_sd)
    vae = VAE(guide=guide, decoder=LinearDecoder(W, b), prior=StandardNormal(L), likelihood=lik).eval()
    z = torch.randn(n, L, generator=g)
    x = (z @ W.T + b + s * torch.randn(n, D, generator=g)).reshape(n, 1, 1, D)
    return vae, x, exact_log_px(W, b, s, x).float()


def normal_kl(m1, s1, m2, s2):
    """KL(N(m1, s1^2) || N(m2, s2^2)) elementwise."""
    return torch.log(s2 / s1) + (s1 ** 2 + (m1 - m2) ** 2) / (2 * s2 ** 2) - 0.5


__all__ = ["orthogonal_ppca", "normal_kl", "LinearDecoder", "marginal", "exact_log_px", "posterior", "diagonal_kl_to_posterior", "PosteriorGuide",
           "PPCAPair", "best_diagonal_kl", "math"]
