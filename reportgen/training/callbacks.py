"""Lightning callbacks of a training run: metrics.csv, validation of the last epoch, and
checkpoints that are never half-written."""
from __future__ import annotations

import time
from pathlib import Path

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import Callback

from ..files import atomic_write, atomic_write_text
from .errors import TrainingError


class EpochMetrics(Callback):
    """One row per epoch in metrics.csv: losses, accuracies, learning rate, time, throughput."""

    FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_s",
              "images_per_s")

    def __init__(self, path: Path, log=None, name: str = "", metrics=None, batch_size: int = 0,
                 state_id: str = ""):
        """metrics(trainer) -> {name: value} (default: trainer.callback_metrics) and the
        images per batch (default: the train loader's) let one trainer keep several runs'
        metrics side by side, each callback with its own `state_id`."""
        self.path = path
        # Not `self.log`: Lightning sets that attribute on every callback.
        self.say, self.name = log, name  # one line per epoch (when there are no bars)
        self.metrics, self.batch_size, self.state_id = metrics, batch_size, state_id
        self.rows: list[dict] = []
        self._t0 = self._t1 = 0.0
        self._lr = float("nan")
        self._val_epoch = -1

    @property
    def state_key(self) -> str:
        return f"EpochMetrics[{self.state_id}]" if self.state_id else "EpochMetrics"

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
        m = trainer.callback_metrics if self.metrics is None else self.metrics(trainer)
        seconds = time.perf_counter() - self._t0
        train_seconds = self._t1 - self._t0  # without validation
        per_batch = self.batch_size or trainer.train_dataloader.batch_size
        n = trainer.num_training_batches * per_batch * trainer.world_size
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
        if trainer.is_global_zero and self.say is not None:
            r = self.rows[-1]
            val = "" if r["val_acc"] != r["val_acc"] else f", val acc {r['val_acc']:.2%}"
            self.say(f"{self.name} epoch {r['epoch']}/{trainer.max_epochs}: train loss "
                     f"{r['train_loss']:.3f}, acc {r['train_acc']:.2%}{val} ({seconds:.0f} s, "
                     f"{r['images_per_s']:.0f} img/s)")
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


def _read_back(path: Path) -> None:
    back = torch.load(path, map_location="cpu", weights_only=True)
    if "state_dict" not in back:
        raise OSError("the written file has no state_dict")


class VerifiedCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file, read back, then renamed over the old one, and
    read with `weights_only=True` (tensors and plain values; no code runs on load).

    A crash mid-write leaves the previous good checkpoint in place, and a save that failed
    silently is caught by the read-back.
    """

    def load_checkpoint(self, path, *args, weights_only=None, **kwargs):
        # Lightning's resume (`fit(ckpt_path=...)`) reads the file again through here: never
        # with pickle's full power, whatever Lightning's default.
        return super().load_checkpoint(path, *args, weights_only=True, **kwargs)

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            atomic_write(path, lambda tmp: torch.save(checkpoint, tmp), verify=_read_back)
        except BaseException as e:
            raise TrainingError(f"could not write checkpoint {path} ({e}): free disk space or "
                                "choose another --out; the previous checkpoint is unchanged") from e
