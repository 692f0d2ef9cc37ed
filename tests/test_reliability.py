"""Faults a student meets the night before a deadline: each gives a clear message, and
nothing computed is lost."""
import io
import json
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from reportgen import data as D
from reportgen.cli import app
from reportgen.files import read_metrics

from helpers import only_run, overrides_to_args, tiny_overrides, write_image_folder

runner = CliRunner()


def cli(overrides, *extra):
    return runner.invoke(app, ["train", *overrides_to_args(overrides), *extra])


@pytest.fixture(scope="module")
def bigger_folder(tmp_path_factory):
    """Enough images that an epoch takes a few seconds: time to deliver a signal mid-run."""
    return write_image_folder(tmp_path_factory.mktemp("bigger") / "data", n_train=50)


def long_overrides(folder, out):
    return {**tiny_overrides(folder, out), "train.epochs": 4, "train.batch_size": 10,
            "train.progress_every": 5}


@pytest.fixture(scope="module")
def reference(bigger_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "out"
    r = cli(long_overrides(bigger_folder, out))
    assert r.exit_code == 0, r.output
    run = only_run(out)
    return read_metrics(run / "metrics.csv"), json.loads((run / "results.json").read_text())


def _start(overrides):
    cmd = [sys.executable, "-m", "reportgen.cli", "train", *overrides_to_args(overrides)]
    # A shell starts background jobs with SIGINT ignored (CI may run us that way), and a
    # child inherits that: give it the default disposition, as in a terminal.
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1],
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for_first_epoch(out: Path, proc, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        found = list(out.glob("runs/*/checkpoints/last.ckpt"))
        if found:
            return found[0]
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGKILL"])
def test_interrupted_training_resumes_to_the_same_result(sig, bigger_folder, reference, tmp_path):
    """Ctrl-C, SIGTERM or a killed process: the same command resumes from the last checkpoint
    and, on the CPU with a fixed seed, ends with the same metrics as an uninterrupted run."""
    out = tmp_path / "out"
    overrides = long_overrides(bigger_folder, out)
    proc = _start(overrides)
    _wait_for_first_epoch(out, proc)
    proc.send_signal(getattr(signal, sig))
    stdout, stderr = proc.communicate(timeout=120)
    run = only_run(out)
    if sig == "SIGKILL":
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 130, stderr
        last = stderr.strip().splitlines()[-1]
        assert last.startswith("error: training of") and "was interrupted" in last
        assert "run the same command again to resume" in last
        assert not (out / ".lock.owner").exists()
    assert not (run / "results.json").exists()
    r = cli(overrides)
    assert r.exit_code == 0, r.output
    assert "resuming" in r.output
    metrics, results = read_metrics(run / "metrics.csv"), json.loads((run / "results.json").read_text())
    ref_metrics, ref_results = reference
    assert metrics["epoch"] == ref_metrics["epoch"]
    for key in ("train_loss", "train_acc", "val_acc", "lr"):
        assert metrics[key] == pytest.approx(ref_metrics[key], rel=1e-5, abs=1e-6), key
    assert results["val_acc"] == ref_results["val_acc"]
    assert results["test_acc"] == ref_results["test_acc"]


def test_checkpoint_write_never_destroys_the_previous_one(tmp_path, monkeypatch):
    from reportgen.training import TrainingError, VerifiedCheckpointIO

    io_ = VerifiedCheckpointIO()
    target = tmp_path / "last.ckpt"
    io_.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 1}, target)
    good = target.read_bytes()

    def crash(obj, f, *a, **k):
        Path(f).write_bytes(b"half a checkp")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(TrainingError, match=r"could not write checkpoint .*last.ckpt.*No space left"):
        io_.save_checkpoint({"state_dict": {}, "epoch": 2}, target)
    assert target.read_bytes() == good and list(tmp_path.iterdir()) == [target]

    def silent_garbage(obj, f, *a, **k):  # a save that "succeeds" but wrote nothing usable
        Path(f).write_bytes(b"")

    monkeypatch.setattr(torch, "save", silent_garbage)
    with pytest.raises(TrainingError, match="could not write checkpoint"):
        io_.save_checkpoint({"state_dict": {}, "epoch": 2}, target)
    assert target.read_bytes() == good


def test_temporaries_of_killed_writers_are_removed_at_the_next_write(tmp_path):
    """A writer killed between writing and renaming left its `.NAME.tmpPID.EXT` for good (a
    177 MB one for the data cache); the next write into the folder removes those whose
    process is gone, and keeps those of live processes (a DDP worker's, its own)."""
    import os

    from reportgen.files import atomic_write_text

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = tmp_path / f".last.tmp-reportgen-{gone.pid}.ckpt"
    dead.write_bytes(b"half a checkpoint")
    dead_link = tmp_path / f".cache.tmp-reportgen-{gone.pid}"
    dead_link.symlink_to(tmp_path / "elsewhere")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        kept = [tmp_path / f".metrics.tmp-reportgen-{live.pid}.csv",
                tmp_path / f".x.tmp-reportgen-{os.getpid()}.png",
                # not names reportgen writes: a user's own files in an --out of theirs
                tmp_path / f".results.tmp{gone.pid}.json",
                tmp_path / f"results.tmp-reportgen-{gone.pid}.json", tmp_path / "last.ckpt"]
        for k in kept:
            k.write_text("keep")
        (tmp_path / f".dir.tmp-reportgen-{gone.pid}.d").mkdir()
        atomic_write_text(tmp_path / "results.json", "{}")
        assert not dead.exists() and not dead_link.is_symlink()
        assert all(k.read_text() == "keep" for k in kept)
        assert (tmp_path / f".dir.tmp-reportgen-{gone.pid}.d").is_dir()
        assert (tmp_path / "results.json").read_text() == "{}"
    finally:
        live.kill()
        live.wait()


def test_damaged_and_foreign_checkpoints(tiny):
    overrides, out = tiny
    assert cli({**overrides, "train.epochs": 2}).exit_code == 0
    run = only_run(out)
    (run / "results.json").unlink()  # as if the run had not finished
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:200])
    r = cli({**overrides, "train.epochs": 2})
    assert r.exit_code == 2
    assert "last.ckpt is damaged or not a reportgen checkpoint" in r.output
    assert "continue from" in r.output and "best.ckpt" in r.output
    last.unlink()  # the message's advice: continue from the best checkpoint
    r = cli({**overrides, "train.epochs": 2})
    assert r.exit_code == 0 and "best.ckpt" in r.output and (run / "results.json").is_file()

    (run / "results.json").unlink()
    mlp = {"state_dict": {}, "epoch": 0,
           "hyper_parameters": {"model_name": "mlp", "model_params": {}}}
    torch.save(mlp, run / "checkpoints" / "last.ckpt")
    r = cli({**overrides, "train.epochs": 2})
    assert r.exit_code == 2 and "belongs to another model (mlp)" in r.output


def test_divergence_stops_with_advice(tiny):
    overrides, out = tiny
    r = cli({**overrides, "train.epochs": 3, "optim.lr": 1e12})
    assert r.exit_code == 2
    assert "diverged in epoch 1" in r.output and "lower the learning rate" in r.output
    run = only_run(out)
    assert not (run / "checkpoints" / "best.ckpt").exists()  # a NaN model is never "best"
    assert not (run / "results.json").exists()


def test_divergence_advice_names_the_settings_behind_the_run():
    """The advice names the setting to change: Part 3's MLP takes its learning rate and
    weight decay from shuffle.mlp_lr and shuffle.mlp_weight_decay, and a weight decay that
    takes the whole weight away each step is the cause whatever the learning rate."""
    from dataclasses import replace

    from reportgen.config import load_experiment
    from reportgen.experiments.shuffle import shuffle_specs
    from reportgen.training.train import divergence_error

    def advice(spec, **optim):
        return str(divergence_error(replace(spec, optim=replace(spec.optim, **optim)), 3))

    specs = shuffle_specs(load_experiment(None, {}), "digest", torch.arange(1024))
    resnet, mlp = specs["resnet"], specs["mlp-shuffled"]
    assert advice(resnet, lr=0.5) == ("training of resnet diverged in epoch 3: the loss became "
                                      "NaN or infinite; lower the learning rate (optim.lr = "
                                      "0.5), e.g. --set optim.lr=0.05")
    assert advice(resnet, lr=1e20).endswith("(optim.lr = 1e+20), e.g. --set optim.lr=0.1")
    assert advice(mlp, lr=0.5).endswith("(shuffle.mlp_lr = 0.5), e.g. --set shuffle.mlp_lr=0.05")
    assert advice(mlp, lr=1e-3, weight_decay=1e30).endswith(
        "lower the weight decay (shuffle.mlp_weight_decay = 1e+30: each step takes 1e+27 times "
        "the weights away), e.g. --set shuffle.mlp_weight_decay=0.0001")
    both = advice(resnet, lr=10, weight_decay=5)
    assert "optim.weight_decay=0.0001, and the learning rate (optim.lr = 10)" in both
    assert "weight decay" not in advice(resnet, lr=10, weight_decay=1e-4)


def test_a_diverging_mlp_names_its_own_settings(tiny):
    overrides, out = tiny
    r = runner.invoke(app, ["shuffle", *overrides_to_args(
        {**overrides, "shuffle.mlp_optimizer": "sgd", "shuffle.mlp_weight_decay": 1e30})])
    assert r.exit_code == 2, r.output
    assert "training of mlp diverged in epoch 1" in r.output
    assert "--set shuffle.mlp_weight_decay=0.0001" in r.output and "optim.lr" not in r.output


def test_output_folder_not_writable_or_full(tiny, tmp_path, monkeypatch):
    overrides, out = tiny
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    r = cli({**overrides, "out_dir": str(blocker / "out")})
    assert r.exit_code == 2 and "a-file" in r.output and "--out" in r.output

    import shutil as _shutil

    from reportgen.training import rundir

    real = _shutil.disk_usage
    monkeypatch.setattr(rundir.shutil, "disk_usage",
                        lambda p: real(p)._replace(free=10 * 2**20))
    r = cli(overrides)
    assert r.exit_code == 2 and "only 10 MiB free" in r.output
    assert not list(out.glob("runs/*/checkpoints"))


HOLD_LOCK = """
import sys, time
from reportgen.files import OutputLock
sys.argv = ["reportgen", "all", "--config", "x.toml"]
with OutputLock({out!r}):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_two_processes_one_folder_and_a_killed_holder(tiny):
    """A second command refuses while another process holds the folder, naming it; once the
    holder is killed (SIGKILL: no clean-up), the kernel has released its lock and the next
    command takes it."""
    overrides, out = tiny
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK.format(out=str(out))],
                              stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[1])
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = cli(overrides)
        assert r.exit_code == 2
        assert (f"in use by another reportgen (pid {holder.pid}: reportgen all --config x.toml)"
                in r.output)
        assert not (out / "runs").exists()
    finally:
        holder.kill()
        holder.wait()
    assert (out / ".lock.owner").exists()  # the killed holder could not clean up
    r = cli(overrides)
    assert r.exit_code == 0, r.output
    assert not (out / ".lock.owner").exists()


HOLD_FIGURES = """
import sys, time
from reportgen.figures import figures_locked
with figures_locked({fig!r}):
    print("locked", flush=True)
    time.sleep(float(sys.argv[1]))
"""


def test_commands_that_draw_into_one_figures_folder_take_turns(tmp_path, monkeypatch):
    """Two output folders of one experiment share figures_dir/<name>: `all --out run1` and
    `all --out run2` finishing together drew into it at once. A second command now waits
    for the first (saying so), and after FIGURES_WAIT_S stops with one line."""
    from reportgen import figures as F

    fig = tmp_path / "figures" / "practical2"
    root = Path(__file__).resolve().parents[1]

    def hold(seconds):
        p = subprocess.Popen([sys.executable, "-c", HOLD_FIGURES.format(fig=str(fig)),
                              str(seconds)], stdout=subprocess.PIPE, text=True, cwd=root)
        assert p.stdout.readline().strip() == "locked"
        return p

    holder = hold(120)
    try:
        monkeypatch.setattr(F, "FIGURES_WAIT_S", 0.5)
        r = runner.invoke(app, ["figures", "--out", str(tmp_path / "run2"), "--set",
                                f"figures_dir={tmp_path / 'figures'}"])
        assert r.exit_code == 2 and "waiting for another reportgen that draws into" in r.output
        assert f"error: {fig} has been in use by another reportgen for 0 min" in r.output
    finally:
        holder.kill()
        holder.wait()
    holder, said = hold(1.5), []
    t0 = time.monotonic()
    try:
        with F.figures_locked(fig, log=said.append, wait_s=60):
            assert time.monotonic() - t0 > 1.0  # entered only once the holder let go
    finally:
        holder.kill()
        holder.wait()
    assert said == [f"waiting for another reportgen that draws into {fig} ..."]


def test_truncated_jpeg_is_named(image_folder):
    bad = image_folder / "train" / "dog" / "0003.png"
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(buf, "JPEG")
    bad.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(D.DataError, match=r"dog/0003.png is not a readable image"):
        D.read_image_folder(image_folder)


def test_empty_class_folder(image_folder):
    for f in (image_folder / "train" / "ship").iterdir():
        f.unlink()
    with pytest.raises(D.DataError, match="lacks class folder.*ship.*empty"):
        D.read_image_folder(image_folder)


def test_zip_member_escaping_is_refused(tmp_path):
    arc = tmp_path / "evil.zip"
    with zipfile.ZipFile(arc, "w") as z:
        z.writestr("../../outside.jpg", b"x")
    with pytest.raises(D.DataError, match="escape the extraction folder"):
        D.read_image_folder(arc)


def test_cache_for_another_source_is_not_used(image_folder, tmp_path):
    from reportgen.config import DataConfig

    c = DataConfig(source=str(image_folder), partial=True, cache_dir=str(tmp_path / "cache"),
                   val_size=10)
    first = D.load_cifar10(c, env={})
    cache = next((tmp_path / "cache").glob("*.pt"))
    blob = torch.load(cache, weights_only=True)
    blob["train_x"][0] ^= 0xFF  # the cached content no longer matches its checksum
    torch.save(blob, cache)
    msgs = []
    again = D.load_cifar10(c, env={}, log=msgs.append)
    assert any("does not match its checksum" in m for m in msgs)
    assert torch.equal(again.train_x, first.train_x)


@pytest.mark.parametrize("args,message", [
    (["--device", "tpu"], "train.device = 'tpu' is not allowed: use auto, cpu or gpu"),
    (["--epochs", "-2"], "train.epochs = -2"),
    (["--set", "train.val_every=\"often\""], "train.val_every must be an integer"),
    (["--set", "rotation.fill=\"white\""], "rotation.fill = 'white' is not allowed: use mean or black"),
    (["--set", "data.subset=-1"], "data.subset = -1"),
])
def test_bad_command_line_values(tiny, args, message):
    overrides, out = tiny
    r = cli(overrides, *args)
    assert r.exit_code == 2 and message in r.output
    assert not out.exists()


def test_more_devices_than_batches_is_refused_before_training(tiny):
    """Each DDP process trains on its share of the images: 70 over 8 processes left 9 each,
    less than a batch of 10, so nothing trained and the run ended in a missing last.ckpt."""
    import re

    overrides, out = tiny
    r = cli(overrides, "--devices", "8", "--plan")
    assert r.exit_code == 2, r.output
    n, share, most = map(int, re.search(
        r"(\d+) training images over 8 devices are (\d+) per device, fewer than one batch of "
        r"10: use at most --devices (\d+)", r.output).groups())
    assert share == -(-n // 8) < 10 and -(-n // most) >= 10 > -(-n // (most + 1))
    assert not list(out.glob("runs/*"))
    r = cli(overrides, "--devices", str(most), "--plan")
    assert r.exit_code == 0 and "1 run to train" in r.output, r.output
    assert cli(overrides, "--devices", str(most + 1), "--plan").exit_code == 2


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(tiny, tmp_path):
    """Lightning's own DDP (gloo) on the CPU: trains, agrees with one device, and only the
    main process writes the results."""
    overrides, out = tiny
    overrides = {**overrides, "train.epochs": 3, "train.batch_size": 5}
    single = cli(overrides)
    assert single.exit_code == 0, single.output
    one = json.loads((only_run(out) / "results.json").read_text())
    out2 = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "reportgen.cli", "train",
           *overrides_to_args({**overrides, "out_dir": str(out2)}),
           "--devices", "2", "--strategy", "ddp"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = list((out2 / "runs").iterdir())
    assert len(runs) == 1
    two = json.loads((runs[0] / "results.json").read_text())
    assert two["devices"] == 2 and two["strategy"] == "ddp"
    summaries = [l for l in proc.stdout.splitlines() if l.startswith("val_acc ")]
    assert len(summaries) == 1  # one summary line: rank 1 wrote and printed nothing
    assert proc.stderr.count("note: optim.milestones") == 1  # not once more from rank 1
    # The Method says how it trained: it said "batch size 5" and "AMD EPYC (1 threads)", as
    # if one process had trained with batches of 5.
    from reportgen.experiments import get_study
    from reportgen.files import read_json
    from reportgen.report import Numbering, environment

    st = get_study("part1")
    results = read_json(out2 / "practical2" / "part1.json", "train")
    module = environment().get_template(st.partial).make_module(
        {"st": st, "r": results, "f": st.facts(results),
         "numbering": Numbering(Path(overrides["figures_dir"]) / "practical2"),
         "page_limit": None})
    method = " ".join(str(module.method()).split())
    assert ("batch size 5 on each of the 2 processes, whose gradients are averaged (10 images "
            "per step)") in method, method
    assert "Training ran on 2 processes with Lightning&#39;s DDP, each on " in method, method
    # Expected noise: 2 x 5 images per step instead of 5, on 90 images for 3 epochs.
    assert abs(two["val_acc"] - one["val_acc"]) <= 0.5
    assert abs(two["test_acc"] - one["test_acc"]) <= 0.5
    assert len((runs[0] / "metrics.csv").read_text().splitlines()) == 4
    # Two seeds: two fits, and the worker process must join the second as well. It stopped
    # after the first, and the main process's second fit failed ("Connection closed by peer").
    out3 = tmp_path / "ddp-seeds"
    proc = subprocess.run([*cmd, "--seeds", "2", "--out", str(out3)], capture_output=True,
                          text=True, timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mean of 2 seeds" in proc.stdout
    assert len([r for r in (out3 / "runs").iterdir() if (r / "results.json").is_file()]) == 2


CTRL_C_IN_A_FINALIZER = """
import sys, time
import reportgen.figures as F
class Finalized:
    def __del__(self):
        raise KeyboardInterrupt  # Ctrl-C arriving while Python runs a finalizer
def draw_all(*a, **k):
    Finalized()  # dropped at once: its __del__ runs here
    time.sleep(5)  # the work the command went on with
    return []
F.draw_all = draw_all
from reportgen.cli import main
sys.argv = ["reportgen", *sys.argv[1:]]
main()
"""


def test_ctrl_c_inside_a_finalizer_still_stops_the_command(tmp_path):
    """Python cannot raise an interrupt out of a finalizer (a weakref callback or __del__,
    which matplotlib runs often): it printed "Exception ignored" and carried on, and
    `reportgen all` interrupted during its figures wrote the report and exited 0."""
    proc = subprocess.run([sys.executable, "-c", CTRL_C_IN_A_FINALIZER, "figures", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: interrupted")
    assert "files written" not in proc.stdout and "Exception ignored" not in proc.stderr


SIGTERM_IN_EVALUATION = """
import os, signal, sys
import reportgen.evaluation as ev
real = ev.score
def score(*a, **k):
    os.kill(os.getpid(), signal.SIGTERM)  # arrives during the final evaluation
    return real(*a, **k)
ev.score = score
from reportgen.cli import main
sys.argv = ["reportgen", *sys.argv[1:]]
main()
"""


@pytest.mark.slow
def test_sigterm_during_the_final_evaluation_has_a_message(tiny):
    overrides, out = tiny
    proc = subprocess.run([sys.executable, "-c", SIGTERM_IN_EVALUATION, "train",
                           *overrides_to_args(overrides)], capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 130, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: interrupted") and "run the same command again" in last
    assert "Traceback" not in proc.stderr
    r = cli(overrides)  # training had finished: the rerun evaluates and writes the results
    assert r.exit_code == 0, r.output
    assert (only_run(out) / "results.json").is_file()
