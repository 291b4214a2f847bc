"""Results writer: config.json, metrics.csv rows with every config key, sweep collection."""

import json

import pandas as pd

from simulations.config import resolve
from simulations.results import RunWriter, collect, summary


def test_run_writer_keeps_config_and_rows(tmp_path):
    cfg = resolve({"run-name": "r1"})
    w = RunWriter(tmp_path / "r1", cfg)
    w.add_row({"round": 0, "accuracy": 0.1})
    w.add_row({"round": 1, "accuracy": 0.5, "uplink-bytes": 100})
    w.finish()
    assert json.loads((tmp_path / "r1" / "config.json").read_text()) == cfg
    frame = pd.read_csv(tmp_path / "r1" / "metrics.csv")
    assert list(frame["round"]) == [0, 1] and list(frame["accuracy"]) == [0.1, 0.5]
    assert set(cfg) <= set(frame.columns)
    assert (tmp_path / "r1" / "metrics.png").stat().st_size > 1000


def test_a_run_records_its_out_dir_relative_to_the_working_folder(tmp_path, monkeypatch):
    """A sweep resolves out-dir for its processes; the records name no machine's path where
    the out-dir lies inside the working folder, and keep one outside it as given."""
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    for out, shown in ((tmp_path / "cwd" / "runs", "runs"), (tmp_path / "elsewhere", str(tmp_path / "elsewhere"))):
        cfg = resolve({"run-name": "r1", "out-dir": str(out)})
        w = RunWriter(out / "r1", cfg)
        w.add_row({"round": 1, "accuracy": 0.5})
        assert json.loads((out / "r1" / "config.json").read_text())["out-dir"] == shown
        assert list(pd.read_csv(out / "r1" / "metrics.csv")["out-dir"]) == [shown]


def test_collect_concatenates_runs_and_summary_takes_last_round(tmp_path):
    for name, method, acc in (("a", "fedavg", 0.7), ("b", "fedprox", 0.8)):
        w = RunWriter(tmp_path / name, resolve({"run-name": name, "method": method}))
        w.add_row({"round": 1, "accuracy": acc / 2})
        w.add_row({"round": 2, "accuracy": acc})
    frame = collect([tmp_path / "a", tmp_path / "b"], tmp_path)
    assert len(frame) == 4 and (tmp_path / "results.csv").exists()
    assert not (tmp_path / "results.png").exists()  # the report's curves replace it
    last = summary(frame, ["run-name", "method"])
    assert list(last["accuracy"]) == [0.7, 0.8] and list(last["round"]) == [2, 2]
