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
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..config import (DECAY_RANGE, MAX_SEEDS, RATE_RANGE, ConfigError, ExperimentConfig,
                      ModelConfig, check, expand_home, is_rate)
from ..files import missing, read_text
from ..training import RunSpec
from .base import Prepared, Study, register_study
from .part1 import baseline_spec, run_label
from ..schema import ANY, COUNT, FRACTION, SEED_ENTRY, List, Map, Num, Opt

RESULTS_VERSION = 3  # 3: seeds and per-image predictions


def _default_mlp() -> ModelConfig:
    return ModelConfig("mlp", {"num_classes": 10, "hidden": [128], "activation": "elu"})


@dataclass(frozen=True)
class ShuffleConfig:
    epochs: int = 10  # notebook: "limit your number of epochs to ... 10"
    perm_seed: int = 42  # seed of the fixed pixel permutation
    perm_file: str = ""  # a saved permutation (JSON list of 1024 positions) instead of the seed
    mlp: ModelConfig = field(default_factory=_default_mlp)
    # The MLP's optimiser. Its learning-rate schedule (optim.milestones, optim.gamma) and
    # momentum for SGD are the network's, so both train with the same budget and schedule.
    mlp_optimizer: str = "adam"  # a name in reportgen.optimizers.OPTIMIZERS
    mlp_lr: float = 1e-3
    mlp_weight_decay: float = 0.0
    # The MLP's seeds; () = train.seeds. An MLP run is cheap, a CNN's is not: a CPU preset can
    # give the MLP more seeds than the CNN for the same wall time.
    mlp_seeds: tuple[int, ...] = ()

    def __post_init__(self):
        from ..optimizers import OPTIMIZERS, allowed

        expand_home(self, "shuffle", "perm_file")
        check(self.epochs > 0, "shuffle.epochs", self.epochs, "a positive integer")
        # Part 3 contrasts the network with a model that has no notion of neighbouring pixels,
        # and its report describes the MLP's layers: a ResNet here was reported as an MLP.
        check(self.mlp.name == "mlp", "shuffle.mlp.name", self.mlp.name,
              "mlp (Part 3 compares the network with a multi-layer perceptron)")
        # torch's CPU generator keeps only a seed's low 32 bits (see data.split_seed).
        check(0 <= self.perm_seed < 2**32, "shuffle.perm_seed", self.perm_seed,
              "an integer in [0, 2**32)")
        check(self.mlp_optimizer in OPTIMIZERS, "shuffle.mlp_optimizer", self.mlp_optimizer,
              allowed())
        check(is_rate(self.mlp_lr), "shuffle.mlp_lr", self.mlp_lr, RATE_RANGE)
        check(is_rate(self.mlp_weight_decay, zero_ok=True), "shuffle.mlp_weight_decay",
              self.mlp_weight_decay, DECAY_RANGE)
        for v in self.mlp_seeds:
            check(isinstance(v, int) and 0 <= v < 2**32, "shuffle.mlp_seeds", v,
                  "integers in [0, 2**32)")
        check(len(set(self.mlp_seeds)) == len(self.mlp_seeds) <= MAX_SEEDS, "shuffle.mlp_seeds",
              list(self.mlp_seeds), f"at most {MAX_SEEDS} distinct seeds")


def load_permutation(cfg: ExperimentConfig):
    """The fixed permutation: from `shuffle.perm_file` if given, else from `shuffle.perm_seed`."""
    import torch

    from .. import transforms

    sc = cfg.shuffle
    if not sc.perm_file:
        return transforms.pixel_permutation(sc.perm_seed)
    p = Path(sc.perm_file)
    if not p.exists():  # "cannot be read as JSON ([Errno 2] ...)"
        raise ConfigError(f"shuffle.perm_file {p} {missing(p)}: point it at a permutation.json "
                          "written by `reportgen shuffle` (in OUT/<experiment>/), or set "
                          "shuffle.perm_file = \"\" to draw one from shuffle.perm_seed")
    try:
        values = json.loads(read_text(p))
    except (OSError, ValueError, RecursionError) as e:  # as files.read_json
        raise ConfigError(f"shuffle.perm_file {p} cannot be read as JSON ({e}): point it at a "
                          "permutation.json written by `reportgen shuffle`") from e
    if not (isinstance(values, list) and all(isinstance(v, int) for v in values)):
        raise ConfigError(f"shuffle.perm_file {p} must hold a JSON list of integers")
    try:
        perm = transforms.check_permutation(torch.tensor(values, dtype=torch.int64))
    except (ValueError, OverflowError, RuntimeError) as e:
        raise ConfigError(f"shuffle.perm_file {p}: {e}") from e
    if torch.equal(perm, torch.arange(len(perm))):
        # The "shuffled" runs would repeat the original ones, and the report would describe a
        # shuffle that never happened.
        raise ConfigError(f"shuffle.perm_file {p} leaves every pixel in place: use a permutation "
                          "that moves them, or set shuffle.perm_file = \"\" to draw one from "
                          "shuffle.perm_seed")
    return perm


def permutation_facts(cfg: ExperimentConfig, perm) -> dict:
    """How the report describes the permutation: the seed it was drawn from (a saved file's
    too, where it is the one shuffle.perm_seed draws), and how many positions it moves."""
    import torch

    from .. import transforms

    sc = cfg.shuffle
    drawn = not sc.perm_file or torch.equal(perm, transforms.pixel_permutation(sc.perm_seed))
    return {"perm_seed": sc.perm_seed if drawn else None, "perm_file": sc.perm_file or None,
            "positions": len(perm), "moved": int((perm != torch.arange(len(perm))).sum())}


def shuffle_specs(cfg: ExperimentConfig, data_digest: str, perm) -> dict[str, RunSpec]:
    """The four runs: the network and the MLP, each on original and on shuffled pixels."""
    sc = cfg.shuffle
    cnn = baseline_spec(cfg, data_digest, epochs=sc.epochs)
    mlp_optim = replace(cfg.optim, name=sc.mlp_optimizer, lr=sc.mlp_lr,
                        weight_decay=sc.mlp_weight_decay)
    mlp = RunSpec(run_label(sc.mlp.name), sc.mlp, mlp_optim, cnn.train, cfg.data, data_digest,
                  optim_keys=("shuffle.mlp_lr", "shuffle.mlp_weight_decay"))
    p = tuple(perm.tolist())
    specs = {}
    for spec in (cnn, mlp):
        shuffled = replace(spec, label=run_label(spec.model.name, "shuffled"), perm=p)
        specs[spec.label], specs[shuffled.label] = spec, shuffled
    return specs


def seeds_of(cfg: ExperimentConfig, spec: RunSpec) -> tuple[int, ...]:
    """The seeds a run of Part 3 trains with: the MLP's own list, if any, else train.seeds."""
    if spec.model == cfg.shuffle.mlp and cfg.shuffle.mlp_seeds:
        return tuple(cfg.shuffle.mlp_seeds)
    return cfg.train.run_seeds()


def to_csv(result: dict) -> str:
    """The 2x2 table, a row per seed: model x original/shuffled pixels, validation and test
    accuracy."""
    import pandas as pd

    return pd.DataFrame([{"model": r["model"], "pixels": "shuffled" if r["shuffled"] else "original",
                          "seed": e["seed"], "val_acc": e["val_acc"], "test_acc": e["test_acc"],
                          "epochs": result["epochs"], "run_dir": e["run_dir"]}
                         for r in result["runs"].values() for e in r["per_seed"]]
                        ).to_csv(index=False, float_format="%.6g")


def correctness(results: dict, label: str, split: str = "test"):
    """0/1 correctness, seeds x images, of one run's seeds on one split."""
    from .base import seed_correctness

    return seed_correctness(results, label, split, results["runs"][label]["seeds"], "shuffle")


def facts_of(results: dict) -> dict:
    """Test accuracy of each model on original and shuffled pixels with intervals, what
    shuffling changes for each (paired over the test images), whether the CNN loses more than
    the MLP (the difference of the two changes), and which model is better on each kind of
    pixels. The first model is the network (`cnn`), the second the MLP (`mlp`)."""
    from .. import analysis

    runs = results["runs"]
    n = results["data"]["test_images"]

    def find(model, shuffled):
        return next((lb for lb, r in runs.items()
                     if r["model"] == model and r["shuffled"] == shuffled), None)

    out: dict = {"epochs": results["epochs"], "models": {}, "runs": {
        label: {split: analysis.accuracy(correctness(results, label, split).mean(1),
                                         results["data"][f"{split}_images"])
                for split in ("val", "test")} for label in runs}}
    correct = {}
    for model in dict.fromkeys(r["model"] for r in runs.values()):
        o, s = find(model, False), find(model, True)
        if o and s:
            co, cs = correctness(results, o), correctness(results, s)
            correct[model] = (co, cs)
            out["models"][model] = {
                "title": runs[o]["title"], "parameters": runs[o]["parameters"],
                "seeds": co.shape[0],
                "original": analysis.accuracy(co.mean(1), n),
                "shuffled": analysis.accuracy(cs.mean(1), n),
                "change": analysis.compare([(1, cs), (-1, co)])}
    if len(out["models"]) == 2:
        (cnn_name, cnn), (mlp_name, mlp) = out["models"].items()
        (c_o, c_s), (m_o, m_s) = correct[cnn_name], correct[mlp_name]
        out["cnn"], out["mlp"] = cnn, mlp
        # CNN's change minus the MLP's: negative = the CNN loses more.
        out["difference_of_changes"] = analysis.compare([(1, c_s), (-1, c_o), (-1, m_s), (1, m_o)])
        out["cnn_minus_mlp_shuffled"] = analysis.compare([(1, c_s), (-1, m_s)])
        out["cnn_minus_mlp_original"] = analysis.compare([(1, c_o), (-1, m_o)])
    return out


@register_study
class Shuffle(Study):
    name = "shuffle"
    help = "Part 3: the network and an MLP on original and pixel-shuffled images (the 2x2 table)."
    title = "Part 3: shuffling the pixels"
    order = 30
    config = ShuffleConfig
    figures = ("shuffle_example", "shuffle_accuracy", "shuffle_learning_curves")
    predictions = True

    schema = {
        "epochs": Num(1), "perm_seed": Opt(int), "positions": Num(1), "moved?": Num(1),
        "runs": Map({"model": str, "title": str, "shuffled": bool, "val_acc": FRACTION,
                     "test_acc": FRACTION, "val_acc_std": Opt(float), "test_acc_std": Opt(float),
                     "parameters": COUNT, "run_dir": str, "wall_time_s": COUNT,
                     "seeds": List(int, 1), "per_seed": List(SEED_ENTRY, 1)}),
        "mlp": {"hidden": [Num(1)], "activation": str, "optimizer": str, "lr": Num(0)},
        "example": {"image": ANY, "label": int}}

    def validate(self, results: dict, where: str) -> None:
        from ..optimizers import OPTIMIZERS
        from ..schema import SchemaError, image, label, metrics, same_length

        for name, run in results["runs"].items():
            same_length(f"runs.{name}.seeds", run["seeds"], len(run["per_seed"]),
                        "entry of per_seed")
            for i, e in enumerate(run["per_seed"]):
                metrics(e["metrics"], f"runs.{name}.per_seed[{i}].metrics")
        pairs = {(r["model"], r["shuffled"]) for r in results["runs"].values()}
        if len(results["runs"]) != 4 or len({m for m, _ in pairs}) != 2 or len(pairs) != 4:
            raise SchemaError("runs of two models, each on original and shuffled pixels")
        if results["mlp"]["optimizer"] not in OPTIMIZERS:
            raise SchemaError(f"mlp.optimizer as one of {', '.join(OPTIMIZERS)}")
        image(results["example"]["image"], "example.image")
        label(results["example"]["label"], "example.label", results["data"]["classes"])
        moved = results.get("moved", results["positions"])
        if moved != int(moved) or moved > results["positions"]:
            raise SchemaError("moved as a whole number of pixel positions, at most positions")

    epochs_key = "shuffle.epochs"
    seed_keys = ("shuffle.mlp_seeds",)

    def check(self, cfg, **options) -> None:
        load_permutation(cfg)  # a bad saved permutation fails before any work

    def run(self, cfg, prepared: Prepared, *, retrain=False, log=print, **options) -> dict:
        from ..files import read_metrics
        from ..config import to_dict
        from ..models import get_model, with_defaults
        from .base import labels_arrays, seed_stats, train_models, wall_time

        perm = load_permutation(cfg)
        runs, arrays = {}, labels_arrays(prepared)
        plan = {label: (spec, seeds_of(cfg, spec))
                for label, spec in shuffle_specs(cfg, prepared.data_digest, perm).items()}
        for label, (spec, seeds) in plan.items():
            log(f"--- {label}: {spec.model.name}, {'shuffled' if spec.perm else 'original'} "
                f"pixels, {len(seeds)} seed{'s' if len(seeds) != 1 else ''}")
        # One call for all four models: original and shuffled pixels of one architecture
        # can train side by side.
        trained = train_models(list(plan.values()), prepared, cfg, retrain=retrain, log=log)
        if trained is None:
            return {}
        for (label, (spec, seeds)), seeded in zip(plan.items(), trained):
            m = get_model(spec.model.name)
            first = seeded[0].results
            val, test = seed_stats(seeded, "val_acc"), seed_stats(seeded, "test_acc")
            runs[label] = {"model": m.label, "title": m.title, "architecture": spec.model.name,
                           "shuffled": spec.perm is not None, "seeds": list(seeds),
                           "val_acc": val["mean"], "val_acc_std": val["std"],
                           "test_acc": test["mean"], "test_acc_std": test["std"],
                           "parameters": first["parameters"], "run_dir": first["run_dir"],
                           "wall_time_s": wall_time(seeded),
                           "per_seed": [{**r.entry(), "metrics": read_metrics(
                               Path(r.results["run_dir"]) / "metrics.csv")} for r in seeded]}
            for r in seeded:
                for split in ("val", "test"):
                    arrays[f"pred/{label}/{r.seed}/{split}"] = r.pred[split]
        sc = cfg.shuffle
        mlp = {"name": sc.mlp.name, **to_dict(with_defaults(sc.mlp.name, dict(sc.mlp.params)))}
        result = {"version": RESULTS_VERSION, "epochs": sc.epochs,
                  **permutation_facts(cfg, perm), "runs": runs,
                  "mlp": {**mlp, "optimizer": sc.mlp_optimizer, "lr": sc.mlp_lr,
                          "weight_decay": sc.mlp_weight_decay},
                  "example": {"image": prepared.splits.val_x[0].tolist(),
                              "label": int(prepared.splits.val_y[0])}}
        return self.save(cfg, prepared, result, {"permutation.json": json.dumps(perm.tolist()),
                                                 "shuffle.csv": to_csv(result)}, arrays)

    def runs(self, results: dict) -> list[str]:
        return [e["run_dir"] for r in results["runs"].values() for e in r["per_seed"]]

    def planned(self, cfg, data_digest: str, **options) -> list:
        out = []
        for spec in shuffle_specs(cfg, data_digest, load_permutation(cfg)).values():
            out += [("train", spec.for_seed(s)) for s in seeds_of(cfg, spec)]
        return out

    def seeds(self, results: dict) -> dict[str, list[int]]:
        # "on ... pixels", not ", ... pixels": the report lists these names separated by commas.
        return {f"{r['title']} on {'shuffled' if r['shuffled'] else 'original'} pixels": r["seeds"]
                for r in results["runs"].values()}

    def summary(self, results: dict) -> list[str]:
        lines = [f"{'model':<8} {'pixels':<9} {'val_acc':>8} {'test_acc':>8}   "
                 f"({results['epochs']} epochs)"]
        for r in results["runs"].values():
            lines.append(f"{r['model']:<8} {'shuffled' if r['shuffled'] else 'original':<9} "
                         f"{r['val_acc']:>8.4f} {r['test_acc']:>8.4f}")
        return lines

    def facts(self, results: dict) -> dict:
        from ..models.mlp import activation_title
        from ..optimizers import OPTIMIZERS

        out = facts_of(results)
        out["mlp_optimizer"] = OPTIMIZERS[results["mlp"]["optimizer"]].title
        out["mlp_activation"] = activation_title(results["mlp"]["activation"])
        return out

    def draw(self, results: dict, results_dir: Path, figures_dir: Path) -> None:
        import matplotlib.pyplot as plt
        import numpy as np
        import torch

        from .. import analysis, style, transforms
        from ..figures import as_image, chance_line
        from ..files import read_json

        style.apply()
        runs = results["runs"]
        models = list(dict.fromkeys(r["model"] for r in runs.values()))
        color = {m: style.CYCLE[i % len(style.CYCLE)] for i, m in enumerate(models)}
        fig, axes = plt.subplots(1, 2, figsize=(style.FULL_WIDTH, 2.3), sharey=True)
        # Shuffled runs drawn last and lighter, as their bars are: an MLP learns the same on
        # either pixel order, so its two curves coincide, and a dashed line of the same
        # colour on top of the solid one vanished into it.
        for run in sorted(runs.values(), key=lambda r: r["shuffled"]):
            ms = [e["metrics"] for e in run["per_seed"]]
            ep = np.array(ms[0]["epoch"])
            n = len(ms)
            tint = style.lighter(color[run["model"]]) if run["shuffled"] else color[run["model"]]
            kw = dict(color=tint, ls="--" if run["shuffled"] else "-",
                      label=f"{run['title']}, {'shuffled' if run['shuffled'] else 'original'}"
                            + (f" ({n} seeds)" if n > 1 else ""))
            for ax, key, marker in ((axes[0], "train_acc", None), (axes[1], "val_acc", "o")):
                curves = np.array([np.array(m[key], dtype=float) for m in ms]) * 100
                ok = ~np.isnan(curves[0])
                if n > 1:  # every seed thin, their mean on top
                    for c in curves:
                        ax.plot(ep[ok], c[ok], color=kw["color"], ls=kw["ls"], lw=0.5, alpha=0.4)
                if ok.sum() < 2:  # a line through one point draws nothing
                    marker = "o"
                ax.plot(ep[ok], curves.mean(0)[ok], marker=marker, ms=3, **kw)
        axes[0].set(xlabel="epoch", ylabel="accuracy (%)", title="Training accuracy")
        axes[1].set(xlabel="epoch", title="Validation accuracy")
        from matplotlib.ticker import MaxNLocator
        for ax in axes:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # no epoch 0.95
        handles, labels = axes[0].get_legend_handles_labels()
        fig.tight_layout(rect=(0, 0.1, 1, 1))
        fig.legend(handles, labels, loc="lower center", ncol=4, bbox_to_anchor=(0.5, 0.0))
        style.save(fig, figures_dir / "shuffle_learning_curves")

        fig, ax = plt.subplots(figsize=(style.FULL_WIDTH * 0.62, 2.6))
        width = 0.38
        titles = {r["model"]: r["title"] for r in runs.values()}
        facts = facts_of(results)["models"]
        for j, shuffled in enumerate((False, True)):
            stats = [facts[m]["shuffled" if shuffled else "original"] for m in models]
            vals = np.array([st["mean"] for st in stats]) * 100
            # The error bar: the seeds' 95% t-interval where there are several, else the
            # test set's 95% Wilson interval (the caption says which).
            lo_hi = np.array([analysis.shown_interval(st) for st in stats]) * 100
            err = np.abs(lo_hi.T - vals)
            x = np.arange(len(models)) + (j - 0.5) * width
            ax.bar(x, vals, width, color=[color[m] for m in models],
                   alpha=1.0 if not shuffled else 0.45, hatch="//" if shuffled else None,
                   edgecolor="white", label="shuffled pixels" if shuffled else "original",
                   yerr=err, error_kw=dict(lw=0.8, capsize=2, ecolor="#222"))
            for xi, v, top in zip(x, vals, lo_hi[:, 1]):  # above the error bar, not on it
                ax.text(xi, top + 1.5, f"{v:.1f}", ha="center", va="bottom", fontsize=7)
        chance_line(ax, results["data"]["classes"])
        ax.set_xticks(range(len(models)), [titles[m] for m in models])
        ax.set(ylabel="test accuracy (%)", ylim=(0, 108))
        ax.set_yticks(range(0, 101, 20))
        # Below the axes: at the top it would sit on the bars of a 90% network.
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, frameon=False)
        style.save(fig, figures_dir / "shuffle_accuracy")

        perm = torch.tensor(read_json(results_dir / "permutation.json", self.cli_name))
        img = torch.tensor([results["example"]["image"]], dtype=torch.uint8)
        shuffled = transforms.permute_pixels(img, perm)
        fig, axes = plt.subplots(1, 2, figsize=(style.FULL_WIDTH * 0.45, 1.5))
        for ax, im, title in zip(axes, (img, shuffled), ("original", "pixels shuffled")):
            ax.imshow(as_image(im[0]))
            ax.set_title(title, fontsize=8)
            ax.set_xticks([]), ax.set_yticks([]), ax.grid(False)
        style.save(fig, figures_dir / "shuffle_example")
