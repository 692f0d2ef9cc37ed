"""What a study is, and the registry that `reportgen all`, `reportgen figures`, the report and
the command line loop over.

A study (Part 1 training, Part 2 rotation, Part 3 shuffle, any later one) is declared once, in
its own module: its name and title, its config section, how it runs (config + data -> results
files), its figures (results -> files), its facts for the discussion (results -> plain values)
and its report section (a template partial). Nothing else needs to know it exists.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator

from ..config import ExperimentConfig, to_dict
from ..files import MissingResults, atomic_write_text, file_sha256, is_sealed, read_json, seal
from ..schema import DATA, Map, SchemaError, check, settings

if TYPE_CHECKING:  # data imports torch, which the command line's start does without
    from ..data import Splits


@dataclass(frozen=True)
class Prepared:
    """The decoded data set and its split, shared by every study of one command."""
    splits: Splits
    data_digest: str
    source: str
    classes: tuple[str, ...]
    train_pool: int  # training images before the train/validation split (50,000)
    form: str = ""  # the copy's form in words (data.describe_form)
    download_to: str = ""  # for a plan only: the data is not there yet, a run downloads it here

    def describe(self) -> dict:
        """Plain facts about the data, for the results files and the report."""
        s = self.splits
        return {"source": self.source, "form": self.form, "sha256": self.data_digest,
                "classes": list(self.classes),
                "train_pool": self.train_pool, "train_images": len(s.train_x),
                "val_images": len(s.val_x), "test_images": len(s.test_x)}


def prepare_data(cfg: ExperimentConfig, log=print, fetch: bool = True) -> Prepared:
    """The data and its split. fetch False (a plan): where CIFAR-10 would first be downloaded,
    nothing is; the Prepared then has the sizes the download will give and no content."""
    from ..data import (CIFAR10_SIZES, CLASSES, NotDownloaded, expected_splits, load_cifar10,
                        make_splits)

    dcfg = cfg.data if cfg.data.cache_dir else replace(
        cfg.data, cache_dir=str(Path(cfg.out_dir) / "cache"))
    try:
        data = load_cifar10(dcfg, log=log, fetch=fetch)
    except NotDownloaded as e:
        prepared = Prepared(expected_splits(cfg.data), "", "", tuple(CLASSES),
                            CIFAR10_SIZES["train"], download_to=str(e.path))
    else:
        prepared = Prepared(make_splits(data, cfg.data), data.digest, data.source,
                            tuple(CLASSES), len(data.train_x), data.form)
    check_models_fit_data(cfg, len(prepared.classes))
    return prepared


def _model_configs(obj, key: str = ""):
    """(dotted key, ModelConfig) of every model the experiment names, in any section."""
    import dataclasses

    from ..config import ModelConfig

    if isinstance(obj, ModelConfig):
        yield key, obj
    elif dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            yield from _model_configs(getattr(obj, f.name), f"{key}.{f.name}" if key else f.name)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _model_configs(v, f"{key}.{k}" if key else k)


def check_models_fit_data(cfg: ExperimentConfig, n_classes: int) -> None:
    """Every model must output one score per class of the data, before any training."""
    from ..config import ConfigError
    from ..models import with_defaults

    for key, m in _model_configs(cfg):
        key = key.replace("sections.", "")
        nc = with_defaults(m.name, dict(m.params)).get("num_classes", n_classes)
        if nc != n_classes:
            raise ConfigError(f"{key}.params.num_classes = {nc}, but the data set has "
                              f"{n_classes} classes: set it to {n_classes}")


@dataclass(frozen=True)
class SeededRun:
    """One seed's finished run: its results.json content and its per-image predictions."""
    seed: int
    results: dict
    pred: dict[str, Any]  # split -> uint8 array of predicted classes

    def entry(self) -> dict:
        """What a study's results file keeps of each seed."""
        r = self.results
        return {"seed": self.seed, "run_dir": r["run_dir"], "val_acc": r["val_acc"],
                "test_acc": r["test_acc"], "best_epoch": r["best_epoch"],
                "wall_time_s": r["wall_time_s"], "train_images_per_s": r["train_images_per_s"],
                "side_by_side": r.get("side_by_side", 1)}


def train_seeds(spec, seeds, prepared: Prepared, cfg: ExperimentConfig, *, retrain: bool,
                log: Callable[[str], None]) -> list[SeededRun] | None:
    """Train (or reuse) `spec` once per seed; None on a DDP worker process."""
    done = train_models([(spec, seeds)], prepared, cfg, retrain=retrain, log=log)
    return None if done is None else done[0]


def train_studies(chosen: list, prepared: Prepared, cfg: ExperimentConfig, *, retrain: bool,
                  log: Callable[[str], None]) -> list[dict] | None:
    """Train (or reuse) every run that the studies `chosen` plan, all in one call, before
    any of them runs: same-shaped runs of different studies (Part 1's ResNet and Part 2's
    rotation-augmented one, each 100 epochs) can then train side by side, where study by
    study the first would be finished before the second is asked for. Each study then
    reuses its runs. train_runs's results; None on a DDP worker process."""
    from ..training import train_runs

    s = prepared.splits
    sizes = {"val": len(s.val_x), "test": len(s.test_x)}
    specs: dict[Path, Any] = {}
    for study in chosen:
        for item in study.planned(cfg, prepared.data_digest, split_sizes=sizes):
            if item[0] == "train":
                specs.setdefault(item[1].run_dir(cfg.out_dir), item[1])
    return train_runs(list(specs.values()), s, cfg.out_dir, retrain=retrain, log=log)


def train_models(plan: list[tuple[Any, tuple[int, ...]]], prepared: Prepared,
                 cfg: ExperimentConfig, *, retrain: bool,
                 log: Callable[[str], None]) -> list[list[SeededRun]] | None:
    """Train (or reuse) each (spec, seeds) of `plan` once per seed, all in one call so that
    same-shaped runs of different models (plain and rotation-augmented, original and
    shuffled pixels) can train side by side too. One list of SeededRun per item; None on a
    DDP worker process."""
    from .. import predictions
    from ..training import PREDICTIONS, train_runs

    specs = [spec.for_seed(seed) for spec, seeds in plan for seed in seeds]
    done = train_runs(specs, prepared.splits, cfg.out_dir, retrain=retrain, log=log)
    if done is None:
        return None
    out, it = [], iter(done)
    for spec, seeds in plan:
        runs = []
        for seed in seeds:
            res = next(it)
            path = Path(res["run_dir"]) / PREDICTIONS
            arrays = predictions.load(path, "train --retrain")
            sizes = {"val": len(prepared.splits.val_y), "test": len(prepared.splits.test_y)}
            runs.append(SeededRun(seed, res, {
                k: predictions.get(arrays, k, path, "train --retrain", (n,))
                for k, n in sizes.items()}))
        out.append(runs)
    return out


def wall_time(runs: list[SeededRun]) -> float:
    """The wall time the runs took together: a group trained side by side counts once (each
    of its runs records the group's time)."""
    return sum(r.results["wall_time_s"] / r.results.get("side_by_side", 1) for r in runs)


def seed_stats(runs: list[SeededRun], key: str) -> dict:
    """Every seed's value of `key` with their mean and standard deviation (None for one)."""
    import numpy as np

    values = [float(r.results[key]) for r in runs]
    return {"values": values, "mean": float(np.mean(values)),
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else None}


def labels_arrays(prepared: Prepared) -> dict[str, Any]:
    """The labels that the per-image predictions are scored against."""
    return {f"labels/{split}": prepared.splits.get(split)[1].numpy() for split in ("val", "test")}


def seed_predictions(results: dict, label: str, split: str, seeds, study: str,
                     shape: tuple[int, ...] = ()):
    """`label`'s predicted classes on `split`, one row per seed: seeds x shape x images, from
    the study's predictions file (loaded as results["arrays"]). A missing or misshapen array
    names the command that rewrites it."""
    import numpy as np

    from .. import predictions

    arrays = results["arrays"]
    n = len(arrays[f"labels/{split}"])
    where = Path(f"{study}-predictions.npz")
    return np.stack([predictions.get(arrays, f"pred/{label}/{seed}/{split}", where, study,
                                     (*shape, n)) for seed in seeds])


def seed_correctness(results: dict, label: str, split: str, seeds, study: str,
                     shape: tuple[int, ...] = ()):
    """0/1 correctness of `label`'s predictions on `split` (see seed_predictions)."""
    from .. import analysis

    return analysis.correct(seed_predictions(results, label, split, seeds, study, shape),
                            results["arrays"][f"labels/{split}"])


def results_dir(cfg: ExperimentConfig) -> Path:
    """Where the studies' results files for this experiment go: OUT/<name>/."""
    return Path(cfg.out_dir) / cfg.name


def figures_path(cfg: ExperimentConfig) -> Path:
    """Where this experiment's figures go: <figures_dir>/<name>/ (figures/quick/, ...)."""
    return Path(cfg.figures_dir) / cfg.name


class Study:
    """One study of the report. Subclass it in its own module and decorate with
    `@register_study`; override what applies."""

    name: ClassVar[str]  # registry key, results file OUT/<exp>/<name>.json, config section
    title: ClassVar[str]  # its heading in the report's Results, e.g. "Part 2: rotating the images"
    order: ClassVar[int]  # position among the studies (commands, `all`, the report)
    command: ClassVar[str] = ""  # its CLI command; "" = its name
    help: ClassVar[str] = ""  # the command's --help line
    config: ClassVar[type | None] = None  # frozen dataclass of its [name] section, if any
    # Its report partial: a path under templates/ or an absolute path; "" means
    # templates/studies/<name>.html.j2. It defines a macro per report section it adds to
    # (abstract, introduction, method, results, discussion, conclusion, appendix).
    template: ClassVar[str] = ""
    figures: ClassVar[tuple[str, ...]] = ()  # the figure files (stems) that `draw` writes
    # Its results file's own top-level fields and what they hold, in schema.py's vocabulary:
    # key -> spec (ANY for a field only required), checked when the file is read.
    schema: ClassVar[dict[str, Any]] = {}
    epochs_key: ClassVar[str] = "train.epochs"  # the setting its command's --epochs sets
    seed_keys: ClassVar[tuple[str, ...]] = ()  # its own seed lists, which --seeds also sets
    # Whether it keeps per-image predictions (<name>-predictions.npz, loaded as results["arrays"]).
    predictions: ClassVar[bool] = False
    # Extra CLI options of its command: parameter name -> (type, typer.Option(...)).
    options: ClassVar[dict[str, tuple[Any, Any]]] = {}

    # --- what a study declares ------------------------------------------------------------
    def check(self, cfg: ExperimentConfig, **options) -> None:
        """Check the inputs it reads besides the data (files named in the config or its
        options), before any study starts; raise a UserError naming the input."""

    def overrides(self, **options) -> dict[str, Any]:
        """Config overrides from its extra CLI options."""
        return {}

    def configured(self, cfg: ExperimentConfig, **options) -> ExperimentConfig:
        """The config its command runs with, given its extra CLI options: e.g. another
        results folder for a run that must not replace the study's results."""
        return cfg

    def run(self, cfg: ExperimentConfig, prepared: Prepared, *, retrain: bool = False,
            log: Callable[[str], None] = print, **options) -> dict:
        """Train and evaluate what it needs; return its results ({} on a DDP worker process,
        which writes nothing). Call `self.save` to write them."""
        raise NotImplementedError

    def draw(self, results: dict, results_dir: Path, figures_dir: Path) -> None:
        """Write every figure in `figures` (PNG and SVG) from the results alone."""

    def facts(self, results: dict) -> dict:
        """Plain values and decided statements for its report section."""
        return {}

    def validate(self, results: dict, where: str) -> None:
        """Check what `schema` cannot say (lengths that must agree, one field against another);
        raise SchemaError (or use schema.py's helpers)."""

    def runs(self, results: dict) -> list[str]:
        """The run directories behind its numbers, for the report's appendix."""
        return []

    def summary(self, results: dict) -> list[str]:
        """The lines its command prints on stdout."""
        return []

    def planned(self, cfg: ExperimentConfig, data_digest: str, **options) -> list:
        """What `run` will do, for the plan printed before the work: a list of
        ("train", RunSpec) for every run it trains or reuses (one per seed), and
        ("evaluate", n_images, RunSpec) for other image evaluations (a sweep)."""
        return []

    def seeds(self, results: dict) -> dict[str, list[int]]:
        """The seeds behind each of its models' numbers: title -> seeds (for the report)."""
        return {}

    def settings(self, config: dict) -> dict[str, Any]:
        """The settings its results depend on, from a config as `to_dict` writes it (and its
        results file stores it), flattened to dotted keys: the data's split, the model, the
        optimiser, the training settings but those of how a run executes, its seeds as the
        runs it trains, and its own section. Override to drop what it does not use."""
        from ..training.rundir import DATA_IN_KEY, EXECUTION_ONLY

        def section(name: str) -> dict:
            value = config.get(name)
            return value if isinstance(value, dict) else {}

        flat = {f"data.{k}": section("data")[k] for k in DATA_IN_KEY if k in section("data")}
        for name in ("model", "optim", "train", *((self.name,) if self.config else ())):
            for k, v in section(name).items():
                if not (name == "train" and k in EXECUTION_ONLY):
                    flat[f"{name}.{k}"] = v
        # Seeds as the runs they name: seeds = [] trains `seed` alone, as seeds = [seed] does.
        seed, seeds = flat.pop("train.seed", None), flat.pop("train.seeds", None)
        flat["train.seeds"] = list(seeds or ([seed] if seed is not None else []))
        for key in self.seed_keys:  # a study's own list, empty: the training seeds
            if key in flat:
                flat[key] = list(flat[key] or flat["train.seeds"])
        if self.epochs_key != "train.epochs":  # its runs train for its own budget
            flat.pop("train.epochs", None)
        return flat

    # --- provided ---------------------------------------------------------------------------
    @property
    def cli_name(self) -> str:
        return self.command or self.name

    @property
    def partial(self) -> str:
        return self.template or f"studies/{self.name}.html.j2"

    def results_path(self, results_dir: Path) -> Path:
        return Path(results_dir) / f"{self.name}.json"

    def load(self, results_dir: Path) -> dict:
        """Its results file, or MissingResults naming its command."""
        path = self.results_path(results_dir)
        res = read_json(path, self.cli_name)
        if not isinstance(res, dict) or res.get("study") != self.name:
            raise MissingResults(f"{path} does not hold {self.name}'s results (its field 'study' "
                                 f"is not {self.name!r}: written by another study, an older "
                                 f"reportgen or by hand): run `reportgen {self.cli_name}` again")
        again = (f"run `reportgen {self.cli_name}` again (its finished runs are reused, not "
                 "trained again)")
        # The seal first: a file changed by hand is refused as such, whatever it now holds.
        if not is_sealed(res):
            raise MissingResults(f"{path} was changed after reportgen wrote it, or written by "
                                 f"an older reportgen (its checksum does not match): {again}")
        try:
            self.check_schema(res, str(path))
        except SchemaError as e:
            raise MissingResults(f"{path} lacks {e}: run `reportgen {self.cli_name}` again") from None
        if self.predictions:
            from .. import predictions

            res["arrays"] = predictions.load(self.arrays_path(results_dir), self.cli_name)
        for name, sha in res.get("files_sha256", {}).items():
            other = path.parent / Path(name).name
            try:
                same = file_sha256(other) == sha
            except (OSError, TypeError):
                same = False
            if not same:
                raise MissingResults(f"{other}, written with {path.name}, is missing or was "
                                     f"changed since: {again}")
        return res

    def check_schema(self, res: dict, where: str) -> None:
        """Its results' shape: the fields every study writes and its own `schema`, then its
        `validate` (what one field says of another). SchemaError names the first misfit."""
        check(res, {"config": dict, "data": DATA, "files_sha256?": Map(str), **self.schema})
        settings(res["config"], ExperimentConfig, "config")  # the settings it ran with
        self.validate(res, where)

    def arrays_path(self, results_dir: Path) -> Path:
        return Path(results_dir) / f"{self.name}-predictions.npz"

    def save(self, cfg: ExperimentConfig, prepared: Prepared, results: dict,
             files: dict[str, str] | None = None, arrays: dict[str, Any] | None = None) -> dict:
        """Write OUT/<exp>/<name>.json (with the config and data it ran with), any extra
        text `files` (name -> content) and per-image prediction `arrays` (name -> uint8
        array, in <name>-predictions.npz) next to it; returns what was written, with the
        arrays under "arrays" as `load` returns them."""
        out = results_dir(cfg)
        out.mkdir(parents=True, exist_ok=True)
        results = {"study": self.name, **results, "config": to_dict(cfg),
                   "data": prepared.describe()}
        written = []
        for name, text in (files or {}).items():
            atomic_write_text(out / name, text)
            written.append(out / name)
        if arrays is not None:
            from .. import predictions

            predictions.save(self.arrays_path(out), arrays)
            written.append(self.arrays_path(out))
        # The files beside it are checked against these when the results are read.
        results["files_sha256"] = {p.name: file_sha256(p) for p in written}
        # The results file last: it is what says the study finished.
        atomic_write_text(self.results_path(out), json.dumps(seal(results)))
        return {**results, "arrays": arrays} if arrays is not None else results


def changed_settings(cfg: ExperimentConfig, loaded) -> list[tuple[str, Any, Any]]:
    """(key, as the results were made, as `cfg` says now) for every setting that differs
    between `cfg` and the stored results of each (study, results) in `loaded`: `figures` and
    `report` present the results as they were made, whatever the experiment file says now."""
    now = json.loads(json.dumps(to_dict(cfg)))
    changed: dict[str, tuple[Any, Any]] = {}
    for study, res in loaded:
        then_flat, now_flat = study.settings(res.get("config") or {}), study.settings(now)
        # A key only one side has is a setting of another reportgen version, not a change.
        for key in sorted(then_flat.keys() & now_flat.keys()):
            if then_flat[key] != now_flat[key]:
                changed.setdefault(key, (then_flat[key], now_flat[key]))
    return [(k, *v) for k, v in changed.items()]


def changed_note(changed: list[tuple[str, Any, Any]], results: Path, shows: str) -> str:
    """The note that results made with other settings than the experiment file and --set give
    now are what `shows` ("the report shows", "the figures show")."""
    from ..config import shown

    listed = "; ".join(f"{k} = {shown(then)}, not {shown(now)}" for k, then, now in changed[:4])
    more = f"; and {len(changed) - 4} more" if len(changed) > 4 else ""
    return (f"note: the results in {results} were made with other settings than the experiment "
            f"file and --set give now ({listed}{more}): {shows} them as they were made "
            "(for results of the settings given now, run `reportgen all` with them: finished "
            "runs are reused)")


STUDIES: dict[str, Study] = {}


def register_study(cls: type[Study]) -> type[Study]:
    """Class decorator: register a study (its name must be new)."""
    if cls.name in STUDIES:
        raise ValueError(f"study {cls.name!r} is registered twice")
    STUDIES[cls.name] = cls()
    return cls


def studies() -> list[Study]:
    """The registered studies in report order."""
    return sorted(STUDIES.values(), key=lambda s: (s.order, s.name))


def get_study(name: str) -> Study:
    return STUDIES[name]


@contextmanager
def registered(cls: type[Study]) -> Iterator[Study]:
    """Register `cls` for the duration of a block (a plug-in's study, or a test's)."""
    register_study(cls)
    try:
        yield STUDIES[cls.name]
    finally:
        STUDIES.pop(cls.name, None)
