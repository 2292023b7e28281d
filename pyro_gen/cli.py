"""The ``pyro-gen`` command line: parses, calls the library, prints.

Exit codes: 0 on success, 2 on bad usage or bad input (one line on standard error naming the
problem), 1 when training fails (e.g. a non-finite loss), 130 when interrupted.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch

from . import __version__
from .checkpoint import CHECKPOINT, CONFIG, RunError, write_json
from .data import DataError, load_data
from ._spec import parse_spec, spec_usage
from .guides import GUIDES
from .likelihoods import LIKELIHOODS
from .nets import NETWORKS
from .objectives import ELBOS
from .priors import PRIORS
from .train import TrainingError, TrainSettings

__all__ = ["main", "build_parser"]

#: ``--model`` names -> the guide family that makes them.
MODELS = {"vae": "diagonal", "ae": "delta"}


class UsageError(ValueError):
    """Bad flags or flag values."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _hidden(text: str) -> tuple:
    try:
        sizes = tuple(int(s) for s in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive widths like 512 or 512,256, got {text!r}")
    return sizes


# Model flags: (flag, ModelSpec field, argparse kwargs). Defaults live in ModelSpec and TrainSettings.
MODEL_FLAGS = [
    ("--latent-dim", "latent_dim", dict(type=_positive_int, help="size of z (default 32)")),
    ("--net", "net", dict(choices=list(NETWORKS), help="encoder/decoder networks (default mlp)")),
    ("--hidden", "hidden", dict(type=_hidden, help="hidden widths, e.g. 512 or 512,256 (default 512)")),
    ("--likelihood", "likelihood", dict(choices=list(LIKELIHOODS), help="p(x|z) (default bernoulli)")),
    ("--prior", "prior", dict(metavar="SPEC", help=f"p(z): {spec_usage(PRIORS)} (default standard)")),
    ("--guide", "guide", dict(metavar="SPEC", help=f"q(z|x): {spec_usage(GUIDES)} (default diagonal; "
                                                   f"--model ae is the delta guide)")),
]
TRAIN_FLAGS = [
    ("--epochs", "epochs", dict(type=_positive_int, help="passes over the training data (default 100)")),
    ("--batch-size", "batch_size", dict(type=_positive_int, help="minibatch size (default 128)")),
    ("--lr", "lr", dict(type=_positive_float, help="peak learning rate (default 2e-3)")),
    ("--elbo", "elbo", dict(choices=list(ELBOS), help="trace: Monte Carlo KL; meanfield: closed-form KL where one exists, "
                                                     "Monte Carlo otherwise; analytic: closed-form KL or an error "
                                                     "(default trace)")),
    ("--optimizer", "optimizer", dict(choices=["adam", "clippedadam"], help="default adam")),
    ("--lr-schedule", "lr_schedule", dict(choices=["cosine", "constant"], help="default cosine")),
    ("--patience", "patience", dict(type=_positive_int, help="early stopping on a held-out 10%% of the training data")),
    ("--seed", "seed", dict(type=int, help="random seed (default 0)")),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyro-gen", description="Deep generative models as Pyro model/guide pairs.")
    parser.add_argument("--version", action="version", version=f"pyro-gen {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = sub.add_parser("train", help="train a model and save a run directory",
                           description="Train a VAE (or autoencoder) by SVI on the ELBO. With no flags: a VAE "
                                       "on the bundled MNIST-10k data with good defaults.")
    train.add_argument("--out", type=Path, help="run directory (default runs/MODEL-TIMESTAMP)")
    train.add_argument("--data", help="mnist-10k (bundled, default), mnist, fashion-mnist, or a .npz/.npy file")
    train.add_argument("--data-root", type=Path, help="folder holding the mnist / fashion-mnist files")
    train.add_argument("--model", choices=list(MODELS), help="vae (default) or ae (deterministic autoencoder)")
    for flag, _, kw in MODEL_FLAGS + TRAIN_FLAGS:
        train.add_argument(flag, **kw)
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint "
                       "(only --epochs may change)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    ev = sub.add_parser("evaluate", help="test ELBO and importance-sampled log-likelihood of a run",
                        description="Evaluate a run on its test split (or on --data): the ELBO averaged over "
                                    "draws and the importance-sampled -log p(x) with K samples from the guide.")
    ev.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    ev.add_argument("--data", help="evaluate on this data set's test split instead of the run's")
    ev.add_argument("--k", type=_positive_int, default=5000, help="importance samples per image (default 5000)")
    ev.add_argument("--draws", type=_positive_int, default=10, help="ELBO draws per image (default 10)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")

    sm = sub.add_parser("sample", help="draw images from a trained model",
                        description="Draw codes from the prior and write the decoder's mean images.")
    sm.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    sm.add_argument("-n", type=_positive_int, default=64, help="how many images (default 64)")
    sm.add_argument("-o", "--output", type=Path, required=True, help="FILE.png (a grid) or FILE.npy (N x C x H x W)")
    sm.add_argument("--seed", type=int, default=0)
    return parser


def _explicit(args, flags) -> dict:
    return {name: getattr(args, flag[2:].replace("-", "_")) for flag, name, _ in flags
            if getattr(args, flag[2:].replace("-", "_")) is not None}


def _model_kind(args, model_kw: dict) -> str:
    """Resolve ``--model`` against ``--guide`` (``ae`` is the delta guide) and check both spec strings."""
    guide = model_kw.get("guide")
    if args.model == "ae" and guide not in (None, MODELS["ae"]):
        raise UsageError(f"--model ae is the deterministic autoencoder (guide delta) and cannot take --guide {guide}: "
                         f"drop --guide, or use --model vae --guide {guide}")
    if args.model == "vae" and guide == MODELS["ae"]:
        raise UsageError("--guide delta is the deterministic autoencoder: use --model ae (or drop --model)")
    model = args.model or ("ae" if guide == MODELS["ae"] else "vae")
    model_kw.setdefault("guide", MODELS[model])
    parse_spec(model_kw["guide"], GUIDES, "guide")
    parse_spec(model_kw.get("prior", "standard"), PRIORS, "prior")
    return model


def cmd_train(args) -> int:
    from .evaluate import elbo_per_datum
    from .plots import plot_history, plot_images, plot_reconstructions
    from .run import load_run, make_config, test_tensor
    from .train import fit
    from .vae import ModelSpec

    model_kw, train_kw = _explicit(args, MODEL_FLAGS), _explicit(args, TRAIN_FLAGS)
    if args.resume:
        if args.out is None:
            raise UsageError("--resume needs --out RUN_DIR, the run to continue")
        changed = [f for f, v in [("--data", args.data), ("--model", args.model), ("--data-root", args.data_root)]
                   if v is not None] + ["--" + k.replace("_", "-") for k in {**model_kw, **train_kw} if k != "epochs"]
        if changed:
            raise UsageError(f"--resume continues {args.out} as it was configured; it cannot change {', '.join(changed)}")
        run = load_run(args.out)
        config, spec = run.config, run.spec
        settings = TrainSettings(**{**config["train"], **train_kw})
        run_dir = args.out
    else:
        model = _model_kind(args, model_kw)
        run_dir = args.out or Path("runs") / f"{model}-{time.strftime('%Y%m%d-%H%M%S')}"
        if (run_dir / CHECKPOINT).exists() or (run_dir / CONFIG).exists():
            raise UsageError(f"{run_dir} already holds a run: continue it with --resume or choose another --out")
        settings = TrainSettings(**train_kw)
        data_spec = args.data or "mnist-10k"
    likelihood = model_kw.get("likelihood", "bernoulli") if not args.resume else spec.likelihood
    ds = (run.load_data() if args.resume else load_data(data_spec, likelihood=likelihood, root=args.data_root))
    if not args.resume:
        spec = ModelSpec(image_shape=ds.image_shape, **model_kw)
        config = make_config(spec, settings, data_spec, args.data_root, model_kind=model)
    torch.manual_seed(settings.seed)  # the seed also fixes the initial parameters
    vae = spec.build()
    x_test, _ = test_tensor(ds, vae.likelihood.binarize)
    if settings.elbo == "analytic":  # refuse a pair without a closed-form KL before anything is written
        from .objectives import check_analytic_kl
        check_analytic_kl(vae.model, vae.guide, x_test[:2])
    if not args.resume:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / CONFIG, config)
    else:
        config["train"] = asdict(settings)
        write_json(run_dir / CONFIG, config)
    print(f"training a {config['model_kind']} on {config['data']['spec']} ({len(ds.train_x)} train / "
          f"{len(ds.test_x)} test images of shape {ds.image_shape}) for {settings.epochs} epochs -> {run_dir}",
          file=sys.stderr)
    t0 = time.perf_counter()
    result = fit(vae, ds.train_x, settings, val_x=x_test.numpy() if settings.patience is None else None,
                 run_dir=run_dir, resume=args.resume, progress=not args.quiet)
    seconds = time.perf_counter() - t0
    torch.manual_seed(settings.seed)
    test_elbo = float(elbo_per_datum(vae, x_test, num_draws=10).mean())
    plot_history(result.history, run_dir / "elbo_curve.png")
    plot_reconstructions(x_test[:20].numpy(), vae.reconstruct(x_test[:20]).numpy(), run_dir / "reconstructions.png")
    gen = torch.Generator().manual_seed(settings.seed)
    plot_images(vae.sample(100, generator=gen).numpy(), run_dir / "samples.png", title="Samples (mean images of z ~ p(z))")
    summary = {"test_elbo": test_elbo, "train_seconds": seconds, "epochs": len(result.history),
               "stopped_early": result.stopped_early}
    write_json(run_dir / "summary.json", summary)
    label = "test MAP objective" if vae.guide_net.deterministic else "test ELBO"
    print(f"done in {seconds:.1f} s: {label} {test_elbo:.2f} nats/image (mean of 10 draws on "
          f"{len(x_test)} test images). Run saved in {run_dir}\n"
          f"next: pyro-gen evaluate {run_dir}    pyro-gen sample {run_dir} -n 64 -o samples.png")
    return 0


def cmd_evaluate(args) -> int:
    from .evaluate import elbo_per_datum, importance_log_likelihood
    from .run import load_run, test_tensor

    run = load_run(args.run_dir)
    ds = run.load_data(args.data)
    x_test, _ = test_tensor(ds, run.vae.likelihood.binarize)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    test_elbo = float(elbo_per_datum(run.vae, x_test, num_draws=args.draws).mean())
    nll = None
    if not run.vae.guide_net.deterministic:
        nll = -float(importance_log_likelihood(run.vae, x_test, k=args.k, progress=not (args.quiet or args.json)).mean())
    result = {"test_elbo": test_elbo, "test_nll": nll, "k": args.k, "draws": args.draws, "n_test": len(x_test),
              "data": args.data or run.config["data"]["spec"], "seconds": time.perf_counter() - t0}
    if nll is None:
        result["note"] = "the deterministic autoencoder has no density q(z|x): no importance-sampled likelihood"
    if args.json:
        print(json.dumps(result))
    else:
        print(f"test ELBO {test_elbo:.2f} nats/image ({args.draws} draws, {len(x_test)} test images)")
        print(f"test NLL  {nll:.2f} nats/image (importance sampled, K={args.k})" if nll is not None
              else "test NLL  n/a: " + result["note"])
    return 0


def cmd_sample(args) -> int:
    from .checkpoint import atomic_write
    from .plots import plot_images
    from .run import load_run

    suffix = args.output.suffix.lower()
    if suffix not in (".png", ".npy"):
        raise UsageError(f"{args.output}: the output must end in .png or .npy")
    if not args.output.parent.is_dir():
        raise UsageError(f"{args.output}: folder {args.output.parent} does not exist")
    run = load_run(args.run_dir)
    images = run.vae.sample(args.n, generator=torch.Generator().manual_seed(args.seed)).numpy()
    if suffix == ".png":
        plot_images(images, args.output, title=f"{args.n} samples from {args.run_dir}")
    else:
        atomic_write(args.output, lambda f: np.save(f, images.astype(np.float32)))
    print(f"wrote {args.n} samples to {args.output}")
    return 0


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "sample": cmd_sample}


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return COMMANDS[args.command](args)
    except (UsageError, DataError, RunError, ValueError) as e:
        print(f"pyro-gen {args.command}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except TrainingError as e:
        print(f"pyro-gen {args.command}: training failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"pyro-gen {args.command}: interrupted; the last complete epoch is saved (continue with --resume)",
              file=sys.stderr)
        return 130
