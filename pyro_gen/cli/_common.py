"""What the ``pyro-gen`` commands share: the parser whose errors are one line, :class:`UsageError`,
the model flags, and the kind of a saved run (the checked number types are :mod:`pyro_gen._flags`)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..checkpoint import CONFIG
from .._flags import positive_int
from .._spec import canonical_spec
from ..errors import InputError
from .._spec import spec_usage
from ..guides import GUIDES
from ..likelihoods import LIKELIHOODS
from ..nets import ACTIVATIONS, NETWORKS
from ..priors import PRIORS


class UsageError(InputError):
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
    ("--latent-dim", "latent_dim", dict(type=positive_int, help="size of z (default 32)")),
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


def _run_family(run_dir: Path):
    """The :class:`~pyro_gen.families.Family` of the run in ``run_dir``, or ``None`` if its
    ``config.json`` cannot be read or names no known family (loading the run then says why)."""
    from ..families import family_of
    try:
        config = json.loads((Path(run_dir) / CONFIG).read_text())
        return family_of(config) if isinstance(config, dict) else None
    except (OSError, ValueError):
        return None


def refuse_without_density(run_dir: Path, command: str) -> None:
    """One line for ``evaluate`` or ``diagnose`` of a run whose model has no likelihood and guide (the GAN)."""
    family = _run_family(run_dir)
    if family is not None and not family.density:
        raise UsageError(f"{run_dir} is a {family.name} run: pyro-gen {command} needs a model with a likelihood and "
                         f"a guide (a {family.name} has neither); pyro-gen compare --runs {run_dir} scores its samples")


#: Settings that ``--resume`` may change, because they change neither the model nor the data: the
#: number of epochs, the learning rates, and the patience of early stopping (between two values; turning
#: early stopping on or off would move images between the training and the held-out split).
RESUMABLE = ("epochs", "lr", "d_lr", "patience")


def _same(name: str, stored, given) -> bool:
    """Whether a flag's value means what the run stored (specs compared by meaning, data files by path)."""
    if name in ("prior", "guide"):
        table = PRIORS if name == "prior" else GUIDES
        try:
            return canonical_spec(str(stored), table, name) == canonical_spec(str(given), table, name)
        except ValueError:
            return stored == given
    if name == "hidden":
        return stored is not None and tuple(stored) == tuple(given)
    if name in ("data", "data_root") and stored is not None and given is not None:
        a, b = Path(str(stored)), Path(str(given))
        if a.exists() and b.exists():
            return a.resolve() == b.resolve()
        return str(stored) == str(given)
    if isinstance(stored, float) or isinstance(given, float):
        try:
            return float(stored) == float(given)
        except (TypeError, ValueError):
            return False
    return stored == given


def _show(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return "none" if value is None else str(value)


def resume_changes(run_dir, given: dict, stored: dict, flags: dict) -> dict:
    """Check the flags of ``--resume`` against the run's configuration.

    :param run_dir: the run (for the message).
    :param given: the flags given on the command line, by setting name.
    :param stored: the run's value of each of these settings (``None`` when it has none).
    :param flags: the command-line flag of each setting name, for the message.
    :returns: ``{name: (stored, given)}`` for the settings of :data:`RESUMABLE` that change.
    :raises UsageError: naming every other flag whose value differs, with both values.
    """
    changes, refused = {}, []
    for name, value in given.items():
        old = stored.get(name)
        if _same(name, old, value):
            continue
        if name in RESUMABLE and not (name == "patience" and (old is None) != (value is None)):
            changes[name] = (old, value)
        else:
            refused.append(f"{flags[name]} (the run has {_show(old)}, the command gives {_show(value)})")
    if refused:
        raise UsageError(f"--resume continues {run_dir} as it was configured; it cannot change "
                         f"{'; '.join(refused)}. Only {', '.join('--' + r.replace('_', '-') for r in RESUMABLE)} "
                         "may change on resume")
    return changes


def record_resume(config: dict, epoch: int, changes: dict) -> None:
    """Note in ``config`` (under ``"resumed"``) the settings a resume changed and at which epoch."""
    if changes:
        config.setdefault("resumed", []).append(
            {"after_epoch": epoch, "changed": {k: [old, new] for k, (old, new) in changes.items()}})


def add_device_flag(parser: argparse.ArgumentParser) -> None:
    """``--device`` (default ``auto``: CUDA if available, else the CPU)."""
    parser.add_argument("--device", default="auto", metavar="DEVICE",
                        help="where the model runs: auto (CUDA if available, else the CPU; default), cpu, cuda, "
                             "cuda:N or mps")


def device_of(args):
    """The ``--device`` of a command, resolved and checked before anything is written (one line
    and exit code 2 for an unknown or unavailable device)."""
    from ..devices import resolve_device
    return resolve_device(getattr(args, "device", "auto"))
