"""Errors of training runs; the messages say what to do."""
from __future__ import annotations

from ..errors import UserError


class TrainingError(UserError, RuntimeError):
    """Training cannot start or went wrong; the message says what to do."""


class Diverged(TrainingError):
    """The loss became NaN or infinite in `epoch` (1-based) of run `run` (its place in a
    side-by-side group; 0 alone). The training modules know neither the settings behind their
    optimiser nor the run's name: `fit` turns this into advice naming both."""

    def __init__(self, epoch: int, run: int = 0):
        super().__init__(f"training diverged in epoch {epoch}: the loss became NaN or infinite")
        self.epoch, self.run = epoch, run


class Interrupted(TrainingError):
    """Training was stopped by Ctrl-C or SIGTERM; the message says how to resume."""
