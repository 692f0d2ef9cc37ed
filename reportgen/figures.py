"""Results files -> PNG and SVG figures. Never touches a model.

Each study draws its own figures (its `draw`); this module redraws every registered study's
figures from the stored results and holds the helpers they share.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .errors import UserError
from .files import MissingResults, missing_folders, remove_empty

SPLIT_NAMES = {"val": "validation", "test": "test"}


def as_image(chw) -> np.ndarray:
    """A CHW uint8 image (nested lists from a results file) as HWC for imshow."""
    return np.asarray(chw, dtype=np.uint8).transpose(1, 2, 0)


def chance_line(ax, classes, **kw) -> float:
    """Mark chance level (one over the number of classes), in percent; returns it."""
    chance = 100 / len(classes)
    ax.axhline(chance, color="grey", lw=1, ls=":", label=f"chance ({chance:.0f}%)", **kw)
    return chance


def figure_files(figures_dir: Path, name: str) -> list[Path]:
    return [figures_dir / f"{name}.{ext}" for ext in ("png", "svg")]


class FiguresDirError(UserError):
    """The figures folder cannot be made or written."""


class FigureError(MissingResults):
    """A study did not write a figure it declares."""


FIGURES_WAIT_S = 600.0


@contextmanager
def figures_locked(figures_dir: Path, log=print, wait_s: float | None = None):
    """Hold the figures folder while a command draws into it or builds a report from it.

    The folder is figures_dir/<name>, shared by every output folder of one experiment: two
    `reportgen all --out run1` and `--out run2` finishing together drew into it at the same
    time, and a report could embed the other run's figures under its own stamp. Drawing and
    a report take seconds, so a second command waits its turn (up to `wait_s`) rather than
    failing after its training. A folder where no lock can be made (read-only) is only read
    from, which needs none."""
    from filelock import FileLock, Timeout

    wait_s = FIGURES_WAIT_S if wait_s is None else wait_s
    p = Path(figures_dir)
    lock = FileLock(p / ".lock", thread_local=False, is_singleton=False)
    made = missing_folders(p)
    try:
        p.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log(f"waiting for another reportgen that draws into {p} ...")
            try:
                lock.acquire(timeout=wait_s)
            except Timeout:
                raise FiguresDirError(
                    f"{p} has been in use by another reportgen for {wait_s / 60:.0f} min: let "
                    "it finish and run the same command again, or set another figures_dir"
                ) from None
    except OSError:
        lock = None  # drawing into it fails on its own, with its message
    try:
        yield
    finally:
        if lock is not None:
            # Nothing drawn into a folder this command made (no results yet): no empty
            # folders with a stray .lock are left. The lock file goes while still held.
            if made and [f.name for f in p.iterdir()] == [".lock"]:
                (p / ".lock").unlink(missing_ok=True)
            lock.release()
            remove_empty(made)


def source_stamp(figures_dir: Path, study_name: str) -> Path:
    """Records which results a study's figures were drawn from (see `stamp_text`)."""
    return Path(figures_dir) / f".{study_name}.source"


def stamp_text(results_dir: Path, results: dict) -> str:
    """The results folder and the checksum of the study's results file: the folder alone let
    a report embed figures drawn from an earlier version of the same file (say, Part 1's
    figures of one seed beside the numbers of two, after `reportgen train --seeds 2` drew its
    figures elsewhere)."""
    from .files import CHECKSUM

    return f"{Path(results_dir).resolve()}\n{results.get(CHECKSUM, '')}"


def stamp_folder(text: str) -> tuple[str, bool]:
    """A stamp's results folder, and whether it records the results' version (an older
    reportgen's stamp holds the folder alone)."""
    folder, versioned, _ = text.partition("\n")
    return folder, bool(versioned)


def require_figures_dir(figures_dir: Path) -> None:
    """Stop before any training where the figures folder could not be made: its nearest
    existing part must be a writable folder."""
    from .files import link_in_the_way, missing

    link = link_in_the_way(figures_dir)
    if link:
        raise FiguresDirError(f"cannot write figures to {figures_dir} ({link} {missing(link)}): "
                              "point the link at a folder (or make the one it names), or choose "
                              "another figures_dir, e.g. --set figures_dir=figures")
    p = Path(figures_dir)
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir() or not os.access(p, os.W_OK | os.X_OK):
        why = "not a folder" if not p.is_dir() else "not writable"
        raise FiguresDirError(f"cannot write figures to {figures_dir} ({p} is {why}): choose a "
                              "writable figures_dir, e.g. --set figures_dir=figures")


def draw_study(study, results_dir: Path, figures_dir: Path,
               results: dict | None = None) -> list[Path]:
    """Draw one study's figures from its results (read from `results_dir` unless given);
    every declared figure must be written. A stamp next to them records the results folder
    and file, so a report never embeds figures drawn from another output folder's results,
    or from an earlier version of them."""
    from .files import atomic_write_text

    if results is None:
        results = study.load(results_dir)
    try:
        Path(figures_dir).mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file in the way, a read-only place: before, the bare errno line
        require_figures_dir(figures_dir)  # names a link to nowhere in the way
        raise FiguresDirError(f"cannot write figures to {figures_dir} ({e.strerror or e}): "
                              "choose a writable figures_dir, e.g. --set figures_dir=figures")
    stale = {f: f.stat().st_mtime_ns for n in study.figures for f in figure_files(figures_dir, n)
             if f.is_file()}
    study.draw(results, results_dir, figures_dir)
    written = [f for n in study.figures for f in figure_files(figures_dir, n)]
    for f in written:
        if not f.is_file() or stale.get(f) == f.stat().st_mtime_ns:
            raise FigureError(f"study {study.name!r} declares figure {f.stem!r} but did not "
                              f"draw {f.name}: fix its draw() or its `figures` list")
    if study.figures:
        atomic_write_text(source_stamp(figures_dir, study.name), stamp_text(results_dir, results))
    return written


def draw_all(results_dir: Path, figures_dir: Path, log=print, cfg=None) -> list[Path]:
    """Redraw every registered study's figures whose results exist; name the command for the
    missing ones. Nothing to draw at all is an error naming every missing input. With `cfg`
    (the `figures` command's settings), a note says where the results were made with others."""
    from .experiments import studies

    written, missing, loaded = [], [], []
    for study in studies():
        try:
            results = study.load(results_dir)
            loaded.append((study, results))
            written += draw_study(study, results_dir, figures_dir, results)
        except FigureError:
            raise
        except MissingResults as e:
            missing.append(str(e))
    if not written and missing:
        raise MissingResults("no figures could be drawn: " + "; ".join(missing))
    for m in missing:
        log(f"skipped: {m}")
    if cfg is not None:
        from .experiments.base import changed_note, changed_settings

        changed = changed_settings(cfg, loaded)
        if changed:
            log(changed_note(changed, results_dir, "the figures show"))
    return written
