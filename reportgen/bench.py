"""`reportgen bench`: training, evaluation and rotation-sweep throughput on this machine.

Training goes through the same code path as `reportgen train` (the Classifier, its batched
augmentation, the index DataLoader, Lightning's loop and the optimizer); evaluation and the
sweep through `evaluation.score` and `rotation.sweep`. Images are random uint8 tensors:
throughput does not depend on their content, and the benchmark needs no data set.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import ExperimentConfig, to_dict
from .errors import UserError
from .files import missing


@dataclass(frozen=True)
class BenchConfig:
    warmup_steps: int = 10  # training steps before timing starts
    steps: int = 60  # timed training steps, split into `repeats` windows
    repeats: int = 5  # timing windows / evaluation repeats; the median is reported
    eval_images: int = 5000  # images per evaluation pass (the validation set's size)
    sweep_angles: int = 36  # angles timed for the sweep (36 = the full 0..350 sweep)
    sweep_images: int = 5000


# The synthetic training images are a fixed pool, cycled through epoch after epoch like the
# practical's 50,000, so that --steps sets only the time a benchmark takes, not its memory.
POOL_IMAGES = 50_000


def _pool_size(batch_size: int, steps: int) -> int:
    return min(batch_size * steps, max(POOL_IMAGES, batch_size))


def _synthetic(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8),
            torch.randint(0, 10, (n,), generator=g))


def _require_memory(cfg: ExperimentConfig, b: BenchConfig, runs: int) -> None:
    """Stop, before timing anything, where `runs` runs and their synthetic images cannot fit."""
    from .training import memory, resolve_accelerator

    memory.require(cfg.model, cfg.train, resolve_accelerator(cfg.train.device), runs,
                   what=f"--side-by-side {runs}",
                   per_batch_image=math.ceil(
                       _pool_size(cfg.train.batch_size, b.warmup_steps + b.steps)
                       * memory.IMAGE_BYTES / cfg.train.batch_size))


def bench_training(cfg: ExperimentConfig, b: BenchConfig, runs: int = 1,
                   callbacks: tuple = ()) -> tuple[dict, object]:
    """Training images/s of one run, or of `runs` runs side by side (all their images
    counted: the time per image of the whole group). `callbacks`: more Lightning callbacks
    (the profiler's window)."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import Callback

    from .data import batches
    from .training import (Classifier, quiet_lightning, resolve_accelerator,
                           resolve_precision, torch_device)
    from .training.sidebyside import SideBySide
    from .training.train import compile_error, is_compile_failure

    tc = cfg.train
    accelerator = resolve_accelerator(tc.device)
    device = torch_device(accelerator)
    n = _pool_size(tc.batch_size, b.warmup_steps + b.steps)
    _require_memory(cfg, b, runs)
    chosen = _require_layout(cfg) if runs > 1 else None
    x, y = _synthetic(n)
    x, y = x.to(device), y.to(device)  # as in training: the data lives on the device
    members = []
    for k in range(runs):
        pl.seed_everything(tc.seed + k, verbose=False)
        members.append(Classifier(cfg.model.name, dict(cfg.model.params), to_dict(cfg.optim),
                                  to_dict(tc.augment), seed=tc.seed + k))
    module = members[0] if runs == 1 else SideBySide(members, layout=chosen)
    if tc.compile and runs == 1:
        module.set_step_model(torch.compile(module.model, mode=tc.compile_mode))
    elif tc.compile:
        module.compile_step(tc.compile_mode)
    window = max(1, b.steps // b.repeats)
    marks: list[float] = []
    steps = itertools.count(1)

    class Timer(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            # Steps counted here, not batch_idx: the pool is cycled, and batch_idx restarts
            # with every epoch.
            i = next(steps) - b.warmup_steps
            if i >= 0 and i % window == 0:
                if device.type == "cuda":
                    torch.cuda.synchronize()  # only at window edges, not per step
                marks.append(time.perf_counter())

    quiet_lightning()
    # The benchmark times training alone, on purpose: no validation loop.
    warnings.filterwarnings("ignore", message=r"You defined a `validation_step` but have no "
                            r"`val_dataloader`")
    trainer = pl.Trainer(accelerator=accelerator, devices=1,
                         precision=resolve_precision(tc.precision, accelerator),
                         max_steps=b.warmup_steps + b.steps, max_epochs=-1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[Timer(), *callbacks],
                         num_sanity_val_steps=0, limit_val_batches=0)
    loaders = [batches(x, y, tc.batch_size, shuffle_seed=m.hparams.seed, drop_last=True)
               for m in members]
    try:
        trainer.fit(module, loaders[0] if runs == 1 else loaders)
    except Exception as e:
        if is_compile_failure(e):
            raise compile_error(e) from None
        raise
    rates = [runs * window * tc.batch_size / (t1 - t0) for t0, t1 in zip(marks, marks[1:])]
    return {"train_img_per_s": statistics.median(rates), "train_repeats": rates,
            "precision": trainer.precision, "accelerator": accelerator,
            **({"layout": chosen} if chosen else {})}, members[0]


# CUDA runtime and driver calls, as the profiler names them on the host.
LAUNCHES = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx")
GRAPH_LAUNCHES = ("cudaGraphLaunch", "cuGraphLaunch")
TOP = 8  # operations listed per table


@contextmanager
def _quiet_stderr():
    """File descriptor 2 to /dev/null: the profiler's C++ side prints its start and stop (and,
    without a GPU, an "ERROR" that it found none) straight to it."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def profile_training(cfg: ExperimentConfig, b: BenchConfig, steps: int) -> dict:
    """Where a training step's time goes: `steps` steps of one run (after b.warmup_steps)
    under torch.profiler, from the end of a step to the end of the last, so the window holds
    whole iterations (fetch, transfer and augmentation, forward, backward, optimiser,
    Lightning's hooks). A separate pass: the profiler's own overhead stays out of the timed
    rates."""
    from pytorch_lightning.callbacks import Callback
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available() and cfg.train.device != "cpu"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    window: dict = {}

    class Window(Callback):
        seen = 0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.seen += 1
            if self.seen == b.warmup_steps:
                if cuda:
                    torch.cuda.synchronize()
                window["prof"] = profile(activities=activities)
                with _quiet_stderr():
                    window["prof"].start()
                window["t0"] = time.perf_counter()
            elif self.seen == b.warmup_steps + steps and "prof" in window:
                if cuda:
                    torch.cuda.synchronize()
                window["wall_s"] = time.perf_counter() - window["t0"]
                with _quiet_stderr():
                    window["prof"].stop()

    bench_training(cfg, BenchConfig(warmup_steps=b.warmup_steps, steps=steps, repeats=1),
                   callbacks=(Window(),))
    with _quiet_stderr():
        return summarize_profile(window["prof"], steps, window["wall_s"],
                                 cfg.train.batch_size)


def summarize_profile(prof, steps: int, wall_s: float, batch_size: int) -> dict:
    """Per training step: host time, operations dispatched (top-level aten calls, the number
    of kernels an eager GPU step launches), kernel and CUDA-graph launches, host-device
    synchronisations and copies, the device's busy time, and the top operations by host
    and by device time."""
    from torch.autograd import DeviceType

    events = prof.events()
    count = Counter(e.name for e in events)

    def n(names) -> float:
        return sum(count[x] for x in names) / steps

    def top_level(e) -> bool:
        parent = e.cpu_parent
        return parent is None or not parent.name.startswith("aten::")

    kernels: dict[str, list[float]] = {}
    for e in events:
        if e.device_type == DeviceType.CUDA:
            k = kernels.setdefault(e.name, [0, 0.0])
            k[0] += 1
            k[1] += e.time_range.elapsed_us()
    host = sorted((a for a in prof.key_averages() if a.device_type == DeviceType.CPU),
                  key=lambda a: a.self_cpu_time_total, reverse=True)
    busy = sum(t for _, t in kernels.values()) / 1000 / steps if kernels else None
    step_ms = wall_s * 1000 / steps
    return {
        "steps": steps, "step_ms": step_ms, "img_per_s": batch_size / step_ms * 1000,
        "operations_per_step": sum(1 for e in events if e.name.startswith("aten::")
                                   and top_level(e)) / steps,
        "kernel_launches_per_step": n(LAUNCHES),
        "graph_launches_per_step": n(GRAPH_LAUNCHES),
        "synchronisations_per_step": sum(c for x, c in count.items()
                                         if "Synchronize" in x) / steps,
        "copies_per_step": sum(c for x, c in count.items()
                               if x.startswith(("cudaMemcpy", "cuMemcpy"))) / steps,
        "device_busy_ms_per_step": busy,
        "top_host": [{"name": a.key, "calls_per_step": a.count / steps,
                      "self_ms_per_step": a.self_cpu_time_total / 1000 / steps}
                     for a in host[:TOP]],
        "top_device": [{"name": name, "calls_per_step": c / steps, "ms_per_step": t / 1000 / steps}
                       for name, (c, t) in sorted(kernels.items(), key=lambda kv: -kv[1][1])[:TOP]],
    }


def _profile_lines(p: dict | None) -> list[str]:
    if not p:
        return []
    busy = ("not measured (no GPU)" if p["device_busy_ms_per_step"] is None else
            f"{p['device_busy_ms_per_step']:.2f} ms "
            f"({p['device_busy_ms_per_step'] / p['step_ms']:.0%} of the step)")
    lines = [f"profile     {p['steps']} steps at {p['step_ms']:.2f} ms a step with the profiler "
             f"on ({p['img_per_s']:.0f} img/s; the rates above are without it)",
             f"            per step: {p['operations_per_step']:.0f} operations, "
             f"{p['kernel_launches_per_step']:.0f} kernel launches, "
             f"{p['graph_launches_per_step']:.0f} CUDA graph launches, "
             f"{p['synchronisations_per_step']:.1f} synchronisations, "
             f"{p['copies_per_step']:.1f} copies; device busy {busy}",
             "            host, self time per step:"]
    lines += [f"              {t['self_ms_per_step']:7.3f} ms  {t['calls_per_step']:6.1f}x  "
              f"{t['name'][:70]}" for t in p["top_host"]]
    if p["top_device"]:
        lines.append("            device, time per step:")
        lines += [f"              {t['ms_per_step']:7.3f} ms  {t['calls_per_step']:6.1f}x  "
                  f"{t['name'][:70]}" for t in p["top_device"]]
    return lines


def _require_layout(cfg: ExperimentConfig) -> str:
    """The side-by-side layout of cfg's model (train.side_by_side_layout), or an error."""
    from .training import TrainingError
    from .training.sidebyside import layout

    chosen, why = layout(cfg.model, cfg.train.side_by_side_layout)
    if chosen is None:
        raise TrainingError(f"{cfg.model.name} cannot train side by side ({why}): use "
                            "--side-by-side 0, or another train.side_by_side_layout")
    return chosen


def bench_side_by_side(cfg: ExperimentConfig, b: BenchConfig, runs: int, alone: float) -> dict:
    """`runs` runs side by side against the same runs one after another (`alone` img/s)."""
    timed = bench_training(cfg, b, runs)[0]
    together = timed["train_img_per_s"]
    return {"runs": runs, "layout": timed["layout"], "img_per_s": together,
            "per_run_img_per_s": together / runs,
            # The time of `runs` runs side by side, in units of one run's time alone.
            "time_vs_one_run": runs * alone / together, "speedup": together / alone}


def bench_eval(module, cfg: ExperimentConfig, b: BenchConfig) -> dict:
    from .evaluation import batch_that_fits, score
    from .experiments.rotation import sweep
    from .training import eval_batch_size

    bs = batch_that_fits(module, eval_batch_size(cfg.train, module.device))  # as scored
    x, y = _synthetic(b.eval_images, seed=1)
    score(module, x[:bs * 2], y[:bs * 2], bs)  # warm-up
    rates = []
    for _ in range(b.repeats):
        t0 = time.perf_counter()
        score(module, x, y, bs)
        rates.append(b.eval_images / (time.perf_counter() - t0))
    xs, ys = _synthetic(b.sweep_images, seed=2)
    angles = [10.0 * k for k in range(b.sweep_angles)]
    marks = [time.perf_counter()]
    rc = cfg.rotation
    sweep(module, xs, ys, angles, rc.interpolation, rc.fill, bs,
          progress=lambda: marks.append(time.perf_counter()))
    per_angle = [t1 - t0 for t0, t1 in zip(marks, marks[1:])]
    scale = 5000 / b.sweep_images  # the sweep's target is over 5,000 validation images
    return {"eval_img_per_s": statistics.median(rates), "eval_repeats": rates,
            "sweep_s_per_angle": statistics.median(per_angle) * scale,
            "sweep_36_angles_s": statistics.median(per_angle) * scale * 36,
            "sweep_measured_s": marks[-1] - marks[0], "sweep_angles_timed": b.sweep_angles,
            "sweep_images": b.sweep_images, "eval_batch_size": bs}


class BenchError(UserError):
    """A benchmark input that cannot run (e.g. a --notebook script that fails)."""


_NOTEBOOK_FIELDS = ("train_img_per_s", "eval_img_per_s")


def _positive(v) -> bool:
    """A finite positive number in the pipeline's JSON (not a bool, a string or NaN)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def check_notebook(script: str | None, data_dir: str | None) -> None:
    """Stop before anything is timed where --notebook and --notebook-data cannot run."""
    example = ("e.g. tar -xf ../shared/data/cifar10-jpeg.tar -C /tmp; then --notebook-data "
               "/tmp/cifar10-jpeg")
    if data_dir is not None and not script:
        raise BenchError(f"--notebook-data {data_dir} is used only with --notebook SCRIPT "
                         "(e.g. ../shared/bench/notebook_pipeline.py): add it, or drop "
                         "--notebook-data")
    if not script:
        return
    if not data_dir:
        raise BenchError("--notebook needs --notebook-data DIR, an extracted image folder "
                         f"({example})")
    path = Path(script)
    if not path.is_file():  # follows links; a folder, FIFO or device is not a script
        what = missing(path) if not path.exists() else "is not a regular file"
        raise BenchError(f"--notebook {script} {what}: pass the notebook pipeline script, "
                         "e.g. ../shared/bench/notebook_pipeline.py")
    if not (Path(data_dir) / "train").is_dir():  # the pipeline reads train/<class>/*
        raise BenchError(f"--notebook-data {data_dir} is not an extracted image folder with "
                         f"a train/ folder ({example})")


def run_notebook(script: str, data_dir: str, b: BenchConfig) -> dict:
    """The practical notebook's own pipeline (shared/bench/notebook_pipeline.py), for comparison.
    It runs as a separate program, so whatever it prints or however it fails becomes one
    BenchError line, never a traceback of ours."""
    cmd = [sys.executable, script, data_dir, "--steps", str(b.steps), "--warmup",
           str(b.warmup_steps), "--angles", str(min(b.sweep_angles, 4))]
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace",
                          stdin=subprocess.DEVNULL)
    found = None
    for line in reversed(proc.stdout.splitlines()):
        try:
            found = json.loads(line)
        except ValueError:
            continue
        break
    ok = isinstance(found, dict) and all(_positive(found.get(k)) for k in _NOTEBOOK_FIELDS)
    if proc.returncode != 0 or not ok:
        why = (proc.stderr.strip().splitlines() or ["no error message"])[-1][:300]
        if proc.returncode == 0:
            why = f"it printed no JSON line with positive {' and '.join(_NOTEBOOK_FIELDS)}"
        raise BenchError(f"the notebook pipeline {script} failed (exit {proc.returncode}: "
                         f"{why}): check the script and --notebook-data {data_dir}")
    if not _positive(found.get("sweep_36_angles_s")):
        found["sweep_36_angles_s"] = None  # no usable sweep time: no sweep speed-up
    return found


# Competitors for `bench --load`: what shares a student's laptop while reportgen trains.
_TORCH_JOB = """
import torch, torch.nn as nn
torch.manual_seed(0)
m = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1),
                  nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
opt = torch.optim.SGD(m.parameters(), lr=0.01)
x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))
while True:
    opt.zero_grad(); nn.functional.cross_entropy(m(x), y).backward(); opt.step()
"""
COMPETITORS = {
    "loop": ("next to a busy loop (1 thread)", ["-c", "while True: pass"]),
    "torch": ("next to a PyTorch training job", ["-c", _TORCH_JOB]),
}


def run_load_bench(cfg: ExperimentConfig, b: BenchConfig, settle_s: float = 2.0) -> dict:
    """Training throughput idle and next to each competitor. A competitor runs with the
    user's environment as it was before reportgen's OpenMP default, like any other program
    on the machine; 'fair half' is half the idle rate (two busy programs, equal shares)."""
    from . import runtime

    idle = bench_training(cfg, b)[0]["train_img_per_s"]
    result = {"idle_img_per_s": idle, "fair_half_img_per_s": idle / 2,
              "openmp": runtime.describe(), "threads": torch.get_num_threads(), "loaded": {}}
    for name, (label, args) in COMPETITORS.items():
        proc = subprocess.Popen([sys.executable, *args], env=runtime.user_environment(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(settle_s)  # let it start and load torch before timing begins
            rate = bench_training(cfg, b)[0]["train_img_per_s"]
        finally:
            proc.kill()
            proc.wait()
        result["loaded"][name] = {"label": label, "img_per_s": rate,
                                  "share_of_fair_half": rate / (idle / 2)}
    return result


def format_load_table(r: dict) -> str:
    lines = [f"training, idle                   {r['idle_img_per_s']:7.0f} img/s",
             *(f"{c['label']:<33s}{c['img_per_s']:7.0f} img/s  ({c['share_of_fair_half']:.0%} "
               f"of the fair half, {r['fair_half_img_per_s']:.0f})" for c in r["loaded"].values()),
             f"OpenMP wait: {r['openmp']}; {r['threads']} threads"]
    return "\n".join(lines)


def run_bench(cfg: ExperimentConfig, b: BenchConfig, notebook: str | None = None,
              notebook_data: str | None = None, side_by_side: int | None = None,
              profile: int = 0) -> dict:
    """side_by_side: runs to time side by side; None = 3, or none with train.compile (its
    second compile would double the benchmark's time). profile: training steps of one run to
    profile (0: none)."""
    if side_by_side is None:
        side_by_side = 0 if cfg.train.compile else 3
    from . import runtime
    from .training import device_description, memory, torch_device, versions

    memory.require_images(b.eval_images, "--eval-images")
    memory.require_images(b.sweep_images, "--sweep-images")
    _require_memory(cfg, b, max(side_by_side, 1))
    if side_by_side > 1:
        _require_layout(cfg)  # before anything is timed
    t0 = time.perf_counter()
    train, module = bench_training(cfg, b)
    module = module.to(torch_device(train["accelerator"]))
    result = {
        "model": cfg.model.name, "model_params": dict(cfg.model.params),
        "batch_size": cfg.train.batch_size,
        "device": device_description(train["accelerator"]),
        "threads": torch.get_num_threads(), "openmp": runtime.describe(),
        "compile": cfg.train.compile, "compile_mode": cfg.train.compile_mode, **train,
        **bench_eval(module, cfg, b), "versions": versions(), "platform": platform.platform(),
    }
    if side_by_side > 1:
        result["side_by_side"] = bench_side_by_side(cfg, b, side_by_side,
                                                    train["train_img_per_s"])
    if profile:
        result["profile"] = profile_training(cfg, b, profile)
    if notebook:
        nb = run_notebook(notebook, notebook_data or "", b)
        result["notebook"] = nb
        result["speedup_train"] = result["train_img_per_s"] / nb["train_img_per_s"]
        result["speedup_eval"] = result["eval_img_per_s"] / nb["eval_img_per_s"]
        if nb.get("sweep_36_angles_s"):
            result["speedup_sweep"] = nb["sweep_36_angles_s"] / result["sweep_36_angles_s"]
    result["bench_wall_s"] = time.perf_counter() - t0
    return result


def _side_by_side_line(sbs: dict | None) -> list[str]:
    if not sbs:
        return []
    return [f"side by side {sbs['runs']} runs ({sbs['layout']}): {sbs['img_per_s']:.0f} img/s in all, "
            f"{sbs['time_vs_one_run']:.2f} x the time of one run alone "
            f"(x{sbs['speedup']:.2f} throughput)"]


def _sweep_scaled(r: dict) -> str:
    """What was timed, where the sweep's line is scaled up from less than 36 x 5,000."""
    angles, images = r.get("sweep_angles_timed", 36), r.get("sweep_images", 5000)
    if angles == 36 and images == 5000:
        return ""
    return (f"; scaled from {angles} {'angle' if angles == 1 else 'angles'} x "
            f"{images:,} {'image' if images == 1 else 'images'} timed")


def format_table(r: dict) -> str:
    lines = [f"device      {r['device']} ({r['accelerator']}, {r['precision']}, "
             f"{r['threads']} threads; OpenMP wait: {r['openmp']})",
             f"model       {r['model']} {r['model_params']}, batch {r['batch_size']}",
             f"training    {r['train_img_per_s']:8.0f} img/s (median of {len(r['train_repeats'])})",
             *_side_by_side_line(r.get("side_by_side")),
             f"evaluation  {r['eval_img_per_s']:8.0f} img/s (median of {len(r['eval_repeats'])})",
             f"sweep       {r['sweep_36_angles_s']:8.1f} s for 36 angles x 5,000 images "
             f"({r['sweep_s_per_angle']:.2f} s/angle{_sweep_scaled(r)})",
             *_profile_lines(r.get("profile"))]
    if "notebook" in r:
        nb = r["notebook"]
        lines += [f"notebook    {nb['train_img_per_s']:8.0f} img/s training, "
                  f"{nb['eval_img_per_s']:.0f} img/s evaluation, "
                  f"{nb.get('sweep_36_angles_s') or float('nan'):.1f} s sweep",
                  f"speed-up    training x{r['speedup_train']:.2f}, evaluation "
                  f"x{r['speedup_eval']:.2f}" + (f", sweep x{r['speedup_sweep']:.2f}"
                                                 if "speedup_sweep" in r else "")]
    return "\n".join(lines)
