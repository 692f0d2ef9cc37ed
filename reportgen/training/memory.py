"""Whether training fits in memory, checked before anything is timed or trained.

A batch too large for the machine does not fail politely: on Linux the kernel's OOM killer
ends the process with SIGKILL, no message and no chance to clean up, and on a GPU CUDA raises
an out-of-memory error from deep inside the backward pass. Training's memory is dominated by
the activations autograd keeps for the backward pass, which grow linearly with the batch, so
they are measured once per model on a batch of four images (`saved_tensors_hooks`, on the
CPU, in float32) and scaled. On this project's CPU the estimate was within 16% of the peak
resident memory a real step added (batch 512 to 8,192, the practical's ResNet and the
p4-equivariant one); bf16 on a GPU keeps less, so there the check errs on the safe side.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from .errors import TrainingError

PROBE_IMAGES = 4
IMAGE_BYTES = 3 * 32 * 32 + 8  # one uint8 CIFAR image and its int64 label
# Peak memory over the activations kept for the backward pass: the backward pass's
# transient buffers and the allocator's slack (a run alone measured 0.93-1.16 times them),
# and for runs side by side also vmap's stacked copies (1.6 times, for groups of 3-8).
HEADROOM = 1.25
STACKED_HEADROOM = 1.75
# The input pipeline's float32 copies of a training batch on the device (the images as
# floats, normalised, the resampling grid, resampled, permuted), which the model's profile
# does not see. They matter next to a small network's activations: the practical's ResNet
# narrowed to channels [4, 8], blocks [1, 1] keeps 158 KiB per image, and one training step
# at batch 8,192 peaked at 246 KiB per image, past the estimate without them (the OOM killer
# ended `reportgen bench` at batch 100,000 with SIGKILL); for the practical's ResNet they are
# a few per cent. Six copies: a margin of 9% at that batch.
AUGMENT_BYTES = 6 * 3 * 32 * 32 * 4
_PROFILES: dict[str, tuple[float, int]] = {}


def profile(model_cfg) -> tuple[float, int]:
    """(bytes of activations autograd keeps per training image, parameters) of the model."""
    from ..config import digest
    from ..models import build_model

    key = digest(model_cfg)
    if key not in _PROFILES:
        _require_model_fits(model_cfg)
        model = build_model(model_cfg.name, **dict(model_cfg.params)).train()
        seen: set[int] = set()
        total = 0

        def pack(t: torch.Tensor) -> torch.Tensor:
            nonlocal total
            storage = t.untyped_storage()
            if storage.data_ptr() not in seen:  # views of one tensor count once
                seen.add(storage.data_ptr())
                total += storage.nbytes()
            return t

        x = torch.zeros(PROBE_IMAGES, 3, 32, 32, requires_grad=True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(x)
        _PROFILES[key] = (total / PROBE_IMAGES, sum(p.numel() for p in model.parameters()))
    return _PROFILES[key]


def _require_model_fits(model_cfg) -> None:
    """Stop before building a model whose weights, gradients and optimiser state alone
    cannot fit in the host's memory: counted on the meta device, which allocates nothing.
    (Building it failed with the allocator's error, read as "use smaller batches".)"""
    from ..models import build_model

    with torch.device("meta"):
        params = sum(p.numel() for p in build_model(model_cfg.name,
                                                    **dict(model_cfg.params)).parameters())
    free = host_available()
    if free is not None and 16 * params > free:
        raise TrainingError(
            f"{model_cfg.name} with the settings {dict(model_cfg.params)} has {params:,} "
            f"parameters: with their gradients and optimiser state they need about "
            f"{gib(16 * params)}, more than the {gib(free)} available on this machine: use "
            "fewer or narrower layers")


def training_bytes(model_cfg, batch_size: int, runs: int = 1, per_batch_image: int = 0) -> int:
    """Memory that `runs` runs of one model training side by side at `batch_size` add:
    activations, and weights, gradients and two optimiser buffers per parameter; plus
    `per_batch_image` bytes per image of the batch that the caller allocates once."""
    per_image, params = profile(model_cfg)
    return int(runs * _run_bytes(per_image, params, batch_size, runs)
               + batch_size * per_batch_image)


def _run_bytes(per_image: float, params: int, batch_size: int, runs: int) -> float:
    return (batch_size * (per_image * (HEADROOM if runs == 1 else STACKED_HEADROOM) + AUGMENT_BYTES)
            + 16 * params)


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _meminfo_available(meminfo: Path) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _inactive_file(stat: Path, key: str) -> int:
    """Page cache the kernel can drop (a cgroup's usage counts it): memory.stat's `key`."""
    try:
        for line in stat.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def host_available(meminfo: Path = Path("/proc/meminfo"),
                   cgroup: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Memory this process may still take on the host: the kernel's MemAvailable, capped by
    a container's cgroup limit (v2 or v1) less its working set (usage without the page cache
    it can drop, as container runtimes count it); None where neither can be read."""
    candidates = [_meminfo_available(meminfo)]
    for limit_name, usage_name, stat_name, key in (
            ("memory.max", "memory.current", "memory.stat", "inactive_file"),
            ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes",
             "memory/memory.stat", "total_inactive_file")):
        limit, usage = _read_int(cgroup / limit_name), _read_int(cgroup / usage_name)
        if limit is not None and usage is not None and limit < 2**60:  # "max": no limit
            working = max(usage - _inactive_file(cgroup / stat_name, key), 0)
            candidates.append(max(limit - working, 0))
    known = [c for c in candidates if c is not None]
    return min(known) if known else None


def available(accelerator: str) -> int | None:
    """Free memory where training would allocate: the GPU's (with what this process's
    allocator holds unused) or the host's; None when it cannot be told."""
    if accelerator == "gpu":
        if not torch.cuda.is_available():
            return None
        free, _ = torch.cuda.mem_get_info()
        return int(free + torch.cuda.memory_reserved() - torch.cuda.memory_allocated())
    return host_available()


def gib(n: float) -> str:
    """A size as a person reads it: GiB, MiB, or KiB for what a small network keeps per image
    (it read "0 MiB per image")."""
    if n >= 2**30:
        return f"{n / 2**30:,.1f} GiB"
    if n >= 2**20:
        return f"{n / 2**20:.0f} MiB"
    return f"{n / 2**10:.0f} KiB" if n >= 2**10 else f"{max(n, 0):,.0f} bytes"


def _processes(train_cfg, accelerator: str) -> int:
    """Processes of one run that will share this memory and have not started yet: a DDP
    run's on the CPU, counted by its first process (a GPU process has a card of its own,
    and a later process finds the others' memory taken already)."""
    if accelerator != "cpu" or os.environ.get("LOCAL_RANK", "0") != "0":
        return 1
    return train_cfg.devices


def process_bytes() -> int:
    """This process's resident memory (torch, the decoded data): what each further DDP
    process on the CPU will hold too, before it trains."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _room(free: int, procs: int) -> float:
    """Memory for one process's training: this process is resident already, each further
    DDP process first loads what it holds."""
    return (free - (procs - 1) * process_bytes()) / procs if procs > 1 else free


def runs_that_fit(model_cfg, train_cfg, accelerator: str, per_batch_image: int = 0) -> int | None:
    """How many runs of this model fit side by side now (0: not even one); None: unknown."""
    free = available(accelerator)
    if free is None:
        return None
    bs, procs = train_cfg.batch_size, _processes(train_cfg, accelerator)
    per_image, params = profile(model_cfg)
    room = _room(free, procs) - bs * per_batch_image
    if room < _run_bytes(per_image, params, bs, 1):
        return 0
    return max(int(room // _run_bytes(per_image, params, bs, 2)), 1)


def require(model_cfg, train_cfg, accelerator: str, runs: int = 1, what: str = "",
            per_batch_image: int = 0) -> None:
    """Raise TrainingError, naming the setting to change, when `runs` runs of this model at
    train.batch_size do not fit in the memory available now (with `per_batch_image` bytes
    per batch image the caller allocates). `what` names the runs (default: "N runs side by
    side")."""
    fit = runs_that_fit(model_cfg, train_cfg, accelerator, per_batch_image)
    if fit is None or fit >= runs:
        return
    free = available(accelerator) or 0
    bs, procs = train_cfg.batch_size, _processes(train_cfg, accelerator)
    here = "on the GPU" if accelerator == "gpu" else "on this machine"
    if fit >= 1:  # one run fits: too many side by side
        need = training_bytes(model_cfg, bs, runs, per_batch_image) * procs
        raise TrainingError(
            f"{what or f'{runs} runs side by side'} of {model_cfg.name} at batch {bs} need "
            f"about {gib(need)} of memory, more than the {gib(free)} available {here}: use at "
            f"most {fit}")
    one = training_bytes(model_cfg, bs, 1, per_batch_image)
    if procs > 1:
        base = process_bytes()
        most = int((free + base) // (one + base))  # processes that fit, this one included
        if most >= 1:
            raise TrainingError(
                f"--devices {procs} on the CPU starts {procs} training processes of about "
                f"{gib(base + one)} each (this one holds {gib(base)} before training), more "
                f"than the {gib(free)} available {here}: use at most --devices {most}")
    per_image, params = profile(model_cfg)
    need = one * procs
    largest = math.floor((_room(free, procs) - 16 * params)
                         / (per_image * HEADROOM + AUGMENT_BYTES + per_batch_image))
    fix = (f"use a smaller batch, at most about --set train.batch_size={largest}"
           if largest >= 1 else "use a smaller model or a machine with more memory")
    raise TrainingError(
        f"train.batch_size = {bs} needs about {gib(need)} of memory to train {model_cfg.name} "
        f"({gib(per_image)} per image kept for the backward pass), more than the {gib(free)} "
        f"available {here}: {fix}")


def eval_batch_that_fits(model_cfg, batch_size: int, device: torch.device,
                         concurrent: int = 1, reserved: int = 0) -> int:
    """The largest evaluation batch, up to `batch_size`, of which `concurrent` forward passes
    at once fit in the memory of `device` available now, less `reserved` bytes that something else (a
    run's training) will take; `batch_size` where that cannot be told.

    Evaluation keeps no activations for a backward pass, so the training profile overstates
    a batch's memory (measured 3.5x for both ResNets at batch 4,096; far more for the MLP):
    capped by it, a batch never exhausts memory. Evaluation's results do not depend on its
    batch, so a smaller one only costs time. (Before, `train.eval_batch_size = 10000` with the
    ResNet 8x wider, c_hidden = [128, 256, 512], scored the 10,000 test images in one pass
    that peaked at 23 GiB resident on a 24 GiB machine; now 2.9 GiB, in 229 s, not 275 s.)"""
    free = available("gpu" if device.type == "cuda" else "cpu")
    if free is None:
        return batch_size
    per_image, _ = profile(model_cfg)
    room = max(free - reserved, 0)
    return max(1, min(batch_size, int(room // (per_image * max(concurrent, 1)))))


def require_images(n: int, option: str) -> None:
    """Stop where `n` uint8 images (with their labels and a copy in flight) cannot fit in
    the host's memory, naming `option` (e.g. --eval-images) and how many would."""
    free = host_available()
    each = 2 * IMAGE_BYTES
    if free is not None and n * each > free:
        raise TrainingError(f"{option} {n} needs about {gib(n * each)} of memory for its images, "
                            f"more than the {gib(free)} available on this machine: use at most "
                            f"{option} {free // each}")
