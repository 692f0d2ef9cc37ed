"""The student's own text: Markdown through markdown-it, HTML escaped, math legible."""
import pytest

from reportgen.config import ConfigError
from reportgen.usertext import read_user_text, tex_to_html, to_html


def test_markdown_paragraphs_emphasis_lists_code_and_links():
    out = to_html("One *two* **three** `four`.\n\n- a\n- b\n\n1. c\n\n[site](https://example.org)")
    assert "<p>One <em>two</em> <strong>three</strong> <code>four</code>.</p>" in out
    assert "<ul>\n<li>a</li>\n<li>b</li>\n</ul>" in out and "<ol>" in out
    assert '<a href="https://example.org">site</a>' in out


def test_pipe_tables_are_tables():
    """GitHub's pipe tables: a student's table was printed as its pipes and dashes."""
    out = to_html("| model | acc |\n|:--|--:|\n| ResNet | 70.2% |\n| a \\| b | *x* |")
    assert "<table>" in out and "|" not in out.replace("a | b", "")
    assert '<th style="text-align:right">acc</th>' in out
    assert '<td style="text-align:left">a | b</td>' in out and "<em>x</em>" in out
    # Without the delimiter row it is a paragraph, as in CommonMark.
    assert "<table>" not in to_html("| a | b |\n| 1 | 2 |")


def test_the_students_headings_sit_below_the_reports_sections():
    """`# Heading` came out as an <h1> the size of the title and `## Heading` as a numbered
    section that renumbered the report's own; they start at h4 now, and stop at h6."""
    out = to_html("# One\n\n## Two\n\n### Three\n\n###### Six\n\nSetext\n===\n\ntext")
    assert out.split("\n")[:5] == ["<h4>One</h4>", "<h5>Two</h5>", "<h6>Three</h6>",
                                   "<h6>Six</h6>", "<h4>Setext</h4>"]
    assert not any(f"<h{k}" in out for k in (1, 2, 3))
    # Link references still resolve with the headings rewritten.
    assert '<a href="https://a.org">x</a>' in to_html("# H\n\n[x][r]\n\n[r]: https://a.org")


@pytest.mark.parametrize("evil", ["<script>alert(1)</script>", '<img src=x onerror="alert(1)">',
                                  "<iframe src='https://x'></iframe>"])
def test_html_in_the_text_is_escaped_not_executed(evil):
    out = to_html(f"Before {evil} after.\n\n{evil}\n")
    assert "<script" not in out and "<img" not in out and "<iframe" not in out
    assert "&lt;" in out


def test_javascript_links_are_not_links():
    assert "href" not in to_html("[x](javascript:alert(1))")


def test_inline_and_display_math_are_set_legibly():
    out = to_html(r"Loss $\alpha^{2} + x_i \leq \frac{1}{2}$ here." "\n\n" r"$$\sum_i p_i = 1$$")
    assert ('<span class="math inline" data-tex="\\alpha^{2} + x_i \\leq \\frac{1}{2}">'
            'α<sup>2</sup>\xa0+ <i>x</i><sub><i>i</i></sub>\xa0≤ 1/2</span>') in out
    assert 'class="math block"' in out and "∑<sub><i>i</i></sub>" in out
    assert "$" not in out


def test_money_is_not_math():
    assert "$5 and $10" in to_html("It costs $5 and $10.")


def test_tex_to_html_escapes_and_keeps_unknown_commands_visible():
    assert tex_to_html(r"a<b") == "<i>a</i>&lt;<wbr><i>b</i>"  # a line may break after "<"
    # ... after a binary operator or relation (at a space that follows it), never after a sign
    assert tex_to_html("x - y = -z") == "<i>x</i>\xa0- <i>y</i>\xa0= -<i>z</i>"
    assert "<wbr>" not in tex_to_html("-x") + tex_to_html("f(a, -b)") + tex_to_html("x_{a+b}")
    assert tex_to_html(r"\weird{x}") == r"\weird<i>x</i>"
    assert tex_to_html(r"\frac{a+b}{c}") == "(<i>a</i>+<i>b</i>)/<i>c</i>"
    assert tex_to_html(r"\sqrt{2}") == "√(2)" and tex_to_html(r"x^") == "<i>x</i><sup></sup>"


@pytest.mark.parametrize("tex", ["x\\", "\\", "{", "}", "{{a}", "a^{b", r"\frac", r"\frac{1}",
                                 r"\mathrm", "_^", "\\\n", r"\sqrt{"])
def test_malformed_math_never_raises(tex):
    assert isinstance(tex_to_html(tex), str) and isinstance(to_html(f"${tex}$"), str)


def test_math_nested_thousands_deep_is_shown_not_a_recursion_error():
    """$x^{x^{...}}$ 3,000 deep was a RecursionError; beyond MAX_MATH_NESTING groups the rest
    is shown as written."""
    from reportgen.usertext import MAX_MATH_NESTING

    for tex in ("x^{" * 3000 + "1" + "}" * 3000, "{" * 20000, r"\frac{" * 3000):
        out = to_html(f"${tex}$")
        assert out.count("<sup>") <= MAX_MATH_NESTING + 1 and "{" in out
    nested = "x^{" * MAX_MATH_NESTING + "1" + "}" * MAX_MATH_NESTING
    assert tex_to_html(nested).count("<sup>") == MAX_MATH_NESTING and "{" not in tex_to_html(nested)


def test_read_user_text(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text('results = """Para one.\n\nPara *two*."""\nconclusion = "  "\n')
    assert read_user_text(str(f)) == {"results": "Para one.\n\nPara *two*."}
    assert read_user_text("") == {}
    with pytest.raises(ConfigError, match=r"report.user_text .*nope.toml does not exist: name "
                                          r"your text's TOML file"):
        read_user_text(str(tmp_path / "nope.toml"))
    f.write_text("summary = 'x'\n")
    with pytest.raises(ConfigError, match="unknown section 'summary'"):
        read_user_text(str(f))
    f.write_text(f"{'s' * 5000} = 'x'\n")  # quoted in part, not a 5,000-character line
    with pytest.raises(ConfigError, match=r"unknown section 'sss.*\(5,002 characters\)"):
        read_user_text(str(f))
    f.write_text("results = 3\n")
    with pytest.raises(ConfigError, match="results must be a string"):
        read_user_text(str(f))
    # Text beyond MAX_USER_CHARS in all sections together is refused, not typeset for an hour.
    from reportgen.usertext import MAX_USER_CHARS

    half = "w " * (MAX_USER_CHARS // 4)
    f.write_text(f'results = "{half}"\ndiscussion = "{half}"\n')
    assert len(read_user_text(str(f))["results"]) == MAX_USER_CHARS // 2 - 1
    f.write_text(f'results = "{half}"\ndiscussion = "{half}x"\n')
    with pytest.raises(ConfigError, match=r"holds 200,001 characters of text: use at most 200,000"):
        read_user_text(str(f))


def test_user_text_with_control_characters_is_refused(tmp_path):
    """TOML's \\u escapes can put any character in a string; a control character would reach
    the PDF and the LaTeX export (where pdflatex stops at it). Tabs and newlines are text."""
    f = tmp_path / "mine.toml"
    f.write_text('discussion = "Rotations\\u0007 matter."\n')
    with pytest.raises(ConfigError, match=r"mine.toml: discussion contains the control "
                                          r"character U\+0007: remove it"):
        read_user_text(str(f))
    f.write_text('discussion = "Rotations\\tmatter.\\n\\nA lot."\n')
    assert read_user_text(str(f)) == {"discussion": "Rotations\tmatter.\n\nA lot."}


@pytest.mark.parametrize("image", ["![cat](http://example.org/cat.png)", "![c](cat.png)",
                                   "![c](figs/cat.png 'My cat')"])
def test_images_in_the_students_text_are_refused(tmp_path, image):
    """An image would be fetched while the PDF is built (a URL from the network, a path from
    any file) and the HTML would no longer stand alone."""
    f = tmp_path / "mine.toml"
    f.write_text(f'results = """Look:\n\n{image}\n"""\n')
    with pytest.raises(ConfigError, match=r"mine.toml: results has an image \('.+'\): the "
                                          r"report holds only the figures its studies draw"):
        read_user_text(str(f))
    f.write_text('results = "A [link](https://example.org), and ! [brackets] are text."\n')
    assert read_user_text(str(f))["results"].startswith("A [link]")


def test_the_pdf_build_fetches_only_embedded_data():
    from reportgen.report import _embedded_only, pdf_engine

    fetcher = _embedded_only(pdf_engine())
    for url in ("file:///etc/hostname", "http://example.org/x.png", "https://example.org/"):
        with pytest.raises(ValueError, match="disallowed protocol"):
            fetcher.fetch(url)
    assert fetcher.fetch("data:text/plain,hi").read() == b"hi"
    # markdown-it never makes a file: address a link or an image: it stays text.
    assert "<img" not in to_html("![c](file:///etc/hostname)")
