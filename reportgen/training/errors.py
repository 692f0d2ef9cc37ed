"""Errors of training runs; the messages say what to do."""
from __future__ import annotations

from ..errors import UserError


class TrainingError(UserError, RuntimeError):
    """Training cannot start or went wrong; the message says what to do."""


class Interrupted(TrainingError):
    """Training was stopped by Ctrl-C or SIGTERM; the message says how to resume."""
