"""One look for every figure: readable at print size, colour-blind-safe colours.

The palette is Okabe and Ito's (2008, "Color Universal Design"), distinguishable with the
common colour-vision deficiencies; line styles differ as well, so figures survive greyscale.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402

PALETTE = {
    "blue": "#0072B2", "orange": "#E69F00", "green": "#009E73", "vermillion": "#D55E00",
    "sky": "#56B4E9", "purple": "#CC79A7", "yellow": "#F0E442", "black": "#000000",
}
CYCLE = [PALETTE[k] for k in ("blue", "vermillion", "green", "orange", "purple", "sky")]
LINESTYLES = ["-", "--", "-.", ":"]
LINESTYLE_NAMES = {"-": "solid", "--": "dashed", "-.": "dash-dotted", ":": "dotted"}  # for captions
FULL_WIDTH = 6.3  # inches: A4 text width with 2.5 cm margins
HEATMAP = "cividis"  # perceptually uniform and colour-blind-safe

RC = {
    "figure.dpi": 100, "savefig.dpi": 200, "savefig.bbox": "tight", "savefig.pad_inches": 0.03,
    "font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "legend.fontsize": 8,
    "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.spines.top": False,
    "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.5,
    "lines.linewidth": 1.6, "axes.prop_cycle": matplotlib.cycler(color=CYCLE),
    "legend.frameon": False, "svg.fonttype": "none", "font.family": "DejaVu Sans",
}


def lighter(color: str, amount: float = 0.5) -> str:
    """`color` mixed with white by `amount`: the same hue, told apart from `color` even where
    a line of it lies on top of one of `color` (a translucent line would vanish there)."""
    from matplotlib.colors import to_hex, to_rgb

    return to_hex([c + (1 - c) * amount for c in to_rgb(color)])


def apply() -> None:
    # Drawn the same on every machine: not with a matplotlibrc in the working folder or the
    # user's config (text.usetex = True stopped every figure where LaTeX is not installed).
    matplotlib.rcdefaults()
    plt.rcParams.update(RC)


def save(fig, path: Path) -> list[Path]:
    """Write `path`.png, `path`.svg and `path`.pdf (vector, for the LaTeX export) through
    temporary names (never half a file)."""
    from .files import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for ext in ("png", "svg", "pdf"):
        final = path.with_suffix(f".{ext}")
        atomic_write(final, lambda tmp: fig.savefig(tmp, format=ext))
        written.append(final)
    plt.close(fig)
    return written
