"""Test helpers: tiny generated CIFAR-10 copies in every supported format, and one set of
overrides that shrinks any experiment to seconds on a CPU. Nothing here touches the network."""
from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from reportgen.data import CLASSES

REAL_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10-jpeg.tar"

N_TRAIN_PER_CLASS, N_TEST_PER_CLASS = 6, 2


def class_image(label: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """A 32x32 RGB image whose mean colour depends on its class, so a model can learn it."""
    base = np.zeros((32, 32, 3), dtype=np.float64)
    base[..., label % 3] = 40 + 20 * label
    base += rng.normal(0, 20, size=base.shape)
    return base.clip(0, 255).astype(np.uint8)


def write_image_folder(root: Path, fmt: str = "PNG", seed: int = 0,
                       n_train: int = N_TRAIN_PER_CLASS, n_test: int = N_TEST_PER_CLASS) -> Path:
    """train/<class>/*.png and test/<class>/*.png with n_train and n_test images per class."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for label, cls in enumerate(CLASSES):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                Image.fromarray(class_image(label, k, rng)).save(d / f"{k:04d}.png", fmt)
    return root


def make_tar(src: Path, dest: Path, arc_root: str = "cifar10-tiny", mode: str = "w") -> Path:
    with tarfile.open(dest, mode) as t:
        t.add(src, arcname=arc_root)
    return dest


def write_torchvision_batches(root: Path, seed: int = 0) -> Path:
    """torchvision's cifar-10-batches-py layout with tiny pickled batches."""
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)

    def batch(n_per_class):
        labels = [c for c in range(10) for _ in range(n_per_class)]
        data = np.stack([class_image(c, 0, rng).transpose(2, 0, 1).reshape(-1) for c in labels])
        return {"data": data, "labels": labels}

    for i in range(1, 6):
        (d / f"data_batch_{i}").write_bytes(pickle.dumps(batch(2)))
    (d / "test_batch").write_bytes(pickle.dumps(batch(2)))
    (d / "batches.meta").write_bytes(pickle.dumps({"label_names": list(CLASSES)}))
    return d


def patch_torchvision_md5(monkeypatch, batches_dir: Path, tarball: Path | None = None):
    """Point torchvision's integrity lists at the tiny files (its checks themselves stay on)."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import calculate_md5

    def md5(name):
        return calculate_md5(str(batches_dir / name))

    monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", md5(f"data_batch_{i}")]
                                                for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5("test_batch")]])
    monkeypatch.setattr(CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names",
                                          "md5": md5("batches.meta")})
    if tarball is not None:
        monkeypatch.setattr(CIFAR10, "tgz_md5", calculate_md5(str(tarball)))


def tiny_png() -> bytes:
    """A whole 1x1 PNG: a figure stub the report embeds (it checks that a PNG is whole)."""
    import io

    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    return buf.getvalue()


def tiny_overrides(source: Path, out: Path) -> dict:
    """Shrinks any experiment to seconds: tiny model, one epoch, small batches, CPU."""
    return {
        "data.source": str(source), "data.val_size": 10, "data.partial": True,
        "out_dir": str(out),
        "figures_dir": str(out / "figures"),
        "model.params": {"num_classes": 10, "num_blocks": [1, 1], "c_hidden": [4, 8]},
        "train.epochs": 1, "train.batch_size": 10, "train.eval_batch_size": 16,
        "train.val_every": 1, "train.device": "cpu", "train.progress_every": 1,
        "shuffle.epochs": 1,
        "shuffle.mlp": {"name": "mlp", "params": {"num_classes": 10, "hidden": [16]}},
        "rotation.angles": [0, 90, 180, 270],
    }


def overrides_to_args(overrides: dict) -> list[str]:
    """--set arguments for the CLI from an overrides dict (values as TOML)."""
    import json

    def toml(v):
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {toml(x)}" for k, x in v.items()) + "}"
        return json.dumps(v)

    args = []
    for k, v in overrides.items():
        args += ["--set", f"{k}={toml(v)}"]
    return args


def only_run(out: Path) -> Path:
    """The single run directory under OUT/runs."""
    runs = list((out / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def build_wheel(dest: Path) -> Path:
    """reportgen's wheel, built from a copy of the repository's sources (a build in the
    repository would leave build/ there), offline, with this environment's setuptools."""
    import shutil
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    src = dest / "src"
    for name in ("reportgen", "templates", "experiments"):
        shutil.copytree(repo / name, src / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(repo / name, src / name)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                        "--no-build-isolation", "--no-index", str(src), "-w", str(dest)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    (wheel,) = dest.glob("reportgen-*.whl")
    return wheel
