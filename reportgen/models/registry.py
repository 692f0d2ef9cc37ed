"""The model registry: a name -> a builder taking plain keyword arguments, with what the rest
of reportgen needs to know about the model, declared once where the model is defined (as
torchvision's and timm's `register_model`).

The LightningModule stores only the name and its keyword arguments, so a checkpoint alone
rebuilds the model.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

from ..config import INT64_MAX, INT64_MIN, ConfigError, cut, shown


@dataclass(frozen=True)
class ModelEntry:
    name: str  # the registry name, e.g. "preact_resnet"
    builder: Callable[..., Any]  # keyword arguments -> nn.Module; its defaults are the practical's
    label: str  # run-directory prefix and results key, e.g. "resnet"
    title: str  # short name in tables and legends, e.g. "ResNet"
    description: str  # one line for the report, e.g. "pre-activation ResNet"
    details: str  # a paragraph for the report's Method section (plain text)
    cite: tuple[str, ...]  # reference keys (reportgen.references) of the paper(s) it follows
    # Raises ConfigError for parameters it cannot build with; its second argument turns a
    # parameter's name into the key the user wrote (e.g. "shuffle.mlp.params.hidden").
    check: Callable[[dict, Callable[[str], str]], None]
    channels_last: Callable[[dict], bool]  # whether to run it in channels_last memory format
    # Its logits are invariant to 90° turns by construction (p4 group convolutions): only such
    # a model may be Part 2's "equivariant" one, whose report section says so.
    p4_invariant: bool = False
    # A convolutional network: only such a model may be the practical's network (`model`),
    # which the report calls the CNN and Part 3 sets beside an MLP.
    convolutional: bool = False
    # What the dimensions of a stage's output are, for the caption of the report's table.
    axes: str = "channels × height × width"


MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, *, label: str, title: str, description: str, details: str = "",
                   cite: tuple[str, ...] = (), check: Callable[[dict], None] | None = None,
                   channels_last: Callable[[dict], bool] | None = None,
                   p4_invariant: bool = False, convolutional: bool = False,
                   axes: str = ModelEntry.axes):
    """Decorator: register `builder` under `name` with its description and policies."""
    def deco(builder):
        if name in MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        MODELS[name] = ModelEntry(name, builder, label, title, description, details, tuple(cite),
                                  check or (lambda params, key: None),
                                  channels_last or (lambda params: False), p4_invariant,
                                  convolutional, axes)
        return builder
    return deco


def get_model(name: str, where: str = "model") -> ModelEntry:
    """The registered model `name`; `where`: its table in the configuration, for the error."""
    if name not in MODELS:
        raise ConfigError(f"{where}.name: unknown model {shown(name)}: known models are "
                          f"{', '.join(sorted(MODELS))}")
    return MODELS[name]


def with_defaults(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """`params` completed with the builder's defaults."""
    sig = inspect.signature(get_model(name).builder)
    return {**{k: p.default for k, p in sig.parameters.items()
               if p.default is not inspect.Parameter.empty}, **params}


def check_model(name: str, params: dict[str, Any], where: str = "model") -> None:
    """Raise ConfigError naming the problem if `name` or `params` cannot build a model;
    `where` is the model's table in the configuration (e.g. "shuffle.mlp"), which the
    message names."""
    entry = get_model(name, where)

    def key(param: str) -> str:
        return f"{where}.params.{param}"

    allowed = list(inspect.signature(entry.builder).parameters)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ConfigError(f"{key(cut(unknown[0]))}: model {name!r} has no setting "
                          f"{shown(unknown[0])}: allowed are {', '.join(allowed)}")
    for param, value in params.items():
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, int) and not INT64_MIN <= v <= INT64_MAX:  # torch sizes are 64-bit
                raise ConfigError(f"{key(param)} = {shown(value)} is out of range: use "
                                  "integers that fit in 64 bits (below 2**63)")
    full = with_defaults(name, params)
    nc = full.get("num_classes", 10)
    if not (isinstance(nc, int) and not isinstance(nc, bool) and 2 <= nc <= MAX_WIDTH):
        raise ConfigError(f"{key('num_classes')} = {shown(nc)}: use an integer from 2 to "
                          f"{MAX_WIDTH:,}")
    entry.check(full, key)


# Bounds on a network's shape, far past any CIFAR model, that keep it countable: building
# 2**62 blocks (even on the meta device, to count their weights) never ended, and widths
# past about 2**60 overflowed torch's size arithmetic with a RuntimeError.
MAX_WIDTH = 2**20  # channels or units of one layer
MAX_LAYERS = 10_000  # blocks (or hidden layers) of one network, in all


def positive_ints(value: Any) -> bool:
    """A non-empty list of positive integers, none above MAX_WIDTH (widths, block counts)."""
    return (isinstance(value, (list, tuple)) and len(value) > 0
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_WIDTH
                    for v in value))


def check_depth(key: str, value: Any, layers: int) -> None:
    """`key`: the setting as the user wrote it (see check_model)."""
    if layers > MAX_LAYERS:
        raise ConfigError(f"{key} = {shown(value)} makes {layers:,} layers: use at most "
                          f"{MAX_LAYERS:,} in all")


def check_groups(params: dict, key: Callable[[str], str]) -> None:
    """Checks for a network of groups of blocks: `num_blocks` and `c_hidden`, one per group."""
    nb, ch = params["num_blocks"], params["c_hidden"]
    if not positive_ints(nb) or not positive_ints(ch):
        raise ConfigError(f"{key('num_blocks')} = {shown(nb)} and {key('c_hidden')} = "
                          f"{shown(ch)} must be non-empty lists of positive integers, at most "
                          f"{MAX_WIDTH:,} each")
    check_depth(key("num_blocks"), nb, sum(nb))
    if len(nb) != len(ch):
        raise ConfigError(f"{key('num_blocks')} has {len(nb)} groups but {key('c_hidden')} "
                          f"has {len(ch)}: give one channel count per group")
