"""The one table of optimisers: config name -> the name the report prints and the builder.

`optim.name` (and `shuffle.mlp_optimizer`) are checked against this table, the training
step builds from it, and the report names the optimiser from it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Optimizer:
    title: str  # as the report writes it
    uses_momentum: bool  # whether optim.momentum applies (the report mentions it only then)
    build: Callable[..., Any]  # (parameters, lr, momentum, weight_decay) -> torch optimizer
    cite: tuple[str, ...]  # reference keys (reportgen.references) of its paper


def _sgd(params, lr, momentum, weight_decay):
    import torch

    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def _adam(params, lr, momentum, weight_decay):
    import torch

    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def _adamw(params, lr, momentum, weight_decay):
    import torch

    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


OPTIMIZERS: dict[str, Optimizer] = {
    "sgd": Optimizer("SGD", True, _sgd, ()),
    "adam": Optimizer("Adam", False, _adam, ("kingma2015",)),
    "adamw": Optimizer("AdamW", False, _adamw, ("loshchilov2019",)),
}


def allowed() -> str:
    """'sgd, adam or adamw': for error messages."""
    names = list(OPTIMIZERS)
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]
