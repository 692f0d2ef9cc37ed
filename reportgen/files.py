"""Reading and writing the results files that connect the stages.

Everything is written to a temporary name and renamed, so a reader (or a crash) never sees
half a file and a failed stage never replaces a good result.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return {k: [float(r[k]) if r[k] != "" else float("nan") for r in rows]
            for k in (rows[0].keys() if rows else [])}
