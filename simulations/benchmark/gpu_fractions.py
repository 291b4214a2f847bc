"""``gpu-fractions``: Ray with per-client GPU fractions against in-process runs (needs a GPU;
``--dry-run-cpu`` checks it on the CPU).
"""

from __future__ import annotations

import json
import os
import statistics as stats
import sys
import threading
from pathlib import Path

from .timing import flower_run, fmt, fmt_list, load, plain_loop, say, steady


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
    if args.quick:  # checks that it runs: 256 drawn images per client, not MNIST split in two
        overrides.update({"partitioner": "draw", "samples-per-client": 256})
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
