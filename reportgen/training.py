"""Training with PyTorch Lightning: the LightningModule, the Trainer set-up, checkpoints, logs,
and the run directory with its `results.json`.

A run is keyed by everything that changes its result (model, optimiser, training settings,
data content and split, pixel permutation), so an unchanged config reuses a finished run and
a changed one never picks up a stale checkpoint.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import Callback, LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import TensorBoardLogger

from . import evaluation, transforms
from .config import (AugmentConfig, DataConfig, ModelConfig, OptimConfig, TrainConfig, digest,
                     from_dict, to_dict)
from .data import Splits, batches
from .files import atomic_write_text
from .models import build_model, count_parameters, prefers_channels_last

RESULTS_VERSION = 1


class TrainingError(RuntimeError):
    """Training cannot start or went wrong; the message says what to do."""


# --- the LightningModule -----------------------------------------------------------------

class Classifier(pl.LightningModule):
    """Image classifier: model from the registry, the input pipeline, SGD/Adam + MultiStepLR.

    Only plain values are hyperparameters, so `Classifier.load_from_checkpoint(path)` rebuilds
    the model and its input pipeline (including a pixel permutation) from the file alone.
    """

    def __init__(self, model_name: str, model_params: dict, optim: dict, augment: dict,
                 seed: int = 42, perm: list[int] | None = None, channels_last: bool = True):
        super().__init__()
        self.save_hyperparameters()
        self.model = build_model(model_name, **model_params)
        # Checkpoints hold plain dicts; from_dict restores the typed, validated configs.
        self.optim_cfg = from_dict(OptimConfig, optim, "optim")
        self.augment_cfg = from_dict(AugmentConfig, augment, "augment")
        self.channels_last = channels_last and prefers_channels_last(model_name, model_params)
        if perm is not None:
            self.register_buffer("perm", transforms.check_permutation(torch.tensor(perm)),
                                 persistent=False)
        else:
            self.perm = None
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self._gen: torch.Generator | None = None
        self._loss_sum: torch.Tensor | None = None
        self.__dict__["_step_model"] = None  # not a submodule: checkpoints hold `model` only

    # The input pipeline: uint8 -> normalised (-> augmented) (-> extra transform) (-> permuted).
    def prepare(self, x: torch.Tensor, train: bool = False,
                extra: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        x = transforms.normalize(x)
        if train:
            x = transforms.augment(x, self.augment_cfg, self._generator())
        if extra is not None:
            x = extra(x)
        if self.perm is not None:
            x = transforms.permute_pixels(x, self.perm)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _generator(self) -> torch.Generator:
        if self._gen is None or self._gen.device != self.device:
            self._gen = torch.Generator(device=self.device)
            self._seed_generator()
        return self._gen

    def _seed_generator(self) -> None:
        # Augmentation draws depend only on (seed, epoch, rank): a resumed run repeats them.
        epoch = self.trainer.current_epoch if self._trainer is not None else 0
        rank = self.global_rank if self._trainer is not None else 0
        self._gen.manual_seed(self.hparams.seed * 1_000_003 + epoch * 1009 + rank)

    def on_train_epoch_start(self) -> None:
        self._generator()
        self._seed_generator()
        self._loss_sum = torch.zeros((), device=self.device)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        x, y = batch
        return self.prepare(x, train=self.trainer.training), y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def predict_proba(self, x_uint8: torch.Tensor, extra=None, net=None) -> torch.Tensor:
        """Class probabilities; `net` may be an inference copy of the model (see fold_batchnorm)."""
        net = self.model if net is None else net
        return net(self.prepare(x_uint8, extra=extra)).float().softmax(-1)

    def set_step_model(self, fn: Callable) -> None:
        """Use `fn` (e.g. a torch.compile'd model) for training steps; weights are shared."""
        self.__dict__["_step_model"] = fn

    def configure_optimizers(self):
        o = self.optim_cfg
        if o.name == "sgd":
            opt = torch.optim.SGD(self.parameters(), lr=o.lr, momentum=o.momentum,
                                  weight_decay=o.weight_decay)
        elif o.name == "adam":
            opt = torch.optim.Adam(self.parameters(), lr=o.lr, weight_decay=o.weight_decay)
        else:
            opt = torch.optim.AdamW(self.parameters(), lr=o.lr, weight_decay=o.weight_decay)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(o.milestones),
                                                     gamma=o.gamma)
        return [opt], [sched]

    def training_step(self, batch, batch_idx):
        x, y = batch
        step = self.model if self._step_model is None else self._step_model
        logits = step(x)
        loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(-1) == y).float().mean()
        self._loss_sum += loss.detach()
        # on_epoch metrics accumulate on the device: no host synchronisation per step.
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("train_acc", acc, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("loss", loss, on_step=True, on_epoch=False, prog_bar=True, logger=False)
        return loss

    def _check_finite(self) -> None:
        if self._loss_sum is not None and not torch.isfinite(self._loss_sum):
            raise TrainingError(
                f"training diverged in epoch {self.current_epoch + 1}: the loss became NaN or "
                f"infinite; lower the learning rate (optim.lr = {self.optim_cfg.lr}), e.g. "
                f"--set optim.lr={self.optim_cfg.lr / 10:g}")

    def on_validation_epoch_start(self) -> None:
        if self.trainer.training or self.trainer.state.fn == "fit":
            self._check_finite()  # before ModelCheckpoint could keep a diverged model

    def on_train_epoch_end(self) -> None:
        self._check_finite()

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.model(x)
        self.log("val_loss", F.cross_entropy(logits, y), sync_dist=True)
        self.log("val_acc", (logits.argmax(-1) == y).float().mean(), prog_bar=True, sync_dist=True)


# --- callbacks -----------------------------------------------------------------------------

class EpochMetrics(Callback):
    """One row per epoch in metrics.csv: losses, accuracies, learning rate, time, throughput."""

    FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_s",
              "images_per_s")

    def __init__(self, path: Path):
        self.path = path
        self.rows: list[dict] = []
        self._t0 = 0.0
        self._lr = float("nan")
        self._val_epoch = -1

    def state_dict(self) -> dict:
        return {"rows": self.rows}

    def load_state_dict(self, state: dict) -> None:
        self.rows = list(state.get("rows", []))

    def on_train_epoch_start(self, trainer, module) -> None:
        self._t0 = self._t1 = time.perf_counter()
        self._lr = trainer.optimizers[0].param_groups[0]["lr"]

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        # End of the last training step, before validation starts. On a GPU this is when the
        # step was queued; it runs within milliseconds, negligible against an epoch.
        self._t1 = time.perf_counter()

    def on_validation_epoch_end(self, trainer, module) -> None:
        if not trainer.sanity_checking:
            self._val_epoch = trainer.current_epoch

    def on_train_epoch_end(self, trainer, module) -> None:
        m = trainer.callback_metrics
        seconds = time.perf_counter() - self._t0
        train_seconds = self._t1 - self._t0  # without validation
        n = trainer.num_training_batches * trainer.train_dataloader.batch_size * trainer.world_size
        validated = self._val_epoch == trainer.current_epoch

        def val(key):
            return float(m[key]) if key in m else float("nan")

        self.rows = [r for r in self.rows if r["epoch"] < trainer.current_epoch + 1]
        self.rows.append({"epoch": trainer.current_epoch + 1, "train_loss": val("train_loss"),
                          "train_acc": val("train_acc"),
                          "val_loss": val("val_loss") if validated else float("nan"),
                          "val_acc": val("val_acc") if validated else float("nan"),
                          "lr": self._lr, "epoch_s": seconds,
                          "images_per_s": n / max(train_seconds, 1e-9)})
        if trainer.is_global_zero:
            import pandas as pd

            table = pd.DataFrame(self.rows, columns=list(self.FIELDS))
            atomic_write_text(self.path, table.to_csv(index=False, float_format="%.6g"))


class ValidateLastEpoch(Callback):
    """Validate every `every` epochs and after the final epoch, so the last epoch always counts."""

    def __init__(self, epochs: int, every: int):
        self.epochs, self.every = epochs, every

    def on_train_epoch_start(self, trainer, module) -> None:
        e = trainer.current_epoch + 1
        # Lightning validates when epoch % check_val_every_n_epoch == 0.
        trainer.check_val_every_n_epoch = 1 if (e % self.every == 0 or e == self.epochs) \
            else self.epochs + 1


class VerifiedCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file, read back, then renamed over the old one.

    A crash mid-write leaves the previous good checkpoint in place, and a save that failed
    silently is caught by the read-back.
    """

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            torch.save(checkpoint, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            back = torch.load(tmp, map_location="cpu", weights_only=False)
            if "state_dict" not in back:
                raise OSError("the written file has no state_dict")
            os.replace(tmp, path)
        except BaseException as e:
            tmp.unlink(missing_ok=True)
            raise TrainingError(f"could not write checkpoint {path} ({e}): free disk space or "
                                "choose another --out; the previous checkpoint is unchanged") from e


# --- run specification and directories -----------------------------------------------------

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

    def key(self) -> str:
        t = to_dict(self.train)
        for k in ("device", "strategy", "eval_batch_size", "compile", "progress_every"):
            t.pop(k)  # how the run is executed, not what it computes
        return digest({"model": self.model, "optim": self.optim, "train": t,
                       "data": {"val_size": self.data.val_size, "split_seed": self.data.split_seed,
                                "subset": self.data.subset, "content": self.data_digest},
                       "perm": digest(list(self.perm)) if self.perm else None})

    def run_dir(self, out_dir: str | Path) -> Path:
        return Path(out_dir) / "runs" / f"{self.label}-{self.key()}"


def versions() -> dict[str, str]:
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "pytorch_lightning": pl.__version__}


def device_description(accelerator: str) -> str:
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
    return f"{name} ({torch.get_num_threads()} threads)"


def read_results(run_dir: Path) -> dict | None:
    """The finished run's results, or None if it has not finished (or the file is damaged)."""
    p = run_dir / "results.json"
    if not p.is_file():
        return None
    try:
        res = json.loads(p.read_text())
        return res if res.get("version") == RESULTS_VERSION else None
    except (OSError, json.JSONDecodeError):
        return None


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


def resolve_accelerator(device: str) -> str:
    if device == "gpu" and not torch.cuda.is_available():
        raise TrainingError("--device gpu was asked for but no CUDA GPU is visible: use "
                            "--device cpu or auto")
    if device == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return device


def torch_device(accelerator: str) -> torch.device:
    """The torch device of a Lightning accelerator name ("gpu" -> the current CUDA device)."""
    return torch.device("cuda" if accelerator == "gpu" else "cpu")


def eval_batch_size(cfg: TrainConfig, device: torch.device) -> int:
    """train.eval_batch_size, or for 0 the measured best: 64 on a CPU (a batch's activations
    stay in cache), 1024 on a GPU (enough work per kernel)."""
    if cfg.eval_batch_size:
        return cfg.eval_batch_size
    return 1024 if device.type == "cuda" else 64


def resolve_precision(precision: str, accelerator: str) -> str:
    if precision == "32":
        return "32-true"
    if precision != "auto":
        return precision
    if accelerator == "gpu" and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


# --- training one run ----------------------------------------------------------------------

def _quiet_lightning() -> None:
    # Warnings that do not apply to in-memory data (named precisely, not a blanket filter).
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*GPU available but not used.*")


def train_run(spec: RunSpec, splits: Splits, out_dir: str | Path, retrain: bool = False,
              log: Callable[[str], None] = print) -> dict:
    """Train (or reuse, or resume) the run `spec` and return its results.json content."""
    run_dir = spec.run_dir(out_dir)
    if not retrain and (res := read_results(run_dir)) is not None:
        log(f"reusing finished run {run_dir} (val {res['val_acc']:.2%}, test "
            f"{res['test_acc']:.2%}); pass --retrain to train again")
        return res
    cfg = spec.train
    accelerator = resolve_accelerator(cfg.device)
    precision = resolve_precision(cfg.precision, accelerator)
    main_process = int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(
        os.environ.get("NODE_RANK", "0")) == 0
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    module = Classifier(spec.model.name, dict(spec.model.params), to_dict(spec.optim),
                        to_dict(cfg.augment), seed=cfg.seed,
                        perm=list(spec.perm) if spec.perm else None)
    n_params = count_parameters(module.model)
    if main_process:
        check_output_space(run_dir, n_params, cfg.epochs)
    ckpt_dir = run_dir / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    if retrain and main_process:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        (run_dir / "results.json").unlink(missing_ok=True)
    resume = _resume_point(ckpt_dir, spec)
    if resume is not None:
        log(f"resuming {run_dir.name} from {resume}")
    if main_process:
        atomic_write_text(run_dir / "config.json", json.dumps(
            {"label": spec.label, "key": spec.key(), "model": to_dict(spec.model),
             "optim": to_dict(spec.optim), "train": to_dict(cfg), "data": to_dict(spec.data),
             "data_digest": spec.data_digest, "pixel_permutation": spec.perm is not None},
            indent=2))
        if spec.perm is not None:
            atomic_write_text(run_dir / "permutation.json", json.dumps(list(spec.perm)))
    _quiet_lightning()
    if cfg.compile:
        module.set_step_model(torch.compile(module.model))
    best_cb = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val_acc",
                              mode="max", save_top_k=1, enable_version_counter=False)
    # Saved after every epoch (not only validated ones), so a resume loses at most one.
    last_cb = ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1,
                              every_n_epochs=1, save_on_train_epoch_end=True,
                              enable_version_counter=False)
    metrics_cb = EpochMetrics(run_dir / "metrics.csv")
    trainer = pl.Trainer(
        accelerator=accelerator, devices=cfg.devices, strategy=cfg.strategy,
        precision=precision, max_epochs=cfg.epochs, check_val_every_n_epoch=cfg.val_every,
        callbacks=[best_cb, last_cb, LearningRateMonitor("epoch"), metrics_cb,
                   ValidateLastEpoch(cfg.epochs, cfg.val_every),
                   TQDMProgressBar(refresh_rate=cfg.progress_every)],
        logger=TensorBoardLogger(str(run_dir), name="tensorboard", version="",
                                 default_hp_metric=False),
        plugins=[VerifiedCheckpointIO()], num_sanity_val_steps=0,
        enable_model_summary=False, deterministic=False, log_every_n_steps=50)
    data_device = torch.device("cpu")
    if accelerator == "gpu":
        # The whole data set (~180 MB as uint8) lives on the GPU: batches are gathered and
        # augmented there, with nothing copied from the host per step.
        data_device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.backends.cudnn.benchmark = True
    train_dl = batches(splits.train_x.to(data_device), splits.train_y.to(data_device),
                       cfg.batch_size, shuffle_seed=cfg.seed, drop_last=True)
    val_dl = batches(splits.val_x.to(data_device), splits.val_y.to(data_device),
                     eval_batch_size(cfg, data_device))
    if len(train_dl) == 0:
        raise TrainingError(f"{len(splits.train_x)} training images are fewer than one batch "
                            f"of {cfg.batch_size}: use a larger --subset or a smaller batch")
    t0 = time.perf_counter()
    try:
        trainer.fit(module, train_dl, val_dl, ckpt_path=str(resume) if resume else None)
    except SystemExit:
        # Lightning ends Ctrl-C with exit(1), and SIGTERM (after the epoch in progress, whose
        # checkpoint it saves) with SIGTERMException, a SystemExit.
        if trainer.interrupted:
            raise Interrupted(_resume_hint(run_dir, last)) from None
        raise
    wall = time.perf_counter() - t0
    if not trainer.is_global_zero:
        return {}
    best = Path(best_cb.best_model_path) if best_cb.best_model_path else last
    log(f"evaluating {best.name} on the validation and test images ...")
    model = Classifier.load_from_checkpoint(best, map_location="cpu")
    model = model.to(torch_device(accelerator))
    bs = eval_batch_size(cfg, model.device)
    val = evaluation.score(model, splits.val_x, splits.val_y, bs)
    test = evaluation.score(model, splits.test_x, splits.test_y, bs)
    rows = metrics_cb.rows
    train_seconds = sum(r["epoch_s"] for r in rows)
    images_per_s = sorted(r["images_per_s"] for r in rows)[len(rows) // 2]  # median epoch
    best_epoch = torch.load(best, map_location="cpu", weights_only=False)["epoch"] + 1
    results = {
        "version": RESULTS_VERSION, "label": spec.label, "key": spec.key(),
        "run_dir": str(run_dir), "model": spec.model.name,
        "val_acc": val.accuracy, "test_acc": test.accuracy,
        "val_per_class": val.per_class_accuracy, "test_per_class": test.per_class_accuracy,
        "best_checkpoint": str(best), "best_epoch": best_epoch, "epochs": cfg.epochs,
        "parameters": n_params, "train_images": len(splits.train_x),
        "wall_time_s": wall, "train_time_s": train_seconds,
        "train_images_per_s": images_per_s,
        "accelerator": accelerator, "device": device_description(accelerator),
        "devices": cfg.devices, "strategy": cfg.strategy, "precision": precision,
        "versions": versions(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_text(run_dir / "results.json", json.dumps(results, indent=2))
    log(f"{spec.label}: {cfg.epochs} epochs in {wall:.0f} s "
        f"({images_per_s:.0f} train img/s) - val {val.accuracy:.2%}, "
        f"test {test.accuracy:.2%} (best epoch {best_epoch}) -> {run_dir}")
    return results


class Interrupted(TrainingError):
    """Training was stopped by Ctrl-C or SIGTERM; the message says how to resume."""


def _resume_hint(run_dir: Path, last: Path) -> str:
    where = f"from {last}" if last.is_file() else "from the start (no epoch had finished)"
    return (f"training of {run_dir.name} was interrupted: run the same command again to resume "
            f"{where}")


def _check_checkpoint(path: Path, spec: RunSpec) -> int:
    """The epoch a checkpoint of this run stops at; a damaged or foreign one is named."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
        hp = ck["hyper_parameters"]
        ok = hp["model_name"] == spec.model.name and dict(hp["model_params"]) == to_dict(
            spec.model.params)
        epoch = int(ck["epoch"])
    except Exception as e:
        raise TrainingError(f"checkpoint {path} is damaged or not a reportgen checkpoint "
                            f"({type(e).__name__}): delete it to continue from an earlier "
                            "checkpoint, or pass --retrain to start this run again") from e
    if not ok:
        raise TrainingError(f"checkpoint {path} belongs to another model "
                            f"({hp.get('model_name')}): delete it, or pass --retrain")
    return epoch


def _resume_point(ckpt_dir: Path, spec: RunSpec) -> Path | None:
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


def load_classifier(path: str | Path, device: str = "cpu") -> Classifier:
    """Load a trained Classifier from a checkpoint file, with a clear error if it is unusable."""
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"checkpoint {path} does not exist: run `reportgen train` first")
    try:
        model = Classifier.load_from_checkpoint(path, map_location="cpu")
    except Exception as e:
        raise TrainingError(f"checkpoint {path} is damaged or not a reportgen checkpoint "
                            f"({type(e).__name__}): run `reportgen train --retrain`") from e
    return model.to(torch.device(device))
