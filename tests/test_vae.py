"""The model/guide pair: priors and guides contracts, KL estimators, minibatch scaling."""
import math

import pytest
import pyro.poutine as poutine
import torch

from pyro_gen.nets import make_networks
from pyro_gen.objectives import make_elbo, training_loss
from pyro_gen.vae import ModelSpec

IMAGE = (1, 6, 5)


# The prior and guide contract tests live in test_priors.py and test_guides.py (parametrized
# over every prior and guide spec).


@pytest.mark.parametrize("net,shape", [("mlp", (1, 28, 28)), ("mlp", (3, 9, 13)), ("mlp", (1, 1, 10)),
                                       ("conv", (1, 28, 28)), ("conv", (3, 9, 13)), ("conv", (1, 16, 12))])
def test_networks_any_image_shape(net, shape):
    enc, dec = make_networks(net, shape, 4, hidden=(8,))
    assert enc(torch.rand(2, *shape)).shape == (2, 8)
    assert dec(torch.randn(5, 2, 4)).shape == (5, 2) + shape


def test_analytic_kl_matches_monte_carlo():
    """TraceMeanField (closed-form KL) and Trace (Monte Carlo KL) estimate the same ELBO:
    their mean losses over 4000 particles agree within 4 standard errors."""
    vae = ModelSpec(IMAGE, latent_dim=3, hidden=(16,)).build()
    x = torch.bernoulli(torch.rand(5, *IMAGE))
    losses = {}
    for name in ("trace", "meanfield"):
        elbo = make_elbo(name, num_particles=4000)
        losses[name] = elbo.loss(vae.model, vae.guide, x)
    # standard error of the MC-KL estimate from 4000 single-particle draws
    single = torch.tensor([make_elbo("trace").loss(vae.model, vae.guide, x) for _ in range(400)])
    se = single.std().item() / math.sqrt(4000)
    assert abs(losses["trace"] - losses["meanfield"]) < 4 * se + 1e-3


def test_kl_per_datum_closed_form():
    """The meanfield ELBO's KL equals the closed form 1/2 sum(mu^2 + s^2 - 1 - log s^2) (1e-4)."""
    vae = ModelSpec(IMAGE, latent_dim=3, hidden=(16,)).build()
    x = torch.bernoulli(torch.rand(5, *IMAGE))
    q = vae.guide_net(x).base_dist
    kl = 0.5 * (q.loc ** 2 + q.scale ** 2 - 1 - 2 * q.scale.log()).sum()
    without_x = poutine.block(vae.model, hide=["x"])  # drop the likelihood: the loss is the KL alone
    loss = make_elbo("meanfield").loss(without_x, vae.guide, x)
    assert loss == pytest.approx(kl.item(), rel=1e-4)


def test_minibatch_scaling_is_unbiased_for_full_data():
    """Under the engine's data scale N/B, each minibatch's loss estimates the full-data loss: the
    mean over a partition into minibatches equals the full-batch loss (deterministic guide, exact
    to 1e-5)."""
    from pyro_gen.handlers import scale_data
    vae = ModelSpec(IMAGE, latent_dim=3, hidden=(16,), guide="delta").build()
    x = torch.bernoulli(torch.rand(12, *IMAGE))
    elbo = make_elbo("trace")
    full = elbo.loss(vae.model, vae.guide, x)
    parts = [elbo.loss(scale_data(3.0)(vae.model), scale_data(3.0)(vae.guide), x[i:i + 4]) for i in range(0, 12, 4)]
    assert sum(parts) / 3 == pytest.approx(full, rel=1e-5)
    # and training_loss is the per-datum version of it
    assert training_loss(elbo, vae, x[:4], num_data=12).item() == pytest.approx(parts[0] / 12, rel=1e-5)


def test_the_latent_scale_multiplies_only_the_kl():
    from pyro_gen.handlers import scale_latents
    vae = ModelSpec(IMAGE, latent_dim=3, hidden=(16,), guide="delta").build()
    x = torch.bernoulli(torch.rand(6, *IMAGE))
    elbo = make_elbo("trace")
    tr = poutine.trace(vae.model).get_trace(x)
    base = elbo.loss(vae.model, vae.guide, x)
    scaled = elbo.loss(scale_latents(0.25)(vae.model), scale_latents(0.25)(vae.guide), x)
    kl_part = elbo.loss(poutine.block(vae.model, hide=["x"]), vae.guide, x)  # -log p(z) for a Delta guide
    assert scaled == pytest.approx(base - 0.75 * kl_part, rel=1e-5)
    assert set(tr.nodes) >= {"z", "x", "data"}


def test_sample_reconstruct_encode_shapes_and_ranges():
    vae = ModelSpec(IMAGE, latent_dim=3, hidden=(16,)).build()
    x = torch.bernoulli(torch.rand(4, *IMAGE))
    assert vae.encode(x).shape == (4, 3)
    rec = vae.reconstruct(x)
    assert rec.shape == (4,) + IMAGE and rec.min() >= 0 and rec.max() <= 1
    a = vae.sample(7, generator=torch.Generator().manual_seed(1))
    b = vae.sample(7, generator=torch.Generator().manual_seed(1))
    assert a.shape == (7,) + IMAGE and torch.equal(a, b)


def test_the_engines_combined_scale_equals_the_two_handlers():
    """scale_sites(N/B, beta) -- the one handler the engine applies -- gives the loss of
    scale_latents(beta) around scale_data(N/B), to float precision, on a stochastic guide."""
    import pyro
    from pyro_gen.handlers import scale_data, scale_latents, scale_sites
    vae = ModelSpec(IMAGE, latent_dim=3, hidden=(16,)).build()
    x = torch.bernoulli(torch.rand(6, *IMAGE))
    elbo = make_elbo("trace")
    pyro.set_rng_seed(3)
    one = elbo.loss(scale_sites(3.0, 0.5)(vae.model), scale_sites(3.0, 0.5)(vae.guide), x)
    pyro.set_rng_seed(3)
    two = elbo.loss(scale_latents(0.5)(scale_data(3.0)(vae.model)), scale_latents(0.5)(scale_data(3.0)(vae.guide)), x)
    assert one == pytest.approx(two, rel=1e-6)
    pyro.set_rng_seed(3)
    plain = elbo.loss(vae.model, vae.guide, x)
    assert abs(one - plain) > 1.0  # the scales do something
