"""The report command on a synthetic sweep folder, against values computed by hand."""

import json
import math

import pandas as pd
import pytest
from scipy import stats

from simulations.report import main, report, selected_rows

T_975_2 = 4.302652729749464  # t quantile 0.975 with 2 degrees of freedom (tables)


def write_sweep(out, runs):
    """runs: (method, proximal-mu, lr, seed, [accuracy per round 1..], rounds planned)."""
    rows = []
    for method, mu, lr, seed, accs, planned in runs:
        start = len(rows)
        name = f"method-{method}_mu-{mu}_lr-{lr}_seed-{seed}"
        cfg = {"method": method, "proximal-mu": mu, "lr": lr, "seed": seed, "num-server-rounds": planned,
               "run-name": name, "out-dir": str(out)}
        (out / name).mkdir(parents=True)
        (out / name / "config.json").write_text(json.dumps(cfg))
        for r, acc in enumerate(accs, 1):
            rows.append({**cfg, "round": r, "accuracy": acc, "loss": 1 - acc})
        pd.DataFrame(rows[start:]).to_csv(out / name / "metrics.csv", index=False)
    pd.DataFrame(rows).to_csv(out / "results.csv", index=False)


def test_summary_and_paired_match_hand_computed_values(tmp_path, capsys):
    write_sweep(tmp_path, [
        ("fedavg", 0.01, 0.1, 0, [0.5, 0.80], 2),
        ("fedavg", 0.01, 0.1, 1, [0.5, 0.82], 2),
        ("fedavg", 0.01, 0.1, 2, [0.5, 0.87], 2),
        ("fedavg", 0.01, 0.1, 3, [0.5], 2),  # stopped early: not counted
        ("fedprox", 0.1, 0.1, 0, [0.6, 0.83], 2),
        ("fedprox", 0.1, 0.1, 1, [0.6, 0.81], 2),
        ("fedprox", 0.1, 0.1, 2, [0.6, 0.90], 2),
        ("fedprox", 0.5, 0.1, 0, [0.6, 0.70], 2),  # a second per-method value, one seed
    ])
    assert main([str(tmp_path)]) == 0  # baseline defaults to fedavg
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert list(summary.columns[:3]) == ["method", "proximal-mu", "n"]  # seed and lr (constant) are not keys
    avg = summary.set_index(["method", "proximal-mu"]).loc[("fedavg", 0.01)]
    std = math.sqrt(((0.80 - 0.83) ** 2 + (0.82 - 0.83) ** 2 + (0.87 - 0.83) ** 2) / 2)
    assert avg["n"] == 3
    assert avg["accuracy-mean"] == pytest.approx(0.83)
    assert avg["accuracy-std"] == pytest.approx(std)
    assert avg["accuracy-ci95"] == pytest.approx(T_975_2 * std / math.sqrt(3))
    assert avg["loss-mean"] == pytest.approx(0.17)
    one = summary.set_index(["method", "proximal-mu"]).loc[("fedprox", 0.5)]
    assert one["n"] == 1 and one["accuracy-mean"] == pytest.approx(0.70) and pd.isna(one["accuracy-ci95"])

    paired = pd.read_csv(tmp_path / "paired.csv")
    acc = paired[(paired["metric"] == "accuracy") & (paired["proximal-mu"] == 0.1)].iloc[0]
    diffs = [0.03, -0.01, 0.03]  # 0.83-0.80, 0.81-0.82, 0.90-0.87
    mean = sum(diffs) / 3
    dstd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
    assert acc["baseline"] == "fedavg" and acc["n"] == 3 and acc["wins/n"] == "2/3"
    assert acc["mean-diff"] == pytest.approx(mean)
    assert acc["ci95"] == pytest.approx(T_975_2 * dstd / math.sqrt(3))
    assert acc["ci95-low"] == pytest.approx(mean - T_975_2 * dstd / math.sqrt(3))
    loss = paired[(paired["metric"] == "loss") & (paired["proximal-mu"] == 0.1)].iloc[0]
    assert loss["mean-diff"] == pytest.approx(-mean) and loss["wins/n"] == "2/3"  # lower loss wins
    t_stat = mean / (dstd / math.sqrt(3))
    assert acc["p-t"] == pytest.approx(2 * stats.t.sf(abs(t_stat), 2))
    assert acc["dz"] == pytest.approx(mean / dstd)
    assert 0.25 <= acc["p-wilcoxon"] <= 1  # 3 pairs: Wilcoxon's smallest p is 0.25
    single = paired[(paired["metric"] == "accuracy") & (paired["proximal-mu"] == 0.5)].iloc[0]
    assert single["n"] == 1 and single["mean-diff"] == pytest.approx(-0.10) and single["wins/n"] == "0/1"

    text = (tmp_path / "report.md").read_text()
    h = T_975_2 * std / math.sqrt(3)  # inside [0, 1]: the t-interval itself
    low, high = 0.83 - h, 0.83 + h
    assert (avg["accuracy-ci95-low"], avg["accuracy-ci95-high"]) == pytest.approx((low, high))
    assert f"0.83 [{low:.4g}, {high:.4g}]" in text and "method-fedavg_mu-0.01_lr-0.1_seed-3" in text
    assert "report-curves.png" in text and (tmp_path / "report-final.png").stat().st_size > 1000
    assert "report.md" in capsys.readouterr().out


def test_intervals_of_a_bounded_metric_stay_in_its_range_the_t_interval_stays_available(tmp_path):
    """0.9, 1.0, 1.0: the t-interval runs past 1 (0.9667 ± 0.14); the default cuts it at 1,
    logit and bootstrap stay inside."""
    write_sweep(tmp_path, [("fedavg", 0.01, 0.1, s, [a], 1) for s, a in enumerate((0.9, 1.0, 1.0))])
    bounds = {}
    for how in ("t", "logit", "bootstrap"):
        assert main([str(tmp_path), "--interval", how]) == 0
        row = pd.read_csv(tmp_path / "summary.csv").iloc[0]
        bounds[how] = (row["accuracy-ci95-low"], row["accuracy-ci95-high"])
        assert row["accuracy-ci95"] == pytest.approx(T_975_2 * row["accuracy-std"] / math.sqrt(3))  # always t
    assert bounds["t"][1] > 1.1
    for how in ("logit", "bootstrap"):
        low, high = bounds[how]
        assert 0 < low < 0.9667 < high <= 1
    main([str(tmp_path)])  # default: the t-interval cut to [0, 1]; loss is not a share: not cut
    row = pd.read_csv(tmp_path / "summary.csv").iloc[0]
    assert (row["accuracy-ci95-low"], row["accuracy-ci95-high"]) == pytest.approx((bounds["t"][0], 1.0))
    assert row["loss-ci95-low"] == pytest.approx(row["loss-mean"] - row["loss-ci95"])


def test_pairs_match_shared_keys_and_baseline_is_checked(tmp_path, capsys):
    """lr is run with the same values by both methods: fedprox lr=0.2 pairs with fedavg lr=0.2 only."""
    write_sweep(tmp_path, [
        ("fedavg", 0.01, 0.1, 0, [0.5], 1), ("fedavg", 0.01, 0.2, 0, [0.7], 1),
        ("fedprox", 0.1, 0.1, 0, [0.6], 1), ("fedprox", 0.1, 0.2, 0, [0.9], 1),
    ])
    report(tmp_path, "fedprox")
    paired = pd.read_csv(tmp_path / "paired.csv").query("metric == 'accuracy'").set_index("lr")
    assert list(paired["method"]) == ["fedavg", "fedavg"]
    assert paired.loc[0.1, "mean-diff"] == pytest.approx(-0.1) and paired.loc[0.2, "mean-diff"] == pytest.approx(-0.2)
    assert main([str(tmp_path), "--baseline", "fedzip"]) == 2
    err = capsys.readouterr().err.strip()
    assert "baseline 'fedzip'" in err and "fedavg" in err and len(err.splitlines()) == 1
    assert main([str(tmp_path / "nothing")]) == 2
    (tmp_path / "results.csv").unlink()  # a stopped sweep: the runs' metrics.csv are read
    report(tmp_path, "fedprox")
    again = pd.read_csv(tmp_path / "paired.csv").query("metric == 'accuracy'").set_index("lr")
    assert again.loc[0.2, "mean-diff"] == pytest.approx(-0.2)


def test_selected_round_is_best_source_accuracy_earliest_on_ties():
    frame = pd.DataFrame({"run-name": ["a"] * 4, "round": [0, 1, 2, 3],
                          "source-accuracy": [0.9, 0.5, 0.7, 0.7], "heldout-accuracy": [0.1, 0.2, 0.3, 0.4]})
    picked = selected_rows(frame, ["a"])
    assert list(picked["round"]) == [2] and list(picked["heldout-accuracy"]) == [0.3]


def test_a_true_false_column_of_a_retired_key_is_not_a_metric(tmp_path):
    """Rows from an older version carry a key that no config.json names any more (a bool): the
    report must neither average nor subtract it (numpy refuses to subtract booleans)."""
    write_sweep(tmp_path, [("fedavg", 0.01, 0.1, s, [0.8 + s / 100], 1) for s in range(3)]
                + [("fedprox", 0.1, 0.1, s, [0.82 + s / 50], 1) for s in range(3)])
    frame = pd.read_csv(tmp_path / "results.csv")
    frame["retired-flag"] = [True, False, True, False, True, False]
    frame.to_csv(tmp_path / "results.csv", index=False)
    assert main([str(tmp_path)]) == 0
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert not any(c.startswith("retired-flag") for c in summary.columns)
    assert set(pd.read_csv(tmp_path / "paired.csv")["metric"]) == {"accuracy", "loss"}


def test_runs_made_at_several_commits_form_one_group_and_the_commits_are_listed(tmp_path):
    """A study that runs over several sittings spans commits: the commit is provenance, not a
    group key; report.md names each commit with its run count and the runs with local changes."""
    write_sweep(tmp_path, [("fedavg", 0.01, 0.1, s, [0.8 + s / 100], 1) for s in range(3)]
                + [("fedprox", 0.1, 0.1, s, [0.82 + s / 50], 1) for s in range(3)])
    made = {0: ("a" * 40, False), 1: ("b" * 40, False), 2: ("b" * 40, True)}  # by seed
    frame = pd.read_csv(tmp_path / "results.csv")
    frame["git-commit"] = [made[s][0] for s in frame["seed"]]
    frame["git-dirty"] = [made[s][1] for s in frame["seed"]]
    frame.to_csv(tmp_path / "results.csv", index=False)
    for name in frame["run-name"]:
        cfg_path = tmp_path / name / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg_path.write_text(json.dumps({**cfg, "git-commit": made[cfg["seed"]][0], "git-dirty": made[cfg["seed"]][1]}))
    assert main([str(tmp_path)]) == 0
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert list(summary["method"]) == ["fedavg", "fedprox"] and list(summary["n"]) == [3, 3]
    assert "git-commit" not in summary
    assert list(pd.read_csv(tmp_path / "paired.csv").query("metric == 'accuracy'")["n"]) == [3]
    text = (tmp_path / "report.md").read_text()
    assert "the 6 runs were made at 2 commits (runs): `aaaaaaaa` (2), `bbbbbbbb` (4)" in text
    assert "2 of them ran from a checkout with uncommitted changes" in text

    frame["git-commit"], frame["git-dirty"] = "c" * 40, False  # one clean commit: one short line
    frame.to_csv(tmp_path / "results.csv", index=False)
    for name in frame["run-name"]:
        cfg_path = tmp_path / name / "config.json"
        cfg_path.write_text(json.dumps({**json.loads(cfg_path.read_text()), "git-commit": "c" * 40, "git-dirty": False}))
    assert main([str(tmp_path)]) == 0
    text = (tmp_path / "report.md").read_text()
    assert "Code: all 6 runs at commit `cccccccc`." in text and "uncommitted" not in text
