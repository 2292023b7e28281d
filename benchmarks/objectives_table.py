"""Training objectives side by side on MNIST-10k: the ELBO (the baseline row) against the IWAE bound
(K = 5, 50), a β-VAE, KL warm-up (linear and cyclical) and free bits, at an equal budget.

Every row trains the same model (``--latent-dim``, ``--hidden`` MLPs, Bernoulli likelihood,
standard prior, diagonal guide) with the same optimizer, batch size, learning-rate schedule and
seed on the 9,000 dynamically binarized training images, and is scored on the 1,000 test images
binarized once with seed 0 (BENCHMARKS.md): test ELBO (β = 1, mean of 10 draws), test NLL
(importance sampled, ``--nll-k`` = 5000 by default), active units (Burda et al. 2015:
Cov_x E_q[z_d] > 0.01) and training seconds. The budget is the same for every row: the same
number of epochs (``--epochs``, default 100 as ``pyro-gen train``), hence the same gradient steps
on the same minibatches and the same learning-rate schedule; the training time each objective
needed for it is a column of the table. (An earlier version turned a wall-clock budget into
epochs with a short timing probe; on this shared machine the probe was too noisy to give equal
times, and a cosine schedule needs its length in advance, so equal epochs it is.)

    python benchmarks/objectives_table.py                         # the full table (about 30 min here)
    python benchmarks/objectives_table.py --epochs 30             # a shorter equal budget
    python benchmarks/objectives_table.py --quick                 # tiny sizes: proves it runs (~1 min)

Burda et al. (2015, Table 1; full MNIST, 1 stochastic layer) for orientation: VAE 86.76, IWAE
(K=50) 84.78 nats; expect a few nats worse on 9,000 training images.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pyro_gen.data import binarize_fixed, load_bundled  # noqa: E402
from pyro_gen.diagnostics import active_units  # noqa: E402
from pyro_gen.evaluate import elbo_per_datum, importance_log_likelihood  # noqa: E402
from pyro_gen.train import TrainSettings, fit  # noqa: E402
from pyro_gen.vae import ModelSpec  # noqa: E402


def rows(epochs: int, beta: float, free_bits: float):
    """(name, TrainSettings changes): the ELBO row first (the baseline)."""
    warm = max(1, epochs // 10)
    cycle = max(1, epochs // 8)  # Fu et al.: 4 cycles, R = 0.5
    return [("ELBO (baseline)", {}),
            ("IWAE K=5", {"objective": "iwae:5"}),
            ("IWAE K=50", {"objective": "iwae:50"}),
            (f"beta-VAE beta={beta:g}", {"beta": beta}),
            (f"warm-up linear {warm} ep", {"warmup_epochs": warm}),
            (f"warm-up cyclical {cycle} ep", {"warmup_epochs": cycle, "kl_schedule": "cyclical"}),
            (f"free bits {free_bits:g} nats/dim", {"free_bits": free_bits})]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100, help="epochs per row (default 100)")
    parser.add_argument("--beta", type=float, default=2.0, help="beta of the beta-VAE row (default 2)")
    parser.add_argument("--free-bits", type=float, default=0.5, help="lambda of the free-bits row (default 0.5)")
    parser.add_argument("--latent-dim", type=int, default=50)
    parser.add_argument("--hidden", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=TrainSettings.lr, help=f"default {TrainSettings.lr}")
    parser.add_argument("--nll-k", type=int, default=5000)
    parser.add_argument("--train-size", type=int, default=None, help="use only the first N training images")
    parser.add_argument("--test-size", type=int, default=None, help="score only the first N test images")
    parser.add_argument("--only", help="comma-separated row numbers to run (1 = the baseline), e.g. 1,2")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes to prove the script runs: 2 epochs, 1,000 train / 100 test images, "
                             "16 latents, 64 hidden, K = 100")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.latent_dim, args.hidden, args.nll_k = 2, 16, 64, 100
        args.train_size, args.test_size = args.train_size or 1000, args.test_size or 100

    data = load_bundled()
    x_train = data.train_x[:args.train_size]
    x_test = torch.as_tensor(binarize_fixed(data.test_x, seed=0))[:args.test_size]
    spec = ModelSpec(data.image_shape, latent_dim=args.latent_dim, hidden=(args.hidden,))
    base = TrainSettings(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=0)  # default ELBO estimator
    table = rows(args.epochs, args.beta, args.free_bits)
    chosen = range(len(table)) if not args.only else [int(i) - 1 for i in args.only.split(",")]
    print(f"MNIST-10k: {len(x_train)} train / {len(x_test)} test images; {args.latent_dim} latents, "
          f"{args.hidden} hidden; batch {args.batch_size}, lr {args.lr}, cosine schedule, ELBO estimator {base.elbo}; "
          f"{args.epochs} epochs per row",
          flush=True)
    for _, changes in table:  # warm up every code path (imports, allocator) before any timing
        fit(spec.build(), x_train[:2 * args.batch_size], replace(base, epochs=1, **changes), progress=False)
    header = (f"{'objective':<28} {'epochs':>6} {'train s':>8} {'test ELBO':>10} {'NLL K=' + str(args.nll_k):>11} "
              f"{'AU':>4}")
    results = []
    for i in chosen:
        name, changes = table[i]
        settings = replace(base, **changes)
        torch.manual_seed(settings.seed)
        vae = spec.build()
        start = time.perf_counter()
        fit(vae, x_train, settings, progress=False)
        seconds = time.perf_counter() - start
        torch.manual_seed(0)
        elbo = float(elbo_per_datum(vae, x_test, num_draws=10).mean())
        nll = -float(importance_log_likelihood(vae, x_test, k=args.nll_k).mean())
        au = active_units(vae, x_test)
        results.append((name, settings.epochs, seconds, elbo, nll, au))
        print(f"done: {name} ({seconds:.0f} s)", file=sys.stderr, flush=True)
    print(header)
    for name, epochs, seconds, elbo, nll, au in results:
        print(f"{name:<28} {epochs:>6} {seconds:>8.1f} {elbo:>10.2f} {nll:>11.2f} {au:>4}")
    if results and chosen[0] == 0:
        _, _, s0, e0, n0, _ = results[0]
        print("relative to the ELBO row: " + "; ".join(
            f"{name}: NLL {nll - n0:+.2f} nats, time x{seconds / s0:.2f}"
            for name, _, seconds, _, nll, _ in results[1:]))
    print("test ELBO: beta = 1, mean of 10 draws; NLL: importance sampled with the row's guide; "
          "AU: active units (Cov_x E_q[z_d] > 0.01); train s: one run per row (shared machine: compare ratios)")


if __name__ == "__main__":
    main()
