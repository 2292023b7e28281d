"""Gradient noise (diagnostics.gradients): variance and SNR of a one-dimensional linear-Gaussian
VAE against their closed forms, and the groups each parameter is counted in once."""
import math

import pyro.distributions as dist
import pytest
import torch

from pyro_gen.vae import ModelSpec


class _ScalarGuide(torch.nn.Module):
    """q(z | x) = N(a x, sigma^2) for one-dimensional x and z, with a learnable."""

    def __init__(self, a, sigma):
        super().__init__()
        self.a, self.sigma = torch.nn.Parameter(torch.tensor([a])), sigma

    def forward(self, x):
        loc = self.a * x.reshape(x.shape[0], 1)
        return dist.Normal(loc, torch.full_like(loc, self.sigma)).to_event(1)


def test_gradient_variance_and_snr_of_a_one_dimensional_linear_gaussian_vae():
    """z ~ N(0,1), x ~ N(w z, s^2), q(z|x) = N(a x, sigma^2), Trace_ELBO on B data. With
    z = a x + sigma eps the guide's log density does not depend on a, so the per-datum loss's
    gradient in a is -(1/B) sum_n x_n (C_n - D sigma eps_n), C_n = w x_n / s^2 - D a x_n,
    D = w^2/s^2 + 1: mean -(1/B) sum x_n C_n, variance (1/B^2) sum x_n^2 D^2 sigma^2. The measured
    variance and squared mean (R = 4000 draws) match within 6%, the SNR within 3%."""
    from _ppca import LinearDecoder
    from pyro_gen.diagnostics.gradients import gradient_noise
    from pyro_gen.likelihoods import Gaussian
    from pyro_gen.priors import StandardNormal
    from pyro_gen.vae import VAE
    w, s, a, sigma = 1.5, 0.7, 0.3, 0.4
    x = torch.tensor([0.8, -1.2, 2.0, 0.5]).reshape(4, 1, 1, 1)
    vae = VAE(guide=_ScalarGuide(a, sigma), decoder=LinearDecoder(torch.tensor([[w]]), torch.zeros(1)),
              prior=StandardNormal(1), likelihood=Gaussian(scale=s))
    (g,) = gradient_noise(vae, x, elbo="trace", repeats=4000, seed=0)
    xs = x.reshape(-1).double()
    D = w ** 2 / s ** 2 + 1
    C = w * xs / s ** 2 - D * a * xs
    mean = float(-(xs * C).sum() / 4)
    var = float((xs ** 2).sum() * D ** 2 * sigma ** 2 / 16)
    assert g.group == "encoder" and g.num_params == 1
    assert g.total_variance == pytest.approx(var, rel=0.06)
    assert g.mean_grad_sq_norm == pytest.approx(mean ** 2, rel=0.06)
    assert g.median_snr == pytest.approx(abs(mean) / math.sqrt(var), rel=0.03)


def test_the_vamp_priors_gradient_group_holds_its_pseudo_inputs_only():
    """The VampPrior evaluates the encoder at its pseudo-inputs; its group must not count the
    encoder's parameters again (it did: 284 of 374 elements for vamp:3)."""
    from pyro_gen.diagnostics.gradients import parameter_groups
    vae = ModelSpec((1, 6, 5), latent_dim=2, hidden=(8,), prior="vamp:3").build()
    groups = parameter_groups(vae)
    pseudo = sum(p.numel() for p in vae.prior.parameters() if all(p is not q for q in vae.guide_net.parameters()))
    assert sum(p.numel() for p in groups["prior"]) == pseudo == 3 * 30
    ids = [id(p) for ps in groups.values() for p in ps]
    assert len(ids) == len(set(ids))
