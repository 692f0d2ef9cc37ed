"""A small registry of named models: a name -> a builder taking plain keyword arguments.

The LightningModule stores only the name and its keyword arguments, so a checkpoint alone
rebuilds the model.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

from torch import nn

from .mlp import ACTIVATIONS, MLP
from .resnet import PreActResNetBlock, ResNet, ResNetBlock

__all__ = ["MODELS", "MLP", "PreActResNetBlock", "ResNet", "ResNetBlock", "architecture_table", "build_model", "fold_batchnorm", "prefers_channels_last",
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


def architecture_table(model: nn.Module, input_shape=(1, 3, 32, 32)) -> list[dict]:
    """Rows (stage, layers, output shape, parameters) describing `model`, for the report."""
    import torch

    rows: list[dict] = []
    if isinstance(model, ResNet):
        stages = [("Stem", model.input_net, "3x3 conv")]
        i = 0
        for g, n in enumerate(model.num_blocks):
            group = list(model.blocks)[i:i + n]
            i += n
            kind = "pre-activation" if model.block == "preact" else "original"
            sub = " (first subsamples)" if g > 0 else ""
            stages.append((f"Group {g + 1}", group,
                           f"{n} x {kind} block, {model.c_hidden[g]} ch{sub}"))
        head = "BN, ReLU, " if model.block == "preact" else ""
        stages.append(("Head", model.output_net, f"{head}global avg pool, linear"))
    elif isinstance(model, MLP):
        linears = [m for m in model.net if isinstance(m, nn.Linear)]
        acts = [type(m).__name__ for m in model.net if not isinstance(m, (nn.Linear, nn.Flatten))]
        stages = [(f"Hidden {k + 1}" if k < len(linears) - 1 else "Output", [m],
                   f"linear {m.in_features} -> {m.out_features}"
                   + (f", {acts[k]}" if k < len(acts) else "")) for k, m in enumerate(linears)]
    else:
        stages = [(f"Layer {k}", [m], type(m).__name__) for k, m in enumerate(model.children())]
    stages = [(n, m if isinstance(m, list) else [m], d) for n, m, d in stages]
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
    for k, (name, ms, layers) in enumerate(stages):
        rows.append({"stage": name, "layers": layers,
                     "output": " x ".join(str(d) for d in shapes.get(k, ())),
                     "parameters": sum(count_parameters(m) for m in ms)})
    return rows


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


def prefers_channels_last(name: str, params: dict[str, Any]) -> bool:
    """Whether to run this model in channels_last memory format.

    channels_last makes the practical's ResNet about 1.7x faster on the CPU (oneDNN), but
    oneDNN's channels_last backward of a 1x1 stride-2 convolution corrupts the heap on this
    build when a layer has very few channels (seen with 4 channels and odd batch sizes,
    torch 2.14.1). Channel counts that are multiples of 8, like the practical's 16/24/32,
    are safe; anything else keeps the default layout.
    """
    if name not in ("preact_resnet", "resnet"):
        return False
    channels = params.get("c_hidden", (16, 24, 32))
    return all(c % 8 == 0 for c in channels)
