"""Shared helpers for the facts the studies derive from their results (no model, no data),
and the named thresholds they use: each study's `facts` turns its results into plain values
and decided statements, so the templates only place them.
"""
from __future__ import annotations

from statistics import mean

# A local maximum of accuracy over angles counts as a "recovery" only this far above chance.
PEAK_ABOVE_CHANCE = 0.05


def mean_in_range(angles: list[float], values: list[float], lo: float, hi: float) -> float | None:
    """Mean of `values` at angles (mod 360) in [lo, hi]; None if there are none."""
    vals = [v for a, v in zip(angles, values) if lo <= a % 360 <= hi]
    return mean(vals) if vals else None


def circular_peaks(angles: list[float], values: list[float], floor: float) -> list[tuple[float, float]]:
    """Local maxima of `values` over the circle of angles, away from 0° and above `floor`,
    highest first: where accuracy comes back up."""
    n = len(values)
    if n < 3:
        return []
    order = sorted(range(n), key=lambda i: angles[i] % 360)
    peaks = []
    for k, i in enumerate(order):
        a = angles[i] % 360
        prev, nxt = values[order[k - 1]], values[order[(k + 1) % n]]
        if a != 0 and values[i] > prev and values[i] > nxt and values[i] > floor:
            peaks.append((a, values[i]))
    return sorted(peaks, key=lambda t: -t[1])
