"""A test mode that makes device mistakes visible on a machine without a GPU.

On the CPU, a tensor created without ``device=`` lands on the CPU like everything else, so the
mistake (it would stay on the CPU while the model runs on a GPU) never shows. :class:`DeviceAudit`
is a ``TorchFunctionMode`` that records every tensor factory call (``torch.zeros``, ``torch.randn``,
``torch.tensor``, ``torch.as_tensor``, ...) made *from pyro_gen's own code* without an explicit
``device``; a device-clean library creates tensors with ``device=``, ``new_*`` or ``*_like`` (which
follow their input), or says ``device="cpu"`` where it means host memory.
"""
import os
import sys

import torch
from torch.overrides import TorchFunctionMode

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pyro_gen")
FACTORIES = {torch.zeros, torch.ones, torch.empty, torch.full, torch.randn, torch.rand, torch.randint,
             torch.arange, torch.linspace, torch.logspace, torch.eye, torch.tensor, torch.as_tensor,
             torch.normal, torch.tril_indices, torch.triu_indices}


class DeviceAudit(TorchFunctionMode):
    """Records ``file:line`` of each factory call without ``device`` from pyro_gen's code."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES and kwargs.get("device") is None:
            frame = sys._getframe(1)  # the Python caller: only direct calls from pyro_gen's code count
            # a module's constructor may create its parameters and buffers on the CPU: .to(device) moves them
            if frame.f_code.co_filename.startswith(PACKAGE) and frame.f_code.co_name != "__init__":
                where = f"{os.path.relpath(frame.f_code.co_filename, os.path.dirname(PACKAGE))}:{frame.f_lineno}"
                self.calls.append(f"{where} {func.__name__}")
        return func(*args, **kwargs)
