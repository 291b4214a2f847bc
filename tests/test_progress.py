"""Progress lines of long server phases: at most one per interval, and one at the end."""

import common.progress as progress


class Recorded(progress.LogProgress):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lines = []

    def emit(self, line):
        self.lines.append(line)


def test_logs_every_interval_and_at_the_end(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    p = Recorded("gan prior", 100, "step", every=10.0)
    for _ in range(100):  # one step per second
        clock[0] += 1.0
        p.tick()
    assert len(p.lines) == 10  # at 10, 20, ..., 90 s, then the end at 100 s
    assert p.lines[0].startswith("gan prior: 10/100 (10%) [00:10<01:30")
    assert p.lines[-1].startswith("gan prior: 100/100 (100%)")
    p.tick()  # past the total: no second end line
    assert len(p.lines) == 10


def test_heartbeat_names_a_silent_server_phase_in_the_runs_own_log(tmp_path, monkeypatch):
    """A server phase with no lines of its own (here a slow server evaluation) gets a
    progress line every ``progress-every`` seconds in the run's flwr.log, which the
    ServerApp writes itself; the server works with ``server-threads`` torch threads, the
    in-process clients with theirs."""
    import json
    import re
    import time
    from datetime import datetime

    import torch

    import simulations.client_app as client_app
    from simulations.config import resolve
    from simulations.local import run_local
    from strategies.base import BaseStrategy

    evaluate, client, threads = BaseStrategy.evaluate_global, client_app.app, {}

    def slow_evaluation(self, server_round, arrays):
        if server_round == 1:
            threads["server"] = torch.get_num_threads()
            time.sleep(1.6)
        return evaluate(self, server_round, arrays)

    def counted_client(msg, context):
        threads["client"] = torch.get_num_threads()
        return client(msg, context)

    monkeypatch.setattr(BaseStrategy, "evaluate_global", slow_evaluation)
    monkeypatch.setattr(client_app, "app", counted_client)
    cfg = resolve({"num-server-rounds": 1, "local-epochs": 1, "partitioner": "draw", "samples-per-client": 20,
                   "progress-every": 0.4, "server-threads": 2, "out-dir": str(tmp_path), "run-name": "r"})
    run_dir = run_local(cfg, 2, client_threads=1)
    lines = (run_dir / "flwr.log").read_text().splitlines()
    beats = [line for line in lines if "[progress] round 1: server evaluation: " in line]
    assert len(beats) >= 2, lines
    stamps = [datetime.strptime(re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}", b)[0], "%Y-%m-%d %H:%M:%S,%f") for b in beats]
    assert all((b - a).total_seconds() < 1.2 for a, b in zip(stamps, stamps[1:]))  # about every 0.4 s
    assert any("[round 1/1]" in line for line in lines) and any("results written" in line for line in lines)
    assert threads == {"server": 2, "client": 1}
    assert json.loads((run_dir / "config.json").read_text())["server-torch-threads"] == 2


def test_relative_out_dir_is_taken_from_the_working_folder(tmp_path, monkeypatch):
    """The default out-dir, ``outputs``, lands in the working folder; a ServerApp whose
    working folder is not this app's says so in one line."""
    from simulations.config import resolve
    from simulations.local import run_local

    monkeypatch.chdir(tmp_path)
    cfg = resolve({"num-server-rounds": 1, "local-epochs": 0, "partitioner": "draw", "samples-per-client": 20,
                   "run-name": "r"})
    assert cfg["out-dir"] == "outputs"
    run_dir = run_local(cfg, 2)
    assert run_dir == tmp_path / "outputs" / "r" and (run_dir / "metrics.csv").exists()
    log = (run_dir / "flwr.log").read_text()
    assert f"is relative to the ServerApp's working folder {tmp_path}" in log


def test_a_runs_lines_reach_its_log_and_terminal_as_they_come(tmp_path, capsys):
    """``flwr run --stream`` prints with print(): through a pipe a quiet phase's lines would
    wait in an 8 KB buffer until the run ends. A launcher streams them as they come."""
    import sys

    from simulations.superlink import Federation

    child = "import time; print('[progress] phase: 1/2'); print('client noise'); time.sleep(4); print('done')"
    seen = []
    with Federation() as fed:
        fed.stream([sys.executable, "-c", child], tmp_path / "flwr.log",
                   lambda t, line: seen.append((t, line, (tmp_path / "flwr.log").read_text())))
    t, line, logged = seen[0]
    assert line == "[progress] phase: 1/2" and t < 3  # before the command ends (at about 4 s)
    assert line in logged  # already in the run's log
    shown = capsys.readouterr().out
    assert "[progress] phase: 1/2" in shown and "client noise" not in shown and "done" not in shown
    assert [s[1] for s in seen] == ["[progress] phase: 1/2", "client noise", "done"]
