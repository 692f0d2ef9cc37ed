"""Experiment files and overrides: validated before any work, errors name the key."""
import re
from pathlib import Path

import pytest

from reportgen.config import ConfigError, ExperimentConfig, load_experiment, parse_override

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["practical2.toml", "quick.toml"])
def test_checked_in_experiments_load(name):
    cfg = load_experiment(ROOT / "experiments" / name)
    assert cfg.model.name == "preact_resnet"
    assert list(cfg.model.params["num_blocks"]) == [2, 2, 3]


def test_practical2_is_the_notebook():
    cfg = load_experiment(ROOT / "experiments" / "practical2.toml")
    assert cfg.train.epochs == 100 and cfg.train.batch_size == 128 and cfg.train.val_every == 10
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == (0.1, 0.9, 1e-4)
    assert cfg.optim.milestones == (70, 90) and cfg.optim.gamma == 0.1
    assert (cfg.data.val_size, cfg.data.split_seed) == (5000, 42)
    assert cfg.train.augment.crop_scale == (0.8, 1.0) and cfg.train.augment.crop_ratio == (0.9, 1.1)
    # The defaults are the notebook's; the file adds seeds and Part 2's extra models.
    assert cfg.train.run_seeds() == (42, 43, 44)
    assert cfg.rotation.models == ("plain", "augmented", "equivariant")
    assert cfg.rotation.tta == ("plain",)
    from dataclasses import replace

    default = ExperimentConfig(name="practical2", report=cfg.report)
    same = replace(cfg, train=replace(cfg.train, seeds=()),
                   sections={**cfg.sections, "rotation": replace(cfg.rotation, models=(
                       "plain", "augmented"), tta=())})
    assert same == default


def test_unknown_key_is_named(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[train]\nepoch = 3\n")
    with pytest.raises(ConfigError, match=r"unknown key train.epoch .*allowed keys are epochs"):
        load_experiment(p)


@pytest.mark.parametrize("key,value,match", [
    ("train.epochs", 0, "train.epochs = 0 is not allowed"),
    ("train.batch_size", -4, "train.batch_size = -4"),
    ("train.epochs", "ten", "train.epochs must be an integer"),
    ("optim.lr", -1.0, "optim.lr"),
    ("train.device", "tpu", "auto, cpu or gpu"),
    ("rotation.angles", [], "non-empty list"),
    # A repeated split was swept twice, then its results failed the figures' and report's check.
    ("rotation.splits", ["val", "val"], "each at most once"),
    ("rotation.splits", ["train"], 'a non-empty list of "val" and "test"'),
    ("rotation.angles", [0, 1000], "between -360 and 360"),
    ("rotation.angles", ["a"], "rotation.angles must be a number"),
    ("model.name", "vgg", "unknown model 'vgg'"),
    # Part 1's network is the CNN: an MLP trained every part, then Part 3 held one model twice
    # and the report failed after all the training.
    ("model.name", "mlp", "model.name = 'mlp' is not allowed: use a convolutional network: "
                          r"p4_preact_resnet, preact_resnet, resnet \(the report studies a CNN"),
    ("shuffle.perm_seed", -1, "shuffle.perm_seed"),
    ("shuffle.perm_seed", 2**32 + 42, "shuffle.perm_seed = 4294967338 is not allowed: use an "
                                      "integer in"),
    ("data.split_seed", -1, "data.split_seed = -1 is not allowed"),
    ("data.split_seed", 2**63 - 1, "data.split_seed = 9223372036854775807 is not allowed"),
    ("optim.weight_decay", float("inf"), "optim.weight_decay = inf is not allowed"),
    ("shuffle.mlp_weight_decay", float("inf"), "shuffle.mlp_weight_decay = inf"),
    ("train.augment.crop_ratio", [1.0, float("inf")], "both finite"),
    # The key as the user writes it, and the value as a list, not a Python tuple.
    ("train.augment.crop_scale", [1.2, 0.5], r"^train.augment.crop_scale = \[1.2, 0.5\] is not "
                                             r"allowed: use 0 < min <= max <= 1"),
    ("train.augment.rotate_degrees", 500, "^train.augment.rotate_degrees = 500"),
    ("figures_dir", " ", "figures_dir = ' ' is not allowed: use a folder, e.g. figures"),
    # Lightning's other strategies start workers reportgen does not manage (spawn) or need
    # a GPU or packages (FSDP, DeepSpeed): refused before any work, not a traceback in fit.
    ("train.strategy", "ddp_spawn", "train.strategy = 'ddp_spawn' is not allowed: use auto, or ddp"),
    ("train.strategy", "fsdp", "train.strategy = 'fsdp'"),
    # Integers past 64 bits (TOML's, torch's and numpy's limit) ended in an OverflowError or
    # a ValueError inside a stage; rates outside float32's range in a RuntimeError inside
    # the optimiser (lr = 1e300) or in training that never moved (lr = 1e-300).
    ("train.eval_batch_size", 2**64, r"train.eval_batch_size = 18446744073709551616 is out of "
                                     r"range: use an integer that fits in 64 bits"),
    ("optim.milestones", [1, 2**63], "optim.milestones = 9223372036854775808 is out of range"),
    ("train.epochs", -2**63 - 1, "train.epochs = -9223372036854775809 is out of range"),
    ("optim.lr", 10**400, r"optim.lr = 100000\.\.\. \(401 digits\) is out of range"),
    ("optim.lr", 1e300, "optim.lr = 1e\\+300 is not allowed: use a positive number in "
                        "float32's range"),
    ("optim.lr", 1e-300, "optim.lr = 1e-300 is not allowed"),
    ("optim.weight_decay", 1e39, "optim.weight_decay = 1e\\+39 is not allowed: use 0 or"),
    ("shuffle.mlp_lr", 1e300, "shuffle.mlp_lr = 1e\\+300 is not allowed"),
    ("shuffle.mlp_weight_decay", 1e-40, "shuffle.mlp_weight_decay = 1e-40 is not allowed"),
    ("shuffle.mlp.params.hidden", [2**64], "^shuffle.mlp.params.hidden = "
                                           "\\[18446744073709551616\\] is out of range"),
    ("shuffle.mlp.params.hidden", [2**62], "at most 1,048,576 each"),
    ("model.params.num_blocks", [1, 2**62], "at most 1,048,576 each"),
    ("model.params.num_blocks", [5000, 5001], "makes 10,001 layers: use at most 10,000"),
    ("rotation.equivariant.params.num_classes", 2**40, "use an integer from 2 to 1,048,576"),
    ("report.title", "T" * 301, "report.title has 301 characters: use at most 300"),
    ("report.author", "A" * 201, "report.author has 201 characters: use at most 200"),
    # `--title ""` made a title page and a PDF title with nothing in them.
    ("report.title", " ", "report.title = ' ' is not allowed: use a title, or leave it out for "
                          "the default 'Convolutional Neural Networks on CIFAR-10'"),
    ("report.course", "C" * 10**5, "report.course has 100,000 characters"),
    # A model's params are a table: 'x' ended in a ValueError traceback from dict(), 1 in
    # "'int' object is not iterable", and [] passed as the builder's defaults.
    ("shuffle.mlp.params", "x", "shuffle.mlp.params must be a table, got 'x'"),
    ("model.params", 1, "model.params must be a table, got 1"),
    ("rotation.equivariant.params", [], "rotation.equivariant.params must be a table, got"),
    ("out_dir", "", "out_dir = '' is not allowed: use a folder, e.g. output"),
    ("figures_dir", "  ", "figures_dir = '  ' is not allowed"),
])
def test_bad_values_are_named(key, value, match):
    with pytest.raises((ConfigError, ValueError), match=match):
        load_experiment(None, {key: value})


# Each model table's errors name that table's keys: errors about Part 3's MLP and Part 2's
# p4 network said "model.hidden" and "model.c_hidden", keys that do not exist.
@pytest.mark.parametrize("table,name", [("model", "preact_resnet"), ("shuffle.mlp", "mlp"),
                                        ("rotation.equivariant", "p4_preact_resnet")])
@pytest.mark.parametrize("param,value,match", [
    ("name", "vgg", "^{t}.name: unknown model 'vgg': known models are mlp"),
    ("params.foo", 1, "^{t}.params.foo: model '{n}' has no setting 'foo'"),
    ("params.num_classes", 1, "^{t}.params.num_classes = 1: use an integer from 2"),
    ("params.num_classes", 2**63, "^{t}.params.num_classes = 9223372036854775808 is out of "
                                  "range"),
])
def test_model_errors_name_their_table(table, name, param, value, match):
    with pytest.raises(ConfigError, match=match.format(t=table, n=name)):
        load_experiment(None, {f"{table}.{param}": value})


@pytest.mark.parametrize("key,value,match", [
    ("model.params.c_hidden", [8, 0], r"^model.params.num_blocks = \[2, 2, 3\] and "
                                      r"model.params.c_hidden = \[8, 0\] must be"),
    ("model.params.c_hidden", [8], "^model.params.num_blocks has 3 groups but "
                                   "model.params.c_hidden has 1"),
    ("rotation.equivariant.params.num_blocks", [5000, 5001],
     r"^rotation.equivariant.params.num_blocks = \[5000, 5001\] makes 10,001 layers"),
    ("shuffle.mlp.params.hidden", [0], r"^shuffle.mlp.params.hidden = \[0\]: use a list"),
    ("shuffle.mlp.params.hidden", [1] * 10_001, r"^shuffle.mlp.params.hidden = \[1, 1, .*"
                                                r"\(30,003 characters\) makes 10,001 layers"),
    ("shuffle.mlp.params.activation", "tanh2", "^shuffle.mlp.params.activation = 'tanh2': "
                                               "use one of elu"),
    # A list was looked up in the table of activations: "unhashable type: 'list'".
    ("shuffle.mlp.params.activation", ["elu"], r"^shuffle.mlp.params.activation = \['elu'\]: "
                                               "use one of elu"),
])
def test_model_shape_errors_name_the_key(key, value, match):
    with pytest.raises(ConfigError, match=match):
        load_experiment(None, {key: value})


@pytest.mark.parametrize("key,value", [("train.epochs", "x" * 5000),
                                       ("report.formats", ["pdf", "x" * 3000]),
                                       ("train.augment.flip", "y" * 5000),
                                       ("x" * 5000, 1), ("train." + "k" * 5000, 1),
                                       ("shuffle.mlp.params.activation", "r" * 5000),
                                       ("model.params." + "p" * 5000, 1)])
def test_long_values_are_cut_in_errors(key, value):
    """A value (or key) thousands of characters long is quoted in part, with its length:
    the error stays one readable line."""
    with pytest.raises(ConfigError) as e:
        load_experiment(None, {key: value})
    assert len(str(e.value)) < 400 and "characters)" in str(e.value), str(e.value)[:500]


def test_override_parsing():
    assert parse_override("optim.lr=0.05") == ("optim.lr", 0.05)
    assert parse_override("rotation.angles=[0, 90]") == ("rotation.angles", [0, 90])
    assert parse_override("report.author=Ada Lovelace") == ("report.author", "Ada Lovelace")
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("optim.lr")


def test_invalid_toml_names_file(tmp_path):
    p = tmp_path / "broken.toml"
    p.write_text("[train\n")
    with pytest.raises(ConfigError, match="broken.toml is not valid TOML"):
        load_experiment(p)


def test_files_saved_with_a_byte_order_mark_or_in_utf16_read_as_written(tmp_path):
    """Windows Notepad saves UTF-8 with a byte-order mark and CRLF line ends: the experiment
    file failed as "Invalid statement (at line 1, column 1)", the permutation file as
    "Unexpected UTF-8 BOM"."""
    import json

    import torch

    from reportgen.experiments.shuffle import load_permutation
    from reportgen.usertext import read_user_text

    bom = b"\xef\xbb\xbf"
    exp = tmp_path / "mine.toml"
    exp.write_bytes(bom + b'name = "mine"\r\n[train]\r\nepochs = 3\r\n')
    perm = tmp_path / "perm.json"
    perm.write_bytes(bom + json.dumps(list(range(1024))[::-1]).encode())
    cfg = load_experiment(exp, {"shuffle.perm_file": str(perm)})
    assert cfg.name == "mine" and cfg.train.epochs == 3
    assert torch.equal(load_permutation(cfg), torch.arange(1023, -1, -1))
    text = tmp_path / "text.toml"
    text.write_bytes(bom + 'discussion = "Caf\u00e9 au lait."\r\n'.encode())
    assert read_user_text(str(text)) == {"discussion": "Caf\u00e9 au lait."}
    # PowerShell's `>` writes UTF-16 with its mark.
    text.write_bytes('discussion = "Caf\u00e9 au lait."\r\n'.encode("utf-16"))
    assert read_user_text(str(text)) == {"discussion": "Caf\u00e9 au lait."}


@pytest.mark.parametrize("key,value,what", [
    ("figures_dir", "fig\0ures", "the control character U+0000"),  # os.mkdir: embedded null byte
    ("data.cache_dir", "a\0b", "U+0000"),
    ("shuffle.perm_file", "p\0.json", "U+0000"),
    ("report.author", "Ada\x01 Lovelace", "the control character U+0001"),  # breaks LaTeX
    ("report.course", "DL\x1b[31m", "U+001B"),
    ("report.title", "CNNs\x85", "U+0085"),  # a C1 control character
    # A command-line byte that is not UTF-8 reaches Python as a lone surrogate, which no
    # PDF, HTML or JSON writer can encode.
    ("report.title", "Caf\udce9", "the byte 0xE9, which is not UTF-8"),
])
def test_text_settings_refuse_control_characters_and_undecodable_bytes(key, value, what):
    with pytest.raises(ConfigError,
                       match=f"^{re.escape(key)} = .* contains .*{re.escape(what)}: remove it$"):
        load_experiment(None, {key: value})


def test_text_settings_keep_whitespace_and_unicode():
    cfg = load_experiment(None, {"report.title": "Invariance\tof CNNs\n(Ünïcödé, 東京, π)",
                                 "train.strategy": "ddp"})
    assert cfg.report.title == "Invariance\tof CNNs\n(Ünïcödé, 東京, π)"
    assert cfg.train.strategy == "ddp"


def test_a_leading_tilde_in_a_path_setting_is_the_home_folder(tmp_path, monkeypatch):
    """out_dir = "~/runs" in an experiment file made a folder named "~" in the current folder,
    while data.source = "~/..." was read as the home folder."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "q.toml").write_text('name = "q"\n')
    paths = {"out_dir": "~/o", "figures_dir": "~/f", "data.source": "~/d", "data.cache_dir": "~/c",
             "report.user_text": "~/u.toml", "shuffle.perm_file": "~/p.json"}
    cfg = load_experiment("~/q.toml", paths)
    assert cfg.name == "q"  # --config '~/q.toml' too
    got = [cfg.out_dir, cfg.figures_dir, cfg.data.source, cfg.data.cache_dir,
           cfg.report.user_text, cfg.shuffle.perm_file]
    assert got == [str(tmp_path / p[2:]) for p in paths.values()]
    assert load_experiment(None, {"out_dir": "a~/o"}).out_dir == "a~/o"  # only a leading ~


@pytest.mark.parametrize("key", ["out_dir", "figures_dir", "data.source", "data.cache_dir",
                                 "report.user_text", "shuffle.perm_file"])
def test_a_tilde_of_no_user_is_named(key):
    """~nosuch/... (a typo of ~/...): pathlib raised RuntimeError (a traceback from --data),
    and out_dir = "~nosuch/runs" made a folder "~nosuch" in the current folder."""
    with pytest.raises(ConfigError, match=rf"^{key} ~nosuchuser1/x: this machine has no user "
                                          r"'nosuchuser1', whose home folder ~nosuchuser1 would be"):
        load_experiment(None, {key: "~nosuchuser1/x"})


def test_a_tilde_of_no_user_on_the_command_line_and_in_the_environment(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from reportgen.cli import app

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for args in (["--data", "~nosuchuser1/d"], ["--config", "~nosuchuser1/q.toml"],
                 ["--out", "~nosuchuser1/o"]):
        r = runner.invoke(app, ["train", *args, "--plan"])
        assert r.exit_code == 2 and "this machine has no user 'nosuchuser1'" in r.output, r.output
    monkeypatch.setenv("REPORTGEN_DATA", "~nosuchuser1/d")
    r = runner.invoke(app, ["train", "--plan"])
    assert r.exit_code == 2 and "REPORTGEN_DATA ~nosuchuser1/d: this machine has no user" in r.output
    assert list(tmp_path.iterdir()) == []  # no folder named ~nosuchuser1, no output folder


def test_rotation_angles_are_orientations_swept_once_in_order():
    cfg = load_experiment(None, {"rotation.angles": [90, -30, 0, 360, 10, -350, 90.0, -1e-20]})
    assert cfg.rotation.angles == (0.0, 10.0, 90.0, 330.0)
    default = load_experiment(None).rotation.angles
    assert default == tuple(float(a) for a in range(0, 360, 10))
    # To a thousandth of a degree: 359.99999999 was swept as its own angle and printed "360°".
    cfg = load_experiment(None, {"rotation.angles": [1e-9, 359.99999999, 10.00001, 45.12345]})
    assert cfg.rotation.angles == (0.0, 10.0, 45.123)
    with pytest.raises(ConfigError, match="at least one angle other than 0"):
        load_experiment(None, {"rotation.angles": [1e-9, -0.0001]})


def test_seeds_past_32_bits_would_repeat_a_smaller_seed():
    """Why seeds stop at 2**32: torch's CPU generator keeps only the low 32 bits, so a larger
    split or permutation seed would give another seed's split or permutation under a new
    name (and run key)."""
    import torch

    from reportgen.transforms import pixel_permutation

    assert torch.equal(pixel_permutation(2**32 + 42), pixel_permutation(42))
    assert not torch.equal(pixel_permutation(43), pixel_permutation(42))


def test_a_partial_model_table_keeps_its_sections_own_model():
    """`shuffle.mlp.params.hidden` (as the README documents) named the MLP's width, but the
    partial table became ModelConfig's default model, the ResNet: "model 'preact_resnet' has
    no setting 'hidden'". A partial table now completes from its own field's default."""
    mlp = load_experiment(None, {"shuffle.mlp.params.hidden": [64]}).shuffle.mlp
    assert (mlp.name, dict(mlp.params)) == ("mlp", {"num_classes": 10, "hidden": [64],
                                                    "activation": "elu"})
    p4 = load_experiment(None, {"rotation.equivariant.params": {"c_hidden": [8, 8, 8]}})
    assert p4.rotation.equivariant.name == "p4_preact_resnet"
    assert p4.rotation.equivariant.params["num_blocks"] == [2, 2, 3]
    # Naming another model starts from that model's own defaults, not the ResNet's settings.
    assert dict(load_experiment(None, {"model.name": "p4_preact_resnet"}).model.params) == {}
    assert load_experiment(None, {"model.params": {}}).model == load_experiment(None).model
    with pytest.raises(ConfigError, match="model 'mlp' has no setting 'c_hidden'"):
        load_experiment(None, {"shuffle.mlp.params.c_hidden": [8]})


@pytest.mark.parametrize("key,value,match", [
    # `seeds = 3` most likely means three seeds, which a list or --seeds N gives.
    ("train.seeds", 3, r"^train.seeds must be a list, got 3: list the seeds, e.g. \[42, 43, 44\], "
                       r"or pass --seeds 3"),
    ("shuffle.mlp_seeds", 5, r"^shuffle.mlp_seeds must be a list, got 5: .*--seeds 5"),
    ("rotation.angles", 90, r"^rotation.angles must be a list, got 90: write \[90\] for a list"),
    ("optim.milestones", 5, r"^optim.milestones must be a list, got 5: write \[5\]"),
    ("train.seeds", True, r"^train.seeds must be a list, got True$"),
])
def test_a_single_value_where_a_list_goes_says_what_to_write(key, value, match):
    with pytest.raises(ConfigError, match=match):
        load_experiment(None, {key: value})


def test_a_dotted_setting_under_a_value_names_the_value(tmp_path):
    """`train = 5` in the file and --set train.epochs=2: the message named only "train"."""
    f = tmp_path / "e.toml"
    f.write_text("train = 5\n")
    with pytest.raises(ConfigError, match=r"^train.epochs cannot be set: train is 5 \(from the "
                                          r"experiment file or another --set\), a value, not a "
                                          "table of settings$"):
        load_experiment(f, {"train.epochs": 2})
    with pytest.raises(ConfigError, match=r"^model.params.c_hidden.x cannot be set: "
                                          r"model.params.c_hidden is \[8\]"):
        load_experiment(None, {"model.params.c_hidden": [8], "model.params.c_hidden.x": 1})
