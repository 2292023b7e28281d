"""The guide contract, written once and run on every guide family (MLP and conv encoders):
shapes, reparameterized gradients, densities that integrate to one, sample moments, log_prob
on the guide's own samples, the IAF log-determinant against the autograd Jacobian.
(Every guide is also trained and evaluated through the CLI in tests/test_priors.py.)
"""
import math

import pytest
import torch

from pyro_gen.guides import GUIDES, IAF, FullRankNormal, make_guide
from pyro_gen.nets import MLPEncoder, make_networks
from pyro_gen.vae import ModelSpec

IMAGE = (1, 6, 5)
GUIDE_SPECS = ["diagonal", "fullrank", "iaf:2", "delta"]
DENSITY_SPECS = [s for s in GUIDE_SPECS if s != "delta"]


def build_guide(spec: str, latent_dim: int = 3, net: str = "mlp"):
    torch.manual_seed(6)
    enc, _ = make_networks(net, IMAGE, latent_dim, hidden=(16,))
    return make_guide(spec, enc, latent_dim)


def test_every_guide_family_is_tested():
    assert {s.split(":")[0] for s in GUIDE_SPECS} == set(GUIDES)


@pytest.mark.parametrize("spec", GUIDE_SPECS)
@pytest.mark.parametrize("net", ["mlp", "conv"])
def test_contract_and_reparameterized_gradients(spec, net):
    """Batch shape (B,), event shape (D,), reparameterized; gradients of a function of the
    sample and of its log density reach every parameter with nonzero values."""
    guide = build_guide(spec, net=net)
    q = guide(torch.rand(4, *IMAGE))
    assert q.batch_shape == (4,) and q.event_shape == (3,) and q.has_rsample
    z = q.rsample()
    (z.pow(2).sum() + q.log_prob(z).sum()).backward()
    for name, p in guide.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("spec", DENSITY_SPECS)
def test_log_prob_broadcasts_and_is_exact_on_own_samples(spec):
    """log q(z|x) for z of shape (S, B, D) equals the value per draw; on the guide's own samples
    (where Pyro uses the cached inverse of a flow) it equals the value at a copy of them (where
    the flow is inverted afresh), within 1e-4."""
    q = build_guide(spec)(torch.rand(4, *IMAGE))
    with torch.no_grad():
        z = q.sample((5,))
        own = q.log_prob(z)
        fresh = q.log_prob(z.clone())
        per_draw = torch.stack([q.log_prob(z[s].clone()) for s in range(5)])
    assert own.shape == (5, 4)
    assert torch.allclose(own, fresh, atol=1e-4)
    assert torch.allclose(per_draw, fresh, atol=1e-4)


def _grid():
    g = torch.linspace(-8, 8, 257, dtype=torch.float64)
    return g, torch.stack(torch.meshgrid(g, g, indexing="ij"), -1)


@pytest.mark.parametrize("spec", DENSITY_SPECS)
def test_density_integrates_to_one_and_matches_sample_moments(spec):
    """For one image, q(z|x) on [-8, 8]^2 (step 1/16) integrates to 1 within 2e-3, and the mean
    and second moments of 20,000 draws agree with the density's within 5 standard errors."""
    q = build_guide(spec, latent_dim=2)(torch.rand(1, *IMAGE))
    g, zz = _grid()
    with torch.no_grad():
        dens = torch.cat([q.log_prob(zz[i:i + 100].unsqueeze(-2).float()).double().exp()[..., 0]
                          for i in range(0, len(g), 100)])
        s = q.sample((20000,))[:, 0].double()

    def integrate(values):
        return torch.trapezoid(torch.trapezoid(values, g, dim=0), g, dim=0)

    assert integrate(dens).item() == pytest.approx(1.0, abs=2e-3)
    mean = torch.stack([integrate(zz[..., i] * dens) for i in range(2)])
    second = torch.stack([torch.stack([integrate(zz[..., i] * zz[..., j] * dens) for j in range(2)]) for i in range(2)])
    n = len(s)
    assert ((s.mean(0) - mean).abs() <= 5 * s.std(0) / math.sqrt(n)).all()
    prods = s[:, :, None] * s[:, None, :]
    assert ((prods.mean(0) - second).abs() <= 5 * prods.std(0) / math.sqrt(n)).all()


def test_fullrank_factor_is_a_valid_cholesky_factor_with_correlations():
    q = build_guide("fullrank", latent_dim=4)(torch.rand(3, *IMAGE))
    tril = q.scale_tril
    assert torch.equal(tril, tril.tril()) and (tril.diagonal(dim1=-2, dim2=-1) > 0).all()
    assert (tril.tril(-1).abs() > 0).any(), "a full-rank guide must be able to correlate coordinates"
    assert isinstance(build_guide("fullrank"), FullRankNormal)


def test_iaf_log_density_matches_autograd_jacobian():
    """log q(z|x) = log N(z_0; mu, sigma) - log|det dz/dz_0| with the Jacobian of the flow from
    autograd, for 5 base points of one image (3 dims, float64, 1e-8)."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # Pyro's inverse of an autoregressive layer starts from default-dtype zeros
    try:
        torch.manual_seed(7)
        guide = IAF(MLPEncoder(IMAGE, (16,)), 3, num_layers=3)
        with torch.no_grad():
            for p in guide.flows.parameters():
                p.add_(0.1 * torch.randn_like(p))
        q = guide(torch.rand(1, *IMAGE))

        def flow(z0):
            for t in q.transforms:
                z0 = t(z0)
            return z0

        for z0 in q.base_dist.sample((5,)):
            jac = torch.autograd.functional.jacobian(flow, z0)[0, :, 0, :]
            expected = q.base_dist.log_prob(z0) - torch.linalg.slogdet(jac).logabsdet
            with torch.no_grad():
                z = flow(z0)
                assert q.log_prob(z.clone()).item() == pytest.approx(expected.item(), abs=1e-8)
    finally:
        torch.set_default_dtype(default)


def test_iaf_flow_changes_the_base_distribution():
    """The flow steps are not the identity: their removal changes log q by more than 1e-3."""
    guide = build_guide("iaf:2")
    q = guide(torch.rand(2, *IMAGE))
    with torch.no_grad():
        z = q.sample()
        assert (q.log_prob(z) - q.base_dist.log_prob(z)).abs().max() > 1e-3


def test_encode_averages_samples_when_there_is_no_closed_form_mean():
    """VAE.encode of an IAF guide is the Monte Carlo mean of the guide (4 standard errors)."""
    vae = ModelSpec(IMAGE, latent_dim=3, hidden=(16,), guide="iaf:2").build()
    x = torch.rand(2, *IMAGE)
    torch.manual_seed(8)
    code = vae.encode(x, num_samples=4000)
    with torch.no_grad():
        s = vae.guide_net(x).sample((4000,))
    assert code.shape == (2, 3)
    assert ((code - s.mean(0)).abs() <= 4 * math.sqrt(2) * s.std(0) / math.sqrt(4000)).all()


@pytest.mark.parametrize("spec,message", [("gaussian", "unknown guide 'gaussian'"), ("iaf:0", "positive integer"),
                                          ("fullrank:2", "takes no arguments"), ("delta:x", "takes no arguments")])
def test_bad_guide_specs_raise_clear_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        build_guide(spec)
