"""``pyro-gen train``: a VAE, autoencoder, conditional or semi-supervised VAE trained by SVI, or with
``--model gan`` the decoder network trained as a GAN generator; saves a run directory."""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from ..checkpoint import CHECKPOINT, CONFIG, attempt, write_json
from ..data import load_data
from ..families import FAMILIES, binarizes, family_of, parse_model
from .._spec import parse_spec
from ..guides import GUIDES
from ..objectives import ELBOS, KL_SCHEDULES, OBJECTIVES
from ..priors import PRIORS
from ..train import TrainSettings
from .._flags import nonnegative_float, nonnegative_int, positive_float, positive_int
from ._common import (MODEL_FLAGS, UsageError, _explicit, _run_family, add_device_flag, device_of, record_resume,
                      refuse_under_torchrun, resume_changes)

#: ``--model`` names -> the guide spec they default to (None: the family has no --guide).
MODELS = {name: family.guide for name, family in FAMILIES.items() if name != "module"}


def _model_arg(text: str) -> str:
    try:
        parse_model(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


#: ``pyro-gen train`` training flags: (flag, TrainSettings field, argparse kwargs).
TRAIN_FLAGS = [
    ("--epochs", "epochs", dict(type=positive_int, help="passes over the training data (default 100)")),
    ("--batch-size", "batch_size", dict(type=positive_int, help="minibatch size (default 128)")),
    ("--lr", "lr", dict(type=positive_float, help="peak learning rate (default 3e-3)")),
    ("--elbo", "elbo", dict(choices=list(ELBOS), help="trace: Monte Carlo KL; meanfield: closed-form KL where one exists, "
                                                     "Monte Carlo otherwise; analytic: closed-form KL or an error; "
                                                     "enum: discrete latents summed exactly, for --model ssvae "
                                                     "(default meanfield)")),
    ("--optimizer", "optimizer", dict(choices=["adam", "clippedadam"], help="default adam")),
    ("--lr-schedule", "lr_schedule", dict(choices=["cosine", "constant"], help="default cosine")),
    ("--patience", "patience", dict(type=positive_int, help="early stopping on a held-out 10%% of the training data")),
    ("--objective", "objective", dict(metavar="SPEC", help=f"what training maximizes: "
                                      f"{', '.join(e.usage for e in OBJECTIVES.values())} (default elbo; "
                                      f"iwae and renyi bring their own estimator: --elbo applies to elbo)")),
    ("--beta", "beta", dict(type=positive_float, help="weight of the KL term after warm-up (beta-VAE; default 1)")),
    ("--warmup-epochs", "warmup_epochs", dict(type=nonnegative_int, help="epochs of the KL ramp from 0 to beta "
                                              "(default 0: none)")),
    ("--kl-schedule", "kl_schedule", dict(choices=list(KL_SCHEDULES), help="linear: one ramp; cyclical: ramp, "
                                          "then as many epochs at beta, repeated (default linear)")),
    ("--free-bits", "free_bits", dict(type=nonnegative_float, metavar="NATS",
                                      help="free bits: each latent dimension's batch-average KL counts as at least "
                                           "NATS (Kingma et al. 2016; diagonal guide, factorized prior; default 0)")),
    ("--weight-decay", "weight_decay", dict(type=nonnegative_float, metavar="W",
                                            help="decoupled weight decay (AdamW): each step shrinks every parameter "
                                                 "by lr x W (default 0: none)")),
    ("--seed", "seed", dict(type=int, help="random seed (default 0)")),
]


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``pyro-gen train`` and its flags to the subcommands ``sub``."""
    train = sub.add_parser("train", help="train a model and save a run directory",
                           description="Train a model by SVI on the ELBO: a VAE and its variants, a hierarchical "
                                       "VAE, your own Pyro model/guide pair (--model module:pkg.mod:Factory), or the "
                                       "GAN baseline. With no flags: a VAE on the bundled MNIST-10k data with good "
                                       "defaults. With --resume the same command line continues the run in --out (or "
                                       "starts it).")
    train.add_argument("--out", type=Path, help="run directory (default runs/MODEL-TIMESTAMP)")
    train.add_argument("--data", help="mnist-10k (bundled, default), mnist, fashion-mnist, or a .npz/.npy file")
    train.add_argument("--data-root", type=Path, help="folder holding the mnist / fashion-mnist files")
    train.add_argument("--model", type=_model_arg, metavar="MODEL", help="; ".join(
        f"{name if name != 'module' else 'module:pkg.mod:Factory'}: {family.help}" for name, family in FAMILIES.items()))
    for name, family in FAMILIES.items():  # each family's own flags, declared in its registry entry
        group = train.add_argument_group(f"--model {name}: {family.title}") if family.flags else None
        for flag in family.flags:
            flag.add_to(group)
    for flag, _, kw in MODEL_FLAGS + TRAIN_FLAGS:
        train.add_argument(flag, **kw)
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint, "
                       "or start it if --out holds none yet: the same command line is safe to re-run after any kill. "
                       "Flags may repeat the run's values; only --epochs, --lr, --d-lr and --patience may change")
    add_device_flag(train)
    train.add_argument("--quiet", action="store_true", help="no progress bar")


def _model_kind(args, model_kw: dict) -> str:
    """Resolve ``--model`` against ``--guide`` (``ae`` is the delta guide) and check both spec strings."""
    if args.model is not None and (args.model not in MODELS or MODELS[args.model] is None):
        name = parse_model(args.model)[0]
        if "prior" not in FAMILIES[name].refuses:  # the hvae's top layer: a bad spec in one line, up front
            parse_spec(model_kw.get("prior", "standard"), PRIORS, "prior")
        return name
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


def _condition(model: str, ds, data_spec: str):
    """``(condition_dim, source)``: a cvae is conditioned on the data's side vectors when it has
    them (``"vectors"``), else on its labels; an ssvae infers the labels; other models ``(0, None)``."""
    inputs = FAMILIES[model].inputs
    if not inputs:
        return 0, None
    conditional = inputs == "condition"
    if conditional and ds.side_dim is not None:
        return ds.side_dim, "vectors"
    if ds.train_y is None or ds.test_y is None:
        what = "labels or side vectors" if conditional else "labels"
        arrays = "a 'labels' or a 'condition' array" if conditional else "a 'labels' array"
        raise UsageError(f"--model {model} needs {what}, and {data_spec} has none (a .npz file needs {arrays})")
    return ds.num_classes, ("labels" if conditional else None)


def _fit_inputs(config: dict, ds, c_train, c_test):
    """``(train_x, train_y, val_y)`` for :func:`~pyro_gen.train.fit`: a cvae is given its labels or
    side vectors ``c_train``, ``c_test``; an ssvae trains on its semi-supervised data (unknown
    labels -1, labelled images repeated)."""
    inputs = family_of(config).inputs
    if inputs == "condition":
        return ds.train_x, c_train, c_test
    if inputs == "semi":
        from ..ssvae import semi_supervised_data
        opts = config["ssvae"]
        semi = semi_supervised_data(ds.train_x, ds.train_y, opts["labels_per_class"], seed=config["train"]["seed"],
                                    repeat=opts["repeat"])
        return semi.x, semi.y, None
    return ds.train_x, None, None


def _resuming(args) -> bool:
    """Whether ``--resume`` continues a run: ``--out`` holds one. Without a run there, ``--resume``
    starts it with the flags given, so one command line can be re-run after any kill."""
    if not args.resume:
        return False
    if (args.out / CONFIG).exists():
        return True
    print(f"pyro-gen train: {args.out} holds no run yet: starting it (the same command continues it later)",
          file=sys.stderr)
    return False


def _family_of_args(args):
    """The family the command line trains: with ``--resume``, the run's in ``--out`` (when it holds
    one), else ``--model``'s (``ae`` and ``vae`` alike: neither has flags of its own)."""
    family = _run_family(args.out) if args.resume else None
    if family is not None:
        return family
    return FAMILIES[parse_model(args.model)[0]] if args.model else FAMILIES["vae"]


def _check_family_flags(args, family, given: dict, new: bool) -> None:
    """One line for another family's flags, for a setting ``family`` refuses (``given``: the model
    and training settings given), or, for a new run, a missing flag the family requires. On
    ``--resume`` with a ``--model`` of another family than the run's, nothing: the resume check
    says that the run cannot change its model."""
    if not new and args.model and parse_model(args.model)[0] != family.name:
        return
    for other in FAMILIES.values():
        flags = [f.name for f in other.flags if other is not family and f.value(args) is not None]
        if flags:
            raise UsageError(f"{', '.join(flags)}: {'this flag is' if len(flags) == 1 else 'these flags are'} "
                             f"for --model {other.name}")
    refused = family.refused(given)
    if refused:
        raise UsageError(f"--model {args.model if new and args.model else family.name} cannot take "
                         f"{', '.join('--' + k.replace('_', '-') for k in refused)}: {family.refusal}")
    for flag in family.flags:
        if new and flag.required and flag.value(args) is None:
            raise UsageError(f"--model {family.name} needs {flag.name} {flag.kwargs.get('metavar', '')}".rstrip()
                             + f": {flag.help}")


def _check_resume(args, config: dict, given_kw: dict, settings_flags) -> dict:
    """The settings ``--resume`` changes (``{name: (stored, new)}``); refuses any flag that would
    change the model or the data (:func:`~pyro_gen.cli._common.resume_changes`)."""
    given, stored, flags = {}, {}, {}

    def add(name, flag, value, old):
        given[name], stored[name], flags[name] = value, old, flag

    data, family = config.get("data", {}), family_of(config)
    if args.data is not None:
        add("data", "--data", args.data, data.get("spec"))
    if args.data_root is not None:
        add("data_root", "--data-root", str(args.data_root), data.get("root"))
    if args.model is not None:
        kind = config.get("model_kind")
        add("model", "--model", args.model, f"module:{config.get('module')}" if kind == "module" else kind)
    options = (config.get(family.name) or {}) if family.configure else config["train"]
    for flag in family.flags:  # the family's own flags
        if flag.value(args) is not None:
            add(f"{family.name}:{flag.key}" if family.configure else flag.key, flag.name, flag.value(args),
                options.get(flag.key))
    for flag, key, _ in MODEL_FLAGS:
        if key in given_kw:
            add(key, flag, given_kw[key], config["model"].get(key))
    for flag, key, _ in list(settings_flags) + [f for f in TRAIN_FLAGS if f[1] in ("epochs", "batch_size", "lr", "seed")]:
        if key in given_kw and key not in given:  # a run written before a setting existed had its default
            add(key, flag, given_kw[key], config["train"].get(key, getattr(TrainSettings, key, None)))
    return resume_changes(args.out, given, stored, flags)


def _warn_collapse(row: dict) -> None:
    """One line on standard error when the posterior-collapse flag of an epoch fires."""
    from tqdm.auto import tqdm
    tqdm.write(f"pyro-gen train: warning: posterior collapse ({row.get('collapse_reason', '')}): the latent code "
               "carries almost no information about the images (see rec/kl/active_units in metrics.jsonl)",
               file=sys.stderr)


def _epoch_metrics(family, x_test: torch.Tensor, y_test):
    """Per-epoch extras: latent diagnostics for unconditional models, test accuracy for an ssvae."""
    if family.inputs == "semi":
        from ..ssvae import accuracy
        return lambda vae, x_val: {"val_accuracy": accuracy(vae, x_test, y_test)}
    if family.inputs:
        return None
    if family.generic:  # per latent site, from traces
        from ..diagnostics.sites import pair_epoch_metrics
        return pair_epoch_metrics()
    from ..diagnostics import make_epoch_metrics
    return make_epoch_metrics(on_collapse=_warn_collapse)


def _cmd_train_gan(args, family, model_kw: dict, train_kw: dict) -> int:
    """``pyro-gen train --model gan``: the decoder network of the spec trained as a GAN generator
    (``family``, the GAN's entry of the registry; ``model_kw``, ``train_kw``: the flags given)."""
    from ..gan import GANSettings, build_gan, fit_gan, gan_spec
    from ..plots import plot_images
    from ..run import load_run, make_config

    refuse_under_torchrun("train --model gan")
    device = device_of(args)
    gan_kw = family.options(args)
    gan_kw.update({k: train_kw[k] for k in ("epochs", "batch_size", "lr", "seed") if k in train_kw})
    resuming = _resuming(args)
    if resuming:
        run = load_run(args.out, require_checkpoint=False, family="gan")  # killed before its first epoch: starts
        config, spec, run_dir = run.config, run.spec, args.out
        changes = _check_resume(args, config, {**model_kw, **gan_kw}, ())
        settings = GANSettings(**{**asdict(run.settings), **gan_kw})
        config["train"] = asdict(settings)
        record_resume(config, len(run.history), changes)
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
    torch.manual_seed(settings.seed)  # the seed also fixes the initial parameters
    gan = build_gan(spec, settings).to(device)  # refuses what it cannot build before anything is written
    run_dir.mkdir(parents=True, exist_ok=True)
    config["device"] = str(device)
    write_json(run_dir / CONFIG, config)
    print(f"training a gan ({settings.loss}) on {config['data']['spec']} ({len(ds.train_x)} grey-level train images "
          f"of shape {ds.image_shape}) for {settings.epochs} epochs -> {run_dir}", file=sys.stderr)
    t0 = time.perf_counter()
    result = fit_gan(gan, ds.train_x, settings, run_dir=run_dir, resume=resuming and (run_dir / CHECKPOINT).exists(),
                     progress=not args.quiet)
    seconds = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(settings.seed)
    write_json(run_dir / "summary.json", {"train_seconds": seconds, "epochs": len(result.history),
                                          "loss": settings.loss})
    failures = {}
    attempt(failures, "samples.png", lambda: plot_images(gan.sample(100, generator=gen).cpu().numpy(), run_dir / "samples.png",
                                                         title="Samples G(z), z ~ N(0, I)"))
    _report_failures(failures)
    print(f"done in {seconds:.1f} s. Run saved in {run_dir}\n"
          f"next: pyro-gen sample {run_dir} -n 64 -o samples.png    pyro-gen compare --runs {run_dir}")
    return 1 if failures else 0


def cmd_train(args) -> int:
    from ..evaluate import elbo_per_datum
    from ..plots import plot_history, plot_images, plot_reconstructions
    from ..run import build_model, conditions, load_run, make_config, on_side_vectors, split_tensor
    from ..train import fit
    from ..vae import ModelSpec

    if args.resume and args.out is None:
        raise UsageError("--resume needs --out RUN_DIR, the run to continue (or to start, if it holds none yet)")
    model_kw, train_kw = _explicit(args, MODEL_FLAGS), _explicit(args, TRAIN_FLAGS)
    family = _family_of_args(args)
    _check_family_flags(args, family, {**model_kw, **train_kw}, new=not (args.resume and (args.out / CONFIG).exists()))
    if family.settings is not TrainSettings:  # the GAN: trained by its adversarial step, not by SVI
        return _cmd_train_gan(args, family, model_kw, train_kw)
    from .. import distributed
    device = device_of(args)  # an unknown or missing device: one line, before anything is written
    device = distributed.setup(device)  # under torchrun: join the other processes (nccl on CUDA, gloo on the CPU)
    resuming = _resuming(args)
    if resuming:
        # a run killed before its first epoch ended has no checkpoint yet: it starts again
        run = load_run(args.out, require_checkpoint=False)
        config, spec = run.config, run.spec
        changes = _check_resume(args, config, {**model_kw, **train_kw}, TRAIN_FLAGS)
        settings = TrainSettings(**{**config["train"], **train_kw})
        run_dir = args.out
    else:
        model = _model_kind(args, model_kw)
        run_dir = args.out or Path("runs") / f"{model}-{time.strftime('%Y%m%d-%H%M%S')}"
        if (run_dir / CHECKPOINT).exists() or (run_dir / CONFIG).exists():
            raise UsageError(f"{run_dir} already holds a run: continue it with --resume or choose another --out")
        settings = TrainSettings(**FAMILIES[model].defaults_for(train_kw))
        data_spec = args.data or "mnist-10k"
    likelihood = model_kw.get("likelihood", "bernoulli") if not resuming else spec.likelihood
    ds = (run.load_data() if resuming else load_data(data_spec, likelihood=likelihood, root=args.data_root))
    if not resuming:
        condition_dim, condition = _condition(model, ds, data_spec)
        spec = ModelSpec(image_shape=ds.image_shape, condition_dim=condition_dim, **model_kw)
        config = make_config(spec, settings, data_spec, args.data_root, model_kind=model, condition=condition)
        if model == "module":
            config["module"] = parse_model(args.model)[1]
        if FAMILIES[model].configure is not None:  # the sections its own flags set (the ssvae's labelled subset)
            config[model] = FAMILIES[model].configure(FAMILIES[model].options(args), ds, settings.seed)
    torch.manual_seed(settings.seed)  # the seed also fixes the initial parameters
    vae = build_model(spec, config)
    family = family_of(config)
    x_test, y_test = split_tensor(ds, binarizes(spec))
    if family.generic:  # a pair outside the library: check the contract before anything is written
        from ..traces import inspect_pair
        inspect_pair(vae, x_test[:2])
    c_train, c_test = conditions(config, ds)  # the labels or side vectors a cvae is given
    y_cond = None if c_test is None else torch.as_tensor(c_test, device="cpu")
    if settings.elbo == "analytic":  # refuse a pair without a closed-form KL before anything is written
        from ..objectives import check_analytic_kl
        check_analytic_kl(vae.model, vae.guide, x_test[:2], *(() if y_cond is None else (y_cond[:2],)))
    if settings.free_bits:  # the same for free bits on a guide or prior that does not factorize
        from ..train import check_free_bits
        check_free_bits(vae, x_test[:1], None if y_cond is None else y_cond[:1])
    distributed.barrier()  # every process has checked the run directory before any writes to it
    if distributed.is_main():
        if not resuming:
            run_dir.mkdir(parents=True, exist_ok=True)
        else:
            config["train"] = asdict(settings)
            record_resume(config, len(run.history), changes)
        config["device"] = str(device)
        write_json(run_dir / CONFIG, config)
    distributed.barrier()
    if distributed.is_main():
        given = (f", conditioned on side vectors of size {spec.condition_dim}"
                 if on_side_vectors(config) else "")
        print(f"training a {config['model_kind']} on {config['data']['spec']} ({len(ds.train_x)} train / "
              f"{len(ds.test_x)} test images of shape {ds.image_shape}{given}) for {settings.epochs} epochs -> {run_dir}"
              + (f" on {distributed.rank_world()[1]} processes" if distributed.rank_world()[1] > 1 else ""),
              file=sys.stderr)
    t0 = time.perf_counter()
    vae.to(device)
    train_x, train_y, val_y = _fit_inputs(config, ds, c_train, c_test)
    result = fit(vae, train_x, settings, train_y=train_y, val_y=val_y,
                 val_x=x_test.numpy() if settings.patience is None else None,
                 run_dir=run_dir, resume=resuming and (run_dir / CHECKPOINT).exists(), progress=not args.quiet,
                 epoch_metrics=_epoch_metrics(family, x_test, y_test), binarize=binarizes(spec))
    seconds = time.perf_counter() - t0
    if not distributed.is_main():
        return 0
    torch.manual_seed(settings.seed)
    test_elbo = float(elbo_per_datum(vae, x_test, num_draws=10, y=y_cond).mean())
    x_show, y_show = x_test[:20].to(device), None if y_cond is None else y_cond.to(device)
    summary = {"test_elbo": test_elbo, "train_seconds": seconds, "epochs": len(result.history),
               "stopped_early": result.stopped_early}
    if hasattr(vae, "classify"):
        from ..ssvae import accuracy
        summary["test_accuracy"] = accuracy(vae, x_test, y_test)
        print(f"test accuracy of q(y|x): {summary['test_accuracy']:.4f}", file=sys.stderr)
    write_json(run_dir / "summary.json", summary)  # the numbers first: a failing figure never loses them
    failures = {}
    attempt(failures, "elbo_curve.png", lambda: plot_history(result.history, run_dir / "elbo_curve.png"))
    y_rec = () if y_show is None else (y_show[:20],)
    if callable(getattr(vae, "reconstruct", None)):  # optional for a pair (docs/own_model.rst)
        attempt(failures, "reconstructions.png",
                lambda: plot_reconstructions(x_test[:20].numpy(), vae.reconstruct(x_show, *y_rec).cpu().numpy(),
                                             run_dir / "reconstructions.png"))
    gen = torch.Generator().manual_seed(settings.seed)
    side = y_show[torch.arange(100, device=device) % len(y_show)] if on_side_vectors(config) else None
    classes = getattr(vae, "num_classes", None) or (0 if side is not None else getattr(vae, "condition_dim", 0))
    given = (", given the test side vectors" if side is not None else
             ", column c is class c" if classes == 10 else f", image i is of class i mod {classes}" if classes else "")
    what = ("pixel probabilities along a draw" if getattr(getattr(vae, "likelihood", None), "sequential", False)
            else "mean images")  # bernoulli-ar: each pixel's probability given the pixels drawn before it
    title = f"Samples ({what} of z ~ p(z){given})"
    side_kw = {} if side is None else {"y": side}
    if callable(getattr(vae, "sample", None)):  # optional for a pair (docs/own_model.rst)
        attempt(failures, "samples.png", lambda: plot_images(vae.sample(100, generator=gen, **side_kw).cpu().numpy(),
                                                             run_dir / "samples.png", title=title))
    _report_failures(failures)
    label = "test MAP objective" if family.guide == "delta" else "test ELBO"
    print(f"done in {seconds:.1f} s: {label} {test_elbo:.2f} nats/image (mean of 10 draws on "
          f"{len(x_test)} test images). Run saved in {run_dir}\n"
          f"next: pyro-gen evaluate {run_dir}    pyro-gen sample {run_dir} -n 64 -o samples.png"
          + ("" if side is None else " --condition=" + ",".join(f"{v:.3g}" for v in side[0].tolist()))
          + ("" if device.type == "cpu" else f"    (trained on {device})"))
    return 1 if failures else 0


def _report_failures(failures: dict) -> None:
    for name, error in failures.items():
        print(f"pyro-gen train: {name} failed ({error}); the run, its checkpoint and summary.json are saved",
              file=sys.stderr)
