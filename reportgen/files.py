"""Reading and writing the files that connect the stages, and the output folder's lock.

Everything is written to a temporary name and renamed, so a reader (or a crash) never sees
half a file and a failed stage never replaces a good result.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Callable

from .errors import UserError


def atomic_write(path: Path, write: Callable[[Path], None],
                 verify: Callable[[Path], None] | None = None) -> None:
    """Write `path` by calling `write(tmp)` on a temporary name in the same folder, flushing
    it to disk, optionally `verify(tmp)`, then renaming it over `path`.

    The temporary name keeps the suffix, so writers that infer a format from it still work.
    Whatever fails, `path` is either the old file or the complete new one.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if verify is not None:
            verify(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


class MissingResults(UserError, FileNotFoundError):
    """A stage's input is missing or unusable; the message names the command that makes it."""


def read_json(path: Path, command: str):
    """A results file, or MissingResults naming `reportgen <command>`."""
    path = Path(path)
    if not path.is_file():
        raise MissingResults(f"{path} is missing: run `reportgen {command}` first")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MissingResults(f"{path} is damaged ({e}): run `reportgen {command}` again") from e


def read_metrics(path: Path) -> dict[str, list[float]]:
    """A run's metrics.csv as columns (empty cells, i.e. epochs without validation, are NaN)."""
    import pandas as pd

    return {k: [float(v) for v in col] for k, col in pd.read_csv(path).items()}


class Busy(UserError, RuntimeError):
    """Another reportgen process is writing into the same output folder."""


class OutputLock:
    """A kernel lock on `OUT/.lock` while a command writes into OUT.

    The operating system releases the lock when its process ends, however it ends, so a
    killed process never leaves a lock behind that two others could both take over. The
    holder's pid and command are kept in `OUT/.lock.owner` for the message a second command
    prints. DDP worker processes (LOCAL_RANK > 0) run under their launcher's lock.
    """

    def __init__(self, out_dir: str | Path):
        self.dir = Path(out_dir)
        self.path = self.dir / ".lock"
        self.owner = self.dir / ".lock.owner"
        self._lock = None

    def __enter__(self):
        from filelock import FileLock, Timeout

        if int(os.environ.get("LOCAL_RANK", "0") or 0) > 0:
            return self
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            lock = FileLock(self.path, timeout=0, thread_local=False, is_singleton=False)
            lock.acquire()
        except Timeout:
            try:
                other = json.loads(self.owner.read_text())
                who = f"pid {other['pid']}: {other['command']}"
            except (OSError, ValueError, KeyError, TypeError):
                who = "its details are not written yet"
            raise Busy(f"{self.dir} is in use by another reportgen ({who}): wait for it to "
                       "finish, or pass another --out") from None
        except OSError as e:
            raise Busy(f"cannot write to {self.dir} ({e.strerror or e}): choose a writable "
                       "--out") from e
        self._lock = lock
        me = {"pid": os.getpid(), "command": " ".join(["reportgen", *sys.argv[1:]])}
        try:
            atomic_write_text(self.owner, json.dumps(me))
        except OSError:
            pass  # the lock holds without its description
        return self

    def __exit__(self, *exc):
        if self._lock is not None:
            self.owner.unlink(missing_ok=True)
            self._lock.release()
            self._lock = None
