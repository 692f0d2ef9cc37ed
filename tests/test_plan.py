"""The plan before the work: --plan trains nothing, and its list of runs is what the command
then trains or reuses."""
import re

from typer.testing import CliRunner

from reportgen.cli import app

from helpers import overrides_to_args

runner = CliRunner()


def _planned(output: str) -> dict[str, str]:
    """run directory name -> action, from the plan's lines."""
    return {m.group(2): m.group(1).strip() for m in
            re.finditer(r"^  (train |reuse |resume) (\S+)", output, flags=re.M)}


def test_plan_lists_the_runs_then_trains_exactly_those(tiny):
    overrides, out = tiny
    args = [*overrides_to_args(overrides), "--seeds", "2"]
    r = runner.invoke(app, ["all", *args, "--plan"])
    assert r.exit_code == 0, r.output
    assert not (out / "runs").exists() and not (out / "report.pdf").exists()  # nothing trained
    first = _planned(r.stdout)
    head = r.stdout.splitlines()[0]
    assert head.startswith(f"plan: {len(first)} runs to train")
    assert re.search(r"; (about|under) [0-9.]+ (s|min)", head), head
    # resnet, resnet-rotaug, resnet-shuffled, mlp, mlp-shuffled: two seeds each
    assert len(first) == 10 and set(first.values()) == {"train"}
    r = runner.invoke(app, ["all", *args])
    assert r.exit_code == 0, r.output
    trained = {p.name for p in (out / "runs").iterdir()}
    assert trained == set(first)
    # The estimate beside the time of the same work; the figures and report apart.
    assert re.search(r"the plan estimated [^,]+ for training and sweeps, which took [^(]+ "
                     r"\(then figures and report [^)]+\)", r.output), r.output[-400:]
    # Every run trains once, before the studies, which then use it without advice to retrain.
    assert r.output.count("evaluating best.ckpt") == 10
    # Part 1 uses 2 runs, Part 2 4 (plain and augmented), Part 3 8 (the CNN and the MLP on
    # original and shuffled pixels).
    assert r.output.count("trained above: ") == 2 + 4 + 8 and "pass --retrain" not in r.output
    from reportgen.training import sidebyside

    def no_training(*a, **k):
        raise AssertionError("timed training steps with every run reused")

    real, sidebyside.throughput = sidebyside.throughput, no_training
    try:  # every run reused: only the sweeps' evaluation is timed
        r = runner.invoke(app, ["all", *args, "--plan"])
    finally:
        sidebyside.throughput = real
    assert r.exit_code == 0, r.output
    assert "planning: timing the evaluation of 1 model(s)" in r.output  # both ResNets
    again = _planned(r.stdout)
    assert set(again) == trained and set(again.values()) == {"reuse"}
    assert "nothing to train" in r.stdout.splitlines()[0] or "0 runs to train" in r.stdout


def test_study_plan_names_its_own_runs(tiny):
    overrides, out = tiny
    r = runner.invoke(app, ["shuffle", *overrides_to_args(overrides), "--plan"])
    assert r.exit_code == 0, r.output
    names = _planned(r.stdout)
    assert {n.rsplit("-", 1)[0] for n in names} == {"resnet", "resnet-shuffled", "mlp",
                                                   "mlp-shuffled"}
    assert not (out / "runs").exists()


def test_plan_shows_side_by_side_groups_and_training_forms_them(tiny):
    """train.side_by_side = 4 with two seeds: Part 3's CNN on original and shuffled pixels
    is one group of four runs, its MLP another; the plan says so and training does it."""
    import json

    overrides, out = tiny
    args = [*overrides_to_args(overrides), "--seeds", "2", "--set", "train.side_by_side=4"]
    r = runner.invoke(app, ["shuffle", *args, "--plan"])
    assert r.exit_code == 0, r.output
    lines = [line for line in r.stdout.splitlines() if line.startswith("  train ")]
    assert len(lines) == 8 and all("4 runs side by side" in line for line in lines)
    r = runner.invoke(app, ["shuffle", *args])
    assert r.exit_code == 0, r.output
    assert r.output.count("training 4 runs side by side") == 2
    together = [json.loads((d / "results.json").read_text())["side_by_side"]
                for d in (out / "runs").iterdir()]
    assert together == [4] * 8


def test_plan_groups_runs_as_all_trains_them(tiny):
    """`all` trains every study's runs in one call before the studies run, so same-shaped
    runs of different studies share a group: Part 1's ResNet seeds, Part 2's augmented
    ResNet's and Part 3's shuffled CNN's are one group of six (Part 3's CNN on original
    pixels is Part 1's run here, the same settings), the MLPs on original and shuffled pixels
    one of four. Study by study, Part 1's seeds would have finished before Part 2 asked for
    its model. The plan shows exactly the groups that training then forms."""
    import json

    overrides, out = tiny
    args = [*overrides_to_args(overrides), "--seeds", "2", "--set", "train.side_by_side=8"]
    r = runner.invoke(app, ["all", *args, "--plan"])
    assert r.exit_code == 0, r.output
    planned = {m.group(1): int(m.group(2)) for m in re.finditer(
        r"^  train  (\S+) .* \(its share: (\d+) runs side by side\)$", r.stdout, flags=re.M)}
    assert len(planned) == 10
    r = runner.invoke(app, ["all", *args])
    assert r.exit_code == 0, r.output
    for name, k in planned.items():
        assert json.loads((out / "runs" / name / "results.json").read_text())["side_by_side"] == k
    assert {name.rsplit("-", 1)[0]: k for name, k in planned.items()} == {
        "resnet": 6, "resnet-rotaug": 6, "resnet-shuffled": 6, "mlp": 4, "mlp-shuffled": 4}
    assert r.output.count("training 6 runs side by side") == 1
    # The ResNets and the MLP all widen: the appendix names that layout alone.
    html = " ".join((out / "report.html").read_text().split())
    assert "as one computation (one network whose layers are grouped convolutions" in html
    assert "vectorised" not in html


def test_plan_times_evaluation_on_at_most_the_largest_evaluation_set(tiny, monkeypatch):
    """train.eval_batch_size = 100000 made the plan score 200,000 synthetic images in one
    pass, and the kernel's OOM killer ended the command; a batch never needs more images than
    the largest set a study evaluates (CIFAR-10's 10,000 test images)."""
    from reportgen import bench, plan

    made = []
    real = bench._synthetic
    monkeypatch.setattr(bench, "_synthetic", lambda n, seed=0: made.append(n) or real(n, seed))
    # Not scored here: a regression must fail this test, not feed 200,000 images to a model.
    from reportgen import evaluation

    monkeypatch.setattr(evaluation, "score", lambda module, x, y, bs, **kw: None)
    overrides, out = tiny
    r = runner.invoke(app, ["train", "--plan", *overrides_to_args(
        {**overrides, "train.eval_batch_size": 100_000})])
    assert r.exit_code == 0, r.output
    assert made and max(made) == plan.LARGEST_EVAL_SET == 10_000


def test_a_plan_refuses_what_training_would_refuse(tiny):
    """--subset 1 at batch 10: the plan printed "1 epoch x 1 images" and an estimate, then the
    training it promised stopped on "fewer than one batch". Now the plan says so itself, and
    `all` stops before it trains anything."""
    overrides, out = tiny
    for command in (["train", "--plan"], ["all"]):
        r = runner.invoke(app, [*command, *overrides_to_args(overrides), "--subset", "9"])
        assert r.exit_code == 2, r.output
        assert ("error: 9 training images are fewer than one batch of 10: use a larger --subset "
                "or a smaller batch (--set train.batch_size=9)") in r.output
        assert "train images/s" not in r.output and not (out / "runs").exists()


def test_plan_lines_say_small_counts_and_times_plainly():
    from pathlib import Path

    from reportgen.plan import Plan, PlannedRun, format_plan

    runs = [PlannedRun("resnet", 42, Path("runs/resnet-1"), "train", 1, 500, seconds=0.01),
            PlannedRun("mlp", 42, Path("runs/mlp-1"), "train", 100, 45_000, seconds=95.0)]
    head, tiny, big = format_plan(Plan(runs, evaluations=3_600, seconds=95.01, device="cpu"))
    assert head.startswith("plan: 2 runs to train (4.50 M training images), 0 to reuse")
    assert ", 3,600 image evaluations in sweeps; about 1 min 35 s on cpu" in head
    assert tiny.endswith("1 epoch x 500 images, under 0.1 s")  # not "about under 0.1 s"
    assert big.endswith("100 epochs x 45,000 images, about 1 min 35 s")
    head = format_plan(Plan(runs[:1], seconds=0.01, device="cpu"))[0]
    assert head == "plan: 1 run to train (500 training images), 0 to reuse; under 0.1 s on cpu"


def test_plan_downloads_nothing_and_says_the_command_would(tiny, tmp_path, monkeypatch):
    """--plan without data used to start torchvision's 170 MB download (offline: an error)."""
    import torchvision.datasets.cifar as tvc

    overrides, out = tiny
    overrides = {k: v for k, v in overrides.items() if k not in ("data.source", "data.val_size")}
    overrides["data.val_size"] = 5000
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REPORTGEN_DATA", raising=False)

    def no_download(*a, **k):
        raise AssertionError("a plan downloaded CIFAR-10")

    monkeypatch.setattr(tvc, "download_and_extract_archive", no_download)
    r = runner.invoke(app, ["train", *overrides_to_args(overrides), "--plan"])
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "data").exists() and not (out / "runs").exists()
    assert "CIFAR-10 is not in data yet: the command first downloads it" in r.stdout
    # The sizes the download will give: 50,000 less the 5,000 held out for validation.
    assert re.search(r"^  train  resnet-\.\.\. +seed 42 +1 epoch x 45,000 images", r.stdout,
                     flags=re.M), r.stdout
    # Settings the real data would refuse are refused before any download, as in a run.
    overrides["data.subset"] = 46000
    r = runner.invoke(app, ["train", *overrides_to_args(overrides), "--plan"])
    assert r.exit_code != 0 and "data.subset = 46000 is more than the 45000" in r.output
    # Without --plan the command does download (here: the stand-in refuses it).
    del overrides["data.subset"]
    r = runner.invoke(app, ["train", *overrides_to_args(overrides)])
    assert isinstance(r.exception, AssertionError), r.output
