"""Models: each family registers its builders where it is defined (resnet.py, mlp.py, ...),
with its parameter checks, its channels_last policy and the words the report uses for it.
Every module in this folder is imported, so a new family is a new file here.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from torch import nn

from .mlp import MLP
from .registry import MODELS, ModelEntry, check_model, get_model, register_model, with_defaults
from .resnet import PreActResNetBlock, ResNet, ResNetBlock

for _family in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _family != "registry":
        importlib.import_module(f"{__name__}.{_family}")  # registers its models

__all__ = ["MODELS", "MLP", "ModelEntry", "PreActResNetBlock", "ResNet", "ResNetBlock",
           "architecture_table", "build_model", "check_model", "count_parameters",
           "fold_batchnorm", "forward_flops", "get_model", "prefers_channels_last", "register_model",
           "with_defaults"]


def build_model(name: str, **params: Any) -> nn.Module:
    check_model(name, params)
    return MODELS[name].builder(**params)


def prefers_channels_last(name: str, params: dict[str, Any]) -> bool:
    """The model's own channels_last policy (see each family's registration)."""
    return get_model(name).channels_last(with_defaults(name, params))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def forward_flops(model: nn.Module, input_shape=(1, 3, 32, 32)) -> int:
    """Floating-point operations of one forward pass (multiply-adds count two), by PyTorch's
    own FlopCounterMode: what a model costs per image, independent of the machine."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(input_shape))
    model.train(was_training)
    return int(counter.get_total_flops())


def architecture_table(model: nn.Module, input_shape=(1, 3, 32, 32)) -> list[dict]:
    """Rows (stage, layers, output shape, parameters) describing `model`, for the report.

    A model describes its own stages with a `stages()` method returning (name, modules,
    description); others get one row per child module.
    """
    import torch

    if hasattr(model, "stages"):
        stages = list(model.stages())
    else:
        stages = [(f"Layer {k}", [m], type(m).__name__) for k, m in enumerate(model.children())]
    shapes: dict[int, tuple] = {}
    hooks = [ms[-1].register_forward_hook(
        lambda mod, inp, out, k=k: shapes.__setitem__(k, tuple(out.shape[1:])))
        for k, (_, ms, _) in enumerate(stages)]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(input_shape))
    model.train(was_training)
    for h in hooks:
        h.remove()
    return [{"stage": name, "layers": layers, "output": " × ".join(str(d) for d in shapes.get(k, ())),
             "parameters": sum(count_parameters(m) for m in ms)}
            for k, (name, ms, layers) in enumerate(stages)]


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An inference copy of `model` with every BatchNorm that directly follows a convolution
    folded into that convolution's weights and bias (the same function in eval mode, fewer
    passes over memory). In a pre-activation block that is the BN after the first conv."""
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(model).eval()

    def visit(mod: nn.Module) -> None:
        for name, child in mod.named_children():
            if isinstance(child, nn.Sequential):
                items = list(child)
                for i in range(len(items) - 1):
                    if isinstance(items[i], nn.Conv2d) and isinstance(items[i + 1], nn.BatchNorm2d):
                        items[i] = fuse_conv_bn_eval(items[i], items[i + 1])
                        items[i + 1] = nn.Identity()
                child = nn.Sequential(*items)
                setattr(mod, name, child)
            visit(child)

    visit(folded)
    return folded
