"""Part 2: how the trained ResNet's accuracy changes when the images are rotated.

The plain model (Part 1) and a comparison model trained with random rotations (same
architecture and budget) are evaluated on the validation (and test) images rotated by each
angle, one angle per batch, on the model's device. Results: `rotation.json` and
`rotation.csv` in the experiment's results folder.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

from .. import evaluation, transforms
from ..config import ExperimentConfig
from ..data import CLASSES
from ..files import atomic_write_text
from ..training import (Classifier, RunSpec, eval_batch_size, load_classifier,
                        resolve_accelerator, torch_device, train_run)
from . import Prepared, baseline_spec, results_dir

RESULTS_VERSION = 1
EXAMPLE_INDEX = 0  # the validation image shown in the example strip


def rotaug_spec(cfg: ExperimentConfig, data_digest: str) -> RunSpec:
    """The comparison: the same model and budget, trained with random rotations."""
    augment = replace(cfg.train.augment, rotate_degrees=cfg.rotation.aug_degrees)
    return RunSpec("resnet-rotaug", cfg.model, cfg.optim, replace(cfg.train, augment=augment),
                   cfg.data, data_digest)


def sweep(module: Classifier, x: torch.Tensor, y: torch.Tensor, angles, interpolation: str,
          fill: str, batch_size: int, progress: Callable[[], None] = lambda: None) -> dict:
    """Accuracy, mean confidence and per-class accuracy of `module` at each angle."""
    out = {"accuracy": [], "confidence": [], "per_class": []}
    net = evaluation.inference_net(module)
    for angle in angles:
        s = evaluation.score(module, x, y, batch_size, net=net,
                             transform=lambda z, a=angle: transforms.rotate(z, a, interpolation, fill))
        out["accuracy"].append(s.accuracy)
        out["confidence"].append(s.mean_confidence)
        out["per_class"].append(s.per_class_accuracy)
        progress()
    return out


def run_rotation(cfg: ExperimentConfig, prepared: Prepared, retrain: bool = False,
                 checkpoint: str | None = None, log=print) -> dict:
    """Train (or reuse) both models, sweep the angles, write rotation.json and rotation.csv.

    With `checkpoint`, only that checkpoint is swept (no training).
    """
    from tqdm.auto import tqdm

    rc = cfg.rotation
    models: dict[str, dict] = {}
    if checkpoint is not None:
        sources = [("checkpoint", Path(checkpoint), None, 0.0)]
    else:
        sources = []
        for spec, aug in ((baseline_spec(cfg, prepared.data_digest), 0.0),
                          (rotaug_spec(cfg, prepared.data_digest), rc.aug_degrees)):
            res = train_run(spec, prepared.splits, cfg.out_dir, retrain=retrain, log=log)
            sources.append((spec.label, Path(res["best_checkpoint"]), res, aug))
    device = torch_device(resolve_accelerator(cfg.train.device))
    loaded = [(label, path, res, aug, load_classifier(path, device))
              for label, path, res, aug in sources]  # all checked before the sweep starts
    t0 = time.perf_counter()
    bar = tqdm(total=len(loaded) * len(rc.splits) * len(rc.angles), unit="angle",
               desc="rotation sweep", mininterval=1.0)
    for label, path, res, aug, module in loaded:
        entry = {"checkpoint": str(path), "run_dir": str(path.parent.parent),
                 "aug_degrees": aug, "model": module.hparams.model_name}
        for split in rc.splits:
            x, y = prepared.splits.get(split)
            entry[split] = sweep(module, x, y, rc.angles, rc.interpolation, rc.fill,
                                 eval_batch_size(cfg.train, device),
                                 progress=bar.update)
        models[label] = entry
    bar.close()
    wall = time.perf_counter() - t0
    n_images = sum(len(prepared.splits.get(s)[0]) for s in rc.splits) * len(rc.angles) * len(loaded)
    ex_x, ex_y = prepared.splits.val_x[EXAMPLE_INDEX], int(prepared.splits.val_y[EXAMPLE_INDEX])
    result = {
        "version": RESULTS_VERSION, "angles": list(rc.angles), "interpolation": rc.interpolation,
        "fill": rc.fill, "splits": list(rc.splits), "classes": list(CLASSES), "models": models,
        "example": {"split": "val", "index": EXAMPLE_INDEX, "label": ex_y,
                    "image": ex_x.tolist()},
        "sweep_wall_time_s": wall, "sweep_images": n_images, "device": str(device),
    }
    out = results_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "rotation.json", json.dumps(result))
    atomic_write_text(out / "rotation.csv", to_csv(result))
    log(f"rotation sweep: {len(loaded)} model(s) x {len(rc.splits)} split(s) x {len(rc.angles)} "
        f"angles in {wall:.1f} s ({n_images / wall:.0f} img/s) -> {out / 'rotation.json'}")
    return result


def to_csv(result: dict) -> str:
    """One row per (model, split, angle): accuracy, mean confidence, per-class accuracy."""
    import pandas as pd

    rows = []
    for label, entry in result["models"].items():
        for split in result["splits"]:
            r = entry[split]
            for i, angle in enumerate(result["angles"]):
                rows.append({"model": label, "split": split, "angle": angle,
                             "accuracy": r["accuracy"][i], "mean_confidence": r["confidence"][i],
                             **{f"acc_{c}": a for c, a in zip(result["classes"], r["per_class"][i])}})
    return pd.DataFrame(rows).to_csv(index=False, float_format="%.6g")
