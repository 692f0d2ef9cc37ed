"""Per-image predictions, kept with the results so that paired tests need no model and no data.

One `.npz` file of uint8 arrays: the predicted class of every image (for a rotation sweep, of
every image at every angle) and the labels. It is read with `allow_pickle=False`, so a planted
file cannot run code, and checked for shape and range before use.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from .errors import UserError
from .files import atomic_write


class PredictionsError(UserError):
    """A predictions file is missing or damaged."""


def save(path: Path, arrays: dict[str, np.ndarray]) -> None:
    def write(tmp: Path) -> None:
        buf = io.BytesIO()
        np.savez_compressed(buf, **{k: np.asarray(v, dtype=np.uint8) for k, v in arrays.items()})
        tmp.write_bytes(buf.getvalue())

    atomic_write(path, write)


def load(path: Path, command: str) -> dict[str, np.ndarray]:
    """All arrays of a predictions file; PredictionsError naming the command that rewrites it."""
    if not path.is_file():
        raise PredictionsError(f"{path} is missing (per-image predictions for the paired tests): "
                               f"run `reportgen {command}` again")
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise PredictionsError(f"{path} is damaged ({type(e).__name__}): run `reportgen "
                               f"{command}` again") from e
    for k, v in out.items():
        if v.dtype != np.uint8:
            raise PredictionsError(f"{path}: {k} is not a uint8 array: run `reportgen {command}` "
                                   "again")
    return out


def get(arrays: dict[str, np.ndarray], key: str, path: Path, command: str,
        shape_tail: tuple[int, ...]) -> np.ndarray:
    """One array, checked: present and ending in `shape_tail` (e.g. (n_images,))."""
    v = arrays.get(key)
    if v is None or tuple(v.shape[v.ndim - len(shape_tail):]) != shape_tail:
        raise PredictionsError(f"{path} lacks {key} of shape (..., {', '.join(map(str, shape_tail))}):"
                               f" run `reportgen {command}` again")
    return v
