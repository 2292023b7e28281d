"""The ``pyro-gen`` command line: parses, calls the library, prints.

Exit codes: 0 on success, 2 on bad usage or bad input (one line on standard error naming the
problem: :class:`~pyro_gen.errors.InputError` and its kinds), 1 when training fails (e.g. a
non-finite loss) or on an internal error (one line naming the exception's type and a file
holding the full traceback), 130 when interrupted.

The commands live one per module: ``pyro_gen.cli.train`` (``train``, the GAN branch included),
``pyro_gen.cli.evaluate`` (``evaluate`` and ``sample``), ``pyro_gen.cli.diagnose`` and
``pyro_gen.cli.compare``, each with the function that adds its subcommand to the parser;
``pyro_gen.cli._common`` holds what they share.
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import List, Optional

from .. import __version__
from ..devices import flush_denormals
from ..errors import InputError
from ..train import TrainingError
# the model names, flag tables and cmd_* functions stay importable from pyro_gen.cli, as before the split
from ._common import MODEL_FLAGS, UsageError, _Parser, refuse_under_torchrun  # noqa: F401
from .compare import COMPARE_MODEL_FLAGS, add_compare_parser, cmd_compare  # noqa: F401
from .diagnose import add_diagnose_parser, cmd_diagnose
from .doctor import add_doctor_parser, cmd_doctor
from .evaluate import add_evaluate_parser, add_sample_parser, cmd_evaluate, cmd_sample
from .train import MODELS, TRAIN_FLAGS, add_train_parser, cmd_train  # noqa: F401

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pyro-gen", description="Deep generative models as Pyro model/guide pairs.")
    parser.add_argument("--version", action="version", version=f"pyro-gen {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add_parser in (add_train_parser, add_evaluate_parser, add_sample_parser, add_diagnose_parser,
                       add_compare_parser, add_doctor_parser):
        add_parser(sub)
    return parser


#: flags whose value may start with a minus sign ("--condition -2,1")
NEGATIVE_VALUE_FLAGS = ("--condition",)
_NUMBER_START = re.compile(r"-\.?\d")


def _glue_negative_values(argv: List[str]) -> List[str]:
    """``--condition -2,1`` -> ``--condition=-2,1``. argparse reads "-2,1" as an unknown flag,
    since it takes only a single number such as "-2" for a negative value."""
    out: List[str] = []
    for arg in argv:
        if out and out[-1] in NEGATIVE_VALUE_FLAGS and _NUMBER_START.match(arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "sample": cmd_sample, "diagnose": cmd_diagnose,
            "compare": cmd_compare, "doctor": cmd_doctor}


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(_glue_negative_values(argv))
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        if args.command == "train":  # flushing set before torch starts its worker threads, which inherit it
            with flush_denormals():
                return cmd_train(args)  # train refuses torchrun itself for the GAN
        refuse_under_torchrun(args.command)
        return COMMANDS[args.command](args)
    except InputError as e:  # UsageError, DataError, RunError and the library's own checks
        print(f"pyro-gen {args.command}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except TrainingError as e:
        print(f"pyro-gen {args.command}: training failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"pyro-gen {args.command}: interrupted; the last complete epoch is saved (continue with --resume)",
              file=sys.stderr)
        return 130
    except Exception as e:  # a defect, not the user's input: say so, keep the traceback
        where = _write_traceback(args, argv)
        first = " ".join(str(e).split())[:300]
        print(f"pyro-gen {args.command}: internal error ({type(e).__name__}: {first}); this is a bug in pyro_gen "
              f"or in a module it loaded, not a problem with your input. Full traceback: {where}", file=sys.stderr)
        return 1


def _write_traceback(args, argv: List[str]) -> str:
    """Write the current exception's traceback to ``RUN_DIR/error-COMMAND.txt`` when the command
    names a run directory that exists, else to a file in the temporary folder; returns its path."""
    text = (f"pyro-gen {' '.join(argv)}\n{time.strftime('%Y-%m-%d %H:%M:%S')}\n\n"
            + traceback.format_exc())
    folder = getattr(args, "out", None) or getattr(args, "run_dir", None)
    if folder is not None and Path(folder).is_dir():
        path = Path(folder) / f"error-{args.command}.txt"
        try:
            path.write_text(text)
            return str(path)
        except OSError:
            pass
    fd, name = tempfile.mkstemp(prefix=f"pyro-gen-{args.command}-error-", suffix=".txt")
    with open(fd, "w") as f:
        f.write(text)
    return name
