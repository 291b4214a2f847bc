"""Pool the comparison's runs over held-out domains for the report command.

``python docs/results/fedlsi/pool.py RUNS_DIR OUT_DIR``: reads every
``RUNS_DIR/**/metrics.csv`` (FedAvg and FedDG-LSI runs of fedlsi_power*.yaml) and writes
four folders under OUT_DIR, each a ``results.csv`` for ``python -m simulations.report``:
``round10-eval``, ``round10-batch`` (both methods cut at round 10) and ``claim5-eval``,
``claim5-batch`` (FedDG-LSI cut at round 5, FedAvg at round 20). A run is paired with the
other method's run on the same held-out domain and seed: ``seed`` becomes
``10 * heldout-domain + seed`` and ``heldout-domain`` one value, so the report's per-seed
pairing pools the domains. The plain DG metric names take one BatchNorm mode's columns
(``-eval`` or ``-batch``); the model selection stays within that mode.
"""

import sys
from pathlib import Path

import pandas as pd

DG = ("heldout-accuracy", "heldout-loss", "source-accuracy", "selected-heldout-accuracy", "selected-round")
CUTS = {"round10": {"fedavg": 10, "fedlsi": 10}, "claim5": {"fedavg": 20, "fedlsi": 5}}


def pooled(runs: pd.DataFrame, mode: str, cut: dict[str, int]) -> pd.DataFrame:
    frames = []
    for _, run in runs.groupby("run-name"):
        last = cut[run["method"].iloc[0]]
        if run["round"].max() < last:
            continue  # an incomplete run
        run = run[run["round"] <= last].copy()
        run["num-server-rounds"] = last
        frames.append(run)
    frame = pd.concat(frames, ignore_index=True)
    for name in DG:
        if f"{name}-{mode}" in frame:
            frame[name] = frame[f"{name}-{mode}"]
    frame["seed"] = 10 * frame["heldout-domain"].astype(int) + frame["seed"].astype(int)
    frame["heldout-domain"] = -1  # pooled
    frame["num-server-rounds"] = frame["round"].groupby(frame["run-name"]).transform("max")
    return frame


def main(src: Path, out: Path) -> None:
    runs = pd.concat([pd.read_csv(p) for p in sorted(src.glob("**/metrics.csv"))], ignore_index=True)
    for name, cut in CUTS.items():
        for mode in ("eval", "batch"):
            folder = out / f"{name}-{mode}"
            folder.mkdir(parents=True, exist_ok=True)
            pooled(runs, mode, cut).to_csv(folder / "results.csv", index=False)
            print(folder)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
