"""The plan printed before the work: which runs each command trains or reuses, how many images
that is, and how long it should take on this device, from a few training steps and an
evaluation pass measured here (on synthetic images, through the code path of `reportgen bench`).

`reportgen all --plan` (and `train`/`rotation`/`shuffle --plan`) prints it and stops; without
`--plan` it is printed to the log first and `all` compares it with the actual wall time at the
end.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path


@dataclass
class PlannedRun:
    label: str
    seed: int
    run_dir: Path
    action: str  # "train", "resume" or "reuse"
    epochs_left: int
    train_images: int  # images per epoch
    spec: object = None  # its RunSpec
    study: str = ""  # the study that trains it (each study's runs form their own groups)
    seconds: float = 0.0  # its share of the time (a side-by-side group's time, split evenly)
    together: int = 1  # runs in its side-by-side group (1: trained alone)


@dataclass
class Plan:
    runs: list[PlannedRun] = field(default_factory=list)
    evaluations: int = 0  # image evaluations beyond training (rotation sweeps)
    seconds: float = 0.0
    device: str = ""
    rates: dict[str, tuple[float, float]] = field(default_factory=dict)  # model: train, eval img/s
    unknown: bool = False  # a model could not be timed: no estimate
    download_to: str = ""  # CIFAR-10 is not there yet: the work downloads it first

    @property
    def to_train(self) -> list[PlannedRun]:
        return [r for r in self.runs if r.action != "reuse"]

    @property
    def images(self) -> int:
        return sum(r.epochs_left * r.train_images for r in self.to_train)


def _model_key(spec) -> str:
    return f"{spec.model.name} {dict(spec.model.params)} batch {spec.train.batch_size}"


def _epochs_done(run_dir: Path, spec) -> int:
    """Epochs a resumable run has finished already (0 when it would start from scratch)."""
    from .training.rundir import load_checkpoint_dict

    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return 0
    try:
        return int(load_checkpoint_dict(last)["epoch"]) + 1
    except Exception:  # a damaged checkpoint: training says what to do; plan a full run
        return 0


LARGEST_EVAL_SET = 10_000  # CIFAR-10's test images


def measure(spec, runs: int = 1, train: bool = True) -> tuple[float | None, float]:
    """Training and evaluation images/s of `spec`'s model on this device: training from a few
    steps (of `runs` runs side by side), timed as training's own side-by-side verdict times
    them and shared with it (None with `train` False: only sweeps will use the model);
    evaluation from one pass."""
    from .bench import _synthetic
    from .config import to_dict
    from .evaluation import score
    from .training import Classifier, eval_batch_size, resolve_accelerator, torch_device
    from .training.sidebyside import throughput

    # Eager steps: compiling here would cost more than the estimate is worth (and the
    # compile checks belong to training, which refuses unsafe cases with a clear error).
    train_rate = (throughput(replace(spec, train=replace(spec.train, compile=False)), runs)
                  if train else None)
    module = Classifier(spec.model.name, dict(spec.model.params), to_dict(spec.optim),
                        to_dict(spec.train.augment), seed=spec.train.seed)
    module = module.to(torch_device(resolve_accelerator(spec.train.device)))
    bs = eval_batch_size(spec.train, module.device)
    # Two batches, but never more images than the largest set a study evaluates at once
    # (CIFAR-10's test set): train.eval_batch_size = 100000 made 200,000 synthetic images
    # here, one forward pass of which the kernel's OOM killer ended.
    x, y = _synthetic(min(max(2 * bs, 512), LARGEST_EVAL_SET), seed=1)
    score(module, x[:bs], y[:bs], bs)  # warm-up
    t0 = time.perf_counter()
    score(module, x, y, bs)
    return train_rate, len(x) / (time.perf_counter() - t0)


def make_plan(cfg, prepared, chosen, retrain: bool = False, options: dict | None = None,
              log=print, one_call: bool = False) -> Plan:
    """The plan of running the studies `chosen` (in order) on `prepared` data; one_call:
    every study's runs train in one call (as `all` trains them: experiments.train_studies),
    else each study's in its own."""
    from .training import device_description, memory, read_results, resolve_accelerator
    from .training.train import require_one_batch

    s = prepared.splits
    sizes = {"val": len(s.val_x), "test": len(s.test_x)}
    plan = Plan(device=device_description(resolve_accelerator(cfg.train.device,
                                                              cfg.train.devices)),
                download_to=prepared.download_to)
    seen: dict[Path, PlannedRun] = {}
    evals: list[tuple[int, object]] = []
    specs = {}
    for study in chosen:
        for item in study.planned(cfg, prepared.data_digest, split_sizes=sizes, **(options or {})):
            if item[0] == "evaluate":
                evals.append((item[1], item[2]))
                specs.setdefault(_model_key(item[2]), item[2])
                continue
            spec = item[1]
            run_dir = spec.run_dir(cfg.out_dir)
            if run_dir in seen:
                continue
            # As training decides: a results.json it cannot trust is evaluated again.
            finished = not retrain and read_results(run_dir) is not None
            done = 0 if finished or retrain else _epochs_done(run_dir, spec)
            run = PlannedRun(spec.label, spec.train.seed, run_dir,
                             "reuse" if finished else "resume" if done else "train",
                             0 if finished else max(spec.train.epochs - done, 0), len(s.train_x),
                             spec, study.name)
            seen[run_dir] = run
            plan.runs.append(run)
            if not finished:
                specs.setdefault(_model_key(spec), spec)
    plan.evaluations = sum(n for n, _ in evals)
    if not plan.to_train and not evals:
        return plan
    pending = plan.to_train
    # The groups training will form (same-shaped runs side by side, where allowed).
    from .training.sidebyside import schedule

    groups = []
    for name in ([None] if one_call else dict.fromkeys(r.study for r in pending)):
        idx = [j for j, r in enumerate(pending) if name in (None, r.study)]
        try:
            groups += [[idx[j] for j in g] for g in
                       schedule([pending[j].spec for j in idx], cfg.out_dir, log=lambda m: None)]
        except Exception:  # e.g. a damaged checkpoint: training names it; plan runs apart
            groups += [[j] for j in idx]
    timed = {(key, 1): spec for key, spec in specs.items()}
    for g in groups:
        for j in g:
            pending[j].together = len(g)
        timed.setdefault((_model_key(pending[g[0]].spec), len(g)), pending[g[0]].spec)
    for run in pending:  # what training would refuse, refused before anything is timed
        require_one_batch(run.train_images, run.spec.train)
    for (_, runs), spec in timed.items():  # a batch that cannot fit: no plan can run
        memory.require(spec.model, spec.train, resolve_accelerator(spec.train.device), runs)
    # A model that only sweeps (every run of it reused) needs no training steps timed: they
    # cost seconds on every rerun that only rebuilds the report.
    training = {_model_key(r.spec) for r in pending}
    n_train = len({key for key, _ in timed if key in training})
    log(f"planning: timing a few training steps of {n_train} model(s) on this device ..."
        if n_train else f"planning: timing the evaluation of {len(specs)} model(s) on this "
        "device ...")
    for (key, runs), spec in timed.items():
        try:
            plan.rates[key if runs == 1 else f"{key} x{runs}"] = measure(spec, runs,
                                                                         key in training)
        except Exception as e:  # the estimate is a courtesy: training reports real errors
            log(f"planning: could not time {spec.label} ({type(e).__name__}); no estimate")
            plan.unknown = True
    if plan.unknown:
        return plan
    for run in pending:
        spec = run.spec
        key = _model_key(spec)
        eval_rate = plan.rates[key][1]
        # Side by side, a group of K trains K runs' images at its total rate: each run's
        # share of the time is its own images over that rate.
        train_rate = plan.rates[key if run.together == 1 else f"{key} x{run.together}"][0]
        vals = math.ceil(run.epochs_left / spec.train.val_every) + 1
        run.seconds = (run.epochs_left * run.train_images / train_rate
                       + (vals * sizes["val"] + sizes["test"]) / eval_rate)
    plan.seconds = sum(r.seconds for r in pending) + sum(
        n / plan.rates[_model_key(spec)][1] for n, spec in evals)
    return plan


def _images(n: int) -> str:
    """'4.50 M' for the full practical's millions; a tiny run's few hundred as they are."""
    return f"{n / 1e6:.2f} M" if n >= 100_000 else f"{n:,}"


def _about(seconds: float) -> str:
    from .report import duration

    text = duration(seconds)
    return text if text.startswith("under") else f"about {text}"


def format_plan(plan: Plan) -> list[str]:
    n_train, n_reuse = len(plan.to_train), len(plan.runs) - len(plan.to_train)
    head = (f"plan: {n_train} run{'s' if n_train != 1 else ''} to train "
            f"({_images(plan.images)} training images), {n_reuse} to reuse")
    if plan.evaluations:
        head += f", {_images(plan.evaluations)} image evaluations in sweeps"
    head += ("; no time estimate" if plan.unknown
             else f"; {_about(plan.seconds)} on {plan.device}" if plan.seconds
             else "; nothing to train")
    lines = [head]
    for r in plan.runs:
        what = {"reuse": "reuse ", "train": "train ", "resume": "resume"}[r.action]
        detail = (f"{r.epochs_left} epoch{'s' if r.epochs_left != 1 else ''} x "
                  f"{r.train_images:,} images"
                  + ("" if plan.unknown else f", {_about(r.seconds)}")
                  + (f" (its share: {r.together} runs side by side)" if r.together > 1 else "")
                  if r.action != "reuse" else "finished")
        if r.action == "resume" and not r.epochs_left:  # trained, its results.json unusable
            detail = "trained; its best checkpoint is evaluated again"
        # Before a download the folder's name (of the data's content) is not known yet.
        name = f"{r.label}-..." if plan.download_to else r.run_dir.name
        lines.append(f"  {what} {name:<32} seed {r.seed:<5} {detail}")
    if plan.download_to:
        from .data import CIFAR10_ARCHIVE_BYTES, CIFAR10_SIZES

        # Run folders are named after the data's content, unknown before the download: runs
        # finished on an earlier download of the same copy are reused, which this cannot see.
        lines.append(f"  (CIFAR-10 is not in {plan.download_to} yet: the command first downloads "
                     f"it, {CIFAR10_ARCHIVE_BYTES / 1e6:.0f} MB; this plan assumes its "
                     f"{CIFAR10_SIZES['train']:,} training and {CIFAR10_SIZES['test']:,} test "
                     "images and cannot see runs it would reuse)")
    return lines
