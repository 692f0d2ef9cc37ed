"""Training one run with PyTorch Lightning: set-up, fit, and the final evaluation of the best
checkpoint into results.json."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import TensorBoardLogger

from .. import evaluation
from ..config import TrainConfig, to_dict
from ..data import Splits, batches
from ..files import atomic_write_text, file_sha256, seal
from ..models import count_parameters
from ..signals import lightning_handles_sigterm
from . import memory
from .callbacks import EpochMetrics, ValidateLastEpoch, VerifiedCheckpointIO
from .errors import Diverged, Interrupted, TrainingError
from .module import Classifier
from .rundir import (PREDICTIONS, RESULTS_VERSION, RunSpec, check_output_space,
                     device_description, load_checkpoint_dict, load_classifier,
                     read_results, resume_hint, resume_point, versions)


# --- devices -------------------------------------------------------------------------------

def resolve_accelerator(device: str, devices: int = 1) -> str:
    """"cpu" or "gpu" for train.device; with `devices` (train.devices), checks that this many
    GPUs are visible, which Lightning would otherwise refuse with a traceback."""
    if device == "gpu" and not torch.cuda.is_available():
        raise TrainingError("--device gpu was asked for but no CUDA GPU is visible: use "
                            "--device cpu or auto")
    accelerator = ("gpu" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    if accelerator == "gpu" and devices > torch.cuda.device_count():
        n = torch.cuda.device_count()
        raise TrainingError(f"--devices {devices} asks for {devices} GPUs but {n} "
                            f"{'is' if n == 1 else 'are'} visible: use at most --devices {n}, "
                            "or --device cpu")
    return accelerator


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
    """The precision a run really trains in, as results.json and the report state it."""
    if precision == "32":
        return "32-true"
    if precision == "16-mixed" and accelerator == "cpu":
        # Lightning has no float16 autocast on the CPU and trains in bf16-mixed instead (with
        # a warning); the run records what it ran, not what was asked.
        return "bf16-mixed"
    if precision == "bf16-mixed" and accelerator == "gpu" and not torch.cuda.is_bf16_supported():
        # Before Ampere the first autocast step fails with a RuntimeError.
        raise TrainingError(f"train.precision = 'bf16-mixed': {torch.cuda.get_device_name()} "
                            "does not support bfloat16: use 16-mixed or auto")
    if precision != "auto":
        return precision
    if accelerator == "gpu" and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


class _DropLightningChatter(logging.Filter):
    """Lightning's start-up and shutdown lines that tell a student nothing about their run."""
    PREFIXES = ("GPU available:", "TPU available:", "HPU available:", "💡 Tip:",
                "`Trainer.fit` stopped:")

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.PREFIXES)


def quiet_lightning() -> None:
    """Targeted filters, not a blanket one: each names the message it drops."""
    # Warnings that do not apply to in-memory data.
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*GPU available but not used.*")
    warnings.filterwarnings("ignore", message=r"The number of training batches .* is smaller "
                            r"than the logging interval")  # TensorBoard still gets every epoch
    # Resuming writes into the run's own checkpoints folder on purpose.
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    # Lightning 2.6 calling a torch API that torch deprecated: nothing a user can change.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLightningChatter) for f in logger.filters):
            logger.addFilter(_DropLightningChatter())


def interactive() -> bool:
    """Progress bars only on a terminal; a log file gets one line per epoch instead."""
    return sys.stderr.isatty()


def is_main_process() -> bool:
    return int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0


# --- one run: set-up, fit, final evaluation ------------------------------------------------

@dataclass
class _Setup:
    module: Classifier
    trainer: pl.Trainer
    best_cb: ModelCheckpoint
    metrics_cb: EpochMetrics
    resume: Path | None
    accelerator: str
    precision: str
    n_params: int


def check_compile_on_cpu(model: torch.nn.Module, accelerator: str) -> None:
    """torch.compile on the CPU lays small convolutions out channels_last, where oneDNN's
    backward of a 1x1 stride-2 convolution hangs or corrupts memory on this torch build when
    a layer has few channels (seen with 4). Refuse before it hangs."""
    if accelerator != "cpu":
        return
    odd = sorted({c for m in model.modules() if isinstance(m, torch.nn.Conv2d)
                  for c in (m.in_channels, m.out_channels) if c % 8 and c != 3})
    if odd:
        raise TrainingError(f"train.compile = true on the CPU needs convolution channel counts "
                            f"that are multiples of 8 (this model has {odd}): a oneDNN bug hangs "
                            "otherwise; use such channels, or train.compile = false")


def checkpoint_callbacks(ckpt_dir: Path) -> tuple[ModelCheckpoint, ModelCheckpoint]:
    """best.ckpt (highest val_acc) and last.ckpt of a run. Side-by-side training builds the
    same two to write their state into each run's checkpoints, so either way of training
    resumes the other's."""
    best = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val_acc", mode="max",
                           save_top_k=1, enable_version_counter=False)
    # Saved after every epoch (not only validated ones), so a resume loses at most one.
    last = ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1,
                           every_n_epochs=1, save_on_train_epoch_end=True,
                           enable_version_counter=False)
    return best, last


def _set_up(spec: RunSpec, run_dir: Path, retrain: bool, log: Callable[[str], None]) -> _Setup:
    """The module, the Trainer with its callbacks, and where to resume from."""
    cfg = spec.train
    accelerator = resolve_accelerator(cfg.device, cfg.devices)
    precision = resolve_precision(cfg.precision, accelerator)
    main = is_main_process()
    memory.require(spec.model, cfg, accelerator)  # before anything is written
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    module = Classifier(spec.model.name, dict(spec.model.params), to_dict(spec.optim),
                        to_dict(cfg.augment), seed=cfg.seed,
                        perm=list(spec.perm) if spec.perm else None)
    n_params = count_parameters(module.model)
    if main:
        check_output_space(run_dir, n_params, cfg.epochs)
    ckpt_dir = run_dir / "checkpoints"
    if retrain and main:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        (run_dir / "results.json").unlink(missing_ok=True)
    if main:  # not once more from every DDP worker
        note_late_milestones(spec.optim.milestones, cfg.epochs, log)
    resume = resume_point(ckpt_dir, spec)
    if resume is not None and main:
        log(f"resuming {run_dir.name} from {resume}")
    if main:
        spec.write_config(run_dir)
    quiet_lightning()
    if cfg.compile:
        check_compile_on_cpu(module.model, accelerator)
        module.set_step_model(torch.compile(module.model, mode=cfg.compile_mode))
    best_cb, last_cb = checkpoint_callbacks(ckpt_dir)
    bars = interactive()
    metrics_cb = EpochMetrics(run_dir / "metrics.csv", log=None if bars else log,
                              name=spec.label)
    trainer = pl.Trainer(
        accelerator=accelerator, devices=cfg.devices, strategy=cfg.strategy,
        precision=precision, max_epochs=cfg.epochs, check_val_every_n_epoch=cfg.val_every,
        callbacks=[best_cb, last_cb, LearningRateMonitor("epoch"), metrics_cb,
                   ValidateLastEpoch(cfg.epochs, cfg.val_every)]
        + ([TQDMProgressBar(refresh_rate=cfg.progress_every)] if bars else []),
        enable_progress_bar=bars,
        logger=TensorBoardLogger(str(run_dir), name="tensorboard", version="",
                                 default_hp_metric=False),
        plugins=[VerifiedCheckpointIO()], num_sanity_val_steps=0,
        enable_model_summary=False, deterministic=False, log_every_n_steps=50)
    return _Setup(module, trainer, best_cb, metrics_cb, resume, accelerator, precision, n_params)


def data_device(accelerator: str) -> torch.device:
    """Where the training data lives during a run."""
    if accelerator == "gpu":
        # The whole data set (~180 MB as uint8) lives on the GPU: batches are gathered and
        # augmented there, with nothing copied from the host per step.
        torch.backends.cudnn.benchmark = True
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def require_one_batch(n: int, cfg: TrainConfig) -> None:
    """Training drops the last partial batch: fewer images than one batch train nothing. With
    DDP each of the `train.devices` processes trains on its share of the images (Lightning's
    distributed sampler gives each ceil(n / devices)): a share smaller than a batch trained
    nothing, and the run then ended in "last.ckpt does not exist"."""
    if n < cfg.batch_size:
        raise TrainingError(f"{n} training image{'s are' if n != 1 else ' is'} fewer than one "
                            f"batch of {cfg.batch_size}: use a larger --subset or a smaller batch "
                            f"(--set train.batch_size={n})")
    share = -(-n // cfg.devices)
    if share < cfg.batch_size:  # (batch 1 never comes here: the sampler pads every share)
        # The most devices d with ceil(n / d) >= batch: n / d > batch - 1.
        most = (n - 1) // (cfg.batch_size - 1)
        raise TrainingError(f"{n:,} training images over {cfg.devices} devices are {share:,} per "
                            f"device, fewer than one batch of {cfg.batch_size}: use at most "
                            f"--devices {most}, a larger --subset or a smaller batch (--set "
                            f"train.batch_size={share})")


def train_loader(splits: Splits, cfg: TrainConfig, device: torch.device):
    """The training batches of the run with `cfg.seed`: its own order, epoch by epoch."""
    require_one_batch(len(splits.train_x), cfg)
    return batches(splits.train_x.to(device), splits.train_y.to(device), cfg.batch_size,
                   shuffle_seed=cfg.seed, drop_last=True)


def val_loader(splits: Splits, cfg: TrainConfig, device: torch.device, model_cfg,
               runs: int = 1):
    """The validation batches of `runs` runs of `model_cfg` training side by side: at most
    as many images as fit next to training's own memory (memory.eval_batch_that_fits)."""
    bs = memory.eval_batch_that_fits(
        model_cfg, eval_batch_size(cfg, device), device, concurrent=runs,
        reserved=memory.training_bytes(model_cfg, cfg.batch_size, runs))
    return batches(splits.val_x.to(device), splits.val_y.to(device), bs)


def fit(trainer: pl.Trainer, module: pl.LightningModule, train, val, resume: Path | str | None,
        hint: Callable[[], str], specs: list[RunSpec]) -> float:
    """trainer.fit to the end (or resume to it) of the runs `specs` (one, or a side-by-side
    group); returns the wall time in seconds. An interruption raises Interrupted with
    `hint()`, which says how to resume; a diverged run, advice naming its settings."""
    t0 = time.perf_counter()
    try:
        # Progress bars (Lightning's go to stdout) belong on stderr: stdout carries only the
        # results lines and the PDF's path, so `pdf=$(reportgen all ...)` captures just those.
        with contextlib.redirect_stdout(sys.stderr), lightning_handles_sigterm():
            trainer.fit(module, train, val, ckpt_path=str(resume) if resume else None)
    except SystemExit:
        # Lightning ends Ctrl-C with exit(1), and SIGTERM (after the batch in progress) with
        # SIGTERMException, a SystemExit. Close the progress bars first, so that the message
        # saying how to resume is the last line the user sees.
        _close_progress_bars(trainer)
        if trainer.interrupted:
            raise Interrupted(hint()) from None
        raise
    except Diverged as e:
        _close_progress_bars(trainer)
        raise divergence_error(specs[e.run], e.epoch, len(specs) > 1) from None
    except torch.OutOfMemoryError as e:
        # The preflight (memory.require) leaves headroom; this is what it could not foresee:
        # other processes on the card or the host, or a model whose memory it misjudged.
        _close_progress_bars(trainer)
        raise TrainingError(
            f"training ran out of memory ({str(e).splitlines()[0][:120]}): use a smaller batch "
            "(--set train.batch_size=...), train runs one at a time (--set "
            f"train.side_by_side=1) or free memory; {hint()}") from None
    except Exception as e:
        if not is_compile_failure(e):
            raise
        _close_progress_bars(trainer)
        raise compile_error(e) from None  # not hint(): the same command would fail again
    return time.perf_counter() - t0


def divergence_error(spec: RunSpec, epoch: int, grouped: bool = False) -> TrainingError:
    """What to change when `spec`'s loss became NaN or infinite, named by the settings its
    optimiser came from (optim.lr, or Part 3's shuffle.mlp_lr for the MLP). A weight decay of
    1 or more that takes the whole weight away each step (lr x weight decay >= 1) overshoots
    at any learning rate that trains: lowering the learning rate tenfold was wrong advice."""
    lr_key, decay_key = spec.optim_keys
    lr, decay = spec.optim.lr, spec.optim.weight_decay
    which = f" of {spec.label}" + (f" (the run with seed {spec.train.seed})" if grouped else "")
    # A learning rate far past any that trains (above 1) gets the practical's 0.1.
    lower_lr = (f"the learning rate ({lr_key} = {lr:g}), e.g. --set "
                f"{lr_key}={lr / 10 if lr <= 1 else 0.1:g}")
    if decay >= 1 and lr * decay >= 1:
        lower_decay = (f"the weight decay ({decay_key} = {decay:g}: each step takes {lr * decay:g} "
                       f"times the weights away), e.g. --set {decay_key}=0.0001")
        advice = f"lower {lower_decay}" + (f", and {lower_lr}" if lr > 1 else "")
    else:
        advice = f"lower {lower_lr}"
    return TrainingError(f"training{which} diverged in epoch {epoch}: the loss became NaN or "
                         f"infinite; {advice}")


def is_compile_failure(e: BaseException) -> bool:
    """An error of torch.compile's own (TorchDynamo's or Inductor's): the machine cannot
    compile (no C++ compiler for the CPU, no Triton for the GPU), not a bug in the run."""
    return type(e).__module__.startswith(("torch._dynamo", "torch._inductor"))


def compile_error(e: BaseException) -> TrainingError:
    first = next((line for line in str(e).splitlines() if line.strip()), "")
    return TrainingError(
        f"train.compile = true, but torch.compile failed on this machine ({type(e).__name__}: "
        f"{first[:160]}): set train.compile = false, or install what it names (a C++ compiler "
        "for the CPU, Triton for a GPU)")


def _fit(s: _Setup, spec: RunSpec, splits: Splits, run_dir: Path) -> float:
    device = data_device(s.accelerator)
    return fit(s.trainer, s.module, train_loader(splits, spec.train, device),
               val_loader(splits, spec.train, device, spec.model), s.resume,
               lambda: resume_hint(run_dir), [spec])


def _close_progress_bars(trainer: pl.Trainer) -> None:
    for cb in trainer.callbacks:
        if isinstance(cb, TQDMProgressBar):
            for name in ("_train_progress_bar", "_val_progress_bar", "_test_progress_bar",
                         "_predict_progress_bar"):
                bar = getattr(cb, name, None)
                if bar is not None:
                    bar.close()


def _score_and_keep(model, splits: Splits, run_dir: Path, batch_size: int):
    """Validation and test scores; the per-image predictions go to predictions.npz."""
    from .. import predictions

    val = evaluation.score(model, splits.val_x, splits.val_y, batch_size, keep_predictions=True)
    test = evaluation.score(model, splits.test_x, splits.test_y, batch_size, keep_predictions=True)
    predictions.save(run_dir / PREDICTIONS, {
        "val": val.pred.numpy(), "test": test.pred.numpy(),
        "val_labels": splits.val_y.numpy(), "test_labels": splits.test_y.numpy()})
    return val, test


def _evaluate(s: _Setup, spec: RunSpec, splits: Splits, run_dir: Path, wall: float,
              log: Callable[[str], None]) -> dict:
    last = run_dir / "checkpoints" / "last.ckpt"
    best = Path(s.best_cb.best_model_path) if s.best_cb.best_model_path else last
    return finish_run(spec, splits, run_dir, best=best, rows=s.metrics_cb.rows,
                      n_params=s.n_params, accelerator=s.accelerator, precision=s.precision,
                      wall=wall, log=log)


def finish_run(spec: RunSpec, splits: Splits, run_dir: Path, *, best: Path, rows: list[dict],
               n_params: int, accelerator: str, precision: str, wall: float,
               log: Callable[[str], None], side_by_side: int = 1,
               layout: str | None = None) -> dict:
    """Score the best checkpoint on the validation and test images; write results.json."""
    cfg = spec.train
    log(f"evaluating {best.name} of {spec.label} (seed {cfg.seed}) on the validation and test "
        "images ...")
    model = load_classifier(best, torch_device(accelerator))
    bs = eval_batch_size(cfg, model.device)
    val, test = _score_and_keep(model, splits, run_dir, bs)
    images_per_s = sorted(r["images_per_s"] for r in rows)[len(rows) // 2]  # median epoch
    best_epoch = load_checkpoint_dict(best)["epoch"] + 1
    results = {
        "version": RESULTS_VERSION, "label": spec.label, "key": spec.key(), "seed": cfg.seed,
        "run_dir": str(run_dir), "model": spec.model.name,
        "val_acc": val.accuracy, "test_acc": test.accuracy,
        "val_per_class": val.per_class_accuracy, "test_per_class": test.per_class_accuracy,
        "best_checkpoint": str(best), "best_epoch": best_epoch, "epochs": cfg.epochs,
        "parameters": n_params, "train_images": len(splits.train_x),
        # Side by side, the wall and training times are those of the whole group.
        "wall_time_s": wall, "train_time_s": sum(r["epoch_s"] for r in rows),
        "train_images_per_s": images_per_s, "side_by_side": side_by_side,
        "side_by_side_layout": layout if side_by_side > 1 else None,
        "accelerator": accelerator, "device": device_description(accelerator),
        "devices": cfg.devices, "strategy": cfg.strategy, "precision": precision,
        "versions": versions(), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        # read_results trusts the predictions only while they are the ones scored here.
        "predictions_sha256": file_sha256(run_dir / PREDICTIONS),
    }
    atomic_write_text(run_dir / "results.json", json.dumps(seal(results), indent=2))
    TRAINED_HERE.add(run_dir.resolve())
    others = side_by_side - 1
    together = (f", side by side with {others} other run{'s' if others > 1 else ''}"
                if others else "")
    log(f"{spec.label}: {cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''} in {wall:.0f} s "
        f"({images_per_s:.0f} train img/s{together}) - val {val.accuracy:.2%}, "
        f"test {test.accuracy:.2%} (best epoch {best_epoch}) -> {run_dir}")
    return results


# Run folders whose results this command wrote: `all` trains every study's runs first, and
# a study that then reuses one says so without the advice to pass --retrain.
TRAINED_HERE: set[Path] = set()
# Notes this command has printed: one that holds for every run (a milestone past the last
# epoch) is said once, not once per run.
NOTED: set[str] = set()


def new_command() -> None:
    """Forget the runs trained and the notes printed by an earlier command in this process."""
    TRAINED_HERE.clear()
    NOTED.clear()


def note_late_milestones(milestones, epochs: int, log: Callable[[str], None]) -> None:
    """Say once per command that a learning-rate drop falls at or after the last epoch."""
    late = [m for m in milestones if m >= epochs]
    text = (f"note: optim.milestones {late} are at or past the last epoch ({epochs}): the "
            "learning rate never drops there")
    if late and text not in NOTED:
        NOTED.add(text)
        log(text)


def train_run(spec: RunSpec, splits: Splits, out_dir: str | Path, retrain: bool = False,
              log: Callable[[str], None] = print) -> dict:
    """Train (or reuse, or resume) the run `spec` and return its results.json content.

    On a DDP worker process (rank > 0) it returns {}: the main process writes the results.
    """
    run_dir = spec.run_dir(out_dir)
    if not retrain and (res := read_results(run_dir)) is not None:
        scores = f"val {res['val_acc']:.2%}, test {res['test_acc']:.2%}"
        if run_dir.resolve() in TRAINED_HERE:
            log(f"trained above: {run_dir} ({scores})")
        else:
            log(f"reusing finished run {run_dir} ({scores}); pass --retrain to train again")
        return res
    s = _set_up(spec, run_dir, retrain, log)
    wall = _fit(s, spec, splits, run_dir)
    if not s.trainer.is_global_zero:
        return {}
    return _evaluate(s, spec, splits, run_dir, wall, log)
