"""Training: resume is exact, failures keep the last good checkpoint, early stopping."""
import math

import pytest
import torch

from pyro_gen.checkpoint import load_checkpoint, read_jsonl
from pyro_gen.train import TrainingError, TrainSettings, fit
from pyro_gen.vae import ModelSpec

SPEC = ModelSpec((1, 28, 28), latent_dim=2, hidden=(16,))


class Stop(Exception):
    pass


def build():
    torch.manual_seed(0)  # parameters are initialized from the global RNG
    return SPEC.build()


def _data(mnist, n=256):
    return mnist.train_x[:n]


def _settings(**kw):
    return TrainSettings(**{"epochs": 3, "batch_size": 64, "lr": 1e-2, "seed": 1, **kw})


def test_training_improves_the_elbo(mnist):
    vae = SPEC.build()
    result = fit(vae, _data(mnist, 512), _settings(epochs=4), val_x=mnist.test_x[:100].round(), progress=False)
    elbos = [row["train_elbo"] for row in result.history]
    assert len(elbos) == 4 and elbos[-1] > elbos[0] + 20  # nats per image
    assert all(math.isfinite(row["val_elbo"]) for row in result.history)


def test_resume_after_interruption_is_bitwise_identical(mnist, tmp_path):
    """Killed after epoch 2 and resumed, a run ends with the same parameters and metrics as an
    uninterrupted run with the same seed (bitwise on CPU)."""
    whole = build()
    ref = fit(whole, _data(mnist), _settings(), run_dir=tmp_path / "a", progress=False)

    def interrupt(row):
        if row["epoch"] == 2:
            raise Stop

    with pytest.raises(Stop):
        fit(build(), _data(mnist), _settings(), run_dir=tmp_path / "b", progress=False, on_epoch=interrupt)
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["epoch"] == 2
    torch.manual_seed(12345)  # whatever happened to the global RNG in between
    resumed = SPEC.build()  # differently initialized: everything comes from the checkpoint
    out = fit(resumed, _data(mnist), _settings(), run_dir=tmp_path / "b", resume=True, progress=False)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in ref.history]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in out.history] == strip
    assert len(read_jsonl(tmp_path / "b" / "metrics.jsonl")) == 3


def test_non_finite_loss_stops_with_a_message_and_keeps_the_checkpoint(mnist, tmp_path):
    vae = SPEC.build()

    def poison(row):
        if row["epoch"] == 1:
            with torch.no_grad():
                vae.decoder.net[0].weight.fill_(float("nan"))

    with pytest.raises(TrainingError, match=r"epoch 2, step 1.*lower --lr: pyro-gen train --out .* --resume --lr "):
        fit(vae, _data(mnist), _settings(), run_dir=tmp_path, progress=False, on_epoch=poison)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_early_stopping_keeps_the_best_parameters(mnist):
    vae = SPEC.build()
    seen = []
    result = fit(vae, _data(mnist), _settings(epochs=30, lr=0.3, patience=2), progress=False,
                 on_epoch=lambda row: seen.append(row["val_elbo"]))
    assert result.stopped_early and len(seen) < 30
    best = max(seen)
    assert seen.index(best) == len(seen) - 3  # stopped two epochs after the best


@pytest.mark.parametrize("bad", [dict(epochs=0), dict(lr=-1.0), dict(lr=float("nan")), dict(batch_size=0),
                                 dict(optimizer="sgd"), dict(elbo="nope"), dict(lr_schedule="linear"),
                                 dict(weight_decay=-0.1), dict(weight_decay=float("nan"))])
def test_settings_reject_bad_values(bad):
    with pytest.raises(ValueError):
        TrainSettings(**bad)


def test_clippedadam_clips_the_global_gradient_norm_before_each_step():
    from pyro_gen.train import ClippedAdam, make_optimizer
    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(4))
    opt = make_optimizer([a, b], TrainSettings(optimizer="clippedadam", clip_norm=2.0, lr=0.1))
    assert isinstance(opt, ClippedAdam) and isinstance(make_optimizer([a], TrainSettings()), torch.optim.Adam)
    a.grad, b.grad = torch.full((3,), 30.0), torch.full((4,), -40.0)
    raw = torch.cat([a.grad, b.grad]).clone()
    opt.step()
    clipped = torch.cat([a.grad, b.grad])
    assert math.isclose(float(clipped.norm()), 2.0, rel_tol=1e-5)  # the global norm, one scale for both
    assert torch.allclose(clipped, raw * 2.0 / float(raw.norm()))
    # its state dict is Adam's: a checkpoint of either loads into the other
    plain = make_optimizer([a, b], TrainSettings(lr=0.1))
    plain.load_state_dict(opt.state_dict())
    a.grad, b.grad = torch.full((3,), 0.01), torch.full((4,), 0.01)  # below the bound: untouched
    opt.step()
    assert torch.allclose(a.grad, torch.full((3,), 0.01))


@pytest.mark.parametrize("optimizer", ["adam", "clippedadam"])
def test_weight_decay_is_decoupled_from_the_gradient(optimizer):
    """AdamW: with a zero gradient Adam's update is zero, so a step only shrinks each parameter by
    1 - lr * weight_decay (an L2 term added to the gradient would move it by about lr instead)."""
    from pyro_gen.train import make_optimizer
    a = torch.nn.Parameter(torch.tensor([2.0, -4.0]))
    opt = make_optimizer([a], TrainSettings(optimizer=optimizer, lr=0.1, weight_decay=0.5))
    a.grad = torch.zeros(2)
    opt.step()
    assert torch.allclose(a.detach(), torch.tensor([2.0, -4.0]) * (1 - 0.1 * 0.5))
    plain = make_optimizer([a], TrainSettings(optimizer=optimizer, lr=0.1))
    plain.step()
    assert torch.allclose(a.detach(), torch.tensor([2.0, -4.0]) * (1 - 0.1 * 0.5))  # no decay by default


def test_clippedadam_trains(mnist):
    vae = ModelSpec((1, 28, 28), latent_dim=2, hidden=(16,)).build()
    result = fit(vae, mnist.train_x[:300], TrainSettings(epochs=2, batch_size=100, optimizer="clippedadam",
                                                         clip_norm=1.0), progress=False)
    assert len(result.history) == 2 and all(math.isfinite(r["train_elbo"]) for r in result.history)
