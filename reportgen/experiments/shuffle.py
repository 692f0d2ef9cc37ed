"""Part 3: does the CNN use spatial structure differently than an MLP?

Both are trained, with the same budget and schedule, on the original images and on images
whose pixels are moved by one fixed random permutation (the same for every image and every
channel, applied after augmentation and normalisation). An MLP is indifferent to a fixed
permutation of its inputs (its first layer can absorb it); a CNN's convolutions assume that
neighbouring pixels belong together. Results: `shuffle.json`, `shuffle.csv` and
`permutation.json` in the experiment's results folder.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from .. import transforms
from ..config import ConfigError, ExperimentConfig
from ..files import atomic_write_text, read_metrics
from ..training import RunSpec, train_run
from . import Prepared, baseline_spec, results_dir

RESULTS_VERSION = 1
LABELS = {("resnet", False): "resnet", ("resnet", True): "resnet-shuffled",
          ("mlp", False): "mlp", ("mlp", True): "mlp-shuffled"}


def load_permutation(cfg: ExperimentConfig) -> torch.Tensor:
    """The fixed permutation: from `shuffle.perm_file` if given, else from `shuffle.perm_seed`."""
    sc = cfg.shuffle
    if not sc.perm_file:
        return transforms.pixel_permutation(sc.perm_seed)
    p = Path(sc.perm_file)
    try:
        values = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"shuffle.perm_file {p} cannot be read as JSON ({e}): point it at a "
                          "permutation.json written by `reportgen shuffle`") from e
    if not (isinstance(values, list) and all(isinstance(v, int) for v in values)):
        raise ConfigError(f"shuffle.perm_file {p} must hold a JSON list of integers")
    try:
        return transforms.check_permutation(torch.tensor(values, dtype=torch.int64))
    except ValueError as e:
        raise ConfigError(f"shuffle.perm_file {p}: {e}") from e


def shuffle_specs(cfg: ExperimentConfig, data_digest: str, perm: torch.Tensor) -> dict[str, RunSpec]:
    sc = cfg.shuffle
    resnet = baseline_spec(cfg, data_digest, epochs=sc.epochs)
    mlp_optim = replace(cfg.optim, name=sc.mlp_optimizer, lr=sc.mlp_lr,
                        weight_decay=sc.mlp_weight_decay)
    mlp = RunSpec("mlp", sc.mlp, mlp_optim, resnet.train, cfg.data, data_digest)
    p = tuple(perm.tolist())
    return {"resnet": resnet, "resnet-shuffled": replace(resnet, label="resnet-shuffled", perm=p),
            "mlp": mlp, "mlp-shuffled": replace(mlp, label="mlp-shuffled", perm=p)}


def run_shuffle(cfg: ExperimentConfig, prepared: Prepared, retrain: bool = False,
                log=print) -> dict:
    perm = load_permutation(cfg)
    runs = {}
    for label, spec in shuffle_specs(cfg, prepared.data_digest, perm).items():
        log(f"--- {label} ({spec.model.name}, {'shuffled' if spec.perm else 'original'} pixels)")
        res = train_run(spec, prepared.splits, cfg.out_dir, retrain=retrain, log=log)
        if not res:
            return {}
        m = read_metrics(Path(res["run_dir"]) / "metrics.csv")
        runs[label] = {"model": label.split("-")[0], "architecture": spec.model.name,
                       "shuffled": spec.perm is not None,
                       "val_acc": res["val_acc"], "test_acc": res["test_acc"],
                       "parameters": res["parameters"], "run_dir": res["run_dir"],
                       "wall_time_s": res["wall_time_s"], "metrics": m}
    result = {"version": RESULTS_VERSION, "epochs": cfg.shuffle.epochs,
              "perm_seed": None if cfg.shuffle.perm_file else cfg.shuffle.perm_seed,
              "perm_file": cfg.shuffle.perm_file or None, "runs": runs,
              "mlp_hidden": list(cfg.shuffle.mlp.params.get("hidden", [128])),
              "mlp_activation": cfg.shuffle.mlp.params.get("activation", "elu"),
              "mlp_optimizer": cfg.shuffle.mlp_optimizer, "mlp_lr": cfg.shuffle.mlp_lr,
              "example": {"image": prepared.splits.val_x[0].tolist(),
                          "label": int(prepared.splits.val_y[0])}}
    out = results_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "permutation.json", json.dumps(perm.tolist()))
    atomic_write_text(out / "shuffle.json", json.dumps(result))
    atomic_write_text(out / "shuffle.csv", to_csv(result))
    return result


def to_csv(result: dict) -> str:
    """The 2x2 table: model x original/shuffled pixels, validation and test accuracy."""
    import pandas as pd

    return pd.DataFrame([{"model": r["model"], "pixels": "shuffled" if r["shuffled"] else "original",
                          "val_acc": r["val_acc"], "test_acc": r["test_acc"],
                          "epochs": result["epochs"], "run_dir": r["run_dir"]}
                         for r in result["runs"].values()]).to_csv(index=False, float_format="%.6g")
