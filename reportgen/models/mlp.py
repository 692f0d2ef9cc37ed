"""The multi-layer perceptron of the first practical: flattened pixels -> hidden layers -> classes.

An MLP has no notion of neighbouring pixels: permuting its input features and the columns of
its first weight matrix the same way leaves its function unchanged, which is why a fixed pixel
shuffle costs it nothing (Part 3's comparison).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

ACTIVATIONS = {"elu": nn.ELU, "relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


class MLP(nn.Module):
    def __init__(self, num_classes: int = 10, hidden: Sequence[int] = (128,),
                 activation: str = "elu", input_size: int = 3 * 32 * 32):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = input_size
        for h in hidden:
            layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
