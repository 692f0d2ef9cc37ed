"""The discussion's facts, computed by each study from crafted results files."""
import pytest

from reportgen.analysis import circular_peaks, mean_in_range
from reportgen.experiments import get_study

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def rot_result():
    angles = [0.0, 90.0, 180.0, 270.0]
    plain = [0.8, 0.2, 0.5, 0.25]
    aug = [0.6, 0.55, 0.58, 0.56]

    def per_class(acc, best):  # one class robust, the others follow the overall accuracy
        return [[1.0 if c == best else a for c in range(10)] for a in acc]

    def entry(acc, aug_deg, best, role):
        return {"aug_degrees": aug_deg, "role": role, "title": role, "val": {
            "accuracy": acc, "confidence": [0.9, 0.7, 0.8, 0.7], "per_class": per_class(acc, best)}}

    return {"angles": angles, "splits": ["val"], "classes": CLASSES,
            "models": {"resnet": entry(plain, 0.0, 6, "plain"),
                       "resnet-rotaug": entry(aug, 180.0, 1, "augmented")}}


def test_rotation_facts():
    f = get_study("rotation").facts(rot_result())
    b = f["models"]["resnet"]["val"]
    assert b["acc0"] == 0.8 and b["worst"] == 0.2 and b["worst_angle"] == 90.0
    assert b["drop_to_worst"] == pytest.approx(0.6)
    assert b["peaks"] == [(180.0, 0.5)]  # accuracy comes back at 180 degrees
    assert b["mean_rotated"] == pytest.approx((0.2 + 0.5 + 0.25) / 3)
    assert (b["rotated_from"], b["rotated_to"]) == (90.0, 270.0)
    assert b["robust_classes"][0][0] == "frog" and b["robust_classes"][0][1] == 1.0
    assert b["confidence_worst"] == 0.7 and b["mean_confidence0"] == 0.9
    assert f["angle_step"] == 90.0 and f["aug_degrees"] == 180.0 and f["chance"] == 0.1
    assert (f["plain"], f["augmented"]) == ("resnet", "resnet-rotaug")
    assert f["split_styles"] == [("val", "solid")]
    a = f["augmentation"]
    assert a["cost_at_0"] == pytest.approx(0.2)
    assert a["gain_worst"] == pytest.approx(0.55 - 0.2)


def test_chance_follows_the_classes():
    r = rot_result()
    r["classes"] = CLASSES[:5]
    for e in r["models"].values():
        e["val"]["per_class"] = [row[:5] for row in e["val"]["per_class"]]
    assert get_study("rotation").facts(r)["chance"] == 0.2


def test_shuffle_facts():
    def run(model, shuffled, acc):
        return {"model": model, "title": model.upper(), "shuffled": shuffled, "test_acc": acc,
                "parameters": 1}

    f = get_study("shuffle").facts({"epochs": 10, "mlp": {"optimizer": "adam"}, "runs": {
        "resnet": run("resnet", False, 0.8), "resnet-shuffled": run("resnet", True, 0.5),
        "mlp": run("mlp", False, 0.52), "mlp-shuffled": run("mlp", True, 0.51)}})
    assert f["cnn"]["drop"] == pytest.approx(0.3) and f["cnn"]["title"] == "RESNET"
    assert f["cnn"]["relative_drop"] == pytest.approx(0.375)
    assert f["mlp"]["drop"] == pytest.approx(0.01)
    assert f["cnn_loses_more"] and f["best_shuffled"] == "mlp" and f["best_original"] == "cnn"
    assert f["mlp_optimizer"] == "Adam"


def test_peaks_and_ranges():
    angles = [0, 45, 90, 135, 180, 225, 270, 315]
    acc = [0.9, 0.3, 0.4, 0.2, 0.6, 0.2, 0.12, 0.3]
    assert circular_peaks(angles, acc, floor=0.15) == [(180, 0.6), (90, 0.4)]  # not 315: 0° is higher
    assert circular_peaks(angles, acc, floor=0.5) == [(180, 0.6)]
    assert mean_in_range(angles, acc, 40, 100) == pytest.approx(0.35)
    assert mean_in_range(angles, acc, 10, 20) is None
