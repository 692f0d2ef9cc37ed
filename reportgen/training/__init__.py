"""Training with PyTorch Lightning, one module per responsibility:

- `module.py`: the LightningModule (model, input pipeline, optimiser and schedule);
- `callbacks.py`: metrics.csv, validation of the last epoch, verified checkpoints;
- `rundir.py`: the run's spec and key, its directory and files, resume checks;
- `memory.py`: whether a run (or a group) fits in memory, checked before anything starts;
- `train.py`: `train_run` = set-up, fit, final evaluation;
- `sidebyside.py`: `train_runs` = several runs, same-shaped ones trained as one computation
  (one wide network of grouped layers, or stacked parameters under vmap).
"""
from .callbacks import EpochMetrics, ValidateLastEpoch, VerifiedCheckpointIO
from .errors import Interrupted, TrainingError
from .module import Classifier
from .rundir import (PREDICTIONS, RESULTS_VERSION, RunSpec, check_output_space, device_description,
                     load_classifier, read_results, versions)
from .train import (eval_batch_size, interactive, quiet_lightning, resolve_accelerator,
                    resolve_precision, torch_device, train_run)
from .sidebyside import train_runs

__all__ = ["Classifier", "EpochMetrics", "Interrupted", "PREDICTIONS", "RESULTS_VERSION", "RunSpec",
           "TrainingError", "ValidateLastEpoch", "VerifiedCheckpointIO", "check_output_space",
           "device_description", "eval_batch_size", "interactive", "load_classifier",
           "quiet_lightning",
           "read_results", "resolve_accelerator", "resolve_precision", "torch_device",
           "train_run", "train_runs", "versions"]
