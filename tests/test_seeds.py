"""Seeds: every model once per seed, each seed its own reusable run, and results that keep
every seed's numbers next to their mean and spread."""
import json

import pytest
from typer.testing import CliRunner

from reportgen.cli import app, load_config
from reportgen.config import ConfigError, ExperimentConfig
from reportgen.experiments.part1 import baseline_spec

from helpers import overrides_to_args

runner = CliRunner()


def test_seeds_option_picks_consecutive_seeds_for_every_model():
    cfg = load_config(None, seeds=3, sets=["train.seed=7"])
    assert cfg.train.run_seeds() == (7, 8, 9) and cfg.shuffle.mlp_seeds == (7, 8, 9)
    assert load_config(None).train.run_seeds() == (42,)
    with pytest.raises(ConfigError, match="--seeds 0"):
        load_config(None, seeds=0)
    with pytest.raises(ConfigError, match="distinct seeds"):
        load_config(None, sets=["train.seeds=[1, 1]"])
    with pytest.raises(ConfigError, match="train.seeds"):
        load_config(None, sets=["train.seeds=[-1]"])


def test_a_seed_is_its_own_run_and_the_seed_list_is_not_in_its_key():
    cfg = ExperimentConfig()
    spec = baseline_spec(cfg, "d")
    assert spec.for_seed(42).key() == spec.key()  # an old single-seed run is reused
    assert spec.for_seed(43).key() != spec.key()
    three = load_config(None, seeds=3)
    assert baseline_spec(three, "d").for_seed(42).key() == spec.key()


@pytest.mark.parametrize("args,message", [
    (["--seeds", "0"], "error: --seeds 0: use a positive number"),
    # Refused before the list of seeds is built: 10**12 of them would fill the memory.
    (["--seeds", str(10**12)], "error: --seeds 1000000000000: use at most 1000"),
    (["--set", "train.seed=4294967290", "--seeds", "7"], "goes past the largest seed"),
    (["--set", f"train.seeds={list(range(1001))}"], "at most 1000 distinct seeds"),
])
def test_cli_seeds_errors_are_one_line(args, message):
    r = runner.invoke(app, ["train", *args])
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_two_seeds_give_mean_spread_and_per_seed_values_everywhere(tiny):
    overrides, out = tiny
    r = runner.invoke(app, ["all", *overrides_to_args(overrides), "--seeds", "2"])
    assert r.exit_code == 0, r.output
    res = out / "practical2"
    part1 = json.loads((res / "part1.json").read_text())
    assert part1["seeds"] == [42, 43] and len(part1["per_seed"]) == 2
    assert part1["val_acc"] == pytest.approx(sum(s["val_acc"] for s in part1["per_seed"]) / 2)
    assert part1["test_acc_std"] is not None
    rot = json.loads((res / "rotation.json").read_text())
    for entry in rot["models"].values():
        assert entry["seeds"] == [42, 43] and len(entry["val"]["accuracy_per_seed"]) == 2
    shuf = json.loads((res / "shuffle.json").read_text())
    for run in shuf["runs"].values():
        assert run["seeds"] == [42, 43] and run["test_acc_std"] is not None
        assert len({e["run_dir"] for e in run["per_seed"]}) == 2
    # The rotation figure draws the seeds' band.
    svg = (out / "figures" / "practical2" / "rotation_accuracy.svg").read_text()
    assert "fill-opacity: 0.18" in svg
    html = " ".join((out / "report.html").read_text().split())
    assert "Over 2 seeds, the best checkpoints (epoch 1 of 1 for every seed) classify" in html
    # Run again with one seed: seed 42's runs are reused, nothing is trained.
    r = runner.invoke(app, ["all", *overrides_to_args(overrides)])
    assert r.exit_code == 0 and "epoch 1/1" not in r.output and "reusing finished run" in r.output
