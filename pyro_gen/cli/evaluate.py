"""``pyro-gen evaluate`` (test ELBO and importance-sampled log-likelihood of a run) and
``pyro-gen sample`` (images drawn from a run's model)."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from .._flags import positive_int
from ._common import UsageError, add_device_flag, device_of, refuse_without_density


def add_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``pyro-gen evaluate`` and its flags to the subcommands ``sub``."""
    ev = sub.add_parser("evaluate", help="test ELBO and importance-sampled log-likelihood of a run",
                        description="Evaluate a run on its test split (or on --data): the ELBO averaged over "
                                    "draws and the importance-sampled -log p(x) with K samples from the guide.")
    ev.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    ev.add_argument("--data", help="evaluate on this data set's test split instead of the run's")
    ev.add_argument("--k", type=positive_int, default=5000, help="importance samples per image (default 5000)")
    ev.add_argument("--draws", type=positive_int, default=10, help="ELBO draws per image (default 10)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    add_device_flag(ev)
    ev.add_argument("--quiet", action="store_true", help="no progress bar")


def add_sample_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``pyro-gen sample`` and its flags to the subcommands ``sub``."""
    sm = sub.add_parser("sample", help="draw images from a trained model",
                        description="Draw codes from the prior and write the decoder's mean images.")
    sm.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    sm.add_argument("-n", type=positive_int, default=64, help="how many images (default 64)")
    sm.add_argument("-o", "--output", type=Path, required=True, help="FILE.png (a grid) or FILE.npy (N x C x H x W)")
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument("--label", type=int, help="draw images of this class only (a cvae or ssvae run)")
    sm.add_argument("--condition", type=_side_vector, metavar="V1,...,VD",
                    help="draw images given this side vector (a cvae run conditioned on side vectors)")
    add_device_flag(sm)


def _side_vector(text: str) -> torch.Tensor:
    """``"0.5,1,-2"`` -> a float tensor of finite numbers."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or not all(np.isfinite(values)):
        raise argparse.ArgumentTypeError(f"expected finite numbers separated by commas, got {text!r}")
    return torch.tensor(values, dtype=torch.get_default_dtype())


def cmd_evaluate(args) -> int:
    from ..evaluate import elbo_per_datum, importance_log_likelihood
    from ..run import conditions, load_run, on_side_vectors, split_tensor

    device = device_of(args)
    refuse_without_density(args.run_dir, "evaluate")
    run = load_run(args.run_dir)
    run.vae.to(device)
    ds = run.load_data(args.data)
    from ..evaluate import has_density
    from ..families import binarizes
    x_test, y_test = split_tensor(ds, binarizes(run.spec))
    if hasattr(run.vae, "classify") and y_test is None:
        raise UsageError(f"this {run.config['model_kind']} run needs test labels, and "
                         f"{args.data or run.config['data']['spec']} has none")
    c_test = conditions(run.config, ds)[1]  # the labels or side vectors a cvae is given
    y_cond = None if c_test is None else torch.as_tensor(c_test, device="cpu")
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    test_elbo = float(elbo_per_datum(run.vae, x_test, num_draws=args.draws, y=y_cond).mean())
    nll = None
    if has_density(run.vae, x_test, y_cond):
        nll = -float(importance_log_likelihood(run.vae, x_test, k=args.k, progress=not (args.quiet or args.json),
                                               y=y_cond).mean())
    result = {"test_elbo": test_elbo, "test_nll": nll, "k": args.k, "draws": args.draws, "n_test": len(x_test),
              "data": args.data or run.config["data"]["spec"], "seconds": time.perf_counter() - t0}
    if y_cond is not None:
        given = "side vectors" if on_side_vectors(run.config) else "labels"
        result["conditional"] = f"ELBO and NLL are of log p(x | y), given the test {given}"
    if hasattr(run.vae, "classify"):
        from ..ssvae import accuracy
        result["test_accuracy"] = accuracy(run.vae, x_test, y_test)
    if nll is None:
        result["note"] = "the deterministic autoencoder has no density q(z|x): no importance-sampled likelihood"
    if args.json:
        print(json.dumps(result))
    else:
        print(f"test ELBO {test_elbo:.2f} nats/image ({args.draws} draws, {len(x_test)} test images)")
        print(f"test NLL  {nll:.2f} nats/image (importance sampled, K={args.k})" if nll is not None
              else "test NLL  n/a: " + result["note"])
        if "conditional" in result:
            print(result["conditional"])
        if "test_accuracy" in result:
            print(f"test accuracy {result['test_accuracy']:.4f} (most probable class under q(y|x))")
    return 0


def cmd_sample(args) -> int:
    from ..checkpoint import atomic_write
    from ..plots import plot_images
    from ..run import load_run, on_side_vectors

    suffix = args.output.suffix.lower()
    if suffix not in (".png", ".npy"):
        raise UsageError(f"{args.output}: the output must end in .png or .npy")
    if not args.output.parent.is_dir():
        raise UsageError(f"{args.output}: folder {args.output.parent} does not exist")
    device = device_of(args)
    run = load_run(args.run_dir)  # a run of any family, the GAN's included
    model = run.model.to(device)
    y = None
    kind = run.config.get("model_kind", "vae")
    on_vectors = on_side_vectors(run.config)
    if args.label is not None:
        classes = getattr(model, "num_classes", None) or getattr(model, "condition_dim", 0)
        if not classes or on_vectors:
            raise UsageError(f"--label needs a conditional run on labels (--model cvae or ssvae); {args.run_dir} is a "
                             f"{kind}" + (" conditioned on side vectors: use --condition" if on_vectors else ""))
        if not 0 <= args.label < classes:
            raise UsageError(f"--label {args.label} is out of range: this run has classes 0 to {classes - 1}")
        y = torch.full((args.n,), args.label, dtype=torch.long, device=device)
    elif args.condition is not None:
        if not on_vectors:
            raise UsageError(f"--condition needs a cvae run conditioned on side vectors; {args.run_dir} is a {kind}"
                             + (" conditioned on labels: use --label" if run.family.inputs else ""))
        if len(args.condition) != model.condition_dim:
            raise UsageError(f"--condition has {len(args.condition)} numbers; this run's side vectors have "
                             f"{model.condition_dim}")
        y = args.condition.expand(args.n, -1)
    elif on_vectors:
        dim = model.condition_dim
        raise UsageError(f"{args.run_dir} is conditioned on side vectors of size {dim}: give one with --condition "
                         + ("V" if dim == 1 else "V1,V2" if dim == 2 else f"V1,...,V{dim}"))
    if not callable(getattr(model, "sample", None)):
        raise UsageError(f"{args.run_dir}: {type(model).__name__} defines no sample(n, generator=None) method, so "
                         "pyro-gen sample cannot draw from it; add one that returns n generated x "
                         "(docs/own_model.rst)")
    images = model.sample(args.n, generator=torch.Generator().manual_seed(args.seed),
                          **({} if y is None else {"y": y.to(device)})).cpu().numpy()
    if suffix == ".png":
        plot_images(images, args.output, title=f"{args.n} samples from {args.run_dir}")
    else:
        atomic_write(args.output, lambda f: np.save(f, images.astype(np.float32)))
    print(f"wrote {args.n} samples to {args.output}")
    return 0
