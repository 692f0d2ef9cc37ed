"""Results files -> PNG and SVG figures. Never touches a model.

Each `*_figures` function reads one study's results and writes its figures into the figures
folder; `draw_all` redraws everything whose results exist.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import style, transforms
from .data import CLASSES
from .files import MissingResults, read_json, read_metrics

SPLIT_NAMES = {"val": "validation", "test": "test"}
MODEL_NAMES = {"resnet": "ResNet", "resnet-rotaug": "ResNet + rotation augmentation",
               "checkpoint": "checkpoint", "resnet-shuffled": "ResNet, shuffled",
               "mlp": "MLP", "mlp-shuffled": "MLP, shuffled"}


def _as_image(chw) -> np.ndarray:
    return np.asarray(chw, dtype=np.uint8).transpose(1, 2, 0)


# --- Part 1 ------------------------------------------------------------------------------

def part1_figures(results: Path, figures: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    style.apply()
    part1 = read_json(results / "part1.json", "train")
    m = read_metrics(Path(part1["run_dir"]) / "metrics.csv")
    ep = m["epoch"]
    fig, axes = plt.subplots(1, 3, figsize=(style.FULL_WIDTH, 2.1))
    axes[0].plot(ep, np.array(m["train_acc"]) * 100, label="training")
    val = np.array(m["val_acc"]) * 100
    ok = ~np.isnan(val)
    axes[0].plot(np.array(ep)[ok], val[ok], "o--", ms=3, label="validation")
    axes[0].set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    axes[0].legend()
    axes[1].plot(ep, m["train_loss"], label="training")
    vl = np.array(m["val_loss"])
    axes[1].plot(np.array(ep)[~np.isnan(vl)], vl[~np.isnan(vl)], "o--", ms=3, label="validation")
    axes[1].set(xlabel="epoch", ylabel="cross-entropy", title="Loss")
    axes[2].plot(ep, m["lr"], color=style.PALETTE["green"], drawstyle="steps-post")
    axes[2].set(xlabel="epoch", ylabel="learning rate", title="Learning rate", yscale="log")
    fig.tight_layout()
    out = style.save(fig, figures / "part1_learning_curves")

    # A grid of augmented training images: each row one image, as the model sees it.
    from .config import AugmentConfig, from_dict

    imgs = torch.tensor(part1["samples"]["images"], dtype=torch.uint8)
    labels = part1["samples"]["labels"]
    aug_cfg = from_dict(AugmentConfig, part1["augment"], "augment")
    n, k = min(len(imgs), 4), 6
    fig, axes = plt.subplots(n, k + 1, figsize=(style.FULL_WIDTH * 0.8, n * 0.86))
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        z = transforms.normalize(imgs[i:i + 1].expand(k, -1, -1, -1).contiguous())
        views = transforms.denormalize(transforms.augment(z, aug_cfg, g))
        axes[i, 0].imshow(_as_image(imgs[i]))
        axes[i, 0].set_ylabel(CLASSES[labels[i]], fontsize=8)
        for j in range(k):
            axes[i, j + 1].imshow((views[j].permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([]), ax.grid(False)
    axes[0, 0].set_title("original", fontsize=7)
    for j in range(k):
        axes[0, j + 1].set_title(f"view {j + 1}", fontsize=7)
    fig.subplots_adjust(wspace=0.05, hspace=0.08)
    out += style.save(fig, figures / "part1_augmentation")
    return out


# --- Part 2 ------------------------------------------------------------------------------

def _closed(angles, values):
    """Append 360 degrees as a copy of 0 degrees so the curve closes."""
    angles, values = list(angles), list(values)
    if angles and angles[0] % 360 == 0 and 360 not in angles:
        angles.append(360.0)
        values.append(values[0])
    return np.array(angles), np.array(values)


def rotation_figures(results: Path, figures: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    style.apply()
    r = read_json(results / "rotation.json", "rotation")
    classes = r["classes"]
    chance = 100 / len(classes)
    out = []
    fig, ax = plt.subplots(figsize=(style.FULL_WIDTH, 2.8))
    for i, (label, entry) in enumerate(r["models"].items()):
        color = style.CYCLE[i % len(style.CYCLE)]
        for j, split in enumerate(r["splits"]):
            a, acc = _closed(r["angles"], np.array(entry[split]["accuracy"]) * 100)
            ax.plot(a, acc, color=color, ls=style.LINESTYLES[j], marker="o" if j == 0 else None,
                    ms=2.5, label=f"{MODEL_NAMES.get(label, label)} ({SPLIT_NAMES.get(split, split)})")
    ax.axhline(chance, color="grey", lw=1, ls=":", label=f"chance ({chance:.0f}%)")
    ax.set(xlabel="rotation angle (degrees, counter-clockwise)", ylabel="accuracy (%)",
           xlim=(0, 360), ylim=(0, 100), xticks=range(0, 361, 45))
    ax.legend(loc="upper center", ncol=2, bbox_to_anchor=(0.5, -0.22))
    out += style.save(fig, figures / "rotation_accuracy")

    split = r["splits"][0]
    labels = list(r["models"])
    fig, axes = plt.subplots(len(labels), 1, figsize=(style.FULL_WIDTH, 1.9 * len(labels) + 0.4),
                             squeeze=False)
    for ax, label in zip(axes[:, 0], labels):
        pc = np.array(r["models"][label][split]["per_class"]).T * 100  # classes x angles
        im = ax.imshow(pc, aspect="auto", cmap=style.HEATMAP, vmin=0, vmax=100,
                       interpolation="nearest")
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        step = max(1, len(r["angles"]) // 12)
        ax.set_xticks(range(0, len(r["angles"]), step),
                      [f"{a:g}" for a in r["angles"][::step]], fontsize=7)
        ax.set_title(f"{MODEL_NAMES.get(label, label)}: per-class accuracy "
                     f"({SPLIT_NAMES.get(split, split)} images)")
        ax.grid(False)
        fig.colorbar(im, ax=ax, label="accuracy (%)", fraction=0.03, pad=0.01)
    axes[-1, 0].set_xlabel("rotation angle (degrees)")
    fig.tight_layout()
    out += style.save(fig, figures / "rotation_per_class")

    ex = r["example"]
    z = transforms.normalize(torch.tensor([ex["image"]], dtype=torch.uint8))
    show = [0, 30, 60, 90, 135, 180, 270]
    fig, axes = plt.subplots(1, len(show), figsize=(style.FULL_WIDTH, 1.25))
    for ax, a in zip(axes, show):
        img = transforms.denormalize(transforms.rotate(z, a, r["interpolation"], r["fill"]))[0]
        ax.imshow(img.permute(1, 2, 0).numpy())
        ax.set_title(f"{a}°", fontsize=8)
        ax.set_xticks([]), ax.set_yticks([]), ax.grid(False)
    out += style.save(fig, figures / "rotation_examples")
    return out


# --- Part 3 ------------------------------------------------------------------------------

def shuffle_figures(results: Path, figures: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    style.apply()
    r = read_json(results / "shuffle.json", "shuffle")
    runs = r["runs"]
    color = {"resnet": style.PALETTE["blue"], "mlp": style.PALETTE["vermillion"]}
    out = []
    fig, axes = plt.subplots(1, 2, figsize=(style.FULL_WIDTH, 2.3), sharey=True)
    for label, run in runs.items():
        m = run["metrics"]
        kw = dict(color=color.get(run["model"], "k"), ls="--" if run["shuffled"] else "-",
                  label=MODEL_NAMES.get(label, label) if run["shuffled"]
                  else f"{MODEL_NAMES.get(label, label)}, original")
        axes[0].plot(m["epoch"], np.array(m["train_acc"]) * 100, **kw)
        val = np.array(m["val_acc"]) * 100
        ok = ~np.isnan(val)
        axes[1].plot(np.array(m["epoch"])[ok], val[ok], marker="o", ms=3, **kw)
    axes[0].set(xlabel="epoch", ylabel="accuracy (%)", title="Training accuracy")
    axes[1].set(xlabel="epoch", title="Validation accuracy")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=4, bbox_to_anchor=(0.5, 0.0))
    out += style.save(fig, figures / "shuffle_learning_curves")

    fig, ax = plt.subplots(figsize=(style.FULL_WIDTH * 0.62, 2.3))
    models = [m for m in ("resnet", "mlp") if any(r_["model"] == m for r_ in runs.values())]
    width = 0.38
    for j, shuffled in enumerate((False, True)):
        vals = [next((r_["test_acc"] * 100 for r_ in runs.values()
                      if r_["model"] == m and r_["shuffled"] == shuffled), np.nan) for m in models]
        x = np.arange(len(models)) + (j - 0.5) * width
        bars = ax.bar(x, vals, width, color=[color[m] for m in models],
                      alpha=1.0 if not shuffled else 0.45, hatch="//" if shuffled else None,
                      edgecolor="white", label="shuffled pixels" if shuffled else "original")
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    ax.axhline(10, color="grey", lw=1, ls=":", label="chance")
    ax.set_xticks(range(len(models)), [MODEL_NAMES[m] for m in models])
    ax.set(ylabel="test accuracy (%)", ylim=(0, 100))
    ax.legend(loc="upper right", ncol=3)
    out += style.save(fig, figures / "shuffle_accuracy")

    perm_file = results / "permutation.json"
    perm = torch.tensor(read_json(perm_file, "shuffle"))
    img = torch.tensor([r["example"]["image"]], dtype=torch.uint8)
    shuffled = transforms.permute_pixels(img, perm)
    fig, axes = plt.subplots(1, 2, figsize=(style.FULL_WIDTH * 0.45, 1.5))
    for ax, im, title in zip(axes, (img, shuffled), ("original", "pixels shuffled")):
        ax.imshow(_as_image(im[0]))
        ax.set_title(title, fontsize=8)
        ax.set_xticks([]), ax.set_yticks([]), ax.grid(False)
    out += style.save(fig, figures / "shuffle_example")
    return out


def draw_all(results: Path, figures: Path, log=print) -> list[Path]:
    """Redraw every figure whose results exist; name the command for the missing ones."""
    written, missing = [], []
    for fn in FIGURE_SETS:
        try:
            written += fn(results, figures)
        except MissingResults as e:
            missing.append(str(e))
    for m in missing:
        log(f"skipped: {m}")
    return written


FIGURE_SETS = [part1_figures, rotation_figures, shuffle_figures]
