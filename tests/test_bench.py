"""`reportgen bench` with a tiny budget, and compiled vs eager training steps."""
import json

import pytest
from typer.testing import CliRunner

from reportgen.cli import app

runner = CliRunner()
FIELDS = ("model", "batch_size", "device", "threads", "versions", "precision",
          "train_img_per_s", "train_repeats", "eval_img_per_s", "eval_repeats",
          "sweep_s_per_angle", "sweep_36_angles_s", "bench_wall_s")


def test_bench_json_tiny_budget():
    r = runner.invoke(app, ["bench", "--json", "--steps", "4", "--warmup", "1", "--repeats",
                            "2", "--eval-images", "300", "--sweep-angles", "2",
                            "--sweep-images", "200", "--set", "train.batch_size=16",
                            "--device", "cpu"])
    assert r.exit_code == 0, r.output
    line = next(l for l in r.stdout.splitlines() if l.startswith("{"))
    res = json.loads(line)
    for f in FIELDS:
        assert f in res, f
    assert res["batch_size"] == 16 and len(res["train_repeats"]) == 2
    assert res["train_img_per_s"] > 0 and res["eval_img_per_s"] > 0
    assert res["sweep_36_angles_s"] == pytest.approx(res["sweep_s_per_angle"] * 36)
    assert set(res["versions"]) >= {"torch", "pytorch_lightning"}
    sbs = res["side_by_side"]  # three runs side by side (the default), all images counted
    assert sbs["runs"] == 3 and sbs["img_per_s"] > 0
    assert sbs["time_vs_one_run"] == pytest.approx(3 * res["train_img_per_s"] / sbs["img_per_s"])


def test_bench_table_and_bad_input():
    r = runner.invoke(app, ["bench", "--steps", "2", "--warmup", "1", "--repeats", "1",
                            "--eval-images", "100", "--sweep-angles", "1", "--sweep-images",
                            "100", "--set", "train.batch_size=8"])
    assert r.exit_code == 0 and "training" in r.stdout and "img/s" in r.stdout
    assert "side by side 3 runs" in r.stdout
    # The sweep's line is scaled to 36 x 5,000 images and says from what.
    assert "for 36 angles x 5,000 images (" in r.stdout
    assert "s/angle; scaled from 1 angle x 100 images timed)" in r.stdout
    r = runner.invoke(app, ["bench", "--steps", "0"])
    assert r.exit_code == 2 and "--steps 0" in r.output
    r = runner.invoke(app, ["bench", "--sweep-angles", "37"])
    assert r.exit_code == 2 and "--sweep-angles 37" in r.output and "at most 36" in r.output
    # More repeats than steps timed fewer repeats than asked, silently.
    r = runner.invoke(app, ["bench", "--steps", "4", "--repeats", "10"])
    assert r.exit_code == 2 and "--repeats 10 with --steps 4" in r.output
    assert "use at most --repeats 4" in r.output
    r = runner.invoke(app, ["bench", "--steps", "100000000000000", "--repeats", "1"])
    assert r.exit_code == 2 and "use at most 100,000 steps in all" in r.output
    r = runner.invoke(app, ["bench", "--warmup", "99999", "--steps", "2", "--repeats", "1"])
    assert r.exit_code == 2 and "--warmup 99999 and --steps 2" in r.output
    r = runner.invoke(app, ["bench", "--side-by-side", "-2"])
    assert r.exit_code == 2 and "--side-by-side -2" in r.output
    r = runner.invoke(app, ["bench", "--notebook", "x.py"])
    assert r.exit_code == 2 and "--notebook-data" in r.output


def test_bench_cycles_a_bounded_pool_of_images(monkeypatch):
    """--steps sets the benchmark's length, not its memory: the synthetic images are a pool
    cycled epoch after epoch, and every timing window is counted across the epochs."""
    from reportgen import bench
    from reportgen.config import load_experiment

    made = []
    real = bench._synthetic
    monkeypatch.setattr(bench, "_synthetic", lambda n, seed=0: made.append(n) or real(n, seed))
    monkeypatch.setattr(bench, "POOL_IMAGES", 12)  # 3 batches of 4 per epoch
    cfg = load_experiment(None, {"train.batch_size": 4, "train.device": "cpu",
                                 "model.params": {"num_classes": 10, "num_blocks": [1, 1],
                                                  "c_hidden": [8, 16]}})
    res = bench.bench_training(cfg, bench.BenchConfig(warmup_steps=2, steps=9, repeats=3))[0]
    assert made == [12] and len(res["train_repeats"]) == 3  # 11 steps over 4 epochs
    assert bench._pool_size(4, 10**20) == 12 and bench._pool_size(4, 2) == 8
    assert bench._pool_size(100, 3) == 100  # a batch larger than the pool: one batch


def test_bench_refuses_a_notebook_it_cannot_run(tmp_path):
    """--notebook and --notebook-data are checked before anything is timed, and a script that
    fails, or prints no usable numbers, is one error line naming it."""
    data = tmp_path / "images"
    (data / "train").mkdir(parents=True)
    fast = ["--steps", "1", "--warmup", "1", "--repeats", "1", "--eval-images", "8",
            "--sweep-angles", "1", "--sweep-images", "8", "--side-by-side", "0", "--set",
            "train.batch_size=4", "--set",
            "model.params={num_classes=10, num_blocks=[1, 1], c_hidden=[8, 16]}"]
    cases = {"missing.py": "does not exist", ".": "is not a regular file"}
    for name, why in cases.items():
        r = runner.invoke(app, ["bench", "--notebook", str(tmp_path / name), "--notebook-data",
                                str(data)])
        assert r.exit_code == 2 and why in r.output, r.output
    script = tmp_path / "nb.py"
    script.write_text("print('{}')\n")
    r = runner.invoke(app, ["bench", "--notebook", str(script), "--notebook-data", str(tmp_path)])
    assert r.exit_code == 2 and "train/" in r.output
    r = runner.invoke(app, ["bench", "--notebook-data", str(data)])
    assert r.exit_code == 2 and "only with --notebook" in r.output
    r = runner.invoke(app, ["bench", "--load", "--side-by-side", "2"])
    assert r.exit_code == 2 and "--load times training alone" in r.output
    for text, why in (("import sys; sys.exit('broken pipeline')\n", "exit 1: broken pipeline"),
                      ("print('{\"train_img_per_s\": 5}')\n", "no JSON line with positive"),
                      ("print('{\"train_img_per_s\": 5, \"eval_img_per_s\": -1}')\n",
                       "no JSON line with positive")):
        script.write_text(text)
        r = runner.invoke(app, ["bench", *fast, "--notebook", str(script), "--notebook-data",
                                str(data)])
        assert r.exit_code == 2 and why in r.output and str(script) in r.output, r.output
        assert r.exception is None or isinstance(r.exception, SystemExit)
    script.write_text("print('{\"train_img_per_s\": 5, \"eval_img_per_s\": 7, "
                      "\"sweep_36_angles_s\": \"x\"}')\n")
    r = runner.invoke(app, ["bench", *fast, "--json", "--notebook", str(script),
                            "--notebook-data", str(data)])
    assert r.exit_code == 0, r.output
    res = json.loads(next(l for l in r.stdout.splitlines() if l.startswith("{")))
    assert res["notebook"]["sweep_36_angles_s"] is None and "speedup_sweep" not in res
    assert res["speedup_train"] == pytest.approx(res["train_img_per_s"] / 5)


def test_bench_load_times_idle_and_each_competitor(monkeypatch):
    """--load: idle, then next to each competitor, each a live process while it is timed."""
    import subprocess

    from reportgen import bench

    alive = []
    real_fit = bench.bench_training

    def fit(cfg, b, runs=1):  # records whether a competitor process is running at this moment
        alive.append([p.poll() is None for p in started])
        return real_fit(cfg, b, runs)

    started: list[subprocess.Popen] = []
    real_popen = subprocess.Popen
    monkeypatch.setattr(bench.subprocess, "Popen",
                        lambda *a, **k: started.append(real_popen(*a, **k)) or started[-1])
    monkeypatch.setattr(bench, "bench_training", fit)
    r = runner.invoke(app, ["bench", "--load", "--json", "--steps", "2", "--warmup", "1",
                            "--repeats", "1", "--set", "train.batch_size=8"])
    assert r.exit_code == 0, r.output
    res = json.loads(next(l for l in r.stdout.splitlines() if l.startswith("{")))
    assert set(res["loaded"]) == set(bench.COMPETITORS) and res["idle_img_per_s"] > 0
    for case in res["loaded"].values():
        assert case["share_of_fair_half"] == pytest.approx(
            case["img_per_s"] / (res["idle_img_per_s"] / 2))
    assert alive == [[], [True], [False, True]]  # idle alone; each competitor alone, then ended
    assert all(p.poll() is not None for p in started)  # none left running


@pytest.mark.slow
def test_compiled_and_eager_training_give_the_same_loss(tiny):
    """train.compile=true (torch.compile'd training steps) reproduces the eager losses."""
    from helpers import overrides_to_args
    from reportgen.files import read_metrics

    overrides, out = tiny
    # Channel counts that are multiples of 8: inductor lays the tiny model's 4-channel maps
    # out channels_last, where oneDNN's backward of the 1x1 stride-2 shortcut hangs or
    # corrupts memory on this torch build (see reportgen.models.resnet._channels_last).
    overrides = {**overrides, "model.params": {"num_classes": 10, "num_blocks": [1, 1],
                                               "c_hidden": [8, 16]}}
    losses = {}
    for flag in ("false", "true"):
        r = runner.invoke(app, ["train", *overrides_to_args(overrides), "--epochs", "2",
                                "--set", f"train.compile={flag}", "--out", str(out / flag)])
        assert r.exit_code == 0, r.output
        run = next((out / flag / "runs").iterdir())
        losses[flag] = read_metrics(run / "metrics.csv")["train_loss"]
    assert losses["true"] == pytest.approx(losses["false"], rel=1e-3)


def test_bench_profile_says_where_a_step_goes():
    """--profile N: a separate pass of N profiled training steps, per step: operations,
    launches, synchronisations, and the top operations by host time (no GPU here: no
    launches, no device time)."""
    args = ["bench", "--steps", "2", "--warmup", "1", "--repeats", "1", "--eval-images", "100",
            "--sweep-angles", "1", "--sweep-images", "100", "--side-by-side", "0",
            "--set", "train.batch_size=8", "--device", "cpu",
            "--set", "model.params={num_classes=10, num_blocks=[1, 1], c_hidden=[8, 8]}"]
    r = runner.invoke(app, [*args, "--json", "--profile", "3"])
    assert r.exit_code == 0, r.output
    p = json.loads(next(l for l in r.stdout.splitlines() if l.startswith("{")))["profile"]
    assert p["steps"] == 3 and p["step_ms"] > 0
    assert p["img_per_s"] == pytest.approx(8 / p["step_ms"] * 1000)
    # forward, backward and optimiser of 4 convolutions and 5 batch norms: well over 50
    assert p["operations_per_step"] > 50
    assert p["kernel_launches_per_step"] == 0 and p["device_busy_ms_per_step"] is None
    names = [t["name"] for t in p["top_host"]]
    assert len(names) == 8 and any("convolution" in n for n in names), names
    assert all(t["self_ms_per_step"] >= 0 for t in p["top_host"])
    r = runner.invoke(app, [*args, "--profile", "2"])
    assert r.exit_code == 0 and "profile     2 steps at" in r.stdout
    assert "host, self time per step:" in r.stdout and "device busy not measured" in r.stdout
    for bad in (["--profile", "-1"], ["--profile", "201"], ["--load", "--profile", "2"]):
        r = runner.invoke(app, ["bench", *bad])
        assert r.exit_code == 2 and "--profile" in r.output and "Traceback" not in r.output


def test_profile_summary_counts_what_a_gpu_step_does():
    """The counts per step from the names the CUDA profiler gives: kernel and graph launches,
    synchronisations, copies; operations are top-level aten calls (not those inside another
    aten call); device time sums the kernels."""
    from types import SimpleNamespace as NS

    from torch.autograd import DeviceType
    from reportgen.bench import summarize_profile

    def ev(name, parent=None, device=DeviceType.CPU, us=0.0):
        return NS(name=name, cpu_parent=parent, device_type=device,
                  time_range=NS(elapsed_us=lambda: us))

    add = ev("aten::add")
    events = ([ev("cudaLaunchKernel")] * 10 + [ev("cudaGraphLaunch")] * 2
              + [ev("cudaStreamSynchronize")] * 3 + [ev("cudaEventSynchronize")]
              + [ev("cudaMemcpyAsync")] * 6 + [add] * 8 + [ev("aten::mul", parent=add)] * 4
              + [ev("aten::empty", parent=ev("autograd::engine"))] * 2
              + [ev("kernel_a", device=DeviceType.CUDA, us=150.0)] * 4
              + [ev("kernel_b", device=DeviceType.CUDA, us=500.0)])
    averages = [NS(key="aten::add", count=8, self_cpu_time_total=4000.0,
                   device_type=DeviceType.CPU),
                NS(key="kernel_a", count=4, self_cpu_time_total=0.0,
                   device_type=DeviceType.CUDA)]
    prof = NS(events=lambda: events, key_averages=lambda: averages)
    s = summarize_profile(prof, steps=2, wall_s=0.01, batch_size=128)
    assert s["step_ms"] == pytest.approx(5.0) and s["img_per_s"] == pytest.approx(25600)
    assert s["kernel_launches_per_step"] == 5 and s["graph_launches_per_step"] == 1
    assert s["synchronisations_per_step"] == 2 and s["copies_per_step"] == 3
    assert s["operations_per_step"] == 5  # 8 adds and 2 empties; the muls are inside an add
    assert s["device_busy_ms_per_step"] == pytest.approx((4 * 0.15 + 0.5) / 2)
    assert [t["name"] for t in s["top_device"]] == ["kernel_a", "kernel_b"]
    assert s["top_device"][0]["calls_per_step"] == 2
    assert s["top_host"] == [{"name": "aten::add", "calls_per_step": 4, "self_ms_per_step": 2.0}]
