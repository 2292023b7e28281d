"""Multi-process training with ``torchrun`` and ``DistributedDataParallel``.

``torchrun --nproc-per-node N -m pyro_gen train ...`` starts N processes; :func:`setup` joins them
into a process group: ``nccl`` with one GPU per process (``cuda:LOCAL_RANK``) when training on
CUDA, ``gloo`` on the CPU (where the wait for gloo's worker thread below is needed).
:func:`pyro_gen.train.fit` then wraps the loss computation in DDP, gives each process
``batch_size / N`` images of every global minibatch (a ``DistributedSampler`` with
``set_epoch``), scales each process's ELBO to the whole data set (DDP's gradient average then
equals the single-process gradient of the global batch), seeds each process's draws
differently, and lets only process 0 write files and show the progress bar. With one process
every function here is a no-op.
"""
from __future__ import annotations

import math
import os
import sys
import time
import warnings
from typing import Tuple

import torch
import torch.distributed as dist

__all__ = ["launched_processes", "setup", "rank_world", "wrap", "all_finite", "total", "agree", "is_main", "barrier"]


def launched_processes() -> int:
    """How many processes ``torchrun`` started (its ``WORLD_SIZE``); 1 without ``torchrun``."""
    return int(os.environ.get("WORLD_SIZE", "1"))


#: The device of this process's collectives (set by :func:`setup`).
_DEVICE = torch.device("cpu")


def setup(device=None) -> torch.device:
    """Join the process group when started by ``torchrun`` (``WORLD_SIZE`` > 1); no-op otherwise.

    :param device: where training runs (default the CPU). On CUDA each process takes the GPU of
        its ``LOCAL_RANK`` and the group uses ``nccl``; on the CPU, ``gloo``.
    :returns: the device this process trains on.
    """
    global _DEVICE
    device = torch.device("cpu") if device is None else torch.device(device)
    if launched_processes() > 1:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    _DEVICE = device
    return device


def rank_world() -> Tuple[int, int]:
    """``(rank, world_size)``: ``(0, 1)`` without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return rank_world()[0] == 0


def barrier() -> None:
    if rank_world()[1] > 1:
        dist.barrier()


def wrap(module: torch.nn.Module, world: int) -> torch.nn.Module:
    """``DistributedDataParallel(module)`` when there are several processes."""
    if world == 1:
        return module
    if _DEVICE.type == "cuda":
        return torch.nn.parallel.DistributedDataParallel(module, device_ids=[_DEVICE.index])
    return torch.nn.parallel.DistributedDataParallel(module)


def _collective(op, tensor: torch.Tensor, *args, timeout: float = 10.0) -> torch.Tensor:
    """``op(tensor, *args)`` (a blocking collective), returning only once no other thread holds ``tensor``.

    Gloo's worker thread lets go of a finished collective's tensors a moment after ``wait()`` has
    returned here. Dropping the last reference to a tensor that Python created makes that thread
    take the GIL; if the interpreter is exiting by then, Python ends the thread and the process
    aborts ("terminate called without an active exception", pytorch/pytorch#190489; in our
    2-process test about 1 run in 40, from the last collective before exit). Sleeping here until
    the tensor's reference count is back where it was lets that thread finish while the interpreter
    is still whole. It takes microseconds; after ``timeout`` seconds it warns and goes on.
    """
    base = sys.getrefcount(tensor)
    op(tensor, *args)
    deadline = time.monotonic() + timeout
    while sys.getrefcount(tensor) > base:  # a C++ owner holds a reference to the Python object
        if time.monotonic() > deadline:
            warnings.warn("a gloo worker thread still holds a collective's tensor after "
                          f"{timeout:g} s; the process may abort at exit", RuntimeWarning)
            break
        time.sleep(1e-5)  # releases the GIL for that thread
    return tensor


def all_finite(value: float, world: int) -> bool:
    """Whether ``value`` is finite in every process (so that all of them stop together)."""
    if world == 1:
        return math.isfinite(value)
    bad = _collective(dist.all_reduce, torch.tensor([0.0 if math.isfinite(value) else 1.0], device=_DEVICE))
    return bad.item() == 0


def total(value: float, world: int) -> float:
    """The sum of ``value`` over processes."""
    if world == 1:
        return value
    return _collective(dist.all_reduce, torch.tensor([value], dtype=torch.float64, device=_DEVICE)).item()


def agree(flag: bool, world: int) -> bool:
    """Process 0's ``flag``, the same in every process."""
    if world == 1:
        return flag
    return bool(_collective(dist.broadcast, torch.tensor([1 if flag else 0], device=_DEVICE), 0).item())
