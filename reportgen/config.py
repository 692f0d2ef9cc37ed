"""Typed, frozen configuration for every stage, loaded from `experiments/*.toml`.

Values flow one way: experiment file -> command-line overrides -> these dataclasses -> the
stages. Every check happens here, before any work starts, and every error names the key.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import hashlib
import json
import math
import types
import typing
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import UserError
from .files import missing, read_text
from .resources import preset, presets

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as the tomli package
    import tomli as tomllib


class ConfigError(UserError, ValueError):
    """A bad value in an experiment file or on the command line (the message names the key)."""


# --- TOML from files we did not write --------------------------------------------------------
# tomllib recurses once per nested array or inline table (100,000 of them: RecursionError),
# and keeps every prefix of a dotted key (a.a.a... with 100,000 parts: tens of GiB, and the
# kernel killed the process). Both are counted before the parser sees the text.
MAX_TOML_NESTING = 64  # arrays and tables inside one another, or parts of one dotted key


def toml_shape_problem(text: str) -> str | None:
    """Where `text` nests deeper than MAX_TOML_NESTING, the line and what; else None. Strings
    and comments are skipped as TOML reads them; the parser then checks everything else."""
    depth = parts = 0
    line, i, n = 1, 0, len(text)
    while i < n:
        c = text[i]
        if c in "\"'":
            quote = text[i:i + 3] if text[i:i + 3] in ('"""', "'''") else c
            j = i + len(quote)
            while j < n and not text.startswith(quote, j):
                if c == '"' and text[j] == "\\":
                    j += 1  # an escaped character, perhaps a quote
                elif text[j] == "\n" and len(quote) == 1:
                    break  # one-line strings end at the line's end (the parser says why)
                j += 1
            line += text.count("\n", i, j)
            i = j + len(quote)
            continue
        if c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if c == ".":
            parts += 1
            if parts >= MAX_TOML_NESTING:
                return f"line {line} has a key of more than {MAX_TOML_NESTING} dotted parts"
        elif c in "[{":
            depth += 1
            parts = 0
            if depth > MAX_TOML_NESTING:
                return (f"line {line} nests arrays or tables more than {MAX_TOML_NESTING} "
                        "deep")
        elif c in "]}":
            depth = max(depth - 1, 0)
            parts = 0
        elif c in "=,\n":
            parts = 0
            line += c == "\n"
        i += 1
    return None


def parse_toml(text: str) -> dict:
    """tomllib.loads, after toml_shape_problem. Raises ValueError (TOMLDecodeError, or an
    integer longer than Python converts: 4,300 digits) for anything it cannot read."""
    problem = toml_shape_problem(text)
    if problem:
        raise ValueError(problem)
    return tomllib.loads(text)


NAME_BYTES = 100  # a folder name reportgen makes: file systems allow 255 bytes


def is_path_component(name: str) -> bool:
    """A single, ordinary file name of at most NAME_BYTES bytes: nothing written under it can
    leave its folder, and every file system can hold it."""
    return (isinstance(name, str) and name not in ("", ".", "..") and "/" not in name
            and "\\" not in name and "\0" not in name and name.strip() == name
            and len(name.encode("utf-8", "surrogatepass")) <= NAME_BYTES)


def text_problem(text: str) -> str | None:
    """What makes `text` unusable as a setting, a path or report text, or None: a control
    character (a NUL cannot be in a path; others break the PDF and LaTeX), or a byte that is
    not UTF-8 (Python hands such command-line bytes over as lone surrogates)."""
    for ch in text:
        if ch in "\t\n\r":
            continue
        category = unicodedata.category(ch)
        if category == "Cs":
            return f"the byte 0x{ord(ch) & 0xFF:02X}, which is not UTF-8"
        if category == "Cc":
            return f"the control character U+{ord(ch):04X}"
    return None


def expand_user(path: str, what: str) -> str:
    """A leading ~ (your home folder) or ~name (name's) expanded as a shell does. A ~name of
    no user on this machine is an error naming `what` (the setting or option): pathlib raised
    RuntimeError for it (a traceback from --data '~nosuch/x'), and os.path kept it, so that
    out_dir = "~nosuch/runs" made a folder named "~nosuch" in the current folder."""
    import os

    expanded = os.path.expanduser(path)
    if not expanded.startswith("~"):
        return expanded
    first = expanded.replace(os.sep, "/").split("/", 1)[0]
    if first == "~":
        raise ConfigError(f"{what} {path}: your home folder is not known here (HOME is not "
                          "set): write the full path")
    raise ConfigError(f"{what} {path}: this machine has no user {first[1:]!r}, whose home "
                      f"folder {first} would be: write ~/ for your own home folder, or ./{first} "
                      "for a folder of that name")


def full_path_problem(path: str) -> str | None:
    """Why `path` cannot be used because its full form is not UTF-8 text, or None: the
    current folder or the home folder holds a byte that is not UTF-8 (a folder named in
    Latin-1, say). Paths go into checkpoints, which torch opens through a UTF-8 string (a
    relative --out in such a folder failed as "checkpoint ... is damaged"), results files and
    the report."""
    import os

    if not path:  # "" is a default, resolved where it is used
        return None
    expanded = os.path.expanduser(path)
    try:
        full = os.path.abspath(expanded)
    except OSError:  # the current folder is gone: the command line says so first
        return None
    problem = text_problem(full)
    if problem is None:
        return None
    # The folder whose name holds the byte, cut at its start where long, so it stays in view.
    parts = full.split(os.sep)
    bad = next(i for i in range(len(parts)) if text_problem(parts[i]))
    folder = os.sep.join(parts[:bad + 1])
    shown_folder = repr(folder if len(folder) <= SHOWN else "..." + folder[-(SHOWN - 3):])
    home = os.path.expanduser("~")
    # A ~ is expanded when the setting is read, so a path in the home folder is one from it.
    in_home = (home + os.sep).startswith(folder + os.sep)
    source = (" (the current folder)" if not os.path.isabs(expanded) else
              " (your home folder)" if in_home else "")
    return (f"is inside {shown_folder}{source}, whose name contains {problem}: rename that "
            "folder to a UTF-8 name, or use another folder")


_PATH_KEYS: list[str] = []  # every path setting, as expand_home sees them


def require_full_paths(cfg: Any) -> None:
    """Raise ConfigError for a path setting of `cfg` whose full form is not UTF-8."""
    for key in _PATH_KEYS:
        value: Any = cfg
        for part in key.split("."):
            value = getattr(value, part, None)
        problem = full_path_problem(value) if isinstance(value, str) else None
        if problem:
            raise ConfigError(f"{key} = {value!r} {problem}")


def expand_home(obj: Any, section: str, *fields: str) -> None:
    """Expand a leading ~ in the path settings `fields` of a frozen config (of `section`, ""
    at the top level), as a shell does on the command line: in an experiment file (or a
    quoted --out '~/runs') it is not, and out_dir = "~/runs" made a folder named "~" in the
    current folder, while data.source read "~/..." as the home folder."""
    for name in fields:
        key = f"{section}.{name}" if section else name
        if key not in _PATH_KEYS:
            _PATH_KEYS.append(key)
        object.__setattr__(obj, name, expand_user(getattr(obj, name), key))


def check(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raise ConfigError `key = value is not allowed: use <allowed>` unless `ok`."""
    if not ok:
        raise ConfigError(f"{key} = {shown(value)} is not allowed: use {allowed}")


INT64_MIN, INT64_MAX = -2**63, 2**63 - 1  # TOML's integers, and torch's and numpy's

# Training runs in float32 (or narrower), where a rate or a decay outside this range becomes
# infinite or zero: lr = 1e300 stopped with a RuntimeError inside the optimiser, 1e-300 left
# the weights untouched.
F32_TINY, F32_MAX = 1.1754943508222875e-38, 3.4028234663852886e38  # smallest normal, largest
RATE_RANGE = "a positive number in float32's range, 1.2e-38 to 3.4e38"
DECAY_RANGE = "0 or a positive number in float32's range, 1.2e-38 to 3.4e38"


def is_rate(v: float, zero_ok: bool = False) -> bool:
    """True where v is a learning rate or decay that float32 training keeps as it is."""
    return (zero_ok and v == 0) or F32_TINY <= v <= F32_MAX


# CIFAR-10's training and test images (torchvision's copy; a partial copy has fewer).
CIFAR10_SIZES = {"train": 50_000, "test": 10_000}


@dataclass(frozen=True)
class DataConfig:
    source: str = ""  # CIFAR-10: folder, .tar[.gz|.bz2|.xz], .zip; "" = $REPORTGEN_DATA or ./data
    download: bool = True  # fetch CIFAR-10 with torchvision when the source folder lacks it
    cache_dir: str = ""  # decoded uint8 tensors, keyed by the source; "" = <out_dir>/cache
    val_size: int = 5000  # images held out of the 50,000 training images (notebook: 5,000)
    split_seed: int = 42  # seed of the random_split generator (notebook: 42)
    subset: int = 0  # train on only the first N of the training images (after the split); 0 = all
    partial: bool = False  # accept a copy without CIFAR-10's 5,000/1,000 images per class

    def __post_init__(self):
        expand_home(self, "data", "source", "cache_dir")
        check(0 < self.val_size < 50000, "data.val_size", self.val_size, "between 1 and 49999")
        check(self.subset >= 0, "data.subset", self.subset, "0 (all) or a positive count")
        # torch's CPU generator keeps only a seed's low 32 bits: 2**32 + 42 would give seed
        # 42's split under another name.
        check(0 <= self.split_seed < 2**32, "data.split_seed", self.split_seed,
              "an integer in [0, 2**32)")


@dataclass(frozen=True)
class ModelConfig:
    name: str = "preact_resnet"  # a name in reportgen.models.MODELS
    params: Mapping[str, Any] = field(default_factory=lambda: _builder_defaults("preact_resnet"))
    # Checked by from_dict, which knows the table's key (shuffle.mlp, ...), and again by
    # build_model: the registry owns what a model accepts.


def _builder_defaults(name: str) -> dict[str, Any]:
    """The registered builder's defaults (the practical's settings for its ResNet)."""
    from reportgen.models import with_defaults

    return {k: list(v) if isinstance(v, tuple) else v for k, v in with_defaults(name, {}).items()}


@dataclass(frozen=True)
class OptimConfig:
    name: str = "sgd"  # a name in reportgen.optimizers.OPTIMIZERS: sgd | adam | adamw
    lr: float = 0.1  # learning rate at batch 128
    momentum: float = 0.9  # SGD only
    weight_decay: float = 1e-4
    milestones: tuple[int, ...] = (70, 90)  # epochs at which MultiStepLR multiplies lr by gamma
    gamma: float = 0.1

    def __post_init__(self):
        from .optimizers import OPTIMIZERS, allowed

        check(self.name in OPTIMIZERS, "optim.name", self.name, allowed())
        check(is_rate(self.lr), "optim.lr", self.lr, RATE_RANGE)
        check(0 <= self.momentum < 1, "optim.momentum", self.momentum, "in [0, 1)")
        check(is_rate(self.weight_decay, zero_ok=True), "optim.weight_decay", self.weight_decay,
              DECAY_RANGE)
        check(all(m > 0 for m in self.milestones)
              and all(a < b for a, b in zip(self.milestones, self.milestones[1:])),
              "optim.milestones", list(self.milestones),
              "strictly increasing positive epoch numbers, e.g. [70, 90]")
        check(0 < self.gamma <= 1, "optim.gamma", self.gamma, "in (0, 1]")


@dataclass(frozen=True)
class AugmentConfig:
    flip: bool = True  # random horizontal flip, p = 0.5
    crop_scale: tuple[float, float] = (0.8, 1.0)  # RandomResizedCrop area fraction
    crop_ratio: tuple[float, float] = (0.9, 1.1)  # RandomResizedCrop aspect ratio
    rotate_degrees: float = 0.0  # uniform random rotation in [-d, d]; 0 = none (Part 2's comparison)

    def __post_init__(self):
        lo, hi = self.crop_scale
        check(0 < lo <= hi <= 1, "train.augment.crop_scale", list(self.crop_scale),
              "0 < min <= max <= 1")
        lo, hi = self.crop_ratio
        check(0 < lo <= hi < math.inf, "train.augment.crop_ratio", list(self.crop_ratio),
              "0 < min <= max, both finite")
        check(0 <= self.rotate_degrees <= 180, "train.augment.rotate_degrees", self.rotate_degrees,
              "between 0 and 180")


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
LAYOUTS = ("auto", "wide", "stacked")  # train.side_by_side_layout
STRATEGIES = ("auto", "ddp")  # train.strategy
MAX_SEEDS = 1000  # train.seeds, shuffle.mlp_seeds, --seeds: each seed is a full training run


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 100  # notebook: 100 for the report
    batch_size: int = 128
    eval_batch_size: int = 0  # evaluation only, no effect on results; 0 = 64 on CPU, 1024 on GPU;
    # shrunk to what fits in memory at the time (memory.eval_batch_that_fits)
    seed: int = 42
    # One run per seed for every model of every study; () = just `seed`. `--seeds N` on the
    # command line sets seed, seed+1, ..., seed+N-1.
    seeds: tuple[int, ...] = ()
    val_every: int = 10  # validate every N epochs (notebook: 10); the last epoch always counts
    device: str = "auto"  # auto | cpu | gpu
    devices: int = 1  # Lightning devices; > 1 with strategy "ddp" for DDP
    # Lightning's strategy: "auto", or "ddp" (one process per device, each started as this
    # command again). Spawned workers, FSDP and DeepSpeed are not supported: reportgen's
    # runs write their own checkpoints and results from the main process.
    strategy: str = "auto"
    precision: str = "auto"  # auto = bf16-mixed where the GPU supports it, else 32-true
    compile: bool = False  # torch.compile the model (faster steps after a one-off compile)
    # torch.compile's mode: "default"; "reduce-overhead" replays each step as a CUDA graph
    # (launch overhead on a GPU; no effect on a CPU); "max-autotune" also tunes the kernels.
    compile_mode: str = "default"
    # Runs of one architecture and schedule (a model's seeds, ...) trained as one computation:
    # 0 = automatic (on a GPU up to 8 together, on a CPU one at a time), 1 = one at a time,
    # N = up to N together. Each run ends as it would alone (reportgen/training/sidebyside.py).
    side_by_side: int = 0
    # How a group computes: "auto" = "wide" (one network of grouped layers) where the model
    # allows, else "stacked" (parameters stacked, the model under torch.func.vmap).
    side_by_side_layout: str = "auto"
    progress_every: int = 10  # progress bar refresh, in steps
    augment: AugmentConfig = AugmentConfig()

    def __post_init__(self):
        check(self.compile_mode in COMPILE_MODES, "train.compile_mode", self.compile_mode,
              ", ".join(COMPILE_MODES))
        check(self.side_by_side >= 0, "train.side_by_side", self.side_by_side,
              "0 (automatic), 1 (one run at a time) or the most runs to train together")
        check(self.side_by_side_layout in LAYOUTS, "train.side_by_side_layout",
              self.side_by_side_layout, ", ".join(LAYOUTS))
        check(self.eval_batch_size >= 0, "train.eval_batch_size", self.eval_batch_size,
              "0 (automatic) or a positive integer")
        for key in ("epochs", "batch_size", "val_every", "devices", "progress_every"):
            check(getattr(self, key) > 0, f"train.{key}", getattr(self, key), "a positive integer")
        for key, values in (("train.seed", [self.seed]), ("train.seeds", list(self.seeds))):
            for v in values:
                check(isinstance(v, int) and 0 <= v < 2**32, key, v, "integers in [0, 2**32)")
        check(len(set(self.seeds)) == len(self.seeds) <= MAX_SEEDS, "train.seeds",
              list(self.seeds), f"at most {MAX_SEEDS} distinct seeds")
        check(self.strategy in STRATEGIES, "train.strategy", self.strategy,
              "auto, or ddp for Lightning's DDP (--devices N --strategy ddp)")
        check(self.device in ("auto", "cpu", "gpu"), "train.device", self.device,
              "auto, cpu or gpu")
        check(self.precision in ("auto", "32-true", "bf16-mixed", "16-mixed", "32"),
              "train.precision", self.precision, "auto, 32-true, bf16-mixed or 16-mixed")

    def run_seeds(self) -> tuple[int, ...]:
        """The seeds to train every model with: `seeds`, or just `seed`."""
        return tuple(self.seeds) or (self.seed,)


TITLE_CHARS = 300  # report.title
NAME_CHARS = 200  # report.author, report.student_number, report.course


@dataclass(frozen=True)
class ReportConfig:
    title: str = "Convolutional Neural Networks on CIFAR-10"
    author: str = ""
    student_number: str = ""
    course: str = ""
    user_text: str = ""  # TOML file of the student's own text per section; "" = none
    # What `reportgen report` writes: "pdf" (report.html and report.pdf), "tex" (OUT/latex/).
    formats: tuple[str, ...] = ("pdf",)
    # Pages of the main body (before the references and the appendix) the course allows;
    # 0 = no limit. Exceeding it is reported; `reportgen report --strict` makes it an error.
    page_limit: int = 0

    def __post_init__(self):
        expand_home(self, "report", "user_text")
        # A title page, not a document: a 96,000-character title took WeasyPrint 3.5 min.
        for key, value, most in (("title", self.title, TITLE_CHARS),
                                 ("author", self.author, NAME_CHARS),
                                 ("student_number", self.student_number, NAME_CHARS),
                                 ("course", self.course, NAME_CHARS)):
            if len(value) > most:
                raise ConfigError(f"report.{key} has {len(value):,} characters: use at most "
                                  f"{most} (it is a line of the title page)")
        # A report without a title has an empty title page and an empty PDF title.
        check(bool(self.title.strip()), "report.title", self.title,
              f"a title, or leave it out for the default {ReportConfig.title!r}")
        check(len(self.formats) > 0 and set(self.formats) <= {"pdf", "tex"}, "report.formats",
              list(self.formats), 'a non-empty list of "pdf" and "tex"')
        check(self.page_limit >= 0, "report.page_limit", self.page_limit,
              "0 (no limit) or a positive number of pages")


def _study_sections() -> dict[str, Any]:
    """Each registered study's own section (e.g. [rotation]) with its defaults."""
    from .experiments import STUDIES

    return {s.name: s.config() for s in STUDIES.values() if s.config is not None}


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "practical2"  # names the results folder OUT/<name>/
    out_dir: str = "output"
    figures_dir: str = "figures"
    data: DataConfig = DataConfig()
    model: ModelConfig = field(default_factory=ModelConfig)  # built when used: no import cycle
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    report: ReportConfig = ReportConfig()
    # The studies' own sections, declared by each study (reportgen/experiments/): section
    # name -> its config. In an experiment file they are top-level tables ([rotation]),
    # and `cfg.rotation` reads them like any other field.
    sections: Mapping[str, Any] = field(default_factory=_study_sections)

    def __post_init__(self):
        check(is_path_component(self.name), "name", self.name,
              f"a plain folder name of at most {NAME_BYTES} bytes (no '/', '\\', '.' or "
              "'..'): results go to OUT/<name>/")
        expand_home(self, "", "out_dir", "figures_dir")
        for key, example in (("out_dir", "output"), ("figures_dir", "figures")):
            # An empty --out "$DIR" (DIR unset) would quietly write into the current folder.
            check(getattr(self, key).strip() != "", key, getattr(self, key),
                  f"a folder, e.g. {example} (or . for the current folder)")

    def __getattr__(self, name: str):
        sections = self.__dict__.get("sections") or {}
        if name in sections:
            return sections[name]
        raise AttributeError(f"ExperimentConfig has no field or study section {name!r}")


# --- building dataclasses from plain dicts, with type checks -----------------------------

def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a table of settings, got {shown(value)}")
        return from_dict(tp, value, key)
    if tp is Any:
        return value
    if origin in (collections.abc.Mapping, dict) or tp is Mapping:  # Mapping[...]'s origin
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a table, got {shown(value)}")
        return dict(value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {shown(value)}{_list_hint(key, value)}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{key} must be a list of {len(args)} values, got "
                              f"{shown(list(value))}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    if origin in (typing.Union, types.UnionType):
        for a in typing.get_args(tp):
            try:
                return _coerce(value, a, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key} has the wrong type: {shown(value)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {shown(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            # TOML integers are 64-bit, and so are torch's and numpy's: a larger one ended in
            # an OverflowError or a ValueError deep inside a stage.
            if not INT64_MIN <= value <= INT64_MAX:
                raise ConfigError(f"{key} = {_short(value)} is out of range: use an integer that "
                                  "fits in 64 bits (below 2**63)")
            return value
        raise ConfigError(f"{key} must be an integer, got {shown(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:
                raise ConfigError(f"{key} = {_short(value)} is out of range: use a number below "
                                  "1.8e308") from None
        raise ConfigError(f"{key} must be a number, got {shown(value)}")
    if tp is str:
        if isinstance(value, str):
            problem = text_problem(value)
            if problem:
                raise ConfigError(f"{key} = {shown(value)} contains {problem}: remove it")
            return value
        raise ConfigError(f"{key} must be a string, got {shown(value)}")
    return value


def _list_hint(key: str, value: Any) -> str:
    """What to write instead of a single value where a list goes. A count of seeds is the
    likely meaning of `seeds = 3` (`--seeds 3` makes that list), not the seed 3."""
    if key.endswith("seeds") and isinstance(value, int) and not isinstance(value, bool):
        return (f": list the seeds, e.g. [42, 43, 44], or pass --seeds {_short(value)} for "
                f"that many seeds from train.seed")
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        return f": write [{shown(value)}] for a list of one"
    return ""


SHOWN = 80  # characters of a value an error message quotes


def cut(text: str) -> str:
    """`text` cut to about SHOWN characters with its full length said, for an error message:
    a 5,000-character string in a setting made a 5,000-character error line."""
    if len(text) <= SHOWN:
        return text
    return f"{text[:SHOWN - 20]}... ({len(text):,} characters)"


def shown(value: Any) -> str:
    """`repr(value)` for an error message, cut (see `cut`)."""
    try:
        return cut(repr(value))
    except ValueError:  # an integer past Python's digit limit for str()
        return f"a {type(value).__name__} too large to print"


def _short(value: int) -> str:
    """An integer as typed, or its size where it is too long to read in one line."""
    text = str(value)
    return text if len(text) <= 30 else f"{text[:6]}... ({len(text.lstrip('-'))} digits)"


def _complete_model(value: Any, default: Any) -> Any:
    """A partial model table (`shuffle.mlp.params.hidden = [64]`) completed from the field's
    own default model, not ModelConfig's: the same model keeps its other settings, and naming
    another model starts from that model's builder defaults."""
    if not isinstance(value, Mapping) or not isinstance(default, ModelConfig):
        return value
    name = value.get("name", default.name)
    params = value.get("params", {})
    if name == default.name and isinstance(params, Mapping):
        params = {**default.params, **params}
    return {**value, "name": name, "params": params}


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _model_fields(cls: type, raw: Mapping[str, Any]) -> dict[str, Any]:
    """`raw` with each model table completed from its field's default (see _complete_model)."""
    hints = typing.get_type_hints(cls)
    return {**raw, **{f.name: _complete_model(raw[f.name], _field_default(f))
                      for f in dataclasses.fields(cls)
                      if f.name in raw and hints[f.name] is ModelConfig}}


def from_dict(cls: type, raw: Mapping[str, Any], prefix: str = ""):
    """Build dataclass `cls` from `raw`, rejecting unknown keys and wrong types by name."""
    if cls is ExperimentConfig:
        return _experiment_from_dict(raw)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        where = f"[{prefix}]" if prefix else "the top level"
        raise ConfigError(f"unknown key {cut((prefix + '.' if prefix else '') + unknown[0])} "
                          f"in {where}: allowed keys are {', '.join(names)}")
    raw = _model_fields(cls, raw)
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in raw.items()}
    try:
        obj = cls(**kwargs)
    except TypeError as e:  # pragma: no cover - guarded by the unknown-key check
        raise ConfigError(str(e)) from e
    if cls is ModelConfig:
        # Checked here, where the table's key is known: an error about Part 3's MLP names
        # shuffle.mlp.params.hidden, not model.hidden.
        from reportgen.models import MODELS, check_model

        check_model(obj.name, dict(obj.params), prefix or "model")
        if prefix in ("", "model"):
            # The practical's network: the report calls it the CNN, and Part 3 trains the MLP
            # beside it. An MLP here trained every part and then failed at the report, its
            # Part 3 runs one model twice.
            cnns = sorted(n for n, m in MODELS.items() if m.convolutional)
            check(MODELS[obj.name].convolutional, "model.name", obj.name,
                  f"a convolutional network: {', '.join(cnns)} (the report studies a CNN; "
                  "Part 3 trains an MLP beside it, set in shuffle.mlp)")
    return obj


def _experiment_from_dict(raw: Mapping[str, Any]) -> ExperimentConfig:
    """The experiment: its own fields, and each registered study's section with that study's
    config class."""
    from .experiments import STUDIES

    studies = {s.name: s for s in STUDIES.values() if s.config is not None}
    own = [f.name for f in dataclasses.fields(ExperimentConfig) if f.name != "sections"]
    unknown = sorted(set(raw) - set(own) - set(studies))
    if unknown:
        raise ConfigError(f"unknown key {cut(unknown[0])} at the top level: allowed keys are "
                          f"{', '.join(own + list(studies))}")
    hints = typing.get_type_hints(ExperimentConfig)
    raw = _model_fields(ExperimentConfig, raw)
    kwargs = {k: _coerce(raw[k], hints[k], k) for k in own if k in raw}
    sections = {name: _coerce(raw.get(name, {}), study.config, name)
                for name, study in studies.items()}
    return ExperimentConfig(**kwargs, sections=sections)


def to_dict(obj: Any) -> Any:
    """Plain JSON-able form of a config (tuples become lists)."""
    if isinstance(obj, ExperimentConfig):
        plain = {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                 if f.name != "sections"}
        return {**plain, **{k: to_dict(v) for k, v in obj.sections.items()}}
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
    for i, p in enumerate(parts[:-1]):
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{dotted} cannot be set: {'.'.join(parts[:i + 1])} is "
                              f"{shown(nxt)} (from the experiment file or another --set), a "
                              "value, not a table of settings")
        node = nxt
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`key=value` from the command line; the value is read as TOML, else taken as a string."""
    if "=" not in text:
        raise ConfigError(f"--set {shown(text)}: write it as key=value, e.g. --set optim.lr=0.05")
    key, val = text.split("=", 1)
    if not key.strip() or any(not part.strip() for part in key.split(".")):
        raise ConfigError(f"--set {shown(text)}: the key {shown(key.strip())} is empty or has "
                          "an empty part; write it as key=value, e.g. --set optim.lr=0.05")
    try:
        value = parse_toml(f"v = {val}")["v"]
    except tomllib.TOMLDecodeError:
        value = val  # not TOML: a plain string, e.g. --set report.author=Ada Lovelace
    except ValueError as e:  # TOML too deep, or an integer too long to read
        raise ConfigError(f"--set {key.strip()}=...: the value cannot be read ({e}): shorten "
                          "it") from None
    return key.strip(), value


def _config_advice() -> str:
    names = " or ".join(presets())
    shipped = f", or a preset shipped with reportgen by name (--config {names})" if names else ""
    return f"pass --config with an experiment file{shipped}"


def load_experiment(path: str | Path | None, overrides: Mapping[str, Any] = ()) -> ExperimentConfig:
    """Read an experiment file, apply dotted `overrides`, and validate everything."""
    raw: dict = {}
    if isinstance(path, str) and not path.strip():
        # `--config "$FILE"` with FILE unset: before, read as the folder "." ("experiment
        # file . cannot be read"), a message about a path nobody typed.
        raise ConfigError(f"--config {path!r} is empty: name an experiment file, e.g. "
                          "experiments/quick.toml or the shipped preset quick, or leave "
                          "--config out for the practical's settings")
    if path is not None:
        p = Path(expand_user(str(path), "--config"))
        if not p.exists():
            # A file of that name comes first; else a bare name picks a shipped preset, which
            # a pip-installed reportgen has no experiments/ folder to hold.
            p = preset(str(path)) or p
        if not p.exists():
            raise ConfigError(f"experiment file {p} {missing(p)}: {_config_advice()}")
        try:
            text = read_text(p)
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"experiment file {p} cannot be read ({e}): "
                              f"{_config_advice()}") from e
        try:
            raw = parse_toml(text)
        except ValueError as e:
            raise ConfigError(f"experiment file {p} is not valid TOML ({e}): fix the line named")
    for key, value in dict(overrides).items():
        set_dotted(raw, key, value)
    return from_dict(ExperimentConfig, raw)


def digest(obj: Any, n: int = 10) -> str:
    """A short stable hash of a JSON-able value: the key of a run."""
    blob = json.dumps(to_dict(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:n]
