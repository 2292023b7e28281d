"""Multi-process training with ``torchrun`` and ``DistributedDataParallel``.

``torchrun --nproc-per-node N -m pyro_gen train ...`` starts N processes; :func:`setup` joins them
into a process group (``nccl`` when CUDA is available, ``gloo`` on CPU).
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
from typing import Tuple

import torch
import torch.distributed as dist

__all__ = ["setup", "rank_world", "wrap", "all_finite", "total", "agree", "is_main", "barrier"]


def setup() -> None:
    """Join the process group when started by ``torchrun`` (``WORLD_SIZE`` > 1); no-op otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


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
    return torch.nn.parallel.DistributedDataParallel(module)


def all_finite(value: float, world: int) -> bool:
    """Whether ``value`` is finite in every process (so that all of them stop together)."""
    if world == 1:
        return math.isfinite(value)
    bad = torch.tensor([0.0 if math.isfinite(value) else 1.0])
    dist.all_reduce(bad)
    return bad.item() == 0


def total(value: float, world: int) -> float:
    """The sum of ``value`` over processes."""
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return t.item()


def agree(flag: bool, world: int) -> bool:
    """Process 0's ``flag``, the same in every process."""
    if world == 1:
        return flag
    t = torch.tensor([1 if flag else 0])
    dist.broadcast(t, 0)
    return bool(t.item())
