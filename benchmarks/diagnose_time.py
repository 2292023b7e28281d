"""Wall time of ``pyro-gen diagnose`` on a default run, against the bare importance-sampling pass it
is built around, measured side by side in one process-pair.

Target (BENCHMARKS.md / the diagnostics brief): ``pyro-gen diagnose RUN`` with the defaults
(K up to 5000 on 500 test images, a 100-image amortization-gap sample) finishes in <= 5 minutes on
the project's 2-core machine.

Baseline: ``pyro_gen.evaluate.importance_log_likelihood`` with K = 5000 on the same 500 test
images -- the log weights the diagnosis needs anyway; the ratio says what everything else
(k-hat, the gap optimization, gradient noise, ArviZ, figures, report) costs on top.

    python benchmarks/diagnose_time.py --run runs/vae-...      # an existing default run
    python benchmarks/diagnose_time.py                          # trains a default run first (~2 min)
    python benchmarks/diagnose_time.py --tiny                   # seconds: proves the script works

Each repeat runs ``pyro-gen diagnose`` in a fresh process (imports included, as a user sees it)
and the baseline in another (its time excludes imports and loading); the figures are medians over
repeats.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BASELINE = """
import sys, time, torch
sys.path.insert(0, {root!r})
from pyro_gen.run import load_run, split_tensor
from pyro_gen.evaluate import importance_log_likelihood
from pyro_gen.diagnostics.pipeline import _evenly
t0 = time.perf_counter()
run = load_run({run!r})
x, _ = split_tensor(run.load_data(), run.vae.likelihood.binarize)
x = x[torch.as_tensor(_evenly(len(x), {points}))]
torch.manual_seed(0)
importance_log_likelihood(run.vae, x, k={k})
print(time.perf_counter() - t0)
"""


def _python(code: str) -> float:
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, help="a run directory (default: train a default run first)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--tiny", action="store_true", help="a tiny run and small K: checks the script, not the target")
    args = ap.parse_args()

    k, points, gap_points, extra = 5000, 500, 100, []
    tmp = Path(tempfile.mkdtemp(prefix="diagnose_time_"))
    run = args.run
    if run is None:
        run = tmp / "run"
        train = [sys.executable, "-m", "pyro_gen", "train", "--out", str(run), "--quiet"]
        if args.tiny:
            train += ["--epochs", "1", "--hidden", "32", "--latent-dim", "4"]
        print("training a run:", " ".join(train[3:]), flush=True)
        subprocess.run(train, check=True, cwd=ROOT)
    if args.tiny:
        k, points, gap_points, extra = 200, 50, 5, ["--gap-steps", "20", "--grad-repeats", "5"]

    ours, base, stages = [], [], {}
    for _ in range(args.repeats):
        out = tmp / "diag"
        out.mkdir(exist_ok=True)
        cmd = [sys.executable, "-m", "pyro_gen", "diagnose", str(run), "--k-max", str(k), "--points", str(points),
               "--gap-points", str(gap_points), "--quiet", *extra]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        ours.append(time.perf_counter() - t0)
        stages = json.loads((run / "diagnostics.json").read_text())["seconds"]
        base.append(_python(BASELINE.format(root=str(ROOT), run=str(run), points=points, k=k)))

    med_ours, med_base = statistics.median(ours), statistics.median(base)
    print(f"\n{'':42s}{'seconds':>10s}")
    print(f"{'pyro-gen diagnose (whole command)':42s}{med_ours:10.1f}")
    print(f"{f'baseline: log p(x), K={k}, {points} images':42s}{med_base:10.1f}")
    print(f"{'ratio diagnose / baseline':42s}{med_ours / med_base:10.2f}")
    print(f"{'target for diagnose (defaults, default run)':42s}{300.0:10.1f}"
          + ("   (tiny mode: not comparable)" if args.tiny else ""))
    print("stages of the last diagnose run (s): "
          + ", ".join(f"{name} {sec:.1f}" for name, sec in stages.items()))


if __name__ == "__main__":
    main()
