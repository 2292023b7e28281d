"""Training-step time of a pyro_gen VAE against a hand-written PyTorch VAE with the same networks.

Both sides use the same ``VAE`` modules (encoder, heads, decoder) and ``torch.optim.Adam``; the
hand-written side computes the same ELBO by hand (reparameterized Normal draw, Bernoulli
log-likelihood from logits, Monte Carlo KL for ``Trace_ELBO`` or the closed-form KL for
``TraceMeanField_ELBO``). Steps of the two are interleaved in blocks so that machine noise hits
both alike; the figure is the median over blocks of the per-block time ratio. Distribution
argument checks are off on both sides, as in ``fit()`` after its first step.

With ``--fit-optimizer`` our side uses the optimizer ``fit()`` builds (Adam fused into one
kernel) while the hand-written side keeps the default ``torch.optim.Adam``: the step a user of
each actually runs.

    python benchmarks/step_time.py            # batch 32, 128, 512
    python benchmarks/step_time.py --batch 128 --blocks 15
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import pyro
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyro_gen.objectives import make_elbo, training_loss  # noqa: E402
from pyro_gen.train import TrainSettings, make_optimizer  # noqa: E402
from pyro_gen.vae import ModelSpec  # noqa: E402


def handwritten_loss(vae, x, analytic_kl: bool):
    """The per-datum negative ELBO of the batch, written directly in PyTorch."""
    q = vae.guide_net(x).base_dist
    loc, scale = q.loc, q.scale
    z = loc + scale * torch.randn_like(loc)
    logits = vae.decoder(z)
    log_lik = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum((1, 2, 3))
    if analytic_kl:
        kl = (0.5 * (scale ** 2 + loc ** 2) - torch.log(scale) - 0.5).sum(-1)
    else:
        log_q = (-0.5 * ((z - loc) / scale) ** 2 - torch.log(scale)).sum(-1)
        log_p = (-0.5 * z ** 2).sum(-1)
        kl = log_q - log_p  # the log(2 pi) terms cancel
    return -(log_lik - kl).mean()


def make_step(kind: str, elbo_name: str, spec: ModelSpec, batch: int, fit_optimizer: bool = False):
    torch.manual_seed(0)
    vae = spec.build()
    if kind == "pyro_gen" and fit_optimizer:
        opt = make_optimizer(vae.parameters(), TrainSettings(lr=1e-3))
    else:
        opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    if kind == "pytorch":
        analytic = elbo_name == "meanfield"

        def loss_fn(x):
            return handwritten_loss(vae, x, analytic)
    else:
        elbo = make_elbo(elbo_name)

        def loss_fn(x):
            return training_loss(elbo, vae, x)

    def step(x):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(x)
        loss.backward()
        opt.step()
        return loss
    return step


def time_steps(step, x, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        step(x)
    return (time.perf_counter() - start) / n


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 128, 512])
    parser.add_argument("--elbo", nargs="+", default=["trace", "meanfield"])
    parser.add_argument("--blocks", type=int, default=11, help="interleaved blocks (the median is reported)")
    parser.add_argument("--steps", type=int, default=30, help="steps per block")
    parser.add_argument("--latent-dim", type=int, default=50)
    parser.add_argument("--hidden", type=int, default=400)
    parser.add_argument("--fit-optimizer", action="store_true",
                        help="our side uses fit()'s optimizer (fused Adam), the hand-written side plain Adam")
    args = parser.parse_args(argv)
    pyro.enable_validation(False)
    spec = ModelSpec((1, 28, 28), latent_dim=args.latent_dim, hidden=(args.hidden,))
    optim = "ours: fused Adam as in fit(), theirs: torch.optim.Adam" if args.fit_optimizer else "torch.optim.Adam on both"
    print(f"nets: 784-{args.hidden}-{args.latent_dim} MLPs, Bernoulli likelihood, {optim}; "
          f"{args.blocks} interleaved blocks of {args.steps} steps; torch threads {torch.get_num_threads()}")
    print(f"{'elbo':<10} {'batch':>5} {'pytorch ms':>11} {'pyro_gen ms':>12} {'ratio':>7}")
    g = torch.Generator().manual_seed(0)
    for elbo_name in args.elbo:
        for batch in args.batch:
            x = torch.bernoulli(torch.rand(batch, 1, 28, 28, generator=g) * 0.4, generator=g)
            steps = {k: make_step(k, elbo_name, spec, batch, args.fit_optimizer) for k in ("pytorch", "pyro_gen")}
            for s in steps.values():  # warm up
                time_steps(s, x, 5)
            times = {k: [] for k in steps}
            ratios = []
            for _ in range(args.blocks):
                for k, s in steps.items():
                    times[k].append(time_steps(s, x, args.steps))
                ratios.append(times["pyro_gen"][-1] / times["pytorch"][-1])
            med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            print(f"{elbo_name:<10} {batch:>5} {med['pytorch']:>11.3f} {med['pyro_gen']:>12.3f} "
                  f"{statistics.median(ratios):>6.3f}x")


if __name__ == "__main__":
    main()
