"""The FedDG-LSI results page's tables, from the pooled comparison.

``python -m studies.fedlsi_page POOLED [SWEEP[,SWEEP...]]``: POOLED is ``fedlsi_pool
--arms``'s folder after ``simulations.report`` ran on ``arms-eval`` and ``arms-batch``
(their ``paired.csv`` against FedAvg); SWEEP, a tuned sweep's folder (or several,
comma-separated), adds its ``selected.csv``. Writes ``POOLED/page.md`` (and prints it):
every arm's difference from FedAvg in both BatchNorm modes, the BatchNorm-mode confound (each arm's batch-minus-eval gap beside FedAvg's, per
pair), the per-pair table, and the translation measured on the encoder's real latents. The
numbers come from the files, so the page is regenerated, never typed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from common import markdown as md
from simulations.intervals import ci95, values_of

# lsi-* diagnostics of the translator (docs/methods/fedlsi.md, stage 3), last round
TRANSLATION = {
    "lsi-real-hit": "translated real z labelled as the target domain",
    "lsi-real-hit-identity": "untranslated real z labelled as the target domain (the chance floor)",
    "lsi-real-clf-acc": "the domain classifier on held-out untranslated z",
    "lsi-real-class-kept": "global classifier gives the true class of G(z, c, c')",
    "lsi-real-class-acc": "global classifier gives the true class of z",
    "lsi-translation-hit": "the same hit on the synthetic latents G was trained on",
    "lsi-translation-class-kept": "class kept on the synthetic latents",
    "divergence": "the clients' MSE(G(z, c, c'), z)",
}


def interval(values, metric: str = "") -> str:
    x = values_of(values)
    if len(x) == 0:
        return "(no runs)"
    lo, hi = ci95(x, metric)
    return f"{x.mean():+.3f} [{lo:+.3f}, {hi:+.3f}]"


def paired_cell(paired: pd.DataFrame, arm: str, metric: str) -> str:
    row = paired[(paired["method"] == arm) & (paired["metric"] == metric)]
    if row.empty:
        return "(not paired)"
    r = row.iloc[0]
    return f"{r['mean-diff']:+.3f} [{r['ci95-low']:+.3f}, {r['ci95-high']:+.3f}], {r['wins/n']}"


def differences(folder: Path, arms: list[str]) -> list[str]:
    modes = {m: pd.read_csv(folder / f"arms-{m}" / "paired.csv") for m in ("eval", "batch")}
    n = {a: int(modes["eval"].loc[modes["eval"]["method"] == a, "n"].max()) for a in arms}
    lines = ["| arm | n pairs | selected held-out, eval mode | selected held-out, batch mode | "
             "final-round held-out, eval | six-domain test accuracy (eval) |", "|---|---|---|---|---|---|"]
    for a in arms:
        lines.append(f"| {a} | {n[a]} | {paired_cell(modes['eval'], a, 'selected-heldout-accuracy')} | "
                     f"{paired_cell(modes['batch'], a, 'selected-heldout-accuracy')} | "
                     f"{paired_cell(modes['eval'], a, 'heldout-accuracy')} | "
                     f"{paired_cell(modes['eval'], a, 'accuracy')} |")
    return ["Difference from FedAvg, mean [95% t-interval], wins/n (pairs: held-out domain x seed):", "",
            *lines, ""]


def confound(pairs: pd.DataFrame, arms: list[str]) -> list[str]:
    lines = ["| arm | batch - eval gap, mean [95%] | gap minus FedAvg's gap, per pair | its gap the larger |",
             "|---|---|---|---|", f"| fedavg | {interval(pairs['fedavg-bn-gap'])} | | |"]
    for a in arms:
        gap = pairs[f"{a}-batch"] - pairs[f"{a}-eval"]
        extra = gap - pairs["fedavg-bn-gap"]
        ok = extra.dropna()
        lines.append(f"| {a} | {interval(gap)} | {interval(extra)} | {int((ok > 0).sum())}/{len(ok)} |")
        wins = pairs[f"{a}-gain-batch"].dropna()
        beyond = (wins > pairs.loc[wins.index, "fedavg-bn-gap"].abs()).sum()
        lines.append(f"| | batch-mode gains > 0: {int((wins > 0).sum())}/{len(wins)}; gains larger than "
                     f"FedAvg's own gap: {int(beyond)}/{len(wins)} | | |")
    return ["Selected held-out accuracy, batch mode minus eval mode (the evaluation mode's own effect; "
            "a batch-mode gain counts for the method only beyond FedAvg's gap):", "", *lines, ""]


def per_pair(pairs: pd.DataFrame, arms: list[str]) -> list[str]:
    head = ["held-out domain", "seed", "FedAvg eval / batch"] + [f"{a} eval / batch (gain)" for a in arms]
    rows = []
    for _, r in pairs.iterrows():
        cells = [str(int(r["domain"])), str(int(r["seed"])), f"{r['fedavg-eval']:.3f} / {r['fedavg-batch']:.3f}"]
        for a in arms:
            cells.append(f"{r[f'{a}-eval']:.3f} / {r[f'{a}-batch']:.3f} "
                         f"({r[f'{a}-gain-eval']:+.3f} / {r[f'{a}-gain-batch']:+.3f})")
        rows.append([*cells, f"{r['fedavg-bn-gap']:+.3f}"])
    lines = md.table([*head, "FedAvg's batch - eval"], rows)
    return ["`selected-heldout-accuracy` per pair; gain = the arm minus FedAvg:", "", *lines, ""]


def translation(results: pd.DataFrame, arms: list[str]) -> list[str]:
    # each run's last recorded value (the synthetic-latent scores are recorded when G is trained)
    last = results.sort_values("round").groupby("run-name").last()
    rows = []
    for metric, what in TRANSLATION.items():
        if metric not in last:
            continue
        cells = []
        for a in arms:
            x = values_of(last.loc[last["method"] == a, metric])
            lo, hi = ci95(x, "accuracy" if metric != "divergence" else metric) if len(x) else (np.nan, np.nan)
            cells.append(f"{x.mean():.3f} [{lo:.3f}, {hi:.3f}], {len(x)}" if len(x) else "(none)")
        rows.append([f"`{metric}`", what, *cells])
    lines = md.table(["metric", "what", *(f"{a}: mean [95%], n" for a in arms)], rows)
    return ["The translator on the global encoder's real latents (source-validation images), last round:", "",
            *lines, ""]


def chosen(sweeps: list[Path]) -> list[str]:
    table = pd.concat([pd.read_csv(s / "selected.csv") for s in sweeps], ignore_index=True)
    cols = [c for c in ("heldout-domain", "method", "lambda-di", "lr", "lsi-lr", "source-accuracy-mean", "trials")
            if c in table]
    lines = md.table(cols, ([md.cell(v, "g", "") for v in r] for _, r in table[cols].iterrows()))
    return ["What the protocol chose on source validation (tuning seed; `selected.csv`):", "", *lines, ""]


def page(pooled: Path, sweeps: list[Path] = ()) -> str:
    pairs = pd.read_csv(pooled / "arms-pairs.csv")
    arms = sorted({c[: -len("-gain-eval")] for c in pairs if c.endswith("-gain-eval")}, reverse=True)
    pairs = pairs.dropna(subset=[f"{a}-{m}" for a in ["fedavg", *arms] for m in ("eval", "batch")])  # whole pairs
    results = pd.read_csv(pooled / "arms-eval" / "results.csv")
    parts = differences(pooled, arms) + confound(pairs, arms) + per_pair(pairs, arms)
    parts += translation(results, arms)
    if sweeps:
        parts += chosen(list(sweeps))
    return "\n".join(parts)


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m studies.fedlsi_page POOLED [SWEEP[,SWEEP...]]")
    text = page(Path(sys.argv[1]), [Path(f) for f in sys.argv[2].split(",")] if len(sys.argv) == 3 else [])
    (Path(sys.argv[1]) / "page.md").write_text(text + "\n")
    print(text)
