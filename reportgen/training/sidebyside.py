"""Training several runs of one architecture as one computation ("side by side").

The practical's ResNet is small: on a GPU one training step at batch 128 is a few GFLOP,
so the card waits on kernel launches. Runs that share the model, the optimiser and the
schedule (the seeds of a model; plain and rotation-augmented training; original and
shuffled pixels) can instead step together, so every convolution runs once for all runs (as
a grouped convolution) instead of once per run: as one network K times as wide whose layers
are grouped, one group per run (`widen`), or, for models with layers of their own, with the
parameters stacked along a new leading axis and `torch.func.vmap` mapping the model over it.

Nothing is shared between the runs but the kernels. Each run keeps its own
initialisation (its seed), its own batch order, its own augmentation draws and its own
pixel permutation; batch normalisation normalises per channel, so per run; the loss is the
sum of the runs' losses, whose gradient with respect to one run's parameters is that run's
own gradient; and SGD, Adam and AdamW update every parameter element by element. So each
run ends where it would have ended alone, up to the order of floating-point sums
(tests/test_sidebyside.py trains both ways and compares the weights).

Each run still gets its own run directory with config.json, metrics.csv, results.json,
predictions.npz and checkpoints, written in the form a run trained alone writes them: a run
interrupted side by side resumes alone, and the other way round.
"""
from __future__ import annotations

import copy
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Callable

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback, Checkpoint, TQDMProgressBar
from pytorch_lightning.loggers import TensorBoardLogger
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from ..config import AugmentConfig, digest, to_dict
from ..data import Splits
from ..models import count_parameters
from .callbacks import EpochMetrics, ValidateLastEpoch, VerifiedCheckpointIO
from . import memory
from .errors import Diverged
from .module import Classifier, PlainAttributes, optimizers, prepare_runs
from .rundir import (RunSpec, check_output_space, load_checkpoint_dict, read_results,
                     resume_point)
from .train import (check_compile_on_cpu, checkpoint_callbacks, data_device, finish_run, fit,
                    interactive, is_main_process, note_late_milestones, quiet_lightning,
                    resolve_accelerator, resolve_precision, train_loader, train_run, val_loader)

# Precisions under which runs step together exactly as alone. "16-mixed" is not one: its
# gradient scaler skips a step for every run when one run's gradients overflow.
PRECISIONS = ("32-true", "bf16-mixed")
MAX_RUNS = 8  # side_by_side = 0 on a GPU: at most this many runs in one computation


def compatible(a: RunSpec, b: RunSpec) -> bool:
    """Whether `a` and `b` can train side by side: the same model, optimiser, schedule and
    data; seed, augmentation and pixel permutation may differ (each run applies its own)."""
    def shape(s: RunSpec):
        return replace(s.train, seed=0, seeds=(), augment=AugmentConfig())

    return (a.model == b.model and a.optim == b.optim and shape(a) == shape(b)
            and a.data == b.data and a.data_digest == b.data_digest)


def group_size(spec: RunSpec, accelerator: str, precision: str) -> int:
    """How many runs like `spec` may step together: train.side_by_side, where 0 means up to
    MAX_RUNS of a study's same-shaped runs on a GPU (kept only where `schedule` measures the
    group faster) and one at a time on a CPU, where stacking measured slower (`reportgen
    bench`: three runs side by side took 3.45 times one run's time, wide)."""
    cfg = spec.train
    if cfg.devices > 1 or cfg.strategy != "auto" or precision not in PRECISIONS:
        # A chosen strategy (DDP) spreads one run over devices; fp16's gradient scaler
        # would couple the runs.
        return 1
    if cfg.side_by_side:
        return cfg.side_by_side
    # Automatic: never with train.compile. A compiled group has been timed in `reportgen
    # bench` only (an H200: 3 runs in 1.19x one run's time), never through a whole run; ask
    # for it with train.side_by_side = N.
    return MAX_RUNS if accelerator == "gpu" and not cfg.compile else 1


_LAYOUTS: dict[tuple[str, str], str | None] = {}  # (model digest, layout): why it fails


def layout(model_cfg, choice: str = "auto") -> tuple[str | None, str | None]:
    """(layout, None): how runs of this model train side by side, "wide" or "stacked" (see
    SideBySide; `choice` "auto" takes the first that works, as train.side_by_side_layout
    does); (None, why) where none works. Two copies in float64 must give each copy's own
    outputs and run a backward pass: a model that mixes channels in its own forward code
    cannot widen, one that calls .item() or branches on values cannot run under vmap.
    Checked once per model and layout, in a second."""
    why = None
    for name in (("wide", "stacked") if choice == "auto" else (choice,)):
        key = (digest(model_cfg), name)
        if key not in _LAYOUTS:
            try:
                _check_layout(model_cfg, name)
                _LAYOUTS[key] = None
            except Exception as e:  # any failure: try the next layout, or train alone
                _LAYOUTS[key] = (f"{type(e).__name__}: {e}".splitlines() or ["?"])[0][:160]
        if _LAYOUTS[key] is None:
            return name, None
        why = f"{name} layout: {_LAYOUTS[key]}"
    return None, why


def _check_layout(model_cfg, name: str) -> None:
    members = []
    for k in (0, 1):
        torch.manual_seed(k)
        members.append(Classifier(model_cfg.name, dict(model_cfg.params), {}, {}, seed=k,
                                  channels_last=False))
    module = SideBySide(members, layout=name).double().train()
    xs = torch.randn(2, 3, 3, 32, 32, dtype=torch.float64)
    out = module.logits(xs)
    out.sum().backward()
    for k, m in enumerate(members):
        own = m.model.double().train()(xs[k])
        if (own - out[k]).abs().max() > 1e-6 * (1 + own.abs().max()):
            raise ValueError(f"the {name} network's outputs differ from each run's own")


# --- one wide network: K runs as the groups of grouped layers -----------------------------

class WideLinear(nn.Module):
    """K Linear layers side by side: features (B, K*in) -> (B, K*out), run k's weight the
    rows k*out .. (k+1)*out of `weight` (so every parameter splits into runs along dim 0)."""

    def __init__(self, k: int, layers: list[nn.Linear]):
        super().__init__()
        self.k, self.out_f, self.in_f = k, layers[0].out_features, layers[0].in_features
        self.weight = nn.Parameter(torch.cat([m.weight.detach() for m in layers]))
        self.bias = (nn.Parameter(torch.cat([m.bias.detach() for m in layers]))
                     if layers[0].bias is not None else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        y = torch.bmm(x.reshape(b, self.k, self.in_f).transpose(0, 1),
                      self.weight.view(self.k, self.out_f, self.in_f).transpose(1, 2))
        if self.bias is not None:
            y = y + self.bias.view(self.k, 1, self.out_f)
        return y.transpose(0, 1).reshape(b, self.k * self.out_f)


def widen(models: list[nn.Module]) -> nn.Module | None:
    """The K same-shaped `models` as one network K times as wide, or None where a layer
    cannot widen. Convolutions become grouped convolutions (K times the groups: run k's
    channels are k*C .. (k+1)*C), batch normalisation normalises per channel, so per run,
    over K*C channels, Linear layers become WideLinear, and layers without parameters
    (activations, pooling, flattening) act channel by channel already. Whether a model's
    own forward code keeps the runs apart is checked numerically (`layout`)."""
    k = len(models)
    wide = copy.deepcopy(models[0])
    sources = [dict(m.named_modules()) for m in models]
    for name, mod in list(wide.named_modules()):
        if not name:  # the model itself: a container
            if next(mod.parameters(recurse=False), None) is not None:
                return None
            continue
        parts = [d[name] for d in sources]
        if type(mod) is nn.Conv2d:
            new = nn.Conv2d(k * mod.in_channels, k * mod.out_channels, mod.kernel_size,
                            mod.stride, mod.padding, mod.dilation, k * mod.groups,
                            mod.bias is not None, mod.padding_mode)
        elif type(mod) is nn.BatchNorm2d:
            new = nn.BatchNorm2d(k * mod.num_features, mod.eps, mod.momentum, mod.affine,
                                 mod.track_running_stats)
        elif type(mod) is nn.Linear:
            new = WideLinear(k, parts)
        elif next(mod.parameters(recurse=False), None) is None and \
                next(mod.buffers(recurse=False), None) is None:
            continue  # a container, or a layer without parameters
        else:
            return None  # e.g. the p4 group convolutions: they run under vmap instead
        if not isinstance(new, WideLinear):
            with torch.no_grad():
                for key, t in new.named_parameters(recurse=False):
                    t.copy_(torch.cat([getattr(m, key) for m in parts]))
                for key, t in new.named_buffers(recurse=False):
                    if t.dim() > 0:
                        t.copy_(torch.cat([getattr(m, key) for m in parts]))
        parent, _, leaf = name.rpartition(".")
        setattr(wide.get_submodule(parent) if parent else wide, leaf, new)
    return wide


# --- the stacked module --------------------------------------------------------------------

def _set_tensor(module: nn.Module, dotted: str, value: torch.Tensor, parameter: bool) -> None:
    *path, leaf = dotted.split(".")
    for name in path:
        module = getattr(module, name)
    if parameter:
        module._parameters[leaf] = nn.Parameter(value)
    else:
        module._buffers[leaf] = value


def _norms_in_float(model: nn.Module) -> nn.Module:
    """`model` with every batch norm computing in float32 and handing back its input's
    dtype. Under vmap, batch norm takes no bf16 input with float32 running statistics: on
    the H200 the stacked p4 network's backward pass failed in bf16-mixed ("Expected
    running_mean to have type BFloat16 but got Float"), and the CPU's forward fails the same
    way. A run trained alone normalises bf16 in float32 inside cuDNN and rounds the output to
    bf16, as this does. Float32 and float64 inputs pass as they are."""
    for bn in model.modules():
        if isinstance(bn, nn.modules.batchnorm._BatchNorm):
            plain = bn.forward

            def forward(x: torch.Tensor, plain=plain) -> torch.Tensor:
                if x.dtype not in (torch.bfloat16, torch.float16):
                    return plain(x)
                return plain(x.float()).to(x.dtype)

            bn.forward = forward
    return model


class SideBySide(PlainAttributes, pl.LightningModule):
    """K Classifiers of one architecture trained as one module, in one of two layouts:

    - wide (`widen`): one network K times as wide whose layers are grouped, one group per
      run; every tensor holds the runs one after another along dim 0;
    - stacked (any other model): every parameter and buffer gets a leading axis of K and the
      model is vmapped over it (`torch.func`), for layers `widen` does not know.

    The wide layout needs no vmap: on the development CPU a step of three tiny runs took 9 ms
    wide against 16 ms vmapped (4 ms for one run), so it is used wherever it applies.
    """
    PLAIN = PlainAttributes.PLAIN | {"_val_sums", "_images"}  # set every validation step

    def __init__(self, members: list[Classifier], layout: str):
        """`layout`: "wide" or "stacked", as `layout()` chose it for the members' model."""
        super().__init__()
        # The members keep each run's input pipeline (augmentation, permutation) and
        # hyperparameters; they are not submodules, so the optimiser sees `stack` only.
        self.__dict__["members"] = members
        self.k = len(members)
        template = members[0].model
        wide = widen([m.model for m in members]) if layout == "wide" else None
        if layout == "wide" and wide is None:
            raise ValueError(f"{type(template).__name__} has layers that cannot widen")
        self.wide = wide is not None
        # The wide network keeps the members' memory format (channels_last where the model
        # prefers it: oneDNN's convolutions are faster so on the CPU).
        self.channels_last = self.wide and members[0].channels_last
        if self.wide:
            self.stack = wide.to(memory_format=torch.channels_last if self.channels_last
                                 else torch.contiguous_format)
        else:
            self.__dict__["base"] = _norms_in_float(copy.deepcopy(template).to("meta"))
            params, buffers = stack_module_state([m.model for m in members])
            stack = copy.deepcopy(template)
            # Contiguous: a channels_last member's layout, stacked, sends vmap down a slow path.
            for name, t in params.items():
                _set_tensor(stack, name, t.detach().contiguous(), parameter=True)
            for name, t in buffers.items():
                _set_tensor(stack, name, t.contiguous(), parameter=False)
            self.stack = stack
        self.__dict__["_step_logits"] = self.logits  # or a compiled version (compile_step)
        # Per run, summed on the device (no host sync per step): training loss and accuracy
        # per step; validation loss and correct count per image. The counts are plain ints.
        self._train_sums: torch.Tensor | None = None
        self._val_sums: torch.Tensor | None = None
        self._steps = self._images = 0

    def logits(self, xs: torch.Tensor) -> torch.Tensor:
        """xs: K x B x C x H x W (run k's batch at k) -> K x B x classes."""
        if self.wide:
            k, b, c, h, w = xs.shape
            if self.channels_last:  # one copy straight into the channels_last layout
                x = xs.permute(1, 3, 4, 0, 2).reshape(b, h, w, k * c).permute(0, 3, 1, 2)
            else:
                x = xs.transpose(0, 1).reshape(b, k * c, h, w)
            out = self.stack(x)
            return out.view(b, k, -1).transpose(0, 1)
        base = self.base.train(self.training)

        def one(p, b, x):
            return functional_call(base, (p, b), (x,))

        return vmap(one)(dict(self.stack.named_parameters()),
                         dict(self.stack.named_buffers()), xs)

    def compile_step(self, mode: str = "default") -> None:
        """Training steps through torch.compile of the group's forward (vmap included, when
        stacked); validation stays eager, as for a run trained alone."""
        self.__dict__["_step_logits"] = torch.compile(self.logits, mode=mode)

    def take(self, t: torch.Tensor, k: int) -> torch.Tensor:
        """Run k's part of a parameter, buffer or optimiser state of the group."""
        if not self.wide:
            return t[k]
        return t if t.dim() == 0 else t.unflatten(0, (self.k, -1))[k]  # a shared counter

    def join(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """The inverse of `take`: the runs' own tensors as the group's."""
        if not self.wide:
            return torch.stack(parts)
        return parts[0] if parts[0].dim() == 0 else torch.cat(parts)

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Run k's weights as its own Classifier's state_dict."""
        return {f"model.{name}": self.take(t, k).detach().clone()
                for name, t in self.stack.state_dict().items()}

    # The input: each run's batch through its own pipeline, all runs' pipelines at once.
    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if self.trainer.training:
            xs, ys = torch.stack([x for x, _ in batch]), torch.stack([y for _, y in batch])
            return prepare_runs(self.members, xs, train=True), ys
        x, y = batch  # validation: every run sees the same images
        return (prepare_runs(self.members, x.unsqueeze(0).expand(self.k, *x.shape)),
                y.expand(self.k, -1))

    def on_fit_start(self) -> None:
        for m in self.members:
            m.to(self.device)  # their permutation buffers and augmentation generators

    def on_train_epoch_start(self) -> None:
        for m in self.members:
            m.start_epoch(self.current_epoch, self.device)
        self._train_sums = torch.zeros(2, self.k, device=self.device)
        self._steps = 0

    def configure_optimizers(self):
        # Element-wise optimisers (SGD, Adam, AdamW) update each run's slice as they would
        # update that run alone.
        return optimizers(self.members[0].optim_cfg, self.stack.parameters())

    def training_step(self, batch, batch_idx):
        xs, ys = batch
        logits = self._step_logits(xs)
        losses = F.cross_entropy(logits.flatten(0, 1), ys.flatten(),
                                 reduction="none").view(self.k, -1).mean(1)
        with torch.no_grad():
            acc = (logits.argmax(-1) == ys).float().mean(1)
            self._train_sums += torch.stack([losses.detach().float(), acc])
        self._steps += 1
        return losses.sum()

    def validation_step(self, batch, batch_idx):
        xs, ys = batch
        logits = self.logits(xs).float()
        losses = F.cross_entropy(logits.flatten(0, 1), ys.flatten(),
                                 reduction="none").view(self.k, -1)
        correct = (logits.argmax(-1) == ys).float()
        self._val_sums += torch.stack([losses.sum(1), correct.sum(1)])
        self._images += ys.shape[1]

    def on_validation_epoch_start(self) -> None:
        if self.trainer.training or self.trainer.state.fn == "fit":
            self._check_finite()  # before a diverged run's weights could become its best
        self._val_sums = torch.zeros(2, self.k, device=self.device)
        self._images = 0

    def on_train_epoch_end(self) -> None:
        self._check_finite()

    def _check_finite(self) -> None:
        if self._train_sums is None:
            return
        bad = [k for k in range(self.k) if not torch.isfinite(self._train_sums[0, k])]
        if bad:
            raise Diverged(self.current_epoch + 1, bad[0])

    def run_metrics(self, k: int) -> dict[str, float]:
        """Run k's epoch metrics under the names a run trained alone logs them."""
        out = {}
        if self._train_sums is not None and self._steps:
            loss, acc = (self._train_sums[:, k] / self._steps).tolist()
            out.update(train_loss=loss, train_acc=acc)
        if self._val_sums is not None and self._images:
            loss, acc = (self._val_sums[:, k] / self._images).tolist()
            out.update(val_loss=loss, val_acc=acc)
        return out


# --- per-run checkpoints in the form of a run trained alone --------------------------------

def _split_optimizer(states: list[dict], k: int, module: SideBySide) -> list[dict]:
    # Per-parameter states (momentum, Adam's moments) are laid out like the parameters;
    # zero-dimensional ones (Adam's step count) are shared.
    return [{"state": {i: {n: (module.take(v, k).clone() if torch.is_tensor(v) and v.dim() > 0
                               else v)
                           for n, v in st.items()} for i, st in o["state"].items()},
             "param_groups": copy.deepcopy(o["param_groups"])} for o in states]


def _join_optimizer(per_run: list[list[dict]], module: SideBySide) -> list[dict]:
    """The inverse of _split_optimizer: every run's optimiser states as the group's."""
    out = []
    for j, first in enumerate(per_run[0]):
        runs = [r[j]["state"] for r in per_run]
        out.append({"state": {i: {n: (module.join([r[i][n] for r in runs])
                                      if torch.is_tensor(v) and v.dim() > 0 else v)
                                  for n, v in st.items()} for i, st in first["state"].items()},
                    "param_groups": first["param_groups"]})
    return out


class RunCheckpoints(Checkpoint):
    """Every run's best.ckpt (highest val_acc) and last.ckpt in its own run directory, each
    holding that run's slice of the weights and optimiser state and the callback states of
    a run trained alone, so `Trainer.fit(ckpt_path=...)` of one run resumes from it."""

    def __init__(self, run_dirs: list[Path], metrics: list[EpochMetrics]):
        self.run_dirs, self.metrics = run_dirs, metrics
        # The callbacks a run trained alone has: their state goes into its checkpoints.
        self.alone = [checkpoint_callbacks(d / "checkpoints") for d in run_dirs]
        self.best: list[float | None] = [None] * len(run_dirs)
        self.io = VerifiedCheckpointIO()

    def best_path(self, k: int) -> Path | None:
        return self.run_dirs[k] / "checkpoints" / "best.ckpt" if self.best[k] is not None else None

    def state_dict(self) -> dict:
        return {"best": list(self.best)}

    def load_state_dict(self, state: dict) -> None:
        self.best = list(state.get("best", self.best))

    def on_validation_end(self, trainer, module: SideBySide) -> None:
        if trainer.sanity_checking:
            return
        better = []
        for k in range(module.k):
            acc = module.run_metrics(k).get("val_acc", float("nan"))
            acc = float("-inf") if acc != acc else acc  # as ModelCheckpoint ranks NaN
            if self.best[k] is None or acc > self.best[k]:
                self.best[k] = acc
                better.append(k)
        if better:
            whole = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
            for k in better:
                self._write(whole, module, k, "best")

    def on_train_epoch_end(self, trainer, module: SideBySide) -> None:
        whole = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
        for k in range(module.k):
            self._write(whole, module, k, "last")

    def _alone_states(self, k: int) -> dict:
        best_cb, last_cb = self.alone[k]
        ckpt_dir = Path(best_cb.dirpath)  # resolved, as ModelCheckpoint records its files
        if self.best[k] is not None:
            score, path = torch.tensor(self.best[k]), str(ckpt_dir / "best.ckpt")
            best_cb.best_model_score = best_cb.kth_value = best_cb.current_score = score
            best_cb.best_model_path = best_cb.kth_best_model_path = path
            best_cb.best_k_models = {path: score}
        last_cb.best_model_path = str(ckpt_dir / "last.ckpt")
        # "EpochMetrics": the state key of a run trained alone's metrics callback.
        return {"EpochMetrics": self.metrics[k].state_dict(),
                best_cb.state_key: best_cb.state_dict(), last_cb.state_key: last_cb.state_dict()}

    def _write(self, whole: dict, module: SideBySide, k: int, kind: str) -> None:
        m = module.members[k]
        ckpt = {key: whole[key] for key in ("epoch", "global_step", "pytorch-lightning_version",
                                            "loops", "lr_schedulers") if key in whole}
        ckpt.update(state_dict=module.member_state(k),
                    optimizer_states=_split_optimizer(whole["optimizer_states"], k, module),
                    callbacks=self._alone_states(k), hparams_name="kwargs",
                    hyper_parameters=dict(m.hparams))
        self.io.save_checkpoint(ckpt, self.run_dirs[k] / "checkpoints" / f"{kind}.ckpt")


class RunLogs(Callback):
    """Each run's TensorBoard log in its own run directory (tensorboard/), with the epoch
    metrics and learning rate a run trained alone logs."""

    def __init__(self, run_dirs: list[Path], metrics: list[EpochMetrics]):
        self.metrics = metrics
        self.loggers = [TensorBoardLogger(str(d), name="tensorboard", version="",
                                          default_hp_metric=False) for d in run_dirs]

    def on_train_epoch_end(self, trainer, module) -> None:
        lr_name = f"lr-{type(trainer.optimizers[0]).__name__}"
        for logger, metrics in zip(self.loggers, self.metrics):
            row = metrics.rows[-1]
            values = {k: row[k] for k in ("train_loss", "train_acc", "val_loss", "val_acc")
                      if row[k] == row[k]}  # NaN: not validated this epoch
            logger.log_metrics({**values, lr_name: row["lr"], "epoch": trainer.current_epoch},
                               step=trainer.global_step)

    def teardown(self, trainer, module, stage: str) -> None:
        for logger in self.loggers:
            logger.finalize("success")


class _ResumeIO(VerifiedCheckpointIO):
    """Hands Lightning the group's checkpoint stacked from the runs' own last.ckpt files."""

    SENTINEL = "side-by-side:last"

    def __init__(self, stacked: dict | None):
        super().__init__()
        self.stacked = stacked

    def load_checkpoint(self, path, *args, **kwargs):
        if str(path) == self.SENTINEL and self.stacked is not None:
            return self.stacked
        return super().load_checkpoint(path, *args, **kwargs)


def resume_state(specs: list[RunSpec], out_dir: Path) -> tuple[str, list[dict] | None]:
    """("fresh", None) when no run has a checkpoint; ("resume", their last.ckpt contents)
    when every run has one from the same step; ("apart", None) otherwise: they then resume
    one by one, each from its own checkpoint."""
    points = [resume_point(s.run_dir(out_dir) / "checkpoints", s) for s in specs]
    if all(p is None for p in points):
        return "fresh", None
    if any(p is None or p.name != "last.ckpt" for p in points):
        return "apart", None
    ckpts = [load_checkpoint_dict(p) for p in points]
    if len({(c["epoch"], c["global_step"]) for c in ckpts}) != 1:
        return "apart", None
    return "resume", ckpts


def _group_checkpoint(ckpts: list[dict], metrics: list[EpochMetrics],
                      ranker: RunCheckpoints, module: SideBySide) -> dict:
    """The runs' own last.ckpt contents as the checkpoint of the group that resumes them."""
    first = ckpts[0]
    out = {key: first[key] for key in ("epoch", "global_step", "pytorch-lightning_version",
                                       "loops", "lr_schedulers") if key in first}
    out["state_dict"] = {f"stack.{name[len('model.'):]}": module.join([c["state_dict"][name]
                                                                      for c in ckpts])
                         for name in first["state_dict"]}
    out["optimizer_states"] = _join_optimizer([c["optimizer_states"] for c in ckpts], module)
    best_key = ranker.alone[0][0].state_key
    best = []
    for c in ckpts:
        score = c["callbacks"].get(best_key, {}).get("best_model_score")
        best.append(None if score is None else float(score))
    out["callbacks"] = {m.state_key: c["callbacks"].get("EpochMetrics", {"rows": []})
                        for m, c in zip(metrics, ckpts)}
    out["callbacks"][ranker.state_key] = {"best": best}
    return out


# --- training a group ------------------------------------------------------------------------

def train_group(specs: list[RunSpec], splits: Splits, out_dir: str | Path, *,
                log: Callable[[str], None] = print) -> list[dict]:
    """Train `specs` (compatible, none finished, none with a checkpoint from another step:
    see `resume_state`) side by side; returns each run's results.json content."""
    out_dir = Path(out_dir)
    cfg = specs[0].train
    accelerator = resolve_accelerator(cfg.device)
    precision = resolve_precision(cfg.precision, accelerator)
    run_dirs = [s.run_dir(out_dir) for s in specs]
    state, ckpts = resume_state(specs, out_dir)
    if state == "apart":
        raise ValueError("runs with checkpoints from different steps cannot train side by side")
    memory.require(specs[0].model, cfg, accelerator, len(specs))  # before anything is written
    members = []
    for spec, run_dir in zip(specs, run_dirs):
        # Seeded exactly as a run trained alone, so each starts from its own initialisation.
        pl.seed_everything(spec.train.seed, workers=True, verbose=False)
        m = Classifier(spec.model.name, dict(spec.model.params), to_dict(spec.optim),
                       to_dict(spec.train.augment), seed=spec.train.seed,
                       perm=list(spec.perm) if spec.perm else None)
        check_output_space(run_dir, count_parameters(m.model), spec.train.epochs)
        spec.write_config(run_dir)
        members.append(m)
    note_late_milestones(specs[0].optim.milestones, cfg.epochs, log)
    names = [f"{s.label} seed {s.train.seed}" for s in specs]
    log(f"training {len(specs)} runs side by side ({', '.join(names)})"
        + (f", resuming after epoch {ckpts[0]['epoch'] + 1} from their last.ckpt" if ckpts else ""))
    quiet_lightning()
    module = SideBySide(members, layout=layout(specs[0].model, cfg.side_by_side_layout)[0])
    if cfg.compile:
        check_compile_on_cpu(members[0].model, accelerator)
        module.compile_step(cfg.compile_mode)
    bars = interactive()
    metrics = [EpochMetrics(d / "metrics.csv", log=None if bars else log, name=name,
                            metrics=lambda trainer, k=k: module.run_metrics(k),
                            batch_size=cfg.batch_size, state_id=str(k))
               for k, (d, name) in enumerate(zip(run_dirs, names))]
    ranker = RunCheckpoints(run_dirs, metrics)
    stacked = None
    if ckpts is not None:
        stacked = _group_checkpoint(ckpts, metrics, ranker, module)
    trainer = pl.Trainer(
        accelerator=accelerator, devices=1, precision=precision, max_epochs=cfg.epochs,
        check_val_every_n_epoch=cfg.val_every,
        callbacks=[*metrics, RunLogs(run_dirs, metrics),
                   ValidateLastEpoch(cfg.epochs, cfg.val_every), ranker]
        + ([TQDMProgressBar(refresh_rate=cfg.progress_every)] if bars else []),
        enable_progress_bar=bars, logger=False, plugins=[_ResumeIO(stacked)],
        num_sanity_val_steps=0, enable_model_summary=False, deterministic=False)
    device = data_device(accelerator)
    train = [train_loader(splits, s.train, device) for s in specs]
    wall = fit(trainer, module, train, val_loader(splits, cfg, device, specs[0].model, len(specs)),
               _ResumeIO.SENTINEL if stacked is not None else None,
               lambda: (f"training of {len(specs)} runs side by side was interrupted: run the "
                        "same command again to resume each from its last.ckpt"), specs)
    results = []
    for k, (spec, run_dir) in enumerate(zip(specs, run_dirs)):
        best = ranker.best_path(k) or run_dir / "checkpoints" / "last.ckpt"
        results.append(finish_run(spec, splits, run_dir, best=best, rows=metrics[k].rows,
                                  n_params=count_parameters(members[k].model),
                                  accelerator=accelerator, precision=precision, wall=wall,
                                  log=log, side_by_side=len(specs),
                                  layout="wide" if module.wide else "stacked"))
    return results


def train_runs(specs: list[RunSpec], splits: Splits, out_dir: str | Path, *, retrain: bool = False,
               log: Callable[[str], None] = print) -> list[dict] | None:
    """Train (or reuse, or resume) every run of `specs`: finished ones are reused, and the
    rest train side by side in groups of compatible runs where `group_size` allows, else
    one after another. Returns their results in the order of `specs`; None on a DDP worker
    process (which writes nothing)."""
    out_dir = Path(out_dir)
    results: dict[int, dict] = {}
    todo = []
    for i, spec in enumerate(specs):
        if retrain:
            if is_main_process():
                run_dir = spec.run_dir(out_dir)
                shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
                (run_dir / "results.json").unlink(missing_ok=True)
        elif read_results(spec.run_dir(out_dir)) is not None:
            _header(specs, i, log)
            results[i] = train_run(spec, splits, out_dir, log=log)  # reuse
            continue
        todo.append(i)
    worker = False
    for group in schedule([specs[i] for i in todo], out_dir, log):
        group = [todo[j] for j in group]
        if len(group) > 1:  # (never with DDP: group_size is 1 there)
            done = train_group([specs[i] for i in group], splits, out_dir, log=log)
            results.update(zip(group, done))
            continue
        i = group[0]
        _header(specs, i, log)
        res = train_run(specs[i], splits, out_dir, log=log)
        # A DDP worker process trains every run with the main one: Lightning starts the
        # workers at the first fit only, and each later fit waits for all of them. A worker
        # that stopped after the first run left the main process's second fit to fail
        # ("Connection closed by peer"), so --devices 2 with two seeds or two models crashed.
        worker = worker or not res
        results[i] = res
    return None if worker else [results[i] for i in range(len(specs))]


def schedule(specs: list[RunSpec], out_dir: str | Path,
             log: Callable[[str], None] = print) -> list[list[int]]:
    """The order in which unfinished `specs` train: lists of indices into `specs`, each a
    group to train side by side (or a single run). Training and the plan both follow it."""
    groups: list[list[int]] = []
    for i, spec in enumerate(specs):
        accelerator = resolve_accelerator(spec.train.device)
        limit = group_size(spec, accelerator, resolve_precision(spec.train.precision, accelerator))
        first = not any(compatible(specs[g[0]], spec) for g in groups)
        if limit > 1 and (why := layout(spec.model, spec.train.side_by_side_layout)[1]):
            if first:  # say it once
                log(f"note: {spec.model.name} cannot train side by side ({why}): its runs "
                    "train one at a time")
            limit = 1
        fit = memory.runs_that_fit(spec.model, spec.train, accelerator) if limit > 1 else None
        if fit is not None and fit < limit:
            if first and fit > 1:
                log(f"note: memory allows {fit} {spec.label} runs side by side at batch "
                    f"{spec.train.batch_size}, not {limit}: they train {fit} at a time")
            limit = max(fit, 1)
        for g in groups:
            if len(g) < limit and compatible(specs[g[0]], spec):
                g.append(i)
                break
        else:
            groups.append([i])
    out = []
    for g in groups:
        spec = specs[g[0]]
        if len(g) > 1 and resume_state([specs[i] for i in g], Path(out_dir))[0] == "apart":
            log(f"{len(g)} runs of one shape have checkpoints from different epochs (or only "
                "some have one): each resumes or starts alone")
            out.extend([i] for i in g)
        elif len(g) > 1 and spec.train.side_by_side == 0 and not _faster(spec, len(g), log):
            out.extend([i] for i in g)
        else:
            out.append(g)
    return out


_RATES: dict[tuple[str, int], float] = {}


def throughput(spec: RunSpec, runs: int) -> float:
    """Training images/s of `runs` runs like `spec` side by side (1: alone), all their images
    counted: a few steps on synthetic images, through `reportgen bench`'s code path. Timed
    once per setting and group size, for the plan and the automatic side-by-side verdict."""
    from ..bench import BenchConfig, bench_training
    from ..config import ExperimentConfig

    key = (digest({"model": spec.model, "optim": spec.optim, "train": spec.train}), runs)
    if key not in _RATES:
        cfg = ExperimentConfig(model=spec.model, optim=spec.optim, train=spec.train)
        # On a GPU these steps take a second, and the warm-up covers cuDNN's autotuning of
        # the new shapes; on a CPU (the plan's estimate only) a step can take a second.
        gpu = resolve_accelerator(spec.train.device) == "gpu"
        b = BenchConfig(warmup_steps=5, steps=20, repeats=2) if gpu else BenchConfig(
            warmup_steps=3, steps=6, repeats=2)
        _RATES[key] = bench_training(cfg, b, runs)[0]["train_img_per_s"]
    return _RATES[key]


def _faster(spec: RunSpec, runs: int, log: Callable[[str], None]) -> bool:
    """The automatic setting keeps a group only where it is measured faster on this device
    than its runs one after another."""
    together, alone = throughput(spec, runs), throughput(spec, 1)
    verdict = together > alone
    log(f"side by side: {runs} {spec.label} runs measured {together:.0f} img/s in all against "
        f"{alone:.0f} img/s alone on this device: "
        + ("they train together" if verdict else "they train one at a time"))
    return verdict


def _header(specs: list[RunSpec], i: int, log: Callable[[str], None]) -> None:
    if len(specs) > 1:
        log(f"--- {specs[i].label}, seed {specs[i].train.seed} ({i + 1} of {len(specs)})")
