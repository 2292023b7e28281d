"""Soak test of multi-process exit: how many 2-process ``torchrun`` trainings abort at exit.

Each round trains the same tiny autoencoder twice under ``torchrun --nproc-per-node 2`` (gloo, one
thread per process; the run of ``tests/test_distributed.py``): once as pyro_gen is, and once with
``pyro_gen.distributed._collective`` replaced by the bare collective (no wait for gloo's worker
thread to let go of the tensor: the code before the fix of pytorch/pytorch#190489's abort, which
failed about 1 run in 35 here). Prints the aborted runs of each, side by side.

    python benchmarks/ddp_exit_soak.py --rounds 100      # about 17 minutes here
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pyro_gen.data import load_bundled  # noqa: E402

FLAGS = ["--model", "ae", "--likelihood", "cbernoulli", "--hidden", "16", "--latent-dim", "2",
         "--batch-size", "64", "--epochs", "2", "--quiet"]

# the CLI with the collectives as they were before the wait was added
BARE = """import sys
import pyro_gen.distributed as d
def bare(op, tensor, *args, **kwargs):
    op(tensor, *args)
    return tensor
d._collective = bare
from pyro_gen.cli import main
sys.exit(main())
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_once(entry, data: Path, out: Path) -> bool:
    """One 2-process training; True when it exits cleanly."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), *entry, "train", "--data", str(data), "--out", str(out), *FLAGS]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    return done.returncode == 0 and "terminate called" not in done.stderr


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100, help="runs of each kind (default 100)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "d.npz"
        np.savez(data, images=(load_bundled().train_x[:320, 0] * 255).astype(np.uint8))
        (tmp / "bare.py").write_text(BARE)
        kinds = {"pyro_gen": ["-m", "pyro_gen"], "bare collectives (baseline)": [str(tmp / "bare.py")]}
        aborted = dict.fromkeys(kinds, 0)
        start = time.perf_counter()
        for i in range(args.rounds):
            for name, entry in kinds.items():  # interleaved, so that machine load hits both alike
                aborted[name] += not run_once(entry, data, tmp / f"run{i}-{len(name)}")
            print(f"\rround {i + 1}/{args.rounds}: " + ", ".join(f"{k} {v}" for k, v in aborted.items()),
                  end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
    print(f"{'entry':<30} {'aborted runs':>13}  ({args.rounds} rounds, {time.perf_counter() - start:.0f} s)")
    for name, n in aborted.items():
        print(f"{name:<30} {n:>6} of {args.rounds}")


if __name__ == "__main__":
    main()
