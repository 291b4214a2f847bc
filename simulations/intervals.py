"""95% intervals over a few seeds, and tests of paired differences, for the report.

- ``t``: mean ± t(0.975, n-1)·s/√n. Right for an unbounded metric with roughly normal
  seeds; for a metric in [0, 1] near its end with few seeds it runs past the bound
  (0.9, 1.0, 1.0: 0.967 ± 0.14).
- ``auto`` (the default): for a metric in [0, 1] (accuracies, AUROC, FPR95, SSIM) the
  t-interval cut to [0, 1]. The true mean lies in [0, 1], so the cut never drops it:
  the coverage is the t-interval's, and the interval never leaves the range
  (0.9, 1.0, 1.0: [0.82, 1]). Other metrics: the t-interval.
- ``logit``: the t-interval of logit(x) mapped back (values clipped to [1e-4, 1 - 1e-4]).
  Asymmetric and inside (0, 1), but a seed at exactly 0 or 1 puts it at ±9 on the logit
  scale and the interval blows up (0.9, 1.0, 1.0: [0.04, 1.0]).
- ``bootstrap``: scipy's BCa bootstrap of the mean (9,999 resamples, seeded). It
  respects the range of the data, but with 3-5 seeds it is too narrow (it only sees
  the values it has): use it from about 10 seeds on.

Paired differences (same seed) get the t-interval, the paired t-test's and the Wilcoxon
signed-rank test's two-sided p-values, and the effect size d_z = mean / std of the
differences (Cohen's d for paired samples).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

METHODS = ("auto", "t", "logit", "bootstrap")
BOUNDED = ("accuracy", "auroc", "fpr95", "ssim")  # metric names (parts) whose values lie in [0, 1]
EPS = 1e-4


def values_of(values) -> np.ndarray:
    return np.asarray(pd.Series(values).dropna(), dtype=float)


def bounded(metric: str, x: np.ndarray) -> bool:
    """Whether ``metric`` is a share in [0, 1] (by its name, and its values agree)."""
    return any(word in metric for word in BOUNDED) and bool(np.all((x >= 0) & (x <= 1)))


def t_halfwidth(x: np.ndarray) -> float:
    return float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else np.nan


def ci95(values, metric: str = "", method: str = "auto") -> tuple[float, float]:
    """The 95% interval (low, high) of the mean of ``values`` by ``method`` (NaN below n=2)."""
    x = values_of(values)
    if len(x) < 2:
        return np.nan, np.nan
    if method == "auto":
        low, high = ci95(x, metric, "t")
        return (max(low, 0.0), min(high, 1.0)) if bounded(metric, x) else (low, high)
    if method == "logit":
        z = np.log(np.clip(x, EPS, 1 - EPS) / (1 - np.clip(x, EPS, 1 - EPS)))
        h = t_halfwidth(z)
        return float(1 / (1 + np.exp(-(z.mean() - h)))), float(1 / (1 + np.exp(-(z.mean() + h))))
    if method == "bootstrap":
        if np.ptp(x) == 0:
            return float(x[0]), float(x[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BCa warns on tiny samples; the docstring says when to use it
            res = stats.bootstrap((x,), np.mean, confidence_level=0.95, method="BCa", n_resamples=9999,
                                  random_state=np.random.default_rng(0))
        return float(res.confidence_interval.low), float(res.confidence_interval.high)
    h = t_halfwidth(x)
    return float(x.mean() - h), float(x.mean() + h)


def paired_tests(diff) -> dict[str, float]:
    """Two-sided p-values of the paired t-test and the Wilcoxon signed-rank test, and d_z."""
    d = values_of(diff)
    out = {"p-t": np.nan, "p-wilcoxon": np.nan, "dz": np.nan}
    if len(d) < 2:
        return out
    std = d.std(ddof=1)
    if std > 0:
        out["p-t"] = float(stats.ttest_1samp(d, 0.0).pvalue)
        out["dz"] = float(d.mean() / std)
    if np.any(d != 0):
        out["p-wilcoxon"] = float(stats.wilcoxon(d).pvalue)
    return out
