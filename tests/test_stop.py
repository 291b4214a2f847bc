"""Clean stops: SIGTERM to a sweep ends every process it started (SuperLink, flwr run,
Ray head, raylet, actors) within seconds; a stopped run is marked and ``--resume`` continues it."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml

from simulations.sweep import main

ROOT = Path(__file__).resolve().parent.parent
TINY = {"local-epochs": 1, "partitioner": "draw", "samples-per-client": 30, "num-supernodes": 2}


def marked(mark: str) -> list[psutil.Process]:
    """Live processes whose environment carries ``mark`` (every descendant inherits it,
    also one that left the process tree)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("STOP_TEST_MARK") == mark and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            pass
    return found


@pytest.mark.xdist_group("own-ray")  # a Ray head of its own: one such test at a time (conftest)
def test_sigterm_mid_round_leaves_no_process_of_the_sweep(tmp_path):
    spec, out = tmp_path / "long.yaml", tmp_path / "out"
    spec.write_text(yaml.safe_dump({"base": {**TINY, "num-server-rounds": 500}, "grid": {"seed": [0]}}))
    mark = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own Ray head, as for a user
    env["STOP_TEST_MARK"] = mark
    sweep = subprocess.Popen([sys.executable, "-m", "simulations.sweep", str(spec), "--out-dir", str(out)],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = out / "seed-0" / "metrics.csv"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and sweep.poll() is None:
            if metrics.exists() and pd.read_csv(metrics)["round"].max() >= 1:
                break
            time.sleep(0.5)
        assert sweep.poll() is None, sweep.stdout.read()[-3000:]
        running = marked(mark)
        names = " ".join(" ".join(p.cmdline()) for p in running)
        assert "flower-superlink" in names and "raylet" in names  # what it started is there to stop
        t0 = time.monotonic()
        sweep.send_signal(signal.SIGTERM)
        code = sweep.wait(timeout=60)
        stopped_in = time.monotonic() - t0
        left = marked(mark)
    finally:
        for proc in [sweep, *marked(mark)]:  # whatever a failed check leaves
            try:
                proc.kill()
            except (psutil.Error, ProcessLookupError):
                pass
    log = sweep.stdout.read()
    assert left == [], [p.cmdline() for p in left]
    assert code == 130 and "--resume" in log, log[-2000:]
    assert stopped_in < 30, stopped_in
    status = json.loads((out / "seed-0" / "status.json").read_text())
    assert status["status"] == "stopped"
    assert (out / "seed-0" / "checkpoint.pt").exists()  # resumable


def test_stopped_local_sweep_resumes_and_keeps_completed_runs(tmp_path, monkeypatch, capfd):
    from strategies.base import BaseStrategy

    spec, out = tmp_path / "s.yaml", tmp_path / "out"
    spec.write_text(yaml.safe_dump({"base": {**TINY, "num-server-rounds": 2}, "grid": {"seed": [1, 2]}}))
    end_round = BaseStrategy.end_round

    def stop_in_round_2_of_seed_2(self, server_round, arrays):
        if self.cfg["seed"] == 2 and server_round == 2:
            raise KeyboardInterrupt("stopped by signal 15")
        return end_round(self, server_round, arrays)

    monkeypatch.setattr(BaseStrategy, "end_round", stop_in_round_2_of_seed_2)
    assert main([str(spec), "--local", "--out-dir", str(out)]) == 130
    status = {s: json.loads((out / f"seed-{s}" / "status.json").read_text())["status"] for s in (1, 2)}
    assert status == {1: "finished:completed", 2: "stopped"}
    first = pd.read_csv(out / "seed-1" / "metrics.csv")
    assert list(pd.read_csv(out / "seed-2" / "metrics.csv")["round"]) == [0, 1]
    assert main([str(spec), "--local", "--out-dir", str(out)]) == 2  # the folders hold runs: refused
    assert "already holds a run" in capfd.readouterr().err

    monkeypatch.setattr(BaseStrategy, "end_round", end_round)
    assert main([str(spec), "--local", "--out-dir", str(out), "--resume", "--quiet"]) == 0
    shown = capfd.readouterr()
    assert "1 completed run(s) kept" in shown.out and "seed-2: finished:completed" in shown.err + shown.out
    assert "[round" not in shown.err + shown.out  # --quiet: the rounds are in the run's log only
    assert "[round 2/2]" in (out / "seed-2" / "flwr.log").read_text()
    assert list(pd.read_csv(out / "seed-2" / "metrics.csv")["round"]) == [0, 1, 2]
    pd.testing.assert_frame_equal(pd.read_csv(out / "seed-1" / "metrics.csv"), first)  # untouched
    assert json.loads((out / "seed-2" / "status.json").read_text())["status"] == "finished:completed"
    assert set(pd.read_csv(out / "results.csv")["seed"]) == {1, 2}
