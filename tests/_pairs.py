"""Model/guide pairs written the way users write them (no pyro_gen base class or attribute), for
the tests of the pair contract. Imported by the CLI as ``--model module:_pairs:NAME`` (pytest
puts this folder on ``sys.path``)."""
import math

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroParam
from torch import nn


class TutorialVAE(nn.Module):
    """Pyro's VAE tutorial, nearly verbatim: ``pyro.module``, a plate named "data", ``.to_event(1)``."""

    def __init__(self, image_shape=(1, 28, 28), latent_dim=4, hidden=(32,)):
        super().__init__()
        d, h = math.prod(image_shape), hidden[0]
        self.z_dim = latent_dim
        self.enc = nn.Sequential(nn.Flatten(-3), nn.Linear(d, h), nn.Softplus())
        self.enc_loc, self.enc_scale = nn.Linear(h, latent_dim), nn.Linear(h, latent_dim)
        self.dec = nn.Sequential(nn.Linear(latent_dim, h), nn.Softplus(), nn.Linear(h, d))
        self.image_shape = tuple(image_shape)

    def model(self, x):
        pyro.module("decoder", self.dec)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("latent", dist.Normal(x.new_zeros(x.shape[0], self.z_dim),
                                                  x.new_ones(x.shape[0], self.z_dim)).to_event(1))
            logits = self.dec(z)
            pyro.sample("obs", dist.Bernoulli(logits=logits).to_event(1), obs=x.reshape(x.shape[:-3] + (-1,)))

    def guide(self, x):
        pyro.module("encoder", self)
        with pyro.plate("data", x.shape[0]):
            h = self.enc(x)
            pyro.sample("latent", dist.Normal(self.enc_loc(h), nn.functional.softplus(self.enc_scale(h)) + 1e-4)
                        .to_event(1))

    @torch.no_grad()
    def sample(self, n, generator=None):
        z = torch.randn(n, self.z_dim, generator=generator)
        return torch.sigmoid(self.dec(z)).reshape((n,) + self.image_shape)


class LazyParamVAE(TutorialVAE):
    """The tutorial VAE with a learned prior scale created by ``pyro.param`` on the first call
    (constrained positive), as Pyro's autoguides create theirs."""

    def model(self, x):
        scale = pyro.param("prior_scale", lambda: torch.ones(self.z_dim), constraint=dist.constraints.positive)
        pyro.module("decoder", self.dec)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("latent", dist.Normal(torch.zeros(self.z_dim), scale).expand([x.shape[0], self.z_dim])
                            .to_event(1))
            pyro.sample("obs", dist.Bernoulli(logits=self.dec(z)).to_event(1), obs=x.reshape(x.shape[:-3] + (-1,)))


class PyroModuleVAE(PyroModule):
    """A ``PyroModule`` whose prior location and scale are ``PyroParam``s, and whose latent has two sites."""

    def __init__(self, image_shape=(1, 28, 28), latent_dim=4, hidden=(32,)):
        super().__init__()
        d, h = math.prod(image_shape), hidden[0]
        self.z_dim = latent_dim
        self.prior_loc = PyroParam(torch.zeros(latent_dim))
        self.prior_scale = PyroParam(torch.ones(latent_dim), constraint=dist.constraints.positive)
        self.enc = nn.Sequential(nn.Flatten(-3), nn.Linear(d, h), nn.Softplus(), nn.Linear(h, 4 * latent_dim))
        self.dec = nn.Sequential(nn.Linear(2 * latent_dim, h), nn.Softplus(), nn.Linear(h, d))

    def model(self, x):
        b = x.shape[0]
        with pyro.plate("data", b):
            za = pyro.sample("za", dist.Normal(self.prior_loc, self.prior_scale).expand([b, self.z_dim]).to_event(1))
            zb = pyro.sample("zb", dist.Normal(0.0, 1.0).expand([b, self.z_dim]).to_event(1))
            logits = self.dec(torch.cat([za, zb], -1))
            pyro.sample("obs", dist.Bernoulli(logits=logits).to_event(1), obs=x.reshape(x.shape[:-3] + (-1,)))

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            la, ra, lb, rb = self.enc(x).chunk(4, -1)
            pyro.sample("za", dist.Normal(la, nn.functional.softplus(ra) + 1e-4).to_event(1))
            pyro.sample("zb", dist.Normal(lb, nn.functional.softplus(rb) + 1e-4).to_event(1))


class GlobalLatentVAE(TutorialVAE):
    """Breaks the contract: a latent site ``w`` outside the data plate."""

    def model(self, x):
        w = pyro.sample("w", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("latent", dist.Normal(w, 1.0).expand([x.shape[0], self.z_dim]).to_event(1))
            pyro.sample("obs", dist.Bernoulli(logits=self.dec(z)).to_event(1), obs=x.reshape(x.shape[:-3] + (-1,)))

    def guide(self, x):
        pyro.sample("w", dist.Normal(0.0, 1.0))
        super().guide(x)


class TwoLayerLinearGaussian(nn.Module):
    """:math:`z_2 \\sim N(0, I)`, :math:`z_1 \\sim N(A z_2 + a, s_1^2 I)`, :math:`x \\sim N(B z_1 + b, s_0^2 I)`
    with the exact posterior as guide, :math:`q(z_1 \\mid x) = p(z_1 \\mid x)` and
    :math:`q(z_2 \\mid z_1) = p(z_2 \\mid z_1)` (x is independent of z2 given z1), optionally widened."""

    def __init__(self, d2=2, d1=3, d0=5, widen=1.0, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.A, self.a = torch.randn(d1, d2, generator=g, dtype=torch.float64), torch.randn(d1, generator=g, dtype=torch.float64)
        self.B, self.b = torch.randn(d0, d1, generator=g, dtype=torch.float64), torch.randn(d0, generator=g, dtype=torch.float64)
        self.s1, self.s0, self.widen = 0.7, 0.5, widen
        self.d2, self.d1, self.d0 = d2, d1, d0
        cov1 = self.A @ self.A.T + self.s1 ** 2 * torch.eye(d1, dtype=torch.float64)  # p(z1)
        self.cov1, self.mean1 = cov1, self.a
        # p(z1 | x): precision P = cov1^-1 + B^T B / s0^2
        prec = torch.linalg.inv(cov1) + self.B.T @ self.B / self.s0 ** 2
        self.post_cov1 = torch.linalg.inv(prec)
        self.gain1 = self.post_cov1 @ self.B.T / self.s0 ** 2
        # p(z2 | z1): precision I + A^T A / s1^2
        self.post_cov2 = torch.linalg.inv(torch.eye(d2, dtype=torch.float64) + self.A.T @ self.A / self.s1 ** 2)
        self.gain2 = self.post_cov2 @ self.A.T / self.s1 ** 2

    def marginal(self) -> dist.MultivariateNormal:
        cov = self.B @ self.cov1 @ self.B.T + self.s0 ** 2 * torch.eye(self.d0, dtype=torch.float64)
        return dist.MultivariateNormal(self.B @ self.mean1 + self.b, cov)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z2 = pyro.sample("z2", dist.Normal(x.new_zeros(x.shape[0], self.d2), 1.0).to_event(1))
            z1 = pyro.sample("z1", dist.Normal(z2 @ self.A.T + self.a, self.s1).to_event(1))
            pyro.sample("x", dist.Normal(z1 @ self.B.T + self.b, self.s0).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            loc1 = self.mean1 + (x - self.B @ self.mean1 - self.b) @ self.gain1.T
            z1 = pyro.sample("z1", dist.MultivariateNormal(loc1, self.widen ** 2 * self.post_cov1))
            pyro.sample("z2", dist.MultivariateNormal((z1 - self.a) @ self.gain2.T, self.widen ** 2 * self.post_cov2))


class IndependentSites(nn.Module):
    """Two independent latent sites with diagonal Normal guides of known parameters, for the
    closed-form KL per site: KL(N(m, s^2) || N(0, 1)) summed over each site's dimensions."""

    def __init__(self, n=40, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.loc_a, self.scale_a = torch.randn(n, 2, generator=g), 0.3 + torch.rand(n, 2, generator=g)
        self.loc_b, self.scale_b = 2 * torch.randn(n, 3, generator=g), 0.1 + torch.rand(n, 3, generator=g)
        self.W = torch.randn(5, 5, generator=g)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            za = pyro.sample("za", dist.Normal(x.new_zeros(x.shape[0], 2), 1.0).to_event(1))
            zb = pyro.sample("zb", dist.Normal(x.new_zeros(x.shape[0], 3), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(torch.cat([za, zb], -1) @ self.W.T, 1.0).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("za", dist.Normal(self.loc_a[:x.shape[0]], self.scale_a[:x.shape[0]]).to_event(1))
            pyro.sample("zb", dist.Normal(self.loc_b[:x.shape[0]], self.scale_b[:x.shape[0]]).to_event(1))

    def kl(self, site):
        loc, scale = (self.loc_a, self.scale_a) if site == "za" else (self.loc_b, self.scale_b)
        return (-scale.log() + (scale ** 2 + loc ** 2) / 2 - 0.5).sum(-1)
