"""The one results writer.

A run writes ``<out-dir>/<run-name>/``: ``config.json`` (the resolved run config, with
``out-dir`` relative to the working folder where it lies inside it, and its provenance,
``simulations/provenance.py``), ``metrics.csv`` (one row per round: every
run-config key, the provenance, ``round``, the metrics; rewritten after each round so a
killed run keeps what it had), ``clients.csv`` (one row per client and round: partition
id, examples, train loss, local accuracy where evaluated) and ``metrics.png``.
A sweep concatenates its runs' ``metrics.csv`` into ``<out-dir>/results.csv``;
``simulations/report.py`` adds the intervals, paired differences and plots.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from common.outputs import recorded
from simulations import tracking

PLOTTED = ("accuracy", "personalized-accuracy", "loss", "round-seconds")


class RunWriter:
    """Collects one run's rows and keeps its folder up to date."""

    def __init__(self, run_dir: Path, config: dict, provenance: dict | None = None):
        self.dir = Path(run_dir)
        self.config = {**config, **(provenance or {})}
        if "out-dir" in self.config:
            self.config["out-dir"] = recorded(self.config["out-dir"])
        self.rows: list[dict] = []
        self.clients: list[dict] | None = None  # clients.csv's rows, read back at the first write
        self.tracker = None  # tracker=tensorboard|mlflow (simulations/tracking.py), made with the first new row
        self.held: list[dict] | None = []  # replayed rows, until the tracker is made (then None)

    def add_row(self, metrics: dict, replayed: bool = False) -> None:
        """One round's row; ``replayed``: a row of a resumed run's checkpoint (written
        before the stop), which a tracker that continues its run does not log again."""
        if not self.rows:  # the first row: nothing is written before (a refused resume changes no file)
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / "config.json").write_text(json.dumps(self.config, indent=2, sort_keys=True))
        self.rows.append({**self.config, **metrics})
        if replayed and self.held is not None:
            self.held.append(metrics)
        else:
            self.track(metrics)
        frame = pd.DataFrame(self.rows)
        tmp = self.dir / "metrics.csv.tmp"
        frame.to_csv(tmp, index=False)
        tmp.replace(self.dir / "metrics.csv")  # atomic: never a half-written file

    def track(self, metrics: dict | None) -> None:
        """``metrics`` to the tracker, made at the first new row: a resumed run's tracker
        continues from that round (its replayed rows are logged only to a new tracker run)."""
        if self.held is not None:
            first = int(metrics["round"]) if metrics else len(self.rows)
            resumed = bool(self.config.get("resume")) and bool(self.held)
            self.tracker = tracking.make(self.config.get("tracker", "none"), self.dir, self.config,
                                         first if resumed else None)
            held, self.held = self.held, None
            if self.tracker is not None and not self.tracker.continued:
                for row in held:
                    self.tracker.log(int(row["round"]), tracking.numeric(row, set(self.config)))
        if self.tracker is not None and metrics:
            self.tracker.log(int(metrics["round"]), tracking.numeric(metrics, set(self.config)))

    def add_clients(self, server_round: int, rows: list[dict]) -> None:
        """One round's per-client rows (``round``, ``partition-id``, ...) into clients.csv;
        a resumed run keeps the rows of the rounds before this one."""
        path = self.dir / "clients.csv"
        if self.clients is None:
            old = pd.read_csv(path) if self.config.get("resume") and path.exists() else pd.DataFrame()
            self.clients = old[old["round"] < server_round].to_dict("records") if "round" in old else []
        self.clients += [{"round": server_round, **r} for r in rows]
        if self.clients:
            self.dir.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(self.clients).to_csv(path.with_suffix(".csv.tmp"), index=False)
            path.with_suffix(".csv.tmp").replace(path)

    def finish(self, status: str = "FINISHED") -> None:
        """The run's plot (``FINISHED``); the tracker's run closed with ``status`` (``FAILED``
        for a run that raised, ``KILLED`` for one stopped)."""
        if self.rows and status == "FINISHED":
            plot(pd.DataFrame(self.rows), self.dir / "metrics.png", group="method")
        if self.held:  # a resumed run with no round left to run
            self.track(None)
        if self.tracker is not None:
            self.tracker.close(status)
            self.tracker = None


def plot(frame: pd.DataFrame, path: Path, group: str | list[str] = "method") -> None:
    """One panel per metric present, metric vs round, one line per value of ``group``
    (a column, or several: one line per combination)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    metrics = [m for m in PLOTTED if m in frame and frame[m].notna().any()]
    if not metrics:
        return
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        keys = [group] if isinstance(group, str) else list(group)
        curves = frame.groupby([*keys, "round"], dropna=False)[metric].mean().dropna()
        for name, curve in curves.groupby(level=list(range(len(keys)))):
            name = name if isinstance(name, tuple) else (name,)
            label = " ".join(str(v) if k == "method" else f"{k}={v}" for k, v in zip(keys, name))
            ax.plot(curve.index.get_level_values("round"), curve.values, marker="o", label=label)
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole rounds only
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def collect(run_dirs: list[Path], out_dir: Path) -> pd.DataFrame:
    """Concatenate runs' metrics.csv into results.csv (the report plots them)."""
    frames = [pd.read_csv(d / "metrics.csv") for d in run_dirs if (d / "metrics.csv").exists()]
    if not frames:
        return pd.DataFrame()
    frame = pd.concat(frames, ignore_index=True)
    frame.to_csv(out_dir / "results.csv", index=False)
    return frame


def summary(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Final round of each run: the grid keys and the metrics."""
    if frame.empty:
        return frame
    last = frame.sort_values("round").groupby("run-name", sort=False).tail(1)
    metrics = [c for c in ("round", "accuracy", "personalized-accuracy", "loss", "round-seconds",
                           "uplink-bytes", "failures") if c in last]
    return last[[k for k in dict.fromkeys(keys + metrics) if k in last]].reset_index(drop=True)
