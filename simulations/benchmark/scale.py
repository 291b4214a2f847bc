"""``scale``: 1,000 / 10,000 / 100,000 virtual clients, 100 sampled per round, in process and
through Flower's engine (start-up, per-round time, memory, the engine's own per-node costs).
"""

from __future__ import annotations

import os
import statistics as stats
import sys
import threading
import time
from pathlib import Path

from .timing import (
    TreeRSS,
    best,
    first,
    fmt,
    fmt_list,
    load,
    ratio,
    roots,
    say,
    steady,
    timed_run,
    tree_cpu,
)

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
    from queue import Queue
    from uuid import uuid4

    import psutil
    from flwr.app import Message, MessageType, RecordDict
    from flwr.server.superlink.fleet.vce.vce_api import (
        _register_node_info_stores,
        _register_nodes,
        add_messages_to_queue,
    )
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
