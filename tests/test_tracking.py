"""tracker=tensorboard / mlflow through real runs, read back with each tool's own reader."""

import pandas as pd
import pytest

from simulations.config import resolve
from simulations.local import run_local

TINY = {"num-server-rounds": 2, "local-epochs": 1, "partitioner": "draw", "samples-per-client": 30, "seed": 2}


def run(tmp_path, **keys):
    cfg = resolve({**TINY, "out-dir": str(tmp_path / "out"), "run-name": "r", **keys})
    run_dir = run_local(cfg, 2)
    return run_dir, pd.read_csv(run_dir / "metrics.csv").set_index("round")


def test_tensorboard_event_file_holds_every_rounds_metrics(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, rows = run(tmp_path, tracker="tensorboard")
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert {"accuracy", "loss", "personalized-accuracy", "round-seconds"} <= set(events.Tags()["scalars"])
    assert "dirichlet-alpha" not in events.Tags()["scalars"]  # config columns are not metrics
    acc = events.Scalars("accuracy")
    assert [e.step for e in acc] == [0, 1, 2]
    assert [e.value for e in acc] == pytest.approx(list(rows["accuracy"]), rel=1e-6)


def test_mlflow_local_store_holds_params_metrics_and_status(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    run_dir, rows = run(tmp_path, tracker="mlflow")
    client = MlflowClient(f"sqlite:///{run_dir.parent / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("out")
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.run_name == "r" and found.info.status == "FINISHED"
    assert found.data.params["method"] == "fedavg" and found.data.params["num-supernodes"] == "2"
    assert found.data.params["flwr-version"] == rows["flwr-version"].iloc[0]
    history = sorted(client.get_metric_history(found.info.run_id, "accuracy"), key=lambda m: m.step)
    assert [m.step for m in history] == [0, 1, 2]
    assert [m.value for m in history] == pytest.approx(list(rows["accuracy"]))


def test_missing_tracker_package_is_one_line_at_start(monkeypatch):
    import importlib.util

    from common.keys import ConfigError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError, match=r"tracker=mlflow needs the mlflow package: pip install '\.\[tracking\]'"):
        resolve({"tracker": "mlflow"})
