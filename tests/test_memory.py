"""Training that cannot fit in memory stops before anything is timed, trained or written, with
a message naming the setting to change; out-of-memory errors that slip past become one line."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from reportgen.cli import app, load_config
from reportgen.training import memory

from helpers import overrides_to_args

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]

PEAK = """
import json, resource, sys, torch, torch.nn.functional as F
from reportgen.cli import load_config
from reportgen.config import to_dict
from reportgen.training import Classifier, memory
from reportgen.training.module import optimizers
torch.set_num_threads(1)
bs = int(sys.argv[1])
cfg = load_config(None, sets=sys.argv[2:])
m = Classifier(cfg.model.name, dict(cfg.model.params), to_dict(cfg.optim), to_dict(cfg.train.augment))
[opt], _ = optimizers(m.optim_cfg, m.parameters())
x = torch.randint(0, 256, (bs, 3, 32, 32), dtype=torch.uint8)
y = torch.randint(0, 10, (bs,))
estimate = memory.training_bytes(cfg.model, bs)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
F.cross_entropy(m.model(m.prepare(x, train=True)), y).backward()
opt.step()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
print(json.dumps({"estimate": estimate, "peak": peak}))
"""


@pytest.mark.parametrize("batch,sets", [
    (1024, []),
    # A narrow network keeps little per image, so the input pipeline's copies of the batch
    # count: without them the estimate was below the peak (batch 100,000 in `reportgen bench`
    # was ended by the OOM killer).
    (8192, ["model.params.c_hidden=[4, 8]", "model.params.num_blocks=[1, 1]"]),
])
def test_the_estimate_bounds_a_real_training_steps_peak_memory(batch, sets):
    """A training step on the CPU (the practical's ResNet at batch 1,024; a narrow one at
    8,192): the estimate is above the peak resident memory the step added, and not far
    above it."""
    proc = subprocess.run([sys.executable, "-c", PEAK, str(batch), *sets], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(proc.stdout.splitlines()[-1])
    assert 0.6 * r["estimate"] < r["peak"] < r["estimate"], r


def test_activations_grow_with_the_model():
    small = load_config(None, sets=['model.params={num_blocks = [1, 1], c_hidden = [4, 8]}'])
    full = load_config(None, sets=[])
    per_small, params_small = memory.profile(small.model)
    per_full, params_full = memory.profile(full.model)
    assert 0 < per_small < per_full and 0 < params_small < params_full
    assert memory.training_bytes(full.model, 256) == pytest.approx(
        2 * memory.training_bytes(full.model, 128), rel=0.01)


def test_host_memory_from_meminfo_and_a_container_limit(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  8000000 kB\nMemAvailable:  4000000 kB\n")
    cg = tmp_path / "cgroup"
    assert memory.host_available(meminfo, cg) == 4000000 * 1024
    cg.mkdir()
    (cg / "memory.max").write_text("max\n")  # cgroup v2 without a limit
    (cg / "memory.current").write_text("100\n")
    assert memory.host_available(meminfo, cg) == 4000000 * 1024
    (cg / "memory.max").write_text(f"{3 * 2**30}\n")
    (cg / "memory.current").write_text(f"{2 * 2**30}\n")
    assert memory.host_available(meminfo, cg) == 2**30
    # Page cache the kernel can drop is not in use.
    (cg / "memory.stat").write_text(f"anon 100\nfile 300\ninactive_file {2**29}\n")
    assert memory.host_available(meminfo, cg) == 2**30 + 2**29
    (cg / "memory.stat").unlink()
    (cg / "memory.max").unlink()
    (cg / "memory").mkdir()  # cgroup v1
    (cg / "memory" / "memory.limit_in_bytes").write_text(f"{2**31}\n")
    (cg / "memory" / "memory.usage_in_bytes").write_text(f"{2**30}\n")
    assert memory.host_available(meminfo, cg) == 2**30
    assert memory.host_available(tmp_path / "absent", tmp_path / "none") is None


def _with_free(monkeypatch, nbytes):
    monkeypatch.setattr(memory, "available", lambda accelerator: nbytes)


def test_the_suggested_batch_fits_and_a_larger_one_does_not(monkeypatch):
    cfg = load_config(None, sets=[])
    _with_free(monkeypatch, 600 * 2**20)
    with pytest.raises(memory.TrainingError) as e:
        memory.require(cfg.model, load_config(None, sets=["train.batch_size=5000"]).train, "cpu")
    msg = str(e.value)
    assert "train.batch_size = 5000 needs about" in msg and "600 MiB available" in msg
    largest = int(msg.rsplit("=", 1)[1])
    assert 100 < largest < 5000
    memory.require(cfg.model, load_config(None, sets=[f"train.batch_size={largest}"]).train,
                   "cpu")
    with pytest.raises(memory.TrainingError):
        memory.require(cfg.model, load_config(
            None, sets=[f"train.batch_size={int(largest * 1.05)}"]).train, "cpu")
    # Unknown free memory (not Linux): no check, no error.
    _with_free(monkeypatch, None)
    memory.require(cfg.model, load_config(None, sets=["train.batch_size=5000"]).train, "cpu")


def test_a_batch_that_cannot_fit_stops_before_the_plan_times_anything(tiny, monkeypatch):
    import reportgen.bench as bench

    overrides, out = tiny
    _with_free(monkeypatch, 1 * 2**20)
    timed = []
    monkeypatch.setattr(bench, "_synthetic", lambda *a, **k: timed.append(a))
    for cmd in ("train", "all"):
        r = runner.invoke(app, [cmd, *overrides_to_args(overrides)])
        assert r.exit_code == 2, r.output
        line = [l for l in r.output.splitlines() if l.startswith("error:")]
        assert len(line) == 1 and "train.batch_size = 10 needs about" in line[0], r.output
        assert "--set train.batch_size=" in line[0] or "smaller model" in line[0]
    assert not timed and not (out / "runs").exists()


@pytest.mark.parametrize("setting,name", [
    ("model.params={num_classes=10, num_blocks=[1, 1], c_hidden=[8, 1000000]}", "preact_resnet"),
    ("shuffle.mlp.params.hidden=[1048576, 1048576]", "mlp"),  # widths at the bound
])
def test_a_model_too_large_to_build_is_named_before_anything_is_allocated(tiny, setting, name):
    """Building such a model failed in the allocator, read as "use smaller batches"; its
    parameters are now counted on the meta device first."""
    overrides, out = tiny
    cmd = "shuffle" if name == "mlp" else "train"
    r = runner.invoke(app, [cmd, *overrides_to_args(overrides), "--set", setting])
    assert r.exit_code == 2, r.output
    line = r.output.strip().splitlines()[-1]
    assert line.startswith(f"error: {name} with the settings ") and " parameters: with their " \
        "gradients and optimiser state they need about" in line and "fewer or narrower" in line
    assert "batch" not in line and not (out / "runs").exists()


def test_groups_shrink_to_what_memory_holds(tiny, monkeypatch):
    from reportgen.experiments.base import prepare_data
    from reportgen.experiments.part1 import baseline_spec
    from reportgen.training.sidebyside import schedule

    overrides, out = tiny
    cfg = load_config(None, sets=overrides_to_args(
        {**overrides, "train.side_by_side": 4, "train.batch_size": 100})[1::2])
    prepared = prepare_data(cfg, log=lambda m: None)
    spec = baseline_spec(cfg, prepared.data_digest)
    specs = [spec.for_seed(s) for s in range(5)]
    per_image, params = memory.profile(spec.model)
    # Room for two runs side by side, not three.
    _with_free(monkeypatch, int(2.5 * memory._run_bytes(per_image, params, 100, runs=2)))
    lines = []
    assert schedule(specs, out, log=lines.append) == [[0, 1], [2, 3], [4]]
    assert sum("memory allows 2" in l for l in lines) == 1, lines
    _with_free(monkeypatch, 2**40)
    assert schedule(specs, out, log=lambda m: None) == [[0, 1, 2, 3], [4]]


def test_bench_refuses_more_runs_side_by_side_than_fit(monkeypatch):
    _with_free(monkeypatch, 3 * 2**30)
    r = runner.invoke(app, ["bench", "--side-by-side", "500", "--device", "cpu"])
    assert r.exit_code == 2
    assert "--side-by-side 500 of preact_resnet at batch 128 need about" in r.output
    assert "use at most" in r.output and "Traceback" not in r.output


def test_running_out_of_memory_mid_training_keeps_the_finished_epochs(tiny, monkeypatch):
    from reportgen.training.module import Classifier

    overrides, out = tiny
    step = Classifier.training_step

    def second_epoch_oom(self, batch, batch_idx):
        if self.current_epoch == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return step(self, batch, batch_idx)

    monkeypatch.setattr(Classifier, "training_step", second_epoch_oom)
    r = runner.invoke(app, ["train", *overrides_to_args({**overrides, "train.epochs": 2})])
    assert r.exit_code == 2, r.output
    line = r.output.strip().splitlines()[-1]
    assert line.startswith("error: training ran out of memory (CUDA out of memory.")
    assert "train.batch_size" in line and "resume from" in line and "last.ckpt" in line
    run = next((out / "runs").iterdir())
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert not (run / "results.json").exists()


@pytest.mark.parametrize("error", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't "
                 "allocate memory: you tried to allocate 307200000000 bytes. Error code 12"),
])
def test_out_of_memory_anywhere_else_is_one_line(tiny, monkeypatch, error):
    import reportgen.evaluation as evaluation

    def oom(*a, **k):
        raise error

    monkeypatch.setattr(evaluation, "score", oom)
    overrides, out = tiny
    r = runner.invoke(app, ["train", *overrides_to_args(overrides)])
    assert r.exit_code == 2
    last = r.output.strip().splitlines()[-1]
    assert last.startswith("error: out of memory (") and str(error)[:40] in last
    assert "train.batch_size" in last and "Traceback" not in r.output
    assert not list((out / "runs").glob("*/results.json"))


def test_other_runtime_errors_stay_bugs_with_their_traceback(tiny, monkeypatch):
    import reportgen.evaluation as evaluation

    def bug(*a, **k):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(evaluation, "score", bug)
    overrides, out = tiny
    r = runner.invoke(app, ["train", *overrides_to_args(overrides)])
    assert r.exit_code != 0 and isinstance(r.exception, RuntimeError)


@pytest.mark.parametrize("option", ["--eval-images", "--sweep-images"])
def test_bench_refuses_more_synthetic_images_than_fit(monkeypatch, option):
    monkeypatch.setattr(memory, "host_available", lambda: 2**30)
    r = runner.invoke(app, ["bench", option, "1000000", "--device", "cpu"])
    assert r.exit_code == 2
    assert r.output.startswith(f"error: {option} 1000000 needs about 5.7 GiB of memory")
    most = int(r.output.strip().rsplit(" ", 1)[1])
    assert most == 2**30 // (2 * (3 * 32 * 32 + 8))


def test_ddp_processes_on_the_cpu_each_need_their_own_memory(monkeypatch):
    """--devices N on the CPU starts N processes that each hold what this one holds; the
    first process counts them, a later one (LOCAL_RANK > 0) finds them started already."""
    cfg = load_config(None, sets=["train.devices=8", 'train.strategy="ddp"'])
    monkeypatch.setattr(memory, "process_bytes", lambda: 2**30)
    _with_free(monkeypatch, 3 * 2**30 + 2**29)
    with pytest.raises(memory.TrainingError) as e:
        memory.require(cfg.model, cfg.train, "cpu")
    assert "--devices 8 on the CPU starts 8 training processes" in str(e.value)
    most = int(str(e.value).rsplit(" ", 1)[1])
    assert most == 3  # 1 GiB each plus about 170 MiB of training, in 3.5 GiB (+ this one's)
    memory.require(cfg.model, load_config(None, sets=[f"train.devices={most}"]).train, "cpu")
    memory.require(cfg.model, cfg.train, "gpu")  # a card per process
    monkeypatch.setenv("LOCAL_RANK", "1")
    memory.require(cfg.model, cfg.train, "cpu")


EVAL_PEAK = """
import json, resource, sys, torch
from reportgen.cli import load_config
from reportgen.config import to_dict
from reportgen.evaluation import score
from reportgen.training import Classifier, memory
torch.set_num_threads(1)
budget = int(sys.argv[1])
if budget:
    memory.available = lambda accelerator: budget
cfg = load_config(None, sets=[])
torch.manual_seed(0)  # the same weights in both processes
m = Classifier(cfg.model.name, dict(cfg.model.params), to_dict(cfg.optim), to_dict(cfg.train.augment))
g = torch.Generator().manual_seed(0)
x = torch.randint(0, 256, (2048, 3, 32, 32), dtype=torch.uint8, generator=g)
y = torch.randint(0, 10, (2048,), generator=g)
memory.profile(cfg.model)  # its probe's memory is not the evaluation's
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
s = score(m, x, y, 2048, keep_predictions=True)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
print(json.dumps({"peak": peak, "correct": s.per_class_correct, "pred": s.pred.tolist()}))
"""


def _eval_peak(budget: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", EVAL_PEAK, str(budget)], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_an_evaluation_batch_larger_than_memory_shrinks_to_fit_with_the_same_scores():
    """train.eval_batch_size larger than memory holds: the practical's ResNet scores 2,048
    images in one batch only where that fits; with 160 MiB free it takes smaller batches,
    stays within them, and predicts every image exactly as the single batch did."""
    budget = 160 * 2**20
    whole, shrunk = _eval_peak(0), _eval_peak(budget)
    assert whole["peak"] > 2 * budget, whole["peak"]  # the one batch would not have fitted
    assert shrunk["peak"] < budget, shrunk["peak"]
    assert shrunk["pred"] == whole["pred"] and shrunk["correct"] == whole["correct"]


def test_evaluation_batches_leave_room_for_training_and_every_run_side_by_side(monkeypatch):
    cfg, cpu = load_config(None, sets=[]), torch.device("cpu")
    per_image, _ = memory.profile(cfg.model)
    _with_free(monkeypatch, int(1000 * per_image))
    assert memory.eval_batch_that_fits(cfg.model, 64, cpu) == 64  # the default fits as asked
    assert memory.eval_batch_that_fits(cfg.model, 5000, cpu) == 1000
    assert memory.eval_batch_that_fits(cfg.model, 5000, cpu, concurrent=4) == 250
    assert memory.eval_batch_that_fits(cfg.model, 5000, cpu,
                                       reserved=int(600 * per_image)) == 400
    # Nothing left: one image at a time rather than no evaluation; unknown memory: as asked.
    assert memory.eval_batch_that_fits(cfg.model, 5000, cpu, reserved=2**40) == 1
    _with_free(monkeypatch, None)
    assert memory.eval_batch_that_fits(cfg.model, 5000, cpu) == 5000


def test_validation_during_training_takes_batches_that_fit_beside_it(monkeypatch):
    from types import SimpleNamespace

    from reportgen.training.train import val_loader

    cfg = load_config(None, sets=["train.eval_batch_size=4096"])
    splits = SimpleNamespace(val_x=torch.zeros(100, 3, 32, 32, dtype=torch.uint8),
                             val_y=torch.zeros(100, dtype=torch.int64))
    per_image, _ = memory.profile(cfg.model)
    training = memory.training_bytes(cfg.model, cfg.train.batch_size, 2)
    _with_free(monkeypatch, training + int(6.5 * per_image))
    # Two runs side by side evaluate each batch twice: three images, not six, per batch.
    assert val_loader(splits, cfg.train, torch.device("cpu"), cfg.model, 2).batch_size == 3
    _with_free(monkeypatch, None)
    assert val_loader(splits, cfg.train, torch.device("cpu"), cfg.model).batch_size == 4096
