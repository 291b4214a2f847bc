"""The FedHiP results page's tables for a tuned sweep with several datasets and Dirichlet values.

``python -m studies.fedhip_page RUNS``: RUNS is a tuned sweep's folder after
``python -m simulations.report RUNS --select personalized-val-accuracy --baseline fedhip``
(its ``paired.csv``, ``summary.csv`` and ``selected.csv``). Writes ``RUNS/page.md`` (and
prints it): per metric, FedHiP minus each arm per dataset and Dirichlet value, and over all
settings, as mean [95% t-interval] and FedHiP's wins / n; then FedHiP's own accuracy and what
the protocol chose. The report's pairs are arm minus FedHiP; the page turns the sign so that a
positive number is FedHiP ahead. Regenerated from the files, never typed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from common import markdown as md
from studies.pages import diff_cell, seed_diffs

METRICS = {"personalized-accuracy": "each client's own model on its local test, averaged",
           "accuracy": "the global model on the global test"}
SETTING = ("dataset", "dirichlet-alpha")


def arm(row) -> str:
    """The arm's name: FedAvg's fine-tuning epochs split it in two."""
    if row["method"] == "fedavg":
        return "FedAvg + FT" if int(row.get("finetune-epochs", 0) or 0) > 0 else "FedAvg head"
    return {"ditto": "Ditto", "fedprox": "FedProx"}.get(row["method"], str(row["method"]))


def fedhip_minus(paired: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per (arm, setting): FedHiP minus the arm on each seed (the report's diffs negated)."""
    rows = paired[paired["metric"] == metric]
    out = []
    for _, r in rows.iterrows():
        out.append({"arm": arm(r), **{k: r[k] for k in SETTING if k in r}, "d": seed_diffs(r, -1.0)})
    return pd.DataFrame(out)


def joined(diffs: pd.DataFrame, name: str) -> np.ndarray:
    """Every seed's difference of arm ``name`` over the settings in ``diffs``."""
    parts = list(diffs.loc[diffs["arm"] == name, "d"])
    return np.concatenate(parts) if parts else np.array([])


def difference_table(paired: pd.DataFrame, metric: str) -> list[str]:
    diffs = fedhip_minus(paired, metric)
    if diffs.empty:
        return []
    arms = sorted(diffs["arm"].unique())
    keys = [k for k in SETTING if k in diffs]
    rows = []
    for setting, part in diffs.groupby(keys, sort=True):
        setting = setting if isinstance(setting, tuple) else (setting,)
        by_arm = {a: g["d"].iloc[0] for a, g in part.groupby("arm")}
        rows.append([*map(md.cell, setting), *(diff_cell(by_arm.get(a, np.array([]))) for a in arms)])
    pooled = [(f"**{d}**", part) for d, part in diffs.groupby(keys[0], sort=True)] if len(keys) > 1 else []
    for label, part in [*pooled, ("**all**", diffs)] if keys else []:
        rows.append([label, *["all"] * (len(keys) - 1), *(diff_cell(joined(part, a)) for a in arms)])
    lines = md.table([*keys, *arms], rows)
    return [(f"`{metric}` ({METRICS[metric]}), FedHiP minus each arm: mean [95% t-interval] and FedHiP's "
             "wins / n (n = evaluation seeds; pooled rows: every seed of every setting in them):"), "", *lines, ""]


def fedhip_level(summary: pd.DataFrame) -> list[str]:
    own = summary[summary["method"] == "fedhip"]
    keys = [k for k in SETTING if k in own]
    cols = [m for m in METRICS if f"{m}-mean" in own]
    rows = ([*(md.cell(r[k]) for k in keys), int(r["n"]),
             *(f"{r[f'{m}-mean']:.3f} [{r[f'{m}-ci95-low']:.3f}, {r[f'{m}-ci95-high']:.3f}]" for m in cols)]
            for _, r in own.sort_values(keys).iterrows())
    lines = md.table([*keys, "n", *cols], rows)
    return ["FedHiP's own level (final round; mean [95% interval]):", "", *lines, ""]


def chosen(selected: pd.DataFrame) -> list[str]:
    table = selected.copy()
    table.insert(0, "arm", [("FedHiP" if r["method"] == "fedhip" else arm(r)) for _, r in table.iterrows()])
    keys = [k for k in SETTING if k in table]
    params = [k for k in ("ridge-gamma", "lr", "ditto-lambda") if k in table]
    score = [c for c in table if c.endswith("-mean")]
    cols = ["arm", *keys, *params, *score, *(["trials"] if "trials" in table else [])]
    table = table.sort_values(["arm", *keys])
    lines = md.table(cols, ([md.cell(v, ".4g", "–") for v in r] for _, r in table[cols].iterrows()))
    return ["What the protocol chose on the clients' validation splits (tuning seed; `selected.csv`):", "",
            *lines, ""]


def page(folder: Path) -> str:
    paired = pd.read_csv(folder / "paired.csv")
    parts = [line for m in METRICS for line in difference_table(paired, m)]
    if (folder / "summary.csv").exists():
        parts += fedhip_level(pd.read_csv(folder / "summary.csv"))
    if (folder / "selected.csv").exists():
        parts += chosen(pd.read_csv(folder / "selected.csv"))
    return "\n".join(parts)


if __name__ == "__main__":
    if len(sys.argv) != 2 or not (Path(sys.argv[1]) / "paired.csv").exists():
        sys.exit("usage: python -m studies.fedhip_page RUNS (a folder holding the report's paired.csv: "
                 "run python -m simulations.report RUNS --baseline fedhip first)")
    text = page(Path(sys.argv[1]))
    (Path(sys.argv[1]) / "page.md").write_text(text + "\n")
    print(text)
