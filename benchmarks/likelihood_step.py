"""Training-step time of the best configuration's model (the hierarchical VAE with a VampPrior of
100 pseudo-inputs on its top layer, IWAE bound with K = 5, batch 128) with the plain Bernoulli
likelihood and with ``bernoulli-ar`` (:class:`pyro_gen.likelihoods.AutoregressiveBernoulli`), whose
correction is looked up per pattern of the 12 context pixels, and, as the baseline for that lookup,
``bernoulli-ar`` computed pixel by pixel (:meth:`~pyro_gen.likelihoods.LocalContext.per_pixel`,
the same values through a 16-unit hidden layer at every pixel).

All three run the same minibatch (dynamically binarized MNIST-10k images) and optimizer; their
steps are interleaved in blocks so that machine noise hits them alike, and each figure is the
median over blocks of the per-step time (loss, backward, Adam step). One thread; subnormal floats
flushed as in training.

    python benchmarks/likelihood_step.py
    python benchmarks/likelihood_step.py --blocks 9 --steps 20
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyro_gen import likelihoods  # noqa: E402
from pyro_gen.data import binarize, load_bundled  # noqa: E402
from pyro_gen.devices import flush_denormals  # noqa: E402
from pyro_gen.hvae import HVAE  # noqa: E402
from pyro_gen.objectives import make_objective, training_loss  # noqa: E402
from pyro_gen.train import TrainSettings, make_optimizer  # noqa: E402


class PerPixel(likelihoods.AutoregressiveBernoulli):
    """``bernoulli-ar`` without the pattern lookup (the baseline)."""

    def __init__(self):
        super().__init__()
        self.context.forward = self.context.per_pixel


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10, help="steps per block and model")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    x = binarize(torch.as_tensor(load_bundled().train_x[:128]), torch.Generator().manual_seed(0))
    objective = make_objective("iwae:5", "trace", 1)
    cases = {}
    for name in ("bernoulli", "bernoulli-ar", "bernoulli-ar, per pixel"):
        torch.manual_seed(0)
        model = HVAE((1, 28, 28), (64, 32), (400,), likelihood="bernoulli-ar" if "ar" in name else "bernoulli",
                     prior="vamp:100")
        if "per pixel" in name:
            model.likelihood = PerPixel()
        cases[name] = (model, make_optimizer(model.parameters(), TrainSettings(lr=1e-3)))

    def step(model, opt):
        opt.zero_grad(set_to_none=True)
        training_loss(objective, model, x, num_data=9000).backward()
        opt.step()

    times = {name: [] for name in cases}
    with flush_denormals():
        for model, opt in cases.values():  # warm-up
            for _ in range(3):
                step(model, opt)
        for _ in range(args.blocks):
            for name, (model, opt) in cases.items():
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    step(model, opt)
                times[name].append((time.perf_counter() - t0) / args.steps * 1e3)
    base = statistics.median(times["bernoulli"])
    print(f"hvae + vamp:100, IWAE K=5, batch 128, {args.threads} thread(s), median of {args.blocks} blocks "
          f"of {args.steps} steps")
    print(f"{'likelihood':<26} {'ms/step':>8} {'over bernoulli':>15}")
    for name, t in times.items():
        m = statistics.median(t)
        print(f"{name:<26} {m:>8.1f} {m / base:>14.2f}x")


if __name__ == "__main__":
    main()
