"""The discussion's facts, computed from crafted results files."""
import pytest

from reportgen.analysis import rotation_facts, shuffle_facts

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def rot_result():
    angles = [0.0, 90.0, 180.0, 270.0]
    plain = [0.8, 0.2, 0.5, 0.25]
    aug = [0.6, 0.55, 0.58, 0.56]

    def per_class(acc, best):  # one class robust, the others follow the overall accuracy
        return [[1.0 if c == best else a for c in range(10)] for a in acc]

    entry = lambda acc, aug_deg, best: {"aug_degrees": aug_deg, "val": {
        "accuracy": acc, "confidence": [0.9, 0.7, 0.8, 0.7], "per_class": per_class(acc, best)}}
    return {"angles": angles, "splits": ["val"], "classes": CLASSES,
            "models": {"resnet": entry(plain, 0.0, 6), "resnet-rotaug": entry(aug, 180.0, 1)}}


def test_rotation_facts():
    f = rotation_facts(rot_result())
    b = f["models"]["resnet"]["val"]
    assert b["acc0"] == 0.8 and b["worst"] == 0.2 and b["worst_angle"] == 90.0
    assert b["drop_to_worst"] == pytest.approx(0.6)
    assert b["peaks"] == [(180.0, 0.5)]  # accuracy comes back at 180 degrees
    assert b["mean_rotated"] == pytest.approx((0.2 + 0.5 + 0.25) / 3)
    assert b["robust_classes"][0][0] == "frog" and b["robust_classes"][0][1] == 1.0
    assert b["confidence_worst"] == 0.7 and b["mean_confidence0"] == 0.9
    assert f["angle_step"] == 90.0 and f["aug_degrees"] == 180.0 and f["chance"] == 0.1
    a = f["augmentation"]
    assert a["cost_at_0"] == pytest.approx(0.2)
    assert a["gain_worst"] == pytest.approx(0.55 - 0.2)


def test_shuffle_facts():
    run = lambda model, shuffled, acc: {"model": model, "shuffled": shuffled, "test_acc": acc}
    f = shuffle_facts({"epochs": 10, "runs": {
        "resnet": run("resnet", False, 0.8), "resnet-shuffled": run("resnet", True, 0.5),
        "mlp": run("mlp", False, 0.52), "mlp-shuffled": run("mlp", True, 0.51)}})
    assert f["resnet"]["drop"] == pytest.approx(0.3)
    assert f["resnet"]["relative_drop"] == pytest.approx(0.375)
    assert f["mlp"]["drop"] == pytest.approx(0.01)
    assert f["cnn_loses_more"] and f["best_shuffled"] == "mlp" and f["best_original"] == "resnet"
