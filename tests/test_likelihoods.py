"""Likelihood contract and log-densities against scipy / closed forms."""

import pytest
import scipy.stats
import torch

from pyro_gen.likelihoods import LIKELIHOODS, make_likelihood

SHAPE = (2, 3, 4)  # (C, H, W): not square, more than one channel


@pytest.mark.parametrize("name", list(LIKELIHOODS))
@pytest.mark.parametrize("batch", [(), (5,), (3, 5)], ids=["no-batch", "batch", "particles-x-batch"])
def test_contract_event_shape_and_log_prob(name, batch):
    lik = make_likelihood(name)
    out = torch.randn(batch + SHAPE)
    d = lik(out)
    assert d.event_shape == SHAPE and d.batch_shape == batch
    x = torch.rand(SHAPE) if lik.support == "unit_interval" else torch.randn(SHAPE)
    if lik.binarize:
        x = torch.bernoulli(x)
    lp = d.log_prob(x)  # one datum broadcasts against the batch
    assert lp.shape == batch and torch.isfinite(lp).all()
    assert lik.mean(out).shape == batch + SHAPE


def test_bernoulli_matches_scipy():
    logits = torch.randn(SHAPE, dtype=torch.float64)
    x = torch.bernoulli(torch.full(SHAPE, 0.5, dtype=torch.float64))
    expected = scipy.stats.bernoulli(torch.sigmoid(logits).numpy()).logpmf(x.numpy()).sum()
    assert make_likelihood("bernoulli")(logits).log_prob(x).item() == pytest.approx(expected, rel=1e-10)


def test_gaussian_fixed_scale_matches_scipy():
    loc = torch.randn(SHAPE, dtype=torch.float64)
    x = torch.randn(SHAPE, dtype=torch.float64)
    lik = make_likelihood("gaussian").double()
    assert float(lik.scale) == pytest.approx(0.1, rel=1e-6)
    expected = scipy.stats.norm(loc.numpy(), 0.1).logpdf(x.numpy()).sum()
    assert lik(loc).log_prob(x).item() == pytest.approx(expected, rel=1e-6)


def test_gaussian_learned_scale_gets_gradient():
    lik = make_likelihood("gaussian-learned")
    params = list(lik.parameters())
    assert len(params) == 1
    lik(torch.zeros(SHAPE)).log_prob(torch.ones(SHAPE)).backward()
    assert params[0].grad is not None and params[0].grad.abs() > 0


def test_continuous_bernoulli_normalizes():
    """The continuous Bernoulli density integrates to one over [0, 1] (trapezoid, 1e-4)."""
    lik = make_likelihood("cbernoulli")
    grid = torch.linspace(0, 1, 20001, dtype=torch.float64)
    for logit in (-3.0, -0.2, 0.0, 1.5):
        d = lik(torch.full((20001, 1, 1, 1), logit, dtype=torch.float64))
        dens = d.log_prob(grid.reshape(-1, 1, 1, 1)).exp()
        assert torch.trapezoid(dens, grid).item() == pytest.approx(1.0, abs=1e-4)
    # closed form at logit 0: uniform density 1
    assert lik(torch.zeros(1, 1, 1)).log_prob(torch.full((1, 1, 1), 0.3)).item() == pytest.approx(0.0, abs=1e-5)
