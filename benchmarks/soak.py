"""Soak test: short runs killed with SIGKILL at random moments and resumed, against uninterrupted runs.

For each of ``--runs`` seeds: train an uninterrupted reference run; train the same run again,
kill it (SIGKILL) at a random moment, resume it with ``--resume`` (killing it again while kills
remain), until it finishes; then compare final parameters and metrics with the reference
(bitwise on CPU). Prints runs, kills survived, and every difference found.

    python benchmarks/soak.py --runs 20 --kills 2
"""
from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pyro_gen.checkpoint import load_checkpoint  # noqa: E402
from pyro_gen.data import load_bundled  # noqa: E402

FLAGS = ["--hidden", "32", "--latent-dim", "4", "--batch-size", "32", "--epochs", "6", "--quiet"]


def train(out: Path, data: Path, seed: int, resume: bool = False, kill_after: float | None = None) -> bool:
    """Run ``pyro-gen train``; with ``kill_after`` send SIGKILL after that many seconds.
    :returns: whether the process finished by itself."""
    cmd = [sys.executable, "-m", "pyro_gen", "train", "--out", str(out)]
    cmd += ["--resume", "--quiet"] if resume else ["--data", str(data), "--seed", str(seed), *FLAGS]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        proc.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return False
    if proc.returncode != 0:
        raise RuntimeError(f"train failed: {proc.stderr.read().decode()[-500:]}")
    return True


def compare(a: Path, b: Path) -> list:
    diffs = []
    sa, sb = load_checkpoint(a / "checkpoint.pt"), load_checkpoint(b / "checkpoint.pt")
    for name, t in sa["model"].items():
        if not torch.equal(t, sb["model"][name]):
            diffs.append(f"parameter {name} differs (max {float((t - sb['model'][name]).abs().max()):.3g})")
    rows = [[{k: v for k, v in json.loads(line).items() if not k.endswith("seconds")}  # timings differ
             for line in (d / "metrics.jsonl").read_text().splitlines()] for d in (a, b)]
    if rows[0] != rows[1]:
        diffs.append("metrics.jsonl differs")
    return diffs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--kills", type=int, default=2, help="kills per run (each at a random moment)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    kills_survived, differing, started = 0, [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "data.npz"
        ds = load_bundled()
        np.savez(data, images=(ds.train_x[:1100, 0] * 255).astype(np.uint8))
        t0 = time.perf_counter()
        train(tmp / "probe", data, 0)
        duration = time.perf_counter() - t0
        for run in range(args.runs):
            ref, victim = tmp / f"ref{run}", tmp / f"kill{run}"
            train(ref, data, run)
            kills, finished, resume = 0, False, False
            while not finished:
                if kills < args.kills:
                    finished = train(victim, data, run, resume=resume and (victim / "config.json").exists(),
                                     kill_after=rng.uniform(0.2, 1.0) * duration)
                    kills += not finished
                else:
                    finished = train(victim, data, run, resume=(victim / "config.json").exists())
                resume = True
            kills_survived += kills
            diffs = compare(ref, victim)
            if diffs:
                differing.append((run, diffs))
            print(f"run {run}: killed {kills}x, {'identical' if not diffs else '; '.join(diffs)}", flush=True)
    print(f"\n{args.runs} runs, {kills_survived} kills survived, {len(differing)} runs differing from "
          f"uninterrupted ones, {time.perf_counter() - started:.0f} s")
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
