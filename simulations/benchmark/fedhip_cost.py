"""``fedhip-cost``: FedHiP's CPU seconds and bytes against FedAvg fine-tuning the same
backbone; Gram GFLOP/s against a GEMM.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from common.threads import torch_threads

from .timing import load, say


# ---- fedhip-cost -----------------------------------------------------------------------
def gram_gflops(n: int, d: int, num_classes: int, repeats: int = 7, threads: int = 1) -> dict:
    """GFLOP/s of ``clients.fedhip.statistics`` (XᵀX, XᵀY, counts, from float32 features)
    vs a plain float64 GEMM of the Gram's shape ([d, n] @ [n, d]): same process, same
    input, ``threads`` torch threads (1, as in a Ray worker), the two timed in alternation
    (best of ``repeats`` each) so that the machine's load hits both alike."""
    import torch

    from clients.fedhip import statistics as fedhip_statistics

    with torch_threads(threads):
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
    t_gram, t_gemm = min(times["gram"]), min(times["gemm"])
    return {"n": n, "d": d, "threads": threads, "gram-s": t_gram, "gemm-s": t_gemm,
            "gram-gflops": flops / t_gram / 1e9, "gemm-gflops": flops / t_gemm / 1e9}


def reach(rows, target: float) -> dict | None:
    """Cumulative round seconds, uplink and up + down bytes up to the first round with
    accuracy >= target; None when no round reaches it."""
    rows = rows[rows["round"] >= 1].sort_values("round")
    hit = rows[rows["accuracy"] >= target - 1e-12]
    if hit.empty:
        return None
    upto = rows[rows["round"] <= int(hit["round"].iloc[0])]
    return {"round": int(hit["round"].iloc[0]), "seconds": float(upto["round-seconds"].sum()),
            "uplink-bytes": float(upto["uplink-bytes"].sum()),
            "bytes": float(upto["uplink-bytes"].sum() + upto["downlink-bytes"].sum()),
            "accuracy": float(hit["accuracy"].iloc[0])}


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
    tuned = {"lr": args.lr} if args.lr else {}  # the fine-tuning lr (the page runs several)
    avg = local_cost({**common, "method": "fedavg", "model": f"pretrained:tf_efficientnet_lite0@{size}",
                      "num-server-rounds": rounds, "local-epochs": 1, **tuned}, clients, out, "fedavg-finetune")
    say(f"  fedavg fine-tune: {avg['cpu']:.1f} CPU s, {avg['bytes'] / 1e6:.1f} MB ({load()})")
    h, a = hip["rows"].iloc[-1], avg["rows"].iloc[-1]
    res = {"clients": clients, "rounds": rounds, "fedavg-lr": float(avg["rows"]["lr"].iloc[-1]),
           "fedhip-accuracy": float(h["accuracy"]), "fedhip-personalized-accuracy": float(h["personalized-accuracy"]),
           "fedhip-cpu-s": hip["cpu"], "fedhip-bytes": hip["bytes"], "fedhip-uplink-bytes": hip["uplink"],
           "fedhip-round-s": float(h["round-seconds"]),
           "fedavg-best-accuracy": float(avg["rows"]["accuracy"].max()),
           "fedavg-personalized-accuracy": float(a["personalized-accuracy"]),
           "fedavg-val-accuracy": float(a.get("val-accuracy", float("nan"))),  # to choose between lrs
           "fedavg-cpu-s": avg["cpu"], "fedavg-bytes": avg["bytes"],
           "fedavg-cpu-s-per-round": avg["cpu"] / rounds, "fedavg-bytes-per-round": avg["bytes"] / rounds,
           "fedavg-to-best": {"uplink-bytes": avg["uplink"], "rounds": rounds},
           "compute-reduction": 1 - hip["cpu"] / avg["cpu"], "communication-reduction": 1 - hip["bytes"] / avg["bytes"],
           "load": os.getloadavg()[0]}
    # The paper's claim is at equal accuracy: fine-tuning's cost up to the first round whose
    # global accuracy reaches FedHiP's; its CPU seconds are the run's, shared out by round time.
    # Not reached within the cap: the reductions above are lower bounds.
    hit = reach(avg["rows"], float(h["accuracy"]))
    if hit is None:
        res["fedavg-to-fedhip"] = {"reached": False, "round-cap": rounds}
    else:
        cpu = avg["cpu"] * hit["seconds"] / float(avg["rows"]["round-seconds"].sum())
        res["fedavg-to-fedhip"] = {"reached": True, **hit, "cpu-s": cpu, "compute-reduction": 1 - hip["cpu"] / cpu,
                                   "communication-reduction": 1 - hip["bytes"] / hit["bytes"]}
    # The Gram's shape: the largest client's local train split x the backbone's feature width.
    from datasets import load_dataset
    from models.features import extractor, feature_key
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
        f"communication {-100 * res['communication-reduction']:+.0f}%; {_matched(res['fedavg-to-fedhip'])}; Gram {g['gram-gflops']:.1f} vs GEMM "
        f"{g['gemm-gflops']:.1f} GFLOP/s ({load()})")
    return res


def _matched(hit: dict) -> str:
    if not hit["reached"]:
        return f"FedHiP's accuracy not reached in {hit['round-cap']} round(s) (reductions are lower bounds)"
    return (f"FedHiP's accuracy reached at round {hit['round']}: compute {-100 * hit['compute-reduction']:+.0f}%, "
            f"communication {-100 * hit['communication-reduction']:+.0f}% there")
