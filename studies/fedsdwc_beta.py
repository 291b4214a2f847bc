"""The FedSDWC page's β sensitivity (``fedsdwc_beta_cpu.yaml``) against its tuned study.

``python -m studies.fedsdwc_beta BETA_RUNS STUDY_RUNS`` (each a sweep's out-dir, or a folder
holding its ``results.csv``) writes ``BETA_RUNS/page.md`` (and prints it):

- per Dirichlet value, each β's ``val-accuracy`` on the tuning seed (the trials: n = 1 each,
  so no interval) and, where ``BETA_RUNS/fedsdwc_probe.csv`` has the run, the ELBO's share
  of the encoder's gradient (its terms' ``share-`` columns summed); the β chosen marked;
- on the evaluation seeds, FedSDWC at the chosen β minus the study's FedSDWC and minus its
  FedAvg, paired by Dirichlet value and seed: mean [95% t-interval] wins/n per metric.

Why a page of its own: the β search gives FedSDWC trials no baseline had, so it is a
sensitivity analysis of one key beside the equal-budget comparison, not part of it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from common import markdown as md
from clients.fedsdwc import ELBO_TERMS
from simulations.report import ReportError, final_rows, load, lower_is_better
from simulations.selection import phases
from studies.fedsdwc_page import METRICS, SELECT, SETTING
from studies.pages import diff_cell


def finals(folder: Path) -> pd.DataFrame:
    """Each finished run's final row with each metric's last reported value, and its phase
    (a sweep stopped before its report has no ``results.csv`` to label it: ``phases``)."""
    frame, _, metrics = load(folder)
    if "phase" not in frame:
        frame.insert(0, "phase", phases(folder, frame))
    return final_rows(frame, metrics)[0]


def validation_table(runs: pd.DataFrame, probe: pd.DataFrame | None, chosen: dict[float, float]) -> list[str]:
    tune = runs[(runs["phase"] == "tune") & (runs["method"] == "fedsdwc")]
    if probe is not None:
        share = probe.assign(elbo=probe[[f"share-{t}" for t in ELBO_TERMS]].sum(axis=1))[["run-name", "elbo"]]
        tune = tune.merge(share, on="run-name", how="left")
    settings = sorted(tune[SETTING].unique())
    header = ["sdwc-beta", *(f"{SELECT}, α = {s:g}" for s in settings)]
    if probe is not None:
        header += [f"ELBO share, α = {s:g}" for s in settings]
    lines = []
    for beta, rows in tune.groupby("sdwc-beta"):
        by = rows.set_index(SETTING)
        cells = [f"{by.at[s, SELECT]:.4f}{' (chosen)' if chosen.get(s) == beta else ''}" if s in by.index else "–"
                 for s in settings]
        if probe is not None:
            cells += [md.cell(by.at[s, "elbo"], ".2g", "–") if s in by.index else "–" for s in settings]
        lines.append([f"{beta:.3g}", *cells])
    return [f"`{SELECT}` at the final round on the tuning seed, one run per β and Dirichlet value (n = 1: no "
            "interval); the ELBO share is its terms' part of the encoder's gradient at the run's final weights "
            "(`studies.fedsdwc_probe`):", "", *md.table(header, lines), ""]


def difference_table(arm: pd.DataFrame, study: pd.DataFrame, metric: str) -> list[str]:
    keys = [SETTING, "seed"]
    lower = lower_is_better(metric)
    settings = sorted(arm[SETTING].unique())
    lines = []
    for name in ("fedsdwc", "fedavg"):
        base = study[study["method"] == name][[*keys, metric]]
        pairs = arm[[*keys, metric]].merge(base, on=keys, suffixes=("", "-base")).dropna()
        d = pairs[metric] - pairs[f"{metric}-base"]
        per = [diff_cell(d[pairs[SETTING] == s].to_numpy(), lower) for s in settings]
        lines.append([f"chosen β − study's {name}", *per, diff_cell(d.to_numpy(), lower)])
    return [f"`{metric}` ({METRICS[metric]}), evaluation seeds, mean [95% t-interval] wins/n:", "",
            *md.table(["comparison", *(f"α = {s:g}" for s in settings), "all"], lines), ""]


def page(beta: Path, study: Path) -> str:
    runs, base = finals(beta), finals(study)
    selected = pd.read_csv(beta / "selected.csv")
    chosen = dict(zip(selected[SETTING], selected["sdwc-beta"]))
    probe = pd.read_csv(beta / "fedsdwc_probe.csv") if (beta / "fedsdwc_probe.csv").exists() else None
    parts = validation_table(runs, probe, chosen)
    evaluated = runs[(runs["phase"] == "eval") & (runs["method"] == "fedsdwc")]
    study_eval = base[base["phase"] == "eval"]  # finals labels every row
    if evaluated.empty:
        parts.append("No evaluation run has finished yet: the sweep resumes with `--resume`.")
    else:
        for metric in (m for m in METRICS if m in evaluated and m in study_eval):
            parts += difference_table(evaluated, study_eval, metric)
    return "\n".join(parts)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not all(Path(a).is_dir() for a in argv) or not (Path(argv[0]) / "selected.csv").exists():
        print("usage: python -m studies.fedsdwc_beta BETA_RUNS STUDY_RUNS (the beta sweep's out-dir, with its "
              "selected.csv, and the study's)", file=sys.stderr)
        return 2
    try:
        text = page(Path(argv[0]), Path(argv[1]))
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    (Path(argv[0]) / "page.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
