"""The command line's error handling: a user's mistake is one line, a bug keeps its traceback,
and --debug (or REPORTGEN_DEBUG=1) shows every traceback."""
import pytest
from typer.testing import CliRunner

from reportgen.cli import app
from reportgen.config import ConfigError

runner = CliRunner()


def test_a_user_error_is_one_line():
    r = runner.invoke(app, ["train", "--epochs", "0"])
    assert r.exit_code == 2 and r.exception is not None and "Traceback" not in r.output
    assert r.output.strip() == "error: train.epochs = 0 is not allowed: use a positive integer"


@pytest.mark.parametrize("command", ["train", "rotation", "shuffle", "all"])
def test_an_empty_data_option_is_refused_not_read_as_the_default(command, tmp_path, monkeypatch):
    """`--data "$DIR"` with DIR unset must not fall back to ./data (and download into it)."""
    monkeypatch.chdir(tmp_path)
    for value in ("", "  "):
        r = runner.invoke(app, [command, "--data", value, "--plan", "--out", "o"])
        assert r.exit_code == 2 and f"--data {value!r} is empty" in r.output, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no data/, no o/


@pytest.mark.parametrize("command", ["train", "rotation", "shuffle", "all", "figures", "report",
                                     "bench"])
def test_an_empty_config_option_is_refused_not_read_as_the_current_folder(command, tmp_path,
                                                                          monkeypatch):
    """`--config "$FILE"` with FILE unset was read as the folder ".": "experiment file .
    cannot be read", about a path nobody typed."""
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, [command, "--config", ""])
    assert r.exit_code == 2 and r.output.startswith("error: --config '' is empty: name an "
                                                    "experiment file"), r.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["train", "all", "figures", "report"])
def test_an_output_folder_that_is_a_file_is_named_as_such(command, tmp_path):
    """Before, `figures` and `report` said part1.json was missing (run `reportgen train`,
    which could not help), and the writing commands repeated mkdir's "File exists"."""
    f = tmp_path / "results.txt"
    f.write_text("mine")
    for out, said in ((f, f"--out {f} is a file, not a folder"),
                      (f / "sub", f"--out {f / 'sub'} ({f} is a file, not a folder)"),
                      ("/dev/null", "--out /dev/null is a device, not a folder")):
        r = runner.invoke(app, [command, "--out", str(out)])
        assert r.exit_code == 2 and r.output.startswith(f"error: {said}: choose a folder for the "
                                                      "runs, results and report with --out"), r.output
    assert f.read_text() == "mine" and sorted(tmp_path.iterdir()) == [f]


@pytest.mark.parametrize("command", ["train", "figures", "report"])
def test_a_command_that_fails_before_writing_leaves_no_folder_behind(command, tmp_path,
                                                                     monkeypatch):
    """A typo in --out made the folder (and its parents) with a stray .lock in it, although
    the command then stopped: no results there, or no data."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "kept").mkdir()
    for out in ("new/a/b", "kept/b"):
        data = ["--data", "nowhere"] if command == "train" else []  # the others read results
        r = runner.invoke(app, [command, "--out", out, *data])
        assert r.exit_code == 2 and r.output.startswith("error: "), r.output
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["kept"]


@pytest.mark.parametrize("command", ["train", "rotation", "shuffle", "all"])
def test_a_missing_gpu_is_named_before_the_data_are_decoded(command, tiny, monkeypatch):
    """--device gpu on a machine without one was refused only after decoding the data (a
    minute for CIFAR-10's JPEGs on a laptop)."""
    import torch

    from helpers import overrides_to_args

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    overrides, out = tiny
    r = runner.invoke(app, [command, *overrides_to_args(overrides), "--device", "gpu"])
    assert r.exit_code == 2, r.output
    assert r.output.strip().splitlines()[-1] == ("error: --device gpu was asked for but no CUDA "
                                                 "GPU is visible: use --device cpu or auto")
    assert not out.exists()  # nothing decoded, no cache, no lock


def test_the_output_lock_leaves_no_file_after_the_command(tiny):
    from reportgen.files import OutputLock

    _, out = tiny
    (out / "mine").mkdir(parents=True)
    with OutputLock(out):
        assert (out / ".lock").exists()
    assert sorted(p.name for p in out.iterdir()) == ["mine"]  # a folder it did not make stays


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback_of_a_user_error(how, monkeypatch):
    args = ["train", "--epochs", "0"]
    if how == "flag":
        args = ["--debug", *args]
    else:
        monkeypatch.setenv("REPORTGEN_DEBUG", "1")
    r = runner.invoke(app, args)
    assert r.exit_code == 1 and isinstance(r.exception, ConfigError)


def test_a_bug_is_not_dressed_as_a_user_error(monkeypatch, tiny):
    """Any exception that is not a UserError (here a KeyError from a broken stage) propagates
    with its traceback instead of becoming an `error:` line."""
    from reportgen import data

    def broken(*a, **k):
        raise KeyError("a bug")

    monkeypatch.setattr(data, "load_cifar10", broken)
    overrides, _ = tiny
    from helpers import overrides_to_args

    r = runner.invoke(app, ["train", *overrides_to_args(overrides)])
    assert r.exit_code == 1 and isinstance(r.exception, KeyError)
    assert "error:" not in r.output


def test_every_study_has_a_command_with_the_common_options():
    from reportgen.experiments import studies

    for study in studies():
        r = runner.invoke(app, [study.cli_name, "--help"])
        assert r.exit_code == 0, study.name
        for option in ("--config", "--data", "--out", "--epochs", "--set", "--retrain"):
            assert option in r.output, (study.name, option)
    assert "--angles" in runner.invoke(app, ["rotation", "--help"]).output
    assert "--epochs" in runner.invoke(app, ["all", "--help"]).output


def test_a_quiet_console(tiny):
    """`reportgen all` into a log file: no Lightning chatter, no deprecation noise from
    Lightning's internals, no progress-bar control sequences; one line per epoch instead."""
    import subprocess
    import sys
    from pathlib import Path

    from helpers import overrides_to_args

    overrides, out = tiny
    proc = subprocess.run([sys.executable, "-m", "reportgen.cli", "all",
                           *overrides_to_args(overrides)], capture_output=True, text=True,
                          timeout=600, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = proc.stdout + proc.stderr
    for noise in ("GPU available", "TPU available", "Tip:", "litlogger", "LeafSpec",
                  "_pytree", "\x1b[A", "\r", "Trainer.fit` stopped", "it/s]"):
        assert noise not in console, noise
    assert "resnet epoch 1/1: train loss" in proc.stderr
    assert "=== Part 1" in proc.stderr and "=== report" in proc.stderr
    assert proc.stdout.strip() == str(out / "report.pdf")


def test_a_figures_folder_that_cannot_be_made_stops_before_training(tiny, tmp_path):
    """A file where the figures folder should be: before, `all` trained every run and then
    failed with a bare "[Errno 20] Not a directory" line; now every command that writes says
    so before any training, and `figures` names the setting."""
    from helpers import overrides_to_args

    overrides, out = tiny
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for where in (blocker, blocker / "below"):
        args = [*overrides_to_args({**overrides, "figures_dir": str(where)})]
        for cmd in (["train"], ["all"], ["train", "--plan"]):
            r = runner.invoke(app, [*cmd, *args])
            assert r.exit_code == 2, (cmd, r.output)
            assert f"cannot write figures to {where}/" in r.output and "is not a folder" in \
                r.output and "--set figures_dir=" in r.output, r.output
        assert not (out / "runs").exists()


def test_version_prints_the_installed_version():
    from importlib.metadata import version

    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"reportgen {version('reportgen')}"


def test_operating_system_errors_say_what_to_do(tmp_path):
    import errno
    import os

    from reportgen.cli import _os_error

    # A folder where a figure goes: the rename's error names the figure, not the temporary
    # file it was written to (".x.tmp123.png"); a file descriptor is no name at all.
    (tmp_path / "x.png").mkdir()
    (tmp_path / ".x.tmp1.png").write_bytes(b"png")
    with pytest.raises(OSError) as e:
        os.replace(tmp_path / ".x.tmp1.png", tmp_path / "x.png")
    assert _os_error(e.value) == (f"Is a directory ({tmp_path / 'x.png'}): a folder stands "
                                  "where a file is needed: move it, or choose another location")
    fd = os.open(tmp_path / "x.png", os.O_RDONLY)
    try:
        with pytest.raises(OSError) as e:
            os.fdopen(fd, "rb")
    finally:
        os.close(fd)
    assert _os_error(e.value) == ("Is a directory: a folder stands where a file is needed: "
                                  "move it, or choose another location")

    assert _os_error(OSError(errno.ENOSPC, "No space left on device", "/o/runs/x")) == (
        "No space left on device (/o/runs/x): free disk space, or choose another --out")
    assert _os_error(PermissionError(errno.EACCES, "Permission denied")) == (
        "Permission denied: you may not write there: choose another location")
    # A message a stage wrote, or an error without advice, stays as it is.
    assert _os_error(OSError("it is a FIFO, not a regular file")) == \
        "it is a FIFO, not a regular file"
    assert _os_error(OSError(errno.EIO, "Input/output error", "/x")) == \
        "[Errno 5] Input/output error: '/x'"


def test_the_command_line_starts_without_torch_or_lightning():
    """Declaring the studies imported Lightning (and torch): `reportgen --help`, `--version`
    and a refused setting each took 8 to 12 s on the 2-core machine; they take under half a
    second now. Each stage imports what it uses."""
    import subprocess
    import sys

    code = ("import sys; from typer.testing import CliRunner; from reportgen.cli import app; "
            "r = CliRunner().invoke(app, sys.argv[1:]); "
            "print(r.exit_code, sorted(m for m in ('torch', 'pytorch_lightning', 'lightning', "
            "'torchvision', 'scipy') if m in sys.modules))")
    for args in (["--help"], ["--version"], ["train", "--epochs", "0"], ["all", "--help"]):
        proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split(None, 1)[1].strip() == "[]", (args, proc.stdout)


def test_the_report_and_figures_commands_load_no_lightning(tmp_path):
    """Neither trains: `report` spent 3.5 s of its 10 s importing Lightning only to reset the
    set of runs trained in this process, which holds nothing where training never loaded."""
    import subprocess
    import sys

    code = ("import sys; from typer.testing import CliRunner; from reportgen.cli import app; "
            "r = CliRunner().invoke(app, sys.argv[1:]); "
            "print(r.exit_code, sorted(m for m in ('pytorch_lightning', 'lightning') "
            "if m in sys.modules))")
    for command in ("report", "figures"):
        out = tmp_path / command
        proc = subprocess.run([sys.executable, "-c", code, command, "--out", str(out), "--set",
                               f'figures_dir="{out / "figures"}"'],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        # Past the output lock, to the missing results (nothing ran here).
        assert proc.stdout.split() == ["2", "[]"], (command, proc.stdout)


def test_python_dash_m_reportgen_is_the_command():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "reportgen", "train", "--epochs", "0"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: train.epochs = 0 is not allowed: use a positive integer"


@pytest.mark.parametrize("kind", ["dangling", "loop"])
def test_a_link_that_leads_nowhere_is_named_as_a_link(kind, tiny, tmp_path):
    """`ls` shows a link whose target is gone (or a loop of links), so "does not exist" sent
    the user looking at the wrong file; a permutation or text file read through one gave
    the bare errno line, and --out or figures_dir at one mkdir's "File exists"."""
    from helpers import overrides_to_args

    overrides, out = tiny
    link = tmp_path / "link"
    if kind == "dangling":
        link.symlink_to(tmp_path / "gone")
        said = f"{link} is a symbolic link to {tmp_path / 'gone'}, which does not exist"
    else:
        link.symlink_to(link)
        said = f"{link} is a symbolic link to {link} that leads back to itself"
    args = overrides_to_args(overrides)
    cases = [
        (["train", "--plan", *args, "--config", str(link)], "experiment file"),
        (["train", "--plan", *args, "--data", str(link)], "--data"),
        (["rotation", *args, "--checkpoint", str(link)], "checkpoint"),
        (["shuffle", "--plan", *args, "--set", f"shuffle.perm_file='{link}'"],
         "shuffle.perm_file"),
        (["train", "--plan", *args, "--out", str(link)], "--out"),
        (["train", "--plan", *args, "--out", str(link / "below")], f"--out {link / 'below'} ("),
        (["train", "--plan", *args, "--set", f"figures_dir='{link}'"], "cannot write figures"),
        (["figures", *args, "--set", f"figures_dir='{link}'"], "cannot write figures"),
    ]
    for argv, named in cases:
        if argv[0] == "figures":  # results to draw from (Part 1's), with figures elsewhere
            assert runner.invoke(app, ["train", *args]).exit_code == 0
        r = runner.invoke(app, argv)
        line = r.output.strip().splitlines()[-1] if r.output.strip() else ""
        assert r.exit_code == 2 and line.startswith("error: ") and named in line \
            and said in line and "Errno" not in line, (argv[0], named, r.output)
    from reportgen.usertext import read_user_text

    with pytest.raises(ConfigError, match=f"^report.user_text {said}: name your text"):
        read_user_text(str(link))
    assert not link.exists() and not (tmp_path / "gone").exists()


def test_an_option_replaces_a_set_of_the_same_key_and_says_so(tiny):
    """`--epochs 3 --set train.epochs=2` planned 3 epochs without a word about the 2."""
    from helpers import overrides_to_args

    overrides, _ = tiny
    args = overrides_to_args(overrides)  # train.epochs = 1, rotation.angles = [0, 90, ...]
    r = runner.invoke(app, ["train", "--plan", *args, "--epochs", "3"])
    assert r.exit_code == 0, r.output
    assert "note: --epochs sets train.epochs = 3, replacing --set 'train.epochs=1'" in r.output
    assert "3 epochs x" in r.output and "1 epochs x" not in r.output
    r = runner.invoke(app, ["rotation", "--plan", *args, "--angles", "0,45", "--seeds", "2"])
    assert r.exit_code == 0, r.output
    assert "note: --angles sets rotation.angles = [0.0, 45.0], replacing --set " in r.output
    r = runner.invoke(app, ["train", "--plan", *args, "--epochs", "1"])  # the same value
    assert r.exit_code == 0 and "note: --epochs" not in r.output, r.output


def _latin1_folder(tmp_path):
    """A folder whose name holds a byte that is not UTF-8 ("Übung" written in Latin-1)."""
    import os

    folder = os.fsencode(tmp_path) + b"/\xdcbung"
    os.mkdir(folder)
    return os.fsdecode(folder)


@pytest.mark.parametrize("args,key", [
    (["--out", "o"], "out_dir = 'o'"),
    (["--out", "/nonexistent-ok/o"], "figures_dir = 'figures'"),
    (["--out", "/nonexistent-ok/o", "--set", "figures_dir='/nonexistent-ok/f'",
      "--set", "shuffle.perm_file='p.json'"], "shuffle.perm_file = 'p.json'"),
    (["--out", "/nonexistent-ok/o", "--set", "figures_dir='/nonexistent-ok/f'",
      "--set", "report.user_text='t.toml'"], "report.user_text = 't.toml'"),
])
def test_a_relative_path_in_a_folder_whose_name_is_not_utf8_is_named(tmp_path, monkeypatch,
                                                                      args, key):
    """A relative --out there trained, then failed as "checkpoint ... is damaged or not a
    reportgen checkpoint (UnicodeEncodeError ...)": torch opens checkpoints through UTF-8."""
    monkeypatch.chdir(_latin1_folder(tmp_path))
    r = runner.invoke(app, ["all", "--plan", *args])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert r.output.startswith(f"error: {key} is inside '") and \
        "\\udcdcbung' (the current folder), whose name contains the byte 0xDC, which is not " \
        "UTF-8: rename that folder to a UTF-8 name" in r.output, r.output


def test_the_default_data_folder_in_a_folder_whose_name_is_not_utf8_is_named(tmp_path,
                                                                              monkeypatch):
    from reportgen.config import DataConfig
    from reportgen.data import DataError, load_cifar10

    monkeypatch.chdir(_latin1_folder(tmp_path))
    monkeypatch.delenv("REPORTGEN_DATA", raising=False)
    with pytest.raises(DataError, match=r"^the data folder data is inside '.*\\udcdcbung' \(the "
                                        r"current folder\), whose name contains the byte 0xDC"):
        load_cifar10(DataConfig(), env={}, fetch=False)


def test_a_home_folder_whose_name_is_not_utf8_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", _latin1_folder(tmp_path))
    r = runner.invoke(app, ["all", "--plan", "--out", "~/o"])
    assert r.exit_code == 2 and "error: out_dir = '" in r.output and "/o' is inside " in r.output and \
        "(your home folder), whose name" in r.output, r.output


def test_a_deleted_current_folder_is_named(tmp_path, monkeypatch):
    """Importing torch there ended the process with oneMKL's "Cannot load libtorch_cpu.so"."""
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    r = runner.invoke(app, ["all", "--plan"])
    assert r.exit_code == 2 and r.output.strip() == (
        "error: the current folder no longer exists (it was deleted or moved): cd to a folder "
        "that exists and run the command again"), r.output
