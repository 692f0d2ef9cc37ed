"""Part 2 end to end on tiny data: the sweep's files, its consistency, its figures, bad input."""
import json
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from reportgen.cli import app

from helpers import overrides_to_args, tiny_overrides, write_image_folder

runner = CliRunner()


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """One tiny `reportgen rotation` (two trainings and the sweep), shared by the tests that
    only read its files."""
    tmp = tmp_path_factory.mktemp("rotation")
    folder = write_image_folder(tmp / "data")
    out = tmp / "out"
    overrides = tiny_overrides(folder, out)
    r = runner.invoke(app, ["rotation", *overrides_to_args(overrides)])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "practical2" / "rotation.json").read_text())
    return out, res, r.output, overrides, folder


def test_sweep_files_are_complete(swept):
    out, res, output, _, _ = swept
    assert res["angles"] == [0, 90, 180, 270]
    assert set(res["models"]) == {"resnet", "resnet-rotaug"}
    assert res["interpolation"] == "bilinear" and res["fill"] == "mean"
    for entry in res["models"].values():
        assert Path(entry["checkpoint"]).is_file()
        for split in ("val", "test"):
            assert len(entry[split]["accuracy"]) == 4
            assert len(entry[split]["per_class"]) == 4
            assert all(0 <= c <= 1 for c in entry[split]["confidence"])
    rows = (out / "practical2" / "rotation.csv").read_text().splitlines()
    assert rows[0].startswith("model,split,angle,accuracy,seeds,accuracy_sd,mean_confidence,acc_airplane")
    assert len(rows) == 1 + 2 * 2 * 4
    assert "resnet (val) 0°:" in output
    val = res["models"]["resnet"]["val"]["accuracy"]
    worst = min((a for a in res["angles"] if a % 360), key=lambda a: val[res["angles"].index(a)])
    assert f"worst {worst:g}°: {val[res['angles'].index(worst)]:.3f}" in output
    # The comparison model really trained with rotations.
    cfg = json.loads((Path(res["models"]["resnet-rotaug"]["run_dir"]) / "config.json").read_text())
    assert cfg["train"]["augment"]["rotate_degrees"] == 180


def test_zero_degrees_equals_plain_validation_accuracy(swept):
    out, res, _, _, _ = swept
    for label, entry in res["models"].items():
        plain = json.loads((Path(entry["run_dir"]) / "results.json").read_text())
        assert entry["val"]["accuracy"][0] == plain["val_acc"]
        assert entry["test"]["accuracy"][0] == plain["test_acc"]
        assert entry["val"]["per_class"][0] == plain["val_per_class"]


def test_per_class_accuracies_average_to_overall(swept, tmp_path):
    from reportgen.config import DataConfig
    from reportgen.data import load_cifar10, make_splits

    out, res, _, _, folder = swept
    c = DataConfig(source=str(folder), partial=True, cache_dir=str(tmp_path / "c"), val_size=10)
    s = make_splits(load_cifar10(c, env={}), c)
    counts = torch.bincount(s.val_y, minlength=10).tolist()
    for entry in res["models"].values():
        for i, acc in enumerate(entry["val"]["accuracy"]):
            pc = entry["val"]["per_class"][i]
            weighted = sum(a * n for a, n in zip(pc, counts) if n) / sum(counts)
            assert weighted == pytest.approx(acc)


def test_figures_are_written(swept):
    out, res, _, _, _ = swept
    for name in ("rotation_accuracy", "rotation_per_class", "rotation_examples"):
        for ext in ("png", "svg"):
            f = out / "figures" / "practical2" / f"{name}.{ext}"
            assert f.is_file() and f.stat().st_size > 1000, f
    # The legend names each model once (its colour) and each split once (its line style):
    # one entry per model and split made 13 lines for six models.
    svg = (out / "figures" / "practical2" / "rotation_accuracy.svg").read_text()
    legend = re.findall(r"<text [^>]*>([^<]*)</text>", svg)
    assert res["splits"] == ["val", "test"]
    for title in ("ResNet", "ResNet + rotation augmentation", "validation images",
                  "test images", "chance (10%)"):
        assert legend.count(title) == 1, (title, legend)
    assert not any("(validation)" in t or "(test)" in t for t in legend)


def test_single_checkpoint_sweep(swept):
    """In the study's own output folder: it used to replace Part 2's rotation.json, after which
    the report described the checkpoint (any model: an MLP, say) as the study's ResNet."""
    out, res, _, overrides, _ = swept
    study = (out / "practical2" / "rotation.json").read_bytes()
    ckpt = res["models"]["resnet"]["checkpoint"]
    r = runner.invoke(app, ["rotation", *overrides_to_args(overrides),
                            "--checkpoint", ckpt, "--angles", "45,0,360,-315"])
    assert r.exit_code == 0, r.output
    assert (out / "practical2" / "rotation.json").read_bytes() == study
    assert f"checkpoint sweep written to {out / 'practical2-checkpoint'}" in r.output
    assert (out / "figures" / "practical2-checkpoint" / "rotation_accuracy.png").is_file()
    one = json.loads((out / "practical2-checkpoint" / "rotation.json").read_text())
    # Each orientation once, in order: 360 is 0 and -315 is 45.
    assert list(one["models"]) == ["checkpoint"] and one["angles"] == [0, 45]
    # The plan counts the checkpoint's sweep (it said "nothing to train" and no sweep).
    swept_images = sum(one["data"][f"{s}_images"] for s in one["splits"]) * 2
    assert one["sweep_images"] == swept_images
    assert (f"plan: 0 runs to train (0 training images), 0 to reuse, {swept_images:,} image "
            "evaluations in sweeps; ") in r.output, r.output
    took = r"which took (under )?[0-9.]+ s\n"
    assert re.search(r"the plan estimated [^,]+ for training and sweeps, " + took, r.output)
    assert one["models"]["checkpoint"]["val"]["accuracy"][0] == res["models"]["resnet"]["val"]["accuracy"][0]


@pytest.mark.parametrize("args,message", [
    (["--angles", "0,ten"], "--angles '0,ten': give numbers"),
    (["--angles", "0,,10"], "--angles '0,,10' has an empty item: give numbers separated by commas"),
    (["--angles", "0,10,"], "--angles '0,10,' has an empty item"),
    (["--angles", "0,720"], "between -360 and 360"),
    (["--angles", ","], "non-empty list"),
    # Only the upright images: the report compared "rotated angles" of which there were none.
    (["--angles", "0,360,-360"], "use at least one angle other than 0 (0° is always swept"),
    (["--set", "rotation.interpolation=\"cubic\""], "bilinear or nearest"),
    # Quoted in part: a 5,000-character value made a 5,000-character error line.
    (["--angles", "x" * 5000], "--angles 'xxxxxxxxxxxx"),
    (["--angles", ",".join(str(k / 20) for k in range(7201))],  # 0.05-degree steps
     "rotation.angles holds 7,200 distinct angles: use at most 3,600 (0.1-degree steps)"),
])
def test_bad_angles_fail_before_work(tiny, args, message):
    overrides, out = tiny
    r = runner.invoke(app, ["rotation", *overrides_to_args(overrides), *args])
    assert r.exit_code == 2 and message in r.output
    assert len(r.output.strip().splitlines()[-1]) < 400
    assert not (out / "runs").exists()


def test_bad_checkpoints(tiny, tmp_path, monkeypatch):
    overrides, out = tiny
    r = runner.invoke(app, ["rotation", *overrides_to_args(overrides), "--checkpoint",
                            str(tmp_path / "missing.ckpt")])
    assert r.exit_code == 2 and "missing.ckpt does not exist" in r.output
    monkeypatch.setenv("HOME", str(tmp_path))  # a quoted '~/...' is the home folder too
    r = runner.invoke(app, ["rotation", *overrides_to_args(overrides), "--checkpoint",
                            "~/missing.ckpt"])
    assert r.exit_code == 2 and f"{tmp_path / 'missing.ckpt'} does not exist" in r.output
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"\x00" * 100)
    r = runner.invoke(app, ["rotation", *overrides_to_args(overrides), "--checkpoint", str(junk)])
    # The reason in words, and advice about the file named: retraining would not change it.
    advice = ("pass a checkpoint that `reportgen train` wrote, e.g. "
              "OUT/runs/<run>/checkpoints/best.ckpt")
    assert r.exit_code == 2 and ("junk.ckpt is damaged or not a reportgen checkpoint (not a file "
                                 f"that torch.save wrote): {advice}") in r.output
    empty = tmp_path / "empty.ckpt"
    empty.touch()
    r = runner.invoke(app, ["rotation", *overrides_to_args(overrides), "--checkpoint", str(empty)])
    assert r.exit_code == 2 and f"(the file is empty): {advice}" in r.output
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "weights": torch.zeros(3)}, foreign)
    r = runner.invoke(app, ["rotation", *overrides_to_args(overrides), "--checkpoint", str(foreign)])
    assert r.exit_code == 2 and ("foreign.ckpt is damaged or not a reportgen checkpoint (it lacks "
                                 f"'hyper_parameters'): {advice}") in r.output
    torch.save([1, 2], foreign)
    r = runner.invoke(app, ["rotation", *overrides_to_args(overrides), "--checkpoint", str(foreign)])
    assert r.exit_code == 2 and "(TypeError: list indices must be integers" in r.output
    # `--checkpoint "$CKPT"` with CKPT unset: named as empty, not as the folder ".".
    r = runner.invoke(app, ["rotation", *overrides_to_args(overrides), "--checkpoint", " "])
    assert r.exit_code == 2 and "error: --checkpoint ' ' is empty: name a checkpoint file" in r.output


def test_a_checkpoint_of_another_number_of_classes_is_refused(tiny, tmp_path):
    """A consistent checkpoint of a 5-class network was swept against CIFAR-10's 10 labels."""
    from reportgen.models import build_model

    overrides, out = tiny
    params = {"num_classes": 5, "num_blocks": [1, 1], "c_hidden": [4, 8]}
    model = build_model("preact_resnet", **params)
    ckpt = tmp_path / "five.ckpt"
    torch.save({"pytorch-lightning_version": "2.6.0",
                "hyper_parameters": {"model_name": "preact_resnet", "model_params": params,
                                     "optim": {}, "augment": {}},
                "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, ckpt)
    r = runner.invoke(app, ["rotation", *overrides_to_args(overrides), "--checkpoint", str(ckpt)])
    assert r.exit_code == 2, r.output
    assert ("five.ckpt holds a model of 5 classes, but CIFAR-10 has 10: pass a checkpoint "
            "trained on CIFAR-10") in r.output
    assert not (out / "practical2" / "rotation.json").exists()


def test_the_upright_images_are_always_swept():
    """Without 0° the report spoke of "its value at 0°", which no sweep had measured."""
    from reportgen.cli import load_config

    assert load_config(None, sets=["rotation.angles=[45]"]).rotation.angles == (0.0, 45.0)
    assert load_config(None, sets=["rotation.angles=[359.9, 90]"]).rotation.angles == (
        0.0, 90.0, 359.9)


def _facts_of(pred, labels, n_classes=4):
    """model_facts of one seed's predictions, angles 0, 90, 180 and 270 x images."""
    import numpy as np

    from reportgen.experiments.rotation import model_facts

    pred = np.asarray(pred)[None]  # one seed
    correct = (pred == labels).astype(float)
    classes = [f"c{k}" for k in range(n_classes)]
    entry = {"accuracy": correct[0].mean(1).tolist(),
             "per_class": [[float(correct[0, i][labels == c].mean()) for c in range(n_classes)]
                           for i in range(4)],
             "confidence": [0.5] * 4}
    return model_facts([0.0, 90.0, 180.0, 270.0], classes, entry, correct, labels, pred)


def test_a_favoured_class_and_an_unsettled_ranking_are_said():
    """A class's accuracy is its recall: a network that calls most rotated images by one
    class scores well on that class (the quick preset's plain network called 22% of them
    frogs, which ranked frog best). Such a class is named with its share of predictions,
    and a ranking whose intervals overlap is not called "best" and "most fragile"."""
    import numpy as np

    labels = np.repeat(np.arange(4), 200)
    # Upright: right on every image. Rotated: 90% of classes 0 and 1 right, 10% of 2 and 3,
    # the wrong answers swapped within each pair, so every class is predicted as often as it
    # occurs.
    right = (np.arange(labels.size) % 200) < np.array([180, 180, 20, 20])[labels]
    rotated = np.tile(np.where(right, labels, labels ^ 1), (3, 1))
    assert (np.bincount(rotated.ravel()) == 600).all()
    fair = _facts_of(np.vstack([labels, rotated]), labels)
    assert fair["classes_separated"] and fair["favoured_classes"] == []
    # Rotated: everything is called c0.
    biased = _facts_of(np.vstack([labels, np.zeros((3, labels.size), int)]), labels)
    [(name, share, truth)] = biased["favoured_classes"]
    assert name == "c0" and share["diff"] == 1.0 and truth == 0.25
    # Two images per class: the same accuracies, intervals too wide to rank the classes.
    few = np.concatenate([np.flatnonzero(labels == c)[:2] for c in range(4)])
    small = _facts_of(np.vstack([labels, rotated])[:, few], labels[few])
    assert not small["classes_separated"]


def test_a_checkpoint_sweeps_name_fits_a_folder_name():
    from reportgen.cli import load_config
    from reportgen.experiments import get_study

    rotation = get_study("rotation")
    cfg = load_config(None, sets=[f'name="{"é" * 50}"'])  # 100 bytes, the most a name may have
    assert rotation.configured(cfg).name == cfg.name
    named = rotation.configured(cfg, checkpoint="best.ckpt").name
    assert named == "é" * 44 + "-checkpoint" and len(named.encode()) <= 100


def test_the_augmented_model_must_rotate_more_than_the_plain_one(tiny):
    """With train.augment.rotate_degrees = 180 the "rotation-augmented" model trained exactly as
    the plain one, and the report said it had an additional rotation: refused before any work.
    A narrower range for the plain network is allowed, and the report says what replaced what."""
    from reportgen.experiments import get_study
    from reportgen.report import Numbering, environment

    overrides, out = tiny
    for command in ("all", "rotation"):
        r = runner.invoke(app, [command, *overrides_to_args(
            {**overrides, "train.augment.rotate_degrees": 180.0})])
        assert r.exit_code == 2, r.output
        assert r.output.startswith("error: rotation.aug_degrees = 180 is not more than "
                                   "train.augment.rotate_degrees = 180")
        assert not out.exists()
    r = runner.invoke(app, ["rotation", *overrides_to_args(
        {**overrides, "train.augment.rotate_degrees": 180.0, "rotation.models": ["plain"]}),
        "--plan"])
    assert r.exit_code == 0, r.output

    p4 = {"num_classes": 10, "num_blocks": [1, 1], "c_hidden": [2, 4]}
    r = runner.invoke(app, ["rotation", *overrides_to_args(
        {**overrides, "train.augment.rotate_degrees": 30.0, "rotation.splits": ["val"],
         "rotation.models": ["plain", "augmented", "equivariant"],
         "rotation.equivariant.params": p4})])
    assert r.exit_code == 0, r.output
    st = get_study("rotation")
    results = st.load(out / "practical2")
    module = environment().get_template(st.partial).make_module(
        {"st": st, "r": results, "f": st.facts(results), "page_limit": None,
         "numbering": Numbering(out / "figures" / "practical2")})
    text = " ".join(str(module.results()).split())
    assert ("but was trained with random rotations uniform in ±180° instead of the plain "
            "network's ±30°.") in text and "additional" not in text
    method = " ".join(str(module.method()).split())
    assert "the plain network's budget, schedule and augmentation (rotations in ±30°)." in method
