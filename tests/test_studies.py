"""Studies as units: a study registered in its own files appears in `all`, the figures folder
and the PDF; figures and tables are numbered where they are placed; the report follows the
configuration it ran with."""
import json
import re
from dataclasses import dataclass
from html import unescape
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reportgen.cli import app
from reportgen.config import check
from reportgen.experiments import Study, registered, studies
from reportgen.files import MissingResults
from reportgen.report import Numbering, ReportError, build_context, render_html

from helpers import overrides_to_args, tiny_overrides, tiny_png, write_image_folder

runner = CliRunner()


def pdf_text(path: Path) -> str:
    from pypdf import PdfReader  # here: the GPU machine collects the tests without pypdf

    return re.sub(r"\s+", " ", " ".join(p.extract_text() for p in PdfReader(path).pages))


# --- a toy study, declared in this file and its partial only ------------------------------

@dataclass(frozen=True)
class ToyConfig:
    scale: int = 2  # how many times the class count to report

    def __post_init__(self):
        check(self.scale > 0, "toy.scale", self.scale, "a positive integer")


TOY_PARTIAL = """
{%- from "macros.html.j2" import figure, fref with context -%}
{%- macro results() -%}
<p>The toy study counted {{ f.count }} things, see {{ fref("toy_bars") }}.</p>
{% call figure("toy_bars") %}Toy bars, {{ r.count }} of them.{% endcall %}
{%- endmacro -%}
{%- macro discussion() -%}<p><b>Toy.</b> A paragraph of the toy study's own.</p>{%- endmacro -%}
"""


def make_toy(template: Path, partial: str = TOY_PARTIAL):
    template.write_text(partial)

    class Toy(Study):
        name = "toy"
        title = "Part 4: a toy study"
        order = 40
        config = ToyConfig
        figures = ("toy_bars",)

        def run(self, cfg, prepared, *, retrain=False, log=print, **options):
            n = len(prepared.classes) * cfg.toy.scale
            return self.save(cfg, prepared, {"count": n})

        def facts(self, results):
            return {"count": results["count"]}

        def draw(self, results, results_dir, figures_dir):
            import matplotlib.pyplot as plt

            from reportgen import style

            fig, ax = plt.subplots()
            ax.bar(range(results["count"]), range(results["count"]))
            style.save(fig, figures_dir / "toy_bars")

    Toy.template = str(template)
    return Toy


def test_a_registered_study_runs_everywhere(tmp_path):
    folder = write_image_folder(tmp_path / "data")
    out = tmp_path / "out"
    with registered(make_toy(tmp_path / "toy.html.j2")):
        assert [s.name for s in studies()][-1] == "toy"
        r = runner.invoke(app, ["all", *overrides_to_args(tiny_overrides(folder, out)),
                                "--set", "toy.scale=3"])
        assert r.exit_code == 0, r.output
        assert "=== Part 4: a toy study" in r.output
        res = json.loads((out / "practical2" / "toy.json").read_text())
        assert res["count"] == 30 and res["config"]["toy"] == {"scale": 3}
        for ext in ("png", "svg"):
            assert (out / "figures" / "practical2" / f"toy_bars.{ext}").is_file()
        text = pdf_text(out / "report.pdf")
        n_figs = max(int(n) for n in re.findall(r"Figure (\d+)\.", text))  # the toy comes last
        assert f"The toy study counted 30 things, see Figure {n_figs}." in text
        assert f"Figure {n_figs}. Toy bars, 30 of them." in text
        assert "3.4 Part 4: a toy study" in text and "A paragraph of the toy study's own." in text
        # its command exists only where it is registered before the app is built: `all`,
        # `figures` and the report found it without one.
        r = runner.invoke(app, ["figures", *overrides_to_args(tiny_overrides(folder, out))])
        assert r.exit_code == 0 and (out / "figures" / "practical2" / "toy_bars.png").is_file()
        # Drawn from results made with toy.scale = 3, which the command line no longer says.
        assert "other settings than the experiment file and --set give now (toy.scale = 3, " \
               "not 2): the figures show them as they were made" in r.output, r.output
    assert "toy" not in [s.name for s in studies()]
    r = runner.invoke(app, ["train", *overrides_to_args(tiny_overrides(folder, out)),
                            "--set", "toy.scale=3"])
    assert r.exit_code == 2 and "unknown key toy at the top level" in r.output
    # Results written while it was registered (their settings hold a [toy] section) are
    # still read without it, and ones written before it registers lack only its own file.
    r = runner.invoke(app, ["figures", *overrides_to_args(tiny_overrides(folder, out))])
    assert r.exit_code == 0, r.output
    (out / "practical2" / "toy.json").unlink()
    runner.invoke(app, ["train", *overrides_to_args(tiny_overrides(folder, out))])
    with registered(make_toy(tmp_path / "toy.html.j2")):
        r = runner.invoke(app, ["figures", *overrides_to_args(tiny_overrides(folder, out))])
        assert r.exit_code == 0 and "skipped: " in r.output, r.output
        assert "toy.json is missing" in r.output and "part1.json" not in r.output


def test_a_bad_study_setting_is_named(tmp_path):
    with registered(make_toy(tmp_path / "toy.html.j2")):
        r = runner.invoke(app, ["figures", "--set", "toy.scale=0"])
        assert r.exit_code == 2 and "toy.scale = 0 is not allowed" in r.output


# --- numbering where things are placed -----------------------------------------------------

def _png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tiny_png())
    return path


def test_numbering_resolves_forward_references_and_citations(tmp_path):
    n = Numbering(tmp_path)
    _png(tmp_path / "a.png"), _png(tmp_path / "b.png")
    html = (f"see {n.ref('figure', 'b')} and {n.cite('lippe2022')}; "
            f"{n.figure('a')['n']} {n.figure('b')['n']} table {n.table('t')} "
            f"{n.ref('table', 't')} {n.cite('krizhevsky2009', 'lippe2022')} {n.bibliography()}")
    out = n.resolve(html)
    assert re.sub(r"<[^>]+>", "", out).startswith("see 2 and [1]; 1 2 table 1 1 [2, 1]")
    assert out.startswith('see <a class="xref" href="#fig-b">2</a>')  # a link in the PDF
    assert out.index("Practical 2") < out.index("Tiny Images")  # listed in order of citation


@pytest.mark.parametrize("make,message", [
    (lambda n: n.resolve(f"{n.ref('figure', 'ghost')}"), "refers to figure 'ghost', which it does not contain"),
    (lambda n: n.resolve(f"{n.ref('table', 'ghost')}"), "refers to table 'ghost'"),
    (lambda n: (n.table("t"), n.table("t")), "places table 't' twice"),
    (lambda n: n.figure("nope"), "nope.png is missing: run `reportgen figures`"),
    (lambda n: n.cite("nobody2030"), "cites 'nobody2030', which is not in reportgen/references.py"),
])
def test_numbering_errors_name_the_item(tmp_path, make, message):
    with pytest.raises((ReportError, FileNotFoundError), match=re.escape(message)):
        make(Numbering(tmp_path))


def _toy_context(tmp_path, partial, count_drawn: int = 3, old_stamp: bool = False):
    """The report's context for the toy study alone, from a crafted results file whose
    figures were drawn from one with `count_drawn` things."""
    from reportgen.config import load_experiment, to_dict
    from reportgen.figures import stamp_text
    from reportgen.files import seal

    toy = make_toy(tmp_path / "toy.html.j2", partial)
    cfg = load_experiment(None, {"out_dir": str(tmp_path), "figures_dir": str(tmp_path / "f")})
    _png(tmp_path / "f" / "toy_bars.png")
    res_dir = tmp_path / cfg.name
    res_dir.mkdir()

    def results(count):  # as Study.save writes it
        return seal({"study": "toy", "count": count, "config": to_dict(cfg), "versions": {},
                     "data": {"source": "x", "classes": ["a", "b"], "train_pool": 10,
                              "train_images": 8, "val_images": 2, "test_images": 4}})

    stamp = stamp_text(res_dir, results(count_drawn))
    (tmp_path / "f" / ".toy.source").write_text(stamp.split("\n")[0] if old_stamp else stamp)
    (res_dir / "toy.json").write_text(json.dumps(results(3)))
    return build_context(cfg, res_dir, tmp_path / "f", only=[toy()])


def test_figures_drawn_from_an_earlier_version_of_the_results_are_refused(tmp_path):
    """The same results folder is not enough: its file was written again since the figures
    were drawn (say, `reportgen train --seeds 2` with its figures drawn elsewhere)."""
    with pytest.raises(MissingResults, match=re.escape(
            "were drawn from an earlier toy.json (") + ".*" + re.escape(
            "toy.json has changed since): run `reportgen figures` with the same --config "
            "and --out first")):
        _toy_context(tmp_path, TOY_PARTIAL, count_drawn=4)


def test_figures_of_an_older_reportgen_are_drawn_again(tmp_path):
    """Its stamp names the results folder alone: which version of the file it showed is
    unknown, and said so (not "an earlier toy.json", which nobody can tell)."""
    with pytest.raises(MissingResults, match=re.escape(
            "were drawn by an older reportgen, which did not record the version of toy.json "
            "they show: run `reportgen figures` with the same --config and --out first")):
        _toy_context(tmp_path, TOY_PARTIAL, old_stamp=True)


def test_a_reference_to_a_figure_not_in_the_report_is_an_error(tmp_path):
    partial = TOY_PARTIAL.replace('fref("toy_bars")', 'fref("toy_pie")')
    with pytest.raises(ReportError, match="refers to figure 'toy_pie', which it does not contain"):
        render_html(_toy_context(tmp_path, partial))


def test_a_declared_figure_the_report_never_places_is_an_error(tmp_path):
    partial = TOY_PARTIAL.replace('{% call figure("toy_bars") %}Toy bars, {{ r.count }} of them.{% endcall %}', "")
    with pytest.raises(ReportError, match="draws figure 'toy_bars' but its report section .* never places it"):
        render_html(_toy_context(tmp_path, partial))


def test_the_toy_report_renders(tmp_path):
    html = render_html(_toy_context(tmp_path, TOY_PARTIAL))
    assert ('The toy study counted 3 things, see <span class="nowrap">Figure&nbsp;<a '
            'class="xref" href="#fig-toy_bars">1</a></span>.') in html
    assert "\x01" not in html and "Figure ?" not in html


# --- the report follows the configuration --------------------------------------------------

def test_report_follows_the_configuration(tmp_path):
    """Every setting the Method and Results sections state comes from the run: change each
    from the defaults (which the `built` report of test_report.py checks) and the words follow."""
    folder = write_image_folder(tmp_path / "data")
    out = tmp_path / "out"
    overrides = {**tiny_overrides(folder, out), "data.val_size": 20, "train.epochs": 2,
                 "shuffle.epochs": 2, "optim.name": "adam", "optim.lr": 0.01,
                 "optim.milestones": [1], "train.augment.flip": False,
                 "rotation.angles": [0, 45, 135], "rotation.splits": ["val"],
                 "rotation.fill": "black"}
    r = runner.invoke(app, ["all", *overrides_to_args(overrides)])
    assert r.exit_code == 0, r.output
    text = pdf_text(out / "report.pdf")
    body = text[:text.index("References")]  # not the appendix's configuration dump
    assert "split into 40 for training and 20 for validation" in text
    assert "Only part of it was used here: 60 training and 20 test images in 10 classes" in text
    assert "Training uses Adam [" in body and "SGD" not in body and "momentum" not in body
    assert "multiplies the learning rate by 0.1 after epoch 1," in text
    assert "flipped" not in body and "probability 0.5" not in body
    assert "as the network sees them: random resized crop." in text
    assert "by each of 3 angles" in text and "in steps of" not in text
    assert "repeats 0°" not in text  # 135° and a step would not reach 360°
    assert "rotated angles (45°–135°)" in text
    assert "Solid lines: validation images." in body and "dashed lines" not in body.lower()
    assert "filled with black" in text and "chance (10%)" in text
    assert "for 2 epochs in total" in text


def test_default_words_for_the_defaults(tmp_path):
    """The counterpart: with the practical's settings the same sentences say SGD, the flip
    and the validation split of the configuration."""
    folder = write_image_folder(tmp_path / "data")
    out = tmp_path / "out"
    r = runner.invoke(app, ["all", *overrides_to_args(tiny_overrides(folder, out))])
    assert r.exit_code == 0, r.output
    text = pdf_text(out / "report.pdf")
    assert "split into 50 for training and 10 for validation" in text
    assert "Training uses SGD with learning rate 0.1, momentum 0.9" in text
    assert "keeps the learning rate constant" in text  # milestones 70, 90 > 1 epoch
    assert "flipped horizontally with probability 0.5" in text
    assert "rotated angles (90°–270°)" in text and "in steps of 90°" in text
    assert "in steps of 90° (360° repeats 0°)" in text  # why the sweep ends at 270°
    assert "Solid lines: validation images; dashed lines: test images." in text


@pytest.mark.parametrize("train_pool, test_images, val_images, split_seed, expected", [
    (50_000, 10_000, 5_000, 42, "As in the practical, the training images are split into "
     "45,000 for training and 5,000 for validation with random_split and a generator seeded 42."),
    (50_000, 10_000, 5_000, 7, "The training images are split into 45,000 for training and "
     "5,000 for validation with random_split and a generator seeded 7 (the practical splits "
     "its 50,000 into 45,000 and 5,000, seeded 42)."),
    (50_000, 10_000, 1_000, 42, "The training images are split into 49,000 for training and "
     "1,000 for validation"),
    (600, 200, 100, 42, "Only part of it was used here: 600 training and 200 test images in 2 "
     "classes. The training images are split into 500 for training and 100 for validation"),
])
def test_the_method_says_as_in_the_practical_only_where_data_and_split_are(
        tmp_path, train_pool, test_images, val_images, split_seed, expected):
    """Before, a partial copy read "CIFAR-10 has 60 training and 20 test images", and any
    split "As in the practical"."""
    context = _toy_context(tmp_path, TOY_PARTIAL)
    context["data"] = {**context["data"], "train_pool": train_pool, "test_images": test_images,
                       "val_images": val_images, "train_images": train_pool - val_images}
    context["config"]["data"]["split_seed"] = split_seed
    html = render_html(context)
    method = " ".join(unescape(re.sub(r"<[^>]+>", "", html[html.index("Data and split"):])).split())
    assert method.startswith("Data and split CIFAR-10 [4] has 50,000 training and 10,000 test "
                             "images of 32×32 pixels in 10 classes. ")
    assert expected in method
    assert ("As in the practical" in method) == expected.startswith("As in the practical")
    assert ("Only part of it" in method) == (train_pool != 50_000)


def test_the_running_header_holds_a_long_title_cut_at_a_word(tmp_path):
    def header(title: str | None, where) -> str:
        where.mkdir()
        context = _toy_context(where, TOY_PARTIAL)
        context["meta"]["title"] = title or context["meta"]["title"]
        html = render_html(context)
        return unescape(re.search(r'<h1 data-short="([^"]*)">', html).group(1))

    # A title of one line as it is.
    assert header(None, tmp_path / "a") == "Convolutional Neural Networks on CIFAR-10"
    short = header(" ".join(["Convolutional"] * 21), tmp_path / "b")  # 293 characters
    assert short == " ".join(["Convolutional"] * 6) + "…" and len(short) <= 91


def test_settings_that_changed_since_the_results_were_made():
    """`report` and `figures` present the stored results; a setting changed since (in the
    experiment file or by --set) is named, one that cannot change them is not."""
    from reportgen.config import load_experiment, to_dict
    from reportgen.experiments import get_study
    from reportgen.experiments.base import changed_settings

    def loaded(made: dict, *names):
        return [(get_study(n), {"config": json.loads(json.dumps(to_dict(
            load_experiment(None, made))))}) for n in names]

    every = ("part1", "rotation", "shuffle")
    now = load_experiment(None, {"train.epochs": 5})
    assert changed_settings(now, loaded({"train.epochs": 5}, *every)) == []
    assert changed_settings(now, loaded({"train.epochs": 2}, *every)) == [
        ("train.epochs", 2, 5)]
    assert changed_settings(now, loaded({"train.epochs": 2}, "shuffle")) == []  # its own budget
    # How runs execute, where the results go and what the report says change no result.
    assert changed_settings(now, loaded({"train.epochs": 5, "train.device": "cpu",
                                         "train.eval_batch_size": 7, "out_dir": "elsewhere",
                                         "report.title": "Other"}, *every)) == []
    # seeds = [] trains `seed` alone, as [seed] does; the MLP's own empty list means the same.
    assert changed_settings(now, loaded({"train.epochs": 5, "train.seeds": [42],
                                         "shuffle.mlp_seeds": [42]}, *every)) == []
    assert changed_settings(now, loaded({"train.epochs": 5, "train.seeds": [42, 43]},
                                        "part1", "shuffle")) == [
        ("train.seeds", [42, 43], [42]), ("shuffle.mlp_seeds", [42, 43], [42])]
    # A comparison model Part 2 does not train: its settings are not among its results'.
    p4 = {"name": "p4_preact_resnet", "params": {"num_classes": 10, "num_blocks": [1],
                                                 "c_hidden": [4]}}
    assert changed_settings(now, loaded({"train.epochs": 5, "rotation.equivariant": p4},
                                        "rotation")) == []
    both = load_experiment(None, {"train.epochs": 5,
                                  "rotation.models": ["plain", "equivariant"]})
    [(key, _, _)] = changed_settings(both, loaded(
        {"train.epochs": 5, "rotation.models": ["plain", "equivariant"],
         "rotation.equivariant": p4}, "rotation"))
    assert key == "rotation.equivariant"
    # Results of a reportgen without a setting: not a change.
    [(study, res)] = loaded({"train.epochs": 5}, "part1")
    del res["config"]["optim"]["gamma"]
    assert changed_settings(load_experiment(None, {"train.epochs": 5, "optim.gamma": 0.5}),
                            [(study, res)]) == []
