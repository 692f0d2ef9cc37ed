"""Facts the discussion states, derived from the results files only (no model, no data).

Each function takes a study's results (as loaded from JSON) and returns plain numbers and
names, so the report template can present them and the tests can check them.
"""
from __future__ import annotations

import math
from statistics import mean


def _circular_mean(angles: list[float], acc: list[float], lo: float, hi: float) -> float | None:
    vals = [a for ang, a in zip(angles, acc) if lo <= ang % 360 <= hi]
    return mean(vals) if vals else None


def rotation_facts(rot: dict) -> dict:
    """Per model and split: accuracy at 0, worst angle, recoveries, robust classes."""
    angles = [float(a) for a in rot["angles"]]
    classes = rot["classes"]
    chance = 1 / len(classes)
    steps = sorted({round(b - a, 6) for a, b in zip(angles, angles[1:])})
    facts: dict = {"models": {}, "chance": chance, "angle_step": steps[0] if len(steps) == 1 else None,
                   "aug_degrees": max((e.get("aug_degrees", 0) for e in rot["models"].values()),
                                      default=0)}
    for label, entry in rot["models"].items():
        for split in rot["splits"]:
            acc = entry[split]["accuracy"]
            per_class = entry[split]["per_class"]
            at = {a % 360: v for a, v in zip(angles, acc)}
            nonzero = [(a, v) for a, v in zip(angles, acc) if a % 360 != 0]
            worst_angle, worst = min(zip(angles, acc), key=lambda t: t[1])
            # Local maxima away from 0 degrees: where accuracy comes back up.
            n = len(acc)
            order = sorted(range(n), key=lambda i: angles[i] % 360)
            peaks = []
            for k, i in enumerate(order):
                a = angles[i] % 360
                if a == 0 or n < 3:
                    continue
                prev, nxt = acc[order[k - 1]], acc[order[(k + 1) % n]]
                if acc[i] > prev and acc[i] > nxt and acc[i] > chance + 0.05:
                    peaks.append((a, acc[i]))
            peaks.sort(key=lambda t: -t[1])
            # Classes ranked by their mean accuracy over the rotated (non-zero) angles.
            rot_idx = [i for i, a in enumerate(angles) if a % 360 != 0]
            class_mean = [mean(per_class[i][c] for i in rot_idx) if rot_idx else float("nan")
                          for c in range(len(classes))]
            ranked = sorted(range(len(classes)), key=lambda c: -class_mean[c]
                            if not math.isnan(class_mean[c]) else 0)
            zero = at.get(0.0)
            facts["models"].setdefault(label, {})[split] = {
                "acc0": zero, "worst_angle": worst_angle, "worst": worst,
                "drop_to_worst": None if zero is None else zero - worst,
                "mean_rotated": mean(v for _, v in nonzero) if nonzero else None,
                "at": at, "peaks": peaks[:3],
                "small_angles": _circular_mean(angles, acc, 10, 20),
                "robust_classes": [(classes[c], class_mean[c]) for c in ranked[:2]],
                "fragile_classes": [(classes[c], class_mean[c]) for c in ranked[-2:][::-1]],
                "mean_confidence0": dict(zip([a % 360 for a in angles],
                                             entry[split]["confidence"])).get(0.0),
                "confidence_worst": entry[split]["confidence"][angles.index(worst_angle)],
            }
    base, aug = rot["models"].get("resnet"), rot["models"].get("resnet-rotaug")
    if base and aug:
        s = rot["splits"][0]
        b, a = facts["models"]["resnet"][s], facts["models"]["resnet-rotaug"][s]
        facts["augmentation"] = {
            "split": s, "cost_at_0": (b["acc0"] or 0) - (a["acc0"] or 0),
            "gain_mean_rotated": (a["mean_rotated"] or 0) - (b["mean_rotated"] or 0),
            "gain_worst": a["worst"] - b["worst"],
        }
    return facts


def shuffle_facts(sh: dict) -> dict:
    runs = sh["runs"]

    def get(model, shuffled):
        return next((r for r in runs.values() if r["model"] == model and r["shuffled"] == shuffled),
                    None)

    out: dict = {"epochs": sh["epochs"]}
    for model in ("resnet", "mlp"):
        o, s = get(model, False), get(model, True)
        if o and s:
            out[model] = {"original": o["test_acc"], "shuffled": s["test_acc"],
                          "drop": o["test_acc"] - s["test_acc"],
                          "relative_drop": (o["test_acc"] - s["test_acc"]) / o["test_acc"]
                          if o["test_acc"] else None}
    if "resnet" in out and "mlp" in out:
        out["cnn_loses_more"] = out["resnet"]["drop"] > out["mlp"]["drop"]
        out["best_shuffled"] = ("resnet" if out["resnet"]["shuffled"] >= out["mlp"]["shuffled"]
                                else "mlp")
        out["best_original"] = ("resnet" if out["resnet"]["original"] >= out["mlp"]["original"]
                                else "mlp")
    return out
