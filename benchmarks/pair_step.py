"""A user's own Pyro pair through the engine against the built-in VAE: training step time with the
same networks, and the generic (trace-based) importance-sampled NLL against the VAE's fast path.

The user's pair is Pyro's VAE tutorial (``pyro.module``, a plate named "data", ``.to_event(1)``)
with the built-in VAE's networks copied into it (784-400-32 softplus MLPs, Bernoulli pixels), so
both compute the same function. Step: :class:`pyro_gen.train.LossModule` forward + backward + the
engine's fused Adam step, batch 128, the same ELBO estimator on both sides (``--elbo``, default
trace), median of interleaved blocks. NLL: K = 5000 on the 1,000 MNIST-10k test images, the
generic path (:func:`pyro_gen.traces.trace_log_weights`, vectorized particles, used for any pair
without a ``log_weights`` method) against
:meth:`pyro_gen.vae.VAE.log_weights`. Targets: step <= 1.10x, NLL <= 1.5x.

    python benchmarks/pair_step.py [--elbo trace|meanfield] [--blocks 15] [--k 5000]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyro_gen.data import binarize_fixed, load_bundled  # noqa: E402
from pyro_gen.evaluate import importance_log_likelihood  # noqa: E402
from pyro_gen.objectives import make_elbo  # noqa: E402
from pyro_gen.train import LossModule, TrainSettings, make_optimizer  # noqa: E402
from pyro_gen.vae import ModelSpec  # noqa: E402


class TutorialPair(nn.Module):
    """Pyro's VAE tutorial around the given encoder body, head and decoder."""

    def __init__(self, vae):
        super().__init__()
        self.encoder, self.head, self.decoder = vae.guide_net.encoder, vae.guide_net.head, vae.decoder
        self.z_dim = vae.latent_dim

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], self.z_dim),
                                             x.new_ones(x.shape[0], self.z_dim)).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(3), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, raw = self.head(self.encoder(x)).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 1e-4).to_event(1))


def step_time(loss_module, opt, x, steps):
    start = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = loss_module(x)
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / steps


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elbo", default="trace", choices=["trace", "meanfield"])
    parser.add_argument("--blocks", type=int, default=15)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--k", type=int, default=5000)
    args = parser.parse_args(argv)
    data = load_bundled()
    x = torch.as_tensor(data.train_x[:128]).bernoulli()
    torch.manual_seed(0)
    vae = ModelSpec(data.image_shape).build()
    pair = TutorialPair(vae)
    elbo = make_elbo(args.elbo)
    settings = TrainSettings()
    ours = {"built-in VAE": (LossModule(elbo, vae, 9000), make_optimizer(vae.parameters(), settings)),
            "tutorial pair": (LossModule(elbo, pair, 9000), make_optimizer(pair.parameters(), settings))}
    times = {name: [] for name in ours}
    with pyro.validation_enabled(False):
        for name, (module, opt) in ours.items():
            step_time(module, opt, x, 5)  # warm-up
        for _ in range(args.blocks):
            for name, (module, opt) in ours.items():
                times[name].append(step_time(module, opt, x, args.steps))
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"training step, batch 128, {args.elbo} ELBO, fused Adam, median of {args.blocks} interleaved blocks "
          f"of {args.steps} steps")
    for name, t in times.items():
        print(f"  {name:14s} {1e3 * med[name]:7.2f} ms (min {1e3 * min(t):.2f}, max {1e3 * max(t):.2f})")
    print(f"  ratio tutorial pair / built-in VAE: {med['tutorial pair'] / med['built-in VAE']:.3f} (target <= 1.10)")

    x_test = torch.as_tensor(binarize_fixed(data.test_x))
    vae.eval()
    start = time.perf_counter()
    fast = importance_log_likelihood(vae, x_test, k=args.k)
    t_fast = time.perf_counter() - start

    class Generic(nn.Module):  # the same VAE without its fast path: evaluated from traces
        def __init__(self):
            super().__init__()
            self.vae = vae

        def model(self, x):
            self.vae.model(x)

        def guide(self, x):
            self.vae.guide(x)

    start = time.perf_counter()
    generic = importance_log_likelihood(Generic(), x_test, k=args.k)
    t_generic = time.perf_counter() - start
    print(f"importance-sampled NLL, K={args.k}, {len(x_test)} test images (untrained default VAE)")
    print(f"  fast path (VAE.log_weights)       {t_fast:6.1f} s   NLL {-float(fast.mean()):.3f}")
    print(f"  generic (trace_log_weights)       {t_generic:6.1f} s   NLL {-float(generic.mean()):.3f}")
    print(f"  ratio generic / fast: {t_generic / t_fast:.2f} (target <= 1.5)")


if __name__ == "__main__":
    main()
