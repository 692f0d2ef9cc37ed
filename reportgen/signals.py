"""Interrupts: SIGTERM ends a command as Ctrl-C does, and no Ctrl-C is lost in a finalizer.

During `trainer.fit` Lightning handles SIGTERM itself (it stops after the current batch and
reportgen reports how to resume); Lightning also calls the handler installed here, which then
does nothing. Anywhere else (decoding data, the final evaluation, the rotation sweep, building
the report) SIGTERM raises KeyboardInterrupt, so the command ends with its one-line message
instead of dying silently with exit 143.

A Ctrl-C that lands while Python runs a finalizer (a weakref callback or `__del__`, which
matplotlib and torch run often) cannot leave it: Python prints "Exception ignored in ..." and
carries on. `reportgen all` interrupted during its figures went on to write the report and
exit 0. The interrupt is delivered again as soon as the finalizer has returned.
"""
from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager

_state = {"fitting": False}


def _on_sigterm(signum, frame) -> None:
    if not _state["fitting"]:
        raise KeyboardInterrupt("terminated")


def _redeliver(signum, frame) -> None:
    """Raise the interrupt a finalizer swallowed, once, then leave SIGINT as it was."""
    if _state.get("in_hook"):  # still inside the hook that asked for it: ask again
        _trip_later()
        return
    signal.signal(signal.SIGINT, _state.pop("sigint", signal.default_int_handler))
    raise KeyboardInterrupt


def _trip_later() -> None:
    import _thread

    timer = threading.Timer(0.01, _thread.interrupt_main)
    timer.daemon = True  # never holds up the interpreter's exit
    timer.start()


def _on_unraisable(unraisable) -> None:
    """sys.unraisablehook: an interrupt raised inside a finalizer is raised again after it."""
    if (isinstance(unraisable.exc_value, KeyboardInterrupt)
            and threading.current_thread() is threading.main_thread()):
        # Through a handler of our own (SIGINT may be ignored, as in a background job, where
        # the interrupt came from SIGTERM), tripped from another thread a moment later: a
        # signal raised here would be handled at once, inside this hook, and swallowed again.
        # The handler then runs in the main thread's own code; caught by another finalizer,
        # the interrupt comes back here and goes round.
        _state["in_hook"] = True
        try:
            if "sigint" not in _state:
                _state["sigint"] = signal.getsignal(signal.SIGINT) or signal.SIG_DFL
            signal.signal(signal.SIGINT, _redeliver)
            _trip_later()
        finally:
            _state["in_hook"] = False
        return
    _state["unraisablehook"](unraisable)


def install() -> None:
    """Install the handlers (the command-line entry point does, in the main thread)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
        if sys.unraisablehook is not _on_unraisable:
            _state["unraisablehook"] = sys.unraisablehook
            sys.unraisablehook = _on_unraisable


@contextmanager
def lightning_handles_sigterm():
    """While Lightning fits, leave SIGTERM to Lightning."""
    old = _state["fitting"]
    _state["fitting"] = True
    try:
        yield
    finally:
        _state["fitting"] = old
