"""Devices without a GPU: ``--device`` resolution and its one-line refusals, checkpoints that hold
CPU tensors and load onto another device, and the device-clean test mode (tests/_device_audit.py)
run over training, evaluation, sampling and diagnosis of every family -- failing on a planted mistake."""
import json

import pytest
import torch

from _device_audit import DeviceAudit
from pyro_gen.checkpoint import load_checkpoint
from pyro_gen.cli import main
from pyro_gen.devices import module_device, resolve_device, to_cpu
from pyro_gen.errors import InputError

TINY = ["--hidden", "8", "--latent-dim", "2", "--batch-size", "100", "--quiet", "--epochs", "2"]


def test_resolve_device_on_this_machine(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(InputError, match="no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(InputError, match="unknown device"):
        resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda") and resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(InputError, match="has 2 CUDA device"):
        resolve_device("cuda:3")


@pytest.mark.parametrize("flag, phrase", [("cuda", "no CUDA GPU"), ("tpu", "unknown device"), ("cuda:7", "no CUDA")])
def test_an_unavailable_device_exits_2_before_anything_is_written(flag, phrase, tmp_path, small_npz, capsys,
                                                                  monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run = tmp_path / "run"
    assert main(["train", "--data", str(small_npz), "--out", str(run), "--device", flag, *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and phrase in err
    assert not run.exists()


def test_checkpoints_hold_cpu_tensors_and_load_onto_another_device(tmp_path, small_npz):
    run = tmp_path / "run"
    assert main(["train", "--data", str(small_npz), "--out", str(run), "--device", "cpu", *TINY]) == 0
    assert json.loads((run / "config.json").read_text())["device"] == "cpu"
    state = load_checkpoint(run / "checkpoint.pt")
    tensors = [t for t in _tensors(state)]
    assert tensors and all(t.device.type == "cpu" for t in tensors)
    # a simulated other device: every tensor loads there with map_location, and into a model moved there
    moved = torch.load(run / "checkpoint.pt", map_location="meta", weights_only=True)
    assert all(t.device.type == "meta" for t in _tensors(moved))
    from pyro_gen.run import load_run
    vae = load_run(run).vae.to("meta")
    vae.load_state_dict(moved["model"], assign=True)
    assert module_device(vae).type == "meta"
    # and back: what a checkpoint is written from, whatever the device, is CPU tensors
    assert all(t.device.type == "cpu" for t in _tensors(to_cpu({"a": [torch.ones(2)], "b": (torch.zeros(1),)})))


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


def _every_family(tmp_path, small_npz):
    for model in ["vae", "ae", "cvae", "hvae", "module:_pairs:LazyParamVAE"]:
        run = tmp_path / model.replace(":", "_")
        assert main(["train", "--model", model, "--data", str(small_npz), "--out", str(run), *TINY]) == 0
        assert main(["evaluate", str(run), "--k", "10", "--draws", "1", "--json"]) == 0
        assert main(["sample", str(run), "-n", "4", "-o", str(tmp_path / "s.npy")]) == 0
        if model != "cvae":  # diagnose covers unconditional models
            assert main(["diagnose", str(run), "--k-max", "100", "--points", "20", "--gap-points", "2",
                         "--gap-steps", "5", "--grad-repeats", "3", "--quiet"]) == 0
    ss = tmp_path / "ssvae"
    assert main(["train", "--model", "ssvae", "--labels-per-class", "3", "--data", str(small_npz), "--out", str(ss),
                 *TINY]) == 0
    assert main(["evaluate", str(ss), "--k", "10", "--draws", "1", "--json"]) == 0


def test_training_evaluation_and_sampling_of_every_family_are_device_clean(tmp_path, small_npz):
    """No tensor factory call from pyro_gen's own code without a device, outside constructors
    (train, evaluate, sample and diagnose)."""
    import pyro
    pyro.clear_param_store()
    with DeviceAudit() as audit:
        _every_family(tmp_path, small_npz)
    assert audit.calls == [], sorted(set(audit.calls))


def test_the_gan_and_compare_are_device_clean(tmp_path, small_npz):
    """The GAN trains in the engine's loop, resumes and samples, and compare trains, loads, samples,
    evaluates and scores (domain classifier included), all without a tensor made off-device."""
    gan, out = tmp_path / "gan", tmp_path / "cmp"
    with DeviceAudit() as audit:
        assert main(["train", "--model", "gan", "--data", str(small_npz), "--out", str(gan), *TINY]) == 0
        assert main(["train", "--resume", "--out", str(gan), "--epochs", "3", "--quiet"]) == 0
        assert main(["sample", str(gan), "-n", "4", "-o", str(tmp_path / "g.npy")]) == 0
        assert main(["compare", "--models", "vae,wgan-gp", "--runs", str(gan), "--data", str(small_npz),
                     "--budget-seconds", "0.01", "--k", "5", "--draws", "1", "--hidden", "8", "--latent-dim", "2",
                     "--n-samples", "30", "--classifier-cache", str(tmp_path / "cache"), "--classifier-epochs", "1",
                     "--out", str(out), "--quiet"]) == 0
    assert audit.calls == [], sorted(set(audit.calls))
    assert json.loads((gan / "config.json").read_text())["device"] == "cpu"
    assert all(t.device.type == "cpu" for t in _tensors(load_checkpoint(gan / "checkpoint.pt")))


def test_the_audit_fails_on_a_planted_device_mistake(monkeypatch):
    """The test mode is not vacuous: a planted ``torch.zeros(n)`` in a library function is caught."""
    from pyro_gen import vae as vae_module
    real = vae_module.VAE.log_weights

    def planted(self, x, num_samples, y=None):
        return real(self, x, num_samples, y) + torch.zeros(x.shape[0])  # the mistake: no device

    monkeypatch.setattr(vae_module.VAE, "log_weights", planted)
    planted.__code__ = planted.__code__.replace(co_filename=vae_module.__file__)  # as if written in pyro_gen
    from pyro_gen.vae import ModelSpec
    vae = ModelSpec((1, 6, 5), latent_dim=2, hidden=(8,)).build()
    with DeviceAudit() as audit:
        vae.log_weights(torch.rand(3, 1, 6, 5).bernoulli(), 2)
    assert audit.calls and audit.calls[0].startswith("pyro_gen/vae.py") and audit.calls[0].endswith("zeros")


def test_subnormals_are_flushed_while_training_and_not_after(mnist):
    """A trained model's computations (IWAE's underflowing importance weights among them) make
    subnormal floats, which the CPU multiplies slowly; the engine flushes them to zero while it
    trains, and leaves the setting off after."""
    from pyro_gen.devices import flush_denormals
    from pyro_gen.train import TrainSettings, fit
    from pyro_gen.vae import ModelSpec
    tiny = torch.tensor([1e-39])  # a float32 subnormal
    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU cannot flush subnormals")
    assert (tiny * 1.0).item() > 0
    with flush_denormals() as on:
        assert on and (tiny * 1.0).item() == 0.0
    assert (tiny * 1.0).item() > 0
    torch.set_flush_denormal(True)  # already on: left on at exit
    with flush_denormals():
        pass
    assert (tiny * 1.0).item() == 0.0
    torch.set_flush_denormal(False)
    seen = []
    vae = ModelSpec((1, 28, 28), latent_dim=2, hidden=(8,)).build()
    fit(vae, mnist.train_x[:64], TrainSettings(epochs=2, batch_size=32, objective="iwae:3"), progress=False,
        on_epoch=lambda row: seen.append((tiny * 1.0).item()))
    assert seen == [0.0, 0.0] and (tiny * 1.0).item() > 0
