"""Forward-and-backward time of a trained model on an IWAE bound with subnormal floats flushed to zero
(what the engine does while it trains, :func:`pyro_gen.devices.flush_denormals`)
against the same step with them kept (the baseline: torch's default).

The importance weights of a trained model underflow into subnormals, and the backward pass
multiplies them through the decoder; the effect grows as training sharpens the posterior, so the
model is trained first (``--epochs``, or a finished run with ``--run``). Both variants then take
steps (loss and backward, the parameters fixed) on the same minibatch of training images,
interleaved in blocks; the figure is the median over blocks of the per-block ratio. One thread
(``--threads``). The plain ELBO's step is timed the same way for comparison.

    python benchmarks/subnormal_step.py                              # VampPrior VAE, 40 epochs of IWAE
    python benchmarks/subnormal_step.py --run runs/my-hvae --objective iwae:5
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyro_gen.data import load_bundled  # noqa: E402
from pyro_gen.objectives import make_objective, training_loss  # noqa: E402
from pyro_gen.run import load_run  # noqa: E402
from pyro_gen.train import TrainSettings, fit, make_optimizer  # noqa: E402
from pyro_gen.vae import ModelSpec  # noqa: E402


def seconds(step, n: int, flush: bool) -> float:
    torch.set_flush_denormal(flush)
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        return (time.perf_counter() - t0) / n
    finally:
        torch.set_flush_denormal(False)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a finished run to time (default: train a VampPrior VAE first)")
    parser.add_argument("--epochs", type=int, default=40, help="epochs of IWAE training of the default model")
    parser.add_argument("--objective", default="iwae:5")
    parser.add_argument("--blocks", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_bundled()
    if args.run is None:
        torch.manual_seed(0)
        model = ModelSpec((1, 28, 28), prior="vamp:100").build()
        print(f"training a VampPrior VAE (vamp:100, {args.objective}) for {args.epochs} epochs ...", flush=True)
        fit(model, data.train_x, TrainSettings(epochs=args.epochs, objective=args.objective), progress=False)
        elbo_kind, name = "meanfield", f"VAE vamp:100 after {args.epochs} epochs"
    else:
        model = load_run(args.run).model
        elbo_kind, name = "trace", str(args.run)
    x = torch.bernoulli(torch.as_tensor(data.train_x[:128]), generator=torch.Generator().manual_seed(0))
    model.train()
    print(f"{name}: loss and backward, batch 128, {args.threads} thread(s); median of {args.blocks} interleaved "
          f"blocks of {args.steps} steps")
    print(f"{'objective':<10} {'kept ms':>9} {'flushed ms':>11} {'kept/flushed':>13}")
    for objective in (args.objective, "elbo"):
        loss_fn = make_objective(objective, elbo_kind)
        opt = make_optimizer(model.parameters(), TrainSettings())

        def step():
            opt.zero_grad()
            training_loss(loss_fn, model, x, num_data=len(data.train_x)).backward()
        step(), seconds(step, 2, True), seconds(step, 2, False)  # warm-up
        rows = [(seconds(step, args.steps, False), seconds(step, args.steps, True)) for _ in range(args.blocks)]
        kept, flushed = (statistics.median(r[i] for r in rows) for i in range(2))
        ratio = statistics.median(r[0] / r[1] for r in rows)
        print(f"{objective:<10} {1e3 * kept:>9.1f} {1e3 * flushed:>11.1f} {ratio:>12.2f}x", flush=True)


if __name__ == "__main__":
    main()
