"""Experiment trackers fed by the results writer (``tracker`` key): each round's metrics
go to TensorBoard or MLflow as well as to ``metrics.csv``.

- ``tensorboard``: an event file in ``<run>/tensorboard/`` (``tensorboard --logdir
  <out-dir>`` shows every run of a sweep side by side); the run config as a text entry.
- ``mlflow``: one MLflow run per run (named by ``run-name``, in the experiment named by
  ``out-dir``'s folder), the run config and provenance as parameters, the metrics by
  round (step), status FINISHED at the end. ``mlflow-uri`` names the store; the default
  is the local database ``<out-dir>/mlflow.db`` (``mlflow ui --backend-store-uri
  sqlite:///<out-dir>/mlflow.db`` browses it); no server is needed.

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
    def __init__(self, run_dir: Path, config: dict):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=1, sort_keys=True, default=str) + "\n```")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self, status: str) -> None:
        self.writer.close()


class MLflowTracker:
    def __init__(self, run_dir: Path, config: dict):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        out = run_dir.parent
        self.client = MlflowClient(config.get("mlflow-uri") or f"sqlite:///{out / 'mlflow.db'}")
        name = out.name or "runs"
        found = self.client.get_experiment_by_name(name)
        experiment = found.experiment_id if found else self.client.create_experiment(name)
        self.run_id = self.client.create_run(experiment, run_name=run_dir.name).info.run_id
        params = [Param(k, str(v)[:6000]) for k, v in sorted(config.items())]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters per batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])

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


def make(tracker: str, run_dir: Path, config: dict):
    """The tracker named by the ``tracker`` key, or None for ``none``."""
    return TRACKERS[tracker](run_dir, config) if tracker in TRACKERS else None
