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


def stopped_then_resumed(tmp_path, monkeypatch, tracker: str):
    """A run stopped after round 3's row was written but before its checkpoint (so round
    3 is tracked and must run again), then resumed: the tracker's run continues."""
    from strategies.base import BaseStrategy

    save = BaseStrategy.save_checkpoint

    def stop_before_checkpoint_3(self, server_round, arrays):
        if server_round == 3:
            raise KeyboardInterrupt("stopped by signal 15")
        return save(self, server_round, arrays)

    keys = {"num-server-rounds": 3, "tracker": tracker}
    monkeypatch.setattr(BaseStrategy, "save_checkpoint", stop_before_checkpoint_3)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, **keys)
    monkeypatch.setattr(BaseStrategy, "save_checkpoint", save)
    return run(tmp_path, **keys, resume=True)


def test_resumed_run_continues_its_tensorboard_run(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, rows = stopped_then_resumed(tmp_path, monkeypatch, "tensorboard")
    assert list(rows.index) == [0, 1, 2, 3]
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    acc = events.Scalars("accuracy")
    assert [e.step for e in acc] == [0, 1, 2, 3]  # replayed rounds not again; the stopped run's round 3 purged
    assert [e.value for e in acc] == pytest.approx(list(rows["accuracy"]), rel=1e-6)
    assert len(events.Tags()["tensors"]) + len(events.Tags().get("text", [])) <= 1  # the config once


def test_resumed_run_continues_its_mlflow_run(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    run_dir, rows = stopped_then_resumed(tmp_path, monkeypatch, "mlflow")
    client = MlflowClient(f"sqlite:///{run_dir.parent / 'mlflow.db'}")
    (found,) = client.search_runs([client.get_experiment_by_name("out").experiment_id])  # one run, not two
    assert found.info.status == "FINISHED"
    history = client.get_metric_history(found.info.run_id, "accuracy")
    # rounds 0-2 once (not replayed); round 3 as stopped and as resumed (MLflow keeps both), the resumed one last
    assert sorted(m.step for m in history) == [0, 1, 2, 3, 3]
    last = max((m for m in history if m.step == 3), key=lambda m: m.timestamp)
    assert last.value == pytest.approx(rows["accuracy"].loc[3])
    assert found.data.metrics["accuracy"] == pytest.approx(rows["accuracy"].loc[3])
    clients = pd.read_csv(run_dir / "clients.csv")
    assert sorted(set(clients["round"])) == [1, 2, 3]  # the rounds before the stop kept, round 3 once
    assert len(clients[clients["round"] == 3]) == len(clients[clients["round"] == 1])
