"""studies.pool: two tuned sweeps become one search over the union of their configurations."""

import json

import pandas as pd
import pytest

from simulations.selection import apply
from studies import pool


def _sweep(folder, commit, lrs, val, test, eval_lr):
    """A tuned sweep's results.csv (final rounds only) and tune.json: ditto searched over ``lrs``."""
    rows = []
    for lr in lrs:
        rows.append({"phase": "tune", "trial": lrs.index(lr), "method": "ditto", "dataset": "mnist",
                     "lr": lr, "seed": 10, "round": 2, "num-server-rounds": 2, "run-name": f"ditto_lr-{lr}_seed-10",
                     "personalized-val-accuracy": val[lr], "personalized-accuracy": test[lr], "round-seconds": 1.0,
                     "git-commit": commit, "git-dirty": False})
    for seed in (0, 1):
        rows.append({"phase": "eval", "trial": None, "method": "ditto", "dataset": "mnist", "lr": eval_lr,
                     "seed": seed, "round": 2, "num-server-rounds": 2, "run-name": f"ditto_lr-{eval_lr}_seed-{seed}",
                     "personalized-val-accuracy": val[eval_lr], "personalized-accuracy": test[eval_lr] + seed / 100,
                     "round-seconds": 2.0 + seed, "git-commit": commit, "git-dirty": False})
    folder.mkdir()
    pd.DataFrame(rows).to_csv(folder / "results.csv", index=False)
    spec = {"seeds": [10], "select": "personalized-val-accuracy", "budget": len(lrs),
            "settings": ["method", "dataset"], "evaluation-seeds": [0, 1], "space": {"ditto": {"lr": lrs}}}
    (folder / "tune.json").write_text(json.dumps(spec))


VAL = {0.1: 0.80, 0.01: 0.85, 0.001: 0.90}
TEST = {0.1: 0.70, 0.01: 0.75, 0.001: 0.78}


def test_the_union_is_one_search_and_a_shared_run_is_kept_once(tmp_path):
    _sweep(tmp_path / "a", "aaa", [0.1, 0.01], VAL, TEST, eval_lr=0.01)
    _sweep(tmp_path / "b", "bbb", [0.01, 0.001], VAL, TEST, eval_lr=0.001)
    frame = pool.pool(tmp_path / "u", [tmp_path / "a", tmp_path / "b"])
    assert not frame.duplicated(["run-name", "round"]).any()
    assert set(frame["sweep"]) == {"a", "b"}
    assert frame.groupby("sweep")["git-commit"].unique().map(list).to_dict() == {"a": ["aaa"], "b": ["bbb"]}
    spec = json.loads((tmp_path / "u" / "tune.json").read_text())
    assert spec["space"]["ditto"]["lr"] == [0.001, 0.01, 0.1]
    assert "ditto 3" in spec["budget"]
    rows, _ = apply(tmp_path / "u", pd.read_csv(tmp_path / "u" / "results.csv"))
    selected = pd.read_csv(tmp_path / "u" / "selected.csv")
    assert selected["lr"].iloc[0] == 0.001 and selected["trials"].iloc[0] == 3  # b's config wins on validation
    assert sorted(rows["personalized-accuracy"]) == pytest.approx([0.78, 0.79])  # b's evaluation runs


def test_copies_that_disagree_stop_the_pool(tmp_path):
    _sweep(tmp_path / "a", "aaa", [0.1, 0.01], VAL, TEST, eval_lr=0.01)
    _sweep(tmp_path / "b", "bbb", [0.01, 0.001], VAL, {**TEST, 0.01: 0.74}, eval_lr=0.001)
    with pytest.raises(pool.PoolError, match="ditto_lr-0.01_seed-10 differs .*personalized-accuracy"):
        pool.pool(tmp_path / "u", [tmp_path / "a", tmp_path / "b"])


def test_sweeps_tuned_on_other_seeds_are_refused(tmp_path, capsys):
    _sweep(tmp_path / "a", "aaa", [0.1], VAL, TEST, eval_lr=0.1)
    _sweep(tmp_path / "b", "bbb", [0.001], VAL, TEST, eval_lr=0.001)
    spec = json.loads((tmp_path / "b" / "tune.json").read_text())
    (tmp_path / "b" / "tune.json").write_text(json.dumps({**spec, "seeds": [11]}))
    assert pool.main([str(tmp_path / "u"), str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert "differ in tune 'seeds'" in capsys.readouterr().err


def test_sweeps_in_folders_of_the_same_name_are_still_told_apart(tmp_path):
    """Two sweeps kept as ``x/out`` and ``y/out``: their shared run is still checked (copies are
    told apart by position), and rows name their sweep by path."""
    for parent in ("x", "y"):
        (tmp_path / parent).mkdir()
    _sweep(tmp_path / "x" / "out", "aaa", [0.1, 0.01], VAL, TEST, eval_lr=0.01)
    _sweep(tmp_path / "y" / "out", "bbb", [0.01, 0.001], VAL, {**TEST, 0.01: 0.74}, eval_lr=0.001)
    with pytest.raises(pool.PoolError, match="ditto_lr-0.01_seed-10 differs"):
        pool.pool(tmp_path / "u", [tmp_path / "x" / "out", tmp_path / "y" / "out"])
    frame = pd.read_csv(tmp_path / "y" / "out" / "results.csv")
    frame.loc[frame["lr"] == 0.01, "personalized-accuracy"] = TEST[0.01]  # the copies agree now
    frame.to_csv(tmp_path / "y" / "out" / "results.csv", index=False)
    frame = pool.pool(tmp_path / "u", [tmp_path / "x" / "out", tmp_path / "y" / "out"])
    assert set(frame["sweep"]) == {str(tmp_path / "x" / "out"), str(tmp_path / "y" / "out")}
    assert frame["run-name"].nunique() == len(frame) and "source" not in frame
