"""The shape of the results files (a study's, a run's), checked when they are read.

Results files are sealed with a checksum (files.seal), which refuses a file changed by hand.
A checksum anyone can recompute is no defence against a forged file, though, and one from
another tool or a future version may carry the right fields with the wrong types: the figures
and the report must then stop with one line naming the field, not with a TypeError from deep
inside a plot. So each study declares what its file holds, in a small vocabulary of plain
Python values:

    str, bool, int          that type (int is never a bool)
    dict, list              a table, a list, of anything (another check reads inside)
    float                   a finite number (an int or a float, never a bool, NaN or inf)
    [spec]                  a list whose every item matches spec
    {"key": spec, ...}      a table holding at least these keys (others are allowed);
                            "key?" a key it may lack
    Map(spec)               a table of any keys, every value matching spec
    Opt(spec)               None or spec
    Num(lo, hi)             a finite number within [lo, hi]; Num(finite=False) any number,
                            NaN and inf too
    List(spec, min_len)     a list of at least min_len items
    ANY                     anything (a field another check reads)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


class SchemaError(ValueError):
    """A results file lacks a field, or holds one of the wrong kind (the message names it)."""


@dataclass(frozen=True)
class Num:
    lo: float = -math.inf
    hi: float = math.inf
    finite: bool = True  # False: NaN and inf too (a metric of an epoch without validation)


@dataclass(frozen=True)
class List:
    item: Any
    min_len: int = 0


@dataclass(frozen=True)
class Map:
    value: Any


@dataclass(frozen=True)
class Opt:
    spec: Any


ANY = object()
FRACTION = Num(0, 1)  # an accuracy, a confidence, a probability
COUNT = Num(0)


def _kind(spec) -> str:
    """`spec` in words, for the error."""
    if spec is str:
        return "a string"
    if spec is bool:
        return "true or false"
    if spec is dict:
        return "a table"
    if spec is list:
        return "a list"
    if spec is int:
        return "an integer"
    if spec is float:
        return "a finite number"
    if isinstance(spec, Num):
        if not spec.finite:
            return "a number"
        if spec.lo == -math.inf and spec.hi == math.inf:
            return "a finite number"
        if spec.hi == math.inf:
            return f"a number of at least {spec.lo:g}"
        return f"a number from {spec.lo:g} to {spec.hi:g}"
    if isinstance(spec, (list, List)):
        item = spec[0] if isinstance(spec, list) else spec.item
        return f"a list of {_plural(item)}"
    if isinstance(spec, (dict, Map)):
        return "a table"
    if isinstance(spec, Opt):
        return f"{_kind(spec.spec)} or null"
    return "a value"


def _plural(spec) -> str:
    words = _kind(spec)
    for article in ("a ", "an "):
        if words.startswith(article):
            words = words[len(article):]
            break
    return {"string": "strings", "integer": "integers", "finite number": "numbers",
            "table": "tables", "list of numbers": "lists of numbers"}.get(words, words)


def _found(obj) -> str:
    if obj is None:
        return "null"
    if isinstance(obj, bool):
        return "true" if obj else "false"
    if isinstance(obj, (int, float)):
        return repr(obj) if math.isfinite(obj) else str(obj)
    if isinstance(obj, str):
        return repr(obj[:20] + ("..." if len(obj) > 20 else ""))
    return {list: "a list", dict: "a table"}.get(type(obj), type(obj).__name__)


def _is_number(obj, finite: bool = True) -> bool:
    return (isinstance(obj, (int, float)) and not isinstance(obj, bool)
            and (math.isfinite(obj) or not finite))


def check(obj, spec, where: str = "") -> None:
    """Raise SchemaError naming the first place where `obj` does not match `spec`."""
    def wrong():
        raise SchemaError(f"{where or 'its top level'} as {_kind(spec)} (found {_found(obj)})")

    if spec is ANY:
        return
    if isinstance(spec, Opt):
        if obj is not None:
            check(obj, spec.spec, where)
        return
    if spec in (str, bool, dict, list):
        if not isinstance(obj, spec):
            wrong()
    elif spec is int:
        if not isinstance(obj, int) or isinstance(obj, bool):
            wrong()
    elif spec is float or isinstance(spec, Num):
        num = spec if isinstance(spec, Num) else Num()
        if not _is_number(obj, num.finite) or (num.finite and not num.lo <= obj <= num.hi):
            wrong()
    elif isinstance(spec, (list, List)):
        item, min_len = (spec[0], 0) if isinstance(spec, list) else (spec.item, spec.min_len)
        if not isinstance(obj, list):
            wrong()
        if len(obj) < min_len:
            raise SchemaError(f"{where} as a list of at least {min_len} item"
                              f"{'s' if min_len != 1 else ''} (found {len(obj)})")
        for i, v in enumerate(obj):
            check(v, item, f"{where}[{i}]")
    elif isinstance(spec, dict):
        if not isinstance(obj, dict):
            wrong()
        for k, sub in spec.items():
            optional, k = k.endswith("?"), k.removesuffix("?")
            if k not in obj:
                if optional:
                    continue
                raise SchemaError(f"the field {where + '.' if where else ''}{k}")
            check(obj[k], sub, f"{where + '.' if where else ''}{k}")
    elif isinstance(spec, Map):
        if not isinstance(obj, dict):
            wrong()
        for k, v in obj.items():
            check(v, spec.value, f"{where + '.' if where else ''}{k}")
    else:
        raise TypeError(f"not a schema: {spec!r}")


def settings(raw, cls: type, where: str) -> None:
    """`raw` must be config class `cls` as reportgen writes it (config.to_dict): values the
    config file would accept, and every key, since a missing one would be read back as its
    default and the report would state a setting that no run used."""
    import dataclasses

    from .config import ConfigError, ExperimentConfig, from_dict, to_dict
    from .experiments import STUDIES

    check(raw, dict, where)
    experiment = cls is ExperimentConfig
    if experiment:  # sections of studies no longer registered (a plug-in since removed)
        own = {f.name for f in dataclasses.fields(cls)}
        raw = {k: v for k, v in raw.items() if k in own or k in STUDIES}
    try:
        obj = from_dict(cls, raw, where)
    except ConfigError as e:
        raise SchemaError(f"{where} with valid settings ({e})") from None

    def missing(full: dict, given: dict, at: str):
        for k, v in full.items():
            if k not in given:
                raise SchemaError(f"the field {at}.{k}")
            if isinstance(v, dict) and isinstance(given[k], dict):
                missing(v, given[k], f"{at}.{k}")

    full = to_dict(obj)
    if experiment:  # a study registered since (a plug-in) has no section there yet
        full = {k: v for k, v in full.items() if k in raw or k not in STUDIES}
    missing(full, raw, where)


def same_length(where: str, values: list, n: int, what: str) -> None:
    """`values` (at `where`) must hold `n` items, one per `what`."""
    if len(values) != n:
        raise SchemaError(f"{n} values (one per {what}) in {where} (found {len(values)})")


def image(obj, where: str) -> None:
    """An image as the results files store it: 3 x 32 x 32 integers from 0 to 255 (channels,
    rows, columns; data.py admits no other size)."""
    import numpy as np

    from .data import IMAGE_SIZE

    shape = (3, IMAGE_SIZE, IMAGE_SIZE)
    try:
        a = np.asarray(obj)
    except ValueError:  # ragged nesting
        a = None
    if (a is None or a.dtype.kind not in "iu" or a.shape != shape or a.min() < 0
            or a.max() > 255):
        raise SchemaError(f"{where} as an image ({' x '.join(map(str, shape))} integers from "
                          "0 to 255)")


def label(obj, where: str, classes: list) -> None:
    """A class index into `classes`."""
    if not isinstance(obj, int) or isinstance(obj, bool) or not 0 <= obj < len(classes):
        raise SchemaError(f"{where} as a class index from 0 to {len(classes) - 1} "
                          f"(found {_found(obj)})")


# What every study's results file holds besides its own fields.
DATA = {"source": str, "classes": List(str, 1), "train_pool": int, "train_images": int,
        "val_images": Num(1), "test_images": Num(1)}
METRIC = Num(finite=False)
# A run's metrics.csv as columns (files.read_metrics); the figures read these.
METRICS = {"epoch": [float], "train_loss": [METRIC], "train_acc": [METRIC],
           "val_loss": [METRIC], "val_acc": [METRIC], "lr": [METRIC]}
IMAGES = List(ANY, 1)  # checked by `image` item by item


def metrics(m: dict, where: str) -> None:
    """A run's metrics: every column one value per epoch."""
    check(m, METRICS, where)
    n = len(m["epoch"])
    if n == 0:
        raise SchemaError(f"{where}.epoch as a list of at least 1 epoch (found none)")
    for k in METRICS:
        same_length(f"{where}.{k}", m[k], n, "epoch")
# What a study's results keep of each seed's run (base.SeededRun.entry, with its metrics).
SEED_ENTRY = {"seed": int, "run_dir": str, "val_acc": FRACTION, "test_acc": FRACTION,
              "best_epoch": int, "wall_time_s": COUNT, "train_images_per_s": COUNT,
              "metrics": dict}
# A run's results.json (training/train.py writes it, reuse and the report's appendix read it).
RUN = {"version": int, "label": str, "key": str, "seed": int, "run_dir": str, "model": str,
       "val_acc": FRACTION, "test_acc": FRACTION, "val_per_class": [Num(finite=False)],
       "test_per_class": [Num(finite=False)], "best_checkpoint": str, "best_epoch": int,
       "epochs": Num(1), "parameters": COUNT, "train_images": COUNT, "wall_time_s": COUNT,
       "train_time_s": COUNT, "train_images_per_s": COUNT, "side_by_side": Num(1),
       "side_by_side_layout?": Opt(str), "device": str, "precision": str,
       "versions": Map(str), "predictions_sha256": str}
