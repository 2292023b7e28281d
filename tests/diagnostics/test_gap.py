"""The amortization and approximation gaps (diagnostics.gap) against pPCA's closed forms
(tests/_ppca.py): for the built-in diagonal guide (its free per-datum parameters), and for any
model/guide pair (a copy of its own guide refined on each datum), with pPCA written as a plain
Pyro pair.

W has non-orthogonal columns, so the exact posterior is a correlated Normal and a diagonal guide
cannot reach it: the approximation gap is KL(q* || posterior) with q* the best diagonal Normal
(exact mean, variances 1 / diag of the precision), the same for every datum; the amortization gap
is KL(q_phi || posterior) - KL(q* || posterior), both in closed form for the linear guide."""
import math

import pyro.distributions as dist
import pyro
import pytest
import torch
from torch import nn

from _ppca import PPCAPair, best_diagonal_kl, diagonal_kl_to_posterior, exact_log_px, marginal, posterior
from _ppca import orthogonal_ppca as ppca
from pyro_gen.diagnostics.gap import amortization_gap, guide_only_parameters, pair_amortization_gap

D, L, S = 5, 2, 0.5


# ---------------------------------------------------------------- amortization gap

def test_amortization_gap_exact_encoder_is_zero():
    """Exact encoder: both gaps are 0 within 0.05 nats, log p(x) is exact within 0.02."""
    vae, x, log_px = ppca(n=10)
    gap = amortization_gap(vae, x, steps=100, lr=0.03, eval_samples=1000, log_px_samples=1000).to_dict()
    assert abs(gap["amortization_gap"]) < 0.05 and abs(gap["approximation_gap"]) < 0.05
    assert gap["amortization_gap"] > -0.05
    assert gap["log_px"] == pytest.approx(float(log_px.mean()), abs=0.02)


def test_amortization_gap_recovers_closed_form_kl():
    """Encoder off by one posterior sd and scale x0.5: the family contains the posterior, so the
    approximation gap is ~0 (0.05) and the amortization gap is KL(q || posterior) in closed form
    (2 x (log 2 + 1.25/2 - 1/2) = 1.64 nats; tolerance 0.08)."""
    vae, x, log_px = ppca(scale_factor=0.5, shift_sd=1.0, n=10)
    gap = amortization_gap(vae, x, steps=100, lr=0.03, eval_samples=1000, log_px_samples=1000).to_dict()
    expected = 2 * (math.log(2) + 1.25 / 2 - 0.5)
    assert gap["amortization_gap"] == pytest.approx(expected, abs=0.08)
    assert abs(gap["approximation_gap"]) < 0.05
    assert gap["elbo_amortized"] == pytest.approx(float(log_px.mean()) - expected, abs=0.05)


# ---------------------------------------------------------------- any pair: its own guide refined


@pytest.fixture
def problem():
    g = torch.Generator().manual_seed(4)
    W = torch.randn(D, 1, generator=g) * torch.tensor([1.0, 0.5]) + 0.6 * torch.randn(D, L, generator=g)
    b = 0.3 * torch.randn(D, generator=g)
    x = marginal(W, b, S).sample((6,)).float()
    # the guide: the exact posterior mean map, perturbed, shifted by 0.2, twice as wide as the best
    # diagonal Normal (a proposal wide enough for importance sampling of a correlated posterior)
    mean_map = posterior(W, b, S, torch.eye(D) + b)[0].float()  # rows: the mean map applied to e_i
    A = mean_map + 0.05 * torch.randn(D, L, generator=g)
    best_sd = (1 / torch.diagonal(torch.linalg.inv(posterior(W, b, S, x)[1]))).sqrt().float()
    pair = PPCAPair(W, b, S, A, torch.full((L,), 0.2), (2.0 * best_sd).log())
    return pair, W, b, x


def test_generic_gap_matches_the_closed_form_of_a_linear_gaussian_pair(problem):
    pair, W, b, x = problem
    before = [p.detach().clone() for p in pair.parameters()]
    gap = pair_amortization_gap(pair, x, steps=300, lr=0.05, num_samples=16, eval_samples=20000,
                                log_px_samples=20000, seed=1)
    with torch.no_grad():
        loc = (x - b) @ pair.A + pair.c
        kl_amortized = diagonal_kl_to_posterior(loc, pair.log_scale.exp().expand_as(loc), W, b, S, x)
    approx = best_diagonal_kl(W, b, S)
    assert approx > 0.2  # the oracle is not trivial: a diagonal guide cannot reach this posterior
    exact = exact_log_px(W, b, S, x).numpy()
    assert gap.log_px == pytest.approx(exact, abs=0.05)
    assert gap.approximation_gap == pytest.approx(approx, abs=0.06)
    assert gap.amortization_gap == pytest.approx((kl_amortized - approx).numpy(), abs=0.08)
    assert gap.elbo_amortized == pytest.approx((exact_log_px(W, b, S, x) - kl_amortized).numpy(), abs=0.08)
    assert all(torch.equal(p, q) for p, q in zip(pair.parameters(), before))  # restored


class _ReadingPair(PPCAPair):
    """The model reads every guide parameter without changing its density (a factor of 0 x them),
    as a VampPrior's model runs the encoder: no parameter is the guide's own."""

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            touch = 0.0 * (self.A.sum() + self.c.sum() + self.log_scale.sum())
            pyro.factor("touch", touch.expand(x.shape[0]))
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], self.W.shape[1]), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, self.s).to_event(1), obs=x)


def test_parameters_the_model_also_reads_are_refined_through_the_guide_s_own_copies(problem):
    """Same closed form as above (the same tolerances) when the model reads all of the guide's
    parameters: the guide refines copies of them, the model keeps the trained values, and the
    pair is left as it was."""
    pair, W, b, x = problem
    reading = _ReadingPair(W, b, S, pair.A.detach(), pair.c.detach(), pair.log_scale.detach())
    assert guide_only_parameters(reading, x[:2]) == []
    before = [p.detach().clone() for p in reading.parameters()]
    gap = pair_amortization_gap(reading, x[:3], steps=300, lr=0.05, num_samples=16, eval_samples=20000,
                                log_px_samples=20000, seed=1)
    x = x[:3]
    with torch.no_grad():
        loc = (x - b) @ pair.A + pair.c
        kl_amortized = diagonal_kl_to_posterior(loc, pair.log_scale.exp().expand_as(loc), W, b, S, x)
    approx = best_diagonal_kl(W, b, S)
    assert gap.note == "" and gap.failed_refinements == 0
    assert gap.log_px == pytest.approx(exact_log_px(W, b, S, x).numpy(), abs=0.05)
    assert gap.approximation_gap == pytest.approx(approx, abs=0.06)
    assert gap.amortization_gap == pytest.approx((kl_amortized - approx).numpy(), abs=0.08)
    assert all(torch.equal(p, q) for p, q in zip(reading.parameters(), before))


class _SharedPair(PPCAPair):
    """The guide's shift c is also the model's prior mean: refining it would change p(x, z)."""

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(self.c.expand(x.shape[0], -1), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, self.s).to_event(1), obs=x)


class _DiscretePair(nn.Module):
    def __init__(self):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(3))

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            k = pyro.sample("k", dist.Categorical(logits=x.new_zeros(x.shape[0], 3)))
            pyro.sample("x", dist.Normal(k.float().unsqueeze(-1).expand_as(x), 1.0).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("k", dist.Categorical(logits=self.logits.expand(x.shape[0], 3)))


def test_only_the_guide_s_own_parameters_are_refined_and_discrete_guides_get_a_note(problem):
    pair, W, b, x = problem
    assert {id(p) for p in guide_only_parameters(pair, x[:2])} == {id(pair.A), id(pair.c), id(pair.log_scale)}
    shared = _SharedPair(W, b, S, pair.A.detach(), pair.c.detach(), pair.log_scale.detach())
    assert {id(p) for p in guide_only_parameters(shared, x[:2])} == {id(shared.A), id(shared.log_scale)}
    note = pair_amortization_gap(_DiscretePair(), torch.zeros(4, 1), steps=2).note
    assert "cannot be reparameterized" in note and "'k'" in note
    assert math.isfinite(pair_amortization_gap(shared, x[:2], steps=5, eval_samples=50, log_px_samples=50)
                         .to_dict()["amortization_gap"])


def test_a_refinement_that_ends_below_the_encoder_is_not_kept_and_is_a_warning(problem):
    """A refinement step far too large diverges: that datum's q* is the encoder's (gap 0), the
    result counts it, and the verdict is a warning, not an 'ok'."""
    from pyro_gen.diagnostics.verdicts import _gap
    pair, W, b, x = problem
    gap = pair_amortization_gap(pair, x[:3], steps=30, lr=50.0, eval_samples=200, log_px_samples=200)
    assert gap.failed_refinements >= 1 and "did not improve" in gap.note
    assert (gap.amortization_gap >= 0).all() and (gap.amortization_gap == 0).sum() >= gap.failed_refinements
    (verdict,) = _gap(gap.to_dict())
    assert verdict.status == "warning" and "refinement failed" in verdict.value


def test_the_pair_is_restored_when_a_refinement_raises(problem, monkeypatch):
    from pyro_gen.diagnostics import gap as gap_module
    pair, W, b, x = problem
    before = [p.detach().clone() for p in pair.parameters()]
    pair.train()

    def broken(loss, params, steps, lr):
        with torch.no_grad():
            for p in params:
                p.add_(1.0)  # half-way through, the parameters have moved ...
        raise RuntimeError("planted")  # ... when the optimization fails

    monkeypatch.setattr(gap_module, "_adam", broken)
    with pytest.raises(RuntimeError, match="planted"):
        pair_amortization_gap(pair, x[:2], steps=5, eval_samples=10, log_px_samples=10)
    assert all(torch.equal(p, q) for p, q in zip(pair.parameters(), before)) and pair.training
