"""Plain evaluation of a trained classifier on in-memory images: predictions, accuracy,
confidence and per-class accuracy. Used for the final val/test numbers and the rotation sweep,
so accuracy at 0 degrees is by construction the plain validation accuracy.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import torch

Transform = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Scores:
    n: int
    correct: int
    confidence_sum: float  # sum over images of the softmax probability of the predicted class
    per_class_correct: list[int]
    per_class_total: list[int]
    pred: torch.Tensor | None = None  # the predicted class of every image (keep_predictions)

    @property
    def accuracy(self) -> float:
        return self.correct / self.n

    @property
    def mean_confidence(self) -> float:
        return self.confidence_sum / self.n

    @property
    def per_class_accuracy(self) -> list[float]:
        return [c / t if t else float("nan") for c, t in zip(self.per_class_correct,
                                                             self.per_class_total)]


def inference_net(module) -> torch.nn.Module:
    """An evaluation copy of `module`'s model with BatchNorm folded into the convolutions
    (made from the current weights, so it is never stale)."""
    from .models import fold_batchnorm

    return fold_batchnorm(module.model)


@contextmanager
def _intra_op_threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _turned(transform: Transform | None, k: int) -> Transform | None:
    """`transform`, then a turn by k * 90 degrees counter-clockwise (exact: no interpolation)."""
    if k == 0:
        return transform
    return lambda z: torch.rot90(transform(z) if transform else z, k, dims=(-2, -1))


def _workers(device: torch.device) -> int:
    return torch.get_num_threads() if device.type == "cpu" else 1


def batch_that_fits(module, batch_size: int) -> int:
    """The evaluation batch `score` uses: `batch_size`, or less where its concurrent batches
    would not fit in memory. Scores do not depend on the batch, and a forward pass too large
    for the machine ends in the kernel's OOM killer (no message) or a CUDA error."""
    from .config import ModelConfig
    from .training import memory

    hp = module.hparams
    return memory.eval_batch_that_fits(ModelConfig(hp.model_name, dict(hp.model_params)),
                                       batch_size, module.device,
                                       concurrent=_workers(module.device))


def score(module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256,
          transform: Transform | None = None, net: torch.nn.Module | None = None,
          keep_predictions: bool = False, tta: bool = False) -> Scores:
    """Evaluate `module` (a training.Classifier) on uint8 images `x` with labels `y`.

    `transform` acts on the normalised batch before the module's own input pipeline (e.g. the
    pixel permutation) is applied; the rotation sweep passes a rotation here. Counts stay on
    the device until the end, so there is one host synchronisation per call.

    On a CPU with several threads, batches run concurrently on single-threaded workers: this
    small network's convolutions do not keep two cores busy within one batch (measured 1.2x
    faster than two intra-op threads). Results are summed in batch order, so they do not
    depend on the scheduling.

    `net` is the inference copy of the model to run (see `inference_net`); callers that
    score many times, like the sweep, make it once.

    `tta`: test-time rotation averaging. The softmax is averaged over the input (after
    `transform`) turned by 0, 90, 180 and 270 degrees, which makes any model's prediction
    invariant to 90° turns at four times the cost.
    """
    module.eval()
    device = module.device
    from .models import with_defaults

    hp = module.hparams
    k = int(with_defaults(hp.model_name, dict(hp.model_params))["num_classes"])
    net = inference_net(module) if net is None else net

    @torch.inference_mode()
    def one(start: int):
        xb = x[start:start + batch_size].to(device, non_blocking=True)
        yb = y[start:start + batch_size].to(device, non_blocking=True)
        if tta:
            # Summed in float64: the four turns of an image turned by 90° are the same four
            # inputs in another order, and the average must not depend on the order.
            probs = sum(module.predict_proba(xb, _turned(transform, k), net=net).double()
                        for k in range(4)) / 4
        else:
            probs = module.predict_proba(xb, transform, net=net)
        p, pred = probs.max(1)
        return (torch.bincount(yb[pred == yb], minlength=k), torch.bincount(yb, minlength=k),
                p.double().sum(), pred.to(torch.uint8) if keep_predictions else None)

    workers = _workers(device)
    batch_size = batch_that_fits(module, batch_size)
    starts = range(0, len(x), batch_size)
    if workers > 1 and len(starts) > 1:
        with _intra_op_threads(1), ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(one, starts))
    else:
        parts = [one(s) for s in starts]
    correct = torch.stack([c for c, _, _, _ in parts]).sum(0)
    total = torch.stack([t for _, t, _, _ in parts]).sum(0)
    conf = torch.stack([c for _, _, c, _ in parts]).sum()
    pred = torch.cat([p for _, _, _, p in parts]).cpu() if keep_predictions else None
    c, t = correct.tolist(), total.tolist()
    return Scores(n=sum(t), correct=sum(c), confidence_sum=float(conf), per_class_correct=c,
                  per_class_total=t, pred=pred)
