"""Keep, per method and setting, the configuration with the best mean validation accuracy:
``python -m studies.select_runs SWEEP_DIR SELECTED_DIR [--metric val-accuracy]``.

A stand-in for the tuning protocol's selection until it lands: within each (method,
dataset, Dirichlet alpha) the candidate configurations (every other config key that
varies, e.g. ``lr``, ``ditto-lambda``, ``ridge-gamma``) are scored by the mean over
seeds of ``--metric`` at the final round (clients' validation splits, never a test
split); the best one's runs (all seeds, all rounds) are copied to SELECTED_DIR
(``results.csv`` plus each run's ``config.json`` and ``metrics.csv``), where
``python -m simulations.report`` reads them. Prints and writes ``selection.csv``: every
candidate's score and which won.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pandas as pd

SETTING = ("method", "dataset", "dirichlet-alpha")


def select(src: Path, dst: Path, metric: str = "val-accuracy") -> pd.DataFrame:
    from simulations.report import NOT_GROUP, load

    frame, config_cols, _ = load(src)
    if metric not in frame:
        raise SystemExit(f"error: {src} has no '{metric}' column: run with val-fraction > 0")
    final = frame[frame["round"] == frame.groupby("run-name")["round"].transform("max")]
    setting = [k for k in SETTING if k in final]
    runs = final.drop_duplicates("run-name")
    tuned = [c for c in config_cols if c not in NOT_GROUP and c not in setting and runs[c].nunique(dropna=False) > 1]
    scores = final.groupby(setting + tuned, dropna=False)[metric].agg(["mean", "count"]).reset_index()
    scores["selected"] = False
    for _, cands in scores.groupby(setting, dropna=False):
        scores.loc[cands["mean"].idxmax(), "selected"] = True  # ties: the first (grid order)
    chosen = final.merge(scores[scores["selected"]][setting + tuned], on=setting + tuned)["run-name"]
    dst.mkdir(parents=True, exist_ok=False)
    frame[frame["run-name"].isin(set(chosen))].to_csv(dst / "results.csv", index=False)
    for name in set(chosen):
        (dst / name).mkdir()
        for part in ("config.json", "metrics.csv"):
            if (src / name / part).exists():
                shutil.copy(src / name / part, dst / name / part)
    scores.to_csv(dst / "selection.csv", index=False)
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studies.select_runs", description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="a sweep's out-dir")
    parser.add_argument("dst", type=Path, help="a new folder for the selected runs")
    parser.add_argument("--metric", default="val-accuracy")
    args = parser.parse_args(argv)
    print(select(args.src.expanduser(), args.dst.expanduser(), args.metric).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
