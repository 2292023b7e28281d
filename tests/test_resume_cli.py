"""Restarting the way users restart jobs: one command line with ``--resume``, re-run after a kill,
ends where an uninterrupted run ends (bitwise); flags that repeat the run's values are accepted,
real changes to the model or data are refused naming both values, and the settings that may
change (epochs, learning rate, patience) are applied and recorded."""
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
import torch

from pyro_gen.checkpoint import load_checkpoint
from pyro_gen.cli import main

TINY = ["--hidden", "8", "--latent-dim", "2", "--batch-size", "30", "--quiet"]


def _rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _config(run):
    return json.loads((run / "config.json").read_text())


def _timeless(rows):
    return [{k: v for k, v in r.items() if k not in ("seconds", "diag_seconds")} for r in rows]


def test_the_same_command_after_sigkill_equals_an_uninterrupted_run(tmp_path, small_npz):
    """``pyro-gen train --out R ... --resume`` starts R when it holds no run and continues it
    when it does: killed with SIGKILL during training and re-run unchanged, the run ends with
    the parameters and metrics of the same command run without a kill."""
    def command(run):
        return [sys.executable, "-m", "pyro_gen", "train", "--data", str(small_npz), "--out", str(run), "--epochs",
                "12", "--seed", "3", "--prior", "mog:2", *TINY, "--resume"]

    env = dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    whole = tmp_path / "whole"
    subprocess.run(command(whole), check=True, env=env, capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(command(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (killed / "metrics.jsonl").exists() and len(_rows_safe(killed)) >= 2:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    at_kill = load_checkpoint(killed / "checkpoint.pt")["epoch"]
    assert 1 <= at_kill < 12, "the kill must land during training"
    again = subprocess.run(command(killed), env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    a, b = load_checkpoint(whole / "checkpoint.pt"), load_checkpoint(killed / "checkpoint.pt")
    assert a["epoch"] == b["epoch"] == 12
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name
    assert _timeless(_rows(whole)) == _timeless(_rows(killed))
    assert "resumed" not in _config(killed)  # nothing changed: nothing to record


def _rows_safe(run):
    try:
        return _rows(run)
    except (json.JSONDecodeError, FileNotFoundError):
        return []


@pytest.fixture()
def run(tmp_path, small_npz):
    out = tmp_path / "run"
    assert main(["train", "--data", str(small_npz), "--out", str(out), "--epochs", "1", "--seed", "0",
                 "--prior", "vamp:3", *TINY]) == 0
    return out


def test_flags_that_repeat_the_runs_values_are_accepted(run, small_npz):
    """Same values, written as given or as what they mean (vamp:3 is vamp:3; 8 hidden units; the
    data file by path; the defaults the run was configured with)."""
    assert main(["train", "--data", str(small_npz), "--out", str(run), "--epochs", "2", "--seed", "0",
                 "--prior", "vamp:3", "--model", "vae", "--guide", "diagonal", "--likelihood", "bernoulli",
                 "--lr", "3e-3", "--batch-size", "30", "--objective", "elbo", *TINY, "--resume"]) == 0
    assert [r["epoch"] for r in _rows(run)] == [1, 2]
    assert _config(run)["resumed"] == [{"after_epoch": 1, "changed": {"epochs": [1, 2]}}]  # the only change


def test_a_run_written_before_a_setting_existed_resumes_with_its_default(run):
    """A run from before --weight-decay has no weight_decay in config.json: it was 0, so
    ``--weight-decay 0`` repeats the run's value and is accepted; another value is a change."""
    import json
    config = _config(run)
    del config["train"]["weight_decay"]
    (run / "config.json").write_text(json.dumps(config))
    assert main(["train", "--out", str(run), "--epochs", "2", "--weight-decay", "0", "--resume", "--quiet"]) == 0
    assert [r["epoch"] for r in _rows(run)] == [1, 2]
    assert main(["train", "--out", str(run), "--epochs", "3", "--weight-decay", "0.1", "--resume", "--quiet"]) == 2


def test_a_prior_spec_compares_by_meaning(tmp_path, small_npz):
    out = tmp_path / "mog"
    assert main(["train", "--data", str(small_npz), "--out", str(out), "--epochs", "1", "--prior", "mog", *TINY]) == 0
    from pyro_gen.priors import MixtureOfGaussians
    import inspect
    k = inspect.signature(MixtureOfGaussians).parameters["num_components"].default
    assert main(["train", "--out", str(out), "--epochs", "2", "--prior", f"mog:{k}", "--resume", "--quiet"]) == 0


MODEL_CHANGES = [
    (["--seed", "1"], "--seed (the run has 0, the command gives 1)"),
    (["--latent-dim", "3"], "--latent-dim (the run has 2, the command gives 3)"),
    (["--hidden", "16"], "--hidden (the run has 8, the command gives 16)"),
    (["--prior", "vamp:4"], "--prior (the run has vamp:3, the command gives vamp:4)"),
    (["--guide", "fullrank"], "--guide (the run has diagonal, the command gives fullrank)"),
    (["--batch-size", "60"], "--batch-size (the run has 30, the command gives 60)"),
    (["--beta", "2"], "--beta (the run has 1.0, the command gives 2.0)"),
    (["--model", "cvae"], "--model (the run has vae, the command gives cvae)"),
    (["--data", "mnist-10k"], "--data (the run has"),
    (["--patience", "3"], "--patience (the run has none, the command gives 3)"),
]


@pytest.mark.parametrize("flags,phrase", MODEL_CHANGES, ids=[f[0][0] for f in MODEL_CHANGES])
def test_a_real_change_is_refused_naming_both_values(run, flags, phrase, capsys):
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", *flags, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and phrase in err and "cannot change" in err, err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_changeable_settings_are_applied_and_recorded(run):
    assert main(["train", "--out", str(run), "--resume", "--epochs", "3", "--lr", "1e-3", "--quiet"]) == 0
    rows = _rows(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    config = _config(run)
    assert config["train"]["lr"] == 1e-3 and config["train"]["epochs"] == 3
    assert config["resumed"] == [{"after_epoch": 1, "changed": {"lr": [0.003, 0.001], "epochs": [1, 3]}}]
    # the cosine schedule (now over 3 epochs of 9 steps) goes on from its step with the new peak
    import math
    assert rows[1]["lr"] == pytest.approx(1e-3 * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * 18 / 27))), rel=1e-9)


def test_a_planted_non_finite_loss_then_the_printed_command_continues(tmp_path, small_npz, monkeypatch, capsys):
    from pyro_gen import train as train_mod
    real = train_mod.LossModule.forward
    calls = {"n": 0}

    def poisoned(self, x, y=None, beta=1.0):
        calls["n"] += 1
        loss = real(self, x, y, beta)
        return loss * float("nan") if calls["n"] == 12 else loss  # epoch 2 (9 steps an epoch), step 3

    monkeypatch.setattr(train_mod.LossModule, "forward", poisoned)
    out = tmp_path / "run"
    assert main(["train", "--data", str(small_npz), "--out", str(out), "--epochs", "3", *TINY]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "epoch 2, step 3" in err and "checkpoint (epoch 1) is kept" in err
    command = err.split("continue with a lower --lr: ")[1]
    argv = shlex.split(command)
    assert argv[:2] == ["pyro-gen", "train"] and "--resume" in argv
    monkeypatch.setattr(train_mod.LossModule, "forward", real)
    assert main(argv[1:] + ["--quiet"]) == 0
    rows, config = _rows(out), _config(out)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert config["resumed"] == [{"after_epoch": 1, "changed": {"lr": [0.003, 0.0003]}}]
    assert rows[1]["lr"] <= 3e-4


def test_the_gan_resumes_by_the_same_rules(tmp_path, small_npz, capsys):
    out = tmp_path / "gan"
    argv = ["train", "--model", "gan", "--data", str(small_npz), "--out", str(out), "--hidden", "8", "--latent-dim",
            "2", "--batch-size", "30", "--quiet", "--resume"]
    assert main(argv + ["--epochs", "1"]) == 0  # --resume on an empty folder starts the run
    assert main(argv + ["--epochs", "2", "--lr", "1e-4", "--gan-loss", "ns"]) == 0
    config = _config(out)
    assert config["resumed"] == [{"after_epoch": 1, "changed": {"epochs": [1, 2], "lr": [0.0002, 0.0001]}}]
    assert len(_rows(out)) == 2
    capsys.readouterr()
    assert main(argv + ["--epochs", "3", "--gan-loss", "wgan-gp"]) == 2
    err = capsys.readouterr().err
    assert "--gan-loss (the run has ns, the command gives wgan-gp)" in err
