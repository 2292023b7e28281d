"""The IAF guide's density of codes it did not produce, as the aggregate-posterior estimate needs
it (ELBO surgery's I(x; z) and marginal KL), and a diagnostic that fails without ending a run.

Scoring a code under another datum's IAF inverts the flow, a recursion that overflowed float32
for codes far from that datum's posterior: the per-epoch diagnostics of every ``--guide iaf`` run
raised at epoch 2.
"""
import json
import math

import pytest
import torch

from pyro_gen.cli import main
from pyro_gen.diagnostics import latent as latent_mod
from pyro_gen.diagnostics.latent import _broadcast_cross, elbo_surgery, tiled_cross
from pyro_gen.guides import IAF
from pyro_gen.nets import MLPEncoder

IMAGE = (1, 6, 5)


def _strong_iaf(seed: int = 7) -> IAF:
    """An IAF guide far from the identity (its flow weights perturbed), in float32 like a trained one."""
    torch.manual_seed(seed)
    guide = IAF(MLPEncoder(IMAGE, (16,)), 3, num_layers=3)
    with torch.no_grad():
        for p in guide.flows.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return guide


def test_log_prob_of_tail_codes_equals_the_change_of_variables_in_float64():
    """Codes z = flow(z0) with z0 six standard deviations out: log q(z|x) scored by inverting the
    flow (as the aggregate posterior does) equals log N(z0) - log|det dz/dz0|, the density
    computed forward with the autograd Jacobian in float64, within 1e-6 nats."""
    guide = _strong_iaf()
    x = torch.rand(4, *IMAGE)
    guide64 = __import__("copy").deepcopy(guide).double()
    q = guide64(x.double())
    torch.manual_seed(1)
    direction = torch.nn.functional.normalize(torch.randn(4, 3, dtype=torch.float64), dim=-1)
    z0 = q.base_dist.base_dist.loc + 6 * q.base_dist.base_dist.scale * direction * math.sqrt(3)

    def flow(z):
        for t in q.transforms:
            z = t(z)
        return z

    expected = []
    for n in range(4):
        def flow_n(v, n=n):
            full = z0.clone()
            full[n] = v
            return flow(full)[n]
        jac = torch.autograd.functional.jacobian(flow_n, z0[n])
        expected.append(q.base_dist.log_prob(z0)[n] - torch.linalg.slogdet(jac).logabsdet)
    with torch.no_grad():
        z = flow(z0).clone()  # a clone: no cached inverse, the flow is inverted
        scored = tiled_cross(guide, x)(z).diagonal()
    assert scored.numpy() == pytest.approx(torch.stack(expected).detach().numpy(), abs=1e-6)


def test_codes_whose_inverse_overflows_score_minus_infinity_not_nan():
    guide = _strong_iaf()
    x = torch.rand(3, *IMAGE)
    z = torch.tensor([[1e30, -1e30, 1e30], [0.1, 0.2, 0.3], [3e38, 3e38, -3e38]])
    with torch.no_grad():
        lp = tiled_cross(guide, x)(z)
    assert not lp.isnan().any()
    assert torch.isfinite(lp[1]).all() and (lp[[0, 2]] == -math.inf).all()


def test_mutual_information_of_an_iaf_equals_that_of_its_equivalent_diagonal_normal():
    """With the flow networks' weights at zero each IAF step is the same elementwise affine map
    z -> s z + (1 - s) m for every datum, so q(z|x) is a diagonal Normal known in closed form.
    ELBO surgery through the flow's inversion (tiled_cross) equals ELBO surgery through the
    closed-form broadcast of that diagonal Normal, on the same draws (1e-4 nats)."""
    torch.manual_seed(3)
    guide = IAF(MLPEncoder(IMAGE, (16,)), 3, num_layers=2)
    with torch.no_grad():
        guide.head.weight.mul_(20)  # codes that depend on x: a mutual information well above zero
        for flow in guide.flows:
            for name, p in flow.named_parameters():
                if name.endswith("weight"):
                    p.zero_()
                else:
                    p.copy_(torch.randn_like(p))
    x = torch.rand(12, *IMAGE)
    prior = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(3), torch.ones(3)), 1)
    with torch.no_grad():
        q = guide(x)
        q64 = __import__("copy").deepcopy(guide).double()(x.double())  # the closed form from exact parameters
        base = q64.base_dist.base_dist
        loc, scale = base.loc.double(), base.scale.double()
        for t in q64.transforms:  # the affine map of each step, from its (constant) network outputs
            mean, logit = (v[:1] for v in t.arn(torch.zeros(12, 3, dtype=torch.float64)))
            s = torch.sigmoid(logit + t.sigmoid_bias)
            loc, scale = s * loc + (1 - s) * mean.double(), s * scale
        diag = torch.distributions.Independent(torch.distributions.Normal(loc, scale), 1)
        z = q.sample((2,))
        assert diag.log_prob(z.double()).numpy() == pytest.approx(q.log_prob(z).double().numpy(), abs=1e-2)  # float32
        for zs in z:
            assert tiled_cross(guide, x)(zs).numpy() == pytest.approx(_broadcast_cross(diag)(zs).numpy(), abs=1e-6)
        torch.manual_seed(5)
        kl_f, mi_f, mkl_f = elbo_surgery(q, prior, num_samples=8, cross=tiled_cross(guide, x))
        torch.manual_seed(5)
        eps_draws = q.sample((8,))  # the same draws the flow run made
    # the same draws scored with the closed form: the diagonal Normal's estimate
    log_own = diag.log_prob(eps_draws.double())
    log_agg = torch.stack([torch.logsumexp(_broadcast_cross(diag)(zs), -1) for zs in eps_draws]) - math.log(12)
    log_p = prior.log_prob(eps_draws).double()
    assert mi_f == pytest.approx(float((log_own - log_agg).mean()), abs=1e-4)
    assert mkl_f == pytest.approx(float((log_agg - log_p).mean()), abs=1e-4)
    assert kl_f == pytest.approx(mi_f + mkl_f, abs=1e-6) and 0.5 < mi_f <= math.log(12) + 1e-9


def test_a_failing_per_epoch_diagnostic_marks_its_row_and_training_goes_on(tmp_path, small_npz, monkeypatch, capsys):
    calls = {"n": 0}
    real = latent_mod.latent_diagnostics

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("planted failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(latent_mod, "latent_diagnostics", flaky)
    run = tmp_path / "run"
    assert main(["train", "--data", str(small_npz), "--out", str(run), "--epochs", "3", "--hidden", "8",
                 "--latent-dim", "2", "--batch-size", "100", "--quiet"]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[1]["diagnostics_error"] == "RuntimeError: planted failure" and "active_units" not in rows[1]
    assert "diagnostics_error" not in rows[0] and "active_units" in rows[2]
    err = capsys.readouterr().err
    assert "diagnostics of epoch 2 failed (RuntimeError: planted failure); training goes on" in err


def test_an_internal_error_exits_1_with_a_traceback_file_and_keeps_the_last_epoch(tmp_path, small_npz, monkeypatch,
                                                                                 capsys):
    """Not the user's input: exit 1 (not 2), one line naming the exception type and the file with
    the traceback; the checkpoint of the last good epoch is intact and resumes."""
    from pyro_gen import train as train_mod
    real = train_mod._epoch_extras

    def boom(epoch_metrics, vae, x_val, epoch, say):
        if epoch == 2:
            raise ValueError("planted internal error")  # a ValueError that the library did not raise on purpose
        return real(epoch_metrics, vae, x_val, epoch, say)

    monkeypatch.setattr(train_mod, "_epoch_extras", boom)
    run = tmp_path / "run"
    argv = ["train", "--data", str(small_npz), "--out", str(run), "--epochs", "3", "--hidden", "8",
            "--latent-dim", "2", "--batch-size", "100", "--quiet"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("pyro-gen train: internal error (ValueError: planted internal error)")
    assert "error:" not in err[-1] and str(run / "error-train.txt") in err[-1]
    assert "planted internal error" in (run / "error-train.txt").read_text()
    assert "Traceback" in (run / "error-train.txt").read_text()
    from pyro_gen.checkpoint import load_checkpoint
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 1
    monkeypatch.setattr(train_mod, "_epoch_extras", real)
    assert main(["train", "--out", str(run), "--resume", "--epochs", "3", "--quiet"]) == 0
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 3
