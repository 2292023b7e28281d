"""``pyro-gen compare``: models trained for the same wall-clock budget (or finished runs), scored on
likelihood and sample quality side by side."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .._flags import positive_float, positive_int
from ._common import MODEL_FLAGS, UsageError, _explicit, add_device_flag, device_of

#: The model flags of ``pyro-gen compare``: the networks every compared model shares.
COMPARE_MODEL_FLAGS = [f for f in MODEL_FLAGS if f[1] in ("latent_dim", "net", "hidden", "likelihood", "activation")]


def add_compare_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``pyro-gen compare`` and its flags to the subcommands ``sub``."""
    cp = sub.add_parser("compare", help="train models for the same time; compare likelihood and sample quality",
                        description="Train each model of --models on the same data with the same generator network "
                                    "for the same wall-clock budget (and/or load finished --runs), then write a "
                                    "table (Markdown, CSV, JSON) of test ELBO and NLL where defined, FID, precision, "
                                    "recall, density, coverage and class entropy in the feature space of a domain "
                                    "classifier, and one figure of samples side by side. See docs/comparison.rst.")
    cp.add_argument("--models", metavar="LIST", help="comma-separated: vae, ae, gan (non-saturating), wgan-gp "
                    "(default vae,gan; none when --runs is given)")
    cp.add_argument("--runs", nargs="+", type=Path, metavar="RUN", help="finished run directories to score as they are")
    cp.add_argument("--budget-seconds", type=positive_float, default=120.0,
                    help="wall-clock training time of each model; training stops after the epoch that crosses it "
                         "(default 120)")
    cp.add_argument("--max-epochs", type=positive_int, default=100000, help="cap on the epochs of each model")
    cp.add_argument("--out", type=Path, help="output folder (default runs/compare-TIMESTAMP)")
    cp.add_argument("--data", help="mnist-10k (bundled, default; or the first run's data), mnist, fashion-mnist, "
                                   "or a .npz file with labels")
    cp.add_argument("--data-root", type=Path, help="folder holding the mnist / fashion-mnist files")
    for flag, _, kw in COMPARE_MODEL_FLAGS:
        cp.add_argument(flag, **kw)
    cp.add_argument("--k", type=positive_int, default=1000, help="importance samples per test image for the NLL "
                    "(default 1000)")
    cp.add_argument("--draws", type=positive_int, default=10, help="ELBO draws per test image (default 10)")
    cp.add_argument("--n-samples", type=positive_int, help="samples per model (default: the test-split size)")
    cp.add_argument("--nn-k", type=positive_int, default=5, help="neighbour k of precision/recall/density/coverage "
                    "(default 5)")
    cp.add_argument("--seed", type=int, default=0)
    cp.add_argument("--classifier-cache", type=Path, metavar="DIR", help="cache of the domain classifier (default "
                    "$PYRO_GEN_CACHE/classifier or ~/.cache/pyro_gen/classifier)")
    cp.add_argument("--classifier-epochs", type=positive_int, default=5, help=argparse.SUPPRESS)  # tests only
    add_device_flag(cp)
    cp.add_argument("--quiet", action="store_true", help="no progress bars or stage messages")


def cmd_compare(args) -> int:
    device = device_of(args)  # checked before anything runs
    from ..compare import MODEL_TRAINERS, compare, markdown_table

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
                     progress=not args.quiet, log=log, device=device)
    print(markdown_table(result), end="")
    written = ["comparison.csv", "comparison.json"] + [f for f in ("samples.png",) if f not in result.failures]
    print(f"pyro-gen compare: done in {result.wall_seconds:.0f} s: {out}/comparison.md, {', '.join(written)}",
          file=sys.stderr)
    for name, error in result.failures.items():
        print(f"pyro-gen compare: {name} failed ({error}); the tables are saved", file=sys.stderr)
    return 1 if result.failures else 0
