"""The FedSDWC results page's tables from its tuned study (``fedsdwc_study_cpu.yaml``).

``python -m studies.fedsdwc_page RUNS``: runs the report on the study folder RUNS with
``--select val-accuracy`` against each baseline of the page (FedAvg, FedAvg + Fourier, and
FedSDWC for its ablations), keeps each ``paired.csv`` as ``paired-vs-<baseline>.csv`` (and
``report.md`` against FedAvg), and writes ``RUNS/page.md`` (and prints it): per metric, each
comparison per Dirichlet value and pooled over them, as mean [95% t-interval] and wins / n;
then what the protocol chose. Regenerated from the files, never typed.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from common import markdown as md
from simulations.report import ReportError, lower_is_better, report
from studies.pages import diff_cell, seed_diffs

METRICS = {"accuracy": "clean test accuracy of the global model",
           "corrupt-accuracy": "accuracy on the 19 corruptions",
           "corrupt-ratio": "corrupt-accuracy / accuracy: robustness, 1 is none lost",
           "auroc": "OOD detection, higher is better",
           "fpr95": "OOD false positives at 95% true positives, lower is better"}
ABLATIONS = ("fedsdwc-no-kl", "fedsdwc-no-link", "fedsdwc-no-intervention", "fedsdwc-no-generative")
# (arm, baseline): the method against both baselines, Fourier augmentation alone, each ablation
COMPARISONS = (("fedsdwc", "fedavg"), ("fedsdwc", "fedavg-fourier"), ("fedavg-fourier", "fedavg"),
               *((a, "fedsdwc") for a in ABLATIONS))
SELECT = "val-accuracy"
SETTING = "dirichlet-alpha"
SEARCHED = ("lr", "batch-size", "weight-decay", "sdwc-beta", "lambda-intervention", "intervention-gamma")


def run_reports(folder: Path) -> pd.DataFrame:
    """The report against each baseline; every pair row, tagged with its ``baseline`` method."""
    frames = []
    for baseline in ("fedsdwc", "fedavg-fourier", "fedavg"):  # report.md stays the one against FedAvg
        report(folder, baseline, SELECT)
        shutil.copyfile(folder / "paired.csv", folder / f"paired-vs-{baseline}.csv")
        frames.append(pd.read_csv(folder / "paired.csv").assign(against=baseline))
    return pd.concat(frames, ignore_index=True)


def difference_table(pairs: pd.DataFrame, metric: str) -> list[str]:
    rows = pairs[pairs["metric"] == metric]
    if rows.empty:
        return []
    settings = sorted(rows[SETTING].unique()) if SETTING in rows else []
    lower = lower_is_better(metric)
    lines = []
    for arm, baseline in COMPARISONS:
        part = rows[(rows["method"] == arm) & (rows["against"] == baseline)]
        if part.empty:
            continue
        per = {s: np.concatenate([seed_diffs(r) for _, r in g.iterrows()]) for s, g in part.groupby(SETTING)} \
            if settings else {}
        pooled = np.concatenate([seed_diffs(r) for _, r in part.iterrows()])
        lines.append([f"{arm} − {baseline}", *(diff_cell(per.get(s, np.array([])), lower) for s in settings),
                      diff_cell(pooled, lower)])
    header = ["comparison", *(f"α = {s:g}" for s in settings), "all"]
    wins = "lower" if lower else "higher"
    return [f"`{metric}` ({METRICS[metric]}): arm minus baseline, mean [95% t-interval] and wins / n "
            f"(a win is {wins}; n = evaluation seeds; `all`: every seed of every Dirichlet value):", "",
            *md.table(header, lines), ""]


def chosen(selected: pd.DataFrame) -> list[str]:
    params = [k for k in SEARCHED if k in selected]
    score = [c for c in selected if c.endswith("-mean")]
    cols = ["method", *([SETTING] if SETTING in selected else []), *params, *score,
            *(["trials"] if "trials" in selected else [])]
    table = selected.sort_values(cols[:2])
    lines = md.table(cols, ([md.cell(v, ".3g", "–") for v in r] for _, r in table[cols].iterrows()))
    return [f"What the protocol chose on `{SELECT}` (the server's validation split, tuning seed; "
            "`selected.csv`; – where the arm does not read the key; an ablation, 0 trials, ran at FedSDWC's "
            "choice):", "", *lines, ""]


def page(folder: Path, pairs: pd.DataFrame) -> str:
    parts = [line for m in METRICS for line in difference_table(pairs, m)]
    if (folder / "selected.csv").exists():
        parts += chosen(pd.read_csv(folder / "selected.csv"))
    return "\n".join(parts)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python -m studies.fedsdwc_page RUNS (the FedSDWC study's out-dir)", file=sys.stderr)
        return 2
    folder = Path(argv[0])
    try:
        pairs = run_reports(folder)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    text = page(folder, pairs)
    (folder / "page.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
