"""Atomic, safe saving and loading of a run directory.

A run directory holds ``config.json`` (what was trained, how, on which data),
``checkpoint.pt`` (tensors only: state dicts, RNG states, counters), ``metrics.jsonl`` (one JSON
object per epoch), figures and reports. Every file is written to a temporary file in the same
folder and renamed over the old one, so a crash or a failed write never leaves a half-written
file and never destroys the previous version. Checkpoints are read with
``torch.load(weights_only=True)``: loading a run never unpickles arbitrary objects.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, List

import torch

from .errors import InputError

__all__ = ["RunError", "FORMAT_VERSION", "atomic_write", "attempt", "write_json", "read_json",
           "save_checkpoint", "load_checkpoint", "resume_history", "read_jsonl", "write_jsonl",
           "CONFIG", "CHECKPOINT", "METRICS"]

FORMAT_VERSION = 1
CONFIG, CHECKPOINT, METRICS = "config.json", "checkpoint.pt", "metrics.jsonl"


class RunError(InputError):
    """A run directory or checkpoint that cannot be used; ``str(e)`` is one line naming the file."""


def atomic_write(path, write: Callable[[io.BufferedWriter], None]) -> None:
    """Write a file atomically: ``write(f)`` fills a temporary file in the same folder, which is
    flushed, synced and renamed over ``path``. On any error the temporary file is removed and
    the old ``path`` (if any) is left as it was.

    :param path: the destination.
    :param write: a function writing the content to a binary file object.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def attempt(failures: Dict[str, str], name: str, work: Callable[[], Any]) -> bool:
    """Run one optional part of an expensive command (a figure, a report, a NetCDF file); if it
    fails, record ``"Type: message"`` under ``failures[name]`` and go on, so that a late failure
    never loses what was computed before it. Returns whether it succeeded."""
    try:
        work()
        return True
    except Exception as e:  # noqa: BLE001 -- any failure of an optional part
        failures[name] = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
        return False


def write_json(path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    data = (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()
    atomic_write(path, lambda f: f.write(data))


def read_json(path) -> Any:
    """Read a JSON file; a missing or malformed file raises :class:`RunError`."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path}: not valid JSON ({e})") from None


def write_jsonl(path, rows: List[dict]) -> None:
    """Rewrite a JSON-lines file atomically with ``rows``."""
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    atomic_write(path, lambda f: f.write(data))


def read_jsonl(path) -> List[dict]:
    """Read a JSON-lines file; a missing file is empty."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise RunError(f"{path}: line {i} is not valid JSON ({e})") from None
    return rows


def resume_history(run_dir, epochs: int) -> List[dict]:
    """The first ``epochs`` rows of a run's ``metrics.jsonl`` (those its checkpoint covers; rows a
    killed run wrote after its last checkpoint are dropped).

    :raises RunError: if the file has fewer rows than the checkpoint's epochs.
    """
    path = Path(run_dir) / METRICS
    history = read_jsonl(path)[:epochs]
    if len(history) != epochs:
        raise RunError(f"{path}: has {len(history)} epochs, checkpoint has {epochs}")
    return history


def save_checkpoint(path, state: Dict[str, Any]) -> None:
    """Save a checkpoint (a dict of tensors, numbers, strings, lists and dicts) atomically.

    :param path: the destination, usually ``RUN_DIR/checkpoint.pt``.
    :param state: the content (tensors on any device; they are saved as CPU tensors);
        ``format_version`` is added.
    """
    from .devices import to_cpu
    state = dict(to_cpu(state), format_version=FORMAT_VERSION)  # CPU tensors: loads on any machine
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path) -> Dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)``.

    :raises RunError: if the file is missing, truncated, corrupt, holds anything but tensors and
        plain data, or was written by an incompatible version.
    """
    path = Path(path)
    if not path.exists():
        raise RunError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RunError(f"{path}: truncated or corrupt checkpoint ({msg[:200]})") from None
    except Exception as e:  # pickle.UnpicklingError for forbidden objects
        raise RunError(f"{path}: refusing to load a checkpoint holding objects other than tensors "
                       f"({type(e).__name__})") from None
    if not isinstance(state, dict) or "format_version" not in state:
        raise RunError(f"{path}: not a pyro_gen checkpoint")
    if state["format_version"] != FORMAT_VERSION:
        raise RunError(f"{path}: checkpoint format version {state['format_version']} is not supported "
                       f"by this pyro_gen (expects {FORMAT_VERSION})")
    return state
