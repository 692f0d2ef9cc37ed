"""reportgen: runs Practical 2 (CNNs on CIFAR-10) end to end and writes a paper-style report."""
from . import runtime as _runtime

# Before any torch import: libgomp reads its spin count once, when torch loads it.
_runtime.applied.update(_runtime.apply_thread_defaults())


def installed_version() -> str | None:
    """reportgen's version as pip installed it; None in a source tree never installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("reportgen")
    except PackageNotFoundError:
        return None
