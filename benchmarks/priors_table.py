"""Priors x guides on the MNIST-10k protocol at an equal training budget.

Every configuration (a ``PRIOR+GUIDE`` pair of spec strings) is trained from the same seed for
the same number of epochs with the same settings (those of a default ``pyro-gen train``), then
measured on the 1,000 binarized test images (shared/BENCHMARKS.md):

- test ELBO: mean single-sample ELBO, averaged over ``--draws`` draws;
- test NLL: importance-sampled -log p(x) with K samples from the guide (Burda et al. 2015);
- active units: coordinates d with Cov_x(E_q[z_d | x]) > 0.01 (Burda et al. 2015), E_q by
  ``VAE.encode`` (a Monte Carlo mean for flow guides);
- training time (wall clock of ``fit``; the machine is shared, so compare the ratio column,
  measured in this same run).

The first row, ``standard+diagonal``, is the baseline; the other rows show their NLL difference
to it (negative = better) and their time ratio.

    python benchmarks/priors_table.py                                   # the full table (~30+ min)
    python benchmarks/priors_table.py --epochs 1 --k 50 --configs standard+diagonal,vamp:50+diagonal
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyro_gen.data import load_bundled  # noqa: E402
from pyro_gen.evaluate import elbo_per_datum, importance_log_likelihood  # noqa: E402
from pyro_gen.run import split_tensor  # noqa: E402
from pyro_gen.train import TrainSettings, fit  # noqa: E402
from pyro_gen.vae import ModelSpec  # noqa: E402

BASELINE = "standard+diagonal"
DEFAULT_CONFIGS = [BASELINE, "learned+diagonal", "mog:10+diagonal", "vamp:100+diagonal", "flow:2+diagonal",
                   "flow:2:spline+diagonal", "studentt+diagonal", "standard+fullrank", "standard+iaf:2",
                   "vamp:100+iaf:2"]


@dataclass
class Row:
    config: str
    test_elbo: float
    test_nll: Optional[float]
    active_units: int
    latent_dim: int
    train_seconds: float


@torch.no_grad()
def active_units(vae, x: torch.Tensor, threshold: float = 0.01, batch_size: int = 500) -> int:
    """Number of coordinates d with Cov_x(E_q[z_d | x]) > threshold (Burda et al. 2015)."""
    means = torch.cat([vae.encode(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    return int((means.var(0) > threshold).sum())


def run_config(config: str, train_x, x_test: torch.Tensor, settings: TrainSettings, latent_dim: int,
               hidden, k: int, draws: int) -> Row:
    prior, _, guide = config.partition("+")
    if not guide:
        raise SystemExit(f"config {config!r}: expected PRIOR+GUIDE, e.g. vamp:50+diagonal")
    torch.manual_seed(settings.seed)
    spec = ModelSpec(image_shape=tuple(train_x.shape[1:]), latent_dim=latent_dim, hidden=tuple(hidden),
                     prior=prior, guide=guide)
    vae = spec.build()
    t0 = time.perf_counter()
    fit(vae, train_x, settings, progress=False)
    seconds = time.perf_counter() - t0
    torch.manual_seed(settings.seed)
    elbo = float(elbo_per_datum(vae, x_test, num_draws=draws).mean())
    nll = None if vae.guide_net.deterministic else -float(importance_log_likelihood(vae, x_test, k=k).mean())
    return Row(config, elbo, nll, active_units(vae, x_test), latent_dim, seconds)


def markdown(rows: List[Row], k: int, epochs: int) -> str:
    base = rows[0]
    lines = [f"| prior+guide | test ELBO | test NLL (K={k}) | ΔNLL vs {base.config} | active units | "
             f"train s ({epochs} epochs) | time ratio |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        nll = "n/a" if r.test_nll is None else f"{r.test_nll:.2f}"
        if r is base:
            delta = "baseline"
        elif r.test_nll is None or base.test_nll is None:
            delta = "n/a"
        else:
            delta = f"{r.test_nll - base.test_nll:+.2f}"
        lines.append(f"| {r.config} | {r.test_elbo:.2f} | {nll} | {delta} | {r.active_units}/{r.latent_dim} | "
                     f"{r.train_seconds:.1f} | {r.train_seconds / base.train_seconds:.2f}x |")
    return "\n".join(lines)


def main(argv=None) -> int:
    defaults, spec_defaults = TrainSettings(), ModelSpec(image_shape=(1, 28, 28))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                        help=f"comma-separated PRIOR+GUIDE spec pairs; {BASELINE} is always run first as the baseline")
    parser.add_argument("--epochs", type=int, default=defaults.epochs,
                        help=f"training budget of every configuration (default {defaults.epochs}, as pyro-gen train)")
    parser.add_argument("--k", type=int, default=5000, help="importance samples for the test NLL (default 5000)")
    parser.add_argument("--draws", type=int, default=10, help="ELBO draws per test image (default 10)")
    parser.add_argument("--latent-dim", type=int, default=spec_defaults.latent_dim)
    parser.add_argument("--hidden", default=",".join(map(str, spec_defaults.hidden)))
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)

    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    configs = [BASELINE] + [c for c in configs if c != BASELINE]
    settings = TrainSettings(epochs=args.epochs, seed=args.seed)
    hidden = [int(h) for h in args.hidden.split(",")]
    data = load_bundled()
    x_test, _ = split_tensor(data, likelihood_binarizes=True)
    print(f"MNIST-10k: {len(data.train_x)} train / {len(x_test)} test images; {args.epochs} epochs each, "
          f"latent {args.latent_dim}, hidden {hidden}, elbo {settings.elbo}, batch {settings.batch_size}, "
          f"lr {settings.lr}; torch threads {torch.get_num_threads()}", file=sys.stderr)
    # untimed warm-up (first-call costs of torch and Pyro would otherwise land on the baseline)
    run_config(BASELINE, data.train_x[:512], x_test[:50], TrainSettings(epochs=1, seed=args.seed), args.latent_dim,
               hidden, 5, 1)
    rows = []
    for config in configs:
        t0 = time.perf_counter()
        row = run_config(config, data.train_x, x_test, settings, args.latent_dim, hidden, args.k, args.draws)
        rows.append(row)
        print(f"  {config}: ELBO {row.test_elbo:.2f}, NLL {row.test_nll if row.test_nll is None else round(row.test_nll, 2)}"
              f", AU {row.active_units}, train {row.train_seconds:.1f} s (total {time.perf_counter() - t0:.1f} s)",
              file=sys.stderr)
    print(markdown(rows, args.k, args.epochs))
    if args.json is not None:
        args.json.write_text(json.dumps([r.__dict__ for r in rows], indent=1))
    if any(r.test_nll is not None and not math.isfinite(r.test_nll) for r in rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
