"""The results pages' difference cells and the FedSDWC page's pooling, against hand-computed values."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from studies import fedsdwc_page
from studies.pages import diff_cell, seed_diffs


def test_seed_diffs_and_cell_match_a_hand_computed_t_interval():
    d = seed_diffs({"diffs": "0.1 0.3 nan 0.2"})
    assert list(d) == pytest.approx([0.1, 0.3, 0.2])  # the NaN seed is dropped
    assert list(seed_diffs({"diffs": "0.1 -0.2"}, -1.0)) == pytest.approx([-0.1, 0.2])
    half = stats.t.ppf(0.975, 2) * np.std([0.1, 0.3, 0.2], ddof=1) / np.sqrt(3)
    assert diff_cell(d) == f"+0.200 [{0.2 - half:+.3f}, {0.2 + half:+.3f}] 3/3"
    assert diff_cell(d, lower_is_better=True).endswith(" 0/3")  # lower is a win: none here
    assert diff_cell(np.array([0.5])) == "+0.500 1/1"  # n = 1: no interval
    assert diff_cell(np.array([])) == "(no pairs)"


def _pair(method, against, alpha, metric, diffs):
    return {"method": method, "against": against, "dirichlet-alpha": alpha, "metric": metric,
            "diffs": " ".join(map(str, diffs))}


def test_fedsdwc_page_pools_the_dirichlet_values_and_counts_fpr_wins_downwards():
    pairs = pd.DataFrame([
        _pair("fedsdwc", "fedavg", 0.1, "accuracy", [0.01, 0.02, 0.03]),
        _pair("fedsdwc", "fedavg", 0.5, "accuracy", [-0.01, -0.02, 0.00]),
        _pair("fedsdwc-no-kl", "fedsdwc", 0.1, "fpr95", [-0.1, 0.05, -0.02]),
        _pair("fedsdwc-no-kl", "fedavg", 0.1, "fpr95", [9.0, 9.0, 9.0]),  # not a page comparison
    ])
    acc = "\n".join(fedsdwc_page.difference_table(pairs, "accuracy"))
    assert "| comparison | α = 0.1 | α = 0.5 | all |" in acc
    pooled = np.array([0.01, 0.02, 0.03, -0.01, -0.02, 0.00])
    assert f"| fedsdwc − fedavg | {diff_cell(pooled[:3])} | {diff_cell(pooled[3:])} | {diff_cell(pooled)} |" in acc
    assert diff_cell(pooled).endswith(" 3/6")
    fpr = "\n".join(fedsdwc_page.difference_table(pairs, "fpr95"))
    assert "a win is lower" in fpr and "9.000" not in fpr
    assert "| fedsdwc-no-kl − fedsdwc | " in fpr and fpr.count(" 2/3") == 2  # per α and all (one α present)
    assert fedsdwc_page.difference_table(pairs, "auroc") == []  # no pair rows: no table
