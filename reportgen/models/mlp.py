"""The multi-layer perceptron of the first practical: flattened pixels -> hidden layers -> classes.

An MLP has no notion of neighbouring pixels: permuting its input features and the columns of
its first weight matrix the same way leaves its function unchanged, which is why a fixed pixel
shuffle costs it nothing (Part 3's comparison).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..config import ConfigError, shown
from .registry import MAX_WIDTH, check_depth, positive_ints, register_model

# name in shuffle.mlp.params.activation -> (module, the name the report prints)
ACTIVATIONS = {"elu": (nn.ELU, "ELU"), "relu": (nn.ReLU, "ReLU"), "tanh": (nn.Tanh, "tanh"),
               "gelu": (nn.GELU, "GELU")}


def activation_title(name: str) -> str:
    """How the report names an activation; a name it does not know is printed as it is."""
    return ACTIVATIONS[name][1] if name in ACTIVATIONS else name


class MLP(nn.Module):
    def __init__(self, num_classes: int = 10, hidden: Sequence[int] = (128,),
                 activation: str = "elu", input_size: int = 3 * 32 * 32):
        super().__init__()
        self.activation = activation
        layers: list[nn.Module] = [nn.Flatten()]
        width = input_size
        for h in hidden:
            layers += [nn.Linear(width, h), ACTIVATIONS[activation][0]()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def stages(self):
        """(name, modules, description) of each linear layer with its activation."""
        linears = [m for m in self.net if isinstance(m, nn.Linear)]
        act = activation_title(self.activation)
        for k, m in enumerate(linears):
            last = k == len(linears) - 1
            yield ("Output" if last else f"Hidden {k + 1}", [m],
                   f"linear {m.in_features:,} → {m.out_features:,}" + ("" if last else f", {act}"))


def _check(params: dict, key) -> None:
    hidden, act = params["hidden"], params["activation"]
    if not (isinstance(hidden, (list, tuple)) and (len(hidden) == 0 or positive_ints(hidden))):
        raise ConfigError(f"{key('hidden')} = {shown(hidden)}: use a list of positive layer "
                          f"widths, at most {MAX_WIDTH:,} each")
    check_depth(key("hidden"), hidden, len(hidden))
    if not isinstance(act, str) or act not in ACTIVATIONS:
        raise ConfigError(f"{key('activation')} = {shown(act)}: use one of "
                          f"{', '.join(ACTIVATIONS)}")


@register_model(
    "mlp", label="mlp", title="MLP", description="multi-layer perceptron", check=_check,
    details="The image is flattened into 3,072 inputs, followed by fully connected layers; "
            "nothing in it knows which pixels are neighbours.")
def mlp(num_classes: int = 10, hidden: Sequence[int] = (128,), activation: str = "elu") -> nn.Module:
    """The first practical's MLP: flattened pixels -> hidden layers -> classes."""
    return MLP(num_classes, hidden, activation)
