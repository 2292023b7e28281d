"""The prior contract, written once and run on every prior; KL estimators of every prior x guide
pair; every prior (and every guide) trained, evaluated and sampled through the CLI.

Densities are checked by numerical integration on a 2-d grid, sample moments against the
moments of that density, log-determinants of flows against the autograd Jacobian.
"""
import functools
import json
import math
from pathlib import Path

import numpy as np
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import kl_divergence

from pyro_gen.cli import main
from pyro_gen.guides import make_guide
from pyro_gen.nets import MLPEncoder
from pyro_gen.objectives import make_elbo
from pyro_gen.priors import PRIORS, FlowPrior, StudentT, check_prior, make_prior
from pyro_gen.vae import ModelSpec

EXAMPLES = str(Path(__file__).resolve().parents[1] / "examples")
IMAGE = (1, 6, 5)
#: One spec per prior family and variant; the user's prior is the one of examples/custom_prior.py.
PRIOR_SPECS = ["standard", "learned", "mog:3", "vamp:4", "flow:2", "flow:2:spline", "studentt", "studentt:6",
               "module:custom_prior:LaplacePrior"]
GUIDE_SPECS = ["diagonal", "fullrank", "iaf:2", "delta"]


@pytest.fixture(autouse=True)
def _examples_importable(monkeypatch):
    monkeypatch.syspath_prepend(EXAMPLES)


def build_prior(spec: str, latent_dim: int = 2, perturb: float = 0.1):
    """The prior of ``spec`` (VampPrior: on a small diagonal guide) with its learnable parameters
    moved away from their starting values, so that no check passes only at the initialization."""
    torch.manual_seed(1)
    guide = make_guide("diagonal", MLPEncoder(IMAGE, (8,)), latent_dim)
    prior = make_prior(spec, latent_dim, guide=guide)
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(perturb * torch.randn_like(p))
    return prior


def _grid_axis() -> torch.Tensor:
    """[-12, 12], with step 0.04 on [-4, 4] (where the spline flow bends; it is the identity
    outside [-3, 3]) and 0.2 outside."""
    return torch.cat([torch.linspace(-12, -4, 41)[:-1], torch.linspace(-4, 4, 201), torch.linspace(4, 12, 41)[1:]]
                     ).double()


@functools.lru_cache(maxsize=None)
def grid_density(spec: str):
    """The density of ``build_prior(spec)`` on the 2-d grid, evaluated in chunks of rows, and
    20,000 of its samples (cached: the normalization and moment tests share them)."""
    d = build_prior(spec)()
    g = _grid_axis()
    zz = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1)
    with torch.no_grad():
        dens = torch.cat([d.log_prob(zz[i:i + 100].float()).double().exp() for i in range(0, len(g), 100)])
        samples = d.sample((20000,)).double()
    return g, zz, dens, samples


def integrate(g, values):
    return torch.trapezoid(torch.trapezoid(values, g, dim=0), g, dim=0)


def test_every_prior_family_is_tested():
    assert {s.split(":")[0] for s in PRIOR_SPECS} == set(PRIORS)


@pytest.mark.parametrize("spec", PRIOR_SPECS)
def test_contract_shapes_and_broadcasting(spec):
    """Event shape (D,), batch shape (); log_prob over any batch shape equals the row-by-row value,
    and the plate's expansion to a batch leaves it unchanged (1e-5)."""
    prior = build_prior(spec, latent_dim=3)
    check_prior(prior, 3)
    d = prior()
    z = torch.randn(3, 4, 3) * 1.5
    with torch.no_grad():
        batched = d.log_prob(z)
        rows = torch.stack([d.log_prob(row) for row in z.reshape(12, 3)]).reshape(3, 4)
        expanded = d.expand((4,)).log_prob(z)
    assert batched.shape == (3, 4)
    assert torch.allclose(batched, rows, atol=1e-5)
    assert torch.allclose(expanded, batched, atol=1e-5)


@pytest.mark.parametrize("spec", PRIOR_SPECS)
def test_density_integrates_to_one(spec):
    """Trapezoid rule on [-12, 12]^2: the integral of p(z) is 1 within 2e-3 (the heavy-tailed
    priors lose < 3e-4 outside the box; the quadrature error is < 1e-4 here)."""
    g, _, dens, _ = grid_density(spec)
    assert integrate(g, dens).item() == pytest.approx(1.0, abs=2e-3)


@pytest.mark.parametrize("spec", PRIOR_SPECS)
def test_sample_moments_agree_with_the_density(spec):
    """Means and second moments of 20,000 samples agree with those of the density (integrated on
    the grid) within 5 standard errors."""
    g, zz, dens, s = grid_density(spec)
    mean = torch.stack([integrate(g, zz[..., i] * dens) for i in range(2)])
    second = torch.stack([torch.stack([integrate(g, zz[..., i] * zz[..., j] * dens) for j in range(2)])
                          for i in range(2)])
    n = len(s)
    assert s.shape == (n, 2)
    assert ((s.mean(0) - mean).abs() <= 5 * s.std(0) / math.sqrt(n)).all()
    prods = s[:, :, None] * s[:, None, :]
    assert ((prods.mean(0) - second).abs() <= 5 * prods.std(0) / math.sqrt(n)).all()


@pytest.mark.parametrize("spec", [s for s in PRIOR_SPECS if s not in ("standard", "studentt:6")])
def test_gradients_reach_every_learnable_parameter(spec):
    """log p(z) (and, where the prior is reparameterized, its own samples) is differentiable in
    every parameter, VampPrior pseudo-inputs and the shared encoder included."""
    prior = build_prior(spec)
    params = dict(prior.named_parameters())
    assert params, "a learnable prior must own parameters"
    d = prior()
    loss = d.log_prob(torch.randn(8, 2)).sum()
    if d.has_rsample:
        loss = loss + d.rsample((8,)).pow(2).sum()
    loss.backward()
    for name, p in params.items():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    if spec.startswith("vamp"):
        assert "pseudo_inputs" in params


@pytest.mark.parametrize("kind", ["affine", "spline"])
def test_flow_prior_log_det_matches_autograd_jacobian(kind):
    """log p(z) = log N(f(z)) + log|det df/dz| with the Jacobian of f from autograd (3 dims, in
    float64, 1e-8); and sampling inverts f (1e-8)."""
    torch.manual_seed(2)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # Pyro's inverse of an autoregressive layer starts from default-dtype zeros
    try:
        _check_flow_log_det(FlowPrior(3, num_layers=2, kind=kind))
    finally:
        torch.set_default_dtype(default)


def _check_flow_log_det(prior):
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(0.1 * torch.randn_like(p))
    d = prior()

    def to_base(z):
        for t in reversed(d.transforms):
            z = t.inv(z)
        return z

    for z in torch.randn(3, 3, dtype=torch.float64) * 1.5:
        jac = torch.autograd.functional.jacobian(to_base, z)
        expected = d.base_dist.log_prob(to_base(z)) + torch.linalg.slogdet(jac).logabsdet
        assert d.log_prob(z.clone()).item() == pytest.approx(expected.item(), abs=1e-8)
    with torch.no_grad():
        eps = d.base_dist.sample((4,))
        z = eps
        for t in d.transforms:
            z = t(z)
        assert torch.allclose(to_base(z.clone()), eps, atol=1e-8)


def test_spec_strings_set_the_arguments():
    assert make_prior("mog:7", 2).logits.shape == (7,)
    assert make_prior("mog", 2).logits.shape == (10,)
    flow = make_prior("flow:3:spline", 2)
    assert len(flow.flows) == 3 and type(flow.flows[0]).__name__ == "SplineAutoregressive"
    assert type(make_prior("flow", 2).flows[0]).__name__ == "AffineAutoregressive"
    fixed = make_prior("studentt:4", 2)
    assert isinstance(fixed, StudentT) and not list(fixed.parameters()) and fixed.df.tolist() == [4.0, 4.0]
    guide = make_guide("diagonal", MLPEncoder(IMAGE, (8,)), 2)
    assert make_prior("vamp:6", 2, guide=guide).pseudo_inputs.shape == (6,) + IMAGE


@pytest.mark.parametrize("spec,message", [
    ("gauss", "unknown prior 'gauss'"), ("mog:0", "positive integer"), ("mog:x", "positive integer"),
    ("standard:3", "takes no arguments"), ("flow:2:foo", "unknown flow layer 'foo'"), ("studentt:-1", "positive"),
    ("vamp:3", "needs the guide"), ("module:custom_prior", "expected module:pkg.mod:Factory"),
    ("module:no_such_module_xyz:F", "cannot import 'no_such_module_xyz'"),
    ("module:custom_prior:Missing", "no callable 'Missing'"),
])
def test_bad_spec_strings_raise_clear_errors(spec, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        make_prior(spec, 2)


def test_uniform_mixture_of_diagonal_normals_is_the_componentwise_sum():
    """The matrix path of UniformMixture.log_prob (diagonal Gaussian components, also when a plate
    has expanded the mixture to a batch shape) equals log (1/K) sum_k prod_d N(z_d; mu_kd, s_kd),
    written out in float64 (rel 1e-5), and so do its gradients (atol 1e-4)."""
    from pyro_gen.priors import UniformMixture
    torch.manual_seed(0)
    k, d = 7, 5
    loc = (2 * torch.randn(k, d)).requires_grad_()
    log_scale = (0.5 * torch.randn(k, d) - 1.5).requires_grad_()
    z = loc.detach()[torch.arange(24) % k].reshape(4, 6, d) + 0.3 * torch.randn(4, 6, d)

    def mixture():
        return UniformMixture(dist.Categorical(logits=torch.zeros(k)),
                              dist.Normal(loc, log_scale.exp()).to_event(1))

    def by_hand():
        comp = dist.Normal(loc.double(), log_scale.double().exp()).log_prob(z.double()[..., None, :]).sum(-1)
        return torch.logsumexp(comp, -1) - math.log(k)

    expected = by_hand()
    grads = torch.autograd.grad(expected.sum(), [loc, log_scale])
    for m in (mixture(), mixture().expand((4, 6)), mixture().expand((3, 4, 6))):
        got = m.log_prob(z)
        assert got.shape == torch.broadcast_shapes(z.shape[:-1], m.batch_shape)
        torch.testing.assert_close(got.double(), expected.expand_as(got), rtol=1e-5, atol=1e-5)
    got = mixture().expand((4, 6)).log_prob(z)
    for g, e in zip(torch.autograd.grad(got.sum(), [loc, log_scale]), grads):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)



def test_an_expanded_uniform_mixture_reads_its_own_components():
    """A plate (and vectorized particles) expand the prior to (particles, batch); the matrix path
    must read the K components themselves, not an index into the expanded tensors, whose backward
    fills a zero tensor of shape (particles, batch, K, D): with 100 pseudo-inputs that made a
    VampPrior IWAE step 1.6 times slower."""
    from pyro_gen.priors import UniformMixture, _shared_diagonal_normals
    loc, scale = torch.randn(7, 5), torch.rand(7, 5) + 0.1
    mix = UniformMixture(dist.Categorical(logits=torch.zeros(7)), dist.Normal(loc, scale).to_event(1))
    for expanded in (mix.expand((4, 6)), mix.expand((4, 6)).expand((3, 4, 6))):
        _, got_loc, got_scale = _shared_diagonal_normals(expanded)
        assert got_loc is loc and got_scale is scale


def test_vamp_prior_refuses_a_point_mass_or_conditional_guide():
    with pytest.raises(ValueError, match="point mass"):
        ModelSpec(IMAGE, latent_dim=2, hidden=(8,), prior="vamp:3", guide="delta").build()
    with pytest.raises(ValueError, match="conditional"):
        ModelSpec(IMAGE, latent_dim=2, hidden=(8,), prior="vamp:3", condition_dim=10).build()


def test_user_priors_that_break_the_contract_are_refused(tmp_path, monkeypatch):
    (tmp_path / "bad_priors.py").write_text(
        "import torch, pyro.distributions as pdist\nfrom torch import nn\n"
        "class Wide(nn.Module):\n    def __init__(self, d): super().__init__(); self.d = d\n"
        "    def forward(self): return pdist.Normal(torch.zeros(self.d), 1.)\n"
        "class Plain(nn.Module):\n    def __init__(self, d): super().__init__(); self.d = d\n"
        "    def forward(self): return torch.distributions.Normal(torch.zeros(self.d), 1.)\n"
        "def NotModule(d): return pdist.Normal(torch.zeros(d), 1.).to_event(1)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name, message in [("Wide", "event_shape \\(2,\\)"), ("Plain", "must return a Pyro distribution"),
                          ("NotModule", "must be a torch.nn.Module")]:
        with pytest.raises(ValueError, match=message):
            make_prior(f"module:bad_priors:{name}", 2)


# ---------------------------------------------------------------------------- KL and the ELBO

#: The pairs with a registered closed-form KL (the Laplace prior of the example gets torch's Normal-Laplace KL).
CLOSED_FORM = ({(p, g) for p in ("standard", "learned") for g in ("diagonal", "fullrank")}
               | {("module:custom_prior:LaplacePrior", "diagonal")})


def _guide_and_prior(prior_spec, guide_spec, latent_dim=3):
    torch.manual_seed(3)
    guide = make_guide(guide_spec, MLPEncoder(IMAGE, (8,)), latent_dim)
    prior = make_prior(prior_spec, latent_dim, guide=guide)
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.bernoulli(torch.rand(4, *IMAGE))
    return guide(x), prior().expand((4,))


@pytest.mark.parametrize("prior_spec,guide_spec", sorted(CLOSED_FORM))
def test_analytic_kl_matches_monte_carlo(prior_spec, guide_spec):
    """Closed-form KL(q || p) per datum against the mean of log q(z) - log p(z), z ~ q, over
    40,000 draws: within 4 standard errors."""
    q, p = _guide_and_prior(prior_spec, guide_spec)
    kl = kl_divergence(q, p)
    n = 40000
    with torch.no_grad():
        z = q.sample((n,))
        log_ratio = q.log_prob(z) - p.log_prob(z)
    assert kl.shape == (4,)
    assert ((log_ratio.mean(0) - kl).abs() <= 4 * log_ratio.std(0) / math.sqrt(n)).all()


def test_fullrank_kl_to_a_diagonal_normal_equals_the_multivariate_normal_kl():
    """The KL registered for (MultivariateNormal, diagonal Normal) equals torch's
    MultivariateNormal-MultivariateNormal KL with the diagonal written as a full covariance (1e-4)."""
    q, p = _guide_and_prior("learned", "fullrank")
    base = p.base_dist
    as_mvn = dist.MultivariateNormal(base.loc, scale_tril=torch.diag_embed(base.scale))
    assert torch.allclose(kl_divergence(q, p), kl_divergence(q, as_mvn), atol=1e-4)


@pytest.mark.parametrize("guide_spec", GUIDE_SPECS)
@pytest.mark.parametrize("prior_spec", PRIOR_SPECS)
def test_meanfield_uses_the_closed_form_or_falls_back_and_analytic_refuses(prior_spec, guide_spec):
    """For every prior x guide: with the same random draws, the meanfield ELBO equals the Monte
    Carlo (trace) ELBO exactly when no closed-form KL exists; the strict analytic ELBO then raises
    an error naming both distributions, and otherwise equals the meanfield ELBO."""
    spec = ModelSpec(IMAGE, latent_dim=2, hidden=(8,), prior=prior_spec, guide=guide_spec)
    if prior_spec.startswith("vamp") and guide_spec == "delta":
        with pytest.raises(ValueError, match="point mass"):
            spec.build()
        return
    torch.manual_seed(4)
    vae = spec.build()
    x = torch.bernoulli(torch.rand(3, *IMAGE))
    losses = {}
    for name in ("trace", "meanfield"):
        torch.manual_seed(5)
        losses[name] = make_elbo(name).loss(vae.model, vae.guide, x)
    closed_form = (prior_spec, guide_spec) in CLOSED_FORM or guide_spec == "delta"  # delta: KL = -log p(z)
    if closed_form:
        torch.manual_seed(5)
        assert make_elbo("analytic").loss(vae.model, vae.guide, x) == pytest.approx(losses["meanfield"], rel=1e-6)
        if guide_spec != "delta":
            assert losses["meanfield"] != pytest.approx(losses["trace"], rel=1e-6)
    else:
        assert losses["meanfield"] == pytest.approx(losses["trace"], rel=1e-5)
        q, p = vae.guide_net(x), vae.prior()
        with pytest.raises(ValueError, match="no(ne)? .*registered") as err:
            make_elbo("analytic").loss(vae.model, vae.guide, x)
        assert type(q).__name__ in str(err.value) and type(p).__name__ in str(err.value)


# ---------------------------------------------------------------------------- through the CLI

TINY = ["--hidden", "16", "--latent-dim", "2", "--epochs", "1", "--quiet"]
#: Every prior (one variant each: the spline flow and the fixed-df Student-t differ from their
#: siblings only inside the distribution, tested above) with the diagonal guide, every guide with
#: the standard prior, and the two pairs with their own code paths (a VampPrior of flow components;
#: a flow prior under a full-rank guide).
CLI_COMBOS = ([(p, "diagonal") for p in PRIOR_SPECS if p not in ("flow:2:spline", "studentt:6")]
              + [("standard", g) for g in GUIDE_SPECS if g != "diagonal"]
              + [("vamp:3", "iaf:2"), ("flow:2", "fullrank")])


@pytest.fixture
def no_figures(monkeypatch):
    """Skip matplotlib's drawing in `train` (2/3 of a tiny run's time; the figures are tested in
    test_cli.py). What the figures show — reconstructions, samples — is still computed."""
    import pyro_gen.plots as plots
    for name in ("plot_history", "plot_images", "plot_reconstructions"):
        monkeypatch.setattr(plots, name, lambda *args, **kwargs: None)


@pytest.mark.parametrize("prior_spec,guide_spec", CLI_COMBOS, ids=[f"{p}+{g}" for p, g in CLI_COMBOS])
def test_every_combination_trains_evaluates_and_samples(prior_spec, guide_spec, small_npz, tmp_path, capsys,
                                                        no_figures):
    """One epoch of `pyro-gen train`, then `evaluate --k 10 --json` and `sample` on the run
    rebuilt from config.json: the rebuilt model reproduces the training run's test ELBO (same
    seed, 1e-3), the importance-sampled bound is at least the ELBO, samples are images."""
    run = tmp_path / "run"
    assert main(["train", "--data", str(small_npz), "--prior", prior_spec, "--guide", guide_spec,
                 "--out", str(run), *TINY]) == 0
    config = json.loads((run / "config.json").read_text())
    assert (config["model"]["prior"], config["model"]["guide"]) == (prior_spec, guide_spec)
    assert config["model_kind"] == ("ae" if guide_spec == "delta" else "vae")
    summary = json.loads((run / "summary.json").read_text())
    capsys.readouterr()
    assert main(["evaluate", str(run), "--k", "10", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["test_elbo"] == pytest.approx(summary["test_elbo"], abs=1e-3)
    if guide_spec == "delta":
        assert result["test_nll"] is None
    else:
        assert math.isfinite(result["test_nll"]) and result["test_nll"] <= -result["test_elbo"] + 0.5
    assert main(["sample", str(run), "-n", "5", "-o", str(tmp_path / "s.npy")]) == 0
    images = np.load(tmp_path / "s.npy")
    assert images.shape == (5, 1, 28, 28) and images.min() >= 0 and images.max() <= 1 and images.std() > 0


@pytest.mark.parametrize("argv,message", [
    (["--model", "ae", "--guide", "iaf:2"], "--model ae is the deterministic autoencoder"),
    (["--model", "vae", "--guide", "delta"], "use --model ae"),
    (["--prior", "mog:0"], "prior 'mog:0'"),
    (["--guide", "iaf:two"], "guide 'iaf:two'"),
    (["--prior", "module:no_such_module_xyz:F"], "cannot import 'no_such_module_xyz'"),
    (["--prior", "mog:3", "--elbo", "analytic"], "Independent(Normal) and the prior's MixtureSameFamily"),
    (["--prior", "vamp:3", "--model", "ae"], "point mass"),
])
def test_bad_prior_and_guide_flags_exit_2_with_one_line(argv, message, small_npz, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(small_npz), "--out", str(run), *TINY, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not run.exists(), "nothing is written for a refused configuration"


def test_analytic_elbo_trains_a_pair_with_a_closed_form(small_npz, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--data", str(small_npz), "--prior", "learned", "--guide", "fullrank",
                 "--elbo", "analytic", "--out", str(run), *TINY]) == 0
    assert json.loads((run / "config.json").read_text())["train"]["elbo"] == "analytic"
