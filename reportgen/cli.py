"""The `reportgen` command: parses options, loads the experiment file, calls the stages.

Every registered study gets a command generated from its declaration (`train`, `rotation`,
`shuffle`, ...); `all`, `figures` and `report` loop over the registered studies. Every stage
reads and writes files, so each command can be rerun alone.
"""
from __future__ import annotations

import errno
import inspect
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import typer

# Figures are files drawn with Agg (reportgen.style); an unknown backend named in the
# environment stopped matplotlib's import, which torch and Lightning make before any figure.
os.environ.pop("MPLBACKEND", None)

from .config import (MAX_SEEDS, ConfigError, ExperimentConfig, load_experiment,
                     parse_override, require_full_paths)
from .errors import UserError

app = typer.Typer(
    help="Run the CNN practical (Practical 2) end to end and write a paper-style report.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

ConfigOpt = typer.Option(None, "--config", "-c", help="Experiment file (experiments/*.toml), "
                         "or a shipped preset by name: quick, practical2; default: the "
                         "practical's settings with one seed (practical2 adds seeds and the p4 "
                         "network).")
DataOpt = typer.Option(None, "--data", help="CIFAR-10: a folder, or a .tar/.tar.gz/.tar.xz/.zip "
                       "image folder archive (default: $REPORTGEN_DATA, else ./data).")
OutOpt = typer.Option(None, "--out", help="Output folder for runs, results and the report.")
SubsetOpt = typer.Option(None, "--subset", help="Use only N training images (quick runs).")
SeedsOpt = typer.Option(None, "--seeds", help="Train every model N times, with seeds train.seed, "
                        "+1, ..., +N-1 (sets train.seeds and shuffle.mlp_seeds); reports give "
                        "the mean and the spread.")
DeviceOpt = typer.Option(None, "--device", help="auto, cpu or gpu.")
DevicesOpt = typer.Option(None, "--devices", help="Number of devices for Lightning (DDP).")
StrategyOpt = typer.Option(None, "--strategy", help="Lightning strategy, e.g. ddp.")
SetOpt = typer.Option(None, "--set", help="Override any setting: --set optim.lr=0.05 "
                      "(repeatable; the value is read as TOML).")
RetrainOpt = typer.Option(False, "--retrain", help="Train again even if a finished run exists.")


_invocation = {"debug": False}  # set by the group callback at the start of every command


def _print_version(value: bool) -> None:
    if value:
        from . import installed_version

        v = installed_version()
        typer.echo(f"reportgen {v}" if v else "reportgen (not installed: pip install -e .)")
        raise typer.Exit()


@app.callback()
def _group(debug: bool = typer.Option(
        False, "--debug", help="Show the full traceback of every error (also REPORTGEN_DEBUG=1)."),
           _version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True,
        help="Print reportgen's version and exit.")) -> None:
    """Run the CNN practical (Practical 2) end to end and write a paper-style report."""
    _invocation["debug"] = debug
    try:
        os.getcwd()
    except FileNotFoundError:
        # Relative paths mean nothing there, and importing torch from it ended the process
        # with oneMKL's "FATAL ERROR: Cannot load libtorch_cpu.so" and no word of the cause.
        _fail("the current folder no longer exists (it was deleted or moved): cd to a folder "
              "that exists and run the command again")


def _debug() -> bool:
    return _invocation["debug"] or os.environ.get("REPORTGEN_DEBUG", "") not in ("", "0")


def _fail(msg: str, code: int = 2) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def _log(msg: str) -> None:
    typer.echo(msg, err=True)


def _out(line: str, saved: bool = True) -> None:
    """A result line on stdout, flushed. Writing it can fail after the work is done and saved
    (stdout redirected to a full disk): that is one error line, not a traceback. A reader
    that stopped reading (`| head -1`) is click's to handle: a quiet exit."""
    try:
        typer.echo(line)
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as e:
        done = ("the work is done and saved; run the command again" if saved else
                "run the command again")
        _fail(f"cannot write the result to standard output ({e.strerror or e}): {done} with "
              "stdout going somewhere writable", 1)


# What to do about the operating system's own errors, raised where no stage put them in words.
_ADVICE = {errno.ENAMETOOLONG: "use a shorter name (255 bytes per file or folder name, 4,096 "
                               "per path)",
           errno.ENOSPC: "free disk space, or choose another --out",
           errno.EDQUOT: "free disk space, or choose another --out",
           errno.EROFS: "the file system is read-only: choose another location",
           errno.EACCES: "you may not write there: choose another location",
           errno.EPERM: "you may not write there: choose another location",
           errno.ENOTDIR: "a file stands where a folder is needed: move it, or choose another "
                          "location",
           errno.EISDIR: "a folder stands where a file is needed: move it, or choose another "
                         "location",
           errno.ELOOP: "symbolic links there point in a loop: remove them"}


def _os_error(e: OSError) -> str:
    """An operating-system error as the file it concerns and what to do about it; one
    without advice here (or with a stage's own message, which has no strerror) as it is."""
    advice = _ADVICE.get(e.errno)
    if advice is None or e.strerror is None:
        return str(e)
    # A rename's error names its source, a temporary file the user never made
    # (".x.tmp-reportgen-123.png" for a folder standing at x.png): the destination is the file
    # they know. A file descriptor (an int) names nothing.
    path = e.filename2 if e.filename2 is not None else e.filename
    where = f" ({path})" if path and not isinstance(path, int) else ""
    return f"{e.strerror}{where}: {advice}"


def _run(fn, *args, **kwargs):
    """Call a stage. An error the user can fix becomes one `error:` line and a non-zero exit;
    anything else is a bug and keeps its traceback (every error does, with --debug)."""
    from .training import Interrupted

    try:
        return fn(*args, **kwargs)
    except (UserError, OSError, KeyboardInterrupt) as e:  # OSError: a full disk, a read-only folder
        if _debug():
            raise
        if isinstance(e, Interrupted):
            _fail(str(e), 130)
        if isinstance(e, KeyboardInterrupt):
            _fail("interrupted (Ctrl-C or SIGTERM): run the same command again to continue "
                  "where it stopped; finished runs and epochs are kept", 130)
        _fail((_os_error(e) if isinstance(e, OSError) else str(e)).replace("\n", " "))
    except RuntimeError as e:  # torch.OutOfMemoryError (without importing torch here), and
        # the CPU allocator's failure, a plain RuntimeError
        if _debug() or (type(e).__name__ != "OutOfMemoryError"
                        and "can't allocate memory" not in str(e)):
            raise
        _fail(f"out of memory ({str(e).splitlines()[0][:120]}): use smaller batches "
              "(train.batch_size, train.eval_batch_size) or free memory; finished runs and "
              "epochs are kept")


# The option that sets each key, for a --set of the same key that says otherwise.
_OPTION_OF = {"data.source": "--data", "out_dir": "--out", "data.subset": "--subset",
              "train.device": "--device", "train.devices": "--devices",
              "train.strategy": "--strategy", "train.epochs": "--epochs",
              "report.author": "--author", "report.student_number": "--student-number",
              "report.course": "--course", "report.title": "--title",
              "report.formats": "--format", "rotation.angles": "--angles",
              "train.seeds": "--seeds"}


def _note_replaced(key: str, value: Any, sets: dict[str, tuple[str, Any]]) -> None:
    """An option replaces a --set of the same key, and says so: `--epochs 3 --set
    train.epochs=2` trained 3 epochs without a word about the 2. (A wrapper script that
    passes fixed --set values, with an option added by hand, is how both meet; the option,
    the more specific of the two, wins.)"""
    if key in sets and sets[key][1] != value:
        from .config import shown

        # A study's own budget and seed lists (shuffle.epochs, shuffle.mlp_seeds) come from
        # --epochs and --seeds too.
        option = _OPTION_OF.get(key) or ("--epochs" if key.endswith("epochs") else
                                         "--seeds" if key.endswith("seeds") else "an option")
        _log(f"note: {option} sets {key} = {shown(value)}, replacing --set "
             f"{shown(sets[key][0])}")


def load_config(config: Optional[str], data: Optional[str] = None, out: Optional[str] = None,
                subset: Optional[int] = None, device: Optional[str] = None,
                devices: Optional[int] = None, strategy: Optional[str] = None,
                sets: Optional[list[str]] = None,
                extra: dict[str, Any] | None = None,
                seeds: Optional[int] = None, writes: bool = True) -> ExperimentConfig:
    """Experiment file -> --set overrides -> named options -> validated, frozen config.
    `seeds` N (--seeds) sets train.seeds to train.seed, +1, ..., +N-1, and every study's
    own seed lists (`Study.seed_keys`) to the same. `writes` False (bench): the command
    reads and writes no path setting, so none is checked."""
    overrides: dict[str, Any] = {}
    given: dict[str, tuple[str, Any]] = {}  # key -> (the --set text, its value)
    for text in sets or []:
        key, value = parse_override(text)
        overrides[key] = value
        given[key] = (text, value)
    if data is not None and not data.strip():
        # `--data "$DIR"` with DIR unset: without this, the default ./data (and a download
        # into it) would stand in for the copy the user meant to name.
        raise ConfigError(f"--data {data!r} is empty: name the CIFAR-10 folder or archive, or "
                          "leave --data out to use $REPORTGEN_DATA or ./data")
    for key, value in (("data.source", data), ("out_dir", out), ("data.subset", subset),
                       ("train.device", device), ("train.devices", devices),
                       ("train.strategy", strategy)):
        if value is not None:
            _note_replaced(key, value, given)
            overrides[key] = value
    for key, value in (extra or {}).items():
        _note_replaced(key, value, given)
        overrides[key] = value
    cfg = load_experiment(config, overrides)
    if writes:
        require_full_paths(cfg)
        _require_out_folder(Path(cfg.out_dir), "--out" if out is not None else "out_dir")
    if seeds is None:
        return cfg
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: use a positive number of seeds (1 = one run per "
                          "model)")
    if seeds > MAX_SEEDS:  # checked before the list is built: --seeds 10**12 would fill memory
        raise ConfigError(f"--seeds {seeds}: use at most {MAX_SEEDS} (every seed is a full "
                          "training run of every model)")
    if cfg.train.seed + seeds > 2**32:
        raise ConfigError(f"--seeds {seeds} with train.seed = {cfg.train.seed} goes past the "
                          f"largest seed, 2**32 - 1: use a smaller train.seed or fewer seeds")
    from .experiments import studies

    chosen = [cfg.train.seed + i for i in range(seeds)]
    for key in ("train.seeds", *(k for st in studies() for k in st.seed_keys)):
        _note_replaced(key, chosen, given)
    overrides["train.seeds"] = chosen
    overrides.update({k: chosen for st in studies() for k in st.seed_keys})
    return load_experiment(config, overrides)


def _require_out_folder(out: Path, named: str) -> None:
    """The output folder, or the nearest part of it that exists, must be a folder: every
    command reads or writes there. Before, a file in its place gave `figures` and `report`
    "part1.json is missing: run `reportgen train` first" and `train` mkdir's "File exists"."""
    import stat as st_

    from .files import link_in_the_way, missing, special_kind

    link = link_in_the_way(out)
    if link:
        why = missing(link) if link == out else f"({link} {missing(link)})"
        raise ConfigError(f"{named} {out} {why}: point the link at a folder (or make the one it "
                          "names), or choose another folder with --out")
    p = out
    while True:
        try:
            st = p.stat()
            break
        except (FileNotFoundError, NotADirectoryError):  # the latter: a file above it
            if p == p.parent:
                return
            p = p.parent
        except OSError:  # a path too long: the stage says so with advice
            return
    if not st_.S_ISDIR(st.st_mode):
        what = special_kind(st) or "a file"
        where = f"{named} {out}" if p == out else f"{named} {out} ({p} is {what}, not a folder)"
        raise ConfigError(f"{where}{' is ' + what + ', not a folder' if p == out else ''}: "
                          "choose a folder for the runs, results and report with --out (it is "
                          "made if missing)")


@contextmanager
def _figures_held(cfg: ExperimentConfig):
    """Hold the figures folder (figures.figures_locked) while the block draws or reads it."""
    from .experiments import figures_path
    from .figures import figures_locked

    held = figures_locked(figures_path(cfg), log=_log)
    _run(held.__enter__)
    try:
        yield
    finally:
        held.__exit__(None, None, None)


@contextmanager
def _locked(cfg: ExperimentConfig):
    """Hold the output folder's lock while the block writes into it."""
    from .experiments import figures_path
    from .figures import require_figures_dir
    from .files import OutputLock

    lock = OutputLock(cfg.out_dir)
    _run(lock.__enter__)
    # A new command (the tests run several in one process) forgets the runs trained and the
    # notes printed before. Only where training was loaded: importing it for `figures` or
    # `report` would import Lightning, 3.5 s of their 9.5 s.
    train = sys.modules.get("reportgen.training.train")
    if train is not None:
        train.new_command()
    try:  # every command that takes the lock may draw figures: check before any training
        _run(require_figures_dir, figures_path(cfg))
    except BaseException:
        lock.__exit__(None, None, None)
        raise
    try:
        yield lock
    finally:
        lock.__exit__(None, None, None)


# --- one command per study, generated from its declaration ---------------------------------

PlanOpt = typer.Option(False, "--plan", help="Print what would be trained or reused and an "
                       "estimated time (from a few steps timed on this device), then stop.")


def _plan(cfg, prepared, chosen, retrain: bool, only: bool, options: dict | None = None,
          one_call: bool = False):
    """Print the plan (to stdout with --plan, which then stops; else to the log).
    one_call: the studies' runs train in one call (`all`), not study by study."""
    from .plan import format_plan, make_plan

    if int(os.environ.get("LOCAL_RANK", "0")) != 0:  # a DDP worker: the main process plans
        return None
    plan = _run(make_plan, cfg, prepared, chosen, retrain, options, log=_log,
                one_call=one_call)
    for line in format_plan(plan):
        _out(line, saved=False) if only else _log(line)
    return plan


def _check_device(cfg: ExperimentConfig) -> None:
    """The device the runs will train on is there: before the data are decoded (a minute for
    CIFAR-10's JPEGs on a laptop), not after."""
    from .training import resolve_accelerator

    resolve_accelerator(cfg.train.device, cfg.train.devices)


def _run_study(study, config, data, out, epochs, seeds, subset, device, devices, strategy, set_,
               retrain, plan, options: dict) -> None:
    from .experiments import figures_path, prepare_data, results_dir
    from .figures import draw_study

    extra = dict(_run(study.overrides, **options))
    if epochs is not None:
        extra[study.epochs_key] = epochs
    cfg = _run(load_config, config, data, out, subset, device, devices, strategy, set_, extra,
               seeds)
    _run(study.check, cfg, **options)
    cfg = _run(study.configured, cfg, **options)
    _run(_check_device, cfg)
    with _locked(cfg):
        prepared = _run(prepare_data, cfg, log=_log, fetch=not plan)
        planned = _plan(cfg, prepared, [study], retrain, plan, options)
        if plan:
            return
        t_work = time.perf_counter()
        res = _run(study.run, cfg, prepared, retrain=retrain, log=_log, **options)
        if not res:
            return  # a DDP worker process: the main process writes and prints
        took = time.perf_counter() - t_work
        with _figures_held(cfg):
            _run(draw_study, study, results_dir(cfg), figures_path(cfg))
    if planned and planned.seconds:
        _log(_estimate_against(planned, took))
    for line in study.summary(res):
        _out(line)


def _estimate_against(planned, took: float) -> str:
    """The plan's estimate beside the time of the same work: training and sweeps, not the
    figures and report it does not cover (a tiny run's "0.6 s, which took 14 s" was mostly
    the report)."""
    from .report import duration

    return (f"the plan estimated {duration(planned.seconds)} for training and sweeps, which "
            f"took {duration(took)}")


def _study_command(study) -> None:
    common = {
        "config": (Optional[str], ConfigOpt), "data": (Optional[str], DataOpt),
        "out": (Optional[str], OutOpt),
        "epochs": (Optional[int], typer.Option(None, "--epochs", help=f"Training epochs "
                                               f"(overrides {study.epochs_key}).")),
        "seeds": (Optional[int], SeedsOpt),
        "subset": (Optional[int], SubsetOpt), "device": (Optional[str], DeviceOpt),
        "devices": (Optional[int], DevicesOpt), "strategy": (Optional[str], StrategyOpt),
        "set_": (Optional[list[str]], SetOpt), "retrain": (bool, RetrainOpt),
        "plan": (bool, PlanOpt)}
    params = {**common, **study.options}

    def command(**kw) -> None:
        options = {k: kw.pop(k) for k in study.options}
        _run_study(study, **kw, options=options)

    command.__signature__ = inspect.Signature(
        [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=tp)
         for name, (tp, opt) in params.items()])
    command.__doc__ = study.help or study.title
    app.command(name=study.cli_name)(command)


def _add_study_commands() -> None:
    from .experiments import studies

    for study in studies():
        _study_command(study)


_add_study_commands()


# --- figures, report, all, bench -------------------------------------------------------------

@app.command()
def figures(config: Optional[str] = ConfigOpt, out: Optional[str] = OutOpt,
            set_: Optional[list[str]] = SetOpt) -> None:
    """Redraw every figure from the stored results into the figures folder (no training)."""
    from .experiments import figures_path, results_dir
    from .figures import draw_all

    cfg = _run(load_config, config, None, out, sets=set_)
    with _figures_held(cfg):
        written = _run(draw_all, results_dir(cfg), figures_path(cfg), log=_log, cfg=cfg)
    _out(f"{len(written)} files written to {figures_path(cfg)}/")


ReportOpts = {
    "author": typer.Option(None, "--author", help="Author name on the title page."),
    "student_number": typer.Option(None, "--student-number", help="Student number."),
    "course": typer.Option(None, "--course", help="Course name."),
    "title": typer.Option(None, "--title", help="Report title."),
}


FormatOpt = typer.Option(
    None, "--format", help="pdf (report.html and report.pdf) or tex (OUT/latex/: report.tex, "
    "references.bib, figures/*.pdf); repeat for both. Default: report.formats, [\"pdf\"].")
StrictOpt = typer.Option(False, "--strict", help="Exit non-zero when the main body exceeds "
                         "report.page_limit (the report is still written).")


def _report_overrides(author, student_number, course, title, formats=None) -> dict:
    extra = {f"report.{k}": v for k, v in (("author", author), ("student_number", student_number),
                                           ("course", course), ("title", title)) if v is not None}
    if formats:
        extra["report.formats"] = list(formats)
    return extra


@app.command()
def report(config: Optional[str] = ConfigOpt, out: Optional[str] = OutOpt,
           set_: Optional[list[str]] = SetOpt,
           author: Optional[str] = ReportOpts["author"],
           student_number: Optional[str] = ReportOpts["student_number"],
           course: Optional[str] = ReportOpts["course"],
           title: Optional[str] = ReportOpts["title"],
           format_: Optional[list[str]] = FormatOpt,
           strict: bool = StrictOpt) -> None:
    """Render the results and figures into OUT/report.html and OUT/report.pdf (or LaTeX)."""
    from .report import build_report

    extra = _report_overrides(author, student_number, course, title, format_)
    cfg = _run(load_config, config, None, out, sets=set_, extra=extra)
    with _locked(cfg), _figures_held(cfg):
        _, pdf = _run(build_report, cfg, log=_log, strict=strict)
    _print_documents(cfg, pdf)


def _print_documents(cfg: ExperimentConfig, pdf: Path) -> None:
    """The path of each document written, to stdout: the LaTeX export's, then the PDF's."""
    if "tex" in cfg.report.formats:
        _out(str(Path(cfg.out_dir) / "latex" / "report.tex"))
    if "pdf" in cfg.report.formats:
        _out(str(pdf))


@app.command(name="all")
def all_(config: Optional[str] = ConfigOpt, data: Optional[str] = DataOpt,
         out: Optional[str] = OutOpt,
         epochs: Optional[int] = typer.Option(
             None, "--epochs", help="Training epochs of every study (sets train.epochs and each "
             "study's own budget, e.g. shuffle.epochs)."),
         seeds: Optional[int] = SeedsOpt,
         subset: Optional[int] = SubsetOpt,
         device: Optional[str] = DeviceOpt, devices: Optional[int] = DevicesOpt,
         strategy: Optional[str] = StrategyOpt, set_: Optional[list[str]] = SetOpt,
         retrain: bool = RetrainOpt,
         plan: bool = PlanOpt,
         author: Optional[str] = ReportOpts["author"],
         student_number: Optional[str] = ReportOpts["student_number"],
         course: Optional[str] = ReportOpts["course"],
         title: Optional[str] = ReportOpts["title"],
         format_: Optional[list[str]] = FormatOpt,
         strict: bool = StrictOpt) -> None:
    """Every study in order (train, rotation, shuffle, ...), then the figures and the report."""
    from .experiments import figures_path, prepare_data, results_dir, studies, train_studies
    from .figures import draw_all
    from .report import build_report, check_strict, pdf_engine
    from .resources import templates_dir
    from .usertext import read_user_text

    t0 = time.perf_counter()
    extra = _report_overrides(author, student_number, course, title, format_)
    if epochs is not None:
        extra.update({"train.epochs": epochs, **{s.epochs_key: epochs for s in studies()}})
    cfg = _run(load_config, config, data, out, subset, device, devices, strategy, set_, extra,
               seeds)
    for study in studies():  # inputs of later studies are checked before any training
        _run(study.check, cfg)
    _run(read_user_text, cfg.report.user_text)
    _run(check_strict, cfg, strict)
    _run(templates_dir)  # a broken install, found before hours of training
    if "pdf" in cfg.report.formats:
        _run(pdf_engine)  # not after hours of training
    _run(_check_device, cfg)
    with _locked(cfg):
        prepared = _run(prepare_data, cfg, log=_log, fetch=not plan)
        planned = _plan(cfg, prepared, studies(), retrain, plan, one_call=True)
        if plan:
            return
        t_work = time.perf_counter()
        _log("=== training every study's runs")
        if _run(train_studies, studies(), prepared, cfg, retrain=retrain, log=_log) is None:
            return  # a DDP worker process: the main process carries on alone
        for study in studies():
            _log(f"=== {study.title}")
            # Their runs are trained (or retrained) above: each study reuses them.
            if not _run(study.run, cfg, prepared, retrain=False, log=_log):
                return
        t_studies = time.perf_counter()
        _log("=== figures")
        with _figures_held(cfg):  # drawn and placed as one
            _run(draw_all, results_dir(cfg), figures_path(cfg), log=_log)
            _log("=== report")
            _, pdf = _run(build_report, cfg, log=_log, strict=strict)
    from .report import duration

    estimate = (f"; {_estimate_against(planned, t_studies - t_work)} (then figures and report "
                f"{duration(time.perf_counter() - t_studies)})"
                if planned and planned.seconds else "")
    _log(f"all stages done in {time.perf_counter() - t0:.0f} s{estimate}")
    # Not the PDF's path alone: with report.formats = ["tex"] no PDF is written.
    _print_documents(cfg, pdf)


MAX_PROFILED_STEPS = 200
# A benchmark needs tens of steps; a typo of extra digits would otherwise time for days.
MAX_BENCH_STEPS = 100_000  # --warmup + --steps


@app.command()
def bench(config: Optional[str] = ConfigOpt, device: Optional[str] = DeviceOpt,
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
              None, "--notebook-data", help="Extracted image folder for --notebook."),
          side_by_side: Optional[int] = typer.Option(
              None, "--side-by-side", help="Also time this many runs trained side by side as "
              "one computation (0 or 1: skip; default 3, or 0 with train.compile)."),
          load: bool = typer.Option(
              False, "--load", help="Time training idle, then next to a busy loop and next to "
              "a second PyTorch job (a busy laptop); no evaluation or sweep."),
          profile: int = typer.Option(
              0, "--profile", help="Also profile this many training steps of one run: host "
              "and device time, kernel launches and synchronisations per step, top "
              "operations (0: skip).")) -> None:
    """Time training, evaluation and the 36-angle rotation sweep on this machine."""
    from .bench import (BenchConfig, check_notebook, format_load_table, format_table, run_bench,
                        run_load_bench)

    if side_by_side is not None and side_by_side < 0:
        _fail(f"--side-by-side {side_by_side}: use 0 (skip) or a number of runs")
    for name, v in (("--steps", steps), ("--warmup", warmup), ("--repeats", repeats),
                    ("--eval-images", eval_images), ("--sweep-angles", sweep_angles),
                    ("--sweep-images", sweep_images)):
        if v <= 0:
            _fail(f"{name} {v}: use a positive number")
    if warmup + steps > MAX_BENCH_STEPS:
        _fail(f"--warmup {warmup} and --steps {steps}: use at most {MAX_BENCH_STEPS:,} steps in "
              "all (tens give a steady rate)")
    if repeats > steps:  # each repeat times a window of whole steps
        _fail(f"--repeats {repeats} with --steps {steps}: each repeat times at least one step: "
              f"use at most --repeats {steps}, or more --steps")
    if sweep_angles > 36:
        _fail(f"--sweep-angles {sweep_angles}: the sweep has 36 angles (0, 10, ..., 350): "
              "use at most 36")
    if not 0 <= profile <= MAX_PROFILED_STEPS:
        # The profiler keeps every operation of the window in memory (hundreds a step).
        _fail(f"--profile {profile}: use 0 (skip) or a number of training steps up to "
              f"{MAX_PROFILED_STEPS}")
    if load and (notebook or notebook_data or side_by_side or profile):
        _fail("--load times training alone (idle and next to other programs): run "
              "--notebook, --side-by-side or --profile in a separate `reportgen bench`")
    _run(check_notebook, notebook, notebook_data)
    cfg = _run(load_config, config, device=device, sets=set_, writes=False)
    b = BenchConfig(warmup_steps=warmup, steps=steps, repeats=repeats, eval_images=eval_images,
                    sweep_angles=sweep_angles, sweep_images=sweep_images)
    if load:
        result = _run(run_load_bench, cfg, b)
        _out(json.dumps(result) if as_json else format_load_table(result), saved=False)
        return
    result = _run(run_bench, cfg, b, notebook, notebook_data, side_by_side, profile)
    _out(json.dumps(result) if as_json else format_table(result), saved=False)


def main() -> None:  # console-script entry point
    from .signals import install

    install()  # SIGTERM outside training ends with a message, like Ctrl-C
    app()


if __name__ == "__main__":
    sys.exit(main())
