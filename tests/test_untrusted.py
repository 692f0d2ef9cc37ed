"""Untrusted files: a planted checkpoint or cache never runs code. Each place that reads one
gets a pickle whose `__reduce__` would write a marker file; the marker must never appear."""
import json
import pathlib

import pytest
import torch
from typer.testing import CliRunner

from reportgen.cli import app

from helpers import only_run, overrides_to_args

runner = CliRunner()


class Payload:
    """Unpickling this with full pickle writes `marker`: what an attacker's file would do."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.write_text, (self.marker, "code ran"))


def plant(path: pathlib.Path, marker: pathlib.Path, around: dict | None = None) -> None:
    """A file that looks like a checkpoint (or cache) with the payload inside."""
    torch.save({**(around or {}), "payload": Payload(marker)}, path)


@pytest.fixture
def trained(tiny):
    overrides, out = tiny
    r = runner.invoke(app, ["train", *overrides_to_args(overrides)])
    assert r.exit_code == 0, r.output
    return overrides, out, only_run(out)


@pytest.mark.parametrize("which", ["last.ckpt", "best.ckpt"])
def test_planted_checkpoint_in_an_unfinished_run_runs_nothing(trained, tmp_path, which):
    overrides, out, run = trained
    (run / "results.json").unlink()  # unfinished: the next command resumes from a checkpoint
    if which == "best.ckpt":
        (run / "checkpoints" / "last.ckpt").unlink()
    marker = tmp_path / "pwned"
    good = torch.load(run / "checkpoints" / which, weights_only=True)
    plant(run / "checkpoints" / which, marker, good)
    r = runner.invoke(app, ["train", *overrides_to_args(overrides)])
    assert not marker.exists()
    assert r.exit_code == 2 and f"{which} is damaged or not a reportgen checkpoint" in r.output


def test_planted_checkpoint_option_runs_nothing(tiny, tmp_path):
    overrides, _ = tiny
    marker, ckpt = tmp_path / "pwned", tmp_path / "model.ckpt"
    plant(ckpt, marker)
    r = runner.invoke(app, ["rotation", *overrides_to_args(overrides), "--checkpoint", str(ckpt)])
    assert not marker.exists()
    assert r.exit_code == 2 and "model.ckpt is damaged or not a reportgen checkpoint" in r.output


def test_lightning_resume_path_loads_weights_only(tmp_path):
    """`fit(ckpt_path=...)` reads the checkpoint again through the run's CheckpointIO."""
    from reportgen.training import VerifiedCheckpointIO

    marker, ckpt = tmp_path / "pwned", tmp_path / "last.ckpt"
    plant(ckpt, marker, {"state_dict": {}, "epoch": 0})
    with pytest.raises(Exception):
        VerifiedCheckpointIO().load_checkpoint(ckpt)
    assert not marker.exists()


def test_planted_data_cache_runs_nothing_and_is_rebuilt(trained, tmp_path):
    overrides, out, _ = trained
    cache = next((out / "cache").glob("cifar10-*.pt"))
    blob = torch.load(cache, weights_only=True)
    marker = tmp_path / "pwned"
    plant(cache, marker, blob)
    r = runner.invoke(app, ["train", *overrides_to_args(overrides)])
    assert r.exit_code == 0, r.output
    assert not marker.exists()
    assert "is unusable" in r.output and "reusing finished run" in r.output
    json.loads(next((out / "runs").iterdir()).joinpath("results.json").read_text())
