"""The `reportgen` command: parses options, loads the experiment file, calls the stages.

Every stage reads and writes files, so each command can be rerun alone.
"""
from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import typer

from .config import ConfigError, ExperimentConfig, load_experiment, parse_override

app = typer.Typer(
    help="Run the CNN practical (Practical 2) end to end and write a paper-style report.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

ConfigOpt = typer.Option(None, "--config", "-c", help="Experiment file (experiments/*.toml); "
                         "default: the practical's full settings.")
DataOpt = typer.Option(None, "--data", help="CIFAR-10: a folder, or a .tar/.tar.gz/.zip image "
                       "folder archive (default: $REPORTGEN_DATA, else ./data).")
OutOpt = typer.Option(None, "--out", help="Output folder for runs, results and the report.")
EpochsOpt = typer.Option(None, "--epochs", help="Training epochs (overrides train.epochs).")
SubsetOpt = typer.Option(None, "--subset", help="Use only N training images (quick runs).")
DeviceOpt = typer.Option(None, "--device", help="auto, cpu or gpu.")
DevicesOpt = typer.Option(None, "--devices", help="Number of devices for Lightning (DDP).")
StrategyOpt = typer.Option(None, "--strategy", help="Lightning strategy, e.g. ddp.")
SetOpt = typer.Option(None, "--set", help="Override any setting: --set optim.lr=0.05 "
                      "(repeatable; the value is read as TOML).")
RetrainOpt = typer.Option(False, "--retrain", help="Train again even if a finished run exists.")


@app.callback()
def _group() -> None:
    """Run the CNN practical (Practical 2) end to end and write a paper-style report."""


def _fail(msg: str, code: int = 2) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def _log(msg: str) -> None:
    typer.echo(msg, err=True)


def load_config(config: Optional[Path], data: Optional[str] = None, out: Optional[str] = None,
                epochs: Optional[int] = None, subset: Optional[int] = None,
                device: Optional[str] = None, devices: Optional[int] = None,
                strategy: Optional[str] = None, sets: Optional[list[str]] = None,
                extra: dict[str, Any] | None = None) -> ExperimentConfig:
    """Experiment file -> --set overrides -> named options -> validated, frozen config."""
    overrides: dict[str, Any] = {}
    for text in sets or []:
        key, value = parse_override(text)
        overrides[key] = value
    for key, value in (("data.source", data), ("out_dir", out), ("train.epochs", epochs),
                       ("data.subset", subset), ("train.device", device),
                       ("train.devices", devices), ("train.strategy", strategy)):
        if value is not None:
            overrides[key] = value
    overrides.update(extra or {})
    return load_experiment(config, overrides)


@contextmanager
def _locked(cfg: ExperimentConfig):
    """Hold OUT/.lock while the block writes into the output folder."""
    from .files import OutputLock

    lock = OutputLock(cfg.out_dir)
    _run(lock.__enter__)
    try:
        yield lock
    finally:
        lock.__exit__(None, None, None)


def _run(fn, *args, **kwargs):
    """Call a stage; turn the errors a user can fix into one line and a non-zero exit."""
    from .data import DataError
    from .training import Interrupted, TrainingError

    try:
        return fn(*args, **kwargs)
    except Interrupted as e:
        _fail(str(e), 130)
    except KeyboardInterrupt:
        _fail("interrupted: run the same command again to continue where it stopped", 130)
    except (ConfigError, DataError, TrainingError, ValueError, FileNotFoundError, OSError,
            RuntimeError) as e:
        _fail(str(e))


@app.command()
def train(config: Optional[Path] = ConfigOpt, data: Optional[str] = DataOpt,
          out: Optional[str] = OutOpt, epochs: Optional[int] = EpochsOpt,
          subset: Optional[int] = SubsetOpt, device: Optional[str] = DeviceOpt,
          devices: Optional[int] = DevicesOpt, strategy: Optional[str] = StrategyOpt,
          set_: Optional[list[str]] = SetOpt, retrain: bool = RetrainOpt) -> None:
    """Part 1: train the pre-activation ResNet; writes checkpoints, metrics.csv, results.json."""
    from .experiments import prepare_data, run_part1

    cfg = _run(load_config, config, data, out, epochs, subset, device, devices, strategy, set_)
    with _locked(cfg):
        prepared = _run(prepare_data, cfg, log=_log)
        res = _run(run_part1, cfg, prepared, retrain=retrain, log=_log)
    if res:
        typer.echo(f"val_acc {res['val_acc']:.4f}  test_acc {res['test_acc']:.4f}  "
                   f"run {res['run_dir']}")


@app.command()
def rotation(config: Optional[Path] = ConfigOpt, data: Optional[str] = DataOpt,
             out: Optional[str] = OutOpt, epochs: Optional[int] = EpochsOpt,
             subset: Optional[int] = SubsetOpt, device: Optional[str] = DeviceOpt,
             set_: Optional[list[str]] = SetOpt, retrain: bool = RetrainOpt,
             checkpoint: Optional[str] = typer.Option(
                 None, "--checkpoint", help="Sweep only this checkpoint (no training)."),
             angles: Optional[str] = typer.Option(
                 None, "--angles", help="Comma-separated degrees (default 0,10,...,350).")) -> None:
    """Part 2: accuracy of the plain and the rotation-augmented ResNet over rotation angles."""
    from .experiments import prepare_data, run_part1
    from .experiments.rotation import run_rotation
    from .figures import rotation_figures

    extra = {}
    if angles is not None:
        try:
            extra["rotation.angles"] = [float(a) for a in angles.split(",") if a.strip()]
        except ValueError:
            _fail(f"--angles {angles!r}: give numbers separated by commas, e.g. 0,10,20")
    cfg = _run(load_config, config, data, out, epochs, subset, device, None, None, set_, extra)
    if checkpoint is not None:
        from .training import load_classifier

        _run(load_classifier, checkpoint)  # a bad checkpoint fails before the data is read
    with _locked(cfg):
        prepared = _run(prepare_data, cfg, log=_log)
        if checkpoint is None:
            _run(run_part1, cfg, prepared, retrain=retrain, log=_log)
        res = _run(run_rotation, cfg, prepared, retrain=retrain, checkpoint=checkpoint, log=_log)
        _run(rotation_figures, Path(cfg.out_dir) / cfg.name, Path(cfg.figures_dir))
    for label, entry in res["models"].items():
        acc = dict(zip(res["angles"], entry[res["splits"][0]]["accuracy"]))
        shown = "  ".join(f"{a:g}°: {acc[a]:.3f}" for a in (0.0, 90.0, 180.0) if a in acc)
        typer.echo(f"{label} ({res['splits'][0]}) {shown}")


@app.command()
def shuffle(config: Optional[Path] = ConfigOpt, data: Optional[str] = DataOpt,
            out: Optional[str] = OutOpt, epochs: Optional[int] = typer.Option(
                None, "--epochs", help="Epochs of the four runs (overrides shuffle.epochs)."),
            subset: Optional[int] = SubsetOpt, device: Optional[str] = DeviceOpt,
            set_: Optional[list[str]] = SetOpt, retrain: bool = RetrainOpt) -> None:
    """Part 3: ResNet and MLP on original and pixel-shuffled images (the 2x2 table)."""
    from .experiments import prepare_data
    from .experiments.shuffle import load_permutation, run_shuffle
    from .figures import shuffle_figures

    extra = {"shuffle.epochs": epochs} if epochs is not None else {}
    cfg = _run(load_config, config, data, out, None, subset, device, None, None, set_, extra)
    _run(load_permutation, cfg)  # a bad saved permutation fails before any work
    with _locked(cfg):
        prepared = _run(prepare_data, cfg, log=_log)
        res = _run(run_shuffle, cfg, prepared, retrain=retrain, log=_log)
        if not res:
            return
        _run(shuffle_figures, Path(cfg.out_dir) / cfg.name, Path(cfg.figures_dir))
    typer.echo(f"{'model':<8} {'pixels':<9} {'val_acc':>8} {'test_acc':>8}   ({res['epochs']} epochs)")
    for r in res["runs"].values():
        typer.echo(f"{r['model']:<8} {'shuffled' if r['shuffled'] else 'original':<9} "
                   f"{r['val_acc']:>8.4f} {r['test_acc']:>8.4f}")


@app.command()
def figures(config: Optional[Path] = ConfigOpt, out: Optional[str] = OutOpt,
            set_: Optional[list[str]] = SetOpt) -> None:
    """Redraw every figure from the stored results into the figures folder (no training)."""
    from .figures import draw_all

    cfg = _run(load_config, config, None, out, sets=set_)
    written = _run(draw_all, Path(cfg.out_dir) / cfg.name, Path(cfg.figures_dir), log=_log)
    typer.echo(f"{len(written)} files written to {cfg.figures_dir}/")


@app.command()
def bench(config: Optional[Path] = ConfigOpt, device: Optional[str] = DeviceOpt,
          set_: Optional[list[str]] = SetOpt,
          as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
          steps: int = typer.Option(60, "--steps", help="Timed training steps."),
          warmup: int = typer.Option(10, "--warmup", help="Untimed training steps first."),
          repeats: int = typer.Option(5, "--repeats", help="Timing repeats (median reported)."),
          eval_images: int = typer.Option(5000, "--eval-images", help="Images per eval pass."),
          sweep_angles: int = typer.Option(36, "--sweep-angles", help="Sweep angles to time."),
          sweep_images: int = typer.Option(5000, "--sweep-images", help="Images per angle."),
          notebook: Optional[str] = typer.Option(
              None, "--notebook", help="Also time the notebook pipeline script, e.g. "
              "../shared/bench/notebook_pipeline.py."),
          notebook_data: Optional[str] = typer.Option(
              None, "--notebook-data", help="Extracted image folder for --notebook.")) -> None:
    """Time training, evaluation and the 36-angle rotation sweep on this machine."""
    from .bench import BenchConfig, format_table, run_bench

    for name, v in (("--steps", steps), ("--warmup", warmup), ("--repeats", repeats),
                    ("--eval-images", eval_images), ("--sweep-angles", sweep_angles),
                    ("--sweep-images", sweep_images)):
        if v <= 0:
            _fail(f"{name} {v}: use a positive number")
    if notebook and not (notebook_data and Path(notebook_data).is_dir()):
        _fail("--notebook needs --notebook-data DIR, an extracted image folder (e.g. "
              "tar -xf ../shared/data/cifar10-jpeg.tar -C /tmp; then /tmp/cifar10-jpeg)")
    cfg = _run(load_config, config, device=device, sets=set_)
    b = BenchConfig(warmup_steps=warmup, steps=steps, repeats=repeats, eval_images=eval_images,
                    sweep_angles=sweep_angles, sweep_images=sweep_images)
    result = _run(run_bench, cfg, b, notebook, notebook_data)
    typer.echo(json.dumps(result) if as_json else format_table(result))


ReportOpts = {
    "author": typer.Option(None, "--author", help="Author name on the title page."),
    "student_number": typer.Option(None, "--student-number", help="Student number."),
    "course": typer.Option(None, "--course", help="Course name."),
    "title": typer.Option(None, "--title", help="Report title."),
}


def _report_overrides(author, student_number, course, title) -> dict:
    return {f"report.{k}": v for k, v in (("author", author), ("student_number", student_number),
                                          ("course", course), ("title", title)) if v is not None}


@app.command()
def report(config: Optional[Path] = ConfigOpt, out: Optional[str] = OutOpt,
           set_: Optional[list[str]] = SetOpt,
           author: Optional[str] = ReportOpts["author"],
           student_number: Optional[str] = ReportOpts["student_number"],
           course: Optional[str] = ReportOpts["course"],
           title: Optional[str] = ReportOpts["title"]) -> None:
    """Render the results and figures into OUT/report.html and OUT/report.pdf."""
    from .report import build_report

    cfg = _run(load_config, config, None, out, sets=set_,
               extra=_report_overrides(author, student_number, course, title))
    with _locked(cfg):
        _, pdf = _run(build_report, cfg, log=_log)
    typer.echo(str(pdf))


@app.command(name="all")
def all_(config: Optional[Path] = ConfigOpt, data: Optional[str] = DataOpt,
         out: Optional[str] = OutOpt, subset: Optional[int] = SubsetOpt,
         device: Optional[str] = DeviceOpt, devices: Optional[int] = DevicesOpt,
         strategy: Optional[str] = StrategyOpt, set_: Optional[list[str]] = SetOpt,
         retrain: bool = RetrainOpt,
         author: Optional[str] = ReportOpts["author"],
         student_number: Optional[str] = ReportOpts["student_number"],
         course: Optional[str] = ReportOpts["course"],
         title: Optional[str] = ReportOpts["title"]) -> None:
    """Everything in order (train, rotation, shuffle, figures, report), reusing finished runs."""
    import time

    from .experiments import prepare_data, run_part1
    from .experiments.rotation import run_rotation
    from .experiments.shuffle import load_permutation, run_shuffle
    from .figures import draw_all
    from .report import build_report, read_user_text

    t0 = time.perf_counter()
    cfg = _run(load_config, config, data, out, None, subset, device, devices, strategy, set_,
               _report_overrides(author, student_number, course, title))
    _run(load_permutation, cfg)  # inputs of later stages are checked before any training
    _run(read_user_text, cfg.report.user_text)
    with _locked(cfg):
        prepared = _run(prepare_data, cfg, log=_log)
        stages = [("Part 1: training the ResNet", run_part1),
                  ("Part 2: rotation study", run_rotation),
                  ("Part 3: pixel-shuffling study", run_shuffle)]
        for title_, fn in stages:
            _log(f"=== {title_}")
            if not _run(fn, cfg, prepared, retrain=retrain, log=_log):
                return  # a non-zero DDP rank: the main process carries on alone
        _log("=== figures")
        _run(draw_all, Path(cfg.out_dir) / cfg.name, Path(cfg.figures_dir), log=_log)
        _log("=== report")
        _, pdf = _run(build_report, cfg, log=_log)
    _log(f"all stages done in {time.perf_counter() - t0:.0f} s")
    typer.echo(str(pdf))


def main() -> None:  # console-script entry point
    app()


if __name__ == "__main__":
    sys.exit(main())
