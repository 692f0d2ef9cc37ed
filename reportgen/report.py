"""Results + figures + templates/ -> report.html -> report.pdf (WeasyPrint).

The report never computes a result: numbers come from the results files, the discussion's
facts from `analysis` (which reads only those files), and figures from `figures/`. Both
outputs are written under temporary names and renamed, so a failed build never replaces a
good report.
"""
from __future__ import annotations

import base64
import json
import time
import tomllib
from pathlib import Path

from . import analysis
from .config import ConfigError, ExperimentConfig
from .files import MissingResults, atomic_write_bytes, atomic_write_text, read_json
from .figures import MODEL_NAMES

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
SECTIONS = ("abstract", "introduction", "method", "results", "discussion", "conclusion")
FIGURE_ORDER = ("part1_augmentation", "part1_learning_curves", "rotation_accuracy",
                "rotation_per_class", "rotation_examples", "shuffle_example", "shuffle_accuracy",
                "shuffle_learning_curves")


# --- formatting filters -----------------------------------------------------------------

def pct(x) -> str:
    return "–" if x is None else f"{x * 100:.2f}%"


def pct1(x) -> str:
    return "–" if x is None else f"{x * 100:.1f}%"


def pp(x) -> str:
    """Percentage points."""
    return "–" if x is None else f"{x * 100:.1f}"


def deg(x) -> str:
    return f"{x:g}°"


def thousands(x) -> str:
    return f"{int(x):,}"


def duration(seconds) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


OPTIMIZERS = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}
PRECISIONS = {"32-true": "32-bit floating point", "bf16-mixed": "bfloat16 mixed precision",
              "16-mixed": "float16 mixed precision"}
SPLITS = {"val": "validation", "test": "test"}


def toml_text(d: dict, prefix: str = "") -> str:
    """A readable TOML rendering of a config dict, for the appendix."""
    def value(v):
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v)

    plain = [f"{k} = {value(v)}" for k, v in d.items() if not isinstance(v, dict) or k == "params"]
    tables = [toml_text(v, f"{prefix}{k}.") for k, v in d.items()
              if isinstance(v, dict) and k != "params"]
    head = [f"[{prefix[:-1]}]"] if prefix else []
    return "\n".join(head + plain) + ("\n\n" if tables else "") + "\n\n".join(tables)


# --- context -------------------------------------------------------------------------------

def read_user_text(path: str) -> dict[str, list[str]]:
    """The student's own text: a TOML file with one string per section, kept as written."""
    if not path:
        return {}
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"report.user_text {p} cannot be read as TOML ({e}): fix it or set "
                          "report.user_text = \"\"") from e
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"report.user_text {p}: unknown section {unknown[0]!r}; use "
                          f"{', '.join(SECTIONS)}")
    out = {}
    for k, v in raw.items():
        if not isinstance(v, str):
            raise ConfigError(f"report.user_text {p}: {k} must be a string (use \"\"\"...\"\"\" "
                              "for several paragraphs)")
        out[k] = [para.strip() for para in v.strip().split("\n\n") if para.strip()]
    return out


def _figures(figures_dir: Path) -> dict[str, dict]:
    figs, n = {}, 0
    for name in FIGURE_ORDER:
        f = figures_dir / f"{name}.png"
        if not f.is_file():
            raise MissingResults(f"figure {f} is missing: run `reportgen figures`")
        n += 1
        uri = "data:image/png;base64," + base64.b64encode(f.read_bytes()).decode()
        figs[name] = {"n": n, "src": uri}
    return figs


def build_context(cfg: ExperimentConfig, results: Path, figures_dir: Path) -> dict:
    part1 = read_json(results / "part1.json", "train")
    rot = read_json(results / "rotation.json", "rotation")
    shuf = read_json(results / "shuffle.json", "shuffle")
    runs, seen = [], set()
    run_dirs = [part1["run_dir"]] + [m["run_dir"] for m in rot["models"].values()] + [
        r["run_dir"] for r in shuf["runs"].values()]
    for d in run_dirs:
        key = Path(d).resolve()
        if key not in seen and (key / "results.json").is_file():
            seen.add(key)
            runs.append(json.loads((key / "results.json").read_text()))
    rot_facts = analysis.rotation_facts(rot)
    return {
        "meta": {"title": cfg.report.title, "author": cfg.report.author,
                 "student_number": cfg.report.student_number, "course": cfg.report.course,
                 "date": time.strftime("%d %B %Y").lstrip("0")},
        "config": part1["config"], "config_text": toml_text(part1["config"]),
        "part1": part1, "rot": rot, "rot_facts": rot_facts, "shuf": shuf,
        "shuf_facts": analysis.shuffle_facts(shuf), "runs": runs,
        "versions": part1["versions"], "names": MODEL_NAMES, "results_dir": str(results),
        "user_text": read_user_text(cfg.report.user_text), "figs": _figures(figures_dir),
        "css": (TEMPLATES / "report.css").read_text(),
    }


def render_html(context: dict) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             autoescape=jinja2.select_autoescape(["html", "j2"]),
                             undefined=jinja2.StrictUndefined, trim_blocks=False)
    env.filters.update(pct=pct, pct1=pct1, pp=pp, deg=deg, thousands=thousands,
                       duration=duration, optimizer=lambda n: OPTIMIZERS.get(n, n),
                       precision=lambda p: PRECISIONS.get(p, p),
                       split_name=lambda s: SPLITS.get(s, s))
    return env.get_template("report.html.j2").render(**context)


def build_report(cfg: ExperimentConfig, log=print) -> tuple[Path, Path]:
    """Write OUT/report.html and OUT/report.pdf; returns their paths."""
    import weasyprint

    results = Path(cfg.out_dir) / cfg.name
    if not cfg.report.author:
        log("note: the title page has no author; pass --author and --student-number "
            "(or set them under [report] in the experiment file)")
    context = build_context(cfg, results, Path(cfg.figures_dir))
    html = render_html(context)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    html_path, pdf_path = out / "report.html", out / "report.pdf"
    pdf = weasyprint.HTML(string=html, base_url=str(out)).write_pdf()
    if not pdf or not pdf.startswith(b"%PDF"):
        raise RuntimeError("WeasyPrint produced no PDF; the previous report is unchanged")
    atomic_write_text(html_path, html)
    atomic_write_bytes(pdf_path, pdf)
    log(f"report: {html_path} and {pdf_path} ({len(pdf) / 1024:.0f} KiB)")
    return html_path, pdf_path
