"""The FedDG-LSI comparison's pooling (studies/fedlsi_pool.py --arms) and the report on it."""

import pandas as pd
import pytest

from simulations.report import main as report_main
from studies.fedlsi_pool import arms, pairs


def run_rows(method: str, domain: int, seed: int, eval_acc: list[float], gap: float, planned: int) -> list[dict]:
    """One run's rows; FedDG-LSI's round 1 is its pre-training round (one round more)."""
    name = f"seed-{seed}_heldout-domain-{domain}_method-{method}"
    lsi = {"lambda-di": 10.0, "lsi-translator": "tanh"} if method == "fedlsi" else {}
    return [{"run-name": name, "method": method, "seed": seed, "heldout-domain": domain, "round": r,
             "num-server-rounds": planned, "git-commit": "abc", "git-dirty": False, **lsi,
             "accuracy": acc, "source-accuracy-eval": acc, "source-accuracy-batch": acc,
             "heldout-accuracy-eval": acc, "heldout-accuracy-batch": acc + gap,
             "selected-heldout-accuracy-eval": acc, "selected-heldout-accuracy-batch": acc + gap}
            for r, acc in enumerate(eval_acc, 1)]


def test_arms_pool_domains_into_pairs_and_the_report_reads_them(tmp_path):
    rows = []
    # (domain, seed): FedAvg's final eval accuracy and BN gap, FedDG-LSI's
    cases = {(0, 0): (0.80, 0.05, 0.70, 0.10), (0, 1): (0.82, 0.04, 0.75, 0.12),
             (1, 0): (0.90, 0.02, 0.91, 0.01), (1, 1): (0.88, 0.03, 0.80, 0.09)}
    for (d, s), (fa, fgap, la, lgap) in cases.items():
        rows += run_rows("fedavg", d, s, [0.5, fa], fgap, 2)
        rows += run_rows("fedlsi", d, s, [0.1, 0.4, la], lgap, 3)
    rows += run_rows("fedavg", 2, 0, [0.5, 0.8], 0.0, 2)
    rows += run_rows("fedlsi", 2, 0, [0.1, 0.4], 0.0, 3)  # stopped before its last round: left out
    runs = pd.DataFrame(rows)

    frame = arms(runs, "eval")
    assert "seed-0_heldout-domain-2_method-fedlsi" not in set(frame["run-name"])
    assert set(frame["method"]) == {"fedavg", "fedlsi-l10-tanh"}
    assert set(frame["num-server-rounds"]) == {2}  # the same federated rounds: LSI's pre-training not counted
    assert sorted(frame["seed"].unique()) == [0, 1, 10, 11, 20]  # 10 x domain + seed
    assert frame["bn-gap"].round(6).isin([0.0, 0.05, 0.04, 0.02, 0.03, 0.10, 0.12, 0.01, 0.09]).all()

    folder = tmp_path / "arms-eval"
    folder.mkdir()
    frame.to_csv(folder / "results.csv", index=False)  # no run folders: the report reads the keys' defaults
    assert report_main([str(folder), "--baseline", "fedavg"]) == 0
    paired = pd.read_csv(folder / "paired.csv").set_index("metric")
    diffs = [0.70 - 0.80, 0.75 - 0.82, 0.91 - 0.90, 0.80 - 0.88]
    row = paired.loc["selected-heldout-accuracy"]
    assert row["n"] == 4 and row["mean-diff"] == pytest.approx(sum(diffs) / 4) and row["wins/n"] == "1/4"
    assert "git-dirty" not in set(paired.index)  # provenance, not a metric

    table = pairs(runs).set_index(["domain", "seed"])
    assert len(table) == 5 and table.loc[(2, 0), "fedlsi-l10-tanh-eval"] != table.loc[(2, 0), "fedlsi-l10-tanh-eval"]
    one = table.loc[(1, 1)]
    assert one["fedlsi-l10-tanh-gain-eval"] == pytest.approx(-0.08)
    assert one["fedlsi-l10-tanh-gain-batch"] == pytest.approx(0.89 - 0.91)
    assert one["fedavg-bn-gap"] == pytest.approx(0.03)


def test_a_tuned_sweep_pools_only_the_chosen_configurations(tmp_path):
    """fedlsi_tuned.yaml: each held-out domain chooses its lr on source-accuracy (tuning seed),
    and the pool keeps only that lr's evaluation rows, with lr blanked so one arm stays one group."""
    import json

    from studies.fedlsi_pool import read

    rows = []
    # domain 0 chooses lr 0.01 (source 0.9 > 0.6), domain 1 lr 0.001; held-out accuracy is
    # poisoned in the tuning rows (the choice must not read it)
    for domain, best in ((0, 0.01), (1, 0.001)):
        for trial, lr in enumerate((0.001, 0.01), 1):
            src = 0.9 if lr == best else 0.6
            rows.append({"run-name": f"t{domain}{trial}", "phase": "tune", "trial": trial, "method": "fedavg",
                         "seed": 10, "heldout-domain": domain, "lr": lr, "round": 1, "num-server-rounds": 1,
                         "source-accuracy": src, "heldout-accuracy-eval": 1.0 - src})
            for seed in (0, 1):
                rows.append({"run-name": f"e{domain}{trial}{seed}", "phase": "eval", "trial": None,
                             "method": "fedavg", "seed": seed, "heldout-domain": domain, "lr": lr, "round": 1,
                             "num-server-rounds": 1, "source-accuracy": 0.5, "heldout-accuracy-eval": lr})
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    (tmp_path / "tune.json").write_text(json.dumps({"seeds": [10], "select": "source-accuracy",
                                                    "settings": ["heldout-domain", "method"],
                                                    "space": {"fedavg": {"lr": [0.001, 0.01]}}}))
    frame = read(tmp_path)
    assert sorted(frame["run-name"]) == ["e020", "e021", "e110", "e111"]
    assert frame["lr"].isna().all() and "phase" not in frame
    chosen = pd.read_csv(tmp_path / "selected.csv").set_index("heldout-domain")["lr"]
    assert chosen.to_dict() == {0: 0.01, 1: 0.001}

    # stopped before results.csv: the runs' metrics.csv, phase by seed (10 is the tuning seed)
    stopped = tmp_path / "stopped"
    for name, rows_of in pd.DataFrame(rows).drop(columns=["phase", "trial"]).groupby("run-name"):
        (stopped / name).mkdir(parents=True)
        rows_of.to_csv(stopped / name / "metrics.csv", index=False)
    (stopped / "tune.json").write_text((tmp_path / "tune.json").read_text())
    again = read(stopped)
    assert sorted(again["run-name"]) == ["e020", "e021", "e110", "e111"] and again["lr"].isna().all()


def test_the_page_is_built_from_the_report_files(tmp_path):
    """studies/fedlsi_page.py: the headline cells are the report's paired differences, the
    confound row is the per-pair batch-minus-eval gap, one table row per pair."""
    from studies.fedlsi_page import page

    rows = []
    cases = {(0, 0): (0.80, 0.05, 0.70, 0.10), (0, 1): (0.82, 0.04, 0.75, 0.12), (1, 0): (0.90, 0.02, 0.91, 0.01)}
    for (d, s), (fa, fgap, la, lgap) in cases.items():
        rows += run_rows("fedavg", d, s, [0.5, fa], fgap, 2)
        lsi = run_rows("fedlsi", d, s, [0.1, 0.4, la], lgap, 3)
        for r in lsi:
            r["lsi-real-hit"] = 0.25 if r["round"] == 3 else None
        rows += lsi
    runs = pd.DataFrame(rows)
    for mode in ("eval", "batch"):
        folder = tmp_path / f"arms-{mode}"
        folder.mkdir()
        arms(runs, mode).to_csv(folder / "results.csv", index=False)
        assert report_main([str(folder), "--baseline", "fedavg"]) == 0
    pairs(runs).to_csv(tmp_path / "arms-pairs.csv", index=False)
    text = page(tmp_path)
    mean_eval = ((0.70 - 0.80) + (0.75 - 0.82) + (0.91 - 0.90)) / 3
    headline = next(line for line in text.splitlines() if line.startswith("| fedlsi-l10-tanh | 3 |"))
    assert f"{mean_eval:+.3f} [" in headline and headline.count("1/3") >= 1
    gap_row = next(line for line in text.splitlines() if line.startswith("| fedlsi-l10-tanh | +"))
    extra = ((0.10 - 0.05) + (0.12 - 0.04) + (0.01 - 0.02)) / 3
    assert f"{(0.10 + 0.12 + 0.01) / 3:+.3f} [" in gap_row and f"{extra:+.3f} [" in gap_row and "| 2/3 |" in gap_row
    assert sum(line.startswith(("| 0 | ", "| 1 | ")) for line in text.splitlines()) == 3
    assert "| `lsi-real-hit` |" in text and "0.250 [0.250, 0.250], 3" in text


def test_sweeps_that_reuse_run_names_stay_apart(tmp_path):
    """Two ablation sweeps name their runs alike (grid keys only): pooled, each keeps its runs."""
    from studies.fedlsi_pool import gathered

    for folder, lam in (("l0", 0.0), ("l10", 10.0)):
        rows = [{**r, "lambda-di": lam} for d in (0, 1) for r in run_rows("fedlsi", d, 0, [0.1, 0.4, 0.6 + lam / 100], 0.0, 3)]
        (tmp_path / folder).mkdir()
        pd.DataFrame(rows).to_csv(tmp_path / folder / "results.csv", index=False)
    runs = gathered([tmp_path / "l0", tmp_path / "l10"])
    assert runs["run-name"].nunique() == 4 and len(runs) == 12
    frame = arms(runs, "eval")
    last = frame.groupby("method")["run-name"].nunique()
    assert last.to_dict() == {"fedlsi-l0-tanh": 2, "fedlsi-l10-tanh": 2}
    one = gathered([tmp_path / "l0"])  # a single folder keeps its names
    assert set(one["run-name"]) == set(pd.read_csv(tmp_path / "l0" / "results.csv")["run-name"])
