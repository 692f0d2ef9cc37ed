"""Results + figures + templates/ -> report.html -> report.pdf (WeasyPrint).

The report never computes a result: numbers come from the studies' results files, the
discussion's facts from each study's `facts` (which read only those files), and figures from
the figures folder. The template loops over the registered studies, placing each study's
partial (templates/studies/<name>.html.j2) in every section. Figures, tables and citations
are numbered where they are placed; a reference to a figure or table that the report does not
contain, or a declared figure it never places, is an error naming it.

Both outputs are written under temporary names and renamed, so a failed build never replaces
a good report.
"""
from __future__ import annotations

import base64
import json
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from markupsafe import Markup, escape

from . import installed_version
from .config import CIFAR10_SIZES, DataConfig, ExperimentConfig, shown, to_dict
from .errors import UserError
from .usertext import read_user_text, to_html
from .files import MissingResults, atomic_write_all, read_figure, read_text
from .figures import SPLIT_NAMES
from .references import REFERENCES
from .resources import templates_dir


class ReportError(UserError, RuntimeError):
    """The report cannot be built as its template asks; the message names what is wrong."""


# --- formatting filters -----------------------------------------------------------------

def pct(x) -> str:
    return "–" if x is None else f"{x * 100:.2f}%"


def pct1(x) -> str:
    return "–" if x is None else f"{x * 100:.1f}%"


def pp(x) -> str:
    """Percentage points."""
    return "–" if x is None else f"{x * 100:.1f}"


def _p(p: float) -> str:
    """A p-value to two decimals (three under 0.01). One that decides "significant" never
    prints as the threshold itself: 0.0497 reads "p = 0.0497", not "p = 0.05" beside a claimed
    difference."""
    from .analysis import ALPHA

    if p < 0.001:
        return "p < 0.001"
    text = f"{p:.3f}" if p < 0.01 else f"{p:.2f}"
    if p < ALPHA <= float(text):
        text = f"{p:.4f}"
        if float(text) >= ALPHA:
            return f"p < {ALPHA:g}"
    return f"p = {text}"


def acc(stat) -> str:
    """An accuracy with its intervals: "70.9% [69.6, 72.1]" (the evaluation set's 95% Wilson
    interval) and, over two or more seeds, "70.9% ± 0.8 [69.6, 72.1]" (± the half-width of the
    seeds' 95% t-interval)."""
    if stat is None:
        return "–"
    out = f"{stat['mean'] * 100:.1f}%"
    if stat.get("seed_ci"):
        lo, hi = stat["seed_ci"]
        out += f" ± {(hi - lo) * 50:.1f}"
    lo, hi = stat["sampling"]
    return out + f" [{lo * 100:.1f}, {hi * 100:.1f}]"


def stat_cell(text) -> Markup:
    """A table cell's number with its intervals, which may wrap only before its bracketed
    interval (and after an angle's colon), never inside a number or an interval. So a wide
    table takes two lines a cell where one line would run off the page: Part 2's table with four
    models and seeds ran past the right margin, its last column cut off."""
    kept = str(text).replace(" ", "\xa0").replace("\xa0[", " [").replace(":\xa0", ": ")
    return Markup(escape(kept))


def est(c) -> str:
    """A mean accuracy estimated over images (and seeds) with its 95% interval."""
    if c is None:
        return "–"
    lo, hi = max(c["lo"], 0.0), min(c["hi"], 1.0)  # an accuracy lies in [0, 1]
    return f"{c['diff'] * 100:.1f}% [{lo * 100:.1f}, {hi * 100:.1f}]"


def _places(c) -> int:
    """Decimals of percentage points that keep an interval's width visible: 1 as a rule,
    more for an interval narrower than 0.2 points (not "[−0.0, +0.0]")."""
    width = (c["hi"] - c["lo"]) * 100
    return 1 if width >= 0.2 else 2 if width >= 0.02 else 3


def _points(x: float, places: int = 1, sign: str = "") -> str:
    """A fraction in percentage points, with a typographic minus; sign="+" shows a plus too,
    except on a value that rounds to zero (no "−0.0" or "+0.0")."""
    text = f"{x * 100:{sign}.{places}f}"
    if sign and float(text) == 0:
        text = text[1:]
    return text.replace("-", "−")


def _signed(x: float, places: int = 1) -> str:
    return _points(x, places, "+")


def diff(c) -> str:
    """A difference in percentage points with its 95% interval and test."""
    if c is None:
        return "–"
    k = _places(c)
    return (f"{_signed(c['diff'], k)} points [{_signed(c['lo'], k)}, {_signed(c['hi'], k)}]; "
            f"{c['test']}, {_p(c['p'])}")


def change(c, up: str = "gains", down: str = "costs") -> str:
    """The words for a difference: a gain or a cost only when the test distinguishes it from
    noise (p < 0.05); otherwise "no measurable difference", with the numbers either way."""
    if c is None:
        return "–"
    if not c["significant"]:
        return f"makes no measurable difference ({diff(c)})"
    word, sign = (up, 1) if c["diff"] > 0 else (down, -1)
    # The interval in the word's direction; an end past 0 (the interval can disagree with
    # the exact test) keeps its sign.
    lo, hi = sorted((sign * c["lo"], sign * c["hi"]))
    k = _places(c)
    return (f"{word} {_points(abs(c['diff']), k)} points (95% CI {_points(lo, k)} to "
            f"{_points(hi, k)}; {c['test']}, {_p(c['p'])})")


def deg(x) -> Markup:
    """An angle to six significant figures, as `setting` prints a number: 0.00001 of a
    degree is 1 × 10<sup>−5</sup>°, not 1e-05°, and a negative angle has a minus sign."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return escape(str(x))
    return setting(float(f"{x:.6g}")) + "°"


def hardware(run: dict) -> str:
    """Where a run trained, as the report says it: the device, and where Lightning's DDP
    spread it over N GPUs or CPU processes, that too."""
    device = str(run.get("device", "")).replace("(1 threads)", "(1 thread)")
    n = run.get("devices") or 1
    if n <= 1:
        return device
    if run.get("accelerator") == "gpu":
        return f"{n} × {device} with Lightning's DDP"
    return f"{n} processes with Lightning's DDP, each on {device}"


def workers(run: dict) -> str:
    """"GPUs" or "processes": what a DDP run's devices were."""
    return "GPUs" if run.get("accelerator") == "gpu" else "processes"


def thousands(x) -> str:
    return f"{int(x):,}"


def setting(x) -> Markup:
    """A numeric setting as a paper prints it: 0.1, 0.0001, 1 × 10<sup>−5</sup> where Python
    writes 1e-05, and 0 or 1 where it writes 0.0 or 1.0. Anything but a number is escaped
    text: a results file is read, not trusted."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return escape(str(x))
    text = repr(x) if isinstance(x, float) else str(x)
    mantissa, _, exponent = text.partition("e")
    mantissa = mantissa.removesuffix(".0")
    if exponent:
        return Markup(f"{mantissa} × 10<sup>{int(exponent)}</sup>".replace("-", "−"))
    return Markup(mantissa.replace("-", "−"))


def duration(seconds) -> str:
    if seconds < 9.95:  # a tenth of a second is still visible here, not "0 s"
        return "under 0.1 s" if seconds < 0.05 else f"{seconds:.1f} s"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 100 * 3600:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400:,} d {s % 86400 // 3600} h"  # not "34139 h 45 min"


def and_list(items) -> str:
    """'a', 'a and b', 'a, b and c'."""
    items = [str(i) for i in items]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1] if items else ""


PRECISIONS = {"32-true": "32-bit floating point", "bf16-mixed": "bfloat16 mixed precision",
              "16-mixed": "float16 mixed precision"}
PRECISIONS_SHORT = {"32-true": "fp32", "bf16-mixed": "bf16 mixed", "16-mixed": "fp16 mixed"}


def toml_text(d: dict, prefix: str = "") -> str:
    """A readable TOML rendering of a config dict, for the appendix."""
    def value(v):
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v, ensure_ascii=False)  # "Zoë", not "Zo\\u00eb" (valid TOML both)

    plain = [f"{k} = {value(v)}" for k, v in d.items() if not isinstance(v, dict) or k == "params"]
    tables = [toml_text(v, f"{prefix}{k}.") for k, v in d.items()
              if isinstance(v, dict) and k != "params"]
    head = [f"[{prefix[:-1]}]"] if prefix else []
    return "\n".join(head + plain) + ("\n\n" if tables else "") + "\n\n".join(tables)


# --- numbering where things are placed ---------------------------------------------------

_TOKEN = re.compile(r"\x01(ref|cite|bib):([^\x02]*)\x02")


class Numbering:
    """Figures, tables and citations, numbered in the order the template places them.

    `figure`/`table` place an item and return its number; `ref` and `cite` leave a token that
    `resolve` replaces once the whole report is rendered, so a reference may come before
    the item. Placing an item twice, or referring to one that is never placed, is an error.
    """

    def __init__(self, figures_dir: Path):
        self.figures_dir = Path(figures_dir)
        self.placed: dict[str, dict[str, int]] = {"figure": {}, "table": {}}
        self.deferred: list[tuple[str, str, Markup]] = []  # optional figures for the appendix

    def _place(self, kind: str, name: str) -> int:
        if name in self.placed[kind]:
            raise ReportError(f"the report places {kind} {name!r} twice")
        self.placed[kind][name] = len(self.placed[kind]) + 1
        return self.placed[kind][name]

    def figure(self, name: str) -> dict:
        f = self.figures_dir / f"{name}.png"
        data = read_figure(f, b"\x89PNG\r\n\x1a\n")
        n = self._place("figure", name)
        return {"n": n, "src": "data:image/png;base64," + base64.b64encode(data).decode()}

    def defer(self, name: str, cls: str, caption: str) -> str:
        """Keep an optional figure for the appendix (placed there, numbered there)."""
        self.deferred.append((name, cls, Markup(caption)))
        return ""

    def table(self, name: str) -> int:
        return self._place("table", name)

    def ref(self, kind: str, name: str) -> Markup:
        return Markup(f"\x01ref:{kind}/{escape(name)}\x02")

    def cite(self, *keys: str) -> Markup:
        for k in keys:
            if k not in REFERENCES:
                raise ReportError(f"the report cites {k!r}, which is not in "
                                  "reportgen/references.py: add it there")
        return Markup(f"\x01cite:{','.join(keys)}\x02") if keys else Markup("")

    def bibliography(self) -> Markup:
        return Markup("\x01bib:\x02")

    def resolve(self, html: str) -> str:
        cited: dict[str, int] = {}
        for m in _TOKEN.finditer(html):
            if m.group(1) == "cite":
                for k in m.group(2).split(","):
                    cited.setdefault(k, len(cited) + 1)

        def sub(m):
            what, arg = m.group(1), m.group(2)
            if what == "ref":
                kind, name = arg.split("/", 1)
                if name not in self.placed[kind]:
                    raise ReportError(f"the report refers to {kind} {name!r}, which it does not "
                                      f"contain: place the {kind}, or remove the reference")
                # A link in the PDF, as the LaTeX export's \\ref is with hyperref.
                return (f'<a class="xref" href="#{kind[:3]}-{name}">'
                        f"{self.placed[kind][name]}</a>")
            if what == "cite":
                return "[" + ", ".join(f'<a class="xref" href="#ref-{cited[k]}">{cited[k]}</a>'
                                       for k in arg.split(",")) + "]"
            items = "\n".join(f'  <li id="ref-{n}">{REFERENCES[k]}</li>'
                              for n, k in enumerate(cited, start=1))
            return f'<ol class="references">\n{items}\n</ol>'

        return _TOKEN.sub(sub, html)


# --- context -------------------------------------------------------------------------------

@dataclass(frozen=True)
class StudyView:
    """What the template sees of one study."""
    name: str
    title: str
    partial: str
    figures: tuple[str, ...]
    r: dict  # its results
    f: dict  # its facts


def _runs(run_dirs: list[tuple[str, str]], data: dict, out_dir: Path) -> list[dict]:
    """Each run behind the numbers, once, with its seed and its accuracies' intervals."""
    from . import analysis
    from .training import read_results

    runs, seen = [], set()
    for d, command in run_dirs:
        # In this output folder's runs/, wherever the folder was when the study ran.
        key = (Path(out_dir) / "runs" / Path(d).name).resolve()
        if key not in seen and (key / "results.json").is_file():
            seen.add(key)
            r = read_results(key)
            if r is None:
                raise MissingResults(f"{key / 'results.json'} is damaged, of an older reportgen "
                                     "or was changed after training wrote it: run "
                                     f"`reportgen {command}` again (it evaluates the run's best "
                                     "checkpoint again)")
            for split in ("val", "test"):
                r[f"{split}_stat"] = analysis.accuracy([r[f"{split}_acc"]],
                                                       data[f"{split}_images"])
            runs.append(r)
    return runs


def _shared_settings(st, r: dict) -> dict:
    """What the report says of every study at once (the data and split, the network, the
    optimiser, the training schedule; Method and the appendix read them from the first
    study's results), as study `st` behind results `r` ran: its settings (`Study.settings`)
    of those sections. The seeds are not among them: each model's are stated in the report."""
    flat = {k: v for k, v in st.settings(r.get("config") or {}).items()
            if k.split(".", 1)[0] in ("data", "model", "optim", "train") and k != "train.seeds"}
    return {"data content (SHA-256)": (r.get("data") or {}).get("sha256"), **flat}


def _check_same_settings(chosen, views, results: Path) -> None:
    """Every part must describe the same network, trained the same way on the same data.
    `reportgen train --epochs 2` after `reportgen all --epochs 1` left Part 2 sweeping the
    1-epoch network while Part 1 and Method spoke of the 2-epoch one, as "the trained
    network"."""
    first, base = views[0], _shared_settings(chosen[0], views[0].r)
    for st, v in zip(chosen[1:], views[1:]):
        theirs = _shared_settings(st, v.r)
        # A study with a budget of its own (Part 3's shuffle.epochs) trains its own runs for it.
        same_budget = chosen[0].epochs_key == st.epochs_key == "train.epochs"
        for key in sorted((set(base) | set(theirs)) - (set() if same_budget else {"train.epochs"})):
            if base.get(key) != theirs.get(key):
                raise MissingResults(
                    f"{results / (first.name + '.json')} and {results / (v.name + '.json')} were "
                    f"made with different settings ({key} = {shown(base.get(key))} against "
                    f"{shown(theirs.get(key))}), so the parts would describe different networks: "
                    f"run `reportgen {st.cli_name}` again with the settings of `reportgen "
                    f"{chosen[0].cli_name}` (or `reportgen all`)")


def build_context(cfg: ExperimentConfig, results: Path, figures_dir: Path,
                  only: list | None = None) -> dict:
    """Everything the template places: each study's results and facts, the run's config and
    data, the runs behind the numbers. `only`: these studies instead of all registered."""
    from .experiments import studies

    chosen = studies() if only is None else only
    views = []
    for st in chosen:
        res = st.load(results)
        views.append(StudyView(st.name, st.title, st.partial, st.figures, res, st.facts(res)))
    from .figures import source_stamp, stamp_folder, stamp_text

    redraw = "run `reportgen figures` with the same --config and --out first"
    for st, v in zip(chosen, views):
        stamp = source_stamp(figures_dir, st.name)
        try:
            drawn_from = read_text(stamp, 1 << 16)
        except (OSError, UnicodeDecodeError):  # missing, or not what `figures` writes
            drawn_from = None
        if not st.figures or drawn_from == stamp_text(results, v.r):
            continue
        if drawn_from is None and not stamp.exists():
            raise MissingResults(f"the figures of {st.name} are not in {figures_dir}: {redraw}")
        folder, versioned = stamp_folder(drawn_from or "")
        if folder == str(Path(results).resolve()) and not versioned:
            raise MissingResults(
                f"the figures of {st.name} in {figures_dir} were drawn by an older reportgen, "
                f"which did not record the version of {st.results_path(results).name} they "
                f"show: {redraw}")
        if folder == str(Path(results).resolve()):
            raise MissingResults(
                f"the figures of {st.name} in {figures_dir} were drawn from an earlier "
                f"{st.results_path(results).name} ({st.results_path(results)} has changed "
                f"since): {redraw}")
        raise MissingResults(
            f"the figures of {st.name} in {figures_dir} were drawn from "
            f"{folder or 'unknown results'}, not from {results}: {redraw}")
    first = views[0].r
    for v in views:  # every results file must be the one study's, of this experiment
        if v.r.get("config", {}).get("name") not in (None, cfg.name):
            raise MissingResults(f"{results / (v.name + '.json')} belongs to experiment "
                                 f"{v.r['config']['name']!r}: run `reportgen all` again")
    _check_same_settings(chosen, views, results)
    from .experiments.base import changed_settings

    changed = changed_settings(cfg, [(st, v.r) for st, v in zip(chosen, views)])
    run_dirs = [(d, st.cli_name) for st, v in zip(chosen, views) for d in st.runs(v.r)]
    seed_groups: dict[tuple[int, ...], list[str]] = {}
    for st, v in zip(chosen, views):
        for title, seeds in st.seeds(v.r).items():
            titles = seed_groups.setdefault(tuple(seeds), [])
            if title not in titles:
                titles.append(title)
    # The studies' settings as they ran, with this report's own [report] settings: a name
    # first passed to `all` and corrected for `report --author` stayed in the appendix.
    shown_config = {**first["config"], "report": to_dict(cfg.report)}
    versions = next((v.r["versions"] for v in views if "versions" in v.r), None)
    if versions is None:
        from .training import versions as current_versions

        versions = current_versions()
    return {
        "meta": {"title": cfg.report.title, "author": cfg.report.author,
                 "student_number": cfg.report.student_number, "course": cfg.report.course,
                 "date": time.strftime("%d %B %Y").lstrip("0"),
                 # the PDF's own metadata (WeasyPrint reads the <meta> tags)
                 "created": time.strftime("%Y-%m-%d"),
                 "generator": f"reportgen {installed_version() or ''}".strip()},
        "config": shown_config, "config_text": toml_text(shown_config),
        "data": first["data"], "studies": views, "changed": changed,
        # What CIFAR-10 and the practical's split are, against which the Method describes
        # this copy and this split.
        "cifar10": {**CIFAR10_SIZES, "val_size": DataConfig().val_size,
                    "split_seed": DataConfig().split_seed},
        "results": {v.name: v.r for v in views}, "facts": {v.name: v.f for v in views},
        "runs": _runs(run_dirs, first["data"], cfg.out_dir), "versions": versions,
        "seed_groups": sorted(seed_groups.items(), key=lambda kv: len(kv[0])), "results_dir": str(results),
        "user_text": {k: Markup(to_html(v))
                      for k, v in read_user_text(cfg.report.user_text).items()},
        "css": (templates_dir() / "report.css").read_text(encoding="utf-8"),
        "numbering": Numbering(figures_dir), "page_limit": cfg.report.page_limit,
    }


def _outside_template(name: str):
    """A study may keep its partial outside templates/ (a plug-in's, a test's): an absolute path."""
    p = Path(name)
    if p.is_absolute() and p.is_file():
        return p.read_text(encoding="utf-8"), str(p), lambda: True
    return None


def environment():
    import jinja2

    from .optimizers import OPTIMIZERS

    loader = jinja2.ChoiceLoader([jinja2.FileSystemLoader(str(templates_dir())),
                                  jinja2.FunctionLoader(_outside_template)])
    env = jinja2.Environment(loader=loader,
                             autoescape=jinja2.select_autoescape(["html", "j2"]),
                             undefined=jinja2.StrictUndefined, trim_blocks=False)
    env.filters.update(pct=pct, pct1=pct1, pp=pp, deg=deg, thousands=thousands, acc=acc,
                       setting=setting,
                       est=est, stat=stat_cell, diff=diff, change=change, pvalue=_p,
                       fraction=lambda x: "–" if x is None else f"{x:.2f}",
                       duration=duration, and_list=and_list, hardware=hardware,
                       workers=workers,
                       optimizer=lambda n: OPTIMIZERS[n].title if n in OPTIMIZERS else n,
                       precision=lambda p: PRECISIONS.get(p, p),
                       precision_short=lambda p: PRECISIONS_SHORT.get(p, p),
                       split_name=lambda s: SPLIT_NAMES.get(s, s))
    return env


def render_html(context: dict, resolve: bool = True) -> str:
    """Render the report; every study's partial is placed where the main template asks.
    With resolve=False the figure, table and citation tokens stay in (for the LaTeX export,
    which turns them into \\ref and \\cite); they are checked either way."""
    import jinja2

    env = environment()
    numbering: Numbering = context["numbering"]
    try:
        parts = {v.name: env.get_template(v.partial).make_module({**context, "st": v, "r": v.r,
                                                                  "f": v.f})
                 for v in context["studies"]}
        html = env.get_template("report.html.j2").render(**context, parts=parts)
    except jinja2.TemplateNotFound as e:
        raise ReportError(f"template {e.name} is missing from {templates_dir()}: a study's report "
                          "section lives there") from e
    for v in context["studies"]:
        for name in v.figures:
            if name not in numbering.placed["figure"]:
                raise ReportError(f"study {v.name!r} draws figure {name!r} but its report section "
                                  f"({v.partial}) never places it: add "
                                  f"{{% call figure(\"{name}\") %}}...{{% endcall %}}")
    resolved = numbering.resolve(html)  # also checks every reference
    return resolved if resolve else html


PX_TO_CM = 2.54 / 96  # WeasyPrint lays out in CSS pixels


def page_budget(document) -> dict:
    """Pages of the main body of a rendered WeasyPrint document (before the References
    heading; its page counts when the body fills part of it), and its figures and tables by
    height, largest first: (kind, name, height in cm)."""
    pages = len(document.pages)
    for label, (page, _x, y), *_ in _bookmarks(document.make_bookmark_tree()):
        if label.strip() == "References":
            top = document.pages[page]._page_box.content_box_y()
            pages = page + (1 if y > top + 40 else 0)  # a heading at the top starts the page
            break
    items: dict[tuple[str, str], float] = {}
    for i, p in enumerate(document.pages[:pages]):
        for box in p._page_box.descendants():
            el = getattr(box, "element", None)
            if getattr(box, "element_tag", None) == "figure" and el is not None:
                key = ("figure", (el.get("id") or "").removeprefix("fig-"))
            elif getattr(box, "element_tag", None) == "table" and el is not None:
                cap = el.find("caption")
                # a table without a caption is the student's own (a Markdown table)
                key = ("table", cap.get("data-name") if cap is not None else "in your text")
            else:
                continue
            items[key] = max(items.get(key, 0.0), box.border_height() * PX_TO_CM)
    largest = sorted(((k, n, cm) for (k, n), cm in items.items()), key=lambda t: -t[2])
    return {"pages": pages, "largest": largest}


def past_margin(document) -> list[tuple[int, str, float]]:
    """What runs past the right margin of a rendered WeasyPrint document: (page number, what,
    by how many cm), one entry per table, figure or other element, at its widest. A table or
    a line that does not fit is cut off at the paper's edge in the PDF."""
    found: dict[tuple[int, str], float] = {}

    def walk(box, name: str, page: int, right: float) -> None:
        el = getattr(box, "element", None)
        tag = getattr(box, "element_tag", None)
        if tag == "table" and el is not None and el.find("caption") is not None:
            name = f"table {el.find('caption').get('data-name')}"
        elif tag == "figure" and el is not None:
            name = f"figure {(el.get('id') or '').removeprefix('fig-')}"
        elif el is not None and el.get("data-section"):
            name = f"your text in the {el.get('data-section')} section"
        elif name == "" and tag is not None and tag not in ("html", "body", "section"):
            name = tag
        over = box.border_box_x() + box.border_width() - right
        if over > 1 and name:  # a pixel's rounding is not an overflow
            found[(page, name)] = max(found.get((page, name), 0.0), over * PX_TO_CM)
        for child in getattr(box, "children", ()):
            walk(child, name, page, right)

    for i, p in enumerate(document.pages):
        page_box = p._page_box
        walk(page_box, "", i + 1, page_box.content_box_x() + page_box.width)
    return [(page, name, cm) for (page, name), cm in found.items()]


def _bookmarks(tree):
    for label, target, children, *_ in tree:
        yield label, target
        yield from _bookmarks(children)


WEASYPRINT_MIN = 68  # URLFetcher(allowed_protocols=...), as pyproject.toml asks


def pdf_engine():
    """The weasyprint module, or ReportError saying what to install. WeasyPrint needs Pango
    (a system library) as well as its Python package; without either, `import weasyprint`
    raises ImportError or OSError, which ended `reportgen report` (and hours of `reportgen
    all`) in a traceback."""
    try:
        with warnings.catch_warnings():
            # WeasyPrint warns at import about optional system libraries (HarfBuzz-Subset);
            # Python hides such warnings by default, but PYTHONWARNINGS=error turned this one
            # into a traceback before anything ran.
            warnings.simplefilter("ignore", DeprecationWarning)
            import weasyprint
    except (ImportError, OSError) as e:
        first = (str(e).splitlines() or [""])[0][:160]
        raise ReportError(
            f"the PDF is made with WeasyPrint, which cannot be loaded here ({type(e).__name__}: "
            f"{first}): install it (pip install 'weasyprint>={WEASYPRINT_MIN}'; on Windows and "
            "macOS also Pango, as WeasyPrint's installation guide says), or write only the "
            "LaTeX export with --set 'report.formats=[\"tex\"]'") from None
    if not hasattr(weasyprint, "URLFetcher"):
        raise ReportError(
            f"WeasyPrint {getattr(weasyprint, '__version__', '?')} is older than the "
            f"{WEASYPRINT_MIN} the report needs: pip install -U 'weasyprint>={WEASYPRINT_MIN}'")
    return weasyprint


def _embedded_only(weasyprint):
    """WeasyPrint's fetcher for the report: every figure and style is embedded as a data: URL,
    so nothing is ever read from the network or the disk while the PDF is built (an address
    that slipped into the HTML is skipped with WeasyPrint's warning)."""
    return weasyprint.URLFetcher(allowed_protocols=("data",))


def check_strict(cfg: ExperimentConfig, strict: bool) -> None:
    """`--strict` asks for the PDF's main body to be checked against report.page_limit: with no
    limit or no PDF there was nothing to check, and it exited 0 as if the report fitted. Said
    before anything is read, trained or written."""
    if not strict:
        return
    if not cfg.report.page_limit:
        raise ReportError("--strict exits non-zero when the main body exceeds report.page_limit, "
                          "which is 0 (no limit): set the course's limit, e.g. --set "
                          "report.page_limit=6, or drop --strict")
    if "pdf" not in cfg.report.formats:
        raise ReportError(f"--strict checks the PDF's main body against report.page_limit = "
                          f"{cfg.report.page_limit}, but report.formats = "
                          f"{shown(list(cfg.report.formats))} writes no PDF: add --format pdf (the "
                          "LaTeX export's length depends on your course's template), or drop "
                          "--strict")


def build_report(cfg: ExperimentConfig, log=print, strict: bool = False) -> tuple[Path, Path]:
    """Write OUT/report.html and OUT/report.pdf, and with report.formats including "tex" the
    LaTeX export in OUT/latex/; returns the HTML and PDF paths."""
    check_strict(cfg, strict)
    weasyprint = pdf_engine() if "pdf" in cfg.report.formats else None
    results = Path(cfg.out_dir) / cfg.name
    from .experiments import figures_path

    context = build_context(cfg, results, figures_path(cfg))
    if context["changed"]:
        from .experiments.base import changed_note

        log(changed_note(context["changed"], results, "the report shows"))
    if not cfg.report.author:  # after the results are read: not a note before their error
        log("note: the title page has no author; pass --author and --student-number "
            "(or set them under [report] in the experiment file)")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    html_path, pdf_path = out / "report.html", out / "report.pdf"
    # One rendering serves both: the LaTeX export reads its figure and citation tokens, the
    # HTML has them resolved to numbers.
    raw = render_html(context, resolve=False)
    if "tex" in cfg.report.formats:
        from .latex import write_latex

        write_latex(raw, figures_path(cfg), out, log=log)
    if "pdf" not in cfg.report.formats:
        if cfg.report.page_limit:
            log(f"note: report.page_limit = {cfg.report.page_limit} was not checked: it counts "
                "the PDF's main body, and only the LaTeX export was written (add --format pdf)")
        return html_path, pdf_path
    html = context["numbering"].resolve(raw)
    document = weasyprint.HTML(string=html, base_url=str(out),
                               url_fetcher=_embedded_only(weasyprint)).render()
    # Tagged (headings, paragraphs, tables, figures with their alt text as a structure tree):
    # a screen reader or a reflowing viewer can follow it. 18 KiB more, no slower.
    pdf = document.write_pdf(pdf_tags=True)
    if not pdf or not pdf.startswith(b"%PDF"):
        raise ReportError("WeasyPrint produced no PDF; the previous report is unchanged")
    # Written together: both flushed under temporary names before either is renamed, so a
    # full disk never leaves a new report.html beside the old report.pdf.
    atomic_write_all({html_path: lambda tmp: tmp.write_text(html, encoding="utf-8"),
                      pdf_path: lambda tmp: tmp.write_bytes(pdf)})
    budget = page_budget(document)
    log(f"report: {html_path} and {pdf_path} ({len(pdf) / 1024:.0f} KiB, "
        f"{len(document.pages)} pages, {budget['pages']} of them the main body)")
    for page, name, cm in past_margin(document):
        # Said so that no one hands it in unseen. In the student's text it may be what they
        # wrote (a formula without an operator to break at), so they are told what to change.
        what = ("break up what runs wide there (a formula with no operator to break at, a "
                "table of many columns)" if name.startswith("your text")
                else "a layout bug in reportgen, please report it (the LaTeX export, "
                "report.formats = [\"tex\"], scales wide tables to the page)")
        log(f"note: {name} on page {page} runs {cm:.1f} cm past the right margin and is cut "
            f"off in the PDF: {what}")
    limit = cfg.report.page_limit
    if limit and budget["pages"] > limit:
        largest = ", ".join(f"{kind} {name} ({cm:.1f} cm)" for kind, name, cm in budget["largest"][:3])
        msg = (f"the main body has {budget['pages']} pages, {budget['pages'] - limit} over "
               f"report.page_limit = {limit}; the largest items: {largest}")
        if strict:
            raise ReportError(msg + " (the report was written; without --strict this is a note)")
        log(f"note: {msg}")
    return html_path, pdf_path
