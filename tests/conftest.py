"""Shared fixtures: a tiny generated CIFAR-10 image folder, and the overrides that shrink any
experiment to seconds on a CPU (helpers.py holds the functions behind them)."""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers import tiny_overrides, write_image_folder


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return write_image_folder(tmp_path / "cifar-folder")


@pytest.fixture
def tiny(image_folder, tmp_path):
    """(overrides, out_dir) for a seconds-long experiment on the tiny image folder."""
    out = tmp_path / "out"
    return tiny_overrides(image_folder, out), out
