"""Training-step time of a VAE with the VampPrior: the mixture's log-density by matrix products
(:func:`pyro_gen.priors.diagonal_normal_log_prob_matrix`, what ``VampPrior`` uses with a diagonal
guide) against the generic path that expands every code over the K components into an
``(N, K, D)`` tensor (the baseline: the same model with the matrix path switched off), and
against the matrix path as it was before it read the K components themselves: it indexed the
tensors a plate had expanded to ``(particles, batch, K, D)``, whose backward fills a zero tensor of
that shape (the "indexed" column).

Both sides run the same model, minibatch and optimizer; their steps are interleaved in blocks so
that machine noise hits both alike, and the figure is the median over blocks of the per-block
time ratio. One thread (``OMP_NUM_THREADS=1`` or ``--threads``). The standard-normal prior's step
is timed in the same run for scale. Subnormal floats are flushed to zero, as the engine does while
it trains (:func:`pyro_gen.devices.flush_denormals`; ``--keep-subnormals`` times without: a fresh
VampPrior's IWAE step then takes about twice as long).

    python benchmarks/vamp_step.py                          # K = 100, 500; ELBO and IWAE (K=5)
    python benchmarks/vamp_step.py --components 500 --objectives iwae:5 --blocks 5
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyro_gen import priors  # noqa: E402
from pyro_gen.data import load_bundled  # noqa: E402
from pyro_gen.devices import flush_denormals  # noqa: E402
from pyro_gen.objectives import make_objective, training_loss  # noqa: E402
from pyro_gen.train import TrainSettings, make_optimizer  # noqa: E402
from pyro_gen.vae import ModelSpec  # noqa: E402


@contextmanager
def generic_path():
    """The VampPrior's log-density by the expanded ``(N, K, D)`` tensor (the matrix path off)."""
    saved = priors._shared_diagonal_normals
    priors._shared_diagonal_normals = lambda mixture: None
    try:
        yield
    finally:
        priors._shared_diagonal_normals = saved


@contextmanager
def indexed_path():
    """The matrix path reading the components out of the plate-expanded tensors (before the fix)."""
    saved = priors.UniformMixture.expand
    priors.UniformMixture.expand = priors.dist.MixtureSameFamily.expand
    try:
        yield
    finally:
        priors.UniformMixture.expand = saved


def stepper(prior: str, objective: str, x: torch.Tensor, seed: int = 0):
    """A function running one training step (loss, backward, optimizer) of a fresh model."""
    torch.manual_seed(seed)
    vae = ModelSpec((1, 28, 28), prior=prior).build()
    elbo = make_objective(objective, "meanfield")
    opt = make_optimizer(vae.parameters(), TrainSettings())

    def step():
        opt.zero_grad()
        training_loss(elbo, vae, x, num_data=9000).backward()
        opt.step()
    return step


def seconds(step, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - t0) / n


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--components", type=int, nargs="+", default=[100, 500], help="K pseudo-inputs")
    parser.add_argument("--objectives", nargs="+", default=["elbo", "iwae:5"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--blocks", type=int, default=7, help="interleaved blocks (the median is reported)")
    parser.add_argument("--steps", type=int, default=10, help="steps per block")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--keep-subnormals", action="store_true", help="do not flush subnormal floats to zero")
    args = parser.parse_args(argv)
    if args.keep_subnormals:
        return measure(args)
    with flush_denormals():
        return measure(args)


def measure(args):
    torch.set_num_threads(args.threads)
    x = torch.bernoulli(torch.as_tensor(load_bundled().train_x[:args.batch]), generator=torch.Generator().manual_seed(0))

    print(f"one training step, batch {args.batch}, 784-400-32 MLPs, diagonal guide, {args.threads} thread(s); "
          f"median of {args.blocks} interleaved blocks of {args.steps} steps")
    print(f"{'prior':<10} {'objective':<9} {'standard ms':>11} {'generic ms':>11} {'indexed ms':>10} "
          f"{'matrix ms':>10} {'generic/matrix':>15} {'indexed/matrix':>15}")
    for objective in args.objectives:
        standard = stepper("standard", objective, x)
        for k in args.components:
            ours = stepper(f"vamp:{k}", objective, x)
            base = stepper(f"vamp:{k}", objective, x)
            indexed = stepper(f"vamp:{k}", objective, x)
            with generic_path():
                base()  # warm-up
            with indexed_path():
                indexed()
            ours(), standard()
            rows = []
            for _ in range(args.blocks):
                with generic_path():
                    b = seconds(base, args.steps)
                with indexed_path():
                    i = seconds(indexed, args.steps)
                o = seconds(ours, args.steps)
                s = seconds(standard, args.steps)
                rows.append((s, b, i, o))
            s, b, i, o = (statistics.median(r[j] for r in rows) for j in range(4))
            ratio = statistics.median(r[1] / r[3] for r in rows)
            ratio_indexed = statistics.median(r[2] / r[3] for r in rows)
            print(f"{'vamp:' + str(k):<10} {objective:<9} {1e3 * s:>11.1f} {1e3 * b:>11.1f} {1e3 * i:>10.1f} "
                  f"{1e3 * o:>10.1f} {ratio:>14.2f}x {ratio_indexed:>14.2f}x", flush=True)


if __name__ == "__main__":
    main()
