"""On an accelerator against the CPU: training steps per second, the K = 5000 test NLL, and the
default ``pyro-gen train`` run's wall time and test ELBO, all measured in the same run.

Needs a machine with CUDA (or ``--device mps``); on a machine without one it says so and exits 2.
Targets (shared/BENCHMARKS.md): the default run at least 5x faster than on the 2 CPU cores, with the
same test ELBO within Monte Carlo error.

    python benchmarks/gpu.py [--device cuda] [--steps 200] [--skip-default-run]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pyro_gen.data import binarize_fixed, load_bundled  # noqa: E402
from pyro_gen.devices import resolve_device  # noqa: E402
from pyro_gen.errors import InputError  # noqa: E402
from pyro_gen.evaluate import importance_log_likelihood  # noqa: E402
from pyro_gen.objectives import make_elbo  # noqa: E402
from pyro_gen.train import LossModule, TrainSettings, make_optimizer  # noqa: E402
from pyro_gen.vae import ModelSpec  # noqa: E402


def steps_per_second(device: torch.device, steps: int, batch: int = 128) -> float:
    data = load_bundled()
    torch.manual_seed(0)
    vae = ModelSpec(data.image_shape).build().to(device)
    module, opt = LossModule(make_elbo("meanfield"), vae, 9000), make_optimizer(vae.parameters(), TrainSettings())
    x = torch.as_tensor(data.train_x[:batch], device="cpu").bernoulli().to(device)
    for _ in range(10):
        opt.zero_grad(set_to_none=True)
        module(x).backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        module(x).backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


def nll_seconds(device: torch.device, k: int) -> float:
    data = load_bundled()
    torch.manual_seed(0)
    vae = ModelSpec(data.image_shape).build().to(device).eval()
    x = torch.as_tensor(binarize_fixed(data.test_x), device="cpu")
    start = time.perf_counter()
    importance_log_likelihood(vae, x, k=k)
    return time.perf_counter() - start


def default_run(device: str, out: Path) -> dict:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pyro_gen", "train", "--out", str(out), "--device", device, "--quiet"],
                   check=True, cwd=ROOT, env=dict(os.environ, MPLBACKEND="Agg"))
    summary = json.loads((out / "summary.json").read_text())
    return {"wall": time.perf_counter() - start, "train": summary["train_seconds"], "test_elbo": summary["test_elbo"]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--skip-default-run", action="store_true")
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except InputError as e:
        print(f"benchmarks/gpu.py: {e}", file=sys.stderr)
        raise SystemExit(2)
    cpu = torch.device("cpu")
    rows = [("training steps per second (batch 128)", steps_per_second(cpu, args.steps),
             steps_per_second(device, args.steps)),
            (f"test NLL, K={args.k}, 1000 images (s)", nll_seconds(cpu, args.k), nll_seconds(device, args.k))]
    print(f"{'':40s} {'cpu':>10s} {str(device):>10s} {'ratio':>7s}")
    for name, a, b in rows:
        print(f"{name:40s} {a:10.2f} {b:10.2f} {max(a, b) / min(a, b):7.2f}x")
    if not args.skip_default_run:
        with tempfile.TemporaryDirectory() as tmp:
            c, g = default_run("cpu", Path(tmp) / "cpu"), default_run(str(device), Path(tmp) / "dev")
        print(f"default pyro-gen train: cpu {c['train']:.1f} s (test ELBO {c['test_elbo']:.2f}), {device} "
              f"{g['train']:.1f} s (test ELBO {g['test_elbo']:.2f}): {c['train'] / g['train']:.2f}x faster "
              "(target >= 5x, the same ELBO within Monte Carlo error)")


if __name__ == "__main__":
    main()
