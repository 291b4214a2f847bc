"""Benchmarks: ``python -m simulations.benchmark NAME [--quick] [--out-dir DIR]``.

``overhead`` (Flower's simulation against a plain PyTorch loop doing the same client
work), ``scale`` (100 and 1,000 virtual clients: time and memory), ``fedhip-cost``
(FedHiP's CPU seconds and bytes against FedAvg fine-tuning the same backbone) and
``gifd-cost`` (seconds per reconstructed image). Each prints its figures with the load average next to every timing, writes
``<out-dir>/<name>.json`` and ends with one ``summary:`` line; ``--quick`` is the
smallest size, for the tests. docs/benchmarks.md says what the figures mean.
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

BENCHMARKS = ("overhead", "scale", "fedhip-cost", "gifd-cost")


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
def bench_scale(args) -> dict:
    from simulations.superlink import LocalSuperLink

    sizes = [10, 100] if args.quick else [int(s) for s in (args.sizes or "100,1000").split(",")]
    rounds = 2 if args.quick else (args.rounds or 3)
    out = args.out_dir / "scale"
    res = {"rounds": rounds, "sizes": {}}
    say(f"scale: FedAvg on MNIST (iid), {sizes} virtual clients, 10% sampled per round, {rounds} rounds ({load()})")
    for n in sizes:
        overrides = {"method": "fedavg", "dataset": "mnist", "partitioner": "iid", "local-epochs": 1,
                     "num-server-rounds": rounds, "fraction-train": 0.1, "fraction-evaluate": 0.1,
                     "seed": 0, "checkpoint-every": 0}
        with LocalSuperLink() as link:  # a fresh SuperLink per size: its memory counts
            run = flower_run(link, overrides, {"num-supernodes": n}, out, f"clients-{n}", track_rss=True)
        rows = run["rows"]
        secs = rows.loc[rows["round"] >= 1, "round-seconds"].tolist()
        sampled = max(int(n * 0.1), 2)
        per_round = steady(secs)
        res["sizes"][n] = {"sampled": sampled, "round-seconds": secs, "round-s": per_round,
                           "s-per-sampled-client": per_round / sampled, "peak-rss-mb": run["peak_rss"] / 2**20,
                           "peak-procs": run["peak_procs"], "run-wall-s": run["wall"], "load": os.getloadavg()[0]}
        say(f"  {n} clients ({sampled} sampled): round seconds {fmt_list(secs)}, "
            f"{per_round / sampled * 1000:.0f} ms per sampled client, peak RSS {run['peak_rss'] / 2**20:.0f} MB "
            f"over {run['peak_procs']} processes, run {run['wall']:.1f} s ({load()})")
    small, big = (res["sizes"][s] for s in sizes[:2])
    time_ratio = big["round-s"] / small["round-s"]
    clients_ratio = big["sampled"] / small["sampled"]
    rss_ratio = big["peak-rss-mb"] / small["peak-rss-mb"]
    res.update({"time-ratio": time_ratio, "sampled-ratio": clients_ratio, "rss-ratio": rss_ratio})
    say(f"summary: scale {sizes[0]} -> {sizes[1]} clients: per-round {small['round-s']:.2f} -> {big['round-s']:.2f} s "
        f"(x{time_ratio:.1f} for x{clients_ratio:.0f} sampled clients; goal proportional), peak RSS "
        f"{small['peak-rss-mb']:.0f} -> {big['peak-rss-mb']:.0f} MB (x{rss_ratio:.2f}, goal <= 1.2) ({load()})")
    return res


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


RUNNERS = {"overhead": bench_overhead, "scale": bench_scale, "fedhip-cost": bench_fedhip_cost,
           "gifd-cost": bench_gifd_cost}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulations.benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=BENCHMARKS)
    parser.add_argument("--quick", action="store_true", help="smallest size (CI: checks that it runs)")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/benchmark"))
    parser.add_argument("--clients", type=int, help="overhead, fedhip-cost: number of clients")
    parser.add_argument("--rounds", type=int, help="overhead, scale, fedhip-cost: rounds (FedAvg)")
    parser.add_argument("--sizes", help="scale: comma list of client counts (default 100,1000)")
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
