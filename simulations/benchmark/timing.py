"""Shared measurement for the benchmarks: load average, process-tree CPU and memory, timed
Flower runs and the plain PyTorch loop they are compared with.
"""

from __future__ import annotations

import contextlib
import os
import statistics as stats
import threading
import time
from pathlib import Path

from common.threads import torch_threads
from simulations.superlink import LINK_LOG


def load() -> str:
    """The 1-minute load average, to print next to a timing."""
    return f"load {os.getloadavg()[0]:.2f}"


def say(text: str) -> None:
    print(text, flush=True)


# ---- process-tree memory -------------------------------------------------------------
class TreeRSS(threading.Thread):
    """Samples the summed RSS of ``pid`` and all its descendants; ``peak`` in bytes.

    Shared pages (the torch libraries mapped by every worker) count once per process,
    as in ``ps``/``top``; the figure is the memory the tree would need without sharing.
    """

    def __init__(self, pids: list[int], interval: float = 0.1):
        super().__init__(daemon=True)
        self.pids, self.interval = pids, interval
        self.peak, self.peak_procs, self.samples = 0, 0, 0
        self._halt = threading.Event()

    def sample(self) -> int:
        import psutil

        from simulations.superlink import process_tree

        procs = [p for pid in self.pids for p in process_tree(pid)]
        total = 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        if total > self.peak:
            self.peak, self.peak_procs = total, len(procs)
        self.samples += 1
        return total

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.sample()

    def stop(self) -> int:
        self._halt.set()
        self.join()
        return self.peak


def tree_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by ``pids`` and their live descendants."""
    import psutil

    from simulations.superlink import process_tree

    total = 0.0
    for p in (p for pid in pids for p in process_tree(pid)):
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


# ---- one Flower run --------------------------------------------------------------------
def timed_run(link, cfg: dict, log_path: Path, fed: dict, on_round=None) -> tuple[dict, list[tuple[float, str]]]:
    """``link.run`` (one ``flwr run --stream``) keeping every log line with the seconds since
    the command started: the run's record and the stamped lines. ``on_round(n)`` is called
    as the line of round n arrives."""
    import re

    lines: list[tuple[float, str]] = []

    def on_line(t: float, line: str) -> None:
        lines.append((t, line))
        if on_round and (found := re.search(r"\[round (\d+)/", line)):
            on_round(int(found[1]))

    return link.run(cfg, log_path, fed, on_line=on_line), lines


def first(lines: list[tuple[float, str]], pattern: str) -> float | None:
    import re

    return next((t for t, line in lines if re.search(pattern, line)), None)


def roots(link) -> list[int]:
    """PIDs whose process trees hold all of a run's processes: the SuperLink's (SuperExec,
    simulation, and a private Ray) and, where the runs share one, the Ray head's."""
    return [link.procs[0].pid] + ([link.ray.procs[0].pid] if link.ray else [])


# The SuperLink's words when a run's task stopped sending heartbeats (its process hung or
# died): Flower's own simulation-runtime test fails this way now and then (flwrlabs/flower#7268).
LEASE_LOST = "No heartbeat received from the task"


def run_again(name: str, record: dict, run_dir: Path) -> bool:
    """Whether a run whose record says its task lost its lease is to be made once more
    (said on the terminal); the caller runs it under ``<name>-again``, and never again."""
    status, details = record.get("status", "unknown"), record.get("status-details", "")
    if LEASE_LOST not in details:
        return False
    say(f"  run {name}: {status} ({details}); its logs are in {run_dir}; running it once more")
    return True


def flower_run(link, overrides: dict, fed: dict, out: Path, name: str, track_rss: bool = False,
               again: bool = True) -> dict:
    """One ``flwr run`` on ``link``; the run's metrics.csv rows, wall time and peak RSS.

    A run whose task the SuperLink declared dead (``LEASE_LOST``) is run once more under
    ``<name>-again``, said on the terminal, its first folder kept with the SuperLink's log;
    any other failure, or a second lost lease, raises with both logs' last lines.
    """
    import pandas as pd

    from simulations.config import resolve

    cfg = resolve({**overrides, "out-dir": str(out), "run-name": name})
    run_dir = out / name
    run_dir.mkdir(parents=True, exist_ok=True)
    sampler = TreeRSS(roots(link)) if track_rss else None
    if sampler:
        sampler.start()
    cpu: dict[int, float] = {}  # round -> CPU seconds of the run's processes when its line arrived
    t0 = time.perf_counter()
    record, lines = timed_run(link, cfg, run_dir / "flwr.log", {"client-resources-num-cpus": 1, "client-resources-num-gpus": 0.0,
                                                  **fed},
                              on_round=lambda n: cpu.__setitem__(n, tree_cpu(roots(link))))
    wall = time.perf_counter() - t0
    peak = sampler.stop() if sampler else None
    status, details = record.get("status", "unknown"), record.get("status-details", "")
    if status != "finished:completed":
        if again and run_again(name, record, run_dir):
            return flower_run(link, overrides, fed, out, f"{name}-again", track_rss, again=False)
        tails = "".join(f"\n--- last lines of {log} ---\n" + "\n".join(log.read_text(errors="replace").splitlines()[-25:])
                        for log in (run_dir / "flwr.log", run_dir / LINK_LOG) if log.exists())
        raise RuntimeError(f"run {name} failed: {status} {details} (log: {run_dir / 'flwr.log'}){tails}")
    frame = pd.read_csv(run_dir / "metrics.csv")
    return {"wall": wall, "rows": frame, "peak_rss": peak, "lines": lines, "cpu": cpu, "peak_procs": sampler.peak_procs if sampler else None}


def steady(seconds: list[float]) -> float:
    """Per-round seconds after the first round (median; the first round if it is the only one)."""
    return stats.median(seconds[1:]) if len(seconds) > 1 else seconds[0]


def best(seconds: list[float]) -> float:
    """The fastest round after the first: the one least disturbed by other load."""
    return min(seconds[1:]) if len(seconds) > 1 else seconds[0]


# ---- overhead --------------------------------------------------------------------------
@contextlib.contextmanager
def cold_one_thread():
    """One torch thread, as each Flower worker (OMP_NUM_THREADS=1), and the data and
    partition caches cleared, as in a fresh process."""
    import datasets.registry
    from simulations import client_app

    client_app.client_data.cache_clear()
    client_app.partitions.cache_clear()
    datasets.registry._load.cache_clear()
    with torch_threads(1):
        yield


def plain_loop(overrides: dict, num_clients: int, rounds: int) -> dict:
    """The Flower run's work without Flower: same clients, partitions, aggregation, evaluation."""
    import torch
    from flwr.app import ArrayRecord, MetricRecord, RecordDict
    from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

    import datasets
    from clients.base import evaluate
    from simulations import client_app
    from simulations.config import resolve, seed_everything
    from simulations.methods import METHODS

    with cold_one_thread():
        t0 = time.perf_counter()
        cfg = resolve(overrides)
        seed_everything(int(cfg["seed"]))
        bundle = datasets.load_for(cfg)
        method = METHODS[cfg["method"]]
        strategy = method.strategy(cfg, test_data=bundle)
        arrays = strategy.initial_arrays()
        key = tuple(cfg[k] for k in client_app.PARTITION_KEYS)
        clients = [method.client(cfg, client_app.client_data(key, pid, num_clients)) for pid in range(num_clients)]
        startup = time.perf_counter() - t0
        seconds, accs, cpu = [], [], []
        for rnd in range(1, rounds + 1):
            t1, c1 = time.perf_counter(), time.process_time()
            weights = arrays.to_torch_state_dict()
            replies = []
            for client in clients:
                reply = client.train({"arrays": weights}, {"server-round": rnd}, {})
                replies.append(RecordDict({"arrays": ArrayRecord(reply.arrays["arrays"]),
                                           "metrics": MetricRecord(reply.metrics)}))
            arrays = aggregate_arrayrecords(replies, "num-examples")
            weights = arrays.to_torch_state_dict()
            for client in clients:
                client.evaluate({"arrays": weights}, {"server-round": rnd}, {})
            model = strategy.eval_model(arrays)
            accs.append(evaluate(model, bundle.test, 512, torch.device("cpu"))["accuracy"])
            seconds.append(time.perf_counter() - t1)
            cpu.append(time.process_time() - c1)
    return {"startup": startup, "round_seconds": seconds, "cpu_seconds": cpu, "accuracy": accs, "threads": 1}


def fmt_list(values, digits: int = 2) -> str:
    return "[" + ", ".join(f"{v:.{digits}f}" for v in values) + "]"


def ratio(a, b) -> float | None:
    return a / b if a is not None and b else None


def fmt(value, spec: str = ".1f", unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"
