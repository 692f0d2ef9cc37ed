"""The report a person holds: `reportgen all` on tiny data, then the PDF itself."""
import datetime
import json
import os
import re
import shutil
from html import unescape

import pytest
from typer.testing import CliRunner

from reportgen.cli import app
from reportgen.report import acc

from helpers import build_wheel, overrides_to_args, tiny_overrides, write_image_folder

runner = CliRunner()
FIGURES = ("part1_learning_curves", "part1_augmentation", "rotation_accuracy",
           "rotation_per_class", "rotation_examples", "shuffle_learning_curves",
           "shuffle_accuracy", "shuffle_example")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    folder = write_image_folder(tmp / "data")
    out = tmp / "out"
    user = tmp / "mine.toml"
    user.write_text('discussion = """My own observation: the frog class is *green*.\n\n'
                    'A second paragraph of mine.\n\n- first point\n- second point with '
                    '$\\\\alpha^2 \\\\leq 1$\n\n<script>alert(1)</script>"""\n'
                    'abstract = "Abstract words of my own."\n')
    overrides = {**tiny_overrides(folder, out), "report.user_text": str(user)}
    r = runner.invoke(app, ["all", *overrides_to_args(overrides), "--author", "Ada Lovelace",
                            "--student-number", "s1234567"])
    assert r.exit_code == 0, r.output
    pdf = out / "report.pdf"
    assert r.output.strip().splitlines()[-1] == str(pdf)
    from pypdf import PdfReader  # here, not at the top: the GPU machine collects without it

    text = "\n".join(p.extract_text() for p in PdfReader(pdf).pages)
    return {"out": out, "overrides": overrides, "pdf": pdf, "text": re.sub(r"\s+", " ", text),
            "html": (out / "report.html").read_text(), "output": r.output}


@pytest.mark.slow
def test_pdf_has_sections_and_title_fields(built):
    text = built["text"]
    for heading in ("Abstract", "1 Introduction", "2 Method", "3 Results", "4 Discussion",
                    "5 Conclusion", "References", "Configuration, software and run times"):
        assert heading in text, heading
    assert "Ada Lovelace" in text and "s1234567" in text
    assert "Identity Mappings in Deep Residual Networks" in text
    # The PDF's own metadata (it had the title alone)
    from importlib.metadata import version

    from pypdf import PdfReader

    info = PdfReader(built["pdf"]).metadata
    assert (info.title, info.author, info.creator) == (
        "Convolutional Neural Networks on CIFAR-10", "Ada Lovelace",
        f"reportgen {version('reportgen')}")
    assert info.creation_date.date() == datetime.date.today()
    # Every figure, table and citation number links to an element of the report.
    html = built["html"]
    targets = set(re.findall(r'href="#([^"]+)"', html))
    assert len(targets) > len(FIGURES) and targets <= set(re.findall(r' id="([^"]+)"', html))
    # Tagged for accessibility: a structure tree of headings, paragraphs, tables and figures.
    root = PdfReader(built["pdf"]).trailer["/Root"]
    assert root["/MarkInfo"]["/Marked"] and "/StructTreeRoot" in root
    assert "Learning Multiple Layers of Features from Tiny Images" in text


@pytest.mark.slow
def test_pdf_has_all_figures(built):
    import hashlib

    from pypdf import PdfReader

    reader = PdfReader(built["pdf"])
    # WeasyPrint shares one resource dictionary across pages: count distinct images.
    images = {hashlib.sha256(img.data).hexdigest() for page in reader.pages for img in page.images}
    assert len(images) == len(FIGURES)
    for n in range(1, len(FIGURES) + 1):
        assert f"Figure {n}." in built["text"]
    assert "Table 1." in built["text"] and "Table 3." in built["text"]


@pytest.mark.slow
def test_pdf_numbers_equal_results(built):
    from reportgen.experiments import get_study

    text, res_dir = built["text"], built["out"] / "practical2"
    part1 = get_study("part1").load(res_dir)
    f1 = get_study("part1").facts(part1)
    assert acc(f1["test"]) in text and acc(f1["val"]) in text
    assert f"{part1['parameters']:,}" in text
    rot = get_study("rotation").load(res_dir)
    fr = get_study("rotation").facts(rot)
    for label, mf in fr["models"].items():
        assert acc(mf["val"]["at"][0.0]) in text and acc(mf["val"]["at"][180.0]) in text
        assert mf["val"]["at"][0.0]["mean"] == pytest.approx(rot["models"][label]["val"]["accuracy"][0])
    shuf = get_study("shuffle").load(res_dir)
    fs = get_study("shuffle").facts(shuf)
    for label, run in shuf["runs"].items():
        assert acc(fs["runs"][label]["test"]) in text and acc(fs["runs"][label]["val"]) in text
        assert fs["runs"][label]["test"]["mean"] == pytest.approx(run["test_acc"])


@pytest.mark.slow
def test_every_accuracy_in_the_pdf_carries_its_interval(built):
    """Every percentage with a decimal (accuracies) is followed by an interval: "± h" (seeds)
    or "[lo, hi]" (sampling); percentage points are written as "points", not "%"."""
    body = built["text"]
    found = list(re.finditer(r"\d+\.\d%", body))
    assert len(found) > 20
    for m in found:
        after = body[m.end():m.end() + 3]
        assert after.startswith((" [", " ±")), body[max(0, m.start() - 80):m.end() + 20]


@pytest.mark.slow
def test_user_text_is_placed_as_written(built):
    text = built["text"]
    mine = text.index("My own observation: the frog class is green.")
    assert text.index("4 Discussion") < mine < text.index("5 Conclusion")
    assert "A second paragraph of mine." in text
    assert text.index("Abstract words of my own.") < text.index("1 Introduction")


@pytest.mark.slow
def test_user_markdown_renders_and_html_is_escaped(built):
    html = (built["out"] / "report.html").read_text()
    assert "class is <em>green</em>." in html
    assert "<li>first point</li>" in html and "α<sup>2</sup>" in html
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert(1)</script>" in built["text"]  # printed in the PDF as text


@pytest.mark.slow
def test_method_names_the_data_set_not_this_machine(built):
    text, res = built["text"], json.loads((built["out"] / "practical2" / "part1.json").read_text())
    method = text[text.index("2 Method"):text.index("3 Results")]
    data = res["data"]
    assert "CIFAR-10" in method and "an image-folder copy of PNG files" in method
    assert data["sha256"] in method and len(data["sha256"]) == 16
    folder = built["overrides"]["data.source"]
    assert folder not in method and "pytest-of" not in method and "/tmp" not in method
    appendix = text[text.index("Configuration, software and run times"):]
    assert "read from" in appendix
    # The runs behind the numbers are listed with commas between them, so no name holds one.
    seeds = method[method.index("Seeds behind the numbers:"):]
    assert "ResNet on original pixels, ResNet on shuffled pixels, MLP on original pixels and " \
           "MLP on shuffled pixels" in seeds and ", original pixels" not in seeds


@pytest.mark.slow
def test_html_is_written_next_to_pdf(built):
    html = (built["out"] / "report.html").read_text()
    assert html.count("<figure") == len(FIGURES) and "data:image/png;base64," in html
    # The Statistics paragraph names the interval beside McNemar's test, and which decides.
    words = " ".join(html.split())
    assert "McNemar's exact test [" in words
    assert "with Newcombe's hybrid score interval for paired proportions [" in words
    assert "the interval can exclude 0 while the exact test does not; the test decides" in words
    assert "is Bonferroni-adjusted for that choice: its p-value is multiplied by the number" in words


def test_a_stat_cell_breaks_only_before_its_interval():
    from reportgen.report import stat_cell

    assert stat_cell("35.0% ± 63.5 [13.7, 64.6]") == "35.0%\xa0±\xa063.5 [13.7,\xa064.6]"
    assert stat_cell("90°: 5.0% [0.5, 34.5]") == "90°: 5.0% [0.5,\xa034.5]"
    assert stat_cell("<b>") == "&lt;b&gt;"  # escaped like any other text


@pytest.mark.parametrize("cell_class, fits", [("num stat", True), ("num", False)])
def test_a_wide_table_of_intervals_fits_the_page_and_one_that_does_not_is_named(cell_class, fits):
    """Part 2's table with six models and seeds: its cells take two lines rather than run past
    the margin; a table that cannot (cells kept on one line) is named by past_margin, whose
    note build_report prints."""
    import weasyprint  # here: the GPU machine collects without it

    from reportgen.report import environment, past_margin
    from reportgen.resources import templates_dir

    cell = environment().from_string("{{ v | stat }}").render(v="35.0% ± 190.6 [13.7, 64.6]")
    row = "<tr><td>worst angle</td>" + f'<td class="{cell_class}">{cell}</td>' * 6 + "</tr>"
    html = (f"<html><head><style>{(templates_dir() / 'report.css').read_text()}</style></head>"
            f'<body><table class="compact"><caption data-name="rotation">Accuracy</caption>'
            f"{row * 3}</table></body></html>")
    over = past_margin(weasyprint.HTML(string=html).render())
    assert (over == []) == fits, over
    if not fits:
        assert [(page, name) for page, name, _ in over] == [(1, "table rotation")]


def test_a_run_table_longer_than_a_page_starts_under_its_caption():
    """Tables are kept whole on a page; the appendix's run table with 10 seeds (60 rows) was
    then pushed onto the next page and left its caption alone on an otherwise blank page. The
    template marks a run table of more than 40 rows breakable (its header repeats)."""
    import io

    import weasyprint
    from pypdf import PdfReader

    from reportgen.resources import templates_dir

    rows = "".join(f"<tr><td>row-{k}</td><td>{k}</td></tr>" for k in range(90))
    html = (f"<html><head><style>{(templates_dir() / 'report.css').read_text()}</style></head>"
            "<body>" + "<p>Text before the table.</p>" * 12 + '<table class="compact breakable">'
            '<caption data-name="runs">Runs caption</caption><thead><tr><th>run</th><th>seed'
            f"</th></tr></thead><tbody>{rows}</tbody></table></body></html>")
    pages = [p.extract_text() for p in
             PdfReader(io.BytesIO(weasyprint.HTML(string=html).write_pdf())).pages]
    caption = next(k for k, text in enumerate(pages) if "Runs caption" in text)
    first = next(k for k, text in enumerate(pages) if "row-0" in text)
    assert caption == first, (caption, first)  # without "breakable", on different pages
    assert "run" in pages[first + 1] and "row-89" in "".join(pages[first:])  # header again


def test_the_students_long_lines_wrap_inside_the_margin():
    """A code block with a 400-character line, a long URL, long inline code, long math and a
    wide table in the student's text: before, the code block ran 62 cm past the margin.
    Math breaks only after an operator at its top level, as TeX breaks it."""
    import weasyprint

    from reportgen.report import past_margin
    from reportgen.resources import templates_dir
    from reportgen.usertext import to_html

    terms = "+".join(f"x_{{{i}}}" for i in range(60))
    text = ("My code:\n\n```\nx = " + "+".join(["some_long_identifier"] * 20) + "\n```\n\n"
            "See https://example.com/" + "a" * 200 + " and `" + "inline_code_" * 20 + "`.\n\n"
            # inline and display math ran 29 cm past the margin (unbreakable); a table of
            # 14 columns ran 7.9 cm
            f"A sum ${terms}$ inline.\n\n$$\\sum_i p_i + {terms} = 1$$\n\n"
            + "|" + " wide column text |" * 14 + "\n|" + "---|" * 14 + "\n|" + " cell |" * 14)
    css = (templates_dir() / "report.css").read_text()

    def over(body: str) -> list:
        html = f"<html><head><style>{css}</style></head><body>{body}</body></html>"
        return past_margin(weasyprint.HTML(string=html).render())

    body = f'<div class="user-text" data-section="discussion">{to_html(text)}</div>'
    assert over(body) == []
    assert "<i>x</i><sub>1</sub>+<wbr><i>x</i><sub>2</sub>" in body
    assert "<sub><i>x</i>+<wbr>" not in to_html("$a_{x+y}$")  # not inside a group
    # Where something does not fit, the note names the student's section.
    wide = body.replace("<pre>", '<pre style="white-space: pre">')
    assert [name for _, name, _ in over(wide)] == ["your text in the discussion section"]


@pytest.mark.slow
def test_nothing_in_the_report_runs_past_the_margin(built):
    assert "past the right margin" not in built["output"]


@pytest.mark.slow
def test_figures_command_redraws_everything(built):
    figs = built["out"] / "figures" / "practical2"
    shutil.rmtree(figs)
    r = runner.invoke(app, ["figures", *overrides_to_args(built["overrides"])])
    assert r.exit_code == 0, r.output
    for name in FIGURES:
        assert (figs / f"{name}.png").is_file() and (figs / f"{name}.svg").is_file(), name


@pytest.mark.slow
def test_the_report_names_settings_changed_since_its_results(built):
    """It shows the results as they were made; a setting changed since is named."""
    assert "were made with other settings" not in built["output"]
    # (The author as the fixture's: the tests after this one read the report it rewrites.)
    r = runner.invoke(app, ["report", *overrides_to_args({**built["overrides"],
                                                          "train.epochs": 3}),
                            "--author", "Ada Lovelace", "--student-number", "s1234567"])
    assert r.exit_code == 0, r.output
    assert ("(train.epochs = 1, not 3): the report shows them as they were made (for results "
            "of the settings given now, run `reportgen all` with them") in r.output


@pytest.mark.slow
def test_failed_build_keeps_the_good_report(built):
    before = built["pdf"].read_bytes()
    missing = built["out"] / "figures" / "practical2" / "rotation_accuracy.png"
    keep = missing.read_bytes()
    missing.unlink()
    try:
        r = runner.invoke(app, ["report", *overrides_to_args(built["overrides"])])
        assert r.exit_code == 2
        assert "rotation_accuracy.png is missing: run `reportgen figures`" in r.output
        assert built["pdf"].read_bytes() == before
    finally:
        missing.write_bytes(keep)


@pytest.mark.slow
def test_a_disk_full_while_writing_keeps_the_html_and_the_pdf_together(built, monkeypatch):
    """The HTML and the PDF are flushed before either is renamed: a full disk on the PDF left
    a new report.html beside the old report.pdf."""
    import errno

    import reportgen.files as files

    html, pdf = built["out"] / "report.html", built["pdf"]
    before = (html.read_bytes(), pdf.read_bytes())
    real, calls = files.os.fsync, []

    def full_on_the_second(fd):  # the PDF's, after the HTML's went through
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(files.os, "fsync", full_on_the_second)
    r = runner.invoke(app, ["report", *overrides_to_args(built["overrides"]), "--title", "New"])
    assert r.exit_code == 2 and "No space left on device" in r.output, r.output
    assert (html.read_bytes(), pdf.read_bytes()) == before
    assert sorted(p.name for p in built["out"].glob(".report*")) == []  # no temporary left


@pytest.mark.slow
def test_an_installed_wheel_writes_the_report_from_another_folder(built, tmp_path):
    """`pip install .` (not -e) has no templates/ beside the package: before, `reportgen
    report` failed there on the missing templates/report.css."""
    import subprocess
    import sys
    import zipfile

    site = tmp_path / "site"
    with zipfile.ZipFile(build_wheel(tmp_path)) as z:
        z.extractall(site)
    out = tmp_path / "copy"
    shutil.copytree(built["out"], out,
                    ignore=shutil.ignore_patterns("report.*", "latex", "figures"))
    overrides = {**built["overrides"], "out_dir": str(out), "figures_dir": str(out / "figures")}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for command in ("figures", "report"):
        r = subprocess.run([sys.executable, "-m", "reportgen", command,
                            *overrides_to_args(overrides), "--set", 'report.author="Ada Lovelace"',
                            "--set", 'report.student_number="s1234567"'], cwd=elsewhere, capture_output=True,
                           text=True, env={**os.environ, "PYTHONPATH": str(site)})
        assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == str(out / "report.pdf")
    # The same report, but for the folder it reads and the figures' bytes (drawn anew).
    def text(html: str) -> str:
        html = html.replace(str(out), "OUT").replace(str(built["out"]), "OUT")
        return re.sub(r"base64,[A-Za-z0-9+/=]+", "", html)
    assert text((out / "report.html").read_text()) == text(built["html"])


@pytest.mark.slow
def test_the_appendix_shows_this_reports_settings(built):
    """The appendix's settings are the studies' as they ran, with the [report] settings of
    the report itself: a placeholder name passed to `all` and corrected with `report
    --author` stayed in the appendix."""
    import html as html_lib

    def config_block() -> str:
        page = (built["out"] / "report.html").read_text()
        return html_lib.unescape(re.search(r'<pre class="config">(.*?)</pre>', page, re.S)[1])

    assert 'author = "Ada Lovelace"' in config_block()
    try:
        r = runner.invoke(app, ["report", *overrides_to_args(built["overrides"]), "--author",
                                "Grace Hopper", "--title", "Another title"])
        assert r.exit_code == 0, r.output
        block = config_block()
        assert 'author = "Grace Hopper"' in block and 'title = "Another title"' in block
        assert "Ada Lovelace" not in block and 's1234567' not in block
        assert "epochs = 1" in block  # the studies' own settings are still those they ran with
    finally:
        r = runner.invoke(app, ["report", *overrides_to_args(built["overrides"]), "--author",
                                "Ada Lovelace", "--student-number", "s1234567"])
        assert r.exit_code == 0, r.output


def test_missing_results_name_the_command(tiny):
    overrides, out = tiny
    r = runner.invoke(app, ["report", *overrides_to_args(overrides)])
    assert r.exit_code == 2 and "part1.json is missing: run `reportgen train` first" in r.output
    r = runner.invoke(app, ["figures", *overrides_to_args(overrides)])
    assert r.exit_code == 2 and "no figures could be drawn" in r.output
    assert "run `reportgen train` first" in r.output and "run `reportgen rotation` first" in r.output


def test_bad_user_text_fails_before_work(tiny, tmp_path):
    overrides, out = tiny
    f = tmp_path / "t.toml"
    f.write_text('summary = "x"\n')
    r = runner.invoke(app, ["all", *overrides_to_args({**overrides, "report.user_text": str(f)})])
    assert r.exit_code == 2 and "unknown section 'summary'" in r.output
    assert not (out / "runs").exists()


@pytest.mark.slow
def test_a_report_shows_only_its_own_figures(built, tmp_path):
    """Another output folder with the same experiment must not borrow these figures."""
    import shutil as sh

    other = tmp_path / "other"
    sh.copytree(built["out"] / "practical2", other / "practical2")
    overrides = {**built["overrides"], "out_dir": str(other)}  # figures_dir is still built's
    r = runner.invoke(app, ["report", *overrides_to_args(overrides)])
    assert r.exit_code == 2 and "were drawn from" in r.output and "reportgen figures" in r.output
    assert not (other / "report.pdf").exists()
    # No figures at all: said so, not "drawn from unknown results".
    r = runner.invoke(app, ["report", *overrides_to_args(
        {**overrides, "figures_dir": str(tmp_path / "none")})])
    assert r.exit_code == 2, r.output
    assert (f"the figures of part1 are not in {tmp_path / 'none' / 'practical2'}: run "
            "`reportgen figures` with the same --config and --out first") in r.output


@pytest.mark.slow
def test_a_report_never_shows_figures_of_an_earlier_version_of_its_results(built, tmp_path):
    """`reportgen train --seeds 2` with its figures drawn elsewhere rewrote part1.json; the
    report then placed Part 1's figures of one seed beside the numbers of two."""
    import shutil as sh

    other = tmp_path / "other"
    sh.copytree(built["out"], other)
    overrides = {**built["overrides"], "out_dir": str(other), "figures_dir": str(tmp_path / "f")}
    assert runner.invoke(app, ["figures", *overrides_to_args(overrides)]).exit_code == 0
    r = runner.invoke(app, ["train", *overrides_to_args(
        {**overrides, "figures_dir": str(tmp_path / "elsewhere")}), "--seeds", "2"])
    assert r.exit_code == 0 and "mean of 2 seeds" in r.output, r.output
    (other / "report.pdf").unlink()
    r = runner.invoke(app, ["report", *overrides_to_args(overrides)])
    assert r.exit_code == 2 and "were drawn from an earlier part1.json" in r.output, r.output
    assert not (other / "report.pdf").exists()
    assert runner.invoke(app, ["figures", *overrides_to_args(overrides)]).exit_code == 0
    r = runner.invoke(app, ["report", *overrides_to_args(overrides)])
    assert r.exit_code == 0 and (other / "report.pdf").is_file(), r.output


def test_durations_read_at_every_scale():
    from reportgen.report import duration

    assert [duration(s) for s in (0.01, 0.44, 9.96, 75, 3 * 3600 + 59, 99 * 3600 + 61,
                                  100 * 3600, 34139 * 3600 + 45 * 60)] == [
        "under 0.1 s", "0.4 s", "10 s", "1 min 15 s", "3 h 0 min", "99 h 1 min", "4 d 4 h", "1,422 d 11 h"]


def test_a_significant_p_value_never_prints_as_the_threshold():
    """Part 3 of a tiny run read "The CNN loses more than the MLP (...; p = 0.05)": p was
    0.0497, significant, but printed as the threshold a reader checks it against."""
    from reportgen.report import _p

    assert [_p(p) for p in (0.0002, 0.0042, 0.0123, 0.0497, 0.04999, 0.05, 0.0512, 0.49)] == [
        "p < 0.001", "p = 0.004", "p = 0.01", "p = 0.0497", "p < 0.05", "p = 0.05", "p = 0.05",
        "p = 0.49"]


def test_one_epoch_curves_show_their_points_on_whole_epochs(tiny, monkeypatch):
    """A line through a single point draws nothing, and an axis around epoch 1 alone would
    be labelled 0.95 ... 1.05: every curve of a one-epoch run is drawn as markers, and the
    epoch axes carry whole epochs only."""
    from reportgen import style

    overrides, _ = tiny
    for stage in ("train", "shuffle"):
        r = runner.invoke(app, [stage, *overrides_to_args(overrides)])
        assert r.exit_code == 0, r.output
    drawn = {}
    real_save = style.save
    monkeypatch.setattr(style, "save", lambda fig, path: (drawn.__setitem__(path.name, fig),
                                                          real_save(fig, path))[1])
    r = runner.invoke(app, ["figures", *overrides_to_args(overrides)])
    assert r.exit_code == 0, r.output
    # Part 1: training and validation accuracy and loss, and the learning rate; Part 3:
    # training and validation accuracy of four runs.
    for name, count in (("part1_learning_curves", 5), ("shuffle_learning_curves", 8)):
        fig = drawn[name]
        lines = [ln for ax in fig.axes for ln in ax.get_lines()]
        assert len(lines) == count
        assert all(len(ln.get_xdata()) == 1 and ln.get_marker() not in ("None", "", None)
                   for ln in lines)
        fig.canvas.draw()
        for ax in fig.axes:
            lo, hi = ax.get_xlim()
            assert [t for t in ax.get_xticks() if lo <= t <= hi] == [1.0]
    # Part 3's shuffled curves come last and lighter: the MLP's two curves coincide, and a
    # dashed line of the same colour on top of the solid one vanished into it.
    for ax in drawn["shuffle_learning_curves"].axes:
        labels = [ln.get_label() for ln in ax.get_lines()]
        assert [lab.endswith("shuffled") for lab in labels] == [False, False, True, True]
        colour = {lab: ln.get_color() for lab, ln in zip(labels, ax.get_lines())}
        for model in ("ResNet", "MLP"):
            assert colour[f"{model}, shuffled"] == style.lighter(colour[f"{model}, original"])
            assert colour[f"{model}, shuffled"] != colour[f"{model}, original"]


@pytest.mark.parametrize("epochs", [1, 2])
def test_the_augmentation_caption_names_every_transform(tiny, epochs):
    """A run trained with random rotations says so under its augmentation grid too; where
    several validations chose the checkpoint, the results say the validation number reads
    high and the test number is the one to quote."""
    from reportgen.experiments import get_study
    from reportgen.files import read_json
    from reportgen.report import Numbering, environment

    overrides, out = tiny
    overrides = {**overrides, "train.augment.rotate_degrees": 30.0, "train.epochs": epochs}
    for stage in ("train", "figures"):
        r = runner.invoke(app, [stage, *overrides_to_args(overrides)])
        assert r.exit_code == 0, r.output
    st = get_study("part1")
    results = read_json(out / "practical2" / "part1.json", "train")
    module = environment().get_template(st.partial).make_module(
        {"st": st, "r": results, "f": st.facts(results), "numbering": Numbering(out / "figures" / "practical2"),
         "page_limit": None})
    html = " ".join(str(module.method()).split())
    assert ("as the network sees them: random horizontal flip, random resized crop and random "
            "rotation in ±30°.") in html
    words = " ".join(str(module.results()).split())
    assert ("The validation images chose the checkpoint among 2 validations, so their accuracy "
            "reads slightly high" in words) == (epochs == 2)


@pytest.mark.parametrize("value, text", [
    (0.1, "0.1"), (0.0001, "0.0001"), (1e-05, "1 × 10<sup>−5</sup>"),
    (2.5e-07, "2.5 × 10<sup>−7</sup>"), (0.0, "0"), (1.0, "1"), (128, "128"),
    (1e20, "1 × 10<sup>20</sup>"),
    ("<b>", "&lt;b&gt;")])  # a forged results file's string is text, not markup
def test_settings_are_printed_as_a_paper_prints_them(value, text):
    from reportgen.report import setting

    assert str(setting(value)) == text


@pytest.mark.parametrize("value, text", [
    (0, "0°"), (10.0, "10°"), (-30, "−30°"), (12.5, "12.5°"), (359.999, "359.999°"),
    (1e-05, "1 × 10<sup>−5</sup>°"), (12.3456789, "12.3457°"), ("<b>", "&lt;b&gt;")])
def test_angles_are_printed_as_a_paper_prints_them(value, text):
    """Before, an augmentation of 0.00001° was "±1e-05°" and a negative angle had a hyphen."""
    from reportgen.report import deg

    assert str(deg(value)) == text


def test_figure_table_and_citation_numbers_link_to_what_they_name(tmp_path):
    """In the PDF "Table 2" and "[1]" are links to the table and the reference, as \\ref and
    \\cite are in the LaTeX export; before, plain numbers."""
    from reportgen.report import Numbering

    n = Numbering(tmp_path)
    n.table("runs")
    n.table("shuffle")
    html = n.resolve(f"see Table {n.ref('table', 'shuffle')} and "
                     f"{n.cite('krizhevsky2009', 'he2016deep')}, then {n.cite('he2016deep')}. "
                     f"{n.bibliography()}")
    assert html.startswith('see Table <a class="xref" href="#tab-shuffle">2</a> and '
                           '[<a class="xref" href="#ref-1">1</a>, '
                           '<a class="xref" href="#ref-2">2</a>], then '
                           '[<a class="xref" href="#ref-2">2</a>].')
    assert '<li id="ref-1">A. Krizhevsky.' in html and '<li id="ref-2">K. He' in html


def test_the_network_is_called_the_practicals_only_when_it_is(tiny):
    """The practical's network is its pre-activation ResNet with num_blocks [2, 2, 3] and
    c_hidden [16, 24, 32]; before, the report called any trained network "the practical's"."""
    from reportgen.experiments import get_study
    from reportgen.files import read_json
    from reportgen.report import Numbering, environment

    overrides, out = tiny
    r = runner.invoke(app, ["train", *overrides_to_args(overrides)])
    assert r.exit_code == 0, r.output
    st = get_study("part1")
    results = read_json(out / "practical2" / "part1.json", "train")

    def module(res: dict):
        return environment().get_template(st.partial).make_module(
            {"st": st, "r": res, "f": st.facts(res),
             "numbering": Numbering(out / "figures" / "practical2"), "page_limit": None})

    def network(info: dict) -> str:
        res = {**results, "model_info": {**results["model_info"], **info}}
        words = " ".join(unescape(re.sub(r"<[^>]+>", "", str(module(res).method()))).split())
        return words[words.index("The network is"):].split(". ")[0]

    # "small" as CIFAR-10 networks go, not for a network of any size.
    assert str(module(results).abstract()).startswith("We train a small pre-activation ResNet (")
    assert str(module({**results, "parameters": 23_500_000}).abstract()).startswith(
        "We train a pre-activation ResNet (23,500,000 parameters)")

    practical = {"num_classes": 10, "num_blocks": [2, 2, 3], "c_hidden": [16, 24, 32]}
    assert network({}) == ("The network is a pre-activation ResNet \x01cite:he2016identity,"
                           "ioffe2015\x02, the practical's architecture at another size (the "
                           "practical uses num blocks [2, 2, 3] and c hidden [16, 24, 32])")
    assert network({"params": practical}).startswith(
        "The network is the practical's pre-activation ResNet \x01cite:")
    assert network({"name": "resnet", "description": "ResNet with original residual blocks",
                    "params": practical}).startswith(
        "The network is a ResNet with original residual blocks \x01cite:")

    # Table 1's caption names the axes of the model's outputs: a p4 network's have rotations.
    def axes(info: dict) -> str:
        res = {**results, "model_info": {**results["model_info"], **info}}
        if not info:
            del res["model_info"]["axes"]  # a results file from before the field
        return re.search(r"Output shapes are ([^.]*)\.", str(module(res).method())).group(1)

    assert results["model_info"]["axes"] == "channels × height × width" == axes({})
    assert axes({"axes": "channels × rotations × height × width"}) == (
        "channels × rotations × height × width")

    # Settings as a paper prints them, not as Python does ("learning rate 1e-05", "0.0").
    optim = {**results["optimizer"], "lr": 1e-5, "weight_decay": 0.0, "momentum": 0.9}
    words = " ".join(str(module({**results, "optimizer": optim}).method()).split())
    assert ("with learning rate 1 × 10<sup>−5</sup>, momentum 0.9 and weight decay 0, batch size"
            in words)


@pytest.mark.slow
def test_parts_made_with_different_settings_are_refused_in_one_line(tiny):
    """`reportgen train --epochs 2` after a 1-epoch `reportgen all`: Part 1 and Method spoke
    of the 2-epoch network, while Part 2 had swept the 1-epoch one as "the trained network".
    Part 3's own budget (shuffle.epochs), the seeds and how runs executed may differ."""
    overrides, out = tiny
    r = runner.invoke(app, ["all", *overrides_to_args(overrides)])
    assert r.exit_code == 0, r.output
    pdf = (out / "report.pdf").read_bytes()
    r = runner.invoke(app, ["train", *overrides_to_args({**overrides, "train.epochs": 2})])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["report", *overrides_to_args(overrides)])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert (f"error: {out / 'practical2' / 'part1.json'} and {out / 'practical2' / 'rotation.json'}"
            " were made with different settings (train.epochs = 2 against 1), so the parts "
            "would describe different networks: run `reportgen rotation` again with the "
            "settings of `reportgen train` (or `reportgen all`)") in r.output
    assert (out / "report.pdf").read_bytes() == pdf
    # As the error says; the shuffle study keeps its 1-epoch budget, and an execution-only
    # setting (the evaluation batch) differs too.
    r = runner.invoke(app, ["rotation", *overrides_to_args(
        {**overrides, "train.epochs": 2, "train.eval_batch_size": 32})])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["report", *overrides_to_args(overrides)])
    assert r.exit_code == 0, r.output


def test_the_augmentation_paragraph_says_what_was_done(tiny):
    """The Method describes each transform the run used and no other: a crop whose smallest
    area is the whole image is no crop (not "a random box covering 100–100% of its area"), a
    range whose ends agree is one value, and a run with nothing on says it was not augmented."""
    import copy

    from reportgen.experiments import get_study
    from reportgen.files import read_json
    from reportgen.report import Numbering, environment

    overrides, out = tiny
    r = runner.invoke(app, ["train", *overrides_to_args(overrides)])
    assert r.exit_code == 0, r.output
    st = get_study("part1")
    trained = read_json(out / "practical2" / "part1.json", "train")

    def method(optimizer=None, epochs=1, **augment):
        results = copy.deepcopy(trained)
        results["train"]["augment"].update(augment)
        results["optimizer"].update(optimizer or {})
        results["epochs"] = epochs
        module = environment().get_template(st.partial).make_module(
            {"st": st, "r": results, "f": st.facts(results),
             "numbering": Numbering(out / "figures" / "practical2"), "page_limit": None})
        return " ".join(str(module.method()).split())

    html = method(flip=True, crop_scale=[0.8, 1.0], crop_ratio=[0.9, 1.1])
    assert ("Each training image is flipped horizontally with probability 0.5 and cropped to a "
            "random box covering 80–100% of its area with aspect ratio 0.9–1.1, resized back to "
            "32×32 with bilinear interpolation (") in html
    html = method(flip=False, crop_scale=[0.5, 0.5], crop_ratio=[1.0, 1.0], rotate_degrees=45.0)
    assert ("cropped to a random box covering 50% of its area with aspect ratio 1.0, resized back "
            "to 32×32 with bilinear interpolation and rotated by a random angle in ±45°") in html
    assert "flipped" not in html
    html = method(flip=True, crop_scale=[1.0, 1.0], crop_ratio=[0.9, 1.1])
    assert "Each training image is flipped horizontally with probability 0.5 (" in html
    assert "crop" not in html.replace("no crop", "") and "as the network sees them: random horizontal flip." in html
    html = method(flip=False, crop_scale=[1.0, 1.0], rotate_degrees=0.0)
    assert "The training images are not augmented" in html
    assert "six views of each, as the network sees them: no augmentation." in html
    assert "Each training image" not in html
    # The schedule likewise: a drop by a factor of 1 is no drop.
    for gamma, words in ((0.5, "multiplies the learning rate by 0.5 after epoch 1,"),
                         (1.0, "and keeps the learning rate constant, for 2 epochs")):
        assert words in method(optimizer={"milestones": [1], "gamma": gamma}, epochs=2)


def test_the_device_line_says_how_many_devices_ddp_used():
    from reportgen.report import hardware, workers

    one = {"device": "AMD EPYC (1 threads)", "accelerator": "cpu", "devices": 1}
    assert hardware(one) == "AMD EPYC (1 thread)"  # results written before "1 thread"
    assert hardware({**one, "devices": 2}) == ("2 processes with Lightning's DDP, each on AMD "
                                               "EPYC (1 thread)")
    gpu = {"device": "NVIDIA H100", "accelerator": "gpu", "devices": 4}
    assert hardware(gpu) == "4 × NVIDIA H100 with Lightning's DDP" and workers(gpu) == "GPUs"
    assert hardware({"device": "NVIDIA H100"}) == "NVIDIA H100"  # no devices: one


def test_a_figure_reference_never_leaves_a_word_alone_on_a_line(tmp_path):
    """WeasyPrint broke a justified line early before "Figure&nbsp;<a>2</a>": the quick
    preset's Part 1 paragraph printed "over" alone on a line. This is that paragraph, with
    the report's stylesheet and its own reference macro."""
    import io

    from pypdf import PdfReader

    from reportgen.report import Numbering, environment, pdf_engine, templates_dir

    weasyprint = pdf_engine()  # imported as the report does, without its import warning

    numbering = Numbering(tmp_path)
    numbering.placed["figure"]["curves"] = 2
    body = environment().from_string(
        '{% from "macros.html.j2" import fref with context %}'
        "<p>part in training or selection, and their accuracy is the one to quote. Training one "
        "run took 2 min 41 s for\n160,000 training images (8 epochs), including\nvalidation: "
        "994 images per second over the\nwhole run, while the median epoch alone trained at "
        '1,083 images per\nsecond. {{ fref("curves") }} shows the learning curves.</p>'
    ).render(numbering=numbering)
    css = (templates_dir() / "report.css").read_text()
    html = f"<html><head><style>{css}</style></head><body><section>" \
           f"{numbering.resolve(body)}</section></body></html>"
    text = PdfReader(io.BytesIO(weasyprint.HTML(string=html).write_pdf())).pages[0].extract_text()
    lines = [line.strip() for line in text.splitlines()]
    assert "Figure\xa02 shows the learning curves." in " ".join(lines), lines
    assert all(len(line.split()) > 1 for line in lines[:-1]), lines  # the last: page number
