"""The LaTeX export: escaping, labels and citations, and a compiled document that holds the
same numbers as the HTML report (compiled when pdflatex and bibtex are installed)."""
import re
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from reportgen.cli import app
from reportgen.latex import _BREAK, escape, safe_math, to_latex

from helpers import overrides_to_args

runner = CliRunner()
HAVE_TEX = shutil.which("pdflatex") and shutil.which("bibtex")


def test_specials_are_escaped():
    assert escape("100% & $5 #1 a_b ~x {y} \\ ^") == (
        r"100\% \& \$5 \#1 a\_b \textasciitilde{}x \{y\} \textbackslash{} \^{}")
    assert escape("3×3, 90°, ±1, −2, ψ") == r"3$\times$3, 90\textdegree{}, $\pm$1, $-$2, $\psi$"
    assert escape("naïve") == "naïve" and escape("\u2603") == "?"  # unknown symbols never break
    assert escape("a\x07b\x1bc\x7f\td") == "a?b?c?\td"  # control characters: pdflatex stops at them
    # Invisible characters pasted with text: a zero-width space may break, the rest set nothing
    assert escape("a\u200bb\u200dc\ufeffd") == r"a\allowbreak{}b{}c{}d"
    html = '<p>x <span class="math inline" data-tex="\\input{x}">a+<wbr>b</span> y</p>'
    assert "x a+b y" in to_latex(f"<body>{html}</body>", {})[0]  # <wbr> has no end tag


def test_latin_letters_outside_ot1_are_question_marks_not_a_failed_compile():
    # "Command \\k unavailable in encoding OT1": a name with ą or ð stopped pdflatex.
    assert escape("Łukasz Wąsik, Guðrún Þór") == "Łukasz W?sik, Gu?rún ?ór"
    assert escape("50 £ © ¿ ½ Zoë ß ø œ Ő") == "50 £ © ¿ ½ Zoë ß ø œ Ő"
    assert escape("co\xadop") == r"co\-op"  # a soft hyphen marks a break, it is not a '?'
    # Unicode calls λ "LAMDA": it was written as $\lamda$, an undefined control sequence.
    assert escape("λ = 0.1, Α ο ς") == r"$\lambda$ = 0.1, $\mathrm{A}$ $o$ $\varsigma$"
    assert "?" not in escape("αβγδεζηθικλμνξοπρςστυφχψω ΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩ")


@pytest.mark.skipif(not HAVE_TEX, reason="pdflatex is not installed")
def test_every_character_the_export_writes_compiles(tmp_path):
    """What escape() writes for each character of Latin-1, Latin Extended-A and Greek, and the
    report's symbols, compiles under the export's preamble with no missing glyph."""
    from reportgen.latex import _UNICODE

    text = "".join(map(chr, range(0x20, 0x7F))) + "".join(map(chr, range(0xA0, 0x3CA)))
    body = " ".join(escape(ch) for ch in text + "".join(_UNICODE) if escape(ch) != "?")
    (tmp_path / "c.tex").write_text(
        "\\documentclass{article}\\usepackage[utf8]{inputenc}\\usepackage{textcomp}"
        "\\usepackage{amsmath,amssymb}\\begin{document}\n" + body + "\n\\end{document}\n")
    p = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "c.tex"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    log = (tmp_path / "c.log").read_text(errors="replace")
    assert p.returncode == 0, [line for line in log.splitlines() if line.startswith("!")]
    assert "Missing character" not in log


@pytest.mark.skipif(not HAVE_TEX, reason="pdflatex is not installed")
def test_the_students_markdown_compiles_in_every_construct(tmp_path):
    """Each of these stopped pdflatex: a hard line break (a trailing backslash) that opens a
    paragraph, a list item or a quote was a bare \\\\ there ("There's no line here to end"); a
    heading in a list item was \\item \\paragraph ("perhaps a missing \\item"); lists nested
    more than four deep ("Too deeply nested"); a heading with a % in it (written to the .aux as
    a bare %); a break followed by "[" (read as \\\\'s optional length); quotes, which are
    lists to LaTeX, nested past six levels with lists. And an item that
    starts with "[" lost its bullet and the bracketed words to \\item's optional label."""
    from reportgen.usertext import to_html

    markdown = ("\\\nopens a paragraph\n\n- \\\n  opens an item\n\n> \\\n> opens a quote\n\n"
                "# Heading\n\n## Sub\n\nin a line\\\nbreaks twice\\\n\\\nhere\n\n"
                "1. one\n   - nested `a_b`\n\n```\ncode { %\n```\n\n---\n\n**bold \\\nbreak**\n\n"
                "- # a heading in an item\n- ## and a lower one\n\n"
                "- - - - - - - seven deep\n\n1. 1. 1. 1. 1. numbered five deep\n\nThen:\n\n"
                "3. starts at three\n4. four\n\n# 100% & #1 of it\n\nSetext with\\\na break\n===\n\n"
                "a break before\\\n[a bracket]\n\n- [x] a done task\n\n"
                "> > > > > > > > quoted eight deep\n\n- > - > - > - > - > quotes in lists\n\n"
                "- - - - - - | a table | in a list |\n"
                "            |:-:|--:|\n            | six | deep |\n\n"
                "# a heading, then a rule\n\n---\n\n- ***\n\nruled off")
    html = ('<body><h2>Introduction</h2><div class="user-text">' + to_html(markdown)
            + "</div></body>")
    tex = to_latex(html, {})[0]
    # a quote is indented as the HTML indents it, as deep as LaTeX lets lists nest (six)
    assert tex.count("\\begin{quote}") == 1 + 6 + 3
    (tmp_path / "c.tex").write_text(tex)
    p = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "c.tex"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    log = (tmp_path / "c.log").read_text(errors="replace")
    assert p.returncode == 0, [line for line in log.splitlines() if line.startswith("!")]
    text = _pdf_text(tmp_path / "c.pdf")
    assert "quoted eight deep" in text and "quotes in lists" in text
    assert "a table in a list" in text and "six deep" in text and "ruled off" in text
    assert tex.count("\\hrule") == 3  # the thematic breaks, drawn as the HTML draws them
    assert "Overfull" not in log  # a \rule after a run-in heading ran past the margin
    assert "opens an item" in text and "seven deep" in text and "3. starts at three" in text
    assert "100% & #1 of it" in text and "[a bracket]" in text and "[x] a done task" in text


# Pieces of Markdown that a student's text may hold, each harmless alone.
_PIECES = ["# H", "## H2 *e*", "###### h6", "- a", "- ", "1. x", "3. y", "   - nested", "  - n2",
           "    - n3", "> q", "> > qq", "> - ql", "1. # h", "- - - - x", "\\", "a\\", "  ", "```",
           "```py", "    indented code", "***", "---", "text", "*em*", "**b**", "_u_", "`c`", "``",
           "$x^2$", "$$\\frac{a}{b}$$", "$a % b$", "$5", "[l](https://a.org/_%#)", "<https://a.org>",
           "<a@b.c>", "<b>x</b>", "&amp;", "&#x1F600;", "&nbsp;", "\\*", "\\{", "~", "^", "%", "#",
           "&", "_", "{", "}", "|a|b|", "λ", "ą", "ð", "中", "[ref]", "[ref]: https://x.org", "===",
           "- [ ] task", "<!-- c -->", "\\end{document}", "\\input{x}", "^^5c", "\u202e",
           "| a | b |\n|---|--:|\n| 1 | $x$ |", "|:-:|", "| % |"]


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_TEX, reason="pdflatex is not installed")
def test_random_markdown_compiles(tmp_path):
    """40 documents of random lines drawn from _PIECES, each exported and compiled alone (a
    fuzzer of 500 such documents found the constructs of the test above)."""
    import random

    from reportgen.usertext import to_html

    rng = random.Random(23)
    for k in range(40):
        lines = [" ".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 3)))
                 + ("\n" if rng.random() < 0.3 else "") for _ in range(rng.randint(1, 12))]
        markdown = "\n".join(lines)
        html = ('<body><h2>Introduction</h2><p>x</p><div class="user-text">'
                + to_html(markdown) + "</div></body>")
        (tmp_path / "c.aux").unlink(missing_ok=True)  # a failed run leaves half of one
        (tmp_path / "c.tex").write_text(to_latex(html, {})[0])
        p = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "c.tex"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=120)
        log = (tmp_path / "c.log").read_text(errors="replace")
        assert p.returncode == 0, (markdown, [l for l in log.splitlines() if l.startswith("!")])


def test_characters_pdflatex_cannot_set_are_named():
    """CJK letters in a name became '?' in report.tex without a word; now the export says
    which (the figure and citation tokens of the raw rendering and the markup are not text)."""
    from reportgen.latex import unset_characters

    html = ('<p title="☃">Zoë 王小明 90° ψ x‮y '
            '\x01ref:fig\x02</p>')
    assert unset_characters(html) == sorted(["王", "小", "明", "‮"])
    assert unset_characters("<p>Plain, 3×3 ± 1 – café</p>") == []


def test_only_known_math_passes_through():
    assert safe_math(r"\alpha^2 \leq \frac{1}{2}")
    assert not safe_math(r"\input{/etc/passwd}") and not safe_math(r"\def\x{1}")
    assert not safe_math(r"a \\ b")


@pytest.mark.parametrize("tex", [
    "^^5cinput{/etc/passwd}",  # TeX reads ^^5c as a backslash before any command: \input
    "x^^y", "a % b", "a # b", "a & b",  # a % would comment out the closing $
    "x{", "x}", "}{", r"\left( x", r"\right) x \left(", "α + 1", "{" * 17 + "}" * 17, "a\\",
])
def test_math_that_is_unsafe_or_cannot_compile_is_text(tex):
    assert not safe_math(tex)
    assert safe_math(r"\left( \frac{a}{b} \right) \% \{x\} " + "{" * 16 + "}" * 16)


def test_figures_tables_references_and_citations_become_latex():
    # References as fref/tref write them: kept whole in a nowrap span (see macros.html.j2).
    html = ('<body><h2>Results</h2><p>See <span class="nowrap">Figure&nbsp;\x01ref:figure/acc'
            '\x02</span> and <span class="nowrap">Table&nbsp;\x01ref:table/t\x02</span> '
            '\x01cite:he2016deep,lippe2022\x02.</p>'
            '<figure id="fig-acc" class="narrow"><img src="x"><figcaption><b>Figure 1.</b> '
            'Accuracy, 50% of it.</figcaption></figure>'
            '<table><caption data-name="t"><b>Table 1.</b> A table.</caption><thead><tr>'
            '<th>model</th><th class="num">acc</th></tr></thead><tbody><tr><td>A_1</td>'
            '<td class="num">70.9% [70.0, 71.8]</td></tr></tbody></table>'
            '<h2 class="unnumbered">References</h2>\x01bib:\x02</body>')
    tex, cited = to_latex(html, {"acc": "acc.pdf"})
    assert cited == ["he2016deep", "lippe2022"]
    assert r"Figure~\ref{fig:acc} and Table~\ref{tab:t} \cite{he2016deep,lippe2022}" in tex
    assert r"\includegraphics[width=0.75\linewidth]{figures/acc.pdf}" in tex
    assert r"\caption{Accuracy, 50\% of it.}" in tex and r"\label{fig:acc}" in tex
    assert r"\label{tab:t}" in tex and r"\begin{tabular}{lr}" in tex
    assert r"A\_1 & 70.9\% [70.0, 71.8] \\" in tex and r"\toprule" in tex and r"\midrule" in tex
    body = tex.split("%% BODY")[1].split("%% END OF BODY")[0]
    assert r"\section{Results}" in body and r"\bibliography{" not in body


def test_the_students_tables_are_set_in_place_unnumbered_with_their_alignment():
    """A pipe table in the student's text: booktabs rules, the Markdown's alignment, where it
    stands (not a float: a float in a list item stops pdflatex) and without a caption or a
    number (the HTML numbers only the report's own tables)."""
    from reportgen.usertext import to_html

    md = "| model | acc | note |\n|:--|--:|:-:|\n| ResNet | 70.2% | `c_1` |\n| MLP |\n"
    html = '<body><div class="user-text">' + to_html(md) + "</div></body>"
    tex = to_latex(html, {})[0]
    body = tex[tex.index("\\begin{center}"):tex.index("\\end{center}")]
    assert "\\begin{tabular}{lrc}" in body and "\\caption" not in body
    assert "\\begin{table}" not in tex
    assert ("model & acc & note \\\\\n\\midrule\nResNet & 70.2\\% & \\texttt{c\\_1} \\\\\n"
            "MLP &  &  \\\\\n\\bottomrule") in body
    # A box never breaks across pages: 100 rows are set in parts, each under the header.
    rows = "".join(f"| r{k} | {k} |\n" for k in range(100))
    tex = to_latex('<body><div class="user-text">' + to_html("| k | v |\n|---|---|\n" + rows)
                   + "</div></body>", {})[0]
    parts = tex.split("\\begin{tabular}")[1:]
    assert [p.count("\\\\\n") for p in parts] == [46, 46, 11]  # the header and 45, 45, 10
    assert all(p.startswith("{ll}\n\\toprule\nk & v \\\\\n\\midrule\n") for p in parts)
    assert "r99 & 99" in parts[2] and "r45 & 45" in parts[1]


@pytest.mark.skipif(not HAVE_TEX, reason="pdflatex is not installed")
def test_the_pdfs_metadata_holds_title_author_course_and_maker(tmp_path):
    """WeasyPrint's PDF takes them from the HTML's <meta> tags; the export's \\hypersetup
    gives pdflatex's PDF the same, every letter as it is and TeX's specials as text (the
    PDF had no title, author or subject)."""
    from pypdf import PdfReader

    author = "Zoë O'Brien, ψ \\end{x}^^5c % #1"
    html = ('<html><head><title>Café &amp; 100% {x}</title><meta name="author" content="'
            + author.replace("'", "&#39;") + '"><meta name="description" content="DL 2">'
            '<meta name="generator" content="reportgen 9.9"></head><body><p>x</p></body></html>')
    (tmp_path / "c.tex").write_text(to_latex(html, {})[0])
    p = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "c.tex"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout[-1500:]
    info = PdfReader(tmp_path / "c.pdf").metadata
    assert (info.title, info.author, info.subject, info.creator) == (
        "Café & 100% {x}", author, "DL 2", "reportgen 9.9")
    assert "Token not allowed" not in (tmp_path / "c.log").read_text(errors="replace")


def test_the_students_headings_are_unnumbered_paragraph_headings():
    from reportgen.usertext import to_html

    html = ('<body><h2>Introduction</h2><div class="user-text">'
            + to_html("# Aim & scope\n\n## Why\n\ntext") + '</div><h2>Method</h2></body>')
    body = to_latex(html, {})[0].split("%% BODY")[1]
    assert body.count("\\section{") == 2  # Introduction and Method, nothing in between
    assert "\\paragraph*{Aim \\& scope}" in body and "\\subparagraph*{Why}" in body


def test_a_table_longer_than_a_page_is_split_into_floats_that_repeat_the_header(tmp_path):
    """A float never breaks across pages: the run table of 12 seeds (72 rows) ran off the
    bottom of its page ("Float too large for page")."""
    from reportgen.latex import ROWS_PER_FLOAT

    rows = "".join(f"<tr><td>run-{k}</td><td class=\"num\">{k}</td></tr>" for k in range(130))
    html = ('<body><h2>Appendix</h2><table><caption data-name="runs"><b>Table 1.</b> Runs.'
            '</caption><thead><tr><th>run</th><th class="num">seed</th></tr></thead><tbody>'
            + rows + "</tbody></table><p>After the table.</p></body>")
    tex = to_latex(html, {})[0]
    assert ROWS_PER_FLOAT < 130 <= 3 * ROWS_PER_FLOAT
    assert tex.count("\\begin{table}") == 3 and tex.count("\\label{tab:runs}") == 1
    assert tex.count("Table~\\ref{tab:runs} (continued)") == 2
    assert tex.count("run & seed \\\\") == 3  # the header on every part
    assert tex.index("\\clearpage") < tex.index("After the table.")  # parts before the text
    if not HAVE_TEX:
        pytest.skip("pdflatex is not installed")
    (tmp_path / "t.tex").write_text(tex)
    for _ in range(2):  # the second run resolves the references
        p = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stdout[-2000:]
    log = (tmp_path / "t.log").read_text(errors="replace")
    assert "Float too large" not in log
    text = _pdf_text(tmp_path / "t.pdf")
    assert all(f"run-{k} {k}" in text for k in range(130)) and "Table 1 (continued)" in text


def test_an_export_that_fails_part_way_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    """Figures were copied in place one by one before report.tex was written: a failure part
    way (a full disk) left new figures beside the old .tex. Now nothing is renamed into place
    until every file is written; a template of your own in the folder is never touched."""
    import os

    import reportgen.files as files
    from reportgen.latex import write_latex

    figs = tmp_path / "fig"
    figs.mkdir()
    html = "".join(f'<figure id="fig-{n}"><img src="x"><figcaption>{n}</figcaption></figure>'
                   for n in ("a", "b"))

    def draw(version):
        for n in ("a", "b"):
            (figs / f"{n}.pdf").write_text(f"%PDF-1.4 {n} {version}\n%%EOF\n")

    draw(1)
    tex = write_latex(f"<body>{html}one</body>", figs, tmp_path, log=lambda m: None)
    mine = tex.parent / "main.tex"
    mine.write_text("my template")
    before = {p: p.read_bytes() for p in tex.parent.rglob("*") if p.is_file()}
    draw(2)
    real, flushed = os.fsync, []

    def full_disk(fd):
        if flushed:
            raise OSError(28, "No space left on device")
        flushed.append(real(fd))

    monkeypatch.setattr(files.os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_latex(f"<body>{html}two</body>", figs, tmp_path, log=lambda m: None)
    assert {p: p.read_bytes() for p in tex.parent.rglob("*") if p.is_file()} == before
    monkeypatch.setattr(files.os, "fsync", real)
    write_latex(f"<body>{html}two</body>", figs, tmp_path, log=lambda m: None)
    assert "two" in tex.read_text()
    assert (tex.parent / "figures" / "b.pdf").read_text() == "%PDF-1.4 b 2\n%%EOF\n"
    assert mine.read_text() == "my template"


@pytest.mark.parametrize("plant", ["link", "fifo", "folder", "not-an-image", "cut-short",
                                   "corrupt"])
def test_a_figure_that_is_a_link_or_not_an_image_is_never_embedded(tmp_path, plant):
    """A figures folder from someone else with `x.png -> ~/.ssh/id_rsa`: the linked file's
    bytes went into the report's HTML (as a broken image) and into the LaTeX export's
    figures; a FIFO hung the command; a folder was "Is a directory: 5", naming no figure. A
    figure cut short or corrupt (a full disk, an interrupted copy) was embedded, and
    WeasyPrint left it out of the PDF without an error."""
    import io
    import os

    import matplotlib.pyplot as plt

    from reportgen.files import MissingResults
    from reportgen.latex import write_latex
    from reportgen.report import Numbering

    secret = tmp_path / "id_rsa"
    secret.write_text("-----BEGIN OPENSSH PRIVATE KEY-----")
    figs = tmp_path / "fig"
    figs.mkdir()
    for ext in ("png", "pdf"):
        f = figs / f"a.{ext}"
        fig = plt.figure(figsize=(2, 2))
        fig.gca().plot([0, 1], [1, 0])
        drawn = io.BytesIO()
        fig.savefig(drawn, format=ext)
        plt.close(fig)
        drawn = drawn.getvalue()
        if plant == "link":
            f.symlink_to(secret)
        elif plant == "fifo":
            os.mkfifo(f)
        elif plant == "folder":
            f.mkdir()
        elif plant == "cut-short":
            f.write_bytes(drawn[:len(drawn) // 2])
        elif plant == "corrupt":  # whole, but a byte in the middle changed
            f.write_bytes(drawn[:len(drawn) // 2] + b"\x00" + drawn[len(drawn) // 2 + 1:])
        else:
            f.write_bytes(secret.read_bytes())
    what = {"link": "is a symbolic link", "fifo": "is not a regular file",
            "folder": "is a folder, not a figure reportgen drew: move it away, then", "not-an-image": "is not a (PNG|PDF) that reportgen drew",
            "cut-short": "is damaged", "corrupt": "is damaged"}[plant]
    with pytest.raises(MissingResults, match=what + ".*run `reportgen figures`"):
        Numbering(figs).figure("a")
    if plant == "corrupt":  # a PDF is checked for its end, not read through
        return
    html = '<body><figure id="fig-a"><img src="x"><figcaption>a</figcaption></figure></body>'
    with pytest.raises(MissingResults, match=what + ".*run `reportgen figures`"):
        write_latex(html, figs, tmp_path / "out", log=lambda m: None)
    assert not (tmp_path / "out" / "latex" / "figures" / "a.pdf").exists()


def test_preformatted_settings_are_escaped_text_not_verbatim():
    """The appendix's settings were a verbatim environment, which ends at the first
    `\\end{verbatim}` in its text: report.title = '\\end{verbatim}^^5cinput{/etc/hostname}'
    ended it, TeX read ^^5c as a backslash, and the export ran `\\input` of the file."""
    evil = 'title = "\\\\end{verbatim}^^5cinput{/etc/hostname}\\\\begin{verbatim}"'
    html = (f"<body><pre class='config'>[report]\n{evil}\n\n[rotation]\nangles = [0.0, 10.0]\n"
            "  indented = 1\n</pre></body>")
    tex, _ = to_latex(html, {})
    tex = tex.replace(_BREAK, "")  # where the long line may break
    assert "verbatim}" not in tex  # only as escaped text
    assert "^^" not in tex and r"\input" not in tex
    assert (r'title = "{\char92}{\char92}end{\char123}verbatim{\char125}{\char94}{\char94}'
            r'5cinput{\char123}/etc/hostname{\char125}') in tex
    # One paragraph a line: a line starting with [ after \\ would be read as \\'s argument.
    assert "\\par\n[rotation]\\par\n" in tex and "\\par\n~~indented = 1\\par" in tex
    assert "\\mbox{}\\par\n" in tex  # the blank line between tables is kept


def _pdf_text(path) -> str:
    from pypdf import PdfReader

    return re.sub(r"\s+", " ", " ".join(p.extract_text() for p in PdfReader(path).pages))


@pytest.mark.slow
def test_tex_export_compiles_with_the_same_numbers(tiny, tmp_path):
    overrides, out = tiny
    user = tmp_path / "mine.toml"
    user.write_text("discussion = '''Specials: 100% & $5 #1 a_b ~x {y} and *emph* with "
                    "$\\alpha^2 \\leq 1$ and $\\input{/etc/passwd}$ and $^^5cinput{/etc/passwd}$ "
                    "and $a % b$ and $x{$ and $\\left( x$ and $α$ and "
                    "$" + "x^{" * 40 + "1" + "}" * 40 + "$.\n\n- item one\n- item_two'''\n")
    secret = tmp_path / "secret.tex"
    secret.write_text("SECRETWORD\n")
    overrides = {**overrides, "report.user_text": str(user),
                 "report.title": "Specials % _ & # in a title",
                 # The settings in the appendix: this ended a verbatim environment and made
                 # TeX \input the file.
                 "report.author": f"A \\end{{verbatim}}^^5cinput{{{secret}}}",
                 "report.formats": ["pdf", "tex"]}
    r = runner.invoke(app, ["all", *overrides_to_args(overrides)])
    assert r.exit_code == 0, r.output
    latex = out / "latex"
    # stdout ends with each document's path; `all` printed the PDF's alone, even with
    # report.formats = ["tex"], where no PDF is written.
    assert r.stdout.splitlines()[-2:] == [str(latex / "report.tex"), str(out / "report.pdf")]
    tex = (latex / "report.tex").read_text()
    assert r"$\alpha^2 \leq 1$" in tex and r"\input{" not in tex  # unknown commands are text
    assert "^^" not in tex and "$a % b$" not in tex  # unsafe or uncompilable math is text
    assert "Specials \\% \\_ \\& \\# in a title" in tex
    assert all(f"{{figures/{p.name}}}" in tex for p in (latex / "figures").iterdir())
    assert "@misc{he2016identity" in (latex / "references.bib").read_text()
    if not HAVE_TEX:
        pytest.skip("pdflatex/bibtex are not installed (Debian: texlive-latex-base, "
                    "texlive-latex-recommended, texlive-latex-extra)")
    for cmd in (["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "report.tex"],
                ["bibtex", "report"], ["pdflatex", "-interaction=nonstopmode", "report.tex"],
                ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "report.tex"]):
        p = subprocess.run(cmd, cwd=latex, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stdout[-2000:]
    log = (latex / "report.log").read_text(errors="replace")
    assert "undefined" not in log.lower(), [l for l in log.splitlines() if "ndefined" in l]
    compiled, html_pdf = _pdf_text(latex / "report.pdf"), _pdf_text(out / "report.pdf")
    assert "??" not in compiled
    assert "SECRETWORD" not in compiled and str(secret) not in log
    numbers = sorted(re.findall(r"\d+\.\d% \[\d+\.\d, \d+\.\d\]", html_pdf))
    assert numbers and sorted(re.findall(r"\d+\.\d% \[\d+\.\d, \d+\.\d\]", compiled)) == numbers


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_TEX, reason="pdflatex/bibtex are not installed")
def test_long_runs_without_a_space_stay_inside_the_margin_in_latex(tiny, tmp_path):
    """A URL, a code block's identifier chain and inline code in the student's text, and an
    author without a space: TeX breaks lines only at spaces and hyphens, and these ran up to
    60 cm past the margin ("Overfull \\hbox" in the log)."""
    overrides, out = tiny
    user = tmp_path / "mine.toml"
    user.write_text("discussion = '''# My code\n\n## Part one\n\nMy code:\n\n```\nx = "
                    + "+".join(["some_long_identifier"] * 20)
                    + "\n```\n\nSee https://example.com/" + "a" * 200 + " and `"
                    + "inline_code_" * 20 + "` in a justified paragraph of ordinary words.'''\n")
    overrides = {**overrides, "report.user_text": str(user), "report.author": "A" * 190,
                 "report.formats": ["tex"]}
    r = runner.invoke(app, ["all", *overrides_to_args(overrides)])
    assert r.exit_code == 0, r.output
    latex = out / "latex"
    for cmd in (["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "report.tex"],
                ["bibtex", "report"],
                ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "report.tex"]):
        p = subprocess.run(cmd, cwd=latex, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stdout[-2000:]
    log = (latex / "report.log").read_text(errors="replace")
    assert "Overfull \\hbox" not in log, [l for l in log.splitlines() if "Overfull" in l]
    assert "some_long_identifier" in _pdf_text(latex / "report.pdf").replace("\n", "")
    assert "\\paragraph*{My code}" in (latex / "report.tex").read_text()  # a heading compiles


@pytest.mark.slow
def test_all_with_only_the_latex_export_prints_its_path(tiny):
    """`all` takes report's --format and --strict as well."""
    overrides, out = tiny
    r = runner.invoke(app, ["all", *overrides_to_args(overrides), "--format", "tex"])
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[-1] == str(out / "latex" / "report.tex")
    assert (out / "latex" / "report.tex").is_file() and not (out / "report.pdf").exists()
    r = runner.invoke(app, ["all", *overrides_to_args(overrides), "--set", "report.page_limit=1",
                            "--strict"])
    assert r.exit_code == 2 and "error: the main body has" in r.output
    assert (out / "report.pdf").is_file()  # written all the same, as the message says


def _doc(body_pages: int, refs_at_top: bool):
    from reportgen.report import pdf_engine

    weasyprint = pdf_engine()

    pages = "".join(f'<p style="page-break-after: always">page {i}</p>' for i in range(body_pages - 1))
    last = ('<p style="page-break-after: always">last body page</p>' if refs_at_top
            else "<p>last body page</p>")
    html = ("<html><body><h2>Method</h2><figure id='fig-big'><div style='height: 5cm'></div>"
            f"</figure>{pages}{last}<h2>References</h2><ol><li>x</li></ol>"
            "<h2>Appendix</h2></body></html>")
    return weasyprint.HTML(string=html).render()


def test_page_budget_counts_the_main_body():
    from reportgen.report import page_budget

    assert page_budget(_doc(3, refs_at_top=False))["pages"] == 3  # shares the body's last page
    assert page_budget(_doc(3, refs_at_top=True))["pages"] == 3  # starts a page of its own
    b = page_budget(_doc(1, refs_at_top=False))
    assert b["pages"] == 1 and b["largest"][0][:2] == ("figure", "big")
    assert b["largest"][0][2] == pytest.approx(5.0, abs=0.3)


@pytest.mark.slow
def test_page_limit_is_a_note_or_with_strict_an_error(tiny):
    overrides, out = tiny
    r = runner.invoke(app, ["all", *overrides_to_args(overrides)])
    assert r.exit_code == 0
    r = runner.invoke(app, ["report", *overrides_to_args(overrides), "--set",
                            "report.page_limit=2"])
    assert r.exit_code == 0 and "over report.page_limit = 2; the largest items: figure" in r.output
    # With a page budget, figures the template marks optional move to the appendix.
    html = (out / "report.html").read_text()
    appendix = html.index("Configuration, software and run times")
    assert html.index('id="fig-rotation_examples"') > appendix > html.index('id="fig-rotation_accuracy"')
    assert "Additional figures" in html
    r = runner.invoke(app, ["report", *overrides_to_args(overrides), "--set",
                            "report.page_limit=2", "--strict"])
    assert r.exit_code == 2 and "error: the main body has" in r.output
    m = re.search(r"main body has (\d+) pages, (\d+) over", r.output)
    assert int(m.group(1)) - int(m.group(2)) == 2
    r = runner.invoke(app, ["report", *overrides_to_args(overrides), "--set",
                            "report.page_limit=50", "--strict"])
    assert r.exit_code == 0 and "over report.page_limit" not in r.output
    # Only the LaTeX export: no PDF to count, which is said rather than passed over.
    r = runner.invoke(app, ["report", *overrides_to_args(overrides), "--set",
                            "report.page_limit=2", "--format", "tex"])
    assert r.exit_code == 0 and "report.page_limit = 2 was not checked" in r.output, r.output


@pytest.mark.parametrize("sets,message", [
    ([], "--strict exits non-zero when the main body exceeds report.page_limit, which is 0 (no "
         "limit): set the course's limit"),
    (["--set", "report.page_limit=6", "--format", "tex"],
     "--strict checks the PDF's main body against report.page_limit = 6, but report.formats = "
     "['tex'] writes no PDF: add --format pdf"),
])
def test_strict_with_nothing_to_check_stops_before_any_work(tiny, sets, message):
    """It exited 0, as if the report fitted, where there was no limit or no PDF to check."""
    overrides, out = tiny
    for command in ("all", "report"):
        r = runner.invoke(app, [command, *overrides_to_args(overrides), *sets, "--strict"])
        assert r.exit_code == 2 and message in r.output, r.output
        assert not (out / "runs").exists() and not (out / "cache").exists()


@pytest.mark.parametrize("command", [["report"], ["all", "--plan"], ["all"]])
def test_without_weasyprint_the_pdf_is_one_line_before_any_work(tiny, monkeypatch, command):
    import sys

    overrides, out = tiny
    monkeypatch.setitem(sys.modules, "weasyprint", None)  # `import weasyprint` fails
    r = runner.invoke(app, [*command, *overrides_to_args(overrides)])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert r.output.startswith("error: the PDF is made with WeasyPrint, which cannot be loaded "
                               "here (ModuleNotFoundError: ")
    assert not (out / "runs").exists() and not (out / "cache").exists()


def test_weasyprint_loads_when_warnings_are_errors():
    """WeasyPrint warns at import when an optional system library (HarfBuzz-Subset) is
    missing; with PYTHONWARNINGS=error that warning ended every command that makes a PDF in a
    traceback. It is now imported with deprecation warnings ignored, as Python does by
    default."""
    import sys

    code = ("from reportgen.report import pdf_engine; "
            "print(pdf_engine().__name__)")
    r = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "weasyprint", r.stderr[-2000:]


@pytest.mark.slow
def test_tex_export_needs_no_model_no_data_and_no_weasyprint(tiny, monkeypatch):
    """Like the HTML report, the export reads the results files: with the data folder and
    every checkpoint gone, `report --format tex` still writes it. It needs no WeasyPrint
    either (the GPU machine's image has none); the PDF without it is one line, and `all`
    says so before it trains, not after."""
    import sys

    overrides, out = tiny
    r = runner.invoke(app, ["all", *overrides_to_args(overrides)])
    assert r.exit_code == 0, r.output
    shutil.rmtree(overrides["data.source"])
    shutil.rmtree(out / "cache")
    for ckpt in out.rglob("*.ckpt"):
        ckpt.unlink()
    monkeypatch.setitem(sys.modules, "weasyprint", None)  # `import weasyprint` fails
    pdf = (out / "report.pdf").read_bytes()
    for command in (["report"], ["all", "--plan", "--retrain"]):
        r = runner.invoke(app, [*command, *overrides_to_args(overrides)])
        assert r.exit_code == 2, r.output
        assert ("error: the PDF is made with WeasyPrint, which cannot be loaded here "
                "(ModuleNotFoundError: ") in r.output and "Traceback" not in r.output
        assert "or write only the LaTeX export with --set 'report.formats=[\"tex\"]'" in r.output
    assert "planning" not in r.output and (out / "report.pdf").read_bytes() == pdf
    r = runner.invoke(app, ["report", *overrides_to_args(overrides), "--format", "tex"])
    assert "note: report.tex prints ?" not in r.output  # the report's own text sets in full
    r = runner.invoke(app, ["report", *overrides_to_args(overrides), "--format", "tex",
                            "--author", "王 Zoë"])
    assert r.exit_code == 0, r.output
    assert ("note: report.tex prints ? for 1 character(s) that pdflatex cannot set (王); "
            "report.html and report.pdf keep them") in r.output
    assert "(XeLaTeX, LuaLaTeX)" in r.output
    assert ("\\author{\\parbox[t]{0.9\\textwidth}{\\centering ? Zoë}}"
            in (out / "latex" / "report.tex").read_text())
    # Latin letters alone: pdflatex with the T1 encoding sets them too, and the note says so.
    w = runner.invoke(app, ["report", *overrides_to_args(overrides), "--format", "tex",
                            "--author", "Łukasz Wąsik"])
    assert ("prints ? for 1 character(s) that pdflatex cannot set (ą); report.html and "
            "report.pdf keep them: type them into the .tex where your template's engine can set "
            "them (XeLaTeX, LuaLaTeX, or pdflatex with \\usepackage[T1]{fontenc})") in w.output
    assert r.exit_code == 0, r.output
    assert r.stdout.strip().splitlines()[-1] == str(out / "latex" / "report.tex")
    assert (out / "latex" / "report.tex").is_file() and (out / "latex" / "references.bib").is_file()
