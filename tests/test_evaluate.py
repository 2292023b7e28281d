"""The evaluation estimators against the exact marginal likelihood of probabilistic PCA.

z ~ N(0, I_d), x | z ~ N(W z + b, s^2 I_D) has p(x) = N(b, W W^T + s^2 I) and posterior
N(M^-1 W^T (x - b), s^2 M^-1) with M = W^T W + s^2 I, diagonal when W has orthogonal columns.
"""

import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_gen import evaluate
from pyro_gen.evaluate import elbo_per_datum, importance_log_likelihood, log_weights
from pyro_gen.likelihoods import Gaussian
from pyro_gen.priors import StandardNormal
from pyro_gen.vae import VAE
from _ppca import LinearDecoder, PosteriorGuide as _Posterior  # noqa: E402

D, d, S = 6, 2, 0.5


def PosteriorGuide(W, b, scale_factor=1.0, shift=0.0):
    """The exact pPCA posterior (tests/_ppca.py), optionally mis-scaled / shifted."""
    return _Posterior(W, b, S, scale_factor=scale_factor, shift=shift)


@pytest.fixture
def ppca():
    g = torch.Generator().manual_seed(3)
    Q, _ = torch.linalg.qr(torch.randn(D, d, generator=g))
    W = Q * torch.tensor([2.0, 1.0])
    b = torch.randn(D, generator=g) * 0.3
    marginal = dist.MultivariateNormal(b, W @ W.T + S ** 2 * torch.eye(D))
    x = marginal.sample((50,)).reshape(50, 1, 1, D)
    exact = marginal.log_prob(x.reshape(50, D))

    def make(**kw):
        return VAE(guide=PosteriorGuide(W, b, **kw), decoder=LinearDecoder(W, b),
                   prior=StandardNormal(d), likelihood=Gaussian(scale=S))
    return make, x, exact


def test_exact_posterior_gives_exact_log_likelihood(ppca):
    """With q the exact posterior every importance weight equals p(x): the estimate is exact (1e-4)."""
    make, x, exact = ppca
    vae = make()
    assert torch.allclose(importance_log_likelihood(vae, x, k=7), exact, atol=1e-4)
    assert torch.allclose(elbo_per_datum(vae, x, num_draws=3), exact, atol=1e-4)
    lw = log_weights(vae, x, 5)
    assert lw.shape == (5, 50) and torch.allclose(lw, exact.expand(5, 50), atol=1e-4)


def test_misspecified_guide_bounds_and_convergence(ppca, monkeypatch):
    """A wider, shifted q: ELBO < log p(x); the K=5000 estimate lies between the ELBO and the
    exact value on average, within 0.02 nats; chunking does not change the estimate's law."""
    make, x, exact = ppca
    vae = make(scale_factor=1.5, shift=0.3)
    elbo = elbo_per_datum(vae, x, num_draws=200)
    is_small = importance_log_likelihood(vae, x, k=10)
    monkeypatch.setattr(evaluate, "MAX_DECODED", 997)  # force many uneven chunks
    is_large = importance_log_likelihood(vae, x, k=5000)
    assert (elbo < exact).all()
    assert elbo.mean() < is_small.mean() < is_large.mean() + 1e-3
    # per datum the estimate is noisy (sd ~0.03 here); on average it is within 0.02 nats
    assert (is_large - exact).abs().max() < 0.1
    assert abs((is_large - exact).mean().item()) < 0.02
    # the gap ELBO - log p(x) is -KL(q || posterior), which is closed form for two Normals
    post = make().guide_net(x)
    q = vae.guide_net(x)
    kl = torch.distributions.kl_divergence(q, post)
    # 200 draws per datum: per-datum sd ~0.1, mean over 50 data sd ~0.015
    assert torch.allclose(elbo, exact - kl, atol=0.6)
    assert abs((elbo - (exact - kl)).mean().item()) < 0.06


def test_point_mass_guide_has_no_likelihood(ppca):
    from pyro_gen.guides import Delta
    make, x, _ = ppca
    vae = make()
    flat = nn.Flatten(1)
    flat.out_features = D
    vae.guide_net = Delta(flat, d)
    with pytest.raises(ValueError, match="point mass"):
        importance_log_likelihood(vae, x, k=5)
