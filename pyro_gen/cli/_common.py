"""What the ``pyro-gen`` commands share: the parser whose errors are one line, :class:`UsageError`,
the checked number types given to argparse, the model flags, and the kind of a saved run."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Optional

from ..checkpoint import CONFIG
from .._spec import spec_usage
from ..guides import GUIDES
from ..likelihoods import LIKELIHOODS
from ..nets import ACTIVATIONS, NETWORKS
from ..priors import PRIORS


class UsageError(ValueError):
    """Bad flags or flag values."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (and exit code 2), like the rest of the CLI."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def refuse_under_torchrun(what: str) -> None:
    """Raise :class:`UsageError` when ``torchrun`` started several processes for a command that
    runs in one (all but a VAE-family ``train``): each process would write the same files."""
    from ..distributed import launched_processes
    n = launched_processes()
    if n > 1:
        raise UsageError(f"{what} runs in one process, but torchrun started {n} (WORLD_SIZE={n}); only the "
                         "training of the VAE models is split over processes: run it without torchrun")


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


def _explicit(args, flags) -> dict:
    return {name: getattr(args, flag[2:].replace("-", "_")) for flag, name, _ in flags
            if getattr(args, flag[2:].replace("-", "_")) is not None}


def _run_kind(run_dir: Path) -> Optional[str]:
    """The ``model_kind`` in ``run_dir/config.json``, or ``None`` if it cannot be read."""
    try:
        config = json.loads((Path(run_dir) / CONFIG).read_text())
        return config.get("model_kind") if isinstance(config, dict) else None
    except (OSError, ValueError):
        return None
