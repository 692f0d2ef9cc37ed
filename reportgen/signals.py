"""SIGTERM outside Lightning's fit: stop with the same message as Ctrl-C.

During `trainer.fit` Lightning handles SIGTERM itself (it stops after the current batch and
reportgen reports how to resume); Lightning also calls the handler installed here, which then
does nothing. Anywhere else (decoding data, the final evaluation, the rotation sweep, building
the report) SIGTERM raises KeyboardInterrupt, so the command ends with its one-line message
instead of dying silently with exit 143.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

_state = {"fitting": False}


def _on_sigterm(signum, frame) -> None:
    if not _state["fitting"]:
        raise KeyboardInterrupt("terminated")


def install() -> None:
    """Install the handler (the command-line entry point does, in the main thread)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


@contextmanager
def lightning_handles_sigterm():
    """While Lightning fits, leave SIGTERM to Lightning."""
    old = _state["fitting"]
    _state["fitting"] = True
    try:
        yield
    finally:
        _state["fitting"] = old
