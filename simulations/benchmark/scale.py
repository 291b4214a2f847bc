"""``scale``: 1,000 / 10,000 / 100,000 / 1,000,000 virtual clients (``num-clients``) on 10
nodes, 100 sampled per round, in process and through Flower's engine (start-up, per-round
time, memory).
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
    run_again,
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
run_local(cfg, {nodes})
"""


def scale_overrides(n: int, sampled: int, rounds: int) -> dict:
    """A population of ``n`` clients and tiny client work, so that what grows with the
    population is what is measured: FedAvg, 10 samples per client drawn from MNIST's pool
    (``partitioner=draw``), one local epoch of one batch."""
    fraction = sampled / n
    assert int(n * fraction) == sampled, (n, sampled)
    return {"method": "fedavg", "num-clients": n, "dataset": "mnist", "partitioner": "draw", "samples-per-client": 10,
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


def scale_local(n: int, nodes: int, sampled: int, rounds: int, out: Path, limit: float) -> dict:
    """One in-process run (``LocalGrid``: the strategy, messages and ClientApp, no engine)
    of ``n`` clients on ``nodes`` nodes in a fresh Python process, so that its memory
    counts alone; stopped after ``limit`` s."""
    name = f"local-{n}"
    (out / name).mkdir(parents=True, exist_ok=True)
    overrides = {**scale_overrides(n, sampled, rounds), "out-dir": str(out), "run-name": name}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cpu: dict[int, float] = {}
    lines, peak, wall = stamped([sys.executable, "-c", SCALE_LOCAL.format(overrides=overrides, nodes=nodes)],
                                out / name / "flwr.log", env, limit, cpu)
    res = scale_figures(round_times(lines), read_rows(out / name / "metrics.csv"), rounds, cpu)
    return {**res, "peak-rss-mb": peak / 2**20, "run-wall-s": wall, "load": os.getloadavg()[0]}


def scale_flower(n: int, nodes: int, sampled: int, rounds: int, out: Path, limit: float,
                 name: str | None = None) -> dict:
    """One ``flwr run`` of ``n`` clients on ``nodes`` SuperNodes through the Ray simulation
    engine, on a fresh SuperLink (and a Ray of its own), so that the size's memory counts
    alone; stopped after ``limit`` s. A run whose task the SuperLink declared dead
    runs once more under ``flower-<n>-again`` (``run_again``, as in ``flower_run``)."""
    from simulations.config import resolve
    from simulations.superlink import LocalSuperLink, stop_tree

    again = name is None
    name = name or f"flower-{n}"
    run_dir = out / name
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = resolve({**scale_overrides(n, sampled, rounds), "out-dir": str(out), "run-name": name})
    fed = {"num-supernodes": nodes, "client-resources-num-cpus": 1, "client-resources-num-gpus": 0.0}
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
    if again and not stopped and run_again(name, record, run_dir):
        return scale_flower(n, nodes, sampled, rounds, out, limit, name=f"{name}-again")
    if status != "finished:completed":  # said, with the figures it reached; the other sizes still run
        status += f" {record.get('status-details', '')} (log: {run_dir / 'flwr.log'})"
    res.update({"status": status, "peak-rss-mb": peak / 2**20,
                "peak-procs": sampler.peak_procs, "run-wall-s": wall, "serverapp-ready-s": ready,
                "load": os.getloadavg()[0]})
    return res


def bench_scale(args) -> dict:
    if args.quick:
        sizes, nodes, sampled, rounds = [10, 100], 2, 5, 2
    else:
        sizes = [int(s) for s in (args.sizes or "1000,10000,100000,1000000").split(",")]
        nodes, sampled, rounds = args.nodes or 10, args.sampled or 100, args.rounds or 3
    engines = args.engines.split(",") if args.engines else ["local", "flower"]
    limit = args.limit or 1800
    out = args.out_dir / "scale"
    res: dict = {"sizes": sizes, "nodes": nodes, "sampled": sampled, "rounds": rounds, "local": {}, "flower": {}}
    say(f"scale: FedAvg on MNIST, partitioner=draw (10 samples per client, one batch of 8 per epoch), {sizes} "
        f"virtual clients (num-clients) on {nodes} nodes, {sampled} sampled per round (train and evaluate), {rounds} "
        f"rounds; each size in a fresh process tree ({load()})")
    for n in sizes:
        if "local" in engines:
            r = res["local"][n] = scale_local(n, nodes, sampled, rounds, out, limit)
            say(f"  in-process (LocalGrid, no engine), {n} clients: start-up {fmt(r['startup-s'])} s, round seconds "
                f"{fmt_list(r['round-seconds'])}, CPU seconds per round {fmt(r['cpu-per-round-s'], '.2f')}, peak RSS "
                f"{r['peak-rss-mb']:.0f} MB ({load()})")
        if "flower" in engines:
            r = res["flower"][n] = scale_flower(n, nodes, sampled, rounds, out, limit)
            state = "" if r["complete"] else (f" NOT COMPLETE after {len(r['round-seconds'])} rounds: {r['status']}; "
                                              f"the first round took {fmt(next(iter(r['round-seconds']), None))} s")
            say(f"  Flower simulation (Ray), {n} clients: start-up {fmt(r['startup-s'])} s (ServerApp ready "
                f"{fmt(r['serverapp-ready-s'])} s, round 0 done {fmt(r['round-0-s'])} s after flwr run), round "
                f"seconds {fmt_list(r['round-seconds'])}, CPU seconds per round {fmt(r['cpu-per-round-s'], '.2f')}, "
                f"peak RSS {r['peak-rss-mb']:.0f} MB over {r['peak-procs']} "
                f"processes{state} ({load()})")
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
    say(f"summary: scale {small} -> {big} clients on {nodes} nodes ({sampled} sampled): " + "; ".join(parts)
        + f" (goal: each <= 1.5) ({load()})")
    return res
