"""Typed, frozen configuration for every stage, loaded from `experiments/*.toml`.

Values flow one way: experiment file -> command-line overrides -> these dataclasses -> the
stages. Every check happens here, before any work starts, and every error names the key.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping


class ConfigError(ValueError):
    """A bad value in an experiment file or on the command line (the message names the key)."""


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key} = {value!r} is not allowed: use {allowed}")


def _default_angles() -> tuple[float, ...]:
    return tuple(float(a) for a in range(0, 360, 10))


@dataclass(frozen=True)
class DataConfig:
    source: str = ""  # CIFAR-10 path (folder, .tar/.tar.gz/.zip); "" = $REPORTGEN_DATA or ./data
    download: bool = True  # fetch CIFAR-10 with torchvision when the source folder lacks it
    cache_dir: str = ""  # decoded uint8 tensors, keyed by the source; "" = <out_dir>/cache
    val_size: int = 5000  # images held out of the 50,000 training images (notebook: 5,000)
    split_seed: int = 42  # seed of the random_split generator (notebook: 42)
    subset: int = 0  # train on only this many of the training images; 0 = all

    def __post_init__(self):
        _check(0 < self.val_size < 50000, "data.val_size", self.val_size, "between 1 and 49999")
        _check(self.subset >= 0, "data.subset", self.subset, "0 (all) or a positive count")


@dataclass(frozen=True)
class ModelConfig:
    name: str = "preact_resnet"  # a name in reportgen.models.MODELS
    params: Mapping[str, Any] = field(default_factory=lambda: {
        "num_classes": 10, "num_blocks": [2, 2, 3], "c_hidden": [16, 24, 32]})

    def __post_init__(self):
        from reportgen.models import check_model  # the registry owns what a model accepts

        check_model(self.name, dict(self.params))


@dataclass(frozen=True)
class OptimConfig:
    name: str = "sgd"  # sgd | adam | adamw
    lr: float = 0.1  # learning rate at batch 128
    momentum: float = 0.9  # SGD only
    weight_decay: float = 1e-4
    milestones: tuple[int, ...] = (70, 90)  # epochs at which MultiStepLR multiplies lr by gamma
    gamma: float = 0.1

    def __post_init__(self):
        _check(self.name in ("sgd", "adam", "adamw"), "optim.name", self.name, "sgd, adam or adamw")
        _check(math.isfinite(self.lr) and self.lr > 0, "optim.lr", self.lr, "a positive number")
        _check(0 <= self.momentum < 1, "optim.momentum", self.momentum, "in [0, 1)")
        _check(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, ">= 0")
        _check(all(m > 0 for m in self.milestones), "optim.milestones", self.milestones,
               "positive epoch numbers")
        _check(0 < self.gamma <= 1, "optim.gamma", self.gamma, "in (0, 1]")


@dataclass(frozen=True)
class AugmentConfig:
    flip: bool = True  # random horizontal flip, p = 0.5
    crop_scale: tuple[float, float] = (0.8, 1.0)  # RandomResizedCrop area fraction
    crop_ratio: tuple[float, float] = (0.9, 1.1)  # RandomResizedCrop aspect ratio
    rotate_degrees: float = 0.0  # uniform random rotation in [-d, d]; 0 = none (Part 2's comparison)

    def __post_init__(self):
        lo, hi = self.crop_scale
        _check(0 < lo <= hi <= 1, "augment.crop_scale", self.crop_scale, "0 < min <= max <= 1")
        lo, hi = self.crop_ratio
        _check(0 < lo <= hi, "augment.crop_ratio", self.crop_ratio, "0 < min <= max")
        _check(0 <= self.rotate_degrees <= 180, "augment.rotate_degrees", self.rotate_degrees,
               "between 0 and 180")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 100  # notebook: 100 for the report
    batch_size: int = 128
    eval_batch_size: int = 0  # evaluation only, no effect on results; 0 = 64 on CPU, 1024 on GPU
    seed: int = 42
    val_every: int = 10  # validate every N epochs (notebook: 10); the last epoch always counts
    device: str = "auto"  # auto | cpu | gpu
    devices: int = 1  # Lightning devices; > 1 with strategy "ddp" for DDP
    strategy: str = "auto"  # passed to Lightning (auto, ddp, ...)
    precision: str = "auto"  # auto = bf16-mixed where the GPU supports it, else 32-true
    compile: bool = False  # torch.compile the model (faster steps after a one-off compile)
    progress_every: int = 10  # progress bar refresh, in steps
    augment: AugmentConfig = AugmentConfig()

    def __post_init__(self):
        _check(self.eval_batch_size >= 0, "train.eval_batch_size", self.eval_batch_size,
               "0 (automatic) or a positive integer")
        for key in ("epochs", "batch_size", "val_every", "devices", "progress_every"):
            _check(getattr(self, key) > 0, f"train.{key}", getattr(self, key), "a positive integer")
        _check(self.device in ("auto", "cpu", "gpu"), "train.device", self.device,
               "auto, cpu or gpu")
        _check(self.precision in ("auto", "32-true", "bf16-mixed", "16-mixed", "32"),
               "train.precision", self.precision, "auto, 32-true, bf16-mixed or 16-mixed")


@dataclass(frozen=True)
class RotationConfig:
    angles: tuple[float, ...] = field(default_factory=_default_angles)  # degrees, counter-clockwise
    interpolation: str = "bilinear"  # bilinear | nearest
    fill: str = "mean"  # corners: "mean" (0 after normalisation, as the notebook's rotate) | "black"
    splits: tuple[str, ...] = ("val", "test")
    aug_degrees: float = 180.0  # the comparison model trains with rotations uniform in [-d, d]

    def __post_init__(self):
        _check(len(self.angles) > 0, "rotation.angles", list(self.angles),
               "a non-empty list of degrees")
        for a in self.angles:
            _check(math.isfinite(a) and -360 <= a <= 360, "rotation.angles", a,
                   "numbers between -360 and 360")
        _check(self.interpolation in ("bilinear", "nearest"), "rotation.interpolation",
               self.interpolation, "bilinear or nearest")
        _check(self.fill in ("mean", "black"), "rotation.fill", self.fill, "mean or black")
        _check(len(self.splits) > 0 and set(self.splits) <= {"val", "test"}, "rotation.splits",
               list(self.splits), 'a non-empty list of "val" and "test"')
        _check(0 < self.aug_degrees <= 180, "rotation.aug_degrees", self.aug_degrees,
               "between 0 (exclusive) and 180")


@dataclass(frozen=True)
class ShuffleConfig:
    epochs: int = 10  # notebook: "limit your number of epochs to ... 10"
    perm_seed: int = 42  # seed of the fixed pixel permutation
    perm_file: str = ""  # a saved permutation (JSON list of 1024 positions) instead of the seed
    mlp: ModelConfig = ModelConfig("mlp", {"num_classes": 10, "hidden": [128], "activation": "elu"})
    # The MLP's optimiser. Its learning-rate schedule (optim.milestones, optim.gamma) and
    # momentum for SGD are the ResNet's, so both train with the same budget and schedule.
    mlp_optimizer: str = "adam"  # sgd | adam | adamw
    mlp_lr: float = 1e-3
    mlp_weight_decay: float = 0.0

    def __post_init__(self):
        _check(self.epochs > 0, "shuffle.epochs", self.epochs, "a positive integer")
        _check(0 <= self.perm_seed < 2**63, "shuffle.perm_seed", self.perm_seed,
               "an integer in [0, 2**63)")
        _check(self.mlp_optimizer in ("sgd", "adam", "adamw"), "shuffle.mlp_optimizer",
               self.mlp_optimizer, "sgd, adam or adamw")
        _check(math.isfinite(self.mlp_lr) and self.mlp_lr > 0, "shuffle.mlp_lr", self.mlp_lr,
               "a positive number")
        _check(self.mlp_weight_decay >= 0, "shuffle.mlp_weight_decay", self.mlp_weight_decay,
               ">= 0")


@dataclass(frozen=True)
class ReportConfig:
    title: str = "Convolutional Neural Networks on CIFAR-10"
    author: str = ""
    student_number: str = ""
    course: str = ""
    user_text: str = ""  # TOML file of the student's own text per section; "" = none


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "practical2"
    out_dir: str = "output"
    figures_dir: str = "figures"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    rotation: RotationConfig = RotationConfig()
    shuffle: ShuffleConfig = ShuffleConfig()
    report: ReportConfig = ReportConfig()

    def __post_init__(self):
        _check(bool(self.name) and "/" not in self.name, "name", self.name,
               "a non-empty name without '/'")


# --- building dataclasses from plain dicts, with type checks -----------------------------

def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a table of settings, got {value!r}")
        return from_dict(tp, value, key)
    if tp is Any:
        return value
    if origin in (typing.Mapping, dict) or tp is Mapping:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a table, got {value!r}")
        return dict(value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{key} must be a list of {len(args)} values, got {list(value)!r}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    if origin in (typing.Union, types.UnionType):
        for a in typing.get_args(tp):
            try:
                return _coerce(value, a, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key} has the wrong type: {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, got {value!r}")
    return value


def from_dict(cls: type, raw: Mapping[str, Any], prefix: str = ""):
    """Build dataclass `cls` from `raw`, rejecting unknown keys and wrong types by name."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        where = f"[{prefix}]" if prefix else "the top level"
        raise ConfigError(f"unknown key {prefix + '.' if prefix else ''}{unknown[0]} in {where}: "
                          f"allowed keys are {', '.join(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in raw.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:  # pragma: no cover - guarded by the unknown-key check
        raise ConfigError(str(e)) from e


def to_dict(obj: Any) -> Any:
    """Plain JSON-able form of a config (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def set_dotted(raw: dict, dotted: str, value: Any) -> None:
    """Set `a.b.c = value` in a nested dict, creating tables on the way."""
    node = raw
    parts = dotted.split(".")
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{dotted}: {p} is a value, not a table")
        node = nxt
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`key=value` from the command line; the value is read as TOML, else taken as a string."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: write it as key=value, e.g. --set optim.lr=0.05")
    key, val = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {val}")["v"]
    except tomllib.TOMLDecodeError:
        value = val
    return key.strip(), value


def load_experiment(path: str | Path | None, overrides: Mapping[str, Any] = ()) -> ExperimentConfig:
    """Read an experiment file, apply dotted `overrides`, and validate everything."""
    raw: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"experiment file {p} does not exist: pass --config with one of "
                              f"experiments/*.toml")
        try:
            raw = tomllib.loads(p.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"experiment file {p} is not valid TOML ({e}): fix the line named")
    for key, value in dict(overrides).items():
        set_dotted(raw, key, value)
    return from_dict(ExperimentConfig, raw)


def digest(obj: Any, n: int = 10) -> str:
    """A short stable hash of a JSON-able value: the key of a run."""
    blob = json.dumps(to_dict(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:n]
