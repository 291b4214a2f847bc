"""Provenance and per-client rows through real runs: a sweep over ``num-supernodes``
records the federation, versions and commit, and the report groups by it."""

import json
from importlib import metadata

import pandas as pd

from tests.conftest import run_sweep


def test_num_supernodes_sweep_records_federation_and_report_groups_by_it(tmp_path):
    base = {"num-server-rounds": 1, "local-epochs": 1, "partitioner": "draw", "samples-per-client": 40,
            "client-resources-num-cpus": 1}
    code, frame, out = run_sweep(tmp_path, base, {"num-supernodes": [2, 3], "seed": [1, 2]}, "--local")
    assert code == 0
    runs = frame.drop_duplicates("run-name").set_index("num-supernodes")
    assert sorted(runs.index) == [2, 2, 3, 3]
    assert (runs["client-resources-num-cpus"] == 1).all()
    assert (runs["flwr-version"] == metadata.version("flwr")).all()
    assert (runs["torch-version"] == metadata.version("torch")).all()
    assert runs["git-commit"].str.fullmatch(r"[0-9a-f]{40}").all()  # the tests run from a checkout
    assert runs["python-version"].str.fullmatch(r"3\.\d+\.\d+").all()
    cfg = json.loads((out / "num-supernodes-3_seed-1" / "config.json").read_text())
    assert cfg["num-supernodes"] == 3 and cfg["flwr-run-id"] == ""  # in-process: no Flower run
    assert isinstance(cfg["git-dirty"], bool)

    summary = pd.read_csv(out / "summary.csv")  # one group per node count, not pooled
    assert list(summary["num-supernodes"]) == [2, 3] and list(summary["n"]) == [2, 2]
    for m in ("accuracy", "personalized-accuracy"):  # a share's interval stays in [0, 1]
        assert (summary[f"{m}-ci95-low"] >= 0).all() and (summary[f"{m}-ci95-high"] <= 1).all()
        assert (summary[f"{m}-ci95-low"] <= summary[f"{m}-mean"]).all()
        assert (summary[f"{m}-mean"] <= summary[f"{m}-ci95-high"]).all()
    assert "num-supernodes" in (out / "report.md").read_text()

    for nodes in (2, 3):  # one row per client and round: every partition trained and was evaluated
        clients = pd.read_csv(out / f"num-supernodes-{nodes}_seed-1" / "clients.csv")
        assert list(clients["partition-id"]) == list(range(nodes)) and set(clients["round"]) == {1}
        assert (clients["train-examples"] > 0).all() and clients["train-loss"].notna().all()
        assert clients["local-accuracy"].between(0, 1).all()
        run = frame[(frame["num-supernodes"] == nodes) & (frame["seed"] == 1) & (frame["round"] == 1)].iloc[0]
        # personalized accuracy is the unweighted mean of the clients' local accuracies
        assert abs(clients["local-accuracy"].mean() - run["personalized-accuracy"]) < 1e-9
