"""Where the report's templates and the shipped experiment presets are, however reportgen was
installed.

In the repository they are the top-level `templates/` and `experiments/` folders. A wheel
(`pip install .`, `pipx install`) cannot hold folders beside the package, so pyproject.toml
ships them inside it as `reportgen/templates` and `reportgen/presets`. An editable install
(`pip install -e .`) runs from the repository. Before, only the editable install could write
a report: every other one failed on the missing `templates/report.css`.
"""
from __future__ import annotations

from pathlib import Path

from .errors import UserError

_PACKAGE = Path(__file__).resolve().parent
_CHECKOUT = _PACKAGE.parent


def _folder(packaged: str, checkout: str) -> Path | None:
    for folder in (_PACKAGE / packaged, _CHECKOUT / checkout):
        if folder.is_dir():
            return folder
    return None


def templates_dir() -> Path:
    """The folder of the report's Jinja templates and CSS."""
    folder = _folder("templates", "templates")
    if folder is None or not (folder / "report.html.j2").is_file():
        raise UserError(f"reportgen's report templates are missing (looked in "
                        f"{_PACKAGE / 'templates'} and {_CHECKOUT / 'templates'}): reinstall "
                        "reportgen (pip install --force-reinstall reportgen, or pip install -e . "
                        "in its repository)")
    return folder


def presets() -> dict[str, Path]:
    """The experiment files shipped with reportgen, by name ("quick" -> .../quick.toml)."""
    folder = _folder("presets", "experiments")
    if folder is None:
        return {}
    return {p.stem: p for p in sorted(folder.glob("*.toml")) if p.is_file()}


def preset(name: str) -> Path | None:
    """The shipped experiment file that `--config NAME` (or NAME.toml) names, if any: only a
    bare name, so that a path the user typed is never silently replaced by another file."""
    if not name or Path(name).name != name:
        return None
    return presets().get(name[:-5] if name.endswith(".toml") else name)
