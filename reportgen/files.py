"""Reading and writing the results files that connect the stages.

Everything is written to a temporary name and renamed, so a reader (or a crash) never sees
half a file and a failed stage never replaces a good result.
"""
from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


class MissingResults(FileNotFoundError):
    """A stage's input is missing; the message names the command that makes it."""


def read_json(path: Path, command: str) -> dict:
    """A results file, or MissingResults naming `reportgen <command>`."""
    path = Path(path)
    if not path.is_file():
        raise MissingResults(f"{path} is missing: run `reportgen {command}` first")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise MissingResults(f"{path} is damaged ({e}): run `reportgen {command}` again") from e


def read_metrics(path: Path) -> dict[str, list[float]]:
    """A run's metrics.csv as columns (empty cells, i.e. epochs without validation, are NaN)."""
    import pandas as pd

    return {k: [float(v) for v in col] for k, col in pd.read_csv(path).items()}


class Busy(RuntimeError):
    """Another reportgen process is writing into the same output folder."""


class OutputLock:
    """`OUT/.lock` while a command writes into OUT: a second command refuses, naming the first.

    A lock left by a process that no longer runs (killed, machine rebooted) is taken over.
    DDP worker processes (LOCAL_RANK > 0) run under their launcher's lock.
    """

    def __init__(self, out_dir: str | Path):
        self.path = Path(out_dir) / ".lock"
        self.held = False

    def __enter__(self):
        if int(os.environ.get("LOCAL_RANK", "0") or 0) > 0:
            return self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise Busy(f"cannot write to {self.path.parent} ({e.strerror or e}): choose a "
                       "writable --out") from e
        me = {"host": socket.gethostname(), "pid": os.getpid(),
              "command": " ".join(["reportgen", *sys.argv[1:]])}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except OSError as e:
                if not isinstance(e, FileExistsError):
                    raise Busy(f"cannot write to {self.path.parent} ({e.strerror or e}): "
                               "choose a writable --out") from e
                try:
                    other = json.loads(self.path.read_text())
                except (OSError, json.JSONDecodeError):
                    other = {}
                    if _age(self.path) < 10:  # being written by a process starting right now
                        raise Busy(f"{self.path.parent} is in use by another reportgen that "
                                   "is just starting: wait, or pass another --out") from None
                if other.get("host") == me["host"] and _pid_alive(other.get("pid")):
                    raise Busy(f"{self.path.parent} is in use by another reportgen (pid "
                               f"{other['pid']}: {other.get('command', '?')}): wait for it to "
                               "finish, or pass another --out") from None
                if other.get("host") not in (None, me["host"]):
                    raise Busy(f"{self.path.parent} is locked by reportgen on {other['host']} "
                               f"(pid {other.get('pid')}); delete {self.path} if it no longer runs")
                self.path.unlink(missing_ok=True)  # left by a process that is gone
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return self
        raise Busy(f"could not lock {self.path}: delete it if no reportgen is running")

    def __exit__(self, *exc):
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _age(path: Path) -> float:
    import time

    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return float("inf")


def _pid_alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
