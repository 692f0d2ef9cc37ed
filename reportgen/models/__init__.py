"""A small registry of named models: a name -> a builder taking plain keyword arguments.

The LightningModule stores only the name and its keyword arguments, so a checkpoint alone
rebuilds the model.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

from torch import nn

from .mlp import ACTIVATIONS, MLP
from .resnet import BLOCKS, PreActResNetBlock, ResNet, ResNetBlock

__all__ = ["MODELS", "MLP", "PreActResNetBlock", "ResNet", "ResNetBlock", "build_model",
           "check_model", "count_parameters"]


def _preact_resnet(num_classes=10, num_blocks=(3, 3, 3), c_hidden=(16, 24, 32)) -> nn.Module:
    return ResNet(num_classes, num_blocks, c_hidden, block="preact")


def _resnet(num_classes=10, num_blocks=(3, 3, 3), c_hidden=(16, 24, 32)) -> nn.Module:
    return ResNet(num_classes, num_blocks, c_hidden, block="original")


def _mlp(num_classes=10, hidden=(128,), activation="elu") -> nn.Module:
    return MLP(num_classes, hidden, activation)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "preact_resnet": _preact_resnet,  # He et al. 2016, "Identity Mappings in Deep Residual Networks"
    "resnet": _resnet,  # He et al. 2016, "Deep Residual Learning for Image Recognition"
    "mlp": _mlp,  # the first practical's MLP
}


def _positive_ints(value: Any) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) > 0
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value))


def check_model(name: str, params: dict[str, Any]) -> None:
    """Raise ValueError naming the problem if `name` or `params` cannot build a model."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: known models are {', '.join(sorted(MODELS))}")
    allowed = list(inspect.signature(MODELS[name]).parameters)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"model {name!r} has no setting {unknown[0]!r}: "
                         f"allowed are {', '.join(allowed)}")
    nc = params.get("num_classes", 10)
    if not (isinstance(nc, int) and nc >= 2):
        raise ValueError(f"model.num_classes = {nc!r}: use an integer >= 2")
    if name in ("preact_resnet", "resnet"):
        nb, ch = params.get("num_blocks", (3, 3, 3)), params.get("c_hidden", (16, 24, 32))
        if not _positive_ints(nb) or not _positive_ints(ch):
            raise ValueError(f"model.num_blocks = {nb!r} and model.c_hidden = {ch!r} must be "
                             "non-empty lists of positive integers")
        if len(nb) != len(ch):
            raise ValueError(f"model.num_blocks has {len(nb)} groups but model.c_hidden has "
                             f"{len(ch)}: give one channel count per group")
    if name == "mlp":
        hidden = params.get("hidden", (128,))
        if not (isinstance(hidden, (list, tuple)) and all(
                isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden)):
            raise ValueError(f"model.hidden = {hidden!r}: use a list of positive layer widths")
        act = params.get("activation", "elu")
        if act not in ACTIVATIONS:
            raise ValueError(f"model.activation = {act!r}: use one of {', '.join(ACTIVATIONS)}")


def build_model(name: str, **params: Any) -> nn.Module:
    check_model(name, params)
    return MODELS[name](**params)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
