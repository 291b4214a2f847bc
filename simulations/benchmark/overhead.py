"""``overhead``: Flower's simulation against a plain PyTorch loop doing the same client work."""

from __future__ import annotations

import os
import statistics as stats
import time
from pathlib import Path

from .timing import (
    best,
    cold_one_thread,
    first,
    flower_run,
    fmt_list,
    load,
    plain_loop,
    say,
    steady,
)


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
    if args.quick:  # checks that it runs: 256 drawn images per client, not MNIST split in three
        overrides.update({"partitioner": "draw", "samples-per-client": 256})
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
