"""The student's own text: a TOML file with one Markdown string per report section.

Markdown is parsed by markdown-it-py (CommonMark) with raw HTML turned off, so a `<script>` in
the text is printed, not run, and links keep markdown-it's scheme check (no `javascript:`).
Inline math `$...$` and display math `$$...$$` come from mdit-py-plugins' dollarmath; as
WeasyPrint has no TeX engine, `tex_to_html` sets the common subset legibly with Unicode and
<sup>/<sub> (Greek letters, operators, sub- and superscripts, fractions, roots).
"""
from __future__ import annotations

import html
import re
from functools import lru_cache
from pathlib import Path

from .config import ConfigError, parse_toml, shown, text_problem
from .files import missing, read_text

SECTIONS = ("abstract", "introduction", "method", "results", "discussion", "conclusion")


# The student's text in all sections together. 118,000 characters made 36 pages in 11 s;
# the 16 MiB a text file may hold would have kept WeasyPrint busy for most of an hour.
MAX_USER_CHARS = 200_000


def read_user_text(path: str) -> dict[str, str]:
    """Section name -> the Markdown text as written; {} when no file is set."""
    if not path:
        return {}
    p = Path(path)
    if not p.exists():  # "cannot be read as TOML ([Errno 2] ...)"
        raise ConfigError(f"report.user_text {p} {missing(p)}: name your text's TOML file "
                          "(a relative path starts from the folder you run reportgen in), or "
                          "set report.user_text = \"\"")
    try:
        raw = parse_toml(read_text(p))
    except (OSError, ValueError) as e:  # ValueError: TOML, UTF-8, nesting, long integers
        raise ConfigError(f"report.user_text {p} cannot be read as TOML ({e}): fix it or set "
                          "report.user_text = \"\"") from e
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"report.user_text {p}: unknown section {shown(unknown[0])}; use "
                          f"{', '.join(SECTIONS)}")
    for k, v in raw.items():
        if not isinstance(v, str):
            raise ConfigError(f"report.user_text {p}: {k} must be a string (use \"\"\"...\"\"\" "
                              "for several paragraphs)")
        problem = text_problem(v)
        if problem:
            raise ConfigError(f"report.user_text {p}: {k} contains {problem}: remove it")
        image = _first_image(v)
        if image is not None:
            # An image would be fetched when the PDF is built (a URL: the network; a path: any
            # file), and report.html would no longer stand alone.
            raise ConfigError(f"report.user_text {p}: {k} has an image ({shown(image)}): the "
                              "report holds only the figures its studies draw; describe it in "
                              "words, or link to it with [text](https://...)")
    total = sum(len(v) for v in raw.values())
    if total > MAX_USER_CHARS:
        raise ConfigError(f"report.user_text {p} holds {total:,} characters of text: use at "
                          f"most {MAX_USER_CHARS:,} (about 60 pages) in all sections")
    return {k: v.strip() for k, v in raw.items() if v.strip()}


# --- math ----------------------------------------------------------------------------------

_SYMBOLS = {
    **{g: chr(c) for g, c in zip(
        ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi "
         "rho sigma tau upsilon phi chi psi omega").split(), range(0x3B1, 0x3CA)) if g != "omicron"},
    **{g: chr(c) for g, c in zip(
        "Gamma Delta Theta Lambda Xi Pi Sigma Upsilon Phi Psi Omega".split(),
        (0x393, 0x394, 0x398, 0x39B, 0x39E, 0x3A0, 0x3A3, 0x3A5, 0x3A6, 0x3A8, 0x3A9))},
    "varepsilon": "ε", "varphi": "φ", "ell": "ℓ", "times": "×", "cdot": "·", "pm": "±",
    "mp": "∓", "leq": "≤", "le": "≤", "geq": "≥", "ge": "≥", "neq": "≠", "ne": "≠",
    "approx": "≈", "sim": "∼", "equiv": "≡", "propto": "∝", "infty": "∞", "sum": "∑",
    "prod": "∏", "int": "∫", "partial": "∂", "nabla": "∇", "in": "∈", "notin": "∉",
    "subset": "⊂", "subseteq": "⊆", "cup": "∪", "cap": "∩", "forall": "∀", "exists": "∃",
    "to": "→", "rightarrow": "→", "leftarrow": "←", "Rightarrow": "⇒", "mapsto": "↦",
    "circ": "∘", "ldots": "…", "dots": "…", "cdots": "⋯", "mathbb{R}": "ℝ", "degree": "°",
    "log": "log", "exp": "exp", "max": "max", "min": "min", "arg": "arg", "sin": "sin",
    "cos": "cos", "lvert": "|", "rvert": "|", "{": "{", "}": "}", "%": "%", "$": "$",
    "_": "_", "&": "&", ",": " ", ";": " ", "quad": " ", "!": "",
}
_UPRIGHT = ("log", "exp", "max", "min", "arg", "sin", "cos")


def _group(s: str, i: int) -> tuple[str, int]:
    """The argument starting at s[i]: a {braced group} or one character / command."""
    if i >= len(s):
        return "", i
    if s[i] == "{":
        depth = 0
        for j in range(i, len(s)):
            depth += {"{": 1, "}": -1}.get(s[j], 0)
            if depth == 0:
                return s[i + 1:j], j + 1
        return s[i + 1:], len(s)
    if s[i] == "\\":
        m = re.match(r"\\([A-Za-z]+|.)?", s[i:], flags=re.S)
        return m.group(0), i + len(m.group(0))
    return s[i], i + 1


# Groups inside one another in the student's math, beyond which the rest is shown as written:
# the renderer recurses once per group ($x^{x^{...}}$ 3,000 deep was a RecursionError), and
# the LaTeX export passes such math through only within this depth.
MAX_MATH_NESTING = 16


def _atom(arg: str, depth: int) -> str:
    """An argument of a fraction: parenthesised unless it is a single symbol."""
    body = tex_to_html(arg, depth)
    return body if len(arg.strip()) <= 1 or re.fullmatch(r"\\[A-Za-z]+", arg.strip()) else f"({body})"


# Where TeX may break a line in inline math: after a binary operator or a relation outside
# any group (not after a sign: -x). The HTML breaks there too (a <wbr>) and nowhere else (its spaces are no-break
# spaces): with the whole formula unbreakable, a long sum ran 29 cm past the right margin.
_BREAK_AFTER = set("+-=<>") | {"times", "cdot", "pm", "mp", "leq", "le", "geq", "ge", "neq",
                               "ne", "approx", "sim", "equiv", "propto", "to", "rightarrow",
                               "leftarrow", "Rightarrow", "mapsto", "in", "notin", "subset",
                               "subseteq", "cup", "cap"}


def _binary(out: list[str]) -> bool:
    """Whether an operator about to follow `out` joins two operands (x - y), not a sign (-x,
    x = -y, (-x)): only there may the line break after it."""
    for piece in reversed(out):
        if piece != "\xa0":
            return piece != "<wbr>" and not piece.endswith(("(", "[", ","))
    return False


def tex_to_html(tex: str, depth: int = 0) -> str:
    """A legible HTML rendering of simple TeX math; anything unknown is shown as written, and
    so is whatever lies more than MAX_MATH_NESTING groups deep. A line may break only after
    an operator or a relation at the top level (see _BREAK_AFTER)."""
    if depth > MAX_MATH_NESTING:
        return html.escape(tex).replace(" ", "\xa0")
    inner = depth + 1
    out, i = [], 0
    while i < len(tex):
        c = tex[i]
        if c in "^_":
            arg, i = _group(tex, i + 1)
            tag = "sup" if c == "^" else "sub"
            out.append(f"<{tag}>{tex_to_html(arg, inner)}</{tag}>")
        elif c == "{" or c == "}":
            arg, i = _group(tex, i) if c == "{" else ("", i + 1)
            out.append(tex_to_html(arg, inner))
        elif c == "\\":
            m = re.match(r"\\([A-Za-z]+|.)?", tex[i:], flags=re.S)
            name, i = m.group(1) or "", i + len(m.group(0))
            if name in ("frac", "dfrac", "tfrac"):
                num, i = _group(tex, i)
                den, i = _group(tex, i)
                out.append(f"{_atom(num, inner)}/{_atom(den, inner)}")
            elif name == "sqrt":
                arg, i = _group(tex, i)
                out.append(f"√({tex_to_html(arg, inner)})")
            elif name in ("mathrm", "text", "operatorname", "mathbf", "mathit", "textrm"):
                arg, i = _group(tex, i)
                tag = {"mathbf": "b", "mathit": "i"}.get(name, "span")
                cls = ' class="upright"' if tag == "span" else ""
                body = html.escape(arg) if name.startswith("text") else tex_to_html(arg, inner)
                out.append(f"<{tag}{cls}>{body}</{tag}>")
            elif name == "mathbb":
                arg, i = _group(tex, i)
                out.append({"R": "ℝ", "N": "ℕ", "Z": "ℤ", "E": "𝔼", "P": "ℙ"}.get(arg, html.escape(arg)))
            elif name in _SYMBOLS:
                sym = html.escape(_SYMBOLS[name]).replace(" ", "\xa0")
                binary = depth == 0 and name in _BREAK_AFTER and _binary(out)
                out.append(f'<span class="upright">{sym}</span>' if name in _UPRIGHT else sym)
                if binary:
                    out.append("<wbr>")
            else:
                out.append(html.escape("\\" + name))
        elif c.isalpha():
            j = i
            while j < len(tex) and tex[j].isalpha():
                j += 1
            out.append(f"<i>{html.escape(tex[i:j])}</i>")
            i = j
        else:
            binary = depth == 0 and c in _BREAK_AFTER and _binary(out)
            out.append("\xa0" if c == " " else html.escape(c))
            if binary:
                out.append("<wbr>")
            i += 1
    # An operator followed by a space breaks at that space (an ordinary one, which vanishes at
    # the end of a line), not before it: "x =\n y" would start its line with a space.
    return "".join(out).replace("<wbr>\xa0", " ")


@lru_cache(maxsize=1)
def _parser():
    from markdown_it import MarkdownIt
    from mdit_py_plugins.dollarmath import dollarmath_plugin

    # GitHub's pipe tables on top of CommonMark: a student's small table of their own numbers
    # was printed as its pipes and dashes.
    md = MarkdownIt("commonmark", {"html": False, "typographer": False}).enable("table")
    # No space inside the dollars and no digit after the closing one, so "$5 and $10" stay money.
    dollarmath_plugin(md, allow_space=False, allow_digits=False, allow_labels=False)

    # Keep the TeX as written in data-tex: the LaTeX export passes it through (reportgen.latex).
    def inline(self, tokens, idx, options, env):
        tex = tokens[idx].content
        return (f'<span class="math inline" data-tex="{html.escape(tex.strip())}">'
                f"{tex_to_html(tex.strip())}</span>")

    def block(self, tokens, idx, options, env):
        tex = tokens[idx].content
        return (f'<div class="math block" data-tex="{html.escape(tex.strip())}">\n'
                f"{tex_to_html(tex.strip())}\n</div>\n")

    md.add_render_rule("math_inline", inline)
    md.add_render_rule("math_block", block)
    return md


def _first_image(markdown: str) -> str | None:
    """The address of the first Markdown image in the text, or None."""
    if "![" not in markdown:  # no image syntax: no need for the parser (and its plug-in)
        return None
    for token in _parser().parse(markdown):
        for child in token.children or ():
            if child.type == "image":
                return str(child.attrs.get("src", ""))
    return None


# The level of the student's top heading (`#`): below the report's own sections (h2) and
# subsections (h3), so that the student's headings never take a section number or shift the
# report's own. As written, `# Heading` came out as an <h1> the size of the title and
# `## Heading` as a numbered section that renumbered every section after it.
USER_HEADING = 4


def to_html(markdown: str) -> str:
    """The student's Markdown as HTML: raw HTML escaped, math set with tex_to_html, headings
    from USER_HEADING down (`#` -> h4, `##` -> h5, deeper -> h6)."""
    md = _parser()
    tokens = md.parse(markdown)
    for t in tokens:
        if t.type in ("heading_open", "heading_close"):
            t.tag = f"h{min(int(t.tag[1:]) + USER_HEADING - 1, 6)}"
    return md.renderer.render(tokens, md.options, {})
