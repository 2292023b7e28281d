"""Objectives: KL schedules (β-VAE, warm-up), the IWAE / Rényi bounds against the exact marginal
likelihood of probabilistic PCA, minibatch scaling, and the CLI flags on real MNIST.

pPCA: z ~ N(0, I_d), x | z ~ N(W z + b, s^2 I_D) has p(x) = N(b, W W^T + s^2 I) exactly; the guide
is its exact posterior widened and shifted, so every bound is strictly below log p(x).
"""
import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_gen import train as train_module
from pyro_gen.cli import main
from pyro_gen.evaluate import log_weights
from pyro_gen.likelihoods import Gaussian
from pyro_gen.objectives import (KLSchedule, RenyiBound, make_elbo, make_objective, training_loss)
from pyro_gen.priors import StandardNormal
from pyro_gen.train import TrainSettings, fit
from pyro_gen.vae import VAE, ModelSpec
from _ppca import LinearDecoder, PosteriorGuide  # noqa: E402

D, d, S = 6, 2, 0.5
TINY = ["--hidden", "16", "--latent-dim", "2", "--batch-size", "64", "--quiet", "--epochs", "1"]


def WideGuide(W, b):
    """The exact pPCA posterior (W has orthogonal columns; tests/_ppca.py), 1.5 times wider and shifted by 0.3."""
    return PosteriorGuide(W, b, S, scale_factor=1.5, shift=0.3)


@pytest.fixture
def ppca():
    g = torch.Generator().manual_seed(3)
    Q, _ = torch.linalg.qr(torch.randn(D, d, generator=g))
    W, b = Q * torch.tensor([2.0, 1.0]), torch.randn(D, generator=g) * 0.3
    marginal = dist.MultivariateNormal(b, W @ W.T + S ** 2 * torch.eye(D))
    x = marginal.sample((40,)).reshape(40, 1, 1, D)
    vae = VAE(guide=WideGuide(W, b), decoder=LinearDecoder(W, b), prior=StandardNormal(d), likelihood=Gaussian(scale=S))
    return vae, x, marginal.log_prob(x.reshape(40, D))


# ---------------------------------------------------------------- KL schedules


def test_schedule_values_at_chosen_steps():
    """β·min(1, (t+1)/W); cyclical repeats the ramp after W steps at β (Fu et al. 2019, R = 0.5)."""
    linear, cyclical = KLSchedule(2.0, 4, "linear"), KLSchedule(2.0, 4, "cyclical")
    steps = [0, 1, 2, 3, 4, 7, 8, 9, 11, 12, 96]
    assert [linear(t) for t in steps] == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]
    assert [cyclical(t) for t in steps] == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0, 0.5, 1.0, 2.0, 2.0, 0.5]
    assert [KLSchedule()(t) for t in (0, 5, 10 ** 6)] == [1.0, 1.0, 1.0]
    assert KLSchedule(0.25, 0, "cyclical")(3) == 0.25


def test_cyclical_schedule_ends_at_beta_when_the_length_is_known():
    """20 steps, W = 4: whole cycles start at 0 and 8; the one at 16 would not end in time, so
    steps 16-19 stay at β instead of ramping again (without total_steps: 0.5, 1, 1.5, 2)."""
    schedule = KLSchedule(2.0, 4, "cyclical", total_steps=20)
    assert [schedule(t) for t in range(20)] == [0.5, 1.0, 1.5, 2.0] + [2.0] * 4 + [0.5, 1.0, 1.5, 2.0] + [2.0] * 8
    assert [KLSchedule(2.0, 4, "cyclical")(t) for t in (16, 17)] == [0.5, 1.0]
    assert [KLSchedule(2.0, 4, "cyclical", total_steps=6)(t) for t in range(6)] == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]


@pytest.mark.parametrize("kw, message", [(dict(beta=0.0), "beta"), (dict(beta=float("nan")), "beta"),
                                         (dict(warmup_steps=-1), "warm-up"), (dict(kind="cosine"), "cosine")])
def test_schedule_rejects_bad_values(kw, message):
    with pytest.raises(ValueError, match=message):
        KLSchedule(**kw)


def _spec():
    return ModelSpec((1, 28, 28), latent_dim=2, hidden=(16,))


def test_beta_one_without_warmup_is_exactly_the_plain_elbo(mnist):
    """β = 1 applies no scale at all: the loss equals Trace_ELBO's, bit for bit; and a
    fit with β = 1 and no warm-up reports train_elbo == train_objective at kl_scale 1."""
    torch.manual_seed(0)
    vae = _spec().build()
    x = torch.as_tensor(mnist.train_x[:32]).bernoulli()
    pyro.set_rng_seed(5)
    ours = training_loss(make_elbo("trace"), vae, x, num_data=32, beta=KLSchedule(1.0, 0)(17))
    pyro.set_rng_seed(5)
    plain = pyro.infer.Trace_ELBO().differentiable_loss(vae.model, vae.guide, x) / 32
    assert torch.equal(ours, plain)

    result = fit(vae, mnist.train_x[:128], TrainSettings(epochs=2, batch_size=64, seed=1), progress=False)
    assert all(r["kl_scale"] == 1.0 and r["train_elbo"] == r["train_objective"] for r in result.history)


def test_fit_sets_the_schedule_every_step_and_leaves_the_model_alone(mnist, monkeypatch):
    """4 steps per epoch, β = 2, warm-up 1 epoch: the model sees 0.5, 1, 1.5, 2, 2, ... ; the
    rows record the last value of each epoch and the plain ELBO next to the objective."""
    seen = []
    real = train_module.training_loss

    def spy(elbo, vae, x, *args, **kwargs):
        seen.append(kwargs["beta"])
        return real(elbo, vae, x, *args, **kwargs)

    monkeypatch.setattr(train_module, "training_loss", spy)
    torch.manual_seed(0)
    vae = _spec().build()
    result = fit(vae, mnist.train_x[:256], TrainSettings(epochs=2, batch_size=64, seed=1, beta=2.0, warmup_epochs=1),
                 progress=False)
    assert seen == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0, 2.0, 2.0]
    assert [r["kl_scale"] for r in result.history] == [2.0, 2.0]
    assert not hasattr(vae, "kl_scale")  # β reaches the pair through an effect handler, not an attribute
    # β = 2 penalizes the KL twice: the objective is below the ELBO measured at the epoch's end
    last = result.history[-1]
    assert last["train_objective"] < last["train_elbo"]


# ---------------------------------------------------------------- IWAE and Rényi bounds


def test_iwae_bound_increases_with_k_and_stays_below_log_px(ppca):
    """E[L_K] rises with K from the ELBO towards the exact log p(x) (Burda et al. 2015, Thm 1).
    Each bound is measured as L_K(x) - log p(x) over 40 points x 100 repeats; every asserted gap
    must exceed 4 standard errors of the Monte Carlo averages."""
    vae, x, exact = ppca
    xs, exact_rep = x.repeat(100, 1, 1, 1), exact.repeat(100)
    gap, se = {}, {}
    for k in (1, 5, 50):
        pyro.set_rng_seed(k)
        g = RenyiBound(0.0, k).bound(vae.model, vae.guide, xs) - exact_rep
        gap[k], se[k] = float(g.mean()), float(g.std() / math.sqrt(len(g)))
    pyro.set_rng_seed(0)
    e = log_weights(vae, x, 1000) - exact
    elbo_gap, elbo_se = float(e.mean()), float(e.std() / math.sqrt(e.numel()))
    assert abs(gap[1] - elbo_gap) < 4 * math.hypot(se[1], elbo_se)  # K = 1 is the ELBO
    assert gap[5] - gap[1] > 4 * math.hypot(se[1], se[5]) and gap[5] - gap[1] > 0.5
    assert gap[50] - gap[5] > 4 * math.hypot(se[5], se[50])
    assert gap[50] < -4 * se[50]  # still a lower bound at K = 50 (about 0.02 nats below)


def test_renyi_bound_is_monotone_in_alpha_for_the_same_draws(ppca):
    """For the same weights, (1-α)^-1 log mean w^(1-α) decreases in α (power-mean inequality), from
    the IWAE bound at α = 0 to the average log-weight (the ELBO estimate) as α -> 1."""
    vae, x, _ = ppca
    bounds = []
    for alpha in (0.0, 0.5, 0.9):
        pyro.set_rng_seed(11)
        bounds.append(RenyiBound(alpha, 10).bound(vae.model, vae.guide, x))
    pyro.set_rng_seed(11)
    mean_log_w = log_weights(vae, x, 10).mean(0)
    assert (bounds[0] > bounds[1]).all() and (bounds[1] > bounds[2]).all() and (bounds[2] > mean_log_w).all()


def test_iwae_log_weights_are_evaluates_and_pyros_loss_agrees(ppca):
    """Same seed, same draws: the wrapper's log-weights equal evaluate.log_weights and its loss
    equals pyro.infer.RenyiELBO's on an unscaled model."""
    vae, x, _ = ppca
    iwae = make_objective("iwae:7")
    pyro.set_rng_seed(1)
    ours = iwae.log_weights(vae.model, vae.guide, x)
    pyro.set_rng_seed(1)
    assert torch.allclose(ours, log_weights(vae, x, 7), atol=1e-5)
    pyro.set_rng_seed(2)
    mine = iwae.loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(2)
    pyros = pyro.infer.RenyiELBO(alpha=0, num_particles=7, vectorize_particles=True,
                                 max_plate_nesting=1).loss(vae.model, vae.guide, x)
    assert mine == pytest.approx(pyros, rel=1e-6)


def test_iwae_minibatch_loss_is_the_per_datum_bound(ppca):
    """With the data plate scaled by N/B, training_loss / datum must be the mean per-datum IWAE
    bound of the batch. Pyro's RenyiELBO applied to the scaled model is not: it raises each
    weight to the power N/B inside the log-mean-exp (here off by more than 0.5 nats/datum)."""
    vae, x, _ = ppca
    iwae = make_objective("iwae:7")
    pyro.set_rng_seed(4)
    loss = training_loss(iwae, vae, x, num_data=1000)
    pyro.set_rng_seed(4)
    lw = log_weights(vae, x, 7)
    per_datum = torch.logsumexp(lw, 0) - math.log(7)
    assert float(loss) == pytest.approx(-float(per_datum.mean()), abs=1e-4)
    pyro.set_rng_seed(4)
    from pyro_gen.handlers import scale_data
    naive = pyro.infer.RenyiELBO(alpha=0, num_particles=7, vectorize_particles=True,
                                 max_plate_nesting=1).loss(scale_data(1000 / len(x))(vae.model),
                                                           scale_data(1000 / len(x))(vae.guide), x) / 1000
    assert abs(naive - float(loss)) > 0.5


def test_iwae_gradient_matches_pyros_surrogate(ppca):
    """The directly differentiated bound has the gradient of RenyiELBO.loss_and_grads (its
    normalized-weight surrogate) for reparameterized draws; checked on a shift of the guide's mean."""
    vae, x, _ = ppca
    guide_forward = vae.guide_net.forward

    def shifted(xb):
        q = guide_forward(xb).base_dist
        return dist.Normal(q.loc + pyro.param("shift", torch.zeros(d)), q.scale).to_event(1)

    vae.guide_net.forward = shifted
    pyro.set_rng_seed(9)
    make_objective("iwae:6").differentiable_loss(vae.model, vae.guide, x).backward()
    shift = pyro.param("shift").unconstrained()
    ours, shift.grad = shift.grad.clone(), None
    pyro.set_rng_seed(9)
    pyro.infer.RenyiELBO(alpha=0, num_particles=6, vectorize_particles=True,
                         max_plate_nesting=1).loss_and_grads(vae.model, vae.guide, x)
    assert torch.allclose(ours, shift.grad, rtol=1e-4, atol=1e-4) and ours.abs().sum() > 1


@pytest.mark.parametrize("spec, alpha, k", [("iwae", 0.0, 5), ("iwae:50", 0.0, 50), ("renyi", 0.5, 5),
                                            ("renyi:0.2", 0.2, 5), ("renyi:-1:3", -1.0, 3)])
def test_objective_table(spec, alpha, k):
    objective = make_objective(spec)
    assert (objective.alpha, objective.num_particles) == (alpha, k)
    with pytest.raises(ValueError, match="unknown ELBO"):  # one way to build each: objectives from make_objective
        make_elbo(spec)


@pytest.mark.parametrize("spec, kw, message", [
    ("iwae:0", {}, "positive integer"), ("renyi:1:5", {}, "other than 1"), ("renyi:x", {}, "expected a number"),
    ("iwea:5", {}, "unknown objective"), ("iwae:5", {"elbo": "enum"}, "enumerate"),
    ("iwae:5", {"num_particles": 3}, "iwae:K")])
def test_objective_errors(spec, kw, message):
    with pytest.raises(ValueError, match=message):
        make_objective(spec, **kw)


# ---------------------------------------------------------------- CLI


@pytest.mark.parametrize("flags", [["--objective", "iwae:3", "--beta", "2", "--warmup-epochs", "1"],
                                   ["--objective", "renyi:0.5:2", "--kl-schedule", "cyclical", "--warmup-epochs", "1"]])
def test_cli_trains_and_evaluates_each_objective(flags, tmp_path, small_npz, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(small_npz), "--out", str(out), *TINY, *flags]) == 0
    config = json.loads((out / "config.json").read_text())["train"]
    assert config["objective"] == flags[1] and config["warmup_epochs"] == 1
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert math.isfinite(row["train_objective"]) and math.isfinite(row["val_elbo"]) and row["kl_scale"] > 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--k", "5", "--draws", "2", "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["test_nll"] <= -result["test_elbo"] + 0.5  # the IS bound is at least the ELBO, up to MC error


@pytest.mark.parametrize("flags, message", [
    (["--objective", "iwae:0"], "objective 'iwae:0'"), (["--objective", "renyi:1"], "other than 1"),
    (["--objective", "bogus"], "unknown objective"), (["--objective", "iwae:5", "--elbo", "enum"], "enumerate")])
def test_cli_bad_objective_exits_2_with_one_line(flags, message, tmp_path, small_npz, capsys):
    assert main(["train", "--data", str(small_npz), "--out", str(tmp_path / "r"), *TINY, *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("flags", [["--beta", "0"], ["--warmup-epochs", "-1"], ["--kl-schedule", "cosine"]])
def test_cli_bad_schedule_flags_exit_2(flags):
    with pytest.raises(SystemExit) as info:
        main(["train", *flags])
    assert info.value.code == 2


# ---------------------------------------------------------------- free bits


def _kl_by_hand(q) -> torch.Tensor:
    """KL(N(m, s^2) || N(0, 1)) per datum and dimension, written out."""
    m, s = q.base_dist.loc, q.base_dist.scale
    return -torch.log(s) + (s ** 2 + m ** 2) / 2 - 0.5


@pytest.mark.parametrize("lam", [0.0, 0.3, 2.0])
def test_free_bits_adds_the_clamped_kl_to_the_loss(ppca, lam):
    """loss(λ) - loss(0) = Σ_j max(0, λ - mean_b KL_bj) per datum (closed-form KL, same draws),
    and the loss with λ is rec + Σ_j max(λ, KL_j)."""
    vae, x, _ = ppca
    elbo = make_elbo("meanfield")
    torch.manual_seed(1)
    plain = training_loss(elbo, vae, x, num_data=400)
    torch.manual_seed(1)
    clamped = training_loss(elbo, vae, x, num_data=400, free_bits=lam)
    kl = _kl_by_hand(vae.guide_dist(x)).mean(0)
    expected = torch.relu(lam - kl).sum()
    assert abs(float(clamped - plain) - float(expected)) < 1e-5
    assert (expected > 0) == (lam > float(kl.min()))  # 0.3 clamps some dimensions of this posterior, 2.0 all


def test_free_bits_stop_the_kl_gradient_of_dimensions_below_lambda(ppca):
    """With λ above every dimension's KL, the loss's gradient is the reconstruction term's alone."""
    vae, x, _ = ppca
    W = vae.decoder.W = nn.Parameter(vae.decoder.W.clone())
    loc_shift = vae.guide_net.b = nn.Parameter(vae.guide_net.b.clone())
    elbo = make_elbo("meanfield")
    torch.manual_seed(2)
    rec_only = training_loss(elbo, vae, x, num_data=40) - _kl_by_hand(vae.guide_dist(x)).sum(-1).mean()
    g_rec = torch.autograd.grad(rec_only, [W, loc_shift])
    torch.manual_seed(2)
    g_fb = torch.autograd.grad(training_loss(elbo, vae, x, num_data=40, free_bits=50.0), [W, loc_shift])
    for a, b in zip(g_rec, g_fb):
        assert torch.allclose(a, b, atol=1e-5)
    assert float(g_rec[1].abs().max()) > 1e-3  # the encoder does get a gradient


def test_free_bits_monte_carlo_kl_for_a_studentt_prior():
    """No closed form Normal || StudentT: the per-dimension KL is log q(z_j) - log p(z_j) at the draw."""
    from pyro_gen.objectives import kl_per_dimension
    q = dist.Normal(torch.zeros(3, 2), torch.ones(3, 2)).to_event(1)
    p = dist.StudentT(4.0, torch.zeros(2), torch.ones(2)).to_event(1)
    z = torch.randn(3, 2)
    expected = dist.Normal(0.0, 1.0).log_prob(z) - dist.StudentT(4.0, 0.0, 1.0).log_prob(z)
    assert torch.allclose(kl_per_dimension(q, p, z), expected)
    with pytest.raises(ValueError, match="factorize"):
        kl_per_dimension(dist.MultivariateNormal(torch.zeros(3, 2), torch.eye(2)), p, z)


def test_fit_with_free_bits_reports_the_plain_elbo(mnist):
    vae = _spec().build()
    result = fit(vae, mnist.train_x[:128], TrainSettings(epochs=1, batch_size=64, free_bits=0.5), progress=False)
    row = result.history[0]
    assert row["train_elbo"] != row["train_objective"]
    assert row["train_objective"] < row["train_elbo"]  # the clamped KL only adds to the loss


@pytest.mark.parametrize("kw, message", [(dict(free_bits=-1.0), "non-negative"),
                                         (dict(free_bits=0.5, objective="iwae:5"), "ELBO objective"),
                                         (dict(free_bits=0.5, num_particles=2), "one particle")])
def test_free_bits_setting_errors(kw, message):
    with pytest.raises(ValueError, match=message):
        TrainSettings(**kw)


def test_cli_free_bits(tmp_path, small_npz, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(small_npz), "--out", str(out), *TINY, "--free-bits", "0.25"]) == 0
    assert json.loads((out / "config.json").read_text())["train"]["free_bits"] == 0.25
    capsys.readouterr()
    assert main(["train", "--data", str(small_npz), "--out", str(tmp_path / "r"), *TINY, "--free-bits", "0.25",
                 "--prior", "mog:3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "factorize" in err
    assert not (tmp_path / "r").exists()
