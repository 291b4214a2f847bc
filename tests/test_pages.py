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


def _sweep(folder, rows):
    """A sweep folder with results.csv (one final row per run; the keys a report needs)."""
    folder.mkdir()
    frame = pd.DataFrame(rows).assign(**{"round": 20, "num-server-rounds": 20})
    frame["run-name"] = [f"r{i}" for i in range(len(frame))]
    frame.to_csv(folder / "results.csv", index=False)
    return frame


def test_fedsdwc_beta_page_marks_the_choice_and_pairs_by_alpha_and_seed(tmp_path):
    from studies import fedsdwc_beta

    beta = tmp_path / "beta"
    tune = [{"phase": "tune", "method": "fedsdwc", "dirichlet-alpha": a, "seed": 100, "sdwc-beta": b,
             "val-accuracy": v, "accuracy": 0.5} for a, b, v in
            [(0.1, 1e-7, 0.70), (0.1, 1e-3, 0.75), (0.5, 1e-7, 0.80), (0.5, 1e-3, 0.78)]]
    evals = [{"phase": "eval", "method": "fedsdwc", "dirichlet-alpha": a, "seed": s, "sdwc-beta": b,
              "val-accuracy": 0.7, "accuracy": 0.70 + 0.01 * s} for a, b in [(0.1, 1e-3), (0.5, 1e-7)] for s in (0, 1, 2)]
    runs = _sweep(beta, tune + evals)
    pd.DataFrame({"dirichlet-alpha": [0.1, 0.5], "method": "fedsdwc", "sdwc-beta": [1e-3, 1e-7]}).to_csv(
        beta / "selected.csv", index=False)
    elbo = {"share-ce-sampled": 0.1, "share-recon": 0.2, "share-prior": 0.05}
    pd.DataFrame([{"run-name": runs["run-name"][1], **elbo}]).to_csv(beta / "fedsdwc_probe.csv", index=False)
    study = tmp_path / "study"  # its fedsdwc 0.02 below the beta sweep's on every seed, its fedavg 0.01 above
    _sweep(study, [{"phase": "eval", "method": m, "dirichlet-alpha": a, "seed": s, "sdwc-beta": 1e-7,
                    "val-accuracy": 0.7, "accuracy": 0.70 + 0.01 * s + off}
                   for m, off in [("fedsdwc", -0.02), ("fedavg", 0.01)] for a in (0.1, 0.5) for s in (0, 1, 2)]
                  + [{"phase": "tune", "method": "fedavg", "dirichlet-alpha": 0.1, "seed": 100, "sdwc-beta": 1e-4,
                      "val-accuracy": 0.9, "accuracy": 0.0}])  # a tuning run is never paired
    text = fedsdwc_beta.page(beta, study)
    assert "| 0.001 | 0.7500 (chosen) | 0.7800 | 0.35 | – |" in text  # ELBO share: its three terms summed
    assert "| 1e-07 | 0.7000 | 0.8000 (chosen) | – | – |" in text
    assert f"| chosen β − study's fedsdwc | {diff_cell(np.full(3, 0.02))} |" in text
    assert f"| {diff_cell(np.full(6, -0.01))} |" in text and "0/6" in text  # every seed of both α, pooled
    assert "corrupt-ratio" not in text  # a metric the runs lack gets no table
    assert fedsdwc_beta.main([str(beta)]) == 2 and fedsdwc_beta.main([str(beta), str(study)]) == 0
    assert (beta / "page.md").read_text().strip() == text.strip()
    runs[runs["phase"] == "tune"].to_csv(beta / "results.csv", index=False)  # stopped before its evaluation
    assert "No evaluation run has finished yet" in fedsdwc_beta.page(beta, study)
    # stopped before its report: the runs' own metrics.csv, phases from tune.json's seeds
    (beta / "results.csv").unlink()
    (beta / "tune.json").write_text('{"seeds": [100]}')
    for name, rows in runs.drop(columns="phase").groupby("run-name"):
        (beta / name).mkdir()
        rows.to_csv(beta / name / "metrics.csv", index=False)
    assert fedsdwc_beta.page(beta, study) == text
