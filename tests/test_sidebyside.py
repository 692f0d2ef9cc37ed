"""Side-by-side training: runs of one architecture stepped as one computation end where each
would have ended alone, and leave the same files behind."""
import copy
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from reportgen.cli import load_config
from reportgen.experiments.base import prepare_data
from reportgen.experiments.part1 import baseline_spec
from reportgen.training import TrainingError, train_runs
from reportgen.training.rundir import load_checkpoint_dict
from reportgen.training.sidebyside import SideBySide, compatible, group_size
from reportgen.training.module import Classifier, prepare_runs

from helpers import overrides_to_args


def _config(tiny, **sets):
    overrides, out = tiny
    overrides = {**overrides, "train.epochs": 2, "train.val_every": 1,
                 "model.params": {"num_classes": 10, "num_blocks": [1, 1], "c_hidden": [8, 8]},
                 **sets}
    return load_config(None, sets=overrides_to_args(overrides)[1::2]), out


def _train(tiny, out_name, side_by_side, seeds=(42, 43), **sets):
    cfg, out = _config(tiny, **{"train.side_by_side": side_by_side, **sets})
    prepared = prepare_data(cfg, log=lambda m: None)
    spec = baseline_spec(cfg, prepared.data_digest)
    lines = []
    res = train_runs([spec.for_seed(s) for s in seeds], prepared.splits, out / out_name,
                     log=lines.append)
    return res, lines, prepared


def _weights(run_dir, name="last.ckpt"):
    return load_checkpoint_dict(run_dir / "checkpoints" / name)["state_dict"]


def _max_diff(a, b):
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a
               if a[k].is_floating_point())


@pytest.mark.parametrize("name,params,layout,channels_last", [
    ("preact_resnet", {"num_blocks": [1, 1], "c_hidden": [8, 16]}, "wide", False),
    ("preact_resnet", {"num_blocks": [1, 1], "c_hidden": [8, 16]}, "wide", True),
    ("preact_resnet", {"num_blocks": [1, 1], "c_hidden": [8, 16]}, "stacked", False),
    ("resnet", {"num_blocks": [1, 1], "c_hidden": [8, 16]}, "wide", False),
    ("resnet", {"num_blocks": [1, 1], "c_hidden": [8, 16]}, "stacked", False),
    ("p4_preact_resnet", {"num_blocks": [1, 1], "c_hidden": [4, 8]}, "stacked", False),
    ("mlp", {"hidden": [32, 16]}, "wide", False),
    ("mlp", {"hidden": [32, 16]}, "stacked", False),
])
def test_stacked_model_computes_each_runs_outputs_and_gradients_exactly(name, params, layout,
                                                                        channels_last):
    """In float64 the group's forward and backward equal each model's own to 1e-10, for
    every registered family and both layouts (one wide network of grouped layers, in either
    memory format; stacked parameters under vmap): the same arithmetic, summed in another
    order."""
    from reportgen.config import ModelConfig
    from reportgen.training.sidebyside import layout as choose

    expected = "stacked" if name.startswith("p4") else "wide"  # p4's own convolutions
    assert choose(ModelConfig(name=name, params=params)) == (expected, None)
    torch.set_default_dtype(torch.float64)
    try:
        members = []
        for seed in (1, 2, 3):
            torch.manual_seed(seed)
            members.append(Classifier(name, params, {"name": "sgd"}, {}, seed=seed,
                                      channels_last=channels_last))
        alone = [copy.deepcopy(m.model).train() for m in members]
        stacked = SideBySide(members, layout=layout).train()
        assert stacked.wide == (layout == "wide")
        assert stacked.channels_last == channels_last
        xs = torch.randn(3, 6, 3, 32, 32)
        ys = torch.randint(0, 10, (3, 6))
        logits = stacked.logits(xs)
        sum(F.cross_entropy(logits[k], ys[k]) for k in range(3)).backward()
        for k, model in enumerate(alone):
            out = model(xs[k])
            F.cross_entropy(out, ys[k]).backward()
            assert (out - logits[k]).abs().max() < 1e-10
            for name, p in model.named_parameters():
                g = stacked.take(stacked.stack.get_parameter(name).grad, k)
                assert (p.grad - g).abs().max() < 1e-10, name
            for name, b in model.named_buffers():  # BatchNorm's running statistics
                mine = stacked.take(stacked.stack.get_buffer(name), k)
                assert (b.double() - mine.double()).abs().max() < 1e-10, name
    finally:
        torch.set_default_dtype(torch.float32)


def test_side_by_side_training_ends_where_separate_training_ends(tiny, monkeypatch):
    """Two seeds, two epochs with validation each, trained side by side and one after the
    other: every weight, BatchNorm statistic and momentum buffer agrees to float32
    reassociation, while the two seeds differ by orders of magnitude more.

    Both ways use the default memory layout: channels_last alone is itself a reassociation
    that, on these 10-image batches, moves the weights by up to 1e-2 after ten steps
    (measured), while side by side and alone in one layout agree to 1e-4."""
    monkeypatch.setattr("reportgen.training.module.prefers_channels_last", lambda *a: False)
    together, lines, _ = _train(tiny, "together", side_by_side=2)
    apart, _, _ = _train(tiny, "apart", side_by_side=1)
    assert any("2 runs side by side" in line for line in lines)
    assert [r["side_by_side"] for r in together] == [2, 2]
    assert [r["side_by_side"] for r in apart] == [1, 1]
    assert [r["side_by_side_layout"] for r in together + apart] == ["wide", "wide", None, None]
    for t, a in zip(together, apart):
        assert t["key"] == a["key"] and t["seed"] == a["seed"] and t["run_dir"] != a["run_dir"]
        for name in ("last.ckpt", "best.ckpt"):
            ct = load_checkpoint_dict(Path(t["run_dir"]) / "checkpoints" / name)
            ca = load_checkpoint_dict(Path(a["run_dir"]) / "checkpoints" / name)
            assert ct["state_dict"].keys() == ca["state_dict"].keys()
            assert _max_diff(ct["state_dict"], ca["state_dict"]) < 1e-3
            assert (ct["epoch"], ct["global_step"]) == (ca["epoch"], ca["global_step"])
            mt, ma = (c["optimizer_states"][0]["state"] for c in (ct, ca))
            assert mt.keys() == ma.keys()
            assert max((mt[i]["momentum_buffer"] - ma[i]["momentum_buffer"]).abs().max()
                       for i in mt) < 1e-3
            assert ct["hyper_parameters"] == ca["hyper_parameters"]
        assert t["best_epoch"] == a["best_epoch"]
        assert t["val_acc"] == pytest.approx(a["val_acc"], abs=0.11)  # one image of ten at most
        rows_t = (Path(t["run_dir"]) / "metrics.csv").read_text().splitlines()
        rows_a = (Path(a["run_dir"]) / "metrics.csv").read_text().splitlines()
        assert rows_t[0] == rows_a[0] and len(rows_t) == len(rows_a) == 3
        assert (Path(t["run_dir"]) / "predictions.npz").is_file()
        assert list((Path(t["run_dir"]) / "tensorboard").glob("events.out.tfevents.*"))
        config = json.loads((Path(t["run_dir"]) / "config.json").read_text())
        assert config["train"]["seed"] == t["seed"]
    seeds_apart = _max_diff(*(_weights(Path(a["run_dir"])) for a in apart))
    assert seeds_apart > 0.1


def _interrupt_at_epoch(monkeypatch, epoch):
    """Ctrl-C as the given (0-based) epoch starts, after the previous one's checkpoints."""
    from reportgen.training.callbacks import ValidateLastEpoch

    original = ValidateLastEpoch.on_train_epoch_start

    def stop(self, trainer, module):
        if trainer.current_epoch == epoch:
            raise KeyboardInterrupt
        original(self, trainer, module)

    monkeypatch.setattr(ValidateLastEpoch, "on_train_epoch_start", stop)


@pytest.mark.parametrize("resume_with,optim", [(2, "sgd"), (1, "sgd"), (2, "adam")])
def test_interrupted_side_by_side_resumes_together_or_alone(tiny, monkeypatch, resume_with,
                                                            optim):
    """Ctrl-C after the first of two epochs; the same command resumes the runs side by side
    (resume_with=2) or each alone (1) from their own last.ckpt, and ends where runs that
    were never interrupted end (Adam: its moments are split and stacked, its step shared)."""
    from reportgen.training import Interrupted

    monkeypatch.setattr("reportgen.training.module.prefers_channels_last", lambda *a: False)
    sets = {"optim.name": optim, "optim.lr": 0.1 if optim == "sgd" else 0.01}
    # Adam's first steps follow the signs of the gradients, so the float reassociation
    # between one run and a group (like that between two memory layouts) can move this tiny
    # network's weights by 1e-2 (measured: seed 42 in the wide layout). The resume itself
    # must be exact, so Adam's runs are compared with the same group never interrupted.
    reference, _, _ = _train(tiny, "reference", side_by_side=2 if optim == "adam" else 1,
                             **sets)
    with monkeypatch.context() as m:
        _interrupt_at_epoch(m, 1)
        with pytest.raises(Interrupted, match="resume"):
            _train(tiny, "resumed", side_by_side=2, **sets)
    runs = [Path(r["run_dir"].replace("reference", "resumed")) for r in reference]
    for run in runs:
        assert not (run / "results.json").exists()
        assert load_checkpoint_dict(run / "checkpoints" / "last.ckpt")["epoch"] == 0
    resumed, lines, _ = _train(tiny, "resumed", side_by_side=resume_with, **sets)
    if resume_with == 2:
        assert any("resuming after epoch 1" in line for line in lines)
    else:
        assert sum("resuming" in line for line in lines) == 2
    for r, ref in zip(resumed, reference):
        assert _max_diff(_weights(Path(r["run_dir"])), _weights(Path(ref["run_dir"]))) < 1e-3
        rows = (Path(r["run_dir"]) / "metrics.csv").read_text().splitlines()
        assert len(rows) == 3  # both epochs, the first from before the interruption


def test_runs_of_another_shape_or_with_checkpoints_of_other_epochs_train_apart(tiny):
    cfg, _ = _config(tiny)
    spec = baseline_spec(cfg, "digest")
    other = replace(spec, optim=replace(spec.optim, lr=0.05))
    rotated = replace(spec, train=replace(spec.train, augment=replace(spec.train.augment,
                                                                      rotate_degrees=90.0)))
    assert compatible(spec.for_seed(1), spec.for_seed(2))
    assert compatible(spec, rotated)  # augmentation is each run's own
    assert not compatible(spec, other)
    assert group_size(spec, "cpu", "32-true") == 1  # automatic: one at a time on a CPU
    assert group_size(spec, "gpu", "bf16-mixed") == 8
    assert group_size(spec, "gpu", "16-mixed") == 1  # the gradient scaler would couple them
    compiled = replace(spec, train=replace(spec.train, compile=True))
    assert group_size(compiled, "gpu", "bf16-mixed") == 1  # automatic: unmeasured, so alone
    three = replace(spec, train=replace(spec.train, side_by_side=3))
    assert group_size(three, "cpu", "32-true") == 3
    assert group_size(replace(three, train=replace(three.train, devices=2)), "gpu", "32-true") == 1
    assert group_size(replace(three, train=replace(three.train, strategy="ddp")), "cpu",
                      "32-true") == 1


def test_side_by_side_setting_is_checked_and_not_part_of_a_runs_key():
    from reportgen.config import ConfigError

    with pytest.raises(ConfigError, match="train.side_by_side"):
        load_config(None, sets=["train.side_by_side=-1"])
    with pytest.raises(ConfigError, match="train.side_by_side_layout"):
        load_config(None, sets=['train.side_by_side_layout="grouped"'])
    a = baseline_spec(load_config(None), "d")
    b = baseline_spec(load_config(None, sets=["train.side_by_side=4",
                                              'train.side_by_side_layout="stacked"']), "d")
    assert a.key() == b.key()  # how runs are executed does not change what they compute


def test_a_chosen_layout_is_used_or_its_runs_train_alone(tiny):
    """train.side_by_side_layout: "stacked" puts even a model that widens under vmap, and
    "wide" for a model with layers of its own (p4) means: one at a time, with a note."""
    from reportgen.config import ModelConfig
    from reportgen.training.sidebyside import layout, schedule

    resnet = ModelConfig(name="resnet", params={"num_blocks": [1, 1], "c_hidden": [8, 16]})
    p4 = ModelConfig(name="p4_preact_resnet", params={"num_blocks": [1, 1], "c_hidden": [4, 8]})
    assert layout(resnet, "stacked") == ("stacked", None)
    chosen, why = layout(p4, "wide")
    assert chosen is None and why.startswith("wide layout:")
    assert layout(p4) == ("stacked", None)
    res, lines, _ = _train(tiny, "stacked", side_by_side=2,
                           **{"train.side_by_side_layout": "stacked"})
    assert [(r["side_by_side"], r["side_by_side_layout"]) for r in res] == [(2, "stacked")] * 2
    cfg, out = _config(tiny, **{"train.side_by_side": 2, "train.side_by_side_layout": "wide",
                                "model.name": "p4_preact_resnet",
                                "model.params": {"num_blocks": [1, 1], "c_hidden": [4, 8]}})
    spec = baseline_spec(cfg, "d")
    notes = []
    assert schedule([spec.for_seed(1), spec.for_seed(2)], out, log=notes.append) == [[0], [1]]
    assert len(notes) == 1 and "cannot train side by side (wide layout:" in notes[0]


def test_bench_names_a_layout_that_cannot_work():
    from typer.testing import CliRunner

    from reportgen.cli import app

    r = CliRunner().invoke(app, ["bench", "--device", "cpu", "--side-by-side", "2", "--set",
                                 'model.name="p4_preact_resnet"', "--set", "model.params={}",
                                 "--set", 'train.side_by_side_layout="wide"'])
    assert r.exit_code == 2
    assert r.output.startswith("error: p4_preact_resnet cannot train side by side (wide layout:")


def test_a_model_that_cannot_be_stacked_trains_its_runs_one_at_a_time(tiny):
    """A model with a layer of its own (which cannot widen) whose forward pass reads a value
    back (.item(), which cannot run under vmap): its runs train apart, with one note saying
    why, instead of failing."""
    from torch import nn

    from reportgen.models.registry import MODELS, register_model

    class Reads(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(10, 3 * 32 * 32) * 0.01)

        def forward(self, x):
            scale = 1.0 if x.abs().max().item() < 1e6 else 0.0  # a value read on the host
            return F.linear(x.flatten(1), self.weight) * scale

    # A stand-in for the practical's network (`model`), which only a CNN may be.
    register_model("reads_values", label="reads", title="Reads", description="test model",
                   convolutional=True)(lambda num_classes=10: Reads())
    try:
        res, lines, _ = _train(tiny, "reads", side_by_side=2,
                               **{"model.name": "reads_values", "model.params": {}})
    finally:
        MODELS.pop("reads_values")
    notes = [line for line in lines if "cannot train side by side" in line]
    assert len(notes) == 1 and "reads_values" in notes[0]
    assert [r["side_by_side"] for r in res] == [1, 1]


def test_a_model_that_mixes_channels_runs_stacked_not_wide():
    """Layers widen one by one, but a model's own forward code may mix channels (here: it
    centres each pixel across its channels), which would mix the runs of a wide network:
    the numerical check sends it to the stacked layout instead."""
    from torch import nn

    from reportgen.config import ModelConfig
    from reportgen.models.registry import MODELS, register_model
    from reportgen.training.sidebyside import layout, widen

    class Mixes(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.lin = nn.Linear(4, 10)

        def forward(self, x):
            x = self.conv(x)
            x = x - x.mean(1, keepdim=True)  # across the channels: across the runs, if wide
            return self.lin(x.mean((2, 3)))

    register_model("mixes_channels", label="mixes", title="Mixes", description="test model")(
        lambda num_classes=10: Mixes())
    try:
        assert widen([Mixes(), Mixes()]) is not None  # every layer widens ...
        assert layout(ModelConfig(name="mixes_channels", params={})) == ("stacked", None)
    finally:
        MODELS.pop("mixes_channels")


def test_retrain_trains_a_group_again_and_a_damaged_checkpoint_is_named(tiny):
    first, _, _ = _train(tiny, "again", side_by_side=2)
    cfg, out = _config(tiny, **{"train.side_by_side": 2})
    prepared = prepare_data(cfg, log=lambda m: None)
    specs = [baseline_spec(cfg, prepared.data_digest).for_seed(s) for s in (42, 43)]
    lines = []
    again = train_runs(specs, prepared.splits, out / "again", retrain=True, log=lines.append)
    assert any("training 2 runs side by side" in line for line in lines)
    assert not any("reusing" in line for line in lines)
    assert [r["run_dir"] for r in again] == [r["run_dir"] for r in first]
    # An interrupted group whose second run's last.ckpt was damaged: the error names it,
    # before any training, and the first run's files stay as they were.
    run0, run1 = (Path(r["run_dir"]) for r in again)
    for run in (run0, run1):
        (run / "results.json").unlink()
    (run1 / "checkpoints" / "last.ckpt").write_bytes(b"not a checkpoint")
    before = (run0 / "checkpoints" / "last.ckpt").read_bytes()
    with pytest.raises(TrainingError, match=f"{run1.name}.*last.ckpt.*damaged"):
        train_runs(specs, prepared.splits, out / "again", log=lines.append)
    assert (run0 / "checkpoints" / "last.ckpt").read_bytes() == before


def test_compile_mode_reaches_torch_compile(tiny, monkeypatch):
    """train.compile_mode (e.g. reduce-overhead: CUDA graphs on a GPU) is what torch.compile
    gets, for a run alone and for a group's stacked step alike."""
    import reportgen.training.train as train_mod
    from reportgen.config import ConfigError

    modes = []
    monkeypatch.setattr(train_mod.torch, "compile", lambda fn, mode: modes.append(mode) or fn)
    sets = {"train.compile": True, "train.compile_mode": "reduce-overhead"}
    alone, _, _ = _train(tiny, "compiled-alone", side_by_side=1, **sets)
    assert modes == ["reduce-overhead"] * 2 and [r["side_by_side"] for r in alone] == [1, 1]
    together, _, _ = _train(tiny, "compiled-together", side_by_side=2, **sets)
    assert modes == ["reduce-overhead"] * 3 and [r["side_by_side"] for r in together] == [2, 2]
    with pytest.raises(ConfigError, match="train.compile_mode"):
        load_config(None, sets=['train.compile_mode="fast"'])


@pytest.mark.slow
def test_a_compiled_group_trains_like_an_eager_group(tiny, monkeypatch):
    """torch.compile of the stacked, vmapped step (on this CPU) reproduces the eager group's
    losses and weights. Compiled kernels sum in their own order: after ten steps on 10-image
    batches that moves weights by about 3e-3, the size of the drift that a change of memory
    layout alone gives (see above)."""
    monkeypatch.setattr("reportgen.training.module.prefers_channels_last", lambda *a: False)
    eager, _, _ = _train(tiny, "eager", side_by_side=2)
    compiled, _, _ = _train(tiny, "compiled", side_by_side=2, **{"train.compile": True})
    for e, c in zip(eager, compiled):
        assert _max_diff(_weights(Path(e["run_dir"])), _weights(Path(c["run_dir"]))) < 2e-2
        rows_e = (Path(e["run_dir"]) / "metrics.csv").read_text().splitlines()[1:]
        rows_c = (Path(c["run_dir"]) / "metrics.csv").read_text().splitlines()[1:]
        loss = [[float(r.split(",")[1]) for r in rows] for rows in (rows_e, rows_c)]
        assert loss[1] == pytest.approx(loss[0], rel=1e-3)



@pytest.mark.parametrize("together,alone,grouped", [(900.0, 500.0, True), (400.0, 500.0, False)])
def test_automatic_setting_keeps_a_group_only_where_it_measures_faster(tiny, monkeypatch,
                                                                       together, alone, grouped):
    """train.side_by_side = 0 on a GPU: the group trains together only if a few timed steps
    side by side beat the same steps alone. The device is pretended (group_size as on a GPU)
    and so are the two rates; the decision and what training then does are real."""
    from reportgen.training import sidebyside

    monkeypatch.setattr(sidebyside, "group_size", lambda spec, acc, prec: 8)
    monkeypatch.setattr(sidebyside, "throughput",
                        lambda spec, runs: together if runs > 1 else alone)
    res, lines, _ = _train(tiny, f"auto-{grouped}", side_by_side=0)
    verdicts = [line for line in lines if line.startswith("side by side: 2 resnet runs measured")]
    assert len(verdicts) == 1 and f"{together:.0f} img/s in all against {alone:.0f}" in verdicts[0]
    assert [r["side_by_side"] for r in res] == ([2, 2] if grouped else [1, 1])


def test_throughput_is_measured_once_per_setting(tiny, monkeypatch):
    """The plan and training ask for the same rates: each (setting, group size) is timed once."""
    import reportgen.bench as bench
    from reportgen.training import sidebyside

    spec = baseline_spec(_config(tiny)[0], "digest")
    calls = []
    monkeypatch.setattr(sidebyside, "_RATES", {})
    monkeypatch.setattr(bench, "bench_training", lambda c, b, runs=1: calls.append(runs)
                        or ({"train_img_per_s": 10.0 * runs}, None))
    assert sidebyside.throughput(spec, 2) == 20.0 and sidebyside.throughput(spec, 2) == 20.0
    assert sidebyside.throughput(spec, 1) == 10.0 and calls == [2, 1]


def test_a_diverging_group_stops_with_advice_and_keeps_no_nan_model(tiny):
    with pytest.raises(TrainingError, match=r"training of resnet \(the run with seed 4[23]\) "
                                            r"diverged in epoch 1: .*lower the learning rate "
                                            r"\(optim.lr = 1e\+12\), e.g. --set optim.lr=0.1$"):
        _train(tiny, "diverged", side_by_side=2, **{"optim.lr": 1e12})
    for run in (tiny[1] / "diverged" / "runs").iterdir():
        assert not (run / "checkpoints" / "best.ckpt").exists()
        assert not (run / "results.json").exists()


def test_group_input_pipeline_gives_each_run_its_own_images():
    """The group's batched input pipeline (normalise, augment, permute for all runs at once)
    gives every member exactly the images its own `prepare` makes, in training (own
    batch, own augmentation draws, own permutation) and in validation (the same images)."""
    from reportgen import transforms as T

    params = {"num_classes": 10, "num_blocks": [1, 1], "c_hidden": [8, 8]}
    perm = T.pixel_permutation(3).tolist()
    members = [Classifier("preact_resnet", params, {}, aug, seed=s, perm=p)
               for s, aug, p in [(1, {}, None), (2, {"rotate_degrees": 90}, perm), (3, {}, perm)]]
    g = torch.Generator().manual_seed(0)
    xs = torch.randint(0, 256, (3, 5, 3, 32, 32), generator=g, dtype=torch.uint8)
    for m in members:
        m.start_epoch(4, torch.device("cpu"))
    together = prepare_runs(members, xs, train=True)
    for m in members:
        m.start_epoch(4, torch.device("cpu"))
    for k, m in enumerate(members):
        assert torch.equal(together[k], m.prepare(xs[k], train=True).contiguous()), k
    # Each batch of an epoch gets new draws, and another epoch other ones again.
    m = members[0]
    m.start_epoch(4, torch.device("cpu"))
    first, second = m.prepare(xs[0], train=True), m.prepare(xs[0], train=True)
    m.start_epoch(5, torch.device("cpu"))
    assert not torch.equal(first, second) and not torch.equal(first, m.prepare(xs[0], train=True))
    val = prepare_runs(members, xs[0].unsqueeze(0).expand(3, -1, -1, -1, -1))
    for k, m in enumerate(members):
        assert torch.equal(val[k], m.prepare(xs[0]).contiguous()), k


def _ops_per_step(runs, monkeypatch):
    """aten operations dispatched in one whole training step (input pipeline, forward,
    backward, optimiser step) of `runs` tiny runs through bench's Lightning path."""
    import collections

    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import Callback
    from torch.utils._python_dispatch import TorchDispatchMode

    from reportgen.bench import BenchConfig, bench_training
    from reportgen.config import load_experiment

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = collections.Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops[func.overloadpacket.__name__] += 1
            return func(*args, **(kwargs or {}))

    counted = []

    class Between(Callback):  # from the end of one step to the end of the next
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if counted and isinstance(counted[-1], Count):
                counted[-1].__exit__(None, None, None)
                counted[-1] = counted[-1].ops
            if batch_idx == 3:
                counted.append(Count().__enter__())

    init = pl.Trainer.__init__

    def with_counter(self, *args, **kwargs):
        init(self, *args, **{**kwargs, "callbacks": [*kwargs["callbacks"], Between()]})

    monkeypatch.setattr(pl.Trainer, "__init__", with_counter)
    cfg = load_experiment(None, {"train.batch_size": 2, "train.device": "cpu",
                                 "model.params": {"num_classes": 10, "num_blocks": [1, 1],
                                                  "c_hidden": [2, 2]}})
    bench_training(cfg, BenchConfig(warmup_steps=2, steps=4, repeats=1), runs)
    views = {"view", "reshape", "_unsafe_view", "expand", "transpose", "permute", "unsqueeze",
             "squeeze", "t", "alias", "slice", "select", "detach", "unflatten", "split",
             "as_strided", "unbind", "lift_fresh"}
    return sum(n for op, n in counted[0].items() if op not in views)


def test_a_group_step_launches_about_as_many_kernels_as_one_run(monkeypatch):
    """On a GPU a step of this small network is bound by kernel launches, so a group pays
    off only if its step dispatches about the operations of one run: the wide network is
    one network, and the input pipelines run as one batch (before, each member's own
    pipeline made a group of three of this network dispatch 1.7 times one run's operations;
    now 1.15)."""
    one = _ops_per_step(1, monkeypatch)
    three = _ops_per_step(3, monkeypatch)
    assert one > 100  # the whole step was counted
    assert three < 1.3 * one, (one, three)


def test_a_step_draws_no_augmentation_of_its_own(monkeypatch):
    """The augmentation's draws and maps come a block of batches at a time: a step in the
    middle of a block dispatches only the resampling, some 40 operations fewer than one that
    draws its own (each a kernel launch on a GPU)."""
    from reportgen import transforms as T

    blocked = _ops_per_step(1, monkeypatch)
    monkeypatch.setattr(T, "AUGMENT_BLOCK", 1)
    own = _ops_per_step(1, monkeypatch)
    assert own - blocked > 40, (own, blocked)


@pytest.mark.parametrize("runs", [1, 2])
def test_lightning_s_hook_names_skip_module_setattr(runs, monkeypatch):
    """Lightning names the hook it runs on the module before and after each hook, dozens of
    times a step; those plain strings (and the step's own sums) do not go through
    nn.Module.__setattr__'s checks for parameters, buffers and submodules."""
    import collections

    from reportgen.bench import BenchConfig, bench_training
    from reportgen.config import load_experiment

    import pytorch_lightning as pl

    real = nn.Module.__setattr__
    seen = collections.Counter()

    def spy(self, name, value):
        if isinstance(self, pl.LightningModule):
            seen[name] += 1
        real(self, name, value)

    monkeypatch.setattr(nn.Module, "__setattr__", spy)
    cfg = load_experiment(None, {"train.batch_size": 2, "train.device": "cpu",
                                 "model.params": {"num_classes": 10, "num_blocks": [1, 1],
                                                  "c_hidden": [2, 2]}})
    counts = []
    # The first call also fills caches (the layout's choice); the pool is cycled, so the
    # longer run crosses epochs too.
    for steps in (5, 5, 25):
        seen.clear()
        bench_training(cfg, BenchConfig(warmup_steps=1, steps=steps, repeats=1), runs)
        counts.append(dict(seen))
    diff = {k: (counts[1].get(k), counts[2].get(k)) for k in set(counts[1]) | set(counts[2])
            if counts[1].get(k) != counts[2].get(k)}
    assert counts[1] and not diff, diff  # set-up and epochs only, not steps


def test_stacked_batch_norm_takes_bf16_activations():
    """Mixed precision feeds batch norm bf16 activations with float32 running statistics.
    Vmapped, torch's batch norm refused that (on the H200 in the stacked p4 network's
    backward pass; on the CPU in the forward): the stacked model normalises in float32 and
    hands back bf16, as a run alone does, with the same outputs, gradients and running
    statistics as each member's own batch norm."""
    from reportgen.training.sidebyside import _norms_in_float

    members = [nn.Sequential(nn.BatchNorm2d(4)) for _ in range(3)]
    for k, m in enumerate(members):
        torch.manual_seed(k)
        nn.init.normal_(m[0].weight), nn.init.normal_(m[0].bias)
    base = _norms_in_float(copy.deepcopy(members[0]).to("meta"))
    params, buffers = stack_module_state(members)
    xs = torch.randn(3, 8, 4, 5, 5).to(torch.bfloat16).requires_grad_()
    w = torch.randn(3, 8, 4, 5, 5)  # a loss whose gradient is not near zero

    def close(a, b, rel):  # within `rel` of the larger magnitude (bf16 keeps 8 bits)
        return (a.float() - b.float()).abs().max() <= rel * b.float().abs().max()

    out = vmap(lambda p, b, x: functional_call(base, (p, b), (x,)))(params, buffers, xs)
    assert out.dtype == torch.bfloat16
    (out.float() * w).sum().backward()
    for k, m in enumerate(members):
        x = xs[k].detach().float().requires_grad_()
        own = m(x)
        (own * w[k]).sum().backward()
        assert close(out[k], own, 0.01)
        assert close(buffers["0.running_mean"][k], m[0].running_mean, 1e-6)
        assert close(buffers["0.running_var"][k], m[0].running_var, 1e-6)
        assert close(params["0.weight"].grad[k], m[0].weight.grad, 0.02)
        assert close(xs.grad[k], x.grad, 0.02)
