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
from dataclasses import asdict
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
from .nets import ACTIVATIONS, NETWORKS
from .objectives import ELBOS, KL_SCHEDULES, OBJECTIVES
from .priors import PRIORS
from .train import TrainingError, TrainSettings

__all__ = ["main", "build_parser"]

#: ``--model`` names -> the guide family that makes them.
MODELS = {"vae": "diagonal", "ae": "delta", "cvae": "diagonal", "ssvae": "diagonal"}
#: ``--model`` names that need labels with the data: the conditional and the semi-supervised VAE.
LABELLED_MODELS = ("cvae", "ssvae")


class UsageError(ValueError):
    """Bad flags or flag values."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (and exit code 2), like the rest of the CLI."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _checked(convert, ok, what: str):
    """An argparse ``type``: ``convert(text)`` that must satisfy ``ok``, else "expected WHAT"."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    return parse


_positive_int = _checked(int, lambda v: v >= 1, "a positive integer")
_nonnegative_int = _checked(int, lambda v: v >= 0, "a non-negative integer")
_positive_float = _checked(float, lambda v: v > 0 and math.isfinite(v), "a positive number")
_nonnegative_float = _checked(float, lambda v: v >= 0 and math.isfinite(v), "a non-negative number")


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
    ("--hidden", "hidden", dict(type=_hidden, help="hidden widths, e.g. 400 or 512,256 (default 400)")),
    ("--likelihood", "likelihood", dict(choices=list(LIKELIHOODS), help="p(x|z) (default bernoulli)")),
    ("--activation", "activation", dict(choices=list(ACTIVATIONS), help="hidden-layer activation of both networks "
                                        "(default softplus; leaky_relu for --model gan and in compare)")),
    ("--prior", "prior", dict(metavar="SPEC", help=f"p(z): {spec_usage(PRIORS)} (default standard)")),
    ("--guide", "guide", dict(metavar="SPEC", help=f"q(z|x): {spec_usage(GUIDES)} (default diagonal; "
                                                   f"--model ae is the delta guide)")),
]


def _ema(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


#: ``pyro-gen train --model gan`` flags: (flag, GANSettings field, argparse kwargs).
GAN_FLAGS = [
    ("--gan-loss", "loss", dict(choices=["ns", "wgan-gp"], help="--model gan: ns (non-saturating, default) or "
                                "wgan-gp (Wasserstein with gradient penalty); --lr is then the generator's learning "
                                "rate (default 2e-4)")),
    ("--d-lr", "d_lr", dict(type=_positive_float, help="--model gan: the discriminator's learning rate "
                            "(default: as the generator's)")),
    ("--disc-net", "disc_net", dict(choices=list(NETWORKS), help="--model gan: the discriminator's network "
                                    "(default: as --net; the generator is always the --net decoder)")),
    ("--spectral-norm", "spectral_norm", dict(action=argparse.BooleanOptionalAction, help="--model gan: spectral "
                                              "normalization of the discriminator (default: on for ns, off for wgan-gp)")),
    ("--ema", "ema", dict(type=_ema, metavar="DECAY", help="--model gan: decay of the moving average of the "
                          "generator's weights that samples come from (default 0.999; 0: none)")),
]
#: The model flags of ``pyro-gen compare``: the networks every compared model shares.
COMPARE_MODEL_FLAGS = [f for f in MODEL_FLAGS if f[1] in ("latent_dim", "net", "hidden", "likelihood", "activation")]
TRAIN_FLAGS = [
    ("--epochs", "epochs", dict(type=_positive_int, help="passes over the training data (default 100)")),
    ("--batch-size", "batch_size", dict(type=_positive_int, help="minibatch size (default 128)")),
    ("--lr", "lr", dict(type=_positive_float, help="peak learning rate (default 3e-3)")),
    ("--elbo", "elbo", dict(choices=list(ELBOS), help="trace: Monte Carlo KL; meanfield: closed-form KL where one exists, "
                                                     "Monte Carlo otherwise; analytic: closed-form KL or an error; "
                                                     "enum: discrete latents summed exactly, for --model ssvae "
                                                     "(default meanfield)")),
    ("--optimizer", "optimizer", dict(choices=["adam", "clippedadam"], help="default adam")),
    ("--lr-schedule", "lr_schedule", dict(choices=["cosine", "constant"], help="default cosine")),
    ("--patience", "patience", dict(type=_positive_int, help="early stopping on a held-out 10%% of the training data")),
    ("--objective", "objective", dict(metavar="SPEC", help=f"what training maximizes: "
                                      f"{', '.join(e.usage for e in OBJECTIVES.values())} (default elbo; "
                                      f"iwae and renyi bring their own estimator: --elbo applies to elbo)")),
    ("--beta", "beta", dict(type=_positive_float, help="weight of the KL term after warm-up (beta-VAE; default 1)")),
    ("--warmup-epochs", "warmup_epochs", dict(type=_nonnegative_int, help="epochs of the KL ramp from 0 to beta "
                                              "(default 0: none)")),
    ("--kl-schedule", "kl_schedule", dict(choices=list(KL_SCHEDULES), help="linear: one ramp; cyclical: ramp, "
                                          "then as many epochs at beta, repeated (default linear)")),
    ("--free-bits", "free_bits", dict(type=_nonnegative_float, metavar="NATS",
                                      help="free bits: each latent dimension's batch-average KL counts as at least "
                                           "NATS (Kingma et al. 2016; diagonal guide, factorized prior; default 0)")),
    ("--seed", "seed", dict(type=int, help="random seed (default 0)")),
]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pyro-gen", description="Deep generative models as Pyro model/guide pairs.")
    parser.add_argument("--version", action="version", version=f"pyro-gen {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = sub.add_parser("train", help="train a model and save a run directory",
                           description="Train a VAE (or autoencoder) by SVI on the ELBO. With no flags: a VAE "
                                       "on the bundled MNIST-10k data with good defaults.")
    train.add_argument("--out", type=Path, help="run directory (default runs/MODEL-TIMESTAMP)")
    train.add_argument("--data", help="mnist-10k (bundled, default), mnist, fashion-mnist, or a .npz/.npy file")
    train.add_argument("--data-root", type=Path, help="folder holding the mnist / fashion-mnist files")
    train.add_argument("--model", choices=list(MODELS) + ["gan"], help="vae (default), ae (deterministic autoencoder), cvae "
                       "(conditioned on the labels), ssvae (semi-supervised M2; with --labels-per-class) or gan "
                       "(the decoder network trained as a GAN generator, on grey-level images; see --gan-loss)")
    for flag, _, kw in GAN_FLAGS:
        train.add_argument(flag, **kw)
    train.add_argument("--labels-per-class", type=_positive_int, metavar="N",
                       help="--model ssvae: labelled training images kept per class (chosen with --seed)")
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
    sm.add_argument("--label", type=int, help="draw images of this class only (a cvae or ssvae run)")

    dg = sub.add_parser("diagnose", help="diagnose a trained run and write report.html",
                        description="Diagnose a run on its test split (or on --data): ELBO terms, KL per dimension, "
                                    "active units, IWAE bound against K, PSIS k-hat per image, amortization gap, "
                                    "gradient noise. Writes diagnostics.json, posterior.nc (ArviZ), figures and "
                                    "a self-contained report.html into RUN_DIR.")
    dg.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    dg.add_argument("--data", help="diagnose on this data set's test split instead of the run's")
    dg.add_argument("--k-max", type=_positive_int, default=5000,
                    help="importance samples per image for the IWAE curve and k-hat (default 5000)")
    dg.add_argument("--points", type=_positive_int, default=500,
                    help="test images for the IWAE curve, k-hat and posterior draws (default 500)")
    dg.add_argument("--gap-points", type=_positive_int, default=100,
                    help="test images for the amortization gap (default 100)")
    dg.add_argument("--gap-steps", type=_positive_int, default=500,
                    help="Adam steps of the per-image optimization for the amortization gap (default 500)")
    dg.add_argument("--grad-repeats", type=_positive_int, default=100,
                    help="gradient draws for the gradient variance and SNR (default 100)")
    dg.add_argument("--seed", type=int, default=0)
    dg.add_argument("--json", action="store_true", help="print diagnostics.json's content on standard output")
    dg.add_argument("--quiet", action="store_true", help="no progress bars or stage messages")

    cp = sub.add_parser("compare", help="train models for the same time; compare likelihood and sample quality",
                        description="Train each model of --models on the same data with the same generator network "
                                    "for the same wall-clock budget (and/or load finished --runs), then write a "
                                    "table (Markdown, CSV, JSON) of test ELBO and NLL where defined, FID, precision, "
                                    "recall, density, coverage and class entropy in the feature space of a domain "
                                    "classifier, and one figure of samples side by side. See docs/comparison.rst.")
    cp.add_argument("--models", metavar="LIST", help="comma-separated: vae, ae, gan (non-saturating), wgan-gp "
                    "(default vae,gan; none when --runs is given)")
    cp.add_argument("--runs", nargs="+", type=Path, metavar="RUN", help="finished run directories to score as they are")
    cp.add_argument("--budget-seconds", type=_positive_float, default=120.0,
                    help="wall-clock training time of each model; training stops after the epoch that crosses it "
                         "(default 120)")
    cp.add_argument("--max-epochs", type=_positive_int, default=100000, help="cap on the epochs of each model")
    cp.add_argument("--out", type=Path, help="output folder (default runs/compare-TIMESTAMP)")
    cp.add_argument("--data", help="mnist-10k (bundled, default; or the first run's data), mnist, fashion-mnist, "
                                   "or a .npz file with labels")
    cp.add_argument("--data-root", type=Path, help="folder holding the mnist / fashion-mnist files")
    for flag, _, kw in COMPARE_MODEL_FLAGS:
        cp.add_argument(flag, **kw)
    cp.add_argument("--k", type=_positive_int, default=1000, help="importance samples per test image for the NLL "
                    "(default 1000)")
    cp.add_argument("--draws", type=_positive_int, default=10, help="ELBO draws per test image (default 10)")
    cp.add_argument("--n-samples", type=_positive_int, help="samples per model (default: the test-split size)")
    cp.add_argument("--nn-k", type=_positive_int, default=5, help="neighbour k of precision/recall/density/coverage "
                    "(default 5)")
    cp.add_argument("--seed", type=int, default=0)
    cp.add_argument("--classifier-cache", type=Path, metavar="DIR", help="cache of the domain classifier (default "
                    "$PYRO_GEN_CACHE/classifier or ~/.cache/pyro_gen/classifier)")
    cp.add_argument("--classifier-epochs", type=_positive_int, default=5, help=argparse.SUPPRESS)  # tests only
    cp.add_argument("--quiet", action="store_true", help="no progress bars or stage messages")
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


def _labelled_train_kw(args, model: str, train_kw: dict) -> dict:
    """Check the flags that depend on ``--model``; the semi-supervised VAE needs the enumerated ELBO."""
    if args.labels_per_class is not None and model != "ssvae":
        raise UsageError("--labels-per-class is for --model ssvae (the semi-supervised VAE)")
    if model != "ssvae":
        return train_kw
    if args.labels_per_class is None:
        raise UsageError("--model ssvae needs --labels-per-class N, the labelled training images kept per class")
    if train_kw.get("elbo", "enum") != "enum":
        raise UsageError(f"--model ssvae sums over the classes exactly with --elbo enum (its default), not "
                         f"--elbo {train_kw['elbo']}")
    if train_kw.get("objective", "elbo") != "elbo":
        raise UsageError("--model ssvae trains on its ELBO: it cannot take --objective")
    if train_kw.get("free_bits"):
        raise UsageError("--model ssvae cannot use --free-bits")
    if "patience" in train_kw:
        raise UsageError("--model ssvae cannot use --patience: the held-out split would take labelled images away")
    return {**train_kw, "elbo": "enum"}


def _condition_dim(model: str, ds, data_spec: str) -> int:
    """The number of classes for a model that needs labels, else 0."""
    if model not in LABELLED_MODELS:
        return 0
    if ds.train_y is None or ds.test_y is None:
        raise UsageError(f"--model {model} needs labels, and {data_spec} has none (a .npz file needs a 'labels' array)")
    return ds.num_classes


def _ssvae_config(labels_per_class: int, ds, seed: int) -> dict:
    from .ssvae import semi_supervised_data
    semi = semi_supervised_data(ds.train_x, ds.train_y, labels_per_class, seed=seed)
    return {"labels_per_class": labels_per_class, "num_labelled": semi.num_labelled, "repeat": semi.repeat,
            "aux_weight": semi.aux_weight, "labelled_weight": semi.labelled_weight}


def _fit_inputs(config: dict, ds, y_test):
    """``(train_x, train_y, val_y)`` for :func:`~pyro_gen.train.fit`: labels condition a cvae;
    an ssvae trains on its semi-supervised data (unknown labels -1, labelled images repeated)."""
    kind = config["model_kind"]
    if kind == "cvae":
        return ds.train_x, ds.train_y, y_test
    if kind == "ssvae":
        from .ssvae import semi_supervised_data
        opts = config["ssvae"]
        semi = semi_supervised_data(ds.train_x, ds.train_y, opts["labels_per_class"], seed=config["train"]["seed"],
                                    repeat=opts["repeat"])
        return semi.x, semi.y, None
    return ds.train_x, None, None


def _epoch_metrics(kind: str, x_test: torch.Tensor, y_test):
    """Per-epoch extras: latent diagnostics for unconditional models, test accuracy for an ssvae."""
    if kind == "ssvae":
        from .ssvae import accuracy
        return lambda vae, x_val: {"val_accuracy": accuracy(vae, x_test, y_test)}
    if kind in LABELLED_MODELS:
        return None
    from .diagnostics import make_epoch_metrics
    return make_epoch_metrics(on_collapse=_warn_collapse)


def _run_kind(run_dir: Path) -> Optional[str]:
    """The ``model_kind`` in ``run_dir/config.json``, or ``None`` if it cannot be read."""
    try:
        config = json.loads((Path(run_dir) / CONFIG).read_text())
        return config.get("model_kind") if isinstance(config, dict) else None
    except (OSError, ValueError):
        return None


#: ``pyro-gen train`` flags (as TrainSettings / ModelSpec fields) that mean nothing to a GAN.
_NOT_FOR_GAN = ("prior", "guide", "elbo", "optimizer", "lr_schedule", "patience", "objective", "beta",
                "warmup_epochs", "kl_schedule", "free_bits")


def _cmd_train_gan(args) -> int:
    """``pyro-gen train --model gan``: the decoder network of the spec trained as a GAN generator."""
    from .gan import GANSettings, build_gan, fit_gan, gan_spec, load_gan_run
    from .plots import plot_images
    from .run import make_config

    model_kw, train_kw = _explicit(args, MODEL_FLAGS), _explicit(args, TRAIN_FLAGS)
    bad = ["--" + k.replace("_", "-") for k in _NOT_FOR_GAN if k in {**model_kw, **train_kw}]
    if args.labels_per_class is not None:
        bad.append("--labels-per-class")
    if bad:
        raise UsageError(f"--model gan cannot take {', '.join(bad)}: these configure the VAE's likelihood training")
    gan_kw = _explicit(args, GAN_FLAGS)
    gan_kw.update({k: train_kw[k] for k in ("epochs", "batch_size", "lr", "seed") if k in train_kw})
    if args.resume:
        changed = [f for f, v in [("--data", args.data), ("--data-root", args.data_root),
                                  ("--model", None if args.model == "gan" else args.model)] if v is not None] + \
                  ["--gan-loss" if k == "loss" else "--" + k.replace("_", "-") for k in {**model_kw, **gan_kw}
                   if k != "epochs"]
        if changed:
            raise UsageError(f"--resume continues {args.out} as it was configured; it cannot change {', '.join(changed)}")
        run = load_gan_run(args.out)
        config, spec, run_dir = run.config, run.spec, args.out
        settings = GANSettings(**{**asdict(run.settings), **gan_kw})
        config["train"] = asdict(settings)
        ds = run.load_data()
    else:
        run_dir = args.out or Path("runs") / f"gan-{time.strftime('%Y%m%d-%H%M%S')}"
        if (run_dir / CHECKPOINT).exists() or (run_dir / CONFIG).exists():
            raise UsageError(f"{run_dir} already holds a run: continue it with --resume or choose another --out")
        settings = GANSettings(**gan_kw)
        data_spec = args.data or "mnist-10k"
        ds = load_data(data_spec, likelihood=model_kw.get("likelihood", "bernoulli"), root=args.data_root)
        spec = gan_spec(ds.image_shape, **model_kw)
        config = make_config(spec, settings, data_spec, args.data_root, model_kind="gan")
        run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(settings.seed)  # the seed also fixes the initial parameters
    gan = build_gan(spec, settings)
    write_json(run_dir / CONFIG, config)
    print(f"training a gan ({settings.loss}) on {config['data']['spec']} ({len(ds.train_x)} grey-level train images "
          f"of shape {ds.image_shape}) for {settings.epochs} epochs -> {run_dir}", file=sys.stderr)
    t0 = time.perf_counter()
    result = fit_gan(gan, ds.train_x, settings, run_dir=run_dir, resume=args.resume, progress=not args.quiet)
    seconds = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(settings.seed)
    plot_images(gan.sample(100, generator=gen).numpy(), run_dir / "samples.png", title="Samples G(z), z ~ N(0, I)")
    write_json(run_dir / "summary.json", {"train_seconds": seconds, "epochs": len(result.history),
                                          "loss": settings.loss})
    print(f"done in {seconds:.1f} s. Run saved in {run_dir}\n"
          f"next: pyro-gen sample {run_dir} -n 64 -o samples.png    pyro-gen compare --runs {run_dir}")
    return 0


def cmd_train(args) -> int:
    from .evaluate import elbo_per_datum
    from .plots import plot_history, plot_images, plot_reconstructions
    from .run import build_model, load_run, make_config, split_tensor
    from .train import fit
    from .vae import ModelSpec

    if args.model == "gan" or (args.resume and args.out is not None and _run_kind(args.out) == "gan"):
        return _cmd_train_gan(args)
    gan_flags = [flag for flag, name, _ in GAN_FLAGS if name in _explicit(args, GAN_FLAGS)]
    if gan_flags:
        raise UsageError(f"{', '.join(gan_flags)}: {'this flag is' if len(gan_flags) == 1 else 'these flags are'} "
                         "for --model gan")
    from . import distributed
    distributed.setup()  # under torchrun: join the other processes
    model_kw, train_kw = _explicit(args, MODEL_FLAGS), _explicit(args, TRAIN_FLAGS)
    if args.resume:
        if args.out is None:
            raise UsageError("--resume needs --out RUN_DIR, the run to continue")
        changed = [f for f, v in [("--data", args.data), ("--model", args.model), ("--data-root", args.data_root),
                                  ("--labels-per-class", args.labels_per_class)]
                   if v is not None] + ["--" + k.replace("_", "-") for k in {**model_kw, **train_kw} if k != "epochs"]
        if changed:
            raise UsageError(f"--resume continues {args.out} as it was configured; it cannot change {', '.join(changed)}")
        # a run killed before its first epoch ended has no checkpoint yet: it starts again
        run = load_run(args.out, require_checkpoint=False)
        config, spec = run.config, run.spec
        settings = TrainSettings(**{**config["train"], **train_kw})
        run_dir = args.out
    else:
        model = _model_kind(args, model_kw)
        run_dir = args.out or Path("runs") / f"{model}-{time.strftime('%Y%m%d-%H%M%S')}"
        if (run_dir / CHECKPOINT).exists() or (run_dir / CONFIG).exists():
            raise UsageError(f"{run_dir} already holds a run: continue it with --resume or choose another --out")
        settings = TrainSettings(**_labelled_train_kw(args, model, train_kw))
        data_spec = args.data or "mnist-10k"
    likelihood = model_kw.get("likelihood", "bernoulli") if not args.resume else spec.likelihood
    ds = (run.load_data() if args.resume else load_data(data_spec, likelihood=likelihood, root=args.data_root))
    if not args.resume:
        spec = ModelSpec(image_shape=ds.image_shape, condition_dim=_condition_dim(model, ds, data_spec), **model_kw)
        config = make_config(spec, settings, data_spec, args.data_root, model_kind=model)
        if model == "ssvae":
            config["ssvae"] = _ssvae_config(args.labels_per_class, ds, settings.seed)
    torch.manual_seed(settings.seed)  # the seed also fixes the initial parameters
    vae = build_model(spec, config)
    x_test, y_test = split_tensor(ds, vae.likelihood.binarize)
    y_cond = torch.as_tensor(y_test) if getattr(vae, "condition_dim", 0) else None  # labels a cvae is given
    if settings.elbo == "analytic":  # refuse a pair without a closed-form KL before anything is written
        from .objectives import check_analytic_kl
        check_analytic_kl(vae.model, vae.guide, x_test[:2], *(() if y_cond is None else (y_cond[:2],)))
    if settings.free_bits:  # the same for free bits on a guide or prior that does not factorize
        from .train import check_free_bits
        check_free_bits(vae, x_test[:1], None if y_cond is None else y_cond[:1])
    distributed.barrier()  # every process has checked the run directory before any writes to it
    if distributed.is_main():
        if not args.resume:
            run_dir.mkdir(parents=True, exist_ok=True)
        else:
            config["train"] = asdict(settings)
        write_json(run_dir / CONFIG, config)
    distributed.barrier()
    if distributed.is_main():
        print(f"training a {config['model_kind']} on {config['data']['spec']} ({len(ds.train_x)} train / "
              f"{len(ds.test_x)} test images of shape {ds.image_shape}) for {settings.epochs} epochs -> {run_dir}"
              + (f" on {distributed.rank_world()[1]} processes" if distributed.rank_world()[1] > 1 else ""),
              file=sys.stderr)
    t0 = time.perf_counter()
    train_x, train_y, val_y = _fit_inputs(config, ds, y_test)
    result = fit(vae, train_x, settings, train_y=train_y, val_y=val_y,
                 val_x=x_test.numpy() if settings.patience is None else None,
                 run_dir=run_dir, resume=args.resume and (run_dir / CHECKPOINT).exists(), progress=not args.quiet,
                 epoch_metrics=_epoch_metrics(config["model_kind"], x_test, y_test))
    seconds = time.perf_counter() - t0
    if not distributed.is_main():
        return 0
    torch.manual_seed(settings.seed)
    test_elbo = float(elbo_per_datum(vae, x_test, num_draws=10, y=y_cond).mean())
    plot_history(result.history, run_dir / "elbo_curve.png")
    y_rec = None if y_cond is None else y_cond[:20]
    plot_reconstructions(x_test[:20].numpy(), vae.reconstruct(x_test[:20], y=y_rec).numpy(),
                         run_dir / "reconstructions.png")
    gen = torch.Generator().manual_seed(settings.seed)
    plot_images(vae.sample(100, generator=gen).numpy(), run_dir / "samples.png", title="Samples (mean images of z ~ p(z))")
    summary = {"test_elbo": test_elbo, "train_seconds": seconds, "epochs": len(result.history),
               "stopped_early": result.stopped_early}
    if hasattr(vae, "classify"):
        from .ssvae import accuracy
        summary["test_accuracy"] = accuracy(vae, x_test, y_test)
        print(f"test accuracy of q(y|x): {summary['test_accuracy']:.4f}", file=sys.stderr)
    write_json(run_dir / "summary.json", summary)
    label = "test MAP objective" if vae.guide_net.deterministic else "test ELBO"
    print(f"done in {seconds:.1f} s: {label} {test_elbo:.2f} nats/image (mean of 10 draws on "
          f"{len(x_test)} test images). Run saved in {run_dir}\n"
          f"next: pyro-gen evaluate {run_dir}    pyro-gen sample {run_dir} -n 64 -o samples.png")
    return 0


def cmd_evaluate(args) -> int:
    from .evaluate import elbo_per_datum, importance_log_likelihood
    from .run import load_run, split_tensor

    run = load_run(args.run_dir)
    ds = run.load_data(args.data)
    x_test, y_test = split_tensor(ds, run.vae.likelihood.binarize)
    y_cond = None
    if getattr(run.vae, "condition_dim", 0) or hasattr(run.vae, "classify"):
        if y_test is None:
            raise UsageError(f"this {run.config['model_kind']} run needs test labels, and "
                             f"{args.data or run.config['data']['spec']} has none")
        y_cond = torch.as_tensor(y_test) if getattr(run.vae, "condition_dim", 0) else None
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    test_elbo = float(elbo_per_datum(run.vae, x_test, num_draws=args.draws, y=y_cond).mean())
    nll = None
    if not run.vae.guide_net.deterministic:
        nll = -float(importance_log_likelihood(run.vae, x_test, k=args.k, progress=not (args.quiet or args.json),
                                               y=y_cond).mean())
    result = {"test_elbo": test_elbo, "test_nll": nll, "k": args.k, "draws": args.draws, "n_test": len(x_test),
              "data": args.data or run.config["data"]["spec"], "seconds": time.perf_counter() - t0}
    if y_cond is not None:
        result["conditional"] = "ELBO and NLL are of log p(x | y), given the test labels"
    if hasattr(run.vae, "classify"):
        from .ssvae import accuracy
        result["test_accuracy"] = accuracy(run.vae, x_test, y_test)
    if nll is None:
        result["note"] = "the deterministic autoencoder has no density q(z|x): no importance-sampled likelihood"
    if args.json:
        print(json.dumps(result))
    else:
        print(f"test ELBO {test_elbo:.2f} nats/image ({args.draws} draws, {len(x_test)} test images)")
        print(f"test NLL  {nll:.2f} nats/image (importance sampled, K={args.k})" if nll is not None
              else "test NLL  n/a: " + result["note"])
        if "test_accuracy" in result:
            print(f"test accuracy {result['test_accuracy']:.4f} (most probable class under q(y|x))")
    return 0


def cmd_sample(args) -> int:
    from .checkpoint import atomic_write
    from .compare import load_any_run
    from .plots import plot_images

    suffix = args.output.suffix.lower()
    if suffix not in (".png", ".npy"):
        raise UsageError(f"{args.output}: the output must end in .png or .npy")
    if not args.output.parent.is_dir():
        raise UsageError(f"{args.output}: folder {args.output.parent} does not exist")
    run = load_any_run(args.run_dir)  # a VAE-family run or a GAN run
    model = run.gan if run.config.get("model_kind") == "gan" else run.vae
    y = None
    if args.label is not None:
        classes = getattr(model, "num_classes", None) or getattr(model, "condition_dim", 0)
        if not classes:
            raise UsageError(f"--label needs a conditional run (--model cvae or ssvae); {args.run_dir} is a "
                             f"{run.config.get('model_kind', 'vae')}")
        if not 0 <= args.label < classes:
            raise UsageError(f"--label {args.label} is out of range: this run has classes 0 to {classes - 1}")
        y = torch.full((args.n,), args.label, dtype=torch.long)
    images = model.sample(args.n, generator=torch.Generator().manual_seed(args.seed), y=y).numpy()
    if suffix == ".png":
        plot_images(images, args.output, title=f"{args.n} samples from {args.run_dir}")
    else:
        atomic_write(args.output, lambda f: np.save(f, images.astype(np.float32)))
    print(f"wrote {args.n} samples to {args.output}")
    return 0


def _warn_collapse(row: dict) -> None:
    """One line on standard error when the posterior-collapse flag of an epoch fires."""
    from tqdm.auto import tqdm
    tqdm.write(f"pyro-gen train: warning: posterior collapse ({row.get('collapse_reason', '')}): the latent code "
               "carries almost no information about the images (see rec/kl/active_units in metrics.jsonl)",
               file=sys.stderr)


def cmd_diagnose(args) -> int:
    from .diagnostics import diagnose_run

    if _run_kind(args.run_dir) == "gan":
        raise UsageError(f"{args.run_dir} is a GAN run: pyro-gen diagnose needs a VAE or an autoencoder "
                         "(a GAN has no encoder and no likelihood to diagnose)")
    quiet = args.quiet or args.json
    log = None if quiet else (lambda msg: print(f"pyro-gen diagnose: {msg}", file=sys.stderr, flush=True))
    d = diagnose_run(args.run_dir, args.data, k_max=args.k_max, points=args.points, gap_points=args.gap_points,
                     gap_steps=args.gap_steps, grad_repeats=args.grad_repeats, seed=args.seed,
                     progress=not quiet, log=log)
    if args.json:
        print(json.dumps(d.to_dict(), sort_keys=True))
        return 0
    for v in d.verdicts:
        print(f"[{v.status:>7}] {v.check}: {v.advice if v.status == 'n/a' else v.value}")
    print(f"done in {d.seconds.get('total', 0):.1f} s: report {args.run_dir / 'report.html'}, numbers "
          f"{args.run_dir / 'diagnostics.json'}, posterior draws {args.run_dir / 'posterior.nc'}")
    return 0


def cmd_compare(args) -> int:
    from .compare import MODEL_TRAINERS, compare, markdown_table

    if args.models is None:
        models = [] if args.runs else ["vae", "gan"]
    else:
        models = [m.strip() for m in args.models.split(",") if m.strip()]
        unknown = [m for m in models if m not in MODEL_TRAINERS]
        if unknown or not models:
            raise UsageError(f"--models {args.models}: expected a comma-separated list of {', '.join(MODEL_TRAINERS)}")
    out = args.out or Path("runs") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    log = None if args.quiet else (lambda msg: print(f"pyro-gen compare: {msg}", file=sys.stderr, flush=True))
    result = compare(models, runs=args.runs or (), data=args.data, data_root=args.data_root,
                     budget_seconds=args.budget_seconds, out_dir=out, spec_kw=_explicit(args, COMPARE_MODEL_FLAGS),
                     k=args.k, draws=args.draws, n_samples=args.n_samples, nn_k=args.nn_k, max_epochs=args.max_epochs,
                     seed=args.seed, classifier_cache=args.classifier_cache, classifier_epochs=args.classifier_epochs,
                     progress=not args.quiet, log=log)
    print(markdown_table(result), end="")
    print(f"pyro-gen compare: done in {result.wall_seconds:.0f} s: {out}/comparison.md, comparison.csv, "
          f"comparison.json, samples.png", file=sys.stderr)
    return 0


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "sample": cmd_sample, "diagnose": cmd_diagnose,
            "compare": cmd_compare}


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
