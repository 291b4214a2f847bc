"""Pool tuned sweeps into one folder for ``simulations.report --select``: one search over the
union of their configurations.

``python -m studies.pool OUT_DIR SWEEP [SWEEP ...]`` (a sweep's out-dir, or a results page's
folder holding its ``results.csv.gz`` and ``tune.json``) writes ``OUT_DIR/results.csv`` (every
sweep's rows, one copy of a run that several sweeps ran, each row naming its ``sweep``) and
``OUT_DIR/tune.json`` (per method its searched keys with the union of their candidates; the
settings keys of every sweep).
Why: a follow-up sweep that widens one arm's grid beyond the corner it chose must be judged
as one search over both grids, on the same tuning seeds, not as a second selection.

- A run (``run-name``: method, grid keys and seed) in several sweeps is kept once, after
  checking that its copies' final rounds agree on every numeric column but timings and bookkeeping
  (relative 1e-5: float32 losses summed in another order differ by ~1e-7; NaN equal to NaN);
  otherwise the pool stops with one line naming the run and the metric.
- Each row keeps its ``git-commit``: the report does not group by it and lists the commits.
- Every sweep must have the same tuning seeds and selection metric.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from simulations.report import NOT_GROUP
from simulations.selection import SPEC

# what may differ between two copies of the same run: no result
BOOKKEEPING = ("trial", *NOT_GROUP)


class PoolError(ValueError):
    """Sweeps that cannot be pooled as asked."""


def merged_spec(specs: list[dict], counts: dict[str, int]) -> dict:
    """One ``tune.json``: the shared seeds and metric, each method's candidate lists united."""
    for key in ("seeds", "select", "evaluation-seeds"):
        if any(s.get(key) != specs[0].get(key) for s in specs):
            raise PoolError(f"the sweeps differ in tune '{key}' ({[s.get(key) for s in specs]}): pool sweeps "
                            "tuned on the same seeds and metric")
    space: dict[str, dict] = {}
    for spec in specs:
        for method, keys in spec.get("space", {}).items():
            for key, cands in keys.items():
                have = space.setdefault(method, {}).get(key)
                if isinstance(cands, dict) or isinstance(have, dict):
                    if have is not None and have != cands:
                        raise PoolError(f"{method}: '{key}' is a range in one sweep and differs in another: "
                                        "pool only candidate lists or equal ranges")
                    space[method][key] = cands
                else:
                    space[method][key] = sorted(set(have or []) | set(cands), key=float)
    budget = ", ".join(f"{m} {n}" for m, n in sorted(counts.items()))
    settings = list(dict.fromkeys(k for s in specs for k in s.get("settings", ["method"])))
    return {**{k: specs[0].get(k) for k in ("seeds", "select", "evaluation-seeds")}, "settings": settings,
            "space": space, "budget": f"the pooled sweeps' configurations ({budget})"}


def check_copies(frame: pd.DataFrame) -> None:
    """Runs that several sweeps ran must agree on every numeric column of their final round
    (what the report's tables and the selection read; an earlier round's personalized accuracy
    can differ by one image where float32 noise flips a prediction)."""
    twice = frame.groupby("run-name")["source"].nunique()
    numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c]) and c not in BOOKKEEPING
               and c != "source" and not c.endswith("seconds")]  # timings differ run to run
    for name in twice[twice > 1].index:
        copies = [g.sort_values("round")[numeric].tail(1).to_numpy(float)
                  for _, g in frame[frame["run-name"] == name].groupby("source")]
        for other in copies[1:]:
            if other.shape != copies[0].shape:
                bad = "rows"
            else:
                close = np.isclose(other, copies[0], rtol=1e-5, atol=1e-9, equal_nan=True).all(axis=0)
                bad = next((c for c, ok in zip(numeric, close) if not ok), None)
            if bad is not None:
                raise PoolError(f"run {name} differs between the sweeps in '{bad}': they did not run the same code "
                                "or data; pool only sweeps whose shared runs agree")


def pool(out: Path, sweeps: list[Path]) -> pd.DataFrame:
    frames, specs = [], []
    # rows name their sweep by folder, or by path where two folders share a name; copies are
    # told apart by position
    names = [f.name for f in sweeps] if len({f.name for f in sweeps}) == len(sweeps) else [str(f) for f in sweeps]
    for i, folder in enumerate(sweeps):
        csv = next((c for c in (folder / "results.csv", folder / "results.csv.gz") if c.exists()), None)
        spec = folder / SPEC
        if csv is None or not spec.exists():
            raise PoolError(f"{folder} has no results.csv (or .csv.gz) and {SPEC}: pass tuned sweeps' out-dirs")
        frame = pd.read_csv(csv, low_memory=False)
        frames.append(frame.assign(sweep=names[i], source=i))
        specs.append(json.loads(spec.read_text()))
    frame = pd.concat(frames, ignore_index=True)
    check_copies(frame)
    first = frame.groupby("run-name")["source"].min()
    frame = frame[frame["source"] == frame["run-name"].map(first)].drop(columns="source")
    searched = {m: list(k) for s in specs for m, k in s.get("space", {}).items()}
    tune = frame[frame["phase"] == "tune"]
    counts = {}
    for method, keys in searched.items():
        rows = tune[tune["method"] == method].drop_duplicates("run-name")
        settings = list(dict.fromkeys(c for s in specs for c in s.get("settings", []) if c != "method" and c in rows))
        configs = rows.drop_duplicates([*settings, *keys])
        counts[method] = int(configs.groupby(settings, dropna=False).size().max()) if settings else len(configs)
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "results.csv", index=False)
    (out / SPEC).write_text(json.dumps(merged_spec(specs, counts), indent=2))
    return frame


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studies.pool", description="Pool tuned sweeps into one "
                                     "search for `simulations.report --select`.")
    parser.add_argument("out", type=Path, help="a new folder for the pooled results.csv and tune.json")
    parser.add_argument("sweeps", type=Path, nargs="+", help="tuned sweeps' out-dirs (or folders holding "
                        "results.csv.gz and tune.json)")
    args = parser.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"{args.out} exists and is not empty: pass a new OUT (a pool is never overwritten)")
    try:
        frame = pool(args.out, args.sweeps)
    except PoolError as err:
        print(f"pool: {err}", file=sys.stderr)
        return 2
    print(f"pooled {frame['run-name'].nunique()} runs from {len(args.sweeps)} sweeps into {args.out}")
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
