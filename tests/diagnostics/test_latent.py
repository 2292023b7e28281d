"""Latent diagnostics against constructed encoders and closed forms: active units, the collapse
flag, the per-epoch hook, KL per dimension, the ELBO-surgery identity.
"""
import json
import math

import numpy as np
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_gen.diagnostics import (active_units, elbo_surgery, epoch_diagnostics, kl_per_dimension_estimate, latent_diagnostics, make_epoch_metrics)
from pyro_gen.likelihoods import Gaussian
from pyro_gen.priors import StandardNormal
from pyro_gen.vae import VAE
from _ppca import LinearDecoder, normal_kl, orthogonal_ppca as ppca  # noqa: E402,F401


D, L = 6, 2


# ---------------------------------------------------------------- latent diagnostics

class ConstructedGuide(nn.Module):
    """Means depend on x in dims 0 and 1 (variance ~1), weakly in dim 2 (variance 0.0025 < 0.01),
    not at all in dims 3 and 4."""

    deterministic = False

    def forward(self, x):
        xf = x.reshape(x.shape[0], -1)
        loc = torch.stack([xf[:, 0], -xf[:, 1], 0.05 * xf[:, 2], torch.full_like(xf[:, 0], 0.3),
                           torch.zeros_like(xf[:, 0])], -1)
        return dist.Normal(loc, torch.full_like(loc, 0.5)).to_event(1)


class PriorGuide(nn.Module):
    """A collapsed encoder: q(z|x) = p(z) for every x."""

    deterministic = False

    def forward(self, x):
        return dist.Normal(torch.zeros(x.shape[0], L), torch.ones(x.shape[0], L)).to_event(1)


def _constructed_vae(guide, latent=5):
    return VAE(guide=guide, decoder=nn.Sequential(nn.Linear(latent, D), nn.Unflatten(-1, (1, 1, D))),
               prior=StandardNormal(latent), likelihood=Gaussian()).eval()


def test_active_units_counts_constructed_encoder():
    """Exactly 2 of 5 units have Cov_x(E_q[z_d]) > 0.01; the activities match the closed form
    (1, 1, 0.0025, 0, 0) within sampling error of 2000 data."""
    vae = _constructed_vae(ConstructedGuide())
    x = torch.randn(2000, 1, 1, D, generator=torch.Generator().manual_seed(0))
    assert active_units(vae, x) == 2
    lat = latent_diagnostics(vae, x, max_points=2000)
    assert lat.active_units == 2
    assert np.allclose(lat.activity, [1, 1, 0.0025, 0, 0], atol=[0.15, 0.15, 0.0005, 1e-9, 1e-9])


def test_collapse_flag_fires_on_collapsed_not_on_healthy():
    collapsed = _constructed_vae(PriorGuide(), latent=L)
    x = torch.randn(100, 1, 1, D)
    lat = latent_diagnostics(collapsed, x)
    assert lat.collapse and lat.kl == pytest.approx(0.0, abs=1e-6) and lat.active_units == 0
    assert "KL" in lat.collapse_reason and "active units" in lat.collapse_reason
    healthy, xh, _ = ppca(n=100)
    lat = latent_diagnostics(healthy, xh)
    assert not lat.collapse and lat.active_units == L and lat.collapse_reason == ""
    # closed form: mean KL(posterior || N(0, I)) of the data
    mean, sd = healthy.guide_net.exact(xh)
    assert lat.kl == pytest.approx(float(normal_kl(mean, sd, 0.0, torch.tensor(1.0)).sum(-1).mean()), rel=1e-5)


def test_epoch_metrics_hook_fires_once_and_keeps_rng():
    """The hook reports a collapse once per episode, and leaves the global random state as it was."""
    fired = []
    hook = make_epoch_metrics(on_collapse=fired.append)
    collapsed, healthy = _constructed_vae(PriorGuide(), latent=L), ppca(n=50)[0]
    x = torch.randn(50, 1, 1, D)
    state = torch.get_rng_state()
    rows = [hook(collapsed, x), hook(collapsed, x), hook(healthy, x), hook(collapsed, x)]
    assert torch.equal(state, torch.get_rng_state())
    assert [r["posterior_collapse"] for r in rows] == [True, True, False, True]
    assert len(fired) == 2
    assert json.loads(json.dumps(rows[2]))["active_units"] == L
    assert epoch_diagnostics(healthy, None) == {}


def test_kl_per_dimension_closed_form_vs_monte_carlo():
    """Normal vs N(0, 1): the closed form sums to the total KL (1e-5) and matches Monte Carlo (5 s.e.).
    Normal vs Student-t (no closed form): the automatic Monte Carlo matches 1-d quadrature (0.02).
    A non-factorized prior gives no per-dimension KL, with the reason."""
    g = torch.Generator().manual_seed(0)
    loc, scale = torch.randn(4, 3, generator=g), torch.rand(4, 3, generator=g) + 0.3
    q, prior = dist.Normal(loc, scale).to_event(1), StandardNormal(3)()
    closed, how = kl_per_dimension_estimate(q, prior)
    assert how == "closed form"
    assert torch.allclose(closed.sum(-1), torch.distributions.kl_divergence(q, prior), atol=1e-5)
    mc, how = kl_per_dimension_estimate(q, prior, num_samples=20000, method="mc")
    assert how.startswith("Monte Carlo")
    z = dist.Normal(loc, scale).sample((20000,))
    ratio = dist.Normal(loc, scale).log_prob(z) - dist.Normal(0.0, 1.0).log_prob(z)
    assert (abs(mc - closed) < 5 * ratio.std(0) / math.sqrt(20000)).all()

    student = dist.StudentT(4.0, torch.zeros(3), torch.ones(3)).to_event(1)
    auto, how = kl_per_dimension_estimate(q, student, num_samples=20000)
    assert how.startswith("Monte Carlo")
    grid = torch.linspace(-12, 12, 20001)
    for i, j in [(0, 0), (2, 1), (3, 2)]:
        qd = dist.Normal(loc[i, j], scale[i, j])
        dens = qd.log_prob(grid).exp()
        quad = torch.trapezoid(dens * (qd.log_prob(grid) - dist.StudentT(4.0, 0.0, 1.0).log_prob(grid)), grid)
        assert float(auto[i, j]) == pytest.approx(float(quad), abs=0.02)

    full = dist.MultivariateNormal(torch.zeros(3), torch.eye(3) + 0.5)
    none, reason = kl_per_dimension_estimate(q, full)
    assert none is None and "factorize" in reason


def test_elbo_surgery_identity_and_closed_forms():
    """MC KL = I + marginal KL draw by draw (1e-6); with the closed-form KL, within 0.02 nats
    (2000 draws x 40 data; observed errors <= 0.005 over 5 seeds); I = 0 when q ignores x;
    I = log N for non-overlapping posteriors."""
    g = torch.Generator().manual_seed(0)
    loc, scale = torch.randn(40, 3, generator=g), torch.rand(40, 3, generator=g) + 0.3
    q, prior = dist.Normal(loc, scale).to_event(1), StandardNormal(3)()
    avg_kl, mi, mkl = elbo_surgery(q, prior, num_samples=2000)
    assert avg_kl == pytest.approx(mi + mkl, abs=1e-6)
    closed = float(torch.distributions.kl_divergence(q, prior).mean())
    assert mi + mkl == pytest.approx(closed, abs=0.02)
    assert 0 < mi < math.log(40)

    same = dist.Normal(torch.zeros(40, 3) + 0.4, torch.ones(40, 3) * 0.7).to_event(1)
    _, mi0, _ = elbo_surgery(same, prior, num_samples=20)
    assert abs(mi0) < 1e-6
    apart = dist.Normal(torch.arange(40.0)[:, None].expand(40, 3) * 100, torch.ones(40, 3)).to_event(1)
    _, mi_max, _ = elbo_surgery(apart, prior, num_samples=5)
    assert mi_max == pytest.approx(math.log(40), abs=1e-4)
