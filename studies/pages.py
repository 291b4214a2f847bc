"""Cells of the results pages' difference tables, from the report's ``paired.csv``: each row's
per-seed differences, and one cell "mean [95% t-interval] wins/n" for a set of them."""

from __future__ import annotations

import numpy as np

from simulations.intervals import ci95


def seed_diffs(row, sign: float = 1.0) -> np.ndarray:
    """A paired.csv row's per-seed differences (group minus baseline), times ``sign`` (-1 turns
    them into baseline minus group); non-finite ones dropped."""
    d = sign * np.array([float(v) for v in str(row["diffs"]).split()], dtype=float)
    return d[np.isfinite(d)]


def diff_cell(d: np.ndarray, lower_is_better: bool = False) -> str:
    """``+0.012 [-0.004, +0.028] 4/6``: the mean, its 95% t-interval and the wins (a positive
    difference, or a negative one where lower is better) over n."""
    d = np.asarray(d, dtype=float)
    if len(d) == 0:
        return "(no pairs)"
    lo, hi = ci95(d)
    wins = int(((d < 0) if lower_is_better else (d > 0)).sum())
    if np.isnan(lo):
        return f"{d.mean():+.3f} {wins}/{len(d)}"
    return f"{d.mean():+.3f} [{lo:+.3f}, {hi:+.3f}] {wins}/{len(d)}"
