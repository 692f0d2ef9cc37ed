"""The practical's studies: each turns a config and the data into results files.

`baseline_spec` is Part 1's run; `rotation` (Part 2) and `shuffle` (Part 3) build on it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import ExperimentConfig
from ..data import Splits, load_cifar10, make_splits
from ..training import RunSpec


@dataclass(frozen=True)
class Prepared:
    splits: Splits
    data_digest: str
    source: str


def prepare_data(cfg: ExperimentConfig, log=print) -> Prepared:
    from dataclasses import replace

    dcfg = cfg.data if cfg.data.cache_dir else replace(
        cfg.data, cache_dir=str(Path(cfg.out_dir) / "cache"))
    data = load_cifar10(dcfg, log=log)
    return Prepared(make_splits(data, cfg.data), data.digest, data.source)


def baseline_spec(cfg: ExperimentConfig, data_digest: str, epochs: int | None = None) -> RunSpec:
    """Part 1: the practical's ResNet with the experiment's settings."""
    from dataclasses import replace

    train = cfg.train if epochs is None else replace(cfg.train, epochs=epochs)
    return RunSpec("resnet", cfg.model, cfg.optim, train, cfg.data, data_digest)


def results_dir(cfg: ExperimentConfig) -> Path:
    """Where a study's results files for this experiment go: output/<name>/."""
    return Path(cfg.out_dir) / cfg.name
