"""Plain evaluation of a trained classifier on in-memory images: predictions, accuracy,
confidence and per-class accuracy. Used for the final val/test numbers and the rotation sweep,
so accuracy at 0 degrees is by construction the plain validation accuracy.
"""
from __future__ import annotations

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


@torch.inference_mode()
def score(module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256,
          transform: Transform | None = None, num_classes: int | None = None) -> Scores:
    """Evaluate `module` (a training.Classifier) on uint8 images `x` with labels `y`.

    `transform` acts on the normalised batch before the module's own input pipeline (e.g. the
    pixel permutation) is applied; the rotation sweep passes a rotation here. Counts stay on
    the device until the end, so there is one host synchronisation per call.
    """
    module.eval()
    device = module.device
    k = num_classes or int(module.hparams.model_params.get("num_classes", 10))
    correct = torch.zeros(k, dtype=torch.int64, device=device)
    total = torch.zeros(k, dtype=torch.int64, device=device)
    conf = torch.zeros((), dtype=torch.float64, device=device)
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size].to(device, non_blocking=True)
        yb = y[start:start + batch_size].to(device, non_blocking=True)
        probs = module.predict_proba(xb, transform)
        p, pred = probs.max(1)
        conf += p.double().sum()
        correct += torch.bincount(yb[pred == yb], minlength=k)
        total += torch.bincount(yb, minlength=k)
    c, t = correct.tolist(), total.tolist()
    return Scores(n=sum(t), correct=sum(c), confidence_sum=float(conf), per_class_correct=c,
                  per_class_total=t)
