"""``pyro-gen diagnose``: the diagnostics of a trained VAE or autoencoder run and its report.html."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .._flags import positive_int
from ._common import add_device_flag, device_of, refuse_without_density


def add_diagnose_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``pyro-gen diagnose`` and its flags to the subcommands ``sub``."""
    dg = sub.add_parser("diagnose", help="diagnose a trained run and write report.html",
                        description="Diagnose a run on its test split (or on --data): ELBO terms, KL per dimension, "
                                    "active units, IWAE bound against K, PSIS k-hat per image, amortization gap, "
                                    "gradient noise. Writes diagnostics.json, posterior.nc (ArviZ), figures and "
                                    "a self-contained report.html into RUN_DIR.")
    dg.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    dg.add_argument("--data", help="diagnose on this data set's test split instead of the run's")
    dg.add_argument("--k-max", type=positive_int, default=5000,
                    help="importance samples per image for the IWAE curve and k-hat (default 5000)")
    dg.add_argument("--points", type=positive_int, default=500,
                    help="test images for the IWAE curve, k-hat and posterior draws (default 500)")
    dg.add_argument("--gap-points", type=positive_int, default=None,
                    help="test images for the amortization gap (default 100 for the built-in VAE's guides; 10 for "
                         "any other pair -- your own, the hvae, a cvae -- whose guide is refined on each image in turn)")
    dg.add_argument("--gap-steps", type=positive_int, default=500,
                    help="Adam steps of the per-image optimization for the amortization gap (default 500)")
    dg.add_argument("--grad-repeats", type=positive_int, default=100,
                    help="gradient draws for the gradient variance and SNR (default 100)")
    dg.add_argument("--seed", type=int, default=0)
    dg.add_argument("--json", action="store_true", help="print diagnostics.json's content on standard output")
    add_device_flag(dg)
    dg.add_argument("--quiet", action="store_true", help="no progress bars or stage messages")


def cmd_diagnose(args) -> int:
    device = device_of(args)  # checked before anything runs
    from ..diagnostics import diagnose_run
    from ..diagnostics.verdicts import summary_line

    refuse_without_density(args.run_dir, "diagnose")
    quiet = args.quiet or args.json
    log = None if quiet else (lambda msg: print(f"pyro-gen diagnose: {msg}", file=sys.stderr, flush=True))
    d = diagnose_run(args.run_dir, args.data, k_max=args.k_max, points=args.points, gap_points=args.gap_points,
                     gap_steps=args.gap_steps, grad_repeats=args.grad_repeats, seed=args.seed,
                     progress=not quiet, log=log, device=device)
    if args.json:
        print(json.dumps(d.to_dict(), sort_keys=True))
    else:
        for v in d.verdicts:
            print(f"[{v.status:>7}] {v.check}: {v.advice if v.status == 'n/a' else v.value}")
        print(f"verdicts: {summary_line(d.verdicts)}")
        print(f"done in {d.seconds.get('total', 0):.1f} s: report {args.run_dir / 'report.html'}, numbers "
              f"{args.run_dir / 'diagnostics.json'}, posterior draws {args.run_dir / 'posterior.nc'}")
    for part, error in d.failures.items():
        print(f"pyro-gen diagnose: {part} failed ({error}); everything else is saved "
              f"(diagnostics.json says which parts are missing)", file=sys.stderr)
    return 1 if d.failures else 0
