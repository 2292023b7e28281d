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


# ---------------------------------------------------------------- the autoregressive Bernoulli


def _ar(hidden: int, seed: int = 0):
    """An autoregressive Bernoulli with every parameter random (a trained one, not the fresh one
    whose correction is zero)."""
    torch.manual_seed(seed)
    lik = make_likelihood("bernoulli-ar")
    lik.context = type(lik.context)(hidden, 3)
    for p in lik.parameters():
        torch.nn.init.normal_(p)
    return lik


def _all_images(h: int, w: int) -> torch.Tensor:
    import itertools
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=h * w))).reshape(-1, 1, h, w)


@pytest.mark.parametrize("hidden", [16, 0], ids=["hidden", "linear"])
def test_autoregressive_bernoulli_normalizes_over_every_image(hidden):
    """Summed over all 2^9 binary 3 x 3 images (and all 2^8 of 2 x 4), p(x | z) is 1 (1e-5)."""
    lik = _ar(hidden).double()
    for h, w in ((3, 3), (2, 4)):
        xs = _all_images(h, w).double()
        base = torch.randn(1, 1, h, w, dtype=torch.float64).expand(len(xs), 1, h, w)
        assert lik(base).log_prob(xs).exp().sum().item() == pytest.approx(1.0, abs=1e-5)


def test_autoregressive_bernoulli_is_causal_and_starts_as_the_plain_bernoulli():
    lik = _ar(16)
    x = torch.bernoulli(torch.full((1, 1, 6, 6), 0.5))
    before = lik.context(x).flatten()
    for k in range(36):  # flipping pixel k changes no correction at or before k
        y = x.clone().flatten()
        y[k] = 1 - y[k]
        after = lik.context(y.reshape(x.shape)).flatten()
        assert torch.equal(after[: k + 1], before[: k + 1])
    fresh = make_likelihood("bernoulli-ar")
    logits = torch.randn(4, 2, 1, 6, 6)
    assert torch.allclose(fresh(logits).log_prob(x[0]), make_likelihood("bernoulli")(logits).log_prob(x[0]))


def test_the_pattern_lookup_equals_the_per_pixel_correction_with_its_gradients():
    lik = _ar(16)
    lik.context = type(lik.context)(16, 5)  # 12 pixels of context: the lookup path
    for p in lik.context.parameters():
        torch.nn.init.normal_(p)
    x = torch.bernoulli(torch.full((3, 2, 7, 9), 0.4))
    fast = lik.context(x)
    fast_grads = torch.autograd.grad(fast.square().sum(), list(lik.context.parameters()))
    slow = lik.context.per_pixel(x)
    slow_grads = torch.autograd.grad(slow.square().sum(), list(lik.context.parameters()))
    assert torch.allclose(fast, slow, atol=1e-5)
    for a, b in zip(fast_grads, slow_grads):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-3)
    grey = torch.rand(2, 1, 5, 5)  # not binary: computed per pixel
    assert torch.equal(lik.context(grey), lik.context.per_pixel(grey))


def test_autoregressive_bernoulli_draws_follow_its_probabilities():
    """Sequential draws of a 3 x 3 image: each image's frequency in 40,000 draws within 5 standard
    errors of its probability; ``mean`` gives the conditional probabilities of one such draw."""
    lik = _ar(16, seed=3)
    base = torch.randn(1, 1, 3, 3)
    p = lik(base.expand(512, 1, 3, 3)).log_prob(_all_images(3, 3)).exp()
    draws = lik(base.expand(40000, 1, 3, 3)).sample()
    codes = (draws.reshape(-1, 9) * 2 ** torch.arange(8, -1, -1)).sum(1).long()
    freq = torch.bincount(codes, minlength=512) / 40000
    assert ((freq - p).abs() <= 5 * (p * (1 - p) / 40000).sqrt() + 1e-4).all()
    images, probs = lik.context.draw(base, torch.Generator().manual_seed(0))
    assert torch.allclose(lik(base).log_prob(images), (images * probs.log() + (1 - images) * (-probs).log1p()).sum())
    shown = lik.mean(base, torch.Generator().manual_seed(0))  # a seeded figure reproduces
    assert torch.equal(shown, lik.mean(base, torch.Generator().manual_seed(0))) and shown.shape == base.shape


def test_the_default_window_is_causal():
    """The 5 x 5 window of ``bernoulli-ar`` on a 7 x 7 image: flipping any pixel changes no
    correction at or before it in raster order, and changes some after it."""
    lik = make_likelihood("bernoulli-ar")
    for p in lik.parameters():
        torch.nn.init.normal_(p)
    x = torch.bernoulli(torch.full((1, 1, 7, 7), 0.5))
    before = lik.context(x).flatten()
    for k in range(48):
        y = x.clone().flatten()
        y[k] = 1 - y[k]
        after = lik.context(y.reshape(x.shape)).flatten()
        assert torch.equal(after[: k + 1], before[: k + 1]) and not torch.equal(after, before)
