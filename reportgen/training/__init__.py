"""Training with PyTorch Lightning, one module per responsibility:

- `module.py`: the LightningModule (model, input pipeline, optimiser and schedule);
- `callbacks.py`: metrics.csv, validation of the last epoch, verified checkpoints;
- `rundir.py`: the run's spec and key, its directory and files, resume checks;
- `memory.py`: whether a run (or a group) fits in memory, checked before anything starts;
- `train.py`: `train_run` = set-up, fit, final evaluation;
- `sidebyside.py`: `train_runs` = several runs, same-shaped ones trained as one computation
  (one wide network of grouped layers, or stacked parameters under vmap).
"""
import importlib

# Where each name lives. Imported on first use (PEP 562): the command line's start (help,
# version, a refused setting) declares the studies, whose run specs are plain data, and
# importing Lightning for that took seconds of every command.
_HOME = {"EpochMetrics": "callbacks", "ValidateLastEpoch": "callbacks",
         "VerifiedCheckpointIO": "callbacks", "Interrupted": "errors", "TrainingError": "errors",
         "Classifier": "module", "PREDICTIONS": "rundir", "RESULTS_VERSION": "rundir",
         "RunSpec": "rundir", "check_output_space": "rundir", "device_description": "rundir",
         "load_classifier": "rundir", "read_results": "rundir", "versions": "rundir",
         "eval_batch_size": "train", "interactive": "train", "quiet_lightning": "train",
         "resolve_accelerator": "train", "resolve_precision": "train", "torch_device": "train",
         "train_run": "train", "train_runs": "sidebyside"}


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    globals()[name] = value
    return value


__all__ = sorted(_HOME)
