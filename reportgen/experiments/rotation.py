"""Part 2: how the trained network's accuracy changes when the images are rotated.

The plain model (Part 1) and a comparison model trained with random rotations (same
architecture and budget) are evaluated on the validation (and test) images rotated by each
angle, one angle per batch, on the model's device. Results: `rotation.json` and
`rotation.csv` in the experiment's results folder.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import mean
from typing import Callable

from .. import analysis
from ..config import ConfigError, ExperimentConfig, ModelConfig, check, shown
from ..training import RunSpec
from .base import Prepared, Study, register_study, results_dir
from .part1 import baseline_spec, run_label
from ..schema import ANY, COUNT, FRACTION, List, Map, Num, Opt

RESULTS_VERSION = 3  # 3: seeds, per-seed curves and per-image predictions
EXAMPLE_INDEX = 0  # the validation image shown in the example strip
EXAMPLE_ANGLES = (0, 30, 60, 90, 135, 180, 270)  # the angles of the example strip


ROLES = ("plain", "augmented", "equivariant")


def _default_equivariant() -> ModelConfig:
    from ..config import _builder_defaults

    return ModelConfig("p4_preact_resnet", _builder_defaults("p4_preact_resnet"))


def _default_angles() -> tuple[float, ...]:
    return tuple(float(a) for a in range(0, 360, 10))


MAX_ANGLES = 3600  # rotation.angles
ANGLE_PLACES = 3  # decimals of a degree that rotation.angles keeps


@dataclass(frozen=True)
class RotationConfig:
    angles: tuple[float, ...] = field(default_factory=_default_angles)  # degrees, counter-clockwise
    interpolation: str = "bilinear"  # bilinear | nearest
    fill: str = "mean"  # corners: "mean" (0 after normalisation, as the notebook's rotate) | "black"
    splits: tuple[str, ...] = ("val", "test")
    aug_degrees: float = 180.0  # the comparison model trains with rotations uniform in [-d, d]
    # Which models Part 2 trains (same budget each) and sweeps: "plain" (Part 1's network),
    # "augmented" (the same trained with random rotations), "equivariant" (`equivariant`).
    models: tuple[str, ...] = ("plain", "augmented")
    equivariant: ModelConfig = field(default_factory=_default_equivariant)
    # Models also swept with test-time rotation averaging (softmax averaged over 0/90/180/270°).
    tta: tuple[str, ...] = ()

    def __post_init__(self):
        check(len(self.angles) > 0, "rotation.angles", list(self.angles),
              "a non-empty list of degrees")
        for a in self.angles:
            check(math.isfinite(a) and -360 <= a <= 360, "rotation.angles", a,
                  "numbers between -360 and 360")
        # One rotation per orientation, in the figure's order: -30 is 330, 360 is 0 (drawn at
        # both ends of the curve anyway), and an angle listed twice is swept once.
        # (A tiny negative angle modulo 360 rounds to 360.0 itself, hence the second modulo.)
        # To a thousandth of a degree (rounding moves a 32x32 image's corner pixel by at most
        # 0.0002 of a pixel): 359.99999999 was swept as its own angle and printed as "360°",
        # 1e-9 as "1e-09°", both the upright image.
        # 0° is always swept: every angle is compared with the upright image. Without it (or
        # with nothing else) the report spoke of "its value at 0°" that no sweep measured and of
        # a mean over rotated angles of none.
        object.__setattr__(self, "angles", tuple(sorted(
            {0.0} | {round(a % 360, ANGLE_PLACES) % 360 + 0.0 for a in self.angles})))
        check(len(self.angles) > 1, "rotation.angles", [0],
              "at least one angle other than 0 (0° is always swept: it is the reference)")
        # Every angle is a sweep over every evaluation image, kept per image: 0.1-degree
        # steps are far finer than a 32x32 image resolves, and a list past them is a mistake.
        if len(self.angles) > MAX_ANGLES:
            raise ConfigError(f"rotation.angles holds {len(self.angles):,} distinct angles: use "
                              f"at most {MAX_ANGLES:,} (0.1-degree steps)")
        check(self.interpolation in ("bilinear", "nearest"), "rotation.interpolation",
              self.interpolation, "bilinear or nearest")
        check(self.fill in ("mean", "black"), "rotation.fill", self.fill, "mean or black")
        # Each split once: a repeated one was swept twice, and its results file then failed
        # the check that figures and report make ("splits without repeats").
        check(len(self.splits) > 0 and set(self.splits) <= {"val", "test"}
              and len(set(self.splits)) == len(self.splits), "rotation.splits",
              list(self.splits), 'a non-empty list of "val" and "test", each at most once')
        check(0 < self.aug_degrees <= 180, "rotation.aug_degrees", self.aug_degrees,
              "between 0 (exclusive) and 180")
        # Every other model is compared with the plain one (and the report calls it that):
        # without it, `models = ["augmented"]` ended the report in a KeyError.
        check("plain" in self.models and len(set(self.models)) == len(self.models)
              and set(self.models) <= set(ROLES), "rotation.models", list(self.models),
              f"a list of distinct names among {', '.join(ROLES)} that includes plain (the "
              "others are compared with it)")
        check(set(self.tta) <= set(self.models) and len(set(self.tta)) == len(self.tta),
              "rotation.tta", list(self.tta), "names from rotation.models")
        # The report describes this model's group convolutions and calls it invariant to 90°
        # turns by construction: an MLP or a plain ResNet here would make those claims false.
        from ..models import MODELS

        invariant = sorted(n for n, m in MODELS.items() if m.p4_invariant)
        check(MODELS[self.equivariant.name].p4_invariant, "rotation.equivariant.name",
              self.equivariant.name, f"a p4-equivariant model: {', '.join(invariant)}")


def equivariant_spec(cfg: ExperimentConfig, data_digest: str) -> RunSpec:
    """The built-in alternative: a p4-equivariant network, same budget and augmentation as
    Part 1's (no rotations)."""
    m = cfg.rotation.equivariant
    return RunSpec(run_label(m.name), m, cfg.optim, cfg.train, cfg.data, data_digest)


def rotaug_spec(cfg: ExperimentConfig, data_digest: str) -> RunSpec:
    """The comparison: the same model and budget, trained with random rotations."""
    augment = replace(cfg.train.augment, rotate_degrees=cfg.rotation.aug_degrees)
    return RunSpec(run_label(cfg.model.name, "rotaug"), cfg.model, cfg.optim,
                   replace(cfg.train, augment=augment), cfg.data, data_digest)


def role_specs(cfg: ExperimentConfig, data_digest: str) -> dict[str, RunSpec]:
    """The run of each role rotation.models may name."""
    return {"plain": baseline_spec(cfg, data_digest), "augmented": rotaug_spec(cfg, data_digest),
            "equivariant": equivariant_spec(cfg, data_digest)}


def sweep(module, x, y, angles, interpolation: str, fill: str, batch_size: int,
          progress: Callable[[], None] = lambda: None, keep_predictions: bool = False,
          tta: bool = False) -> dict:
    """Accuracy, mean confidence and per-class accuracy of `module` at each angle; with
    `keep_predictions`, also "pred": the predicted classes, angles x images (uint8)."""
    import torch

    from .. import evaluation, transforms

    out = {"accuracy": [], "confidence": [], "per_class": []}
    preds = []
    net = evaluation.inference_net(module)
    for angle in angles:
        s = evaluation.score(module, x, y, batch_size, net=net, keep_predictions=keep_predictions,
                             tta=tta,
                             transform=lambda z, a=angle: transforms.rotate(z, a, interpolation, fill))
        out["accuracy"].append(s.accuracy)
        out["confidence"].append(s.mean_confidence)
        out["per_class"].append(s.per_class_accuracy)
        preds.append(s.pred)
        progress()
    if keep_predictions:
        out["pred"] = torch.stack(preds).numpy()
    return out


def _mean_curves(curves: list[dict]) -> dict:
    """One model's sweep over its seeds: the mean curves, and every seed's accuracy curve."""
    import numpy as np

    out = {k: np.mean([c[k] for c in curves], axis=0).tolist()
           for k in ("accuracy", "confidence", "per_class")}
    out["accuracy_per_seed"] = [c["accuracy"] for c in curves]
    return out


def _parse_angles(text: str) -> list[float]:
    items = [a.strip() for a in text.split(",")]
    if "" in items and any(items):
        # "0,,10" (a number left out, say) swept 0 and 10 without a word.
        raise ConfigError(f"--angles {shown(text)} has an empty item: give numbers separated by "
                          "commas, e.g. 0,10,20")
    try:
        return [float(a) for a in items if a]
    except ValueError:
        raise ConfigError(f"--angles {shown(text)}: give numbers separated by commas, e.g. "
                          "0,10,20") from None


def to_csv(result: dict) -> str:
    """One row per (model, split, angle): accuracy (mean over seeds, and the seeds' standard
    deviation), mean confidence, per-class accuracy."""
    import pandas as pd

    rows = []
    for label, entry in result["models"].items():
        for split in result["splits"]:
            r = entry[split]
            for i, angle in enumerate(result["angles"]):
                per_seed = [c[i] for c in r.get("accuracy_per_seed", [])]
                rows.append({"model": label, "split": split, "angle": angle,
                             "accuracy": r["accuracy"][i], "seeds": len(per_seed),
                             "accuracy_sd": pd.Series(per_seed).std() if len(per_seed) > 1 else None,
                             "mean_confidence": r["confidence"][i],
                             **{f"acc_{c}": a for c, a in zip(result["classes"], r["per_class"][i])}})
    return pd.DataFrame(rows).to_csv(index=False, float_format="%.6g")


def _closed(angles, values):
    """Append 360 degrees as a copy of 0 degrees so the curve closes."""
    import numpy as np

    angles, values = list(angles), list(values)
    if angles and angles[0] % 360 == 0 and 360 not in angles:
        angles.append(360.0)
        values.append(values[0])
    return np.array(angles), np.array(values)


def angle_stats(correct) -> list[dict]:
    """The accuracy at each angle with its intervals; `correct`: seeds x angles x images."""
    return [analysis.accuracy(correct[:, i].mean(1), correct.shape[2])
            for i in range(correct.shape[1])]


def picked(candidates: int) -> dict:
    """compare()'s Bonferroni arguments for an angle picked as the extreme of `candidates`."""
    return {"looks": candidates, "among": f"picking the worst of {candidates} angles"} \
        if candidates > 1 else {}


def band(stats: list[dict]) -> list:
    """The band drawn around an accuracy curve: the seeds' 95% interval, or with one seed
    the evaluation set's."""
    return [analysis.shown_interval(st) for st in stats]


def _separated(ranked: list, class_rotated) -> bool:
    """Whether the two best-ranked classes' 95% intervals both lie above the two worst's."""
    if len(ranked) < 4:
        return False
    best = [class_rotated(c) for c in ranked[:2]]
    worst = [class_rotated(c) for c in ranked[-2:]]
    if not all(best + worst):
        return False
    return min(c["lo"] for c in best) > max(c["hi"] for c in worst)


def model_facts(angles: list[float], classes: list[str], entry: dict, correct,
                labels=None, pred=None) -> dict:
    """For one model and split: accuracy at 0°, at the worst angle and averaged over rotated
    angles with their intervals; the drop from 0° to the worst angle and to small angles
    (paired tests); where accuracy comes back up; the classes that survive rotation best
    and worst, and whether the network favours them; confidence. `correct`: 0/1 array
    seeds x angles x images; `pred`: the predicted classes, the same shape."""
    acc, per_class, conf = entry["accuracy"], entry["per_class"], entry["confidence"]
    n = correct.shape[2]
    chance = 1 / len(classes)
    stats = angle_stats(correct)
    at = {a % 360: st for a, st in zip(angles, stats)}
    zero_i = next((i for i, a in enumerate(angles) if a % 360 == 0), None)
    rotated = [i for i, a in enumerate(angles) if a % 360 != 0]
    small = [i for i, a in enumerate(angles) if 10 <= a % 360 <= 20]
    small_deg = [angles[i] % 360 for i in small]
    # On a tie the worst angle is a rotated one: 0° is the reference, not a rotation.
    worst_i = min(range(len(acc)), key=lambda i: (acc[i], i == zero_i))
    class_mean = [mean(per_class[i][c] for i in rotated) if rotated else float("nan")
                  for c in range(len(classes))]
    # Classes without images in this split have no accuracy (NaN): they are not ranked.
    ranked = sorted((c for c in range(len(classes)) if not math.isnan(class_mean[c])),
                    key=lambda c: -class_mean[c])
    above = [analysis.above_chance(a, n, chance) for a in acc]

    def class_rotated(c):  # a class's mean accuracy over rotated angles, with its interval
        if labels is None or not rotated:
            return None
        idx = labels == c
        return analysis.compare([(1, correct[:, rotated][:, :, idx].mean(1))])

    def favoured(c):
        """A class the rotated images are assigned to measurably more often than it occurs:
        (name, share of rotated images predicted as it with its interval, its share of the
        images); else None. Accuracy on a class is its recall, which a bias towards it
        raises: the plain network on the quick preset called 22% of rotated images frogs."""
        if pred is None or labels is None or not rotated:
            return None
        share = analysis.compare([(1, (pred[:, rotated] == c).mean(1))])
        truth = float((labels == c).mean())
        return (classes[c], share, truth) if share["lo"] > truth else None

    def vs_zero(idx, picked_from=1):  # accuracy at those angles (averaged) minus at 0°, paired
        if zero_i is None or not idx:
            return None
        return analysis.compare([(1, correct[:, idx].mean(1)), (-1, correct[:, zero_i])],
                                **picked(picked_from))

    order = sorted(range(len(angles)), key=lambda j: angles[j] % 360)  # around the circle

    def rises(a):
        """Whether the local maximum at angle a rises measurably above the lowest accuracy on
        each side of it (up to the next angle at least as high): a wiggle of a flat curve is
        not accuracy "coming back up". Both angles are picked from the curve, so Bonferroni
        over the rotated angles, as for the worst angle."""
        k = next(pos for pos, j in enumerate(order) if angles[j] % 360 == a and j in rotated)
        peak = order[k]
        for step in (-1, 1):
            low, j = None, k
            for _ in range(len(order) - 1):
                j = (j + step) % len(order)
                if acc[order[j]] >= acc[peak]:
                    break
                if low is None or acc[order[j]] < acc[low]:
                    low = order[j]
            c = None if low is None else analysis.compare(
                [(1, correct[:, peak]), (-1, correct[:, low])], **picked(len(rotated)))
            if not (c and c["significant"] and c["diff"] > 0):
                return False
        return True

    # The worst angle is the lowest of the rotated ones: tested for what it is, an extreme.
    drop = vs_zero([worst_i], len(rotated)) if worst_i != zero_i else None
    # Between the multiples of 90°: where interpolation and the missing continuous symmetry
    # show for a network that is exactly invariant to 90° turns.
    off = [i for i, a in enumerate(angles) if a % 90 != 0]
    dip_i = min(off, key=lambda i: acc[i]) if off else None
    grid = [at[a]["mean"] for a in (90.0, 180.0, 270.0) if a in at]
    return {
        "dip": None if dip_i is None else {"angle": angles[dip_i], "acc": stats[dip_i],
                                           "vs_zero": vs_zero([dip_i], len(off))},
        "mean_all": analysis.compare([(1, correct.mean(1))]),
        # Accuracy at 90°, 180° and 270° identical to 0° (an exactly invariant model).
        "grid_equal": zero_i is not None and bool(grid) and all(
            g == stats[zero_i]["mean"] for g in grid),
        "acc0": stats[zero_i] if zero_i is not None else None,
        # Rotation measurably costs accuracy: the drop to the worst angle is significant.
        "rotation_costs": bool(drop and drop["significant"] and drop["diff"] < 0),
        "worst_angle": angles[worst_i], "worst": stats[worst_i],
        "worst_above_chance": above[worst_i],
        "drop_to_worst": drop,
        "mean_rotated": analysis.compare([(1, correct[:, rotated].mean(1))]) if rotated else None,
        "rotated_from": min((angles[i] % 360 for i in rotated), default=None),
        "rotated_to": max((angles[i] % 360 for i in rotated), default=None),
        "at": at, "seeds": int(correct.shape[0]), "n": n,
        "peaks": [(a, at[a]) for a, _ in analysis.circular_peaks(angles, acc, above)
                  if rises(a)][:3],
        "small_angles": vs_zero(small),
        # The small angles measured, "10°–20°" or a single "15°", as the discussion names them.
        "small_angle_range": sorted({min(small_deg), max(small_deg)}) if small_deg else [],
        "robust_classes": [(classes[c], class_rotated(c)) for c in ranked[:2]],
        "fragile_classes": [(classes[c], class_rotated(c)) for c in ranked[-2:][::-1]],
        # The two best classes measurably above the two most fragile: each interval of the
        # first pair lies above each of the second (on a few images per class they overlap,
        # and "survive rotation best" would be a ranking of noise).
        "classes_separated": _separated(ranked, class_rotated),
        "favoured_classes": [f for f in map(favoured, ranked[:2]) if f],
        "mean_confidence0": conf[zero_i] if zero_i is not None else None,
        "confidence_worst": conf[worst_i],
        # Over-confident: the mean confidence lies above the accuracy's whole 95% interval.
        "overconfident_at_worst": conf[worst_i] > stats[worst_i]["sampling"][1],
        "band": band(stats),
        "band_kind": "seeds" if correct.shape[0] >= 2 else "sampling",
    }


def predicted(results: dict, label: str, split: str):
    """Predicted classes, seeds x angles x images, of one model's sweep on one split."""
    from .base import seed_predictions

    return seed_predictions(results, label, split, results["models"][label]["seeds"],
                            "rotation", (len(results["angles"]),))


def correctness(results: dict, label: str, split: str):
    """0/1 correctness, seeds x angles x images, of one model's sweep on one split."""
    return analysis.correct(predicted(results, label, split),
                            results["arrays"][f"labels/{split}"])


@register_study
class Rotation(Study):
    name = "rotation"
    help = "Part 2: accuracy of the plain and the rotation-augmented network over rotation angles."
    title = "Part 2: rotating the images"
    order = 20
    config = RotationConfig
    figures = ("rotation_accuracy", "rotation_per_class", "rotation_examples")
    predictions = True

    schema = {
        "angles": List(float, 2), "interpolation": str, "fill": str, "splits": List(str, 1),
        "classes": List(str, 1), "models": Map({
            "title": str, "role?": str, "tta?": bool, "checkpoint?": str, "run_dir": str,
            "aug_degrees": Num(0, 180), "seeds": List(int, 1),
            "per_seed": List({"seed": int, "run_dir": str, "checkpoint?": str}, 1),
            "model?": str, "params?": dict, "parameters?": COUNT, "flops?": Opt(COUNT),
            "train_images_per_s?": Opt(COUNT)}),
        "example": {"image": ANY, "label": int}, "sweep_wall_time_s": COUNT,
        "sweep_images": COUNT}

    def settings(self, config: dict) -> dict:
        # The comparison models' settings matter only where they are trained.
        flat = super().settings(config)
        models = flat.get("rotation.models") or []
        if "equivariant" not in models:
            flat.pop("rotation.equivariant", None)
        if "augmented" not in models:
            flat.pop("rotation.aug_degrees", None)
        return flat

    def validate(self, results: dict, where: str) -> None:
        from ..config import ConfigError, from_dict
        from ..schema import SchemaError, image, label, same_length
        from ..schema import check as check_shape

        try:  # the sweep's settings, as rotation.* would give them
            rc = from_dict(RotationConfig, {k: results[k] for k in
                                            ("angles", "interpolation", "fill", "splits")},
                           "rotation")
        except ConfigError as e:
            raise SchemaError(f"sweep settings that rotation.* allows ({e})") from None
        if list(rc.angles) != [float(a) for a in results["angles"]]:
            raise SchemaError("angles as distinct angles from 0 up to 360, sorted")
        if len(set(results["splits"])) != len(results["splits"]):
            raise SchemaError("splits without repeats")
        classes = results["classes"]
        if classes != results["data"]["classes"]:
            raise SchemaError("classes as the same list as data.classes")
        n = len(results["angles"])
        if not results["models"]:
            raise SchemaError("any model under models")
        roles = [e.get("role") for e in results["models"].values() if e.get("role") is not None]
        known = (*ROLES, "checkpoint")
        for r in roles:
            if r not in known and not (r.endswith("-tta") and r[:-4] in roles):
                raise SchemaError(f"models.*.role as one of {', '.join(known)} or a role "
                                  f"present in it with -tta (found {r!r})")
        if len(set(roles)) != len(roles):
            raise SchemaError("models.*.role without repeats")
        # Every other model is compared with the plain network (or the swept checkpoint).
        if len(set(roles) & {"plain", "checkpoint"}) != 1:
            raise SchemaError("a model whose role is plain (or checkpoint) under models")
        per_angle = [FRACTION]
        for name, entry in results["models"].items():
            same_length(f"models.{name}.seeds", entry["seeds"], len(entry["per_seed"]),
                        "entry of per_seed")
            for split in results["splits"]:
                at = f"models.{name}.{split}"
                if split not in entry:
                    raise SchemaError(f"the field {at}")
                check_shape(entry[split], {"accuracy": per_angle, "confidence": per_angle,
                                           "per_class": [[Num(finite=False)]]}, at)
                for k in ("accuracy", "confidence", "per_class"):
                    same_length(f"{at}.{k}", entry[split][k], n, "angle")
                for i, row in enumerate(entry[split]["per_class"]):
                    same_length(f"{at}.per_class[{i}]", row, len(classes), "class")
        image(results["example"]["image"], "example.image")
        label(results["example"]["label"], "example.label", classes)

    @property
    def options(self):
        import typer

        return {"checkpoint": (str | None, typer.Option(
                    None, "--checkpoint", help="Sweep only this checkpoint (no training).",
                    # a leading ~ as the shell expands it, also where it is quoted
                    callback=lambda path: os.path.expanduser(path) if path else path)),
                "angles": (str | None, typer.Option(
                    None, "--angles", help="Comma-separated degrees (default 0,10,...,350)."))}

    def overrides(self, angles: str | None = None, **options) -> dict:
        return {} if angles is None else {"rotation.angles": _parse_angles(angles)}

    def configured(self, cfg, checkpoint: str | None = None, **options):
        """A sweep of one `--checkpoint` is written as experiment `<name>-checkpoint`
        (OUT/<name>-checkpoint/, figures/<name>-checkpoint/): before, it replaced Part 2's
        rotation.json, and the report then described that checkpoint (an MLP, say) as the
        study's ResNet."""
        if checkpoint is None:
            return cfg
        from ..config import NAME_BYTES

        base, suffix = cfg.name, "-checkpoint"
        while len((base + suffix).encode("utf-8", "surrogatepass")) > NAME_BYTES:
            base = base[:-1]
        return replace(cfg, name=base + suffix)

    def check(self, cfg, checkpoint: str | None = None, **options) -> None:
        if checkpoint is None:
            # Each model is a run of its own, keyed by its label in rotation.json: two roles
            # with one label (a p4 network as model.name and as the equivariant one) trained,
            # and then the second replaced the first and the figures and report failed.
            rc = cfg.rotation
            specs = role_specs(cfg, "")
            for i, role in enumerate(rc.models):
                twin = next((r for r in rc.models[:i] if specs[r].label == specs[role].label),
                            None)
                if twin is not None:
                    raise ConfigError(
                        f"rotation.models = {list(rc.models)}: the {twin} and the {role} model "
                        f"are both {specs[role].model.name} (model.name = {cfg.model.name!r}, "
                        f"rotation.equivariant.name = {rc.equivariant.name!r}), one run twice: "
                        f"drop {role!r} from rotation.models, or set model.name to a network "
                        "that is not p4-equivariant, e.g. preact_resnet")
            # The comparison model's rotations replace the plain network's range: no wider, and
            # it trained as the plain one (or with less), while the report said "additional".
            base = cfg.train.augment.rotate_degrees
            if "augmented" in rc.models and rc.aug_degrees <= base:
                raise ConfigError(
                    f"rotation.aug_degrees = {rc.aug_degrees:g} is not more than "
                    f"train.augment.rotate_degrees = {base:g}: the rotation-augmented model "
                    "would train with no more rotation than the plain one; set "
                    "train.augment.rotate_degrees = 0 (the practical's), raise "
                    "rotation.aug_degrees, or drop \"augmented\" from rotation.models")
        if checkpoint is not None:
            from ..training import load_classifier

            if not checkpoint.strip():  # `--checkpoint "$CKPT"` with CKPT unset read as "."
                raise ConfigError(f"--checkpoint {checkpoint!r} is empty: name a checkpoint "
                                  "file, e.g. OUT/runs/<run>/checkpoints/best.ckpt")
            from ..config import full_path_problem, text_problem

            # Its path goes into the results and the report, which are UTF-8: a name with
            # other bytes failed deep in loading, reported as a damaged checkpoint.
            problem = text_problem(checkpoint)
            if problem:
                raise ConfigError(f"--checkpoint {checkpoint!r} contains {problem}: rename the "
                                  "file (or copy it) to a plain UTF-8 name")
            problem = full_path_problem(checkpoint)
            if problem:
                raise ConfigError(f"--checkpoint {checkpoint!r} {problem}")
            from ..data import CLASSES
            from ..models import with_defaults

            module = load_classifier(checkpoint)  # a bad checkpoint fails before the data is read
            hp = module.hparams
            nc = with_defaults(hp.model_name, dict(hp.model_params))["num_classes"]
            if nc != len(CLASSES):  # its accuracies would be counted against the wrong labels
                raise ConfigError(f"checkpoint {checkpoint} holds a model of {nc} classes, but "
                                  f"CIFAR-10 has {len(CLASSES)}: pass a checkpoint trained on "
                                  "CIFAR-10")

    def run(self, cfg, prepared: Prepared, *, retrain=False, log=print,
            checkpoint: str | None = None, **options) -> dict:
        """Train (or reuse) both models and sweep the angles; with `checkpoint`, sweep only
        that checkpoint (no training)."""
        from tqdm.auto import tqdm

        from ..models import count_parameters, forward_flops, get_model, with_defaults
        from ..training import (eval_batch_size, interactive, load_classifier,
                                resolve_accelerator, torch_device)
        from .base import labels_arrays, train_models

        rc = cfg.rotation
        device = torch_device(resolve_accelerator(cfg.train.device))
        # (label, role, title, augmentation degrees, [(seed, checkpoint path), ...], tta)
        if checkpoint is not None:
            module = load_classifier(checkpoint, device)
            sources = [("checkpoint", "checkpoint", "checkpoint", 0.0,
                        [(int(module.hparams.get("seed", 0)), Path(checkpoint))], False)]
            speed = {}
        else:
            sources = []
            base = get_model(cfg.model.name).title
            speed: dict[str, float] = {}  # training images/s of each trained model (first seed)
            runs = role_specs(cfg, prepared.data_digest)
            specs = {"plain": (runs["plain"], 0.0, base),
                     "augmented": (runs["augmented"], rc.aug_degrees,
                                   f"{base} + rotation augmentation"),
                     "equivariant": (runs["equivariant"], 0.0,
                                     get_model(rc.equivariant.name).title)}
            # One call for every model: the plain and the augmented ResNet can train side by side.
            trained = train_models([(specs[role][0], cfg.train.run_seeds()) for role in rc.models],
                                   prepared, cfg, retrain=retrain, log=log)
            if trained is None:
                return {}
            for role, runs in zip(rc.models, trained):
                spec, aug, title = specs[role]
                seeded = [(r.seed, Path(r.results["best_checkpoint"])) for r in runs]
                # Speeds compare only between runs trained alone: side by side, a run's
                # images per second depend on how many others shared its steps.
                if runs[0].results.get("side_by_side", 1) == 1:
                    speed[spec.label] = runs[0].results["train_images_per_s"]
                sources.append((spec.label, role, title, aug, seeded, False))
                if role in rc.tta:
                    sources.append((f"{spec.label}-tta", f"{role}-tta",
                                    f"{title} + test-time rotation averaging", aug, seeded, True))
        # Every checkpoint is loaded (and so checked) once, before the sweep starts.
        loaded = {path: load_classifier(path, device) for src in sources for _, path in src[4]}
        # Image evaluations: test-time averaging evaluates every image four times.
        n_sweeps = sum(len(src[4]) * (4 if src[5] else 1) for src in sources)
        t0 = time.perf_counter()
        bar = tqdm(total=sum(len(src[4]) for src in sources) * len(rc.splits) * len(rc.angles),
                   unit="angle",
                   desc="rotation sweep", mininterval=1.0, disable=not interactive())
        models: dict[str, dict] = {}
        arrays = labels_arrays(prepared)
        bs = eval_batch_size(cfg.train, device)
        for label, role, title, aug, seeded, tta in sources:
            first = loaded[seeded[0][1]]
            entry = {"role": role, "title": title, "tta": tta, "checkpoint": str(seeded[0][1]),
                     "run_dir": str(seeded[0][1].parent.parent), "aug_degrees": aug,
                     "seeds": [seed for seed, _ in seeded],
                     "per_seed": [{"seed": seed, "checkpoint": str(path),
                                   "run_dir": str(path.parent.parent)} for seed, path in seeded],
                     "model": first.hparams.model_name,
                     "params": with_defaults(first.hparams.model_name,
                                             dict(first.hparams.model_params)),
                     "parameters": count_parameters(first.model),
                     "flops": forward_flops(first.model),
                     "train_images_per_s": speed.get(label.removesuffix("-tta"))}
            for split in rc.splits:
                x, y = prepared.splits.get(split)
                curves = []
                for seed, path in seeded:
                    c = sweep(loaded[path], x, y, rc.angles, rc.interpolation, rc.fill, bs,
                              progress=bar.update, keep_predictions=True, tta=tta)
                    arrays[f"pred/{label}/{seed}/{split}"] = c.pop("pred")
                    curves.append(c)
                entry[split] = _mean_curves(curves)
            models[label] = entry
        bar.close()
        wall = time.perf_counter() - t0
        n_images = sum(len(prepared.splits.get(s)[0]) for s in rc.splits) * len(rc.angles) * n_sweeps
        ex_x, ex_y = prepared.splits.val_x[EXAMPLE_INDEX], int(prepared.splits.val_y[EXAMPLE_INDEX])
        result = {
            "version": RESULTS_VERSION, "angles": list(rc.angles), "interpolation": rc.interpolation,
            "fill": rc.fill, "splits": list(rc.splits), "classes": list(prepared.classes),
            "models": models,
            "example": {"split": "val", "index": EXAMPLE_INDEX, "label": ex_y,
                        "image": ex_x.tolist()},
            "sweep_wall_time_s": wall, "sweep_images": n_images, "device": str(device),
        }
        result = self.save(cfg, prepared, result, {"rotation.csv": to_csv(result)}, arrays)
        log(f"rotation sweep: {sum(len(src[4]) for src in sources)} sweep(s) x {len(rc.splits)} split(s) x "
            f"{len(rc.angles)} angles in {wall:.1f} s ({n_images / wall:.0f} img/s)")
        if checkpoint is not None:
            log(f"checkpoint sweep written to {results_dir(cfg)} (Part 2's own results are left "
                "as they were)")
        return result

    def runs(self, results: dict) -> list[str]:
        return [r["run_dir"] for m in results["models"].values() for r in m["per_seed"]]

    def planned(self, cfg, data_digest: str, checkpoint: str | None = None,
                split_sizes: dict | None = None, **options) -> list:
        rc = cfg.rotation
        specs = role_specs(cfg, data_digest)
        images = sum((split_sizes or {}).get(s, 0) for s in rc.splits) * len(rc.angles)
        if checkpoint:  # its sweep only (the plan said "nothing to train" and no sweep)
            from ..training.rundir import load_checkpoint_dict

            hp = load_checkpoint_dict(Path(checkpoint), mmap=True)["hyper_parameters"]
            model = ModelConfig(hp["model_name"], dict(hp["model_params"]))
            return [("evaluate", images, RunSpec("checkpoint", model, cfg.optim, cfg.train,
                                                 cfg.data, data_digest))]
        out: list = []
        for role in rc.models:
            for seed in cfg.train.run_seeds():
                spec = specs[role].for_seed(seed)
                out.append(("train", spec))
                out.append(("evaluate", images * (5 if role in rc.tta else 1), spec))
        return out

    def seeds(self, results: dict) -> dict[str, list[int]]:
        return {e["title"]: e["seeds"] for e in results["models"].values()}

    def summary(self, results: dict) -> list[str]:
        split = results["splits"][0]
        lines = []
        for label, entry in results["models"].items():
            acc = dict(zip(results["angles"], entry[split]["accuracy"]))
            shown = [f"{a:g}°: {acc[a]:.3f}" for a in (0.0, 90.0, 180.0) if a in acc]
            # The worst rotated angle too: a sweep of [0, 5, 15] showed only 0°.
            rotated = [a for a in acc if a % 360]
            if rotated:
                worst = min(rotated, key=lambda a: acc[a])
                shown.append(f"worst {worst:g}°: {acc[worst]:.3f}")
            lines.append(f"{label} ({split}) {'  '.join(shown)}")
        return lines

    def facts(self, results: dict) -> dict:
        angles = [float(a) for a in results["angles"]]
        classes = results["classes"]
        steps = sorted({round(b - a, 6) for a, b in zip(angles, angles[1:])})
        pred = {(label, split): predicted(results, label, split)
                for label in results["models"] for split in results["splits"]}
        correct = {(label, split): analysis.correct(p, results["arrays"][f"labels/{split}"])
                   for (label, split), p in pred.items()}
        models = {label: {split: model_facts(angles, classes, entry[split], correct[label, split],
                                             results["arrays"][f"labels/{split}"],
                                             pred[label, split])
                          for split in results["splits"]}
                  for label, entry in results["models"].items()}
        roles = {e.get("role"): label for label, e in results["models"].items()}
        from ..style import LINESTYLE_NAMES, LINESTYLES

        out: dict = {"models": models, "chance": 1 / len(classes),
                     "split_styles": [(split, LINESTYLE_NAMES[LINESTYLES[j]])
                                      for j, split in enumerate(results["splits"])],
                     "angle_step": steps[0] if len(steps) == 1 else None,
                     "plain": roles.get("plain") or next(iter(models)),
                     "augmented": roles.get("augmented"),
                     "seeds": {label: len(e["seeds"]) for label, e in results["models"].items()},
                     "aug_degrees": max((e.get("aug_degrees", 0)
                                         for e in results["models"].values()), default=0)}
        out["equivariant"] = roles.get("equivariant")
        # The plain network itself p4-equivariant (model.name = "p4_preact_resnet"): the
        # discussion must not say that its architecture leaves rotations out.
        from ..models import MODELS

        plain_model = results["models"][out["plain"]].get("model")
        out["plain_p4"] = bool(plain_model in MODELS and MODELS[plain_model].p4_invariant)
        # Test-time averaged entries: their label -> the label of the model they average.
        out["tta"] = {label: roles.get(r[:-4]) for r, label in roles.items()
                      if r and r.endswith("-tta")}
        s = results["splits"][0]
        zero_i = next((i for i, x in enumerate(angles) if x % 360 == 0), None)
        rotated = [i for i, x in enumerate(angles) if x % 360 != 0]
        worst_i = angles.index(models[out["plain"]][s]["worst_angle"])

        def versus(label, other):  # label minus other, paired on the same images
            a, b = correct[label, s], correct[other, s]

            def at(idx, picked_from=1):
                return analysis.compare([(1, a[:, idx].mean(1)), (-1, b[:, idx].mean(1))],
                                        **picked(picked_from))

            return {"split": s, "at_0": at([zero_i]) if zero_i is not None else None,
                    "mean_rotated": at(rotated) if rotated else None,
                    "mean_all": at(list(range(len(angles)))),
                    # The plain network's worst angle, picked from its rotated angles.
                    "at_worst": at([worst_i], len(rotated))}

        out["versus_plain"] = {label: versus(label, out["plain"])
                               for label in models if label != out["plain"]}
        if out["augmented"]:
            out["augmentation"] = out["versus_plain"][out["augmented"]]
        if out["equivariant"] and out["augmented"]:
            out["equivariant_vs_augmented"] = versus(out["equivariant"], out["augmented"])
        return out

    def draw(self, results: dict, results_dir: Path, figures_dir: Path) -> None:
        import matplotlib.pyplot as plt
        import numpy as np
        import torch
        from matplotlib.lines import Line2D

        from .. import style, transforms
        from ..figures import SPLIT_NAMES, chance_line

        style.apply()
        r = results
        classes = r["classes"]
        fig, ax = plt.subplots(figsize=(style.FULL_WIDTH, 2.8))
        for i, (label, entry) in enumerate(r["models"].items()):
            color = style.CYCLE[i % len(style.CYCLE)]
            for j, split in enumerate(r["splits"]):
                a, acc = _closed(r["angles"], np.array(entry[split]["accuracy"]) * 100)
                b = np.array(band(angle_stats(correctness(r, label, split)))) * 100
                _, lo = _closed(r["angles"], b[:, 0])
                _, hi = _closed(r["angles"], b[:, 1])
                ax.fill_between(a, lo, hi, color=color, alpha=0.18 if j == 0 else 0.1, lw=0)
                ax.plot(a, acc, color=color, ls=style.LINESTYLES[j], marker="o" if j == 0 else None,
                        ms=2.5)
        chance_line(ax, classes)
        ax.set(xlabel="rotation angle (degrees, counter-clockwise)", ylabel="accuracy (%)",
               xlim=(0, 360), ylim=(0, 100), xticks=range(0, 361, 45))
        # One entry a model (its colour) and one a split (its line style), not one per pair:
        # six models on two splits made a legend of 13 lines that squeezed the plot. The
        # models fill the first one or two columns, the key (splits, chance) the last.
        models = [Line2D([], [], color=style.CYCLE[i % len(style.CYCLE)], marker="o", ms=2.5,
                         label=entry["title"]) for i, entry in enumerate(r["models"].values())]
        key = [Line2D([], [], color="0.35", ls=style.LINESTYLES[j], marker="o" if j == 0 else None,
                      ms=2.5, label=f"{SPLIT_NAMES.get(split, split)} images")
               for j, split in enumerate(r["splits"])] if len(r["splits"]) > 1 else []
        key += ax.get_legend_handles_labels()[0]  # chance
        model_cols = 1 if len(models) <= 3 else 2
        rows = max(-(-len(models) // model_cols), len(key))
        blank = [Line2D([], [], alpha=0, label=" ")] * (model_cols * rows - len(models))
        ax.legend(handles=models + blank + key, loc="upper center", ncol=model_cols + 1,
                  bbox_to_anchor=(0.5, -0.22))
        style.save(fig, figures_dir / "rotation_accuracy")

        split = r["splits"][0]
        entries = list(r["models"].values())
        fig, axes = plt.subplots(len(entries), 1, squeeze=False,
                                 figsize=(style.FULL_WIDTH,
                                          (1.9 if len(entries) <= 2 else 1.5) * len(entries) + 0.4))
        for ax, entry in zip(axes[:, 0], entries):
            pc = np.array(entry[split]["per_class"]).T * 100  # classes x angles
            im = ax.imshow(pc, aspect="auto", cmap=style.HEATMAP, vmin=0, vmax=100,
                           interpolation="nearest")
            ax.set_yticks(range(len(classes)), classes, fontsize=7)
            step = max(1, len(r["angles"]) // 12)
            ax.set_xticks(range(0, len(r["angles"]), step),
                          [f"{a:g}" for a in r["angles"][::step]], fontsize=7)
            ax.set_title(f"{entry['title']}: per-class accuracy "
                         f"({SPLIT_NAMES.get(split, split)} images)")
            ax.grid(False)
            fig.colorbar(im, ax=ax, label="accuracy (%)", fraction=0.03, pad=0.01)
        axes[-1, 0].set_xlabel("rotation angle (degrees)")
        fig.tight_layout()
        style.save(fig, figures_dir / "rotation_per_class")

        ex = r["example"]
        z = transforms.normalize(torch.tensor([ex["image"]], dtype=torch.uint8))
        fig, axes = plt.subplots(1, len(EXAMPLE_ANGLES), figsize=(style.FULL_WIDTH, 1.25))
        for ax, a in zip(axes, EXAMPLE_ANGLES):
            img = transforms.denormalize(transforms.rotate(z, a, r["interpolation"], r["fill"]))[0]
            ax.imshow(img.permute(1, 2, 0).numpy())
            ax.set_title(f"{a}°", fontsize=8)
            ax.set_xticks([]), ax.set_yticks([]), ax.grid(False)
        style.save(fig, figures_dir / "rotation_examples")
