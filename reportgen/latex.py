"""The report as LaTeX: `OUT/latex/report.tex`, `references.bib` and the figures as vector PDFs.

The LaTeX is made from the same rendered report as the HTML (same context, same templates), so
the two never drift apart: the HTML, before its figure and citation tokens are resolved, is
walked element by element and each element becomes its LaTeX counterpart (sections,
`figure` environments with `\\label`/`\\ref`, `booktabs` tables, `\\cite` into the `.bib`).
Text is escaped for LaTeX; the few non-ASCII symbols the report uses are mapped to LaTeX
commands. The student's own math (`$...$` in the Markdown) is passed through as TeX when it
uses only known commands, and printed as text otherwise, so the export never runs arbitrary
TeX from a file.

The body between the `%% BODY` markers can be pasted into a course template; it needs only
graphicx, booktabs, amsmath, amssymb, textcomp and hyperref, which every TeX distribution and
the common course templates load.
"""
from __future__ import annotations

import re
import unicodedata
from html.parser import HTMLParser
from pathlib import Path

from .files import atomic_write_all, read_figure
from .references import REFERENCES

_TOKEN = re.compile(r"\x01(ref|cite|bib):([^\x02]*)\x02")
_SPECIALS = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&",
             "#": r"\#", "^": r"\^{}", "_": r"\_", "%": r"\%", "~": r"\textasciitilde{}",
             "<": "$<$", ">": "$>$", "|": "$|$"}
_UNICODE = {
    "\xa0": "~", "×": r"$\times$", "°": r"\textdegree{}", "±": r"$\pm$", "−": "$-$",
    "–": "--", "—": "---", "⋆": r"$\star$", "∈": r"$\in$", "→": r"$\to$", "≤": r"$\leq$",
    "≥": r"$\geq$", "≈": r"$\approx$", "·": r"$\cdot$", "…": r"\ldots{}", "’": "'", "‘": "`",
    "“": "``", "”": "''", "²": r"\textsuperscript{2}", "√": r"$\surd$", "∞": r"$\infty$",
    "∑": r"$\sum$", "ℝ": r"$\mathbb{R}$", "∂": r"$\partial$", "∇": r"$\nabla$",
    "≠": r"$\neq$", "∼": r"$\sim$", "≡": r"$\equiv$", "∝": r"$\propto$", "∫": r"$\int$",
    "∏": r"$\prod$", "←": r"$\leftarrow$", "⇒": r"$\Rightarrow$", "↦": r"$\mapsto$",
    "∘": r"$\circ$", "⋯": r"$\cdots$", "∓": r"$\mp$", "ℓ": r"$\ell$", "∀": r"$\forall$",
    "∃": r"$\exists$", "∉": r"$\notin$", "⊂": r"$\subset$", "⊆": r"$\subseteq$",
    "∪": r"$\cup$", "∩": r"$\cap$", "ℕ": r"$\mathbb{N}$", "ℤ": r"$\mathbb{Z}$",
    "\xad": r"\-",  # a soft hyphen: where the word may break
    # Invisible characters pasted with text: a zero-width space is where a line may break;
    # the joiners and the byte-order mark set nothing (an empty group; they were "?").
    "\u200b": r"\allowbreak{}", "\u200c": "{}", "\u200d": "{}", "\u2060": "{}", "\ufeff": "{}",
}
_COMMAND = re.compile(r"\\([A-Za-z]+|.)", re.S)  # a control word, or a control symbol


def code_block(text: str) -> str:
    """Preformatted lines (the appendix's settings) as escaped typewriter lines, each its own
    paragraph, indentation kept; long lines wrap at spaces.

    Not `verbatim`: its text ends at the first `\\end{verbatim}` in it, so a setting such as
    report.title = '\\end{verbatim}^^5cinput{/etc/hostname}' ended the environment, and TeX
    read `^^5c` as a backslash: the export ran `\\input` of any file named in the settings.
    Here every character is escaped as in the text."""
    out = []
    for line in text.split("\n"):
        body = line.lstrip(" ")
        out.append("~" * (len(line) - len(body)) + _tt_escape(body) if body.strip()
                   else r"\mbox{}")
    return ("\\par\\smallskip{\\small\\ttfamily\\raggedright\\setlength{\\parindent}{0pt}"
            "\\setlength{\\parskip}{0pt}\n" + "\\par\n".join(out) + "\\par}\n")


# A typewriter font has the ASCII glyph at each of these positions, in OT1 and T1 alike;
# `\{` and `\textbackslash` would borrow them from the maths font (a font warning).
_TT = {ch: f"{{\\char{ord(ch)}}}" for ch in "\\{}^~_<>|"}


def _tt_escape(text: str) -> str:
    return breakable(text, lambda ch: _TT.get(ch) or escape(ch))


# Shrinks a table wider than the text to its width (a narrower one keeps its size).
_FIT_WIDTH = "\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{%\n"
ROWS_PER_FLOAT = 45  # body rows of a table in one float (60 at \small fill an A4 page)
LONG_WORD = 30  # characters without a space, past which a run may break anywhere
# A legal line break, taken about as readily as a hyphen, with a little stretch: a justified
# line made of one such run has no spaces to stretch, and came out a few points overfull.
_BREAK = "\\penalty50\\hskip0pt plus0.5pt\\relax "


def breakable(text: str, esc=None) -> str:
    """`text` escaped (character by character with `esc`, else as plain text), where a run of
    more than LONG_WORD characters without a space (a URL, an identifier in a code block) may
    break between any two of its characters. TeX breaks lines only at spaces and hyphens, and
    such a run in the student's text ran up to 60 cm past the margin."""
    esc = esc or escape
    parts = re.split(r"(\S{%d,})" % (LONG_WORD + 1), text)
    return "".join(_BREAK.join(esc(ch) for ch in part) if i % 2 else
                   "".join(esc(ch) for ch in part) for i, part in enumerate(parts))


class LatexError(RuntimeError):
    """The report holds something the LaTeX export cannot write (a bug, not an input)."""


# The Greek alphabet as TeX sets it, written out: Unicode's names are no guide (λ is "GREEK
# SMALL LETTER LAMDA", and $\lamda$ stopped pdflatex; so did $\Alpha$ and $\Heta$). Capitals
# that look like Latin ones have no command of their own and are set as upright Latin letters,
# the small omicron as an italic o.
_GREEK = {
    **dict(zip("αβγδεζηθικλμνξοπρςστυφχψω",
               r"\alpha \beta \gamma \delta \epsilon \zeta \eta \theta \iota \kappa \lambda \mu "
               r"\nu \xi o \pi \rho \varsigma \sigma \tau \upsilon \phi \chi \psi \omega".split())),
    **dict(zip("ΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩ",
               r"\mathrm{A} \mathrm{B} \Gamma \Delta \mathrm{E} \mathrm{Z} \mathrm{H} \Theta "
               r"\mathrm{I} \mathrm{K} \Lambda \mathrm{M} \mathrm{N} \Xi \mathrm{O} \Pi "
               r"\mathrm{P} \Sigma \mathrm{T} \Upsilon \Phi \mathrm{X} \Psi \Omega".split())),
}


# The characters of Latin-1 and Latin Extended-A (U+00A1-U+017F) that utf8 inputenc maps to a
# command the export's default font encoding (OT1) lacks: "Command \k unavailable in encoding
# OT1" stopped pdflatex on a name such as "Wąsik" or "Guðrún". Found by compiling each
# character of the range alone (pdflatex, TeX Live 2022); the others there compile.
_OT1_MISSING = frozenset("«»ÐÞðþĄąĐđĘęĦħĮįĸĿŀŉŊŋŦŧŲųſ")


def _escape_char(ch: str) -> str | None:
    """One character as LaTeX, or None where pdflatex with utf8 inputenc cannot set it."""
    if ch in _SPECIALS:
        return _SPECIALS[ch]
    if ch in _UNICODE:
        return _UNICODE[ch]
    if ord(ch) < 128 and (ch.isprintable() or ch in "\t\n\r"):
        return ch
    if 0xA1 <= ord(ch) < 0x180 and ch not in _OT1_MISSING:
        return ch  # the accented letters and Latin-1 symbols (£, ©, ¿) utf8 inputenc sets
    return f"${_GREEK[ch]}$" if ch in _GREEK else None


def escape(text: str) -> str:
    """Plain text as LaTeX: specials escaped, known symbols as commands, others as '?'."""
    return "".join(_escape_char(ch) or "?" for ch in text)


def pdf_string(text: str) -> str:
    """Text for hyperref's PDF metadata (\\hypersetup{pdftitle=...}): TeX's specials escaped,
    every other character as it is, which hyperref writes into the PDF as Unicode (escape()'s
    $\\psi$ or ? there made a warning per formula, or lost the letter)."""
    return "".join(_SPECIALS.get(ch, ch) if ch not in "<>|" else ch
                   for ch in text if ch.isprintable())


def unset_characters(html: str) -> list[str]:
    """The characters of the report's text (not its markup) that the export prints as '?'."""
    text = _TOKEN.sub(" ", re.sub(r"<[^>]*>", " ", html))  # tokens: figure and citation marks
    return sorted({ch for ch in text if not ch.isspace() and _escape_char(ch) is None})


def safe_math(tex: str) -> bool:
    """Math from the student's text is passed to LaTeX only where it is safe and compiles as the
    HTML shows it; otherwise it is printed as text. Safe: every command one the HTML renderer
    knows (no \\input, \\write, \\def, ...), and no `^^`, which TeX reads before any command
    (`^^5c` is a backslash, so `^^5cinput` would be \\input). Compiles: ASCII only (utf8
    inputenc sets no Greek letter in math), no bare %, # or & (a % comments out the closing
    $), braces balanced and at most MAX_MATH_NESTING deep, each \\left with its \\right, and
    no \\\\ (a line break ends inline math)."""
    from .usertext import _SYMBOLS, MAX_MATH_NESTING

    allowed = set(_SYMBOLS) | {"frac", "dfrac", "tfrac", "sqrt", "mathrm", "text", "mathbf",
                               "mathit", "mathbb", "operatorname", "textrm", "left", "right"}
    if not tex.isascii() or "^^" in tex:
        return False
    depth, sides, i = 0, 0, 0
    while i < len(tex):
        c = tex[i]
        if c == "\\":
            m = _COMMAND.match(tex, i)
            name = m.group(1) if m else ""
            if name == "\\" or not name or (name.isalpha() and name not in allowed):
                return False
            sides += {"left": 1, "right": -1}.get(name, 0)
            if sides < 0:
                return False
            i = m.end()
            continue
        if c in "%#&":
            return False
        depth += {"{": 1, "}": -1}.get(c, 0)
        if not 0 <= depth <= MAX_MATH_NESTING:
            return False
        i += 1
    return depth == 0 and sides == 0


# --- a small DOM of the rendered report ---------------------------------------------------------

class _Node:
    def __init__(self, tag: str, attrs: dict, parent: "_Node | None"):
        self.tag, self.attrs, self.parent, self.children = tag, attrs, parent, []

    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)


# HTML's void elements: no end tag, so nothing that follows is inside them (<wbr>: where math
# may break; an unlisted one swallowed the rest of its parent).
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
         "track", "wbr"}


class _Builder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = _Node("root", {}, None)
        self.cur = self.root

    def handle_starttag(self, tag, attrs):
        node = _Node(tag, dict(attrs), self.cur)
        self.cur.children.append(node)
        if tag not in _VOID:
            self.cur = node

    def handle_endtag(self, tag):
        n = self.cur
        while n is not None and n.tag != tag:
            n = n.parent
        if n is not None and n.parent is not None:
            self.cur = n.parent

    def handle_data(self, data):
        self.cur.children.append(data)


def parse(html: str) -> _Node:
    b = _Builder()
    b.feed(html)
    b.close()
    return b.root


# --- HTML elements -> LaTeX ---------------------------------------------------------------------

class _Writer:
    def __init__(self, figures: dict[str, str]):
        self.figures = figures  # figure name -> its file name under figures/
        self.title = self.author = self.date = ""
        self.in_appendix = False
        self.lists: list[str] = []  # the list environments open around the current node
        self.in_heading = False

    def text(self, s: str, pre: bool = False) -> str:
        out, last = [], 0
        for m in _TOKEN.finditer(s):
            out.append(self._plain(s[last:m.start()], pre))
            what, arg = m.group(1), m.group(2)
            if what == "ref":
                kind, name = arg.split("/", 1)
                out.append(f"\\ref{{{'fig' if kind == 'figure' else 'tab'}:{name}}}")
            elif what == "cite":
                out.append(f"\\cite{{{arg}}}")
            else:
                out.append("\n%% BIBLIOGRAPHY\n")
            last = m.end()
        out.append(self._plain(s[last:], pre))
        return "".join(out)

    @staticmethod
    def _plain(s: str, pre: bool) -> str:
        if pre:
            return s
        return breakable(re.sub(r"[ \t\r\n]+", " ", s))  # not \xa0: it becomes ~

    def children(self, node: _Node, pre: bool = False) -> str:
        return "".join(self.text(c, pre) if isinstance(c, str) else self.node(c)
                       for c in node.children)

    def node(self, n: _Node) -> str:
        tag, cls = n.tag, n.classes()
        if tag in ("head", "style", "title", "script"):
            return ""
        if tag == "header":
            self.title = self.children(_find(n, "h1")).strip()
            authors = _find(n, "div", "authors")
            affil = _find(n, "div", "affil")
            self.author = self.children(authors).strip() if authors else ""
            self.date = self.children(affil).strip() if affil else ""
            return ""
        if tag == "section" and "abstract" in cls:
            body = "".join(self.node(c) if not isinstance(c, str) else self.text(c)
                           for c in n.children if isinstance(c, str) or c.tag != "h2")
            return f"\\begin{{abstract}}\n{body.strip()}\n\\end{{abstract}}\n\n"
        if tag == "section" and "appendix" in cls:
            self.in_appendix = True
            return "\n%% APPENDIX\n\\appendix\n" + self.children(n)
        if tag == "h2":
            star = "*" if "unnumbered" in cls else ""
            title = self.children(n).strip()
            if title == "References":
                return ""  # the bibliography has its own heading
            return f"\n\\section{star}{{{title}}}\n"
        if tag == "h3":
            return f"\n\\subsection{{{self.children(n).strip()}}}\n"
        if tag in ("h4", "h5", "h6"):  # the student's own headings: unnumbered, run-in
            self.in_heading = True
            try:
                title = self.children(n).strip()
            finally:
                self.in_heading = False
            if self.lists:  # \paragraph right after \item: "Something's wrong--perhaps a
                # missing \item"
                return f"\\{'textbf' if tag == 'h4' else 'textit'}{{{title}}}\\par\n"
            # Starred: nothing goes to the .aux, where a \% in the title was written as a bare
            # % that commented out the rest of the entry ("File ended while scanning use of
            # \@writefile").
            return f"\n\\{'paragraph' if tag == 'h4' else 'subparagraph'}*{{{title}}}\n"
        if tag == "p":
            return self.children(n).strip() + "\n\n"
        if tag in ("b", "strong"):
            return f"\\textbf{{{self.children(n)}}}"
        if tag in ("i", "em"):
            return f"\\emph{{{self.children(n)}}}"
        if tag == "code":  # paths break after a slash: /tmp/q5/quick ran into the margin
            return "\\texttt{" + self.children(n).replace("/", "/\\allowbreak{}") + "}"
        if tag == "sub":
            return f"\\textsubscript{{{self.children(n)}}}"
        if tag == "sup":
            return f"\\textsuperscript{{{self.children(n)}}}"
        if tag == "a":
            href = n.attrs.get("href", "")
            return f"\\href{{{escape(href)}}}{{{self.children(n)}}}" if href else self.children(n)
        if tag == "br":  # a heading is one line (a Setext heading may hold a break)
            # \leavevmode: a break that opens a paragraph or a list item ends an empty line;
            # a bare \\ there stopped pdflatex ("There's no line here to end"). \relax: a
            # "[" on the next line was read as \\'s optional length ("Missing number").
            return " " if self.in_heading else "\\leavevmode\\\\\\relax\n"
        if "math" in cls:
            tex = n.attrs.get("data-tex")
            if tex is not None and safe_math(tex):
                return f"\\[{tex}\\]\n" if "block" in cls else f"${tex}$"
            return self.children(n)  # shown as the HTML shows it, as text
        if "equation" in cls:
            return f"\\emph{{{self.children(n)}}}"
        if tag in ("ul", "ol"):
            return self.list(n, "enumerate" if tag == "ol" else "itemize")
        if tag == "blockquote":
            return self.quote(n)
        if tag == "hr":  # the student's thematic break (--- or ***): a rule, as the HTML draws
            # \hrule, set between paragraphs: a \rule in a paragraph of its own followed a
            # run-in heading onto its line and ran past the margin.
            return "\n\\par\\medskip\\hrule\\medskip\n\n"
        if tag == "figure":
            return self.figure(n)
        if tag == "table":
            return self.user_table(n) if _inside(n, cls="user-text") else self.table(n)
        if tag == "pre":
            return code_block(n.text())
        return self.children(n)

    def list(self, n: _Node, env: str) -> str:
        """A list environment, numbered from the Markdown's first number as the HTML is. A
        list nested deeper than LaTeX allows (4 of a kind, 6 in all: "Too deeply nested"
        stopped pdflatex) becomes paragraphs, each marked with a dash or its number, inside the
        enclosing item."""
        items = [li for li in n.children if not isinstance(li, str) and li.tag == "li"]
        numbered = env == "enumerate"
        start = int(n.attrs.get("start") or 1) if numbered else 1
        if self.lists.count(env) >= 4 or len(self.lists) >= 6:
            return "".join(f"\\par {f'{start + k}.' if numbered else '--'} "
                           f"{self.children(li).strip()}\n"
                           for k, li in enumerate(items)) + "\\par\n"
        self.lists.append(env)
        try:
            # {}: an item that starts with "[" was read as \item's optional label, and lost
            # its bullet to the bracketed words
            body = "".join(f"  \\item{{}} {self.children(li).strip()}\n" for li in items)
        finally:
            self.lists.pop()
        counter = ("enumi", "enumii", "enumiii", "enumiv")[self.lists.count(env)]
        first = f"\\setcounter{{{counter}}}{{{start - 1}}}\n" if start != 1 else ""
        return f"\\begin{{{env}}}\n{first}{body}\\end{{{env}}}\n"

    def quote(self, n: _Node) -> str:
        """An indented quote, as the HTML indents it. LaTeX's quote is a list, so it counts
        towards the six levels lists may nest; deeper, the quote's paragraphs are set plain."""
        if len(self.lists) >= 6:
            return self.children(n).strip() + "\n\n"
        self.lists.append("quote")
        try:
            body = self.children(n).strip()
        finally:
            self.lists.pop()
        return f"\\begin{{quote}}\n{body}\n\\end{{quote}}\n\n"

    def figure(self, n: _Node) -> str:
        name = n.attrs.get("id", "").removeprefix("fig-")
        if name not in self.figures:
            raise LatexError(f"figure {name!r} has no file")
        cap = _find(n, "figcaption")
        width = {"narrow": "0.75", "small": "0.5"}
        w = next((width[c] for c in n.classes() if c in width), "1.0")
        return ("\\begin{figure}[htbp]\n\\centering\n"
                f"\\includegraphics[width={w}\\linewidth]{{figures/{self.figures[name]}}}\n"
                f"\\caption{{{self._caption(cap)}}}\n\\label{{fig:{name}}}\n\\end{{figure}}\n\n")

    def _caption(self, cap: _Node | None) -> str:
        if cap is None:
            return ""
        kids = list(cap.children)
        # Drop the HTML's own "Figure 3." / "Table 2." prefix: LaTeX numbers them itself.
        while kids and isinstance(kids[0], str) and not kids[0].strip():
            kids.pop(0)
        if kids and not isinstance(kids[0], str) and kids[0].tag == "b":
            kids.pop(0)
        return "".join(self.text(c) if isinstance(c, str) else self.node(c) for c in kids).strip()

    def _grid(self, n: _Node, align_of) -> tuple[str, list[str], list[list[str]]]:
        """A table's column alignment (`align_of` a header cell: "l", "c" or "r"), its header
        row (the first, when it is in <thead>) and its body rows, each a list of lines (a
        \\midrule before a total row)."""
        rows = [(tr, [c for c in tr.children if not isinstance(c, str) and c.tag in ("th", "td")])
                for tr in _all(n, "tr")]
        ncol = max((len(cells) for _, cells in rows), default=1)
        align = ("".join(align_of(c) for c in rows[0][1]) if rows else "") + "l" * ncol
        head: list[str] = []
        body: list[list[str]] = []
        for k, (tr, cells) in enumerate(rows):
            line = " & ".join(self.children(c).strip() for c in cells) + " \\\\"
            if k == 0 and _inside(tr, "thead"):
                head = [line]
            else:
                body.append(["\\midrule", line] if "total" in tr.classes() else [line])
        return align[:ncol], head, body

    def user_table(self, n: _Node) -> str:
        """A table in the student's text (a Markdown pipe table): booktabs rules, each column
        aligned as its Markdown says, set where it stands, neither a float nor numbered (the
        HTML numbers only the report's own tables, and a float in a list item stops pdflatex:
        "Not in outer par mode"). Wider than the text, it is scaled down to fit; a box never
        breaks across pages, so one longer than ROWS_PER_FLOAT rows is set in parts that
        repeat its header (one part ran off the page)."""
        align, head, body = self._grid(n, lambda c: {"right": "r", "center": "c"}.get(
            re.sub(r".*text-align:\s*(\w+).*", r"\1", c.attrs.get("style") or ""), "l"))
        return "".join(f"\\begin{{center}}\\small\n{_tabular(align, head, part)}\\end{{center}}\n\n"
                       for part in _parts(body)) if head or body else ""

    def table(self, n: _Node) -> str:
        """A booktabs table in a float; one of more than ROWS_PER_FLOAT body rows is split
        into floats of at most that many, each repeating the header, the later ones headed
        "Table N (continued)": a float never breaks across pages, and the run table of a
        report with 12 seeds (72 rows) ran off the bottom of its page."""
        cap = _find(n, "caption")
        name = cap.attrs.get("data-name", "") if cap else ""
        align, head, body = self._grid(n, lambda c: "r" if "num" in c.classes() else "l")
        out = []
        for k, part in enumerate(_parts(body)):
            if k == 0:
                label = f"\\label{{tab:{name}}}\n" if name else ""
                top = f"\\caption{{{self._caption(cap)}}}\n{label}"
            else:
                ref = f"Table~\\ref{{tab:{name}}} " if name else ""
                top = f"{ref}(continued)\\par\\smallskip\n"
            out.append("\\begin{table}[htbp]\n\\centering\\small\n" + top
                       + _tabular(align, head, part) + "\\end{table}\n\n")
        # Split, the parts are set before the text goes on: floats drift, and the continuation
        # came out after the appendix's settings that follow the run table.
        return "".join(out) + ("\\clearpage\n\n" if len(out) > 1 else "")


def _parts(body: list[list[str]]) -> list[list[list[str]]]:
    """Body rows in parts of at most ROWS_PER_FLOAT (one empty part for no rows)."""
    return [body[i:i + ROWS_PER_FLOAT] for i in range(0, len(body), ROWS_PER_FLOAT)] or [[]]


def _tabular(align: str, head: list[str], rows: list[list[str]]) -> str:
    """A booktabs tabular, scaled down to the line's width if wider."""
    lines = ["\\toprule", *head, *(["\\midrule"] if head and rows else []),
             *(line for row in rows for line in row), "\\bottomrule"]
    return (_FIT_WIDTH + f"\\begin{{tabular}}{{{align}}}\n" + "\n".join(lines)
            + "\n\\end{tabular}}\n")


def _find(n: _Node, tag: str, cls: str | None = None) -> _Node | None:
    for c in n.children:
        if isinstance(c, str):
            continue
        if c.tag == tag and (cls is None or cls in c.classes()):
            return c
        hit = _find(c, tag, cls)
        if hit is not None:
            return hit
    return None


def _all(n: _Node, tag: str) -> list[_Node]:
    out = []
    for c in n.children:
        if not isinstance(c, str):
            if c.tag == tag:
                out.append(c)
            out += _all(c, tag)
    return out


def _inside(n: _Node, tag: str | None = None, cls: str | None = None) -> bool:
    """Whether an ancestor of `n` is a `tag` element, or has the class `cls`."""
    p = n.parent
    while p is not None:
        if p.tag == tag or (cls is not None and cls in p.classes()):
            return True
        p = p.parent
    return False


# --- the files ---------------------------------------------------------------------------------

PREAMBLE = r"""\documentclass[11pt,a4paper]{article}
\usepackage[utf8]{inputenc}
\usepackage{textcomp}
\usepackage{amsmath,amssymb}
\usepackage{graphicx}
\usepackage{booktabs}
\usepackage[margin=2.5cm]{geometry}  % a course template sets its own margins: drop this line
\usepackage[hidelinks,unicode]{hyperref}  % unicode: the PDF metadata may hold any letter
"""


def bibtex(keys: list[str]) -> str:
    """references.bib: one @misc entry per cited work, its formatted reference as the note
    (the `unsrt` style prints it as written, numbered in citation order like the HTML)."""
    w = _Writer({})
    entries = []
    for k in keys:
        note = w.children(parse(REFERENCES[k])).strip()
        entries.append(f"@misc{{{k},\n  note = {{{note}}}\n}}\n")
    return "\n".join(entries)


def to_latex(html: str, figures: dict[str, str]) -> tuple[str, list[str]]:
    """The report's unresolved HTML -> (report.tex, the cited keys in citation order)."""
    cited: dict[str, None] = {}
    for m in _TOKEN.finditer(html):
        if m.group(1) == "cite":
            for k in m.group(2).split(","):
                cited.setdefault(k)
    w = _Writer(figures)
    root = parse(html)
    body_node = _find(root, "body") or root
    body = w.children(body_node)
    main, _, rest = body.partition("%% BIBLIOGRAPHY")
    appendix = rest.partition("%% APPENDIX")[2] if "%% APPENDIX" in rest else ""
    # article's \maketitle sets the author in a one-line tabular: a long author ran into
    # the margin; a centred paragraph box breaks it.
    author = f"\\parbox[t]{{0.9\\textwidth}}{{\\centering {w.author}}}" if w.author else ""
    # The PDF's metadata, as the HTML's <meta> tags give it to WeasyPrint's PDF.
    meta = {m.attrs.get("name"): m.attrs.get("content") or "" for m in _all(root, "meta")}
    title = _find(_find(root, "head") or root, "title")
    info = {"pdftitle": title.text() if title else "", "pdfauthor": meta.get("author", ""),
            "pdfsubject": meta.get("description", ""), "pdfcreator": meta.get("generator", "")}
    setup = ", ".join(f"{k}={{{pdf_string(v)}}}" for k, v in info.items() if v)
    tex = (PREAMBLE + (f"\\hypersetup{{{setup}}}\n" if setup else "")
           + f"\\title{{{w.title}}}\n\\author{{{author}}}\n\\date{{{w.date}}}\n"
           "\\begin{document}\n\\maketitle\n\n"
           "%% BODY: from here to the bibliography, paste into a course template\n"
           + re.sub(r"\n{3,}", "\n\n", main.strip()) + "\n%% END OF BODY\n\n"
           "\\bibliographystyle{unsrt}\n\\bibliography{references}\n\n"
           + re.sub(r"\n{3,}", "\n\n", appendix.strip()) + "\n\\end{document}\n")
    return tex, list(cited)


def write_latex(html: str, figures_dir: Path, out_dir: Path, log=print) -> Path:
    """Write OUT/latex/report.tex, references.bib and figures/*.pdf; returns the .tex path."""
    from .files import MissingResults

    latex = Path(out_dir) / "latex"
    names = sorted(set(re.findall(r'<figure id="fig-([^"]+)"', html)))
    files, pdfs = {}, {}
    for name in names:
        src = Path(figures_dir) / f"{name}.pdf"
        if not src.exists() and not src.is_symlink():
            raise MissingResults(f"figure {src} is missing (the LaTeX export uses the vector "
                                 "PDFs): run `reportgen figures`")
        pdfs[src.name] = read_figure(src, b"%PDF-")
        files[name] = src.name
    tex, cited = to_latex(html, files)
    (latex / "figures").mkdir(parents=True, exist_ok=True)
    bib = bibtex(cited)
    # All or nothing: a folder you \input from your own template never mixes new figures
    # with an old report.tex. Other files there (your template) are left alone.
    atomic_write_all({
        **{latex / "figures" / fname: (lambda tmp, data=data: tmp.write_bytes(data))
           for fname, data in pdfs.items()},
        latex / "references.bib": lambda tmp: tmp.write_bytes(bib.encode()),
        latex / "report.tex": lambda tmp: tmp.write_bytes(tex.encode())})
    log(f"LaTeX: {latex / 'report.tex'} with references.bib and {len(files)} figures "
        f"(compile: pdflatex, bibtex, pdflatex, pdflatex)")
    unset = unset_characters(html)
    if unset:
        shown = " ".join(ch if unicodedata.category(ch)[0] not in "CZ" else f"U+{ord(ch):04X}"
                         for ch in unset[:10]) + (" ..." if len(unset) > 10 else "")
        # Latin letters only (ą, ð): pdflatex sets them too, in the T1 font encoding.
        engines = ("XeLaTeX, LuaLaTeX, or pdflatex with \\usepackage[T1]{fontenc}"
                   if set(unset) <= _OT1_MISSING else "XeLaTeX, LuaLaTeX")
        log(f"note: report.tex prints ? for {len(unset)} character(s) that pdflatex cannot set "
            f"({shown}); report.html and report.pdf keep them: type them into the .tex where "
            f"your template's engine can set them ({engines})")
    return latex / "report.tex"
