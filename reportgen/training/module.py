"""The LightningModule: a registered model, its input pipeline, the optimiser and schedule."""
from __future__ import annotations

from typing import Callable

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from .. import transforms
from ..config import AugmentConfig, OptimConfig, from_dict
from ..models import build_model, prefers_channels_last
from ..optimizers import OPTIMIZERS
from .errors import Diverged


def optimizers(o: OptimConfig, params):
    """The optimiser from the optimiser table and its MultiStepLR schedule, in Lightning's form."""
    opt = OPTIMIZERS[o.name].build(params, lr=o.lr, momentum=o.momentum,
                                   weight_decay=o.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(o.milestones),
                                                 gamma=o.gamma)
    return [opt], [sched]


def prepare_runs(members: list["Classifier"], xs: torch.Tensor, train: bool = False,
                 extra: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """The members' input pipelines at once: xs is K x B x C x H x W uint8, member k's batch
    at k (a view of one batch expanded K times, to show every member the same images);
    returns K x B x C x H x W normalised floats, each batch augmented (when training) with
    its member's own configuration and generator, then `extra`, then permuted with its
    member's pixel permutation. One member is `Classifier.prepare`; several are runs trained
    side by side, whose images come out as each member alone makes them, in fewer kernels."""
    x = transforms.normalize(xs)
    if train:
        x = transforms.augment_streams(x, [m._augment_stream() for m in members])
    if extra is not None:
        x = extra(x.flatten(0, 1)).view_as(x)
    perms = [m.perm for m in members]
    if len(members) == 1 and perms[0] is not None:
        x = transforms.permute_pixels(x[0], perms[0]).unsqueeze(0)
    elif any(p is not None for p in perms):
        x = transforms.permute_pixels_runs(x, perms)
    return x


class PlainAttributes:
    """A LightningModule mixin: `PLAIN` attributes are set as plain attributes.

    Lightning sets `_current_fx_name` before and after every hook it calls, about 44 times a
    training step. `nn.Module.__setattr__` first checks whether each value is a parameter,
    buffer or submodule, about 3 us a time: 0.12 ms of a step's 1.4 ms of host time on the
    2-core CPU (bench, batch 1, a model too small to matter). On a GPU the host's time per
    step bounds the step rate. None of these names is ever a parameter, buffer or submodule.
    """
    PLAIN = frozenset({"_current_fx_name", "_train_sums", "_steps"})

    def __setattr__(self, name: str, value) -> None:
        if name in self.PLAIN:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)


class Classifier(PlainAttributes, pl.LightningModule):
    """Image classifier: model from the registry, the input pipeline, an optimiser from the
    optimiser table and MultiStepLR.

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
        self._aug: transforms.AugmentStream | None = None  # this epoch's augmentation maps
        self._train_sums: torch.Tensor | None = None  # this epoch's (loss, accuracy) sums
        self._steps = 0
        self.__dict__["_step_model"] = None  # not a submodule: checkpoints hold `model` only

    # The input pipeline: uint8 -> normalised (-> augmented) (-> extra transform) (-> permuted).
    def prepare(self, x: torch.Tensor, train: bool = False,
                extra: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        x = prepare_runs([self], x.unsqueeze(0), train, extra)[0]
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _generator(self) -> torch.Generator:
        if self._gen is None or self._gen.device != self.device:
            self._gen = torch.Generator(device=self.device)
            self._seed_generator()
        return self._gen

    def _augment_stream(self) -> transforms.AugmentStream:
        gen = self._generator()  # a new generator is seeded, and seeding drops the stream
        if self._aug is None:
            self._aug = transforms.AugmentStream(self.augment_cfg, gen)
        return self._aug

    def _seed_generator(self, epoch: int | None = None) -> None:
        # Augmentation draws depend only on (seed, epoch, rank): a resumed run repeats them,
        # and so does the same run trained side by side with others (which passes `epoch`).
        if epoch is None:
            epoch = self.trainer.current_epoch if self._trainer is not None else 0
        rank = self.global_rank if self._trainer is not None else 0
        self._gen.manual_seed(self.hparams.seed * 1_000_003 + epoch * 1009 + rank)
        self._aug = None  # maps drawn before the reseed are not this epoch's

    def start_epoch(self, epoch: int, device: torch.device) -> None:
        """Seed the augmentation draws of `epoch` on `device` (for a module trained inside
        another one, which has no trainer of its own)."""
        if self._gen is None or self._gen.device != device:
            self._gen = torch.Generator(device=device)
        self._seed_generator(epoch)

    def on_train_epoch_start(self) -> None:
        self._generator()
        self._seed_generator()
        self._train_sums = torch.zeros(2, device=self.device)
        self._steps = 0

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
        return optimizers(self.optim_cfg, self.parameters())

    def training_step(self, batch, batch_idx):
        x, y = batch
        step = self.model if self._step_model is None else self._step_model
        logits = step(x)
        loss = F.cross_entropy(logits, y)
        # The epoch's sums stay on the device: no host synchronisation per step. Lightning's
        # self.log costs about 1 ms of Python a call, more than a whole step of this small
        # network on a GPU, so the epoch means are logged once, with the epoch's last batch
        # (every batch has the same size: the loader drops the last partial one).
        with torch.no_grad():
            acc = (logits.argmax(-1) == y).float().mean()
            self._train_sums += torch.stack([loss.detach().float(), acc])
        self._steps += 1
        if batch_idx + 1 == self.trainer.num_training_batches:
            loss_mean, acc_mean = self._train_sums / self._steps
            self.log("train_loss", loss_mean, on_step=False, on_epoch=True, prog_bar=True,
                     sync_dist=True)
            self.log("train_acc", acc_mean, on_step=False, on_epoch=True, prog_bar=True,
                     sync_dist=True)
        bar = self.trainer.progress_bar_callback
        if bar is not None and (batch_idx + 1) % max(bar.refresh_rate, 1) == 0:
            # Only on the steps where a progress bar on a terminal redraws itself.
            self.log("loss", loss, on_step=True, on_epoch=False, prog_bar=True, logger=False)
        return loss

    def _check_finite(self) -> None:
        if self._train_sums is not None and not torch.isfinite(self._train_sums[0]):
            raise Diverged(self.current_epoch + 1)

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
