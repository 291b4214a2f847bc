"""Pool the comparison's runs over held-out domains for the report command.

``python -m studies.fedlsi_pool RUNS OUT_DIR [LAMBDA_RUNS]``: RUNS is a folder of runs
(``**/metrics.csv``: FedAvg and FedDG-LSI runs of fedlsi_power*.yaml) or one CSV of their
rows (``power_metrics.csv`` here). Writes four folders under OUT_DIR, each a ``results.csv``
for ``python -m simulations.report``: ``round10-eval``, ``round10-batch`` (both methods cut at
round 10) and ``claim5-eval``, ``claim5-batch`` (FedDG-LSI cut at round 5, FedAvg at round 20).
A run is paired with the other method's run on the same held-out domain and seed: ``seed``
becomes ``10 * heldout-domain + seed`` and ``heldout-domain`` one value, so the report's
per-seed pairing pools the domains. The plain DG metric names take one BatchNorm mode's
columns (``-eval`` or ``-batch``); the model selection stays within that mode.

With LAMBDA_RUNS (fedlsi_lambda.yaml's runs, or ``lambda_metrics.csv``; 5 rounds):
``lambda-eval``, ``lambda-batch``, those runs and the comparison's FedDG-LSI runs on the same
domains and seeds cut at round 5, ``method`` renamed ``fedlsi-lambda-<value>`` so that the
report pairs every value against ``--baseline fedlsi-lambda-10.0``; they keep
``source-accuracy`` (the choice), ``train-loss`` and ``divergence`` only.

``python -m studies.fedlsi_pool --arms RUNS[,RUNS...] OUT_DIR`` (fedlsi_official*.yaml's or fedlsi_tuned*.yaml's runs): folders
``arms-eval`` and ``arms-batch``; ``method`` becomes the arm (``fedavg``,
``fedlsi-l<lambda-di>-<lsi-translator>``), paired as above, and every row gains
``bn-gap`` and ``selected-bn-gap``: that run's held-out accuracy (last round / selected
round) in batch mode minus eval mode, so the report puts FedAvg's gap next to each gain.
Only runs that reached their ``num-server-rounds`` count. ``arms-pairs.csv``: one row per
held-out domain and seed (``pairs``), each arm's ``selected-heldout-accuracy`` per mode, its
gain over FedAvg per mode and FedAvg's own batch-minus-eval gap.
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
    # FedAvg reads none of FedDG-LSI's keys; its seed-0 runs were started before
    # lsi-translator-residual's default changed, which must not split FedAvg into two groups.
    own = [c for c in frame.columns if c.startswith("lsi-") or c in ("lambda-di", "aggregation")]
    frame[own] = frame[own].astype(object)
    frame.loc[frame["method"] == "fedavg", own] = None
    for name in DG:
        if f"{name}-{mode}" in frame:
            frame[name] = frame[f"{name}-{mode}"]
    frame["seed"] = 10 * frame["heldout-domain"].astype(int) + frame["seed"].astype(int)
    frame["heldout-domain"] = -1  # pooled
    frame["num-server-rounds"] = frame["round"].groupby(frame["run-name"]).transform("max")
    return frame


def read(folder: Path) -> pd.DataFrame:
    """Every run's rows: ``folder/results.csv`` or ``folder/**/metrics.csv``, or one CSV of
    them (power_metrics.csv). A tuned sweep (``tune.json``; fedlsi_tuned*.yaml) gives the
    evaluation rows of the configurations chosen on its ``select`` metric (``selected.csv``
    is written beside it, as the report does), also when it was stopped before writing
    ``results.csv`` (its runs' phase then comes from their seed); the searched keys are
    blanked, since each held-out domain chose its own values and pooling must not split an
    arm by them."""
    if folder.is_file():
        return pd.read_csv(folder)
    from simulations import selection, tuning

    table, spec = folder / "results.csv", selection.load_spec(folder)
    frame = pd.read_csv(table) if table.exists() else pd.concat(
        [pd.read_csv(p) for p in sorted(folder.glob("**/metrics.csv"))], ignore_index=True)
    if spec and "phase" not in frame:  # a tuned sweep stopped before writing results.csv
        tuning_seeds = {int(s) for s in spec["seeds"]}  # its runs' phase by seed; no trial numbers
        phase = ["tune" if int(s) in tuning_seeds else "eval" for s in frame["seed"]]
        frame = tuning.with_columns(frame, phase=phase, trial=0, first=True)
    if "phase" in frame and (frame["phase"] == "tune").any():
        frame, _ = selection.apply(folder, frame)
        searched = {k for keys in spec.get("space", {}).values() for k in keys}
        frame[sorted(searched & set(frame.columns))] = None
    return frame


def gathered(folders: list[Path]) -> pd.DataFrame:
    """Every folder's rows (``read``), one frame. Sweeps name a run by their grid keys only,
    so two sweeps of one method with different fixed keys (the ablations' ``lambda-di`` or
    ``lsi-translator``) reuse run names: each run name is then prefixed with its folder's
    name, or the report would take two runs for one."""
    frames = [read(f) for f in folders]
    names = [set(f["run-name"].astype(str)) for f in frames]
    if len(frames) > 1 and sum(map(len, names)) > len(set().union(*names)):
        frames = [f.assign(**{"run-name": folder.name + "/" + f["run-name"].astype(str)})
                  for f, folder in zip(frames, folders)]
    return pd.concat(frames, ignore_index=True)


def lambdas(sweep: pd.DataFrame, power: pd.DataFrame, mode: str) -> pd.DataFrame:
    last = int(sweep["round"].max())
    keys = set(zip(sweep["heldout-domain"], sweep["seed"]))
    ran = pd.Series([k in keys for k in zip(power["heldout-domain"], power["seed"])], index=power.index)
    same = power[(power["method"] == "fedlsi") & ran]
    both = pd.concat([sweep, same], ignore_index=True)
    both["method"] = "fedlsi-lambda-" + both["lambda-di"].astype(float).astype(str)
    frame = pooled(both, mode, {m: last for m in both["method"].unique()})
    # The choice sees source validation only: no held-out column, no accuracy/loss on the
    # six domains' test split (it holds the held-out domain's test part).
    after = list(frame.columns).index("round") + 1
    config = [c for c in frame.columns[:after]]
    return frame[config + ["source-accuracy", "train-loss", "divergence"]]


def arms(runs: pd.DataFrame, mode: str) -> pd.DataFrame:
    """The official-optimizer comparison: one ``method`` per arm, domains pooled."""
    planned = runs.groupby("run-name")["num-server-rounds"].transform("max")
    frame = runs[runs["round"].groupby(runs["run-name"]).transform("max") >= planned].copy()  # whole runs only
    lsi = frame["method"] == "fedlsi"
    if lsi.any():  # (a stopped sweep may have no finished FedDG-LSI run yet)
        frame.loc[lsi, "method"] = ("fedlsi-l" + frame.loc[lsi, "lambda-di"].astype(float).map("{:g}".format)
                                    + "-" + frame.loc[lsi, "lsi-translator"].astype(str))
    frame["bn-gap"] = frame["heldout-accuracy-batch"] - frame["heldout-accuracy-eval"]
    frame["selected-bn-gap"] = frame["selected-heldout-accuracy-batch"] - frame["selected-heldout-accuracy-eval"]
    from simulations.config import defaults

    keys = defaults()  # FedDG-LSI's config keys, not its lsi-* metrics
    own = [c for c in frame.columns if c in keys and (c.startswith("lsi-") or c in ("lambda-di", "aggregation"))]
    frame[own] = None  # the arm names them
    for name in DG:
        if f"{name}-{mode}" in frame:
            frame[name] = frame[f"{name}-{mode}"]
    frame["seed"] = 10 * frame["heldout-domain"].astype(int) + frame["seed"].astype(int)
    frame["heldout-domain"] = -1  # pooled
    # Compare at the same number of federated rounds: FedDG-LSI's round 1 is its pre-training.
    frame["num-server-rounds"] = frame["round"].groupby(frame["run-name"]).transform("max") - lsi.astype(int)
    return frame


def pairs(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per held-out domain and seed: each arm's held-out accuracy at the round chosen
    on source validation, in both BatchNorm modes, its gain over FedAvg per mode, and FedAvg's
    own batch-minus-eval gap (the confound each gain is read against)."""
    last = arms(runs, "eval")
    last = last[last["round"] == last["round"].groupby(last["run-name"]).transform("max")].copy()
    last["domain"], last["seed"] = last["seed"] // 10, last["seed"] % 10
    wide = last.pivot_table(index=["domain", "seed"], columns="method",
                            values=["selected-heldout-accuracy-eval", "selected-heldout-accuracy-batch"])
    out = pd.DataFrame(index=wide.index)
    for arm in wide.columns.get_level_values("method").unique():
        for mode in ("eval", "batch"):
            out[f"{arm}-{mode}"] = wide[(f"selected-heldout-accuracy-{mode}", arm)]
    for arm in [a for a in wide.columns.get_level_values("method").unique() if a != "fedavg"]:
        for mode in ("eval", "batch"):
            out[f"{arm}-gain-{mode}"] = out[f"{arm}-{mode}"] - out[f"fedavg-{mode}"]
    out["fedavg-bn-gap"] = out["fedavg-batch"] - out["fedavg-eval"]
    return out.reset_index()


def main(src: Path, out: Path, lambda_dir: Path | None = None) -> None:
    runs = read(src)
    for name, cut in CUTS.items():
        for mode in ("eval", "batch"):
            folder = out / f"{name}-{mode}"
            folder.mkdir(parents=True, exist_ok=True)
            pooled(runs, mode, cut).to_csv(folder / "results.csv", index=False)
            print(folder)
    if lambda_dir is not None:
        sweep = read(lambda_dir)
        for mode in ("eval", "batch"):
            folder = out / f"lambda-{mode}"
            folder.mkdir(parents=True, exist_ok=True)
            lambdas(sweep, runs, mode).to_csv(folder / "results.csv", index=False)
            print(folder)


if __name__ == "__main__":
    if sys.argv[1] == "--arms":  # RUNS may be several folders, comma-separated (a sweep run in parts)
        runs = gathered([Path(f) for f in sys.argv[2].split(",")])
        for mode in ("eval", "batch"):
            folder = Path(sys.argv[3]) / f"arms-{mode}"
            folder.mkdir(parents=True, exist_ok=True)
            arms(runs, mode).to_csv(folder / "results.csv", index=False)
            print(folder)
        pairs(runs).to_csv(Path(sys.argv[3]) / "arms-pairs.csv", index=False, float_format="%.4f")
        print(Path(sys.argv[3]) / "arms-pairs.csv")
        sys.exit(0)
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]) if len(sys.argv) > 3 else None)
