"""studies.fedhip_page: the results page's tables, from the report's paired.csv."""

import numpy as np
import pandas as pd
from scipy import stats

from studies import fedhip_page


def _paired(tmp_path):
    rows = []
    for dataset, shift in (("mnist", 0.0), ("digits", 0.1)):
        for alpha in (0.1, 0.5):
            for method, ft, base in (("fedavg", 0, -0.2), ("fedavg", 5, -0.05), ("ditto", 0, 0.01)):
                d = base - shift + np.array([0.0, 0.02, -0.02])  # arm minus FedHiP
                for metric in ("personalized-accuracy", "accuracy", "uplink-bytes-total"):
                    rows.append({"method": method, "dataset": dataset, "dirichlet-alpha": alpha,
                                 "finetune-epochs": ft, "metric": metric, "n": 3,
                                 "diffs": " ".join(f"{v:.6g}" for v in d)})
    pd.DataFrame(rows).to_csv(tmp_path / "paired.csv", index=False)


def test_fedhip_minus_turns_the_sign_and_names_the_arms(tmp_path):
    _paired(tmp_path)
    diffs = fedhip_page.fedhip_minus(pd.read_csv(tmp_path / "paired.csv"), "personalized-accuracy")
    assert set(diffs["arm"]) == {"FedAvg head", "FedAvg + FT", "Ditto"}
    head = diffs[(diffs["arm"] == "FedAvg head") & (diffs["dataset"] == "digits")]["d"].iloc[0]
    np.testing.assert_allclose(head, [0.3, 0.28, 0.32])


def test_page_cells_pooled_rows_and_wins(tmp_path):
    _paired(tmp_path)
    text = fedhip_page.page(tmp_path)
    lines = text.splitlines()
    # FedHiP minus Ditto on mnist: -0.01, -0.03, +0.01, one FedHiP win
    row = next(line for line in lines if line.startswith("| mnist | 0.1 |"))
    assert "1/3" in row.split("|")[3]
    pooled = next(line for line in lines if line.startswith("| **all** |"))
    d = np.array([0.2, 0.18, 0.22] * 2 + [0.3, 0.28, 0.32] * 2)
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    assert f"{d.mean():+.3f} [{d.mean() - half:+.3f}, {d.mean() + half:+.3f}] 12/12" in pooled
    assert "uplink" not in text  # bytes are not an accuracy table
    assert sum(line.startswith("| **all** |") for line in lines) == 2  # one per metric
