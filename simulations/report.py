"""Compare a sweep's runs with uncertainty: ``python -m simulations.report DIR [--baseline METHOD]``.

Reads ``DIR/results.csv`` (every run's rows: config keys, ``round``, metrics; written by
``simulations/sweep.py``; for a sweep stopped before its end, the runs' ``metrics.csv``)
and a run's ``config.json`` to tell config keys from metrics.
A *group* is one setting of every config key that varies across the runs, except
``seed`` (and ``run-name``, ``evaluate-every``: it changes no result; nor the commit, which
report.md lists); ``method`` is always a group key. Only runs that reached
``num-server-rounds`` count; the others are listed as incomplete. Writes:

- ``DIR/summary.csv``: one row per group: ``n`` (seeds) and ``<metric>-mean``,
  ``-std`` (ddof 1), ``-ci95`` (half-width of the 95% t-interval, ``t(0.975, n-1) *
  std / sqrt(n)``), ``-ci95-low`` / ``-ci95-high`` (the 95% interval of ``--interval``:
  by default the t-interval, cut to [0, 1] for metrics in [0, 1];
  ``simulations/intervals.py``) at the final round (a metric reported at some rounds only, like an
  attack's, at its last report); for domain runs (``source-accuracy`` present)
  also ``<metric>-at-selected-*``, at each run's round with the best source-validation
  accuracy (rounds >= 1, ties: the earlier round).
- ``DIR/paired.csv``: each group against the baseline method's group with the same
  shared keys (keys every method is run with the same values of, e.g. ``dirichlet-alpha``;
  a key set for one method only, like ``proximal-mu`` in a ``methods:`` block, is not
  matched): per metric the per-seed differences (same seed = same partitions), their
  mean and 95% t-interval, the paired t-test's and Wilcoxon's p-values (``p-t``,
  ``p-wilcoxon``), the effect size ``dz`` (mean / std of the differences), and wins / n
  (higher is a win, lower for losses, times, bytes, failures and FPR).
- ``DIR/attacks-summary.csv`` where runs wrote ``attacks.csv`` (privacy audit, GIFD):
  per group, attack and round, PSNR/SSIM/label accuracy over the attacked images.
- ``DIR/report.md``: the headline columns of both tables and two plots,
  ``report-curves.png`` (each headline metric vs round: mean line and 95% band per
  group) and ``report-final.png`` (final-round metrics: a bar per group, the mean, with
  its 95% interval as error bar).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from common import markdown as md
from simulations.intervals import METHODS, ci95, paired_tests, t_halfwidth, values_of
from simulations.provenance import NO_RESULT, PER_COMMIT, PER_RUN

# the seed (the replicate), keys that change no result, and provenance (the commit: listed in
# report.md, see ``commits``)
NOT_GROUP = {"seed", *NO_RESULT, *PER_RUN, *PER_COMMIT}
LOWER_IS_BETTER = ("loss", "seconds", "bytes", "failures", "fpr95")
HEADLINE = ("accuracy", "personalized-accuracy", "heldout-accuracy", "selected-heldout-accuracy",
            "corrupt-accuracy", "corrupt-ratio", "auroc", "fpr95", "loss", "uplink-bytes-total")


class ReportError(ValueError):
    """A folder that holds no sweep results, or a baseline that is not in it."""


def interval(values) -> tuple[int, float, float, float]:
    """n, mean, sample std (ddof 1) and half-width of the 95% t-interval (NaN below n=2)."""
    x = values_of(values)
    n = len(x)
    if n == 0:
        return 0, np.nan, np.nan, np.nan
    if n == 1:
        return 1, float(x[0]), np.nan, np.nan
    return n, float(x.mean()), float(x.std(ddof=1)), t_halfwidth(x)


def headline(metrics: list[str]) -> list[str]:
    """The metrics report.md shows: HEADLINE's and attack PSNRs (all are in the CSVs)."""
    shown = [m for m in HEADLINE if m in metrics] + [m for m in metrics if m.endswith("-psnr")]
    return shown or metrics[:4]


def lower_is_better(metric: str) -> bool:
    return any(word in metric for word in LOWER_IS_BETTER)


def load(out: Path) -> tuple[pd.DataFrame, list[str], list[str]]:
    """results.csv, its config columns and its metric columns (numeric, not all empty)."""
    csv = out / "results.csv"
    if csv.exists():
        frame = pd.read_csv(csv)
    else:  # a sweep that was stopped: its runs' rows so far
        runs = sorted(out.glob("*/metrics.csv"))
        if not runs:
            raise ReportError(f"{csv} not found, nor any {out}/<run>/metrics.csv: pass a sweep's out-dir")
        frame = pd.concat([pd.read_csv(p) for p in runs], ignore_index=True)
    if frame.empty or not {"run-name", "round", "method"} <= set(frame.columns):
        raise ReportError(f"{csv} has no run rows (columns run-name, round, method)")
    config = next((json.loads(p.read_text()) for name in frame["run-name"].unique()
                   if (p := out / str(name) / "config.json").exists()), None)
    if config is None:
        from simulations.config import defaults
        from simulations.provenance import COLUMNS

        config = {**defaults(), **dict.fromkeys(COLUMNS)}  # a results.csv without run folders (pooled)
    config_cols = [c for c in frame.columns if c in config or c == "run-name"]
    metrics = [c for c in frame.columns if c not in config_cols and c != "round"  # a true/false column is a
               and pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])  # retired key
               and frame[c].notna().any()]
    return frame, config_cols, metrics


def group_keys(frame: pd.DataFrame, config_cols: list[str]) -> list[str]:
    """``method`` and every other config key that varies across the runs, but not seed."""
    runs = frame.drop_duplicates("run-name")
    varying = [c for c in config_cols if c not in NOT_GROUP and runs[c].nunique(dropna=False) > 1]
    return ["method", *[c for c in varying if c != "method"]]


def splitting_keys(runs: pd.DataFrame, keys: list[str]) -> list[str]:
    """``method`` and the keys that split some method into several groups; a key with one
    value per method (a method's own setting, FedHiP's single round) adds no group and is
    left out of report.md's tables and labels (it is in summary.csv)."""
    return ["method", *[k for k in keys if k != "method" and (runs.groupby("method")[k].nunique(dropna=False) > 1).any()]]


def shared_keys(runs: pd.DataFrame, keys: list[str]) -> list[str]:
    """Group keys (other than method) that every method is run with the same values of."""
    methods = runs.groupby("method")
    return [k for k in keys if k != "method"
            and len({tuple(sorted(map(str, v.unique()))) for _, v in methods[k]}) == 1]


def final_rows(frame: pd.DataFrame, metrics: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """Each complete run's last row, with each metric's last reported value (a metric
    reported at some rounds only, like an attack's, keeps its value); the names of the
    runs that stopped early."""
    ordered = frame.sort_values("round", kind="stable")
    values = ordered.groupby("run-name", sort=False)[metrics].last()
    last = ordered.groupby("run-name", sort=False).tail(1).drop(columns=metrics)
    last = last.merge(values, left_on="run-name", right_index=True)
    if "num-server-rounds" in last:
        done = last["round"] >= last["num-server-rounds"]
    else:
        done = pd.Series(True, index=last.index)
    return last[done].reset_index(drop=True), sorted(map(str, last.loc[~done, "run-name"]))


def selected_rows(frame: pd.DataFrame, names) -> pd.DataFrame:
    """Per domain run, the row (round >= 1) with the best ``source-accuracy``; earliest on ties."""
    if "source-accuracy" not in frame:
        return frame.iloc[:0]
    rows = frame[frame["run-name"].isin(names) & (frame["round"] >= 1) & frame["source-accuracy"].notna()]
    rows = rows.sort_values(["run-name", "source-accuracy", "round"], ascending=[True, False, True])
    return rows.groupby("run-name", sort=False).head(1).reset_index(drop=True)


def _stats_columns(values: pd.DataFrame, metrics: list[str], suffix: str = "", how: str = "auto") -> dict:
    out = {}
    for m in metrics:
        _, mean, std, ci = interval(values[m]) if m in values else (0, np.nan, np.nan, np.nan)
        low, high = ci95(values[m], m, how) if m in values else (np.nan, np.nan)
        out.update({f"{m}{suffix}-mean": mean, f"{m}{suffix}-std": std, f"{m}{suffix}-ci95": ci,
                    f"{m}{suffix}-ci95-low": low, f"{m}{suffix}-ci95-high": high})
    return out


def summarize(final: pd.DataFrame, selected: pd.DataFrame, keys: list[str], metrics: list[str],
              how: str = "auto") -> pd.DataFrame:
    """One row per group: keys, n and mean/std/ci95 of each metric (final and at selection)."""
    rows = []
    for values, runs in final.groupby(keys, sort=True, dropna=False):
        row = dict(zip(keys, values))
        row["n"] = runs["seed"].nunique() if "seed" in runs else len(runs)
        row.update(_stats_columns(runs, [m for m in metrics if runs[m].notna().any()], how=how))
        picked = selected[selected["run-name"].isin(runs["run-name"])]
        if not picked.empty:
            row.update(_stats_columns(picked, [m for m in metrics if picked[m].notna().any()], "-at-selected", how))
        rows.append(row)
    return pd.DataFrame(rows)


def paired(final: pd.DataFrame, keys: list[str], shared: list[str], metrics: list[str],
           baseline: str) -> pd.DataFrame:
    """Per-seed differences (group - baseline) on the seeds both ran, per metric."""
    base = final[final["method"] == baseline]
    # keys the baseline itself runs with several values (its own methods: block): one pairing each
    own = [k for k in keys if k not in shared and k != "method" and base[k].nunique(dropna=False) > 1]
    rows = []
    for values, runs in final[final["method"] != baseline].groupby(keys, sort=True, dropna=False):
        group = dict(zip(keys, values))
        match = base
        for k in shared:
            match = match[match[k].astype(str) == str(group[k])]
        for bvalues, bruns in (match.groupby(own, dropna=False) if own else [((), match)]):
            label = " ".join([baseline, *(f"{k}={v}" for k, v in zip(own, bvalues))])
            joined = runs.merge(bruns, on="seed", suffixes=("", "@base"))
            for m in metrics:
                diff = (joined[m] - joined[f"{m}@base"]).dropna()
                if diff.empty:
                    continue
                n, mean, std, ci = interval(diff)
                wins = int(((diff < 0) if lower_is_better(m) else (diff > 0)).sum())
                rows.append({**group, "baseline": label, "metric": m, "n": n,
                             "seeds": " ".join(map(str, joined.loc[diff.index, "seed"])),
                             "diffs": " ".join(f"{d:.6g}" for d in diff),
                             "mean-diff": mean, "std-diff": std, "ci95": ci,
                             "ci95-low": mean - ci, "ci95-high": mean + ci, **paired_tests(diff),
                             "wins": wins, "wins/n": f"{wins}/{n}"})
    return pd.DataFrame(rows)


# ---- report.md --------------------------------------------------------------------
def _fmt(mean: float, ci: float) -> str:
    if pd.isna(mean):
        return "–"
    return f"{mean:.4g}" if pd.isna(ci) else f"{mean:.4g} ± {ci:.2g}"


def _fmt_range(mean: float, low: float, high: float) -> str:
    if pd.isna(mean):
        return "–"
    return f"{mean:.4g}" if pd.isna(low) else f"{mean:.4g} [{low:.4g}, {high:.4g}]"


def _fmt_p(p: float) -> str:
    return "–" if pd.isna(p) else (f"{p:.2g}" if p >= 1e-3 else "<0.001")


def integer_rounds(ax) -> None:
    """Round axes tick at whole rounds only."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _table(frame: pd.DataFrame) -> str:
    return "\n".join(md.table(frame.columns, frame.itertuples(index=False)))


def _label(row, keys: list[str]) -> str:
    return " ".join(str(row[k]) if k == "method" else f"{k}={row[k]}" for k in keys)


def plot_curves(frame: pd.DataFrame, final: pd.DataFrame, keys: list[str], metrics: list[str], path: Path,
                how: str = "auto") -> bool:
    """Each metric reported at two or more rounds against the round: mean line and 95% band per
    group, over the rounds that have values (``evaluate-every``: the line joins the evaluated rounds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = frame[frame["run-name"].isin(final["run-name"])]
    metrics = [m for m in metrics if rows.dropna(subset=[m])["round"].nunique() > 1]
    if not metrics:
        return False
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        for i, (values, runs) in enumerate(rows.groupby(keys, sort=True, dropna=False)):
            color = f"C{i % 10}"  # a group keeps its color in every panel, also after one it is absent from
            per_round = runs.dropna(subset=[m]).groupby("round")[m]
            if per_round.ngroups == 0:  # a method that does not report this metric (fedhip: no loss)
                continue
            mean = per_round.mean()
            bands = [ci95(v, m, how) for _, v in per_round]
            low = pd.Series([b[0] for b in bands], index=mean.index).fillna(mean)
            high = pd.Series([b[1] for b in bands], index=mean.index).fillna(mean)
            ax.plot(mean.index, mean.values, marker="o", ms=3, color=color, label=_label(dict(zip(keys, values)), keys))
            ax.fill_between(mean.index, low, high, color=color, alpha=0.2)
        ax.set(xlabel="round", title=m)
        integer_rounds(ax)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_final(summary: pd.DataFrame, keys: list[str], metrics: list[str], path: Path) -> bool:
    """Final-round metrics as bars (mean) with 95% error bars, one bar per group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in metrics if f"{m}-mean" in summary and summary[f"{m}-mean"].notna().any()]
    if not metrics:
        return False
    labels = [_label(r, keys) for _, r in summary.iterrows()]
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(3.5, 0.5 * len(labels) + 1.5) * len(metrics), 4),
                             squeeze=False)
    for ax, m in zip(axes[0], metrics):
        mean = summary[f"{m}-mean"]
        err = [(mean - summary[f"{m}-ci95-low"]).fillna(0), (summary[f"{m}-ci95-high"] - mean).fillna(0)]
        ax.bar(range(len(labels)), mean, yerr=err, capsize=3,
               color=[f"C{i % 10}" for i in range(len(labels))])
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{m} (final round)")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


INTERVALS = {"auto": "t-interval, cut to [0, 1] for metrics in [0, 1]",
             "t": "t-interval", "logit": "logit interval", "bootstrap": "BCa bootstrap"}


def commits(final: pd.DataFrame) -> str:
    """One line naming the commits the reported runs were made at (runs per commit) and how
    many ran from a checkout with uncommitted changes; "" where no run recorded a commit."""
    if "git-commit" not in final:
        return ""
    made = final["git-commit"].fillna("").astype(str).str[:8]
    made = made[made != ""]
    if made.empty:
        return ""
    counts = made.value_counts(sort=False).sort_index()
    listed = ", ".join(f"`{c}` ({n})" for c, n in counts.items())
    line = (f"Code: all {len(made)} runs at commit `{counts.index[0]}`." if len(counts) == 1 else
            f"Code: the {len(made)} runs were made at {len(counts)} commits (runs): {listed}; a commit is "
            "provenance, not a group key, so check that the method's code did not change between them.")
    dirty = final["git-dirty"].astype(str).str.lower().eq("true").sum() if "git-dirty" in final else 0
    if dirty:
        line += f" {dirty} of them ran from a checkout with uncommitted changes (`git-dirty`)."
    return line


def markdown(summary: pd.DataFrame, pairs: pd.DataFrame, keys: list[str], metrics: list[str],
             incomplete: list[str], baseline: str | None, plots: list[str], how: str = "auto",
             code: str = "") -> str:
    shown = [m for m in headline(metrics) if f"{m}-mean" in summary]
    lines = ["# Sweep report", "",
             f"Groups: one per setting of {', '.join(f'`{k}`' for k in keys)}; `n` = seeds (same seed = same "
             f"partitions). Cells: mean [95% interval] over the seeds ({INTERVALS[how]}; the t-interval's "
             "half-width, std, all metrics and the keys each method sets one value of are in `summary.csv`).", "",
             *([code, ""] if code else [])]
    table = summary[keys + ["n"]].copy()
    for m in shown:
        table[m] = [_fmt_range(*v) for v in zip(summary[f"{m}-mean"], summary[f"{m}-ci95-low"],
                                                  summary[f"{m}-ci95-high"])]
    lines += ["## Final round", "", _table(table), ""]
    selected = [m for m in shown if f"{m}-at-selected-mean" in summary]
    if selected:
        table = summary[keys + ["n"]].copy()
        for m in selected:
            table[m] = [_fmt_range(*v) for v in zip(summary[f"{m}-at-selected-mean"],
                                                      summary[f"{m}-at-selected-ci95-low"],
                                                      summary[f"{m}-at-selected-ci95-high"])]
        lines += ["## At the round selected on source validation", "", _table(table), ""]
    if baseline and not pairs.empty:
        p = pairs[pairs["metric"].isin(shown)].copy()
        p["difference"] = [_fmt(a, b) for a, b in zip(p["mean-diff"], p["ci95"])]
        p["95% interval"] = [("–" if pd.isna(c) else f"[{lo:.4g}, {hi:.4g}]")
                             for c, lo, hi in zip(p["ci95"], p["ci95-low"], p["ci95-high"])]
        p["p (t / Wilcoxon)"] = [f"{_fmt_p(a)} / {_fmt_p(b)}" for a, b in zip(p["p-t"], p["p-wilcoxon"])]
        p["d_z"] = ["–" if pd.isna(d) else f"{d:.2g}" for d in p["dz"]]
        lines += [f"## Paired differences against {baseline}", "",
                  "Per seed: group minus baseline on the same seed; a win is higher (lower for loss and FPR95). "
                  "Mean ± half-width of the 95% t-interval of the differences; two-sided p-values of the paired "
                  "t-test and the Wilcoxon signed-rank test (with n=3 Wilcoxon cannot go below 0.25); d_z = mean / "
                  "std of the differences. No correction for multiple comparisons.", "",
                  _table(p[keys + ["baseline", "metric", "n", "difference", "95% interval", "p (t / Wilcoxon)",
                                   "d_z", "wins/n"]]), ""]
    for name in plots:
        lines += [f"![{name}]({name})", ""]
    if incomplete:
        lines += [f"Not counted (stopped before the last round): {', '.join(incomplete)}", ""]
    return "\n".join(lines)


ATTACK_METRICS = ("psnr", "ssim", "label-accuracy", "feature-cosine")


def attacks_summary(out: Path, final: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The runs' ``attacks.csv`` rows (privacy audit, GIFD) pooled per group, attack and
    round: n images, n seeds, and mean with 95% t-interval over the images of all seeds."""
    frames = []
    for _, run in final.iterrows():
        csv = out / str(run["run-name"]) / "attacks.csv"
        if csv.exists():
            rows = pd.read_csv(csv)
            for k in keys + ["seed"]:
                if k in run:
                    rows[k] = run[k]
            frames.append(rows)
    if not frames:
        return pd.DataFrame()
    rows = pd.concat(frames, ignore_index=True)
    rows = rows[rows["attack"].notna()] if "attack" in rows else rows.iloc[:0]
    out_rows = []
    for values, part in rows.groupby(keys + ["attack", "round"], sort=True, dropna=False):
        row = dict(zip(keys + ["attack", "round"], values))
        row["images"] = len(part)
        row["seeds"] = part["seed"].nunique() if "seed" in part else 1
        for m in ATTACK_METRICS:
            if m in part and part[m].notna().any():
                _, mean, std, ci = interval(part[m])
                row.update({f"{m}-mean": mean, f"{m}-std": std, f"{m}-ci95": ci})
        out_rows.append(row)
    return pd.DataFrame(out_rows)


def attacks_markdown(table: pd.DataFrame, keys: list[str]) -> str:
    shown = table[keys + ["attack", "round", "images", "seeds"]].copy()
    for m in ATTACK_METRICS:
        if f"{m}-mean" in table:
            shown[m] = [_fmt(a, b) for a, b in zip(table[f"{m}-mean"], table[f"{m}-ci95"])]
    return "\n".join(["## Privacy audit (attacks.csv)", "",
                      "Per group, attack and audited round: mean ± half-width of the 95% t-interval over the "
                      "attacked images of all seeds (`images`, `seeds`); all columns in `attacks-summary.csv`.", "",
                      _table(shown), ""])


def report(out: Path, baseline: str | None = None, select: str | None = None, how: str = "auto") -> dict[str, Path]:
    """Write summary.csv, paired.csv, report.md (and the plots) into ``out``. A tuned sweep
    (``phase`` column), or ``select``: the chosen configurations' evaluation rows only
    (``simulations/selection.py``, which also writes selected.csv); ``how``: the interval."""
    out = Path(out)
    frame, config_cols, metrics = load(out)
    protocol = ""
    if select or "phase" in frame:
        from simulations.selection import SelectionError, apply

        try:
            frame, protocol = apply(out, frame, select)
        except SelectionError as err:
            raise ReportError(str(err)) from None
        if frame.empty:
            raise ReportError(f"{out}: no evaluation run of a chosen configuration")
        metrics = [m for m in metrics if m in frame and frame[m].notna().any()]
    keys = group_keys(frame, config_cols)
    final, incomplete = final_rows(frame, metrics)
    if final.empty:
        raise ReportError(f"{out}: no run reached its last round ({len(incomplete)} incomplete)")
    methods = set(final["method"].astype(str))
    if baseline is not None and baseline not in methods:
        raise ReportError(f"baseline '{baseline}' has no complete run here: pass one of {sorted(methods)}")
    if baseline is None and "fedavg" in methods and len(methods) > 1:
        baseline = "fedavg"
    selected = selected_rows(frame, final["run-name"])
    summary = summarize(final, selected, keys, metrics, how)
    shared = shared_keys(final, keys)
    pairs = paired(final, keys, shared, metrics, baseline) if baseline else pd.DataFrame()
    paths = {"summary": out / "summary.csv", "paired": out / "paired.csv", "report": out / "report.md"}
    summary.to_csv(paths["summary"], index=False)
    pairs.to_csv(paths["paired"], index=False)
    plotted = headline(metrics)
    shown = splitting_keys(final, keys)  # the same groups, fewer columns
    plots = [p.name for p, ok in ((out / "report-curves.png", plot_curves(frame, final, shown, plotted,
                                                                           out / "report-curves.png", how)),
                                  (out / "report-final.png", plot_final(summary, shown, plotted,
                                                                        out / "report-final.png"))) if ok]
    text = markdown(summary, pairs, shown, metrics, incomplete, baseline, plots, how, commits(final))
    attacks = attacks_summary(out, final, keys)
    if not attacks.empty:
        paths["attacks"] = out / "attacks-summary.csv"
        attacks.to_csv(paths["attacks"], index=False)
        text += "\n" + attacks_markdown(attacks, shown)
    if protocol:
        paths["selected"] = out / "selected.csv"
        text += "\n" + protocol
    paths["report"].write_text(text)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulations.report", description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path, help="a sweep's out-dir (holds results.csv and one folder per run)")
    parser.add_argument("--baseline", help="method to pair every group against (default: fedavg when present)")
    parser.add_argument("--select", help="a tuned sweep: choose each method's configuration by this validation "
                        "metric on the tuning seeds (default: the sweep's tune: select) and report it")
    parser.add_argument("--interval", choices=METHODS, default="auto", help="95%% interval of a group's mean: "
                        "auto (t, cut to [0, 1] for metrics in [0, 1]), t, logit, bootstrap (BCa; from ~10 seeds)")
    args = parser.parse_args(argv)
    try:
        paths = report(args.dir.expanduser(), args.baseline, args.select, args.interval)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"report: {paths['report']} (tables: {paths['summary'].name}, {paths['paired'].name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
