"""A run directory: its spec and key, its files (config.json, checkpoints, results.json), and
the checks made before a run starts or resumes.

A run is keyed by everything that changes its result (model, optimiser, training settings,
data content and split, pixel permutation), so an unchanged config reuses a finished run and
a changed one never picks up a stale checkpoint.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import platform
import shutil
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import (DataConfig, ModelConfig, OptimConfig, TrainConfig, cut, digest,
                      is_path_component, to_dict)
from ..files import (atomic_write_text, file_sha256, is_sealed, missing, read_text,
                     require_real_folders)
from ..schema import RUN, SchemaError, check
from .errors import TrainingError

if TYPE_CHECKING:  # imported where used: the study declarations need none of torch
    import torch

RESULTS_VERSION = 1
# Settings that say how a run is executed, not what it computes: not part of its key.
EXECUTION_ONLY = ("device", "strategy", "eval_batch_size", "compile", "compile_mode",
                  "progress_every", "side_by_side", "side_by_side_layout")
# The experiment's list of seeds is not part of one run's key: each run trains one `seed`.
NOT_IN_KEY = (*EXECUTION_ONLY, "seeds")
# The data settings in a run's key (with the data's content digest).
DATA_IN_KEY = ("val_size", "split_seed", "subset")
PREDICTIONS = "predictions.npz"  # per-image predictions on the validation and test images


@dataclass(frozen=True)
class RunSpec:
    """Everything that decides one training run's result, plus how to run it."""
    label: str  # e.g. "resnet", "resnet-rotaug", "mlp-shuffled"
    model: ModelConfig
    optim: OptimConfig
    train: TrainConfig
    data: DataConfig
    data_digest: str  # content hash of the decoded CIFAR-10
    perm: tuple[int, ...] | None = None  # pixel permutation, or None
    # The settings its learning rate and weight decay come from, for advice (not in its key):
    # Part 3's MLP takes them from shuffle.mlp_lr and shuffle.mlp_weight_decay.
    optim_keys: tuple[str, str] = ("optim.lr", "optim.weight_decay")

    def key(self) -> str:
        t = to_dict(self.train)
        for k in NOT_IN_KEY:
            t.pop(k)
        return digest({"model": self.model, "optim": self.optim, "train": t,
                       "data": {**{k: getattr(self.data, k) for k in DATA_IN_KEY},
                                "content": self.data_digest},
                       "perm": digest(list(self.perm)) if self.perm else None})

    def for_seed(self, seed: int) -> "RunSpec":
        """The same run with another seed (its own key and run directory)."""
        return replace(self, train=replace(self.train, seed=seed, seeds=()))

    def run_dir(self, out_dir: str | Path) -> Path:
        if not is_path_component(self.label):  # labels come from code: a bug, not input
            raise ValueError(f"run label {self.label!r} is not a plain file name")
        path = Path(out_dir) / "runs" / f"{self.label}-{self.key()}"
        require_real_folders(path.parent, path, path / "checkpoints")
        return path

    def write_config(self, run_dir: Path) -> None:
        """config.json (and permutation.json): what the run directory holds, in plain files."""
        atomic_write_text(run_dir / "config.json", json.dumps(
            {"label": self.label, "key": self.key(), "model": to_dict(self.model),
             "optim": to_dict(self.optim), "train": to_dict(self.train),
             "data": to_dict(self.data), "data_digest": self.data_digest,
             "pixel_permutation": self.perm is not None}, indent=2))
        if self.perm is not None:
            atomic_write_text(run_dir / "permutation.json", json.dumps(list(self.perm)))


def versions() -> dict[str, str]:
    import pytorch_lightning as pl
    import torch
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "pytorch_lightning": pl.__version__}


def device_description(accelerator: str) -> str:
    import torch

    if accelerator == "gpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    name = platform.processor() or platform.machine()
    try:  # Linux names the CPU model here; platform.processor() is often empty
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    threads = torch.get_num_threads()
    return f"{name} ({threads} thread{'s' if threads != 1 else ''})"


def read_results(run_dir: Path) -> dict | None:
    """The finished run's results, or None if it has not finished, or if its results.json is
    damaged, changed since it was written (see files.seal) or of an older version: training
    then evaluates its best checkpoint again (or trains it, if it has none)."""
    p = run_dir / "results.json"
    if not p.is_file():
        return None
    try:
        res = json.loads(read_text(p))
    except (OSError, ValueError, RecursionError):  # as files.read_json
        return None
    if not is_sealed(res) or res.get("version") != RESULTS_VERSION:
        return None
    try:  # sealed, yet not what reportgen writes (forged, another tool's): not this run's
        check(res, RUN)
    except SchemaError:
        return None
    try:  # its per-image predictions (the paired tests') as they were scored
        if file_sha256(run_dir / PREDICTIONS) != res.get("predictions_sha256"):
            return None
    except OSError:
        return None
    # Where the run is now: an output folder may have been moved or copied (say, from a GPU
    # machine) since the paths inside were written.
    res["run_dir"] = str(run_dir)
    res["best_checkpoint"] = str(run_dir / "checkpoints" / Path(res["best_checkpoint"]).name)
    return res


def check_output_space(run_dir: Path, n_params: int, epochs: int) -> None:
    """Fail before training if the output folder is not writable or too full for the run."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise TrainingError(f"cannot write to {run_dir} ({e.strerror or e}): choose a writable "
                            "--out") from e
    # Two checkpoints with optimiser state (~3 copies of the weights each), a temporary copy
    # while saving, logs, and a margin.
    need = 4 * n_params * 3 * 3 + epochs * 20_000 + 50 * 2**20
    free = shutil.disk_usage(run_dir).free
    if free < need:
        raise TrainingError(f"only {free / 2**20:.0f} MiB free in {run_dir}, the run needs about "
                            f"{need / 2**20:.0f} MiB: free some space or choose another --out")


def load_checkpoint_dict(path: Path, mmap: bool = False) -> dict:
    """A checkpoint's contents, read with `weights_only=True`: tensors and plain values only,
    so a planted file (a pickle whose `__reduce__` runs code) fails to load instead of running.
    Every load of a checkpoint in reportgen goes through this or passes weights_only=True.
    `mmap`: the tensors stay in the file until read (for looking at their shapes)."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


class _Mismatch(ValueError):
    """A checkpoint's settings and weights disagree (the message says how)."""


def _check_weights(ck: dict, path: Path) -> None:
    """Refuse a checkpoint whose settings describe another network than the weights it holds,
    before that network is built: a 62 KB file whose settings asked for a ResNet with 12,000
    channels made Lightning allocate and initialise it, and the kernel's OOM killer ended the
    command (exit 137, no message). Every tensor's name and shape are compared on the meta
    device, which allocates nothing (weights of other shapes also failed only after the
    network was built); a network that does match is checked against the memory free now."""
    import torch

    from ..models import build_model, check_model
    from . import memory

    hp = ck["hyper_parameters"]
    name, params = hp["model_name"], dict(hp["model_params"])
    check_model(name, params)
    with torch.device("meta"):
        shapes = {f"model.{k}": tuple(t.shape)
                  for k, t in build_model(name, **params).state_dict().items()}
    weights = ck["state_dict"]
    held = sum(t.numel() for k, t in weights.items() if k.startswith("model."))
    if {k: tuple(t.shape) for k, t in weights.items() if k.startswith("model.")} != shapes:
        described = sum(math.prod(v) for v in shapes.values())
        raise _Mismatch(f"its settings describe {len(shapes):,} tensors of {described:,} "
                        f"weights, it holds {held:,} weights of other shapes")
    free, need = memory.host_available(), 3 * 4 * held  # the file's, the network's, a copy
    if free is not None and need > free:
        raise TrainingError(f"checkpoint {path} holds a network of {held:,} weights, about "
                            f"{memory.gib(need)} to load, more than the "
                            f"{memory.gib(free)} available on this machine: free memory, or "
                            "load it on a machine with more")


def _why(e: Exception, path: Path) -> str:
    """Why a checkpoint failed to load, in a few words: the mismatch found, what the file is
    not, what it lacks, or the error's type and the first line of its message."""
    if isinstance(e, _Mismatch):
        return str(e)
    try:
        if path.stat().st_size == 0:
            return "the file is empty"
        if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
            return "not a file that torch.save wrote"
    except OSError:
        pass
    if isinstance(e, pickle.UnpicklingError):  # torch's message suggests loading it anyway
        return ("it holds Python objects beyond tensors and plain values, which could run code "
                "when loaded: it was not loaded")
    if isinstance(e, KeyError) and e.args:
        return f"it lacks {cut(repr(e.args[0]))}"
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {cut(first)}" if first else type(e).__name__


def _check_checkpoint(path: Path, spec: RunSpec) -> int:
    """The epoch a checkpoint of this run stops at; a damaged or foreign one is named."""
    try:
        ck = load_checkpoint_dict(path)
        hp = ck["hyper_parameters"]
        ok = hp["model_name"] == spec.model.name and dict(hp["model_params"]) == to_dict(
            spec.model.params)
        epoch = int(ck["epoch"])
        if ok:
            _check_weights(ck, path)
    except TrainingError:
        raise
    except Exception as e:
        raise TrainingError(f"checkpoint {path} is damaged or not a reportgen checkpoint "
                            f"({_why(e, path)}): delete it to continue from an earlier "
                            "checkpoint, or pass --retrain to start this run again") from e
    if not ok:
        raise TrainingError(f"checkpoint {path} belongs to another model "
                            f"({hp.get('model_name')}): delete it, or pass --retrain")
    return epoch


def resume_point(ckpt_dir: Path, spec: RunSpec) -> Path | None:
    """last.ckpt if present; else best.ckpt (e.g. after deleting a damaged last.ckpt)."""
    last, best = ckpt_dir / "last.ckpt", ckpt_dir / "best.ckpt"
    if last.is_file():
        try:
            _check_checkpoint(last, spec)
            return last
        except TrainingError as e:
            if best.is_file():
                epoch = _check_checkpoint(best, spec)
                raise TrainingError(f"{e}; or delete it to continue from {best} "
                                    f"(end of epoch {epoch + 1})") from None
            raise
    if best.is_file():
        _check_checkpoint(best, spec)
        return best
    return None


def resume_hint(run_dir: Path) -> str:
    last = run_dir / "checkpoints" / "last.ckpt"
    where = f"from {last}" if last.is_file() else "from the start (no epoch had finished)"
    return (f"training of {run_dir.name} was interrupted: run the same command again to resume "
            f"{where}")


def _finished_run_of(path: Path) -> Path | None:
    """The run folder a checkpoint belongs to, if that run has finished (its results.json)."""
    run_dir = path.parent.parent
    return run_dir if path.parent.name == "checkpoints" and (run_dir / "results.json").is_file() \
        else None


def load_classifier(path: str | Path, device: str | torch.device = "cpu"):
    """Load a trained Classifier from a checkpoint file, with a clear error if it is unusable."""
    import torch

    from .module import Classifier

    path = Path(path)
    run_dir = _finished_run_of(path)
    # A finished run without usable weights: training again would reuse the run as finished
    # (and --retrain would train every run of the study), so the advice is that one run.
    anew = (f"run {run_dir.name} lost its trained weights: delete {run_dir} and run the same "
            "command again to train that run anew") if run_dir else None
    if not path.is_file():
        what = "is not a regular file" if path.exists() else missing(path)
        raise TrainingError(f"checkpoint {path} {what}, so {anew}" if anew else
                            f"checkpoint {path} {what}: run `reportgen train` first, or pass "
                            "a checkpoint file")
    try:
        _check_weights(load_checkpoint_dict(path, mmap=True), path)
        model = Classifier.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    except TrainingError:
        raise
    except Exception as e:
        if anew is None and path.parent.name != "checkpoints":  # a file the user named
            anew = ("pass a checkpoint that `reportgen train` wrote, e.g. "
                    "OUT/runs/<run>/checkpoints/best.ckpt")
        raise TrainingError(f"checkpoint {path} is damaged or not a reportgen checkpoint "
                            f"({_why(e, path)}): "
                            + (anew or "run `reportgen train --retrain`")) from e
    return model.to(torch.device(device))
