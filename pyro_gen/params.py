"""The parameters of a model/guide pair: its module's parameters and those it keeps in Pyro's
parameter store.

A pair may hold its parameters as ``nn.Module`` parameters (``nn.Linear``, ``PyroModule``'s
``PyroParam``), register them with ``pyro.module`` (the same tensors, also named in the store), or
create them with ``pyro.param`` inside ``model``/``guide`` -- lazily, on the first call, as Pyro's
autoguides do. The engine runs the pair once before building the optimizer so that lazy
parameters exist, optimizes the union (each tensor once), and checkpoints the store's own
parameters (those that are not module parameters) as unconstrained tensors beside the module's
state dict. Loading runs the pair once on a batch of zeros to create them with their
constraints, then copies the saved values in, so that training resumes bit-exactly.
"""
from __future__ import annotations

from typing import Dict, List

import pyro
import torch
from torch import nn

__all__ = ["pair_parameters", "store_parameters", "store_state", "load_store_state", "materialize"]


def materialize(pair, x: torch.Tensor, *args) -> None:
    """Run the pair once (guide, then model replayed) on ``x[:2]``, without gradients and on a
    forked random state, so that parameters it creates on its first call exist."""
    from .traces import inspect_pair
    inspect_pair(pair, x[:2], *(a[:2] if isinstance(a, torch.Tensor) else a for a in args))


#: How ``pyro.module`` names a module's parameters in the store (``"encoder$$$fc1.weight"``).
MODULE_SEPARATOR = "$$$"


def store_parameters(pair) -> Dict[str, torch.Tensor]:
    """The unconstrained parameters of Pyro's parameter store that are not parameters of a
    module (``pyro.param``), by name. Entries that ``pyro.module`` made (named
    ``module$$$param``) are a module's parameters, possibly of another instance of the pair."""
    own = {id(p) for p in pair.parameters()} if isinstance(pair, nn.Module) else set()
    return {name: p for name, p in pyro.get_param_store().named_parameters()
            if id(p) not in own and MODULE_SEPARATOR not in name}


def pair_parameters(pair) -> List[torch.Tensor]:
    """Every trainable tensor of the pair, each once: the module's parameters, then the store's own."""
    params = list(pair.parameters()) if isinstance(pair, nn.Module) else []
    return params + [p for p in store_parameters(pair).values() if p.requires_grad]


def store_state(pair) -> Dict[str, torch.Tensor]:
    """What a checkpoint keeps of the store: its own unconstrained parameters, detached copies."""
    return {name: p.detach().clone() for name, p in store_parameters(pair).items()}


def load_store_state(pair, state: Dict[str, torch.Tensor], x: torch.Tensor, *args) -> None:
    """Create the pair's store parameters (one run on ``x``) and set them to ``state``'s values.

    :raises KeyError: naming a saved parameter the pair did not create.
    """
    if not state:
        return
    materialize(pair, x, *args)
    current = dict(pyro.get_param_store().named_parameters())
    missing = [name for name in state if name not in current]
    if missing:
        raise KeyError(f"pyro.param {missing[0]!r} of the checkpoint is not created by this pair")
    with torch.no_grad():
        for name, value in state.items():
            current[name].copy_(value)
