"""reportgen installed as a wheel (`pip install .`, pipx), not only from its repository: the
wheel carries every module, the report's templates and the experiment presets."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reportgen import config, resources
from reportgen.cli import app

from helpers import build_wheel, overrides_to_args

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def test_the_wheel_holds_every_module_template_and_preset(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {p.relative_to(REPO).as_posix() for p in (REPO / "reportgen").rglob("*.py")}
    expected |= {"reportgen/templates/" + p.relative_to(REPO / "templates").as_posix()
                 for p in (REPO / "templates").rglob("*") if p.is_file()}
    expected |= {"reportgen/presets/" + p.name for p in (REPO / "experiments").glob("*.toml")}
    assert expected - names == set()
    assert any(n.endswith("entry_points.txt") for n in names)


def test_an_installed_wheel_finds_its_templates_and_presets_from_any_folder(wheel, tmp_path):
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:  # a wheel is installed by unpacking it
        z.extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = ("from reportgen import resources, config\n"
             "print(resources.templates_dir())\n"
             "print(config.load_experiment('quick').name)\n")
    r = subprocess.run([sys.executable, "-c", probe], cwd=elsewhere, capture_output=True,
                       text=True, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    where, name = r.stdout.split()
    assert where == str(site / "reportgen" / "templates")
    assert name == "quick"


def test_a_bare_preset_name_loads_the_shipped_file_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for arg in ("quick", "quick.toml", "practical2"):
        cfg = config.load_experiment(arg)
        assert cfg.name == arg.removesuffix(".toml")
    assert config.load_experiment("quick").train.epochs == 8  # the file's own setting
    # A file of that name in the working folder comes first.
    (tmp_path / "quick").write_text('name = "mine"\n')
    assert config.load_experiment("quick").name == "mine"
    # A path is never swapped for a preset.
    r = runner.invoke(app, ["train", "--config", "elsewhere/quick.toml", "--plan"])
    assert r.exit_code == 2
    assert r.output.startswith("error: experiment file elsewhere/quick.toml does not exist: "
                               "pass --config with an experiment file, or a preset shipped with "
                               "reportgen by name (--config practical2 or quick)")


def test_missing_templates_are_one_line_naming_the_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(resources, "_PACKAGE", tmp_path / "site" / "reportgen")
    monkeypatch.setattr(resources, "_CHECKOUT", tmp_path / "site")
    with pytest.raises(resources.UserError, match=r"report templates are missing .*reinstall"):
        resources.templates_dir()
    assert resources.presets() == {}
    assert resources.preset("quick") is None


def test_all_finds_missing_templates_before_any_work(monkeypatch, tmp_path, tiny):
    overrides, out = tiny
    monkeypatch.setattr(resources, "_PACKAGE", tmp_path / "site" / "reportgen")
    monkeypatch.setattr(resources, "_CHECKOUT", tmp_path / "site")
    r = runner.invoke(app, ["all", *overrides_to_args(overrides)])
    assert r.exit_code == 2
    assert r.output.startswith("error: reportgen's report templates are missing")
    assert len(r.output.strip().splitlines()) == 1
    assert not out.exists()  # nothing decoded, trained or locked
