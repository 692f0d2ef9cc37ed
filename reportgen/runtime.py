"""Settings that must be in place before torch loads its OpenMP runtime.

PyTorch's CPU kernels run on an OpenMP thread pool (GNU libgomp in the pip wheels). Between
parallel regions libgomp's threads spin-wait, by default for 300,000 iterations, before they
sleep. On an idle machine that saves a wake-up per region; on a 2-core laptop with one other
busy process it is ruinous: a spinning thread burns the time slice its partner needs, and
training fell to a third of its fair share next to a busy loop and to a fifteenth next to a
second PyTorch job. `OMP_WAIT_POLICY=PASSIVE` (no spinning) fixes the loaded case but costs
about 7-16% when idle. A short spin serves both: measured on the 2-core development machine
(README, "Speed"), 3,000 iterations keeps idle throughput within noise of the default and the
loaded cases near 90% of the fair half.

libgomp reads its environment once, when it is loaded, so this runs from the package's
`__init__`, before anything imports torch. A user's own `GOMP_SPINCOUNT` or `OMP_WAIT_POLICY`
always wins.
"""
from __future__ import annotations

import os
import sys
from typing import MutableMapping

SPIN_COUNT = "3000"
USER_KNOBS = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")  # either one means: the user has chosen
applied: dict[str, str] = {}  # what reportgen set in this process (empty: nothing)


def apply_thread_defaults(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Set reportgen's OpenMP spin count unless the user set their own or torch is loaded."""
    if any(k in environ for k in USER_KNOBS) or environ.get("REPORTGEN_OPENMP") == "default":
        return {}
    if "torch" in sys.modules:  # too late: the runtime has read its environment already
        return {}
    environ["GOMP_SPINCOUNT"] = SPIN_COUNT
    return {"GOMP_SPINCOUNT": SPIN_COUNT}


def user_environment() -> dict[str, str]:
    """This process's environment as the user gave it, without reportgen's defaults: what
    a competing program started for `bench --load` would see."""
    env = dict(os.environ)
    for k in applied:
        env.pop(k, None)
    return env


def describe() -> str:
    """One line for bench and logs: which wait policy this process runs with."""
    if applied:
        return ", ".join(f"{k}={v}" for k, v in applied.items()) + " (reportgen's default)"
    user = [f"{k}={os.environ[k]}" for k in USER_KNOBS if k in os.environ]
    return ", ".join(user) + " (yours)" if user else "the OpenMP runtime's default"
