"""Part 1: train the practical's network on CIFAR-10 and evaluate its best checkpoint.

Its run (the baseline) is reused by the other studies: Part 2 sweeps it over rotations and
Part 3 uses it as the CNN on original pixels when the budgets match.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .. import analysis
from ..config import ExperimentConfig, to_dict
from ..training import RunSpec
from .base import Prepared, Study, register_study
from ..schema import COUNT, FRACTION, IMAGES, List, Map, Num, Opt, SEED_ENTRY

N_SAMPLES = 8  # training images kept for the augmentation figure


def run_label(model_name: str, *variants: str) -> str:
    """A run's label: the model's registered label and its variants, e.g. "resnet-rotaug".
    Every study names its runs through this one function."""
    from ..models import get_model

    return "-".join([get_model(model_name).label, *variants])


def baseline_spec(cfg: ExperimentConfig, data_digest: str, epochs: int | None = None) -> RunSpec:
    """Part 1's run: the experiment's model, optimiser and training settings."""
    train = cfg.train if epochs is None else replace(cfg.train, epochs=epochs)
    return RunSpec(run_label(cfg.model.name), cfg.model, cfg.optim, train, cfg.data, data_digest)


def model_info(name: str, params: dict) -> dict:
    """What the report says about a registered model, stored with the results."""
    from ..models import get_model, with_defaults

    m = get_model(name)
    return {"name": name, "title": m.title, "description": m.description, "details": m.details,
            "cite": list(m.cite), "params": to_dict(with_defaults(name, dict(params))),
            "axes": m.axes}


def practical_network(info: dict) -> dict:
    """How the trained network relates to the practical's (the default model, whose builder
    defaults are the practical's settings): "same", "resized" (its architecture at other
    depths or widths, whose settings come along) or "other", so the report calls only the
    practical's own network "the practical's"."""
    from ..config import ModelConfig

    practical = ModelConfig()
    if info["name"] != practical.name:
        return {"relation": "other"}
    params = to_dict(practical.params)
    if info["params"] == params:
        return {"relation": "same"}
    return {"relation": "resized", "params": params}


@register_study
class Part1(Study):
    name = "part1"
    command = "train"
    help = "Part 1: train the network; writes checkpoints, metrics.csv, results.json."
    title = "Part 1: the network on CIFAR-10"
    order = 10
    figures = ("part1_augmentation", "part1_learning_curves")
    predictions = True

    schema = {
        "seeds": List(int, 1), "per_seed": List(SEED_ENTRY, 1), "run_dir": str,
        "val_acc": FRACTION, "test_acc": FRACTION, "val_acc_std": Opt(float),
        "test_acc_std": Opt(float), "parameters": COUNT, "epochs": Num(1),
        "train_images": COUNT, "best_epoch": int, "wall_time_s": COUNT,
        "train_images_per_s": COUNT, "device": str, "precision": str, "versions": Map(str),
        "model_info": {"name": str, "title": str, "description": str, "details": str,
                       "cite": [str], "params": dict, "axes?": str},
        "architecture": [{"stage": str, "layers": str, "output": str, "parameters": COUNT}],
        "optimizer": dict, "train": dict, "flip_probability": FRACTION,
        "samples": {"images": IMAGES, "labels": [int]}}

    def validate(self, results: dict, where: str) -> None:
        from ..config import OptimConfig, TrainConfig
        from ..schema import image, label, metrics, same_length, settings

        settings(results["optimizer"], OptimConfig, "optimizer")
        settings(results["train"], TrainConfig, "train")
        same_length("seeds", results["seeds"], len(results["per_seed"]), "entry of per_seed")
        for i, e in enumerate(results["per_seed"]):
            metrics(e["metrics"], f"per_seed[{i}].metrics")
        classes = results["data"]["classes"]
        samples = results["samples"]
        same_length("samples.labels", samples["labels"], len(samples["images"]), "image")
        for i, (img, y) in enumerate(zip(samples["images"], samples["labels"])):
            image(img, f"samples.images[{i}]")
            label(y, f"samples.labels[{i}]", classes)

    def run(self, cfg, prepared: Prepared, *, retrain=False, log=print, **options) -> dict:
        from ..models import architecture_table, build_model
        from ..transforms import FLIP_PROBABILITY
        from ..files import read_metrics
        from .base import labels_arrays, seed_stats, train_seeds, wall_time

        seeds = cfg.train.run_seeds()
        runs = train_seeds(baseline_spec(cfg, prepared.data_digest), seeds, prepared, cfg,
                           retrain=retrain, log=log)
        if runs is None:  # a DDP worker process: the main process writes the results
            return {}
        s = prepared.splits
        first = runs[0].results
        arrays = {**labels_arrays(prepared),
                  **{f"pred/{r.seed}/{split}": r.pred[split] for r in runs
                     for split in ("val", "test")}}
        val, test = seed_stats(runs, "val_acc"), seed_stats(runs, "test_acc")
        return self.save(cfg, prepared, {
            **first, "seeds": list(seeds),
            # Each seed's learning curves with it: the figures read this file alone.
            "per_seed": [{**r.entry(), "metrics": read_metrics(Path(r.results["run_dir"])
                                                               / "metrics.csv")} for r in runs],
            "val_acc": val["mean"], "val_acc_std": val["std"],
            "test_acc": test["mean"], "test_acc_std": test["std"],
            "wall_time_s": wall_time(runs),
            "model_info": model_info(cfg.model.name, cfg.model.params),
            "architecture": architecture_table(build_model(cfg.model.name, **cfg.model.params)),
            "optimizer": to_dict(cfg.optim), "train": to_dict(cfg.train),
            "flip_probability": FLIP_PROBABILITY,
            "samples": {"images": s.train_x[:N_SAMPLES].tolist(),
                        "labels": s.train_y[:N_SAMPLES].tolist()}}, arrays=arrays)

    def runs(self, results: dict) -> list[str]:
        return [r["run_dir"] for r in results["per_seed"]]

    def planned(self, cfg, data_digest: str, **options) -> list:
        spec = baseline_spec(cfg, data_digest)
        return [("train", spec.for_seed(s)) for s in cfg.train.run_seeds()]

    def seeds(self, results: dict) -> dict[str, list[int]]:
        return {results["model_info"]["title"]: results["seeds"]}

    def summary(self, results: dict) -> list[str]:
        n = len(results["seeds"])
        spread = (f" (mean of {n} seeds, std {results['val_acc_std']:.4f} / "
                  f"{results['test_acc_std']:.4f})" if n > 1 else "")
        return [f"val_acc {results['val_acc']:.4f}  test_acc {results['test_acc']:.4f}{spread}  "
                f"run {results['run_dir']}"]

    def facts(self, results: dict) -> dict:
        from ..models.registry import ModelEntry
        from ..optimizers import OPTIMIZERS

        o = results["optimizer"]
        opt = OPTIMIZERS[o["name"]]
        return {"optimizer": opt.title, "cite": list(opt.cite),
                "network": practical_network(results["model_info"]),
                # Table 1's output axes; a results file from before the field: a plain CNN's
                "axes": results["model_info"].get("axes", ModelEntry.axes),
                "momentum": o["momentum"] if opt.uses_momentum else None,
                "seeds": len(results["seeds"]),
                # Validations that competed for the best checkpoint: with more than one, the
                # validation accuracy is the maximum of several and reads high.
                "validations": sum(1 for v in results["per_seed"][0]["metrics"]["val_acc"]
                                   if v is not None and v == v),
                **{split: analysis.accuracy([r[f"{split}_acc"] for r in results["per_seed"]],
                                            results["data"][f"{split}_images"])
                   for split in ("val", "test")}}

    def draw(self, results: dict, results_dir: Path, figures_dir: Path) -> None:
        import matplotlib.pyplot as plt
        import numpy as np
        import torch

        from .. import style, transforms
        from ..config import AugmentConfig, from_dict
        from ..figures import as_image
        style.apply()
        ms = [r["metrics"] for r in results["per_seed"]]
        m = ms[0]
        ep = np.array(m["epoch"])
        fig, axes = plt.subplots(1, 3, figsize=(style.FULL_WIDTH, 2.1))
        for ax, key, scale in ((axes[0], "acc", 100), (axes[1], "loss", 1)):
            for name, fmt, color in (("train", "-", style.CYCLE[0]), ("val", "o--", style.CYCLE[1])):
                curves = np.array([np.array(x[f"{name}_{key}"], dtype=float) * scale for x in ms])
                ok = ~np.isnan(curves[0])
                label = "training" if name == "train" else "validation"
                if len(ms) > 1:  # every seed thin, their mean on top
                    for c in curves:
                        ax.plot(ep[ok], c[ok], "-", lw=0.6, alpha=0.45, color=color)
                    label += f" (mean of {len(ms)} seeds)"
                if ok.sum() < 2:  # a line through one point draws nothing
                    fmt = "o" + fmt.lstrip("o")
                ax.plot(ep[ok], curves.mean(0)[ok], fmt, ms=3, color=color, label=label)
        axes[0].set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
        axes[0].legend()
        axes[1].set(xlabel="epoch", ylabel="cross-entropy", title="Loss")
        axes[2].plot(ep, m["lr"], "o-" if len(ep) < 2 else "-", ms=3,
                     color=style.PALETTE["green"], drawstyle="steps-post")
        axes[2].set(xlabel="epoch", ylabel="learning rate", title="Learning rate", yscale="log")
        from matplotlib.ticker import MaxNLocator
        for ax in axes:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # no epoch 0.95
        fig.tight_layout()
        style.save(fig, figures_dir / "part1_learning_curves")

        # A grid of augmented training images: each row one image, as the model sees it.
        imgs = torch.tensor(results["samples"]["images"], dtype=torch.uint8)
        labels = results["samples"]["labels"]
        classes = results["data"]["classes"]
        aug_cfg = from_dict(AugmentConfig, results["train"]["augment"], "augment")
        n, k = min(len(imgs), 4), 6
        fig, axes = plt.subplots(n, k + 1, figsize=(style.FULL_WIDTH * 0.8, n * 0.86),
                                 squeeze=False)
        g = torch.Generator().manual_seed(0)
        for i in range(n):
            z = transforms.normalize(imgs[i:i + 1].expand(k, -1, -1, -1).contiguous())
            views = transforms.denormalize(transforms.augment(z, aug_cfg, g))
            axes[i, 0].imshow(as_image(imgs[i]))
            axes[i, 0].set_ylabel(classes[labels[i]], fontsize=8)
            for j in range(k):
                axes[i, j + 1].imshow((views[j].permute(1, 2, 0).numpy() * 255).astype(np.uint8))
        for ax in axes.flat:
            ax.set_xticks([]), ax.set_yticks([]), ax.grid(False)
        axes[0, 0].set_title("original", fontsize=7)
        for j in range(k):
            axes[0, j + 1].set_title(f"view {j + 1}", fontsize=7)
        fig.subplots_adjust(wspace=0.05, hspace=0.08)
        style.save(fig, figures_dir / "part1_augmentation")
