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


N_SAMPLES = 8  # training images kept for the augmentation figure


def run_part1(cfg: ExperimentConfig, prepared: Prepared, retrain: bool = False, log=print) -> dict:
    """Train (or reuse) Part 1's ResNet; write part1.json for the figures and the report."""
    import json

    from ..config import to_dict
    from ..files import atomic_write_text
    from ..training import train_run

    spec = baseline_spec(cfg, prepared.data_digest)
    res = train_run(spec, prepared.splits, cfg.out_dir, retrain=retrain, log=log)
    if not res:  # a non-zero DDP rank: the main process writes the results
        return res
    from ..models import architecture_table, build_model

    s = prepared.splits
    arch = architecture_table(build_model(cfg.model.name, **cfg.model.params))
    part1 = {**res, "augment": to_dict(cfg.train.augment), "data_source": prepared.source,
             "architecture": arch, "config": to_dict(cfg),
             "val_images": len(s.val_x), "test_images": len(s.test_x),
             "samples": {"images": s.train_x[:N_SAMPLES].tolist(),
                         "labels": s.train_y[:N_SAMPLES].tolist()}}
    out = results_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "part1.json", json.dumps(part1))
    return res
