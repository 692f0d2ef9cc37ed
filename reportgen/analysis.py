"""The statistics behind every number and comparison in the report, computed from the results
files alone (no model, no data).

Two sources of uncertainty are kept apart and both reported:

* **sampling**: the evaluation set is a finite sample of images. An accuracy on N images
  carries a Wilson score interval (Wilson 1927); a difference between two models, or one
  model under two conditions, measured on the *same* images is paired: McNemar's exact test
  on the discordant images (McNemar 1947) with Newcombe's hybrid score interval for paired
  proportions (Newcombe 1998, method 10) when one run stands on each side, else a paired
  interval over per-image differences. Where every image differs by the same amount there is
  no spread to estimate a t-interval from: the sign-flip test and the arms' Wilson intervals
  combined as Newcombe's with no correlation assumed take over, so no interval has width 0.
* **training randomness**: with two or more seeds, the seeds' spread gives a t-interval on
  the mean, and it is added to the sampling variance of a comparison (Welch-Satterthwaite
  degrees of freedom).

A comparison at an angle picked from the curve (the worst of 35, say) is Bonferroni-adjusted
for the number of angles it was picked from (`compare(..., looks=K)`), so the choice of an
extreme cannot by itself make it significant.

A comparison is "distinguishable from noise" when its two-sided p-value is below ALPHA; the
report's words follow that flag and nothing else, so no template holds a threshold.
"""
from __future__ import annotations

import math
from statistics import mean
from typing import Sequence

import numpy as np

ALPHA = 0.05  # the significance level of every test, and 1 - the intervals' coverage
CONFIDENCE = 1 - ALPHA


def _z(alpha: float = ALPHA) -> float:
    from scipy.stats import norm

    return float(norm.ppf(1 - alpha / 2))


def wilson(k: float, n: int, alpha: float = ALPHA) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (k may be fractional: a mean)."""
    if n <= 0:
        return (float("nan"), float("nan"))
    z, p = _z(alpha), k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def t_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and t-interval of the mean of independent values (two or more)."""
    from scipy.stats import t

    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        raise ValueError("a t-interval needs two or more values")
    m, se = float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v)))
    half = float(t.ppf(1 - ALPHA / 2, len(v) - 1)) * se
    return m, m - half, m + half


def newcombe_paired(a: int, b: int, c: int, d: int,
                    alpha: float = ALPHA) -> tuple[float, float]:
    """Newcombe's (1998) hybrid score interval, method 10, for p1 - p2 on paired 0/1 data: a
    images both got right, b only the first, c only the second, d neither. Unlike the Wald
    interval it keeps a width when no image is discordant (b = c = 0)."""
    n = a + b + c + d
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson(a + b, n, alpha)
    l2, u2 = wilson(a + c, n, alpha)
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    # The correlation of the two marginal proportions, with Newcombe's continuity correction
    # on a positive one (it can only shrink it, which widens the interval).
    cross = a * d - b * c
    cross = max(cross - n / 2, 0.0) if cross > 0 else cross
    phi = cross / math.sqrt(margins) if margins else 0.0
    delta = math.sqrt(max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    eps = math.sqrt(max((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0))
    return p1 - p2 - delta, p1 - p2 + eps


def _square_and_add(arms: Sequence[tuple[float, np.ndarray]], n: int,
                    alpha: float = ALPHA) -> tuple[float, float]:
    """An interval for sum_k w_k * mean_k from each arm's Wilson interval, combined by
    Newcombe's square-and-add with no correlation assumed, which errs wide for arms that
    agree on the same images more often than chance (the usual case for two models)."""
    est, down, up = 0.0, 0.0, 0.0
    for w, v in arms:
        m = float(v.mean())
        lo, hi = wilson(m * n, n, alpha)
        below, above = abs(w) * (m - lo), abs(w) * (hi - m)
        est += w * m
        down += (below if w > 0 else above) ** 2
        up += (above if w > 0 else below) ** 2
    return est - math.sqrt(down), est + math.sqrt(up)


def mcnemar(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: b images only the first got right, c only the second."""
    from scipy.stats import binomtest

    if b + c == 0:
        return 1.0
    return float(binomtest(min(b, c), b + c, 0.5).pvalue)


def accuracy(per_seed: Sequence[float], n: int) -> dict:
    """One accuracy as the report prints it: the mean over seeds, every seed's value, the
    seeds' standard deviation and t-interval (two or more seeds), and the Wilson sampling
    interval of an accuracy of that size on the n evaluation images."""
    vals = [float(a) for a in per_seed]
    m = mean(vals)
    out = {"mean": m, "values": vals, "seeds": len(vals), "n": n,
           "sampling": list(wilson(m * n, n)), "std": None, "seed_ci": None}
    if len(vals) >= 2:
        out["std"] = float(np.std(vals, ddof=1))
        out["seed_ci"] = list(t_interval(vals)[1:])
    return out


def shown_interval(stat: dict) -> list[float]:
    """The interval a figure draws around an accuracy from accuracy(): the seeds' t-interval
    where there are two or more seeds, else the sampling interval; clipped to [0, 1], which
    an accuracy cannot leave but a t-interval of two seeds can."""
    lo, hi = stat["seed_ci"] or stat["sampling"]
    return [min(max(lo, 0.0), 1.0), min(max(hi, 0.0), 1.0)]


def compare(arms: Sequence[tuple[float, np.ndarray]], looks: int = 1, among: str = "") -> dict:
    """A contrast sum_k w_k * accuracy_k between arms measured on the same images.

    Each arm is (weight, values) with values of shape [seeds, images]: correctness (0/1) or a
    per-image mean of correctness (e.g. over rotated angles). Two single-seed 0/1 arms with
    weights +1 and -1 get McNemar's exact test and Newcombe's paired interval; anything else
    a paired interval over images, widened by the seeds' spread where an arm has two or more.
    When every image's difference is the same and the seeds agree (nothing to estimate a
    spread from), the exact sign-flip test over images and the square-and-add interval.
    Returns the difference (as a fraction), its interval, the p-value, the test's name, and
    `significant` (p < ALPHA).

    `looks` > 1: the comparison was picked as the extreme of that many candidates (the worst
    of 35 angles, say), which by itself makes an extreme difference likely. Bonferroni's
    correction keeps the error rate: the p-value is multiplied by `looks` (at most 1) and the
    interval is the 1 - ALPHA/looks one; `among` names the candidates in the test's name.
    """
    out = _compare(arms, ALPHA / looks)
    if looks > 1:
        out["p"] = min(1.0, out["p"] * looks)
        out["significant"] = out["p"] < ALPHA
        out["test"] += f", Bonferroni-adjusted for {among or f'{looks} candidates'}"
        out["looks"] = looks
    return out


def _compare(arms: Sequence[tuple[float, np.ndarray]], alpha: float) -> dict:
    """compare() with intervals of coverage 1 - alpha and unadjusted p-values."""
    from scipy.stats import t

    arms = [(float(w), np.atleast_2d(np.asarray(v, dtype=float))) for w, v in arms]
    n = arms[0][1].shape[1]
    if any(v.shape[1] != n for _, v in arms):
        raise ValueError("arms of a paired comparison must be measured on the same images")
    seeds = [v.shape[0] for _, v in arms]
    d = sum(w * v.mean(0) for w, v in arms)  # per-image contrast of the seed means
    est = float(d.mean())
    binary = all(np.isin(v, (0.0, 1.0)).all() for _, v in arms)
    if len(arms) == 2 and seeds == [1, 1] and binary and sorted(w for w, _ in arms) == [-1, 1]:
        (wa, a), (_, b_) = arms
        a, b_ = (a[0], b_[0]) if wa > 0 else (b_[0], a[0])
        b, c = int(((a == 1) & (b_ == 0)).sum()), int(((a == 0) & (b_ == 1)).sum())
        both = int(((a == 1) & (b_ == 1)).sum())
        lo, hi = newcombe_paired(both, b, c, n - both - b - c, alpha)
        p = mcnemar(b, c)
        return {"diff": est, "lo": lo, "hi": hi, "p": p,
                "significant": p < ALPHA, "test": "McNemar's exact test",
                "discordant": [b, c], "n": n, "seeds": seeds}
    if len(arms) == 1 and seeds == [1] and binary and arms[0][0] == 1:
        # One accuracy (say, the mean over rotated angles when one angle is rotated): the
        # Wilson interval that the tables give it. A t-interval over 0/1 values gave the same
        # accuracy two different intervals on one page, and left [0, 1] at the extremes.
        k = int(arms[0][1].sum())
        lo, hi = wilson(k, n, alpha)
        return {"diff": est, "lo": lo, "hi": hi, "p": 1.0 if k == 0 else 0.0,
                "significant": k > 0, "test": "Wilson score interval", "n": n, "seeds": seeds}
    # Variance components: images (paired), then each arm's seeds.
    parts = [(float(d.var(ddof=1)) / n if n > 1 else 0.0, n - 1)]
    for w, v in arms:
        if v.shape[0] >= 2:
            accs = v.mean(1)
            parts.append((w * w * float(accs.var(ddof=1)) / len(accs), len(accs) - 1))
    var = sum(p for p, _ in parts)
    se = math.sqrt(var)
    if se < 1e-12:  # float noise of identical values is not a spread
        # Every image differs by est: of the 2^n sign patterns only all-plus and all-minus
        # reach |est|, so the exact sign-flip test gives p = 2 / 2^n (1 when est is 0).
        p = 1.0 if est == 0 else min(1.0, 2.0 ** (1 - n))
        lo, hi = _square_and_add(arms, n, alpha)
        return {"diff": est, "lo": min(lo, est), "hi": max(hi, est), "p": p,
                "significant": p < ALPHA, "test": "exact sign-flip test over images",
                "n": n, "seeds": seeds}
    df = var * var / sum(p * p / k for p, k in parts if k > 0 and p > 0)
    half = float(t.ppf(1 - alpha / 2, df)) * se
    p = float(2 * t.sf(abs(est) / se, df))
    return {"diff": est, "lo": est - half, "hi": est + half, "p": p, "significant": p < ALPHA,
            "test": _test_name(seeds), "n": n, "seeds": seeds, "df": df}


def _test_name(seeds: list[int]) -> str:
    return ("paired t-test over images and seeds" if max(seeds) >= 2
            else "paired t-test over images")


def correct(pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """0/1 correctness of predictions [..., images] against labels [images]."""
    return (np.asarray(pred) == np.asarray(labels)).astype(np.float64)


# --- descriptive helpers for the rotation curve ---------------------------------------------

def mean_in_range(angles: list[float], values: list[float], lo: float, hi: float) -> float | None:
    """Mean of `values` at angles (mod 360) in [lo, hi]; None if there are none."""
    vals = [v for a, v in zip(angles, values) if lo <= a % 360 <= hi]
    return mean(vals) if vals else None


def circular_peaks(angles: list[float], values: list[float],
                   above: Sequence[bool] | None = None) -> list[tuple[float, float]]:
    """Local maxima of `values` over the circle of angles, away from 0°, highest first: where
    accuracy comes back up. `above[i]` says whether angle i is distinguishable from chance;
    only those peaks count."""
    n = len(values)
    if n < 3:
        return []
    order = sorted(range(n), key=lambda i: angles[i] % 360)
    peaks = []
    for k, i in enumerate(order):
        a = angles[i] % 360
        prev, nxt = values[order[k - 1]], values[order[(k + 1) % n]]
        if a != 0 and values[i] > prev and values[i] > nxt and (above is None or above[i]):
            peaks.append((a, values[i]))
    return sorted(peaks, key=lambda t: -t[1])


def above_chance(acc: float, n: int, chance: float) -> bool:
    """Whether an accuracy on n images is distinguishable from chance: its Wilson interval
    lies above it."""
    return wilson(acc * n, n)[0] > chance
