"""Multi-process training with torchrun (2 CPU processes, gloo) matches single-process training."""
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from pyro_gen.checkpoint import load_checkpoint
from pyro_gen.cli import main

FLAGS = ["--model", "ae", "--likelihood", "cbernoulli", "--hidden", "16", "--latent-dim", "2",
         "--batch-size", "64", "--epochs", "2", "--quiet"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")
def test_two_processes_match_one(tmp_path, mnist):
    """After the same steps on the same global batches, the parameters of a 2-process DDP run
    equal the single-process ones within 1e-5 (deterministic model: point-mass guide,
    continuous-Bernoulli likelihood, so only the order of float additions differs)."""
    data = tmp_path / "d.npz"
    np.savez(data, images=(mnist.train_x[:320, 0] * 255).astype(np.uint8))  # 288 train images
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "one"), *FLAGS]) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), "-m", "pyro_gen", "train", "--data", str(data),
           "--out", str(tmp_path / "two"), *FLAGS]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "on 2 processes" in out.stderr
    one = load_checkpoint(tmp_path / "one" / "checkpoint.pt")
    two = load_checkpoint(tmp_path / "two" / "checkpoint.pt")
    assert one["epoch"] == two["epoch"] == 2
    for name, a in one["model"].items():
        assert torch.allclose(a, two["model"][name], atol=1e-5, rtol=0), name
    # the processes really did split the batch: it ran 5 steps of 32 images each per epoch
    assert two["scheduler"]["last_epoch"] == one["scheduler"]["last_epoch"] == 10


def test_batch_must_split_evenly(monkeypatch, mnist):
    from pyro_gen import distributed
    from pyro_gen.train import TrainSettings, fit
    from pyro_gen.vae import ModelSpec
    monkeypatch.setattr(distributed, "rank_world", lambda: (0, 3))
    with pytest.raises(ValueError, match="divisible by the number of processes"):
        fit(ModelSpec((1, 28, 28), latent_dim=2, hidden=(8,)).build(), mnist.train_x[:64],
            TrainSettings(epochs=1, batch_size=64), progress=False)


def test_collective_returns_once_other_threads_let_go():
    """A collective's helper returns only after every other holder of its tensor (gloo's worker
    thread, here a timer thread) has dropped it, so no thread frees it while Python exits."""
    import threading
    import time
    from pyro_gen.distributed import _collective
    held = []

    def op(t, value):  # stands in for a gloo collective whose worker thread lets go 50 ms late
        t += value
        held.append(t)
        threading.Timer(0.05, held.clear).start()

    t = torch.zeros(1)
    base = sys.getrefcount(t)
    start = time.perf_counter()
    assert _collective(op, t, 3.0) is t
    assert time.perf_counter() - start >= 0.05 and not held and sys.getrefcount(t) == base
    assert t.item() == 3.0


def test_collective_warns_when_a_holder_never_lets_go():
    from pyro_gen.distributed import _collective
    keep = []
    with pytest.warns(RuntimeWarning, match="still holds a collective's tensor after 0.05 s"):
        _collective(keep.append, torch.zeros(1), timeout=0.05)


def test_commands_that_run_in_one_process_refuse_torchrun(monkeypatch, tmp_path, small_npz, capsys):
    """Under torchrun (WORLD_SIZE > 1) every command but a VAE's train exits 2 with one line
    before it reads or writes anything: each process would otherwise write the same files."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    run = tmp_path / "run"
    for argv, what in [(["train", "--model", "gan", "--data", str(small_npz), "--out", str(run)], "train --model gan"),
                       (["evaluate", str(run)], "evaluate"),
                       (["sample", str(run), "-o", str(tmp_path / "s.png")], "sample"),
                       (["diagnose", str(run)], "diagnose"),
                       (["compare", "--models", "vae,gan", "--out", str(tmp_path / "cmp")], "compare")]:
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{what} runs in one process, but torchrun started 2" in err, err
    assert list(tmp_path.iterdir()) == []


def test_setup_picks_gloo_on_the_cpu_and_nccl_with_one_gpu_per_process_on_cuda(monkeypatch):
    """On the CPU the group is gloo's also on a GPU machine; training on CUDA, nccl, each process
    on the GPU of its LOCAL_RANK, and the collectives' tensors on that GPU; without torchrun,
    setup does nothing."""
    from pyro_gen import distributed
    calls, devices = [], []
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend: calls.append(backend))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: devices.append(d))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.setup() == torch.device("cpu")
    assert calls == []
    monkeypatch.setenv("WORLD_SIZE", "2")
    distributed.setup()
    assert calls == ["gloo"]
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.setup(torch.device("cuda")) == torch.device("cuda", 1)
    assert calls == ["gloo", "nccl"] and devices == [torch.device("cuda", 1)]
    distributed.setup()  # back to the CPU for the other tests
