"""Benchmarks: ``python -m simulations.benchmark NAME [--quick] [--out-dir DIR]``.

``overhead`` (Flower's simulation against a plain PyTorch loop doing the same client
work), ``scale`` (1,000 / 10,000 / 100,000 virtual clients, 100 sampled per round, in
process and through Flower's engine: start-up, per-round time and memory, and the
engine's own per-node costs), ``gpu-fractions`` (Ray with per-client GPU fractions
against in-process runs; needs a GPU, ``--dry-run-cpu`` checks it on the CPU),
``fedhip-cost`` (FedHiP's CPU seconds and bytes against FedAvg fine-tuning the same
backbone) and ``gifd-cost`` (seconds per reconstructed image). Each prints its figures
with the load average next to every timing, writes ``<out-dir>/<name>.json`` and ends
with one ``summary:`` line; ``--quick`` is the smallest size, for the tests.
docs/benchmarks.md says what the figures mean.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics as stats
import sys
import threading
import time
from pathlib import Path

BENCHMARKS = ("overhead", "scale", "gpu-fractions", "fedhip-cost", "gifd-cost")


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


def flower_run(link, overrides: dict, fed: dict, out: Path, name: str, track_rss: bool = False) -> dict:
    """One ``flwr run`` on ``link``; the run's metrics.csv rows, wall time and peak RSS."""
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
    status = record.get("status", "unknown")
    if status != "finished:completed":
        raise RuntimeError(f"run {name} failed: {status} {record.get('status-details', '')} "
                           f"(log: {run_dir / 'flwr.log'})")
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
    import torch

    import datasets.registry
    from simulations import client_app

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    client_app.client_data.cache_clear()
    client_app.partitions.cache_clear()
    datasets.registry._load.cache_clear()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


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


def local_run(overrides: dict, num_clients: int, out: Path) -> dict:
    """The Flower run's work through Flower's Message API and the same ServerApp and
    ClientApp, in this process on a ``LocalGrid`` (no Ray, no SuperLink): what Flower's
    strategy and message layer cost without the simulation engine."""
    import pandas as pd

    from simulations.config import resolve
    from simulations.local import run_local

    with cold_one_thread():
        run_dir = run_local(resolve({**overrides, "out-dir": str(out), "run-name": "local"}), num_clients)
    rows = pd.read_csv(run_dir / "metrics.csv")
    return {"round_seconds": rows.loc[rows["round"] >= 1, "round-seconds"].tolist(),
            "accuracy": rows.loc[rows["round"] >= 1, "accuracy"].tolist()}


def bench_overhead(args) -> dict:
    from simulations.superlink import simulation_superlink

    clients, rounds = (3, 2) if args.quick else (args.clients or 10, args.rounds or 5)
    overrides = {"method": "fedavg", "dataset": "mnist", "local-epochs": 1, "num-server-rounds": rounds,
                 "seed": 0, "checkpoint-every": 0}
    out = args.out_dir / "overhead"
    say(f"overhead: FedAvg on MNIST, {clients} clients x 1 local epoch, {rounds} rounds ({load()})")
    # Equal compute on both sides: one client at a time on one thread. Flower gets one Ray
    # worker (a client asks for all CPUs) and OMP_NUM_THREADS=1; the plain loop one thread.
    cpus = os.cpu_count() or 1
    old = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        t0 = time.perf_counter()
        with simulation_superlink(share_ray=not args.ray_per_run) as link:
            t_link = time.perf_counter() - t0
            what = "Ray instance (shared by the runs) and SuperLink" if link.ray else "SuperLink (Ray starts in the run)"
            say(f"  {what} up in {t_link:.1f} s, once per sweep ({load()})")
            run = flower_run(link, overrides, {"num-supernodes": clients, "client-resources-num-cpus": cpus},
                             out, "flower")
    finally:
        if old is None:
            os.environ.pop("OMP_NUM_THREADS")
        else:
            os.environ["OMP_NUM_THREADS"] = old
    tl = run["lines"]
    marks = [("run submitted", r"started run"), ("simulation started", r"Starting Flower Simulation"),
             ("app installed", r"Successfully installed"), ("ServerApp ready", r"results in"),
             ("round 0 done", r"\[round 0/"), ("round 1 done", r"\[round 1/"),
             (f"round {rounds} done", rf"\[round {rounds}/"), ("results written", r"results written")]
    say("  flower timeline (s since flwr run): " + ", ".join(
        f"{label} {first(tl, pat):.1f}" for label, pat in marks if first(tl, pat) is not None)
        + f", run finished {run['wall']:.1f}")
    from flwr.cli.utils import collect_files

    from simulations.superlink import APP_DIR

    t0 = time.perf_counter()
    walked = len(collect_files(APP_DIR))
    t_walk = time.perf_counter() - t0
    say(f"  not paid here: `flwr run .` from the checkout walks {walked} files in {t_walk:.1f} s before applying "
        f".gitignore (the .venv inside it too); sweeps and benchmarks run a staged copy of the app ({load()})")
    rows = run["rows"]
    fl_rounds = rows.loc[rows["round"] >= 1, "round-seconds"].tolist()
    fl_round, fl_best = steady(fl_rounds), best(fl_rounds)
    t_round1 = first(tl, r"\[round 1/")
    t_last = first(tl, rf"\[round {rounds}/")
    fl_startup = t_round1 - fl_round  # flwr run -> steady rounds (the first round's extra included)
    teardown = run["wall"] - t_last
    say(f"  flower: start-up {fl_startup:.1f} s (flwr run -> end of round 1, less one steady round), "
        f"round seconds {fmt_list(fl_rounds)}, after the last round {teardown:.1f} s until flwr run returns "
        f"({load()})")
    plain = plain_loop(overrides, clients, rounds)
    pl_round, pl_best = steady(plain["round_seconds"]), best(plain["round_seconds"])
    # PyTorch's one-time cost in a fresh process (the first optimizer imports torch._dynamo,
    # about 2 s): the plain loop's round 1 pays it too, so it is not the simulation's.
    warmup = plain["round_seconds"][0] - pl_round
    say(f"  plain:  start-up {plain['startup']:.2f} s (data, partitions, models; imports done), round seconds "
        f"{fmt_list(plain['round_seconds'])}, {plain['threads']} torch thread ({load()})")
    say(f"  of flower's start-up, {warmup:.1f} s is PyTorch's first-round warm-up, which the plain loop's round 1 "
        f"pays too: start-up less it {fl_startup - warmup:.1f} s")
    local = local_run(overrides, clients, out)
    lo_round, lo_best = steady(local["round_seconds"]), best(local["round_seconds"])
    say(f"  local:  Flower's Message API in this process (LocalGrid, no Ray), round seconds "
        f"{fmt_list(local['round_seconds'])}: best {lo_best:.2f} s / median {lo_round:.2f} s, ratio to plain "
        f"{lo_best / pl_best:.2f} (best) / {lo_round / pl_round:.2f} (median) ({load()})")
    fl_acc = rows.loc[rows["round"] >= 1, "accuracy"].tolist()
    same = ([round(a, 6) for a in fl_acc] == [round(a, 6) for a in plain["accuracy"]]
            == [round(a, 6) for a in local["accuracy"]])
    say(f"  accuracy per round: flower {fmt_list(fl_acc, 4)}, plain {fmt_list(plain['accuracy'], 4)}, local "
        f"{fmt_list(local['accuracy'], 4)} ({'identical' if same else 'DIFFERENT'})")
    ratio, ratio_median = fl_best / pl_best, fl_round / pl_round
    say(f"  per round after round 1: flower best {fl_best:.2f} s / median {fl_round:.2f} s, plain best "
        f"{pl_best:.2f} s / median {pl_round:.2f} s: ratio {ratio:.2f} (best) / {ratio_median:.2f} (median)")
    # CPU seconds per round (rounds 2..R) hardly depend on the other load on the machine.
    c = run["cpu"]
    fl_cpu = (c[rounds] - c[1]) / (rounds - 1) if rounds > 1 and 1 in c and rounds in c else float("nan")
    pl_cpu = stats.mean(plain["cpu_seconds"][1:]) if rounds > 1 else plain["cpu_seconds"][0]
    cpu_ratio = fl_cpu / pl_cpu
    say(f"  CPU seconds per round after round 1 (all processes of the run): flower {fl_cpu:.2f}, plain {pl_cpu:.2f}: "
        f"ratio {cpu_ratio:.2f}")
    res = {"clients": clients, "rounds": rounds, "flower-startup-s": fl_startup, "superlink-start-s": t_link,
           "shared-ray": bool(link.ray), "torch-warmup-s": warmup,
           "flower-round-s": fl_best, "flower-round-median-s": fl_round, "flower-first-round-s": fl_rounds[0],
           "flower-round-seconds": fl_rounds, "flower-teardown-s": teardown, "flower-run-wall-s": run["wall"],
           "flower-timeline": {label: first(tl, pat) for label, pat in marks},
           "app-folder-walk-s": t_walk, "app-folder-files": walked,
           "plain-startup-s": plain["startup"], "plain-round-s": pl_best, "plain-round-median-s": pl_round,
           "plain-round-seconds": plain["round_seconds"], "ratio": ratio, "ratio-median": ratio_median,
           "local-round-s": lo_best, "local-round-median-s": lo_round, "local-round-seconds": local["round_seconds"],
           "local-ratio": lo_best / pl_best,
           "flower-cpu-per-round-s": fl_cpu, "plain-cpu-per-round-s": pl_cpu, "cpu-ratio": cpu_ratio,
           "same-accuracy": same, "load": os.getloadavg()[0]}
    say(f"summary: overhead start-up {fl_startup:.1f} s (goal <= 10; {fl_startup - warmup:.1f} s less PyTorch's warm-up; "
        f"{'Ray and ' if link.ray else ''}SuperLink {t_link:.1f} s more, once), "
        f"per-round flower {fl_best:.2f} s vs plain {pl_best:.2f} s, ratio {ratio:.2f} (goal <= 1.10; median "
        f"{ratio_median:.2f}; CPU seconds {cpu_ratio:.2f}; in-process Flower without Ray {lo_best / pl_best:.2f}), "
        f"same accuracy {same} ({load()})")
    return res


def fmt_list(values, digits: int = 2) -> str:
    return "[" + ", ".join(f"{v:.{digits}f}" for v in values) + "]"


# ---- scale -----------------------------------------------------------------------------
SCALE_LOCAL = """
from simulations.config import resolve
from simulations.local import run_local
cfg = resolve({overrides!r})
run_local(cfg, {n})
"""


def scale_overrides(n: int, sampled: int, rounds: int) -> dict:
    """Tiny client work, so that the engine is what is measured: FedAvg, 10 samples per
    client drawn from MNIST's pool (``partitioner=draw``), one local epoch of one batch."""
    fraction = sampled / n
    assert int(n * fraction) == sampled, (n, sampled)
    return {"method": "fedavg", "dataset": "mnist", "partitioner": "draw", "samples-per-client": 10,
            "local-test-fraction": 0.2, "local-epochs": 1, "batch-size": 8, "num-server-rounds": rounds,
            "fraction-train": fraction, "fraction-evaluate": fraction, "seed": 0, "checkpoint-every": 0,
            "overwrite": True}  # a benchmark may run again into the same out-dir


def stamped(cmd: list[str], log_path: Path, env: dict, limit: float, cpu: dict[int, float]):
    """Run ``cmd``, keeping its output lines with the seconds since start (and in
    ``log_path``); sample its process tree's RSS, and its CPU seconds as each round's line
    arrives (into ``cpu``). Stopped after ``limit`` seconds; a failure raises. Returns the
    lines, the peak RSS in bytes and the wall seconds."""
    import re
    import subprocess

    from simulations.superlink import stop_tree

    lines: list[tuple[float, str]] = []
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = TreeRSS([proc.pid])
    sampler.start()
    timer = threading.Timer(limit, stop_tree, args=(proc.pid,))
    timer.start()
    with open(log_path, "w") as log:
        for line in proc.stdout:
            log.write(line)
            lines.append((time.perf_counter() - t0, line.rstrip()))
            if found := re.search(r"\[round (\d+)/", line):
                cpu.setdefault(int(found[1]), tree_cpu([proc.pid]))
    proc.wait()
    stopped = not timer.is_alive()
    timer.cancel()
    peak = sampler.stop()
    if proc.returncode and not stopped:
        raise RuntimeError(f"in-process run failed (exit {proc.returncode}; log: {log_path})")
    return lines, peak, time.perf_counter() - t0


def round_times(lines: list[tuple[float, str]]) -> dict[int, float]:
    """Seconds since start at which each ``[round N/`` progress line arrived."""
    import re

    out: dict[int, float] = {}
    for t, line in lines:
        if (found := re.search(r"\[round (\d+)/", line)) and int(found[1]) not in out:
            out[int(found[1])] = t
    return out


def scale_figures(times: dict[int, float], rows, rounds: int, cpu: dict[int, float]) -> dict:
    """Start-up (to the end of round 1, less one later round), steady per-round seconds
    and CPU seconds of the process tree per steady round (rounds 2.., median: these depend
    much less on the machine's other load); ``complete`` False where the run stopped early."""
    done = rows is not None and "round-seconds" in rows  # a run stopped in round 1 wrote round 0 only
    secs = rows.loc[rows["round"] >= 1, "round-seconds"].tolist() if done else []
    cpu_rounds = [cpu[r] - cpu[r - 1] for r in range(2, rounds + 1) if r in cpu and r - 1 in cpu]
    base = {"round-seconds": secs, "cpu-per-round-s": stats.median(cpu_rounds) if cpu_rounds else None,
            "round-0-s": times.get(0)}
    if 1 not in times or not secs:
        return {**base, "complete": False, "round-s": None, "startup-s": None}
    per_round = steady(secs)
    # less the fastest later round: a load spike in a later round would make the median too long
    return {**base, "complete": len(secs) == rounds, "round-s": per_round, "startup-s": times[1] - best(secs)}


def read_rows(path: Path):
    import pandas as pd

    return pd.read_csv(path) if path.exists() else None


def scale_local(n: int, sampled: int, rounds: int, out: Path, limit: float) -> dict:
    """One in-process run (``LocalGrid``: the strategy, messages and ClientApp, no engine)
    in a fresh Python process, so that its memory counts alone; stopped after ``limit`` s."""
    name = f"local-{n}"
    (out / name).mkdir(parents=True, exist_ok=True)
    overrides = {**scale_overrides(n, sampled, rounds), "out-dir": str(out), "run-name": name}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cpu: dict[int, float] = {}
    lines, peak, wall = stamped([sys.executable, "-c", SCALE_LOCAL.format(overrides=overrides, n=n)],
                                out / name / "flwr.log", env, limit, cpu)
    res = scale_figures(round_times(lines), read_rows(out / name / "metrics.csv"), rounds, cpu)
    return {**res, "peak-rss-mb": peak / 2**20, "run-wall-s": wall, "load": os.getloadavg()[0]}


def scale_flower(n: int, sampled: int, rounds: int, out: Path, limit: float) -> dict:
    """One ``flwr run`` through the Ray simulation engine, on a fresh SuperLink (and a Ray
    of its own), so that the size's memory counts alone; stopped after ``limit`` s."""
    from simulations.config import resolve
    from simulations.superlink import LocalSuperLink, stop_tree

    name = f"flower-{n}"
    run_dir = out / name
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = resolve({**scale_overrides(n, sampled, rounds), "out-dir": str(out), "run-name": name})
    fed = {"num-supernodes": n, "client-resources-num-cpus": 1, "client-resources-num-gpus": 0.0}
    old = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        with LocalSuperLink() as link:
            sampler = TreeRSS(roots(link))
            sampler.start()
            timer = threading.Timer(limit, stop_tree, args=(link.procs[0].pid,))  # the SuperLink's whole tree
            timer.start()
            t0 = time.perf_counter()
            cpu: dict[int, float] = {}
            record, lines = timed_run(link, cfg, run_dir / "flwr.log", fed,
                                      on_round=lambda r: cpu.setdefault(r, tree_cpu(roots(link))))
            wall = time.perf_counter() - t0
            stopped = not timer.is_alive()
            timer.cancel()
            peak = sampler.stop()
    finally:
        if old is None:
            os.environ.pop("OMP_NUM_THREADS")
        else:
            os.environ["OMP_NUM_THREADS"] = old
    res = scale_figures(round_times(lines), read_rows(run_dir / "metrics.csv"), rounds, cpu)
    ready = first(lines, r"results in")
    status = "stopped" if stopped else record.get("status", "unknown")
    if status != "finished:completed":  # said, with the figures it reached; the other sizes still run
        status += f" {record.get('status-details', '')} (log: {run_dir / 'flwr.log'})"
    res.update({"status": status, "peak-rss-mb": peak / 2**20,
                "peak-procs": sampler.peak_procs, "run-wall-s": wall, "serverapp-ready-s": ready,
                "load": os.getloadavg()[0]})
    return res


def engine_costs(n: int, messages: int = 100, probe: int = 10_000) -> dict:
    """What Flower's simulation engine does per node, timed on its own functions in this
    process (flwr 1.42, ``flwr.server.superlink.fleet.vce.vce_api``): registering ``n``
    nodes in the in-memory LinkState; building each node's run context (a
    ``DeprecatedRunInfoStore``, which reads the app's pyproject.toml again for every
    node); and one sweep of the loop that looks for messages to deliver, with none and
    with ``messages`` in flight (every 0.1 s it asks the LinkState once per node, and
    each ask scans every stored message). Contexts and sweeps are timed on the first
    ``probe`` nodes and scaled to ``n`` (both are a loop over the nodes)."""
    import psutil
    from queue import Queue
    from uuid import uuid4

    from flwr.app import Message, MessageType, RecordDict
    from flwr.server.superlink.fleet.vce.vce_api import (_register_node_info_stores, _register_nodes,
                                                         add_messages_to_queue)
    from flwr.server.superlink.linkstate import LinkStateFactory
    from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME
    from flwr.supercore.object_store import ObjectStoreFactory
    from flwr.supercore.run import Run
    from flwr.supercore.task_identity import TaskIdentity
    from flwr.superlink.federation import NoOpFederationManager
    from flwr.superlink.federation.noop_federation_manager import NOOP_FEDERATION_ID

    from simulations.superlink import APP_DIR

    class OneSweep:  # add_messages_to_queue's stop event: one pass over the nodes
        passes = 0

        def is_set(self) -> bool:
            self.passes += 1
            return self.passes > 1

        def wait(self, seconds: float) -> None:
            pass

    me = psutil.Process()
    factory = LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory())
    rss0, t0 = me.memory_info().rss, time.perf_counter()
    mapping = _register_nodes(n, factory)
    rss1, t1 = me.memory_info().rss, time.perf_counter()
    sub = dict(list(mapping.items())[:min(n, probe)])
    scale = n / len(sub)
    stores = _register_node_info_stores(sub, Run.create_empty(1), app_dir=str(APP_DIR))
    rss2, t2 = me.memory_info().rss, time.perf_counter()
    state = factory.state()
    add_messages_to_queue(state, Queue(), sub, OneSweep())
    t3 = time.perf_counter()
    run_id = state.create_run(None, None, None, {}, NOOP_FEDERATION_ID, None, None, "serverapp")
    saved = TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, 1, 1
    try:
        for node in list(sub)[:messages]:  # delivered, awaiting the reply: as while clients train
            msg = Message(RecordDict(), dst_node_id=node, message_type=MessageType.TRAIN)
            msg.metadata.__dict__["_message_id"] = str(uuid4())
            msg.metadata.delivered_at = "delivered"
            state.message_ins_store[msg.metadata.message_id] = msg
        t4 = time.perf_counter()
        add_messages_to_queue(state, Queue(), sub, OneSweep())
        t5 = time.perf_counter()
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved
    del stores
    return {"nodes": n, "probe": len(sub), "register-s": t1 - t0, "register-mb": (rss1 - rss0) / 2**20,
            "contexts-s": (t2 - t1) * scale, "contexts-mb": (rss2 - rss1) / 2**20 * scale,
            "sweep-empty-s": (t3 - t2) * scale, "sweep-busy-s": (t5 - t4) * scale, "messages": messages,
            "load": os.getloadavg()[0]}


def ratio(a, b) -> float | None:
    return a / b if a is not None and b else None


def fmt(value, spec: str = ".1f", unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def bench_scale(args) -> dict:
    if args.quick:
        sizes, sampled, rounds = [10, 100], 5, 2
    else:
        sizes = [int(s) for s in (args.sizes or "1000,10000,100000").split(",")]
        sampled, rounds = args.sampled or 100, args.rounds or 3
    engines = args.engines.split(",") if args.engines else ["local", "flower"]
    limit = args.limit or 1800
    out = args.out_dir / "scale"
    res: dict = {"sizes": sizes, "sampled": sampled, "rounds": rounds, "local": {}, "flower": {}, "engine": {}}
    say(f"scale: FedAvg on MNIST, partitioner=draw (10 samples per client, one batch of 8 per epoch), {sizes} "
        f"virtual clients, {sampled} sampled per round (train and evaluate), {rounds} rounds; each size in a fresh "
        f"process tree ({load()})")
    for n in sizes:
        if "local" in engines:
            r = res["local"][n] = scale_local(n, sampled, rounds, out, limit)
            say(f"  in-process (LocalGrid, no engine), {n} clients: start-up {fmt(r['startup-s'])} s, round seconds "
                f"{fmt_list(r['round-seconds'])}, CPU seconds per round {fmt(r['cpu-per-round-s'], '.2f')}, peak RSS "
                f"{r['peak-rss-mb']:.0f} MB ({load()})")
        if "flower" in engines:
            r = res["flower"][n] = scale_flower(n, sampled, rounds, out, limit)
            state = "" if r["complete"] else (f" NOT COMPLETE after {len(r['round-seconds'])} rounds: {r['status']}; "
                                              f"the first round took {fmt(next(iter(r['round-seconds']), None))} s")
            say(f"  Flower simulation (Ray), {n} clients: start-up {fmt(r['startup-s'])} s (ServerApp ready "
                f"{fmt(r['serverapp-ready-s'])} s, round 0 done {fmt(r['round-0-s'])} s after flwr run), round "
                f"seconds {fmt_list(r['round-seconds'])}, CPU seconds per round {fmt(r['cpu-per-round-s'], '.2f')}, "
                f"peak RSS {r['peak-rss-mb']:.0f} MB over {r['peak-procs']} "
                f"processes{state} ({load()})")
        if "flower" in engines and not args.quick:
            e = res["engine"][n] = engine_costs(n)
            probe = "" if e["probe"] == n else f" (contexts and sweeps timed on {e['probe']} nodes, scaled)"
            say(f"  Flower's engine alone, {n} nodes{probe}: register {e['register-s']:.2f} s / "
                f"{e['register-mb']:.0f} MB, node contexts {e['contexts-s']:.2f} s / {e['contexts-mb']:.0f} MB, one "
                f"delivery sweep {e['sweep-empty-s'] * 1000:.0f} ms idle, {e['sweep-busy-s']:.2f} s with {e['messages']} messages "
                f"in flight ({load()})")
    small, big = sizes[0], sizes[-1]
    parts = []
    for engine in engines:
        a, b = res[engine][small], res[engine][big]
        f = {"round": ratio(b["round-s"], a["round-s"]), "startup": ratio(b["startup-s"], a["startup-s"]),
             "rss": ratio(b["peak-rss-mb"], a["peak-rss-mb"])}
        f["met"] = all(v is not None and v <= 1.5 for v in f.values())
        f["cpu-round"] = ratio(b["cpu-per-round-s"], a["cpu-per-round-s"])
        res[f"{engine}-ratios"] = f
        parts.append(f"{engine} per-round x{fmt(f['round'], '.2f')} (CPU seconds x{fmt(f['cpu-round'], '.2f')}), start-up x{fmt(f['startup'], '.2f')}, peak RSS "
                     f"x{fmt(f['rss'], '.2f')} ({'met' if f['met'] else 'NOT met'})")
    say(f"summary: scale {small} -> {big} clients ({sampled} sampled): " + "; ".join(parts)
        + f" (goal: each <= 1.5) ({load()})")
    return res


# ---- gpu-fractions ---------------------------------------------------------------------
class GpuMemory(threading.Thread):
    """Peak GPU memory in use (MiB, all GPUs, ``nvidia-smi``) and the most processes
    holding a CUDA context at once (each a client running on the GPU), every 0.2 s."""

    def __init__(self, interval: float = 0.2):
        super().__init__(daemon=True)
        self.interval, self.peak_mb, self.peak_procs = interval, 0.0, 0
        self._halt = threading.Event()

    @staticmethod
    def query() -> tuple[float, int]:
        import subprocess

        used = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True).stdout.split()
        apps = subprocess.run(["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader"],
                              capture_output=True, text=True).stdout.split()
        return sum(float(u) for u in used), len(apps)

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            mb, procs = self.query()
            self.peak_mb, self.peak_procs = max(self.peak_mb, mb), max(self.peak_procs, procs)

    def stop(self) -> tuple[float, int]:
        self._halt.set()
        self.join()
        return self.peak_mb, self.peak_procs


def ray_actors(address: str) -> list[dict]:
    """Flower's client actors on the Ray cluster at ``address`` (live and ended), with the
    resources each asked Ray for (``required_resources``), read in a separate driver."""
    import subprocess

    code = ("import json, ray; from ray._private import state; from ray.core.generated import gcs_pb2;"
            "ray.init(address=%r, logging_level='ERROR');"
            "rows = [gcs_pb2.ActorTableData.FromString(b) for b in "
            "state.state._connect_and_get_accessor().get_actor_table(None, None)];"
            "print(json.dumps([{'job': a.job_id.hex(), 'start': a.start_time, 'resources': dict(a.required_resources)}"
            " for a in rows if a.class_name == 'ClientAppActor']))" % address)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_gpu_fractions(args) -> dict:
    """FedAvg through Ray with ``client-resources-num-gpus`` 1, 0.5, 0.25, 0.1 and in-process
    with ``--jobs``: clients at once, clients/s, GPU memory, per-round overhead vs a plain loop."""
    import torch

    from simulations.superlink import LocalSuperLink, RayCluster

    dry = args.dry_run_cpu
    if not dry and not torch.cuda.is_available():
        raise SystemExit("gpu-fractions needs a CUDA GPU and found none (torch.cuda.is_available() is False); "
                         "--dry-run-cpu runs it on the CPU with Ray told of one GPU, to check the script only")
    fractions = [float(f) for f in (args.fractions or ("0.5" if args.quick else "1,0.5,0.25,0.1")).split(",")]
    jobs = [int(j) for j in (args.jobs or ("1" if args.quick else "1,2,4")).split(",")]
    clients, rounds = (2, 2) if args.quick else (args.clients or 20, args.rounds or 3)
    out = args.out_dir / "gpu-fractions"
    overrides = {"method": "fedavg", "dataset": "mnist", "partitioner": "iid", "local-epochs": 1,
                 "num-server-rounds": rounds, "seed": 0, "checkpoint-every": 0, "overwrite": True,
                 "device": "cpu" if dry else "cuda"}
    gpu_name = "none (dry run on the CPU)" if dry else torch.cuda.get_device_name(0)
    say(f"gpu-fractions: FedAvg on MNIST, {clients} clients x 1 local epoch, all sampled, {rounds} rounds, on "
        f"{gpu_name} ({load()})")
    res: dict = {"gpu": gpu_name, "dry-run": dry, "clients": clients, "rounds": rounds, "ray": {}, "local": {}}
    plain = plain_loop(overrides, clients, rounds)
    pl_round = steady(plain["round_seconds"])
    res["plain-round-s"] = pl_round
    say(f"  plain loop on the same device: round seconds {fmt_list(plain['round_seconds'])} ({load()})")
    with RayCluster(num_gpus=1 if dry else None) as ray, \
            LocalSuperLink(env={"RAY_ADDRESS": ray.address}) as link:
        link.ray = ray
        for g in fractions:
            meter = None if dry else GpuMemory()
            if meter:
                meter.start()
            run = flower_run(link, overrides, {"num-supernodes": clients, "client-resources-num-cpus": 1,
                                               "client-resources-num-gpus": g}, out, f"gpus-{g}")
            peak_mb, peak_procs = meter.stop() if meter else (None, None)
            secs = run["rows"].loc[run["rows"]["round"] >= 1, "round-seconds"].tolist()
            per_round = steady(secs)
            actors = sorted(ray_actors(ray.address), key=lambda a: a["start"])
            mine = [a for a in actors if a["job"] == actors[-1]["job"]]  # this run's Ray job
            res["ray"][g] = {"round-seconds": secs, "round-s": per_round, "clients-per-s": clients / per_round,
                             "overhead": per_round / pl_round, "actors": len(mine),
                             "actor-resources": mine[0]["resources"] if mine else None,
                             "gpu-peak-mb": peak_mb, "gpu-procs-at-once": peak_procs, "load": os.getloadavg()[0]}
            r = res["ray"][g]
            say(f"  Ray, num-gpus {g}: {r['actors']} client actors (each asked Ray for {r['actor-resources']}), "
                f"{fmt(peak_procs, 'd')} on the GPU at once, round seconds {fmt_list(secs)}, "
                f"{r['clients-per-s']:.2f} clients/s, x{r['overhead']:.2f} the plain loop, GPU "
                f"memory peak {fmt(peak_mb, '.0f', ' MiB')} ({load()})")
    for j in jobs:
        r = res["local"][j] = local_jobs(overrides, clients, j, out, dry)
        r["overhead"] = r["round-s"] / pl_round
        say(f"  in-process, --jobs {j}: {j} runs at once, round seconds {fmt_list(r['round-seconds'])}, "
            f"{r['clients-per-s']:.2f} clients/s over all runs, x{r['overhead']:.2f} the plain loop per round, GPU "
            f"memory peak {fmt(r['gpu-peak-mb'], '.0f', ' MiB')} ({load()})")
    best_ray = max(res["ray"].items(), key=lambda kv: kv[1]["clients-per-s"])
    best_local = max(res["local"].items(), key=lambda kv: kv[1]["clients-per-s"])
    say(f"summary: gpu-fractions on {gpu_name}: best Ray num-gpus {best_ray[0]} {best_ray[1]['clients-per-s']:.2f} "
        f"clients/s (x{best_ray[1]['overhead']:.2f} plain per round), best in-process --jobs {best_local[0]} "
        f"{best_local[1]['clients-per-s']:.2f} clients/s; plain loop {clients / pl_round:.2f} clients/s "
        f"({load()})")
    return res


def local_jobs(overrides: dict, clients: int, jobs: int, out: Path, dry: bool) -> dict:
    """``sweep --local --jobs N``'s way: N in-process runs at once (seeds 0..N-1), each in
    its own process on the same device (N = 1: in this one); clients/s over all of them."""
    import concurrent.futures as cf
    import multiprocessing as mp

    import pandas as pd

    from simulations.config import resolve
    from simulations.local import run_logged

    meter = None if dry else GpuMemory()
    if meter:
        meter.start()
    cfgs = []
    for seed in range(jobs):
        cfg = resolve({**overrides, "seed": seed, "out-dir": str(out), "run-name": f"local-jobs{jobs}-seed{seed}"})
        (out / cfg["run-name"]).mkdir(parents=True, exist_ok=True)
        cfgs.append(cfg)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    logs = [out / c["run-name"] / "flwr.log" for c in cfgs]
    if jobs == 1:  # as sweep --local: one run at a time runs in this process
        done = [run_logged(cfgs[0], clients, logs[0], threads)]
    else:
        with cf.ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
            done = list(pool.map(run_logged, cfgs, [clients] * jobs, logs, [threads] * jobs))
    peak_mb, _ = meter.stop() if meter else (None, None)
    failed = [reason for status, reason, _ in done if status != "finished:completed"]
    if failed:
        raise RuntimeError(f"in-process run failed: {failed[0]}")
    per_run = [steady(pd.read_csv(out / c["run-name"] / "metrics.csv").query("round >= 1")["round-seconds"].tolist())
               for c in cfgs]
    per_round = stats.mean(per_run)
    secs = pd.read_csv(out / cfgs[0]["run-name"] / "metrics.csv").query("round >= 1")["round-seconds"].tolist()
    return {"round-seconds": secs, "round-s": per_round, "clients-per-s": jobs * clients / per_round,
            "gpu-peak-mb": peak_mb, "load": os.getloadavg()[0]}


# ---- fedhip-cost -----------------------------------------------------------------------
def gram_gflops(n: int, d: int, num_classes: int, repeats: int = 7, threads: int = 1) -> dict:
    """GFLOP/s of ``clients.fedhip.statistics`` (XᵀX, XᵀY, counts, from float32 features)
    vs a plain float64 GEMM of the Gram's shape ([d, n] @ [n, d]): same process, same
    input, ``threads`` torch threads (1, as in a Ray worker), the two timed in alternation
    (best of ``repeats`` each) so that the machine's load hits both alike."""
    import torch

    from clients.fedhip import statistics as fedhip_statistics

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(0)
        X = torch.randn(n, d, generator=gen).relu()  # float32 features, as the backbone gives
        y = torch.randint(num_classes, (n,), generator=gen)
        A = X.to(torch.float64).T.contiguous()
        B = X.to(torch.float64)
        flops = 2.0 * n * d * d  # the Gram; XᵀY adds 2·n·d·C (< 1%)
        calls = {"gram": lambda: fedhip_statistics(X, y, num_classes), "gemm": lambda: A @ B}
        times: dict[str, list[float]] = {k: [] for k in calls}
        for i in range(repeats + 1):
            for key, fn in calls.items():
                t0 = time.perf_counter()
                fn()
                if i:  # the first pass warms up
                    times[key].append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old)
    t_gram, t_gemm = min(times["gram"]), min(times["gemm"])
    return {"n": n, "d": d, "threads": threads, "gram-s": t_gram, "gemm-s": t_gemm,
            "gram-gflops": flops / t_gram / 1e9, "gemm-gflops": flops / t_gemm / 1e9}


def reach(rows, target: float) -> dict | None:
    """Cumulative round seconds and uplink bytes up to the first round with accuracy >= target."""
    rows = rows[rows["round"] >= 1].sort_values("round")
    hit = rows[rows["accuracy"] >= target - 1e-12]
    if hit.empty:
        return None
    upto = rows[rows["round"] <= int(hit["round"].iloc[0])]
    return {"round": int(hit["round"].iloc[0]), "seconds": float(upto["round-seconds"].sum()),
            "uplink-bytes": float(upto["uplink-bytes"].sum()), "accuracy": float(hit["accuracy"].iloc[0])}


def local_cost(overrides: dict, clients: int, out: Path, name: str) -> dict:
    """One in-process run (LocalGrid, one torch thread): its rows, CPU and wall seconds.

    CPU seconds of this process are the whole run's compute (server and every client),
    far less sensitive to other jobs on the machine than wall time."""
    import pandas as pd

    from clients import fedhip
    from simulations.config import resolve
    from simulations.local import run_logged

    fedhip.extractor.cache_clear()  # no features computed by an earlier run: each run pays its own
    fedhip._FEATURES.clear()
    cfg = resolve({**overrides, "out-dir": str(out), "run-name": name})
    (out / name).mkdir(parents=True, exist_ok=True)
    cpu0 = time.process_time()
    status, reason, wall = run_logged(cfg, clients, out / name / "flwr.log", threads=1)
    cpu = time.process_time() - cpu0
    if status != "finished:completed":
        raise RuntimeError(f"run {name} failed: {reason} (log: {out / name / 'flwr.log'})")
    rows = pd.read_csv(out / name / "metrics.csv")
    rows = rows[rows["round"] >= 1]
    return {"rows": rows, "cpu": cpu, "wall": wall,
            "bytes": float(rows["uplink-bytes"].sum() + rows["downlink-bytes"].sum()),
            "uplink": float(rows["uplink-bytes"].sum())}


def bench_fedhip_cost(args) -> dict:
    """FedHiP (one closed-form round on frozen features) against FedAvg fine-tuning the same
    backbone (``pretrained:tf_efficientnet_lite0`` at FedHiP's input size), on the same
    partitions: whole-run CPU seconds and bytes (uplink + downlink), in-process, so the
    paper's "compute -80%, communication -95%" can be checked as ratios from one run."""
    if args.quick:
        clients, rounds, data = 2, 1, {"dataset": "digits", "backbone-size": 32}
    else:
        clients, rounds, data = args.clients or 10, args.rounds or 2, {"dataset": "mnist"}
    size = data.get("backbone-size", 64)
    common = {**data, "partitioner": "dirichlet", "dirichlet-alpha": 0.3, "seed": 0, "checkpoint-every": 0}
    out = args.out_dir / "fedhip-cost"
    say(f"fedhip-cost: {common['dataset']}, {clients} clients (Dirichlet 0.3), FedHiP vs FedAvg fine-tuning "
        f"tf_efficientnet_lite0@{size} for {rounds} round(s) x 1 local epoch, in-process, 1 thread ({load()})")
    hip = local_cost({**common, "method": "fedhip"}, clients, out, "fedhip")
    say(f"  fedhip: {hip['cpu']:.1f} CPU s, {hip['bytes'] / 1e6:.1f} MB ({load()})")
    avg = local_cost({**common, "method": "fedavg", "model": f"pretrained:tf_efficientnet_lite0@{size}",
                      "num-server-rounds": rounds, "local-epochs": 1}, clients, out, "fedavg-finetune")
    say(f"  fedavg fine-tune: {avg['cpu']:.1f} CPU s, {avg['bytes'] / 1e6:.1f} MB ({load()})")
    h, a = hip["rows"].iloc[-1], avg["rows"].iloc[-1]
    res = {"clients": clients, "rounds": rounds,
           "fedhip-accuracy": float(h["accuracy"]), "fedhip-personalized-accuracy": float(h["personalized-accuracy"]),
           "fedhip-cpu-s": hip["cpu"], "fedhip-bytes": hip["bytes"], "fedhip-uplink-bytes": hip["uplink"],
           "fedhip-round-s": float(h["round-seconds"]),
           "fedavg-best-accuracy": float(avg["rows"]["accuracy"].max()),
           "fedavg-personalized-accuracy": float(a["personalized-accuracy"]),
           "fedavg-cpu-s": avg["cpu"], "fedavg-bytes": avg["bytes"],
           "fedavg-cpu-s-per-round": avg["cpu"] / rounds, "fedavg-bytes-per-round": avg["bytes"] / rounds,
           "fedavg-to-best": {"uplink-bytes": avg["uplink"], "rounds": rounds},
           "compute-reduction": 1 - hip["cpu"] / avg["cpu"], "communication-reduction": 1 - hip["bytes"] / avg["bytes"],
           "load": os.getloadavg()[0]}
    # The Gram's shape: the largest client's local train split x the backbone's feature width.
    from clients.fedhip import extractor, feature_key
    from datasets import load_dataset
    from simulations import client_app
    from simulations.config import resolve

    cfg = resolve({**common, "method": "fedhip"})
    key = tuple(cfg[k] for k in client_app.PARTITION_KEYS)
    n = max(len(client_app.client_data(key, pid, clients).train) for pid in range(clients))
    d = extractor(feature_key(cfg)).dim
    g = gram_gflops(n, d, load_dataset(cfg["dataset"]).num_classes)
    res["gram"] = g
    say(f"  Gram accumulation [{n} x {d}]: {g['gram-gflops']:.1f} GFLOP/s vs plain GEMM {g['gemm-gflops']:.1f} "
        f"GFLOP/s, float64, {g['threads']} thread ({load()})")
    say(f"summary: fedhip-cost fedhip {res['fedhip-personalized-accuracy']:.3f} personalized / "
        f"{res['fedhip-accuracy']:.3f} global in {hip['cpu']:.1f} CPU s, {hip['bytes'] / 1e6:.1f} MB; fedavg "
        f"fine-tune ({rounds} rounds) {res['fedavg-personalized-accuracy']:.3f} / {float(a['accuracy']):.3f} in "
        f"{avg['cpu']:.1f} CPU s, {avg['bytes'] / 1e6:.1f} MB: compute {-100 * res['compute-reduction']:+.0f}%, "
        f"communication {-100 * res['communication-reduction']:+.0f}%; Gram {g['gram-gflops']:.1f} vs GEMM "
        f"{g['gemm-gflops']:.1f} GFLOP/s ({load()})")
    return res


# ---- gifd-cost -------------------------------------------------------------------------
def bench_gifd_cost(args) -> dict:
    import pandas as pd
    import torch

    from simulations.config import resolve
    from strategies.attacks.benchmark import client_updates
    from strategies.attacks.prior import GanPrior
    from strategies.attacks.train_gan import ensure_prior

    overrides = {"method": "gifd"}
    if args.quick:
        overrides.update({"attack-num-images": 1, "attack-budget": 20, "gan-train-steps": 20})
    cfg = resolve(overrides)
    images = int(cfg["attack-num-images"])
    attacks = ["ig", "ggl", "gifd"]
    gan_dir = args.gan_dir or args.out_dir / "gifd-cost"
    say(f"gifd-cost: {images} MNIST images (batch 1, FedSGD), budget {cfg['attack-budget']} steps/image, "
        f"{cfg['attack-restarts']} restarts, prior {cfg['gan-dataset']} ({load()})")
    t0 = time.perf_counter()
    path = ensure_prior(cfg["gan-dataset"], gan_dir, int(cfg["gan-train-steps"]), 0, cfg["data-root"], log_every=0)
    prior = GanPrior.load(path, name=cfg["gan-dataset"])
    say(f"  prior ready in {time.perf_counter() - t0:.1f} s ({path})")
    threads = torch.get_num_threads()
    strategy, items = client_updates(cfg, max(images, 2))
    items = items[: -(-images // int(cfg["attack-batch-size"]))]
    strategy.attack_updates(1, items, attacks, prior)
    torch.set_num_threads(threads)
    frame = pd.DataFrame(strategy.attack_rows)
    per_image = frame.groupby("attack")["attack-seconds"].sum() / frame.groupby("attack").size()
    per_image = {a: float(per_image[a]) for a in attacks}
    psnr = {a: float(frame.loc[frame["attack"] == a, "psnr"].mean()) for a in attacks}
    for a in attacks:
        say(f"  {a}: {per_image[a]:.2f} s per image (mean PSNR {psnr[a]:.1f} dB) ({load()})")
    say("summary: gifd-cost seconds per image at budget " + str(cfg["attack-budget"]) + ": "
        + ", ".join(f"{a} {per_image[a]:.2f}" for a in attacks) + f" ({load()})")
    return {"images": images, "budget": int(cfg["attack-budget"]), "seconds-per-image": per_image, "psnr": psnr,
            "load": os.getloadavg()[0]}


RUNNERS = {"overhead": bench_overhead, "scale": bench_scale, "gpu-fractions": bench_gpu_fractions,
           "fedhip-cost": bench_fedhip_cost, "gifd-cost": bench_gifd_cost}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulations.benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=BENCHMARKS)
    parser.add_argument("--quick", action="store_true", help="smallest size (CI: checks that it runs)")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/benchmark"))
    parser.add_argument("--clients", type=int, help="overhead, gpu-fractions, fedhip-cost: number of clients")
    parser.add_argument("--rounds", type=int, help="overhead, scale, gpu-fractions, fedhip-cost: rounds (FedAvg)")
    parser.add_argument("--sizes", help="scale: comma list of client counts (default 1000,10000,100000)")
    parser.add_argument("--sampled", type=int, help="scale: clients sampled per round (default 100)")
    parser.add_argument("--engines", help="scale: local,flower (default both: in-process and the Ray simulation)")
    parser.add_argument("--limit", type=float, help="scale: seconds after which a size's run is stopped (1800)")
    parser.add_argument("--fractions", help="gpu-fractions: client-resources-num-gpus values (1,0.5,0.25,0.1)")
    parser.add_argument("--jobs", help="gpu-fractions: in-process runs at once (1,2,4)")
    parser.add_argument("--dry-run-cpu", action="store_true", help="gpu-fractions: no GPU needed; Ray is told of "
                        "one GPU and clients train on the CPU (checks the script and the resource keys only)")
    parser.add_argument("--gan-dir", type=Path, help="gifd-cost: where the GAN prior is cached")
    parser.add_argument("--ray-per-run", action="store_true", help="overhead, fedhip-cost: a private Ray instance "
                        "per run, as before sweeps shared one")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.out_dir = args.out_dir.expanduser().resolve()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    res = RUNNERS[args.name](args)
    (args.out_dir / f"{args.name}.json").write_text(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
