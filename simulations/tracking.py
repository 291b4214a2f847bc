"""Experiment trackers fed by the results writer (``tracker`` key): each round's metrics
go to TensorBoard or MLflow as well as to ``metrics.csv``.

- ``tensorboard``: an event file in ``<run>/tensorboard/`` (``tensorboard --logdir
  <out-dir>`` shows every run of a sweep side by side); the run config as a text entry.
- ``mlflow``: one MLflow run per run (named by ``run-name``, in the experiment named by
  ``out-dir``'s folder), the run config and provenance as parameters, the metrics by
  round (step), status FINISHED at the end. ``mlflow-uri`` names the store; the default
  is the local database ``<out-dir>/mlflow.db`` (``mlflow ui --backend-store-uri
  sqlite:///<out-dir>/mlflow.db`` browses it); no server is needed.

A resumed run (``resume=true``) continues its tracker run instead of logging its earlier
rounds again: TensorBoard writes on with ``purge_step`` at the first new round (readers drop
what the stopped run logged from that round on), MLflow reopens the run whose id is kept in
``<run>/mlflow-run.json``. MLflow cannot delete a metric value: a round the stopped run had
logged after its last checkpoint holds two values at that step, the resumed one later.

Both are optional extras (``pip install -e '.[tracking]'``); ``check`` says so at start.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

MODULES = {"tensorboard": "tensorboard", "mlflow": "mlflow"}


def check(tracker: str) -> str | None:
    """Why ``tracker`` cannot be used here (its package is missing), or None."""
    module = MODULES.get(tracker)
    if module and importlib.util.find_spec(module) is None:
        return (f"tracker={tracker} needs the {module} package: pip install '.[tracking]' "
                "(or pass tracker=none)")
    return None


def numeric(row: dict, skip: set) -> dict[str, float]:
    """The finite numbers of a row, without ``skip`` (config and provenance columns)."""
    return {k: float(v) for k, v in row.items() if k not in skip and k != "round"
            and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class TensorBoardTracker:
    """``resume_at``: the first round of a resumed run; the run's event files continue from it."""

    def __init__(self, run_dir: Path, config: dict, resume_at: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        folder = run_dir / "tensorboard"
        self.continued = resume_at is not None and folder.is_dir() and any(folder.iterdir())
        self.writer = SummaryWriter(log_dir=str(folder), purge_step=resume_at if self.continued else None)
        if not self.continued:
            self.writer.add_text("config", "```\n" + json.dumps(config, indent=1, sort_keys=True, default=str) + "\n```")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self, status: str) -> None:
        self.writer.close()


class MLflowTracker:
    """``resume_at`` set: reopen the MLflow run named in ``<run>/mlflow-run.json`` if the
    store still holds it (its parameters stay as first logged)."""

    STATE = "mlflow-run.json"

    def __init__(self, run_dir: Path, config: dict, resume_at: int | None = None):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        out = run_dir.parent
        uri = config.get("mlflow-uri") or f"sqlite:///{out / 'mlflow.db'}"
        self.client = MlflowClient(uri)
        self.run_id = self.previous_run(run_dir / self.STATE, uri) if resume_at is not None else None
        self.continued = self.run_id is not None
        if self.continued:
            self.client.update_run(self.run_id, status="RUNNING")
            return
        name = out.name or "runs"
        found = self.client.get_experiment_by_name(name)
        experiment = found.experiment_id if found else self.client.create_experiment(name)
        self.run_id = self.client.create_run(experiment, run_name=run_dir.name).info.run_id
        (run_dir / self.STATE).write_text(json.dumps({"tracking-uri": uri, "run-id": self.run_id}))
        params = [Param(k, str(v)[:6000]) for k, v in sorted(config.items())]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters per batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def previous_run(self, state: Path, uri: str) -> str | None:
        """The run id kept in ``state`` if it names a run of this store, else None."""
        from mlflow.exceptions import MlflowException

        try:
            kept = json.loads(state.read_text())
            run_id = str(kept["run-id"]) if kept.get("tracking-uri") == uri else None
            return run_id if run_id and self.client.get_run(run_id) else None
        except (OSError, ValueError, KeyError, TypeError, MlflowException):
            return None

    def log(self, step: int, metrics: dict[str, float]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in metrics.items()]
        for i in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[i:i + 1000])

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status)


TRACKERS = {"tensorboard": TensorBoardTracker, "mlflow": MLflowTracker}


def make(tracker: str, run_dir: Path, config: dict, resume_at: int | None = None):
    """The tracker named by the ``tracker`` key, or None for ``none``. With ``resume_at``
    (a resumed run's first new round) it continues the run's tracker run where there is
    one (``tracker.continued``)."""
    return TRACKERS[tracker](run_dir, config, resume_at) if tracker in TRACKERS else None
