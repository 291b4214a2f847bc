"""Choose each method's configuration on validation data (``report --select METRIC``).

A tuned sweep's ``results.csv`` holds two phases (column ``phase``): ``tune`` rows (every
trial's configuration on the tuning seeds) and ``eval`` rows (the chosen configuration on
the evaluation seeds). Per method and setting, the configuration with the best mean
selection metric over the tuning seeds (final round; ties: the earlier trial) is chosen.
Only the selection metric and the keys are read here, never a test metric, so the
choice cannot depend on test data. ``tune.json`` (written by the sweep) names the
searched keys and the protocol.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from common import markdown as md

# The metrics a configuration may be chosen on, and whether higher is better.
# name -> higher is better; source-accuracy is domain generalization's validation (the source
# domains' held-back images, datasets/domains.py), never the held-out domain.
VALIDATION_METRICS = {"val-accuracy": True, "personalized-val-accuracy": True, "val-loss": False,
                      "source-accuracy": True}
PHASE_COLUMNS = ("phase", "trial")
SPEC = "tune.json"


class SelectionError(ValueError):
    """A selection that cannot be made as asked (a test metric, no tuning rows)."""


def check_metric(metric: str) -> None:
    if metric not in VALIDATION_METRICS:
        raise SelectionError(f"select '{metric}' is not a validation metric: pass one of {sorted(VALIDATION_METRICS)}")


def final_values(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per run that reached its last round: its keys and ``metric``'s last value."""
    rows = rows.sort_values("round", kind="stable")
    value = rows.groupby("run-name", sort=False)[metric].last()
    last = rows.groupby("run-name", sort=False).tail(1).drop(columns=[metric]).set_index("run-name")
    last[metric] = value
    if "num-server-rounds" in last:
        last = last[last["round"] >= last["num-server-rounds"]]
    return last.reset_index()


def config_scores(rows: pd.DataFrame, metric: str, settings: list[str], searched: list[str]) -> pd.DataFrame:
    """Per setting and configuration: ``<metric>-mean`` over the tuning seeds, ``seeds``
    and the first ``trial`` that ran it. ``rows``: the tuning phase's rows."""
    cols = ["run-name", "round", "seed", "trial", metric, *settings, *searched]
    cols += ["num-server-rounds"] if "num-server-rounds" in rows else []
    final = final_values(rows[[c for c in dict.fromkeys(cols) if c in rows]], metric)
    keys = [*settings, *searched]
    out = final.groupby(keys, dropna=False, sort=False).agg(
        **{f"{metric}-mean": (metric, "mean"), "seeds": ("seed", "nunique"), "trial": ("trial", "min")})
    return out.reset_index()


def select(rows: pd.DataFrame, metric: str, settings: list[str], searched: dict[str, list[str]],
           follow: dict[str, tuple[str, list[str]]] | None = None) -> pd.DataFrame:
    """``selected.csv``: one row per setting (``settings`` include ``method``): the chosen
    value of each searched key, ``<metric>-mean`` and ``trials`` (configurations tried).
    ``searched``: method -> its searched keys; a method without any ran its defaults, or,
    in ``follow`` (method -> (leader, keys)), the leader's chosen values of ``keys`` (0 trials)."""
    check_metric(metric)
    higher = VALIDATION_METRICS[metric]
    columns = list(dict.fromkeys(k for keys in searched.values() for k in keys))
    out = []
    for values, part in rows.groupby(settings, dropna=False, sort=True):  # every setting, tuned or not
        setting = dict(zip(settings, values if isinstance(values, tuple) else (values,)))
        part = part[part["phase"] == "tune"]
        keys = searched.get(str(setting["method"]), []) if len(part) else []
        scores = config_scores(part, metric, settings, keys) if keys else pd.DataFrame()
        row = {**setting, **{k: np.nan for k in columns}, f"{metric}-mean": np.nan, "trials": len(scores)}
        if len(scores):  # a configuration counts only with every tuning seed finished (a failed run: never chosen)
            scores = scores[scores["seeds"] == part["seed"].nunique()].dropna(subset=[f"{metric}-mean"])
        if len(scores):
            order = scores.sort_values([f"{metric}-mean", "trial"], ascending=[not higher, True], kind="stable")
            best = order.iloc[0]
            row.update({k: best[k] for k in keys})
            row[f"{metric}-mean"] = float(best[f"{metric}-mean"])
        out.append(row)
    for row in out:  # a follower takes its leader's choice in the same setting
        leader, keys = (follow or {}).get(str(row["method"]), (None, []))
        match = [r for r in out if r["method"] == leader and all(_same(r[k], row[k]) for k in settings if k != "method")]
        if match:
            row.update({k: match[0][k] for k in keys})
    return pd.DataFrame(out, columns=[*settings, *columns, f"{metric}-mean", "trials"])


def _same(a, b) -> bool:
    try:
        return bool(np.isclose(float(a), float(b), rtol=1e-9, atol=0))
    except (TypeError, ValueError):
        return str(a) == str(b)


def chosen_rows(rows: pd.DataFrame, selected: pd.DataFrame, settings: list[str],
                searched: dict[str, list[str]]) -> tuple[pd.DataFrame, list[str]]:
    """The evaluation phase's rows of the chosen configurations; the settings whose choice
    was not run on the evaluation seeds."""
    evaluated = rows[rows["phase"] == "eval"]
    keep, missing = [], []
    for _, sel in selected.iterrows():
        mask = np.ones(len(evaluated), dtype=bool)
        for k in settings:
            mask &= np.array([_same(v, sel[k]) for v in evaluated[k]], dtype=bool)
        for k in searched.get(str(sel["method"]), []):
            if pd.notna(sel[k]):
                mask &= np.array([_same(v, sel[k]) for v in evaluated[k]], dtype=bool)
        if not mask.any():
            missing.append(" ".join(f"{k}={sel[k]}" for k in settings))
        keep.append(evaluated[mask])
    frame = pd.concat(keep, ignore_index=True) if keep else evaluated.iloc[:0]
    return frame.drop(columns=[c for c in PHASE_COLUMNS if c in frame]), missing


def load_spec(out: Path) -> dict:
    path = Path(out) / SPEC
    return json.loads(path.read_text()) if path.exists() else {}


def phases(out: Path, frame: pd.DataFrame) -> list[str]:
    """Each run's phase in the sweep at ``out`` (a tuned sweep's tuning runs are not the models
    it compares), for a frame with ``run-name`` and ``seed``: the sweep's own label in
    ``results.csv``; for a sweep without one yet (stopped before its report), ``tune`` for
    the seeds its ``tune.json`` lists."""
    table = Path(out) / "results.csv"
    if table.is_file():
        done = pd.read_csv(table, usecols=lambda c: c in ("run-name", "phase"))
        if "phase" in done:
            label = dict(zip(done["run-name"], done["phase"]))
            if set(frame["run-name"]) <= set(label):
                return [label[name] for name in frame["run-name"]]
    tuning = set(load_spec(out).get("seeds", []))
    return ["tune" if s in tuning else "eval" for s in frame["seed"]]


def _space_text(spec) -> str:
    if isinstance(spec, dict):
        return f"[{spec['low']:g}, {spec['high']:g}]" + (" (log)" if spec.get("log") else "")
    return "{" + ", ".join(map(str, spec)) + "}"


def _shared_text(spec: dict) -> str:
    """The TPE studies' common random numbers, from tune.json's ``shared-draws``."""
    counts = list(spec.get("shared-draws", {}).values())
    if not counts:
        return ""
    n = str(min(counts)) if min(counts) == max(counts) else f"{min(counts)}-{max(counts)}"
    return (f"; in each TPE study, {n} trial(s) were common random numbers: trial i gave a key the same value in "
            f"every method's study (a Latin hypercube per key, `simulations/tuning.py`)")


def _follow_text(spec: dict) -> str:
    follow = spec.get("follow", {})
    if not follow:
        return ""
    pairs = "; ".join(f"{m} took {leader}'s choice of " + ", ".join(f"`{k}`" for k in spec["follow-keys"][m])
                      for m, leader in follow.items())
    return (f", and a method that follows another (an ablation: the method less one component) was not searched "
            f"but ran at the other's chosen configuration in the same setting: {pairs}")


def protocol(spec: dict, metric: str, selected: pd.DataFrame, missing: list[str]) -> str:
    """report.md's section: the protocol in one paragraph, then the choices."""
    spaces = "; ".join(f"{m}: " + ", ".join(f"`{k}` ∈ {_space_text(s)}" for k, s in keys.items())
                       for m, keys in spec.get("space", {}).items()) or "none"
    lines = ["## Tuning protocol", "",
             f"Hyperparameters were chosen on validation data, never on test data, with the same budget for "
             f"every searched method: per method and setting, {spec.get('budget', '?')} trials, or every candidate "
             f"where there are fewer (Optuna, seeded: a grid sampler where every key lists candidates, in a random "
             f"order when they exceed the budget; TPE where a key is a range){_shared_text(spec)}; a trial is one "
             f"configuration run on every tuning seed ({', '.join(map(str, spec.get('seeds', [])))}). The "
             f"configuration with the best mean `{metric}` at the final round over the tuning seeds (ties: the "
             f"earlier trial) was then run on the evaluation seeds, whose test metrics the tables above report. "
             f"Search spaces: {spaces}. A method without a space ran its defaults{_follow_text(spec)}. Chosen "
             f"values, the selection metric's mean and the number of trials: `selected.csv`.", ""]
    table = selected.copy()
    for c in table.columns:
        if table[c].dtype.kind == "f":
            table[c] = [("–" if pd.isna(v) else f"{v:.4g}") for v in table[c]]
    lines += [*md.table(table.columns, table.itertuples(index=False)), ""]
    if missing:
        lines += [f"Not run on the evaluation seeds (rerun the sweep with `select: {metric}`): "
                  f"{'; '.join(missing)}", ""]
    return "\n".join(lines)


def apply(out: Path, frame: pd.DataFrame, metric: str | None = None) -> tuple[pd.DataFrame, str]:
    """For the report: write ``selected.csv``; return the evaluation rows of the chosen
    configurations and the protocol section of report.md."""
    spec = load_spec(out)
    metric = metric or spec.get("select")
    if "phase" not in frame or not (frame["phase"] == "tune").any():
        raise SelectionError(f"{out}: results.csv has no tuning rows (column phase): --select needs a sweep "
                             "with a tune: block (docs/sweeps.md)")
    if metric is None:
        raise SelectionError(f"{out}: no {SPEC}: pass --select METRIC")
    check_metric(metric)
    settings = spec.get("settings") or ["method"]
    searched = {m: list(keys) for m, keys in spec.get("space", {}).items()}
    follow = {m: (leader, spec["follow-keys"][m]) for m, leader in spec.get("follow", {}).items()}
    selected = select(frame, metric, settings, searched, follow)
    selected.to_csv(Path(out) / "selected.csv", index=False)
    rows, missing = chosen_rows(frame, selected, settings, {**searched, **{m: k for m, (_, k) in follow.items()}})
    return rows, protocol(spec, metric, selected, missing)
