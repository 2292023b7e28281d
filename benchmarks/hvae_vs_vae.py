"""Hierarchical VAE (``--model hvae``) against the one-layer VAE at the same wall time, MNIST-10k.

Both go through ``pyro-gen train`` (the one-layer VAE with no flags: the default budget, 100
epochs) and ``pyro-gen evaluate`` (test ELBO, importance-sampled test NLL with K = 5000 on the
1,000 test images). The hierarchy gets as many epochs as fit in the one-layer run's measured
training time (its epoch time, diagnostics included, calibrated on a 10-epoch run first), so both had the same wall
time; extra ``pyro-gen train`` flags for the hierarchy go after ``--hvae-flags``. Target: the
hierarchy at least 1 nat better. The hierarchy's family trains with 10 epochs of KL warm-up by
default, so a third row gives the one-layer VAE the same warm-up (100 epochs), to show what the
warm-up alone is worth.

    python benchmarks/hvae_vs_vae.py [--out DIR] [--hvae-flags "--objective iwae:5"]
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pyro_gen(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pyro_gen", *args], check=True, cwd=ROOT)


def trained(run: Path) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    rows = (run / "metrics.jsonl").read_text().splitlines()
    summary["epoch_seconds"] = summary["train_seconds"] / len(rows)  # the whole epoch: diagnostics included
    return summary


def evaluated(run: Path, k: int) -> dict:
    out = subprocess.run([sys.executable, "-m", "pyro_gen", "evaluate", str(run), "--k", str(k), "--json",
                          "--quiet"], check=True, cwd=ROOT, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for the runs (default: a temporary one)")
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--hvae-flags", default="", help="more pyro-gen train flags for the hierarchy")
    parser.add_argument("--vae-flags", default="", help="more pyro-gen train flags for the one-layer VAE")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="hvae-vs-vae-"))
    extra = shlex.split(args.hvae_flags)
    pyro_gen("train", "--out", str(out / "vae"), "--quiet", *shlex.split(args.vae_flags))
    vae = trained(out / "vae")
    pyro_gen("train", "--out", str(out / "vae_warmup"), "--quiet", "--warmup-epochs", "10",
             *shlex.split(args.vae_flags))
    vae_warmup = trained(out / "vae_warmup")
    pyro_gen("train", "--model", "hvae", "--out", str(out / "calibration"), "--epochs", "10", "--quiet", *extra)
    epochs = max(1, int(vae["train_seconds"] / trained(out / "calibration")["epoch_seconds"]))
    pyro_gen("train", "--model", "hvae", "--out", str(out / "hvae"), "--epochs", str(epochs), "--quiet", *extra)
    hvae = trained(out / "hvae")
    rows = []
    for name, run, info in (("vae (default)", out / "vae", vae),
                            ("vae --warmup-epochs 10", out / "vae_warmup", vae_warmup),
                            (f"hvae {args.hvae_flags}".strip(), out / "hvae", hvae)):
        ev = evaluated(run, args.k)
        rows.append((name, info["epochs"], info["train_seconds"], ev["test_elbo"], ev["test_nll"]))
    print(f"MNIST-10k, test NLL with K={args.k} on 1000 test images; runs in {out}")
    print(f"{'model':32s} {'epochs':>6s} {'train s':>8s} {'test ELBO':>10s} {'test NLL':>9s}")
    for name, ep, sec, elbo, nll in rows:
        print(f"{name:32s} {ep:6d} {sec:8.1f} {elbo:10.2f} {nll:9.2f}")
    print(f"hvae - vae test NLL: {rows[2][4] - rows[0][4]:+.2f} nats (target <= -1.00); train-time ratio "
          f"{rows[2][2] / rows[0][2]:.2f}")
    print(f"hvae - (vae with the same warm-up) test NLL: {rows[2][4] - rows[1][4]:+.2f} nats")


if __name__ == "__main__":
    main()
