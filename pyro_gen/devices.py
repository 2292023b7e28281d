"""Where a model runs: device names as users write them, and tensors moved for checkpoints.

One rule: a model/guide pair runs on the device of its parameters. The command line's
``--device auto|cpu|cuda|cuda:N|mps`` (default ``auto``: CUDA when available, else the CPU) puts
the pair there; the engine and the evaluation move each batch of data to the pair's device and
bring results back to the CPU. Checkpoints always hold CPU tensors, so a run trained on a GPU
resumes, evaluates and samples on a laptop and back. Training flushes subnormal floats to zero on
the CPU (:func:`flush_denormals`).
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional

import torch

from .errors import InputError

__all__ = ["rng_devices", "DEVICES", "resolve_device", "module_device", "to_cpu", "flush_denormals", "spawn_generator"]

#: What ``--device`` accepts.
DEVICES = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(spec: str = "auto") -> torch.device:
    """The device a ``--device`` value names, checked to exist on this machine.

    :param spec: ``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    :raises InputError: one line for an unknown name or a device this machine does not have.
    """
    text = (spec or "auto").strip().lower()
    if text == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise InputError(f"--device {spec}: unknown device; expected {DEVICES}") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {spec}: this machine has no CUDA GPU (or this PyTorch build has no CUDA "
                             "support); use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise InputError(f"--device {spec}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
        return device
    if device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise InputError(f"--device {spec}: Apple's MPS backend is not available on this machine; use --device cpu")
        return device
    raise InputError(f"--device {spec}: unsupported device type {device.type!r}; expected {DEVICES}")


def module_device(module) -> torch.device:
    """The device of a module's first parameter or buffer (the CPU for a module with none)."""
    if isinstance(module, torch.nn.Module):
        for t in module.parameters():
            return t.device
        for t in module.buffers():
            return t.device
    return torch.device("cpu")


def to_cpu(obj: Any) -> Any:
    """``obj`` with every tensor inside (dicts, lists, tuples) moved to the CPU, detached: what a
    checkpoint holds, so that it loads on any machine."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def rng_devices(*objs) -> list:
    """The CUDA devices of the tensors and modules ``objs``: what ``torch.random.fork_rng(devices=...)``
    must fork so that draws made there leave the global random state as it was (the CPU's state
    is always forked; an empty list on a machine without CUDA, so CUDA is never initialized)."""
    out = []
    for obj in objs:
        device = module_device(obj) if isinstance(obj, torch.nn.Module) else getattr(obj, "device", None)
        if device is not None and device.type == "cuda" and device not in out:
            out.append(device)
    return out


@contextlib.contextmanager
def flush_denormals() -> Iterator[bool]:
    """Flush subnormal floats (below :math:`1.2 \\times 10^{-38}` in float32) to zero on the CPU
    for the duration (:func:`torch.set_flush_denormal`; yields whether the CPU supports it).

    A trained model's computations make subnormals (the importance weights of the IWAE and Rényi
    bounds underflow: a particle 100 nats below the best weighs :math:`e^{-100}`), and x86 CPUs
    take up to a hundred times longer per operation on them. Measured with
    ``benchmarks/subnormal_step.py`` (one thread, batch 128, loss and backward on training
    images): a two-layer hierarchical VAE after 708 epochs of IWAE (K = 5) 58.2 ms per step kept,
    38.1 ms flushed (1.55x), its ELBO 1.25x; the hierarchy with a VampPrior after 540 epochs 1.19x
    (ELBO 1.10x); the one-layer VampPrior VAE 1.02x (ELBO 0.98-0.99x, the one case where flushing
    cost time). The values flushed are below anything a loss or a gradient can resolve. On exit
    the setting is what it was before.

    The setting belongs to a thread: torch's worker threads take it from the thread that starts
    them, so it reaches every thread only when set before torch's first parallel operation
    (``pyro-gen train`` sets it when it starts; worker threads started meanwhile keep it after
    the exit); in a Python session whose worker threads already run it reaches the calling
    thread, all of the work with ``torch.set_num_threads(1)`` (as in the figures above).
    """
    was_on = _flushing()
    on = torch.set_flush_denormal(True)
    try:
        yield on
    finally:
        if on and not was_on:
            torch.set_flush_denormal(False)


def spawn_generator(generator: Optional[torch.Generator]) -> Optional[torch.Generator]:
    """A new CPU generator seeded from one number of ``generator`` (which moves on by that number),
    for draws that must not repeat the random numbers another draw read from ``generator``'s state
    (:func:`pyro_gen.priors.sample_prior` reads it without moving it on); ``None`` for ``None``."""
    if generator is None:
        return None
    return torch.Generator().manual_seed(int(torch.randint(2 ** 62, (1,), generator=generator)))


def _flushing() -> bool:
    """Whether this thread flushes subnormals now (torch has no getter: a subnormal product tells)."""
    return (torch.tensor([1e-38], device="cpu") * 0.5).item() == 0.0
