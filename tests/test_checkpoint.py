"""Atomic writes: a failed write (disk full, permission) leaves the previous file intact."""
import errno

import pytest
import torch

from pyro_gen import checkpoint
from pyro_gen.checkpoint import RunError, atomic_write, load_checkpoint, save_checkpoint, write_json
from pyro_gen.train import TrainSettings, fit
from pyro_gen.vae import ModelSpec


def test_disk_full_during_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "epoch": 1})
    before = path.read_bytes()

    def full_disk(obj, f):
        f.write(b"partial bytes")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, {"model": {"w": torch.zeros(3)}, "epoch": 2})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # no temporary file left
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1


def test_permission_denied_on_rename_keeps_the_file(tmp_path, monkeypatch):
    """(Simulated: CI runs as root, which ignores folder permissions.)"""
    path = tmp_path / "config.json"
    write_json(path, {"a": 1})

    def denied(src, dst):
        raise PermissionError(errno.EACCES, "Permission denied", str(dst))

    monkeypatch.setattr(checkpoint.os, "replace", denied)
    with pytest.raises(PermissionError):
        write_json(path, {"a": 2})
    monkeypatch.undo()
    assert '"a": 1' in path.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_failed_write_during_training_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, mnist):
    """Training whose epoch-2 checkpoint cannot be written stops with the error; epoch 1's checkpoint
    still loads and resuming from it works."""
    calls = {"n": 0}
    real = checkpoint.atomic_write

    def failing(path, write):
        if str(path).endswith("checkpoint.pt"):
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, write)

    monkeypatch.setattr(checkpoint, "atomic_write", failing)
    spec = ModelSpec((1, 28, 28), latent_dim=2, hidden=(8,))
    settings = TrainSettings(epochs=3, batch_size=64)
    with pytest.raises(OSError):
        fit(spec.build(), mnist.train_x[:128], settings, run_dir=tmp_path, progress=False)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1
    monkeypatch.setattr(checkpoint, "atomic_write", real)
    result = fit(spec.build(), mnist.train_x[:128], settings, run_dir=tmp_path, resume=True, progress=False)
    assert [r["epoch"] for r in result.history] == [1, 2, 3]


def test_checkpoint_from_another_program_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"weights": torch.ones(2)}, path)
    with pytest.raises(RunError, match="not a pyro_gen checkpoint"):
        load_checkpoint(path)


def test_atomic_write_replaces_content(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write(path, lambda f: f.write(b"one"))
    atomic_write(path, lambda f: f.write(b"two"))
    assert path.read_bytes() == b"two"


def test_resume_history_keeps_the_checkpointed_rows_and_refuses_missing_ones(tmp_path):
    from pyro_gen.checkpoint import resume_history, write_jsonl
    write_jsonl(tmp_path / "metrics.jsonl", [{"epoch": 1}, {"epoch": 2}, {"epoch": 3}])
    assert resume_history(tmp_path, 2) == [{"epoch": 1}, {"epoch": 2}]  # epoch 3 ran after the checkpoint
    with pytest.raises(RunError, match="has 3 epochs, checkpoint has 4"):
        resume_history(tmp_path, 4)
