"""Benchmarks: ``python -m simulations.benchmark NAME [--quick] [--out-dir DIR [--overwrite]]``.

``overhead`` (Flower's simulation against a plain PyTorch loop doing the same client
work), ``scale`` (1,000 to 1,000,000 virtual clients on 10 nodes, 100 sampled per round,
in process and through Flower's engine: start-up, per-round time and memory), ``gpu-fractions`` (Ray with per-client GPU fractions
against in-process runs; needs a GPU, ``--dry-run-cpu`` checks it on the CPU),
``fedhip-cost`` (FedHiP's CPU seconds and bytes against FedAvg fine-tuning the same
backbone) and ``gifd-cost`` (seconds per reconstructed image). Each prints its figures
with the load average next to every timing, writes ``<out-dir>/<name>.json`` and ends
with one ``summary:`` line; ``--quick`` is the smallest size, for the tests.
docs/benchmarks.md says what the figures mean.

Each invocation writes a folder of its own, ``outputs/benchmark/<name>-<time>/``, so a
benchmark runs again without clean-up. An ``--out-dir`` that already holds this
benchmark's results is refused unless ``--overwrite`` (which replaces this benchmark's
own runs there, nothing else). SIGTERM or Ctrl-C stops every process it started.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

from common.outputs import RUN_FILES

# name -> "module:function" in this package, imported only for the benchmark that runs
RUNNERS = {"overhead": "overhead:bench_overhead", "scale": "scale:bench_scale",
           "gpu-fractions": "gpu_fractions:bench_gpu_fractions", "fedhip-cost": "fedhip_cost:bench_fedhip_cost",
           "gifd-cost": "gifd_cost:bench_gifd_cost"}
BENCHMARKS = tuple(RUNNERS)


def runner(name: str):
    module, function = RUNNERS[name].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), function)


def out_dir(name: str, given: Path | None, overwrite: bool) -> Path:
    """The folder this invocation writes: a new time-stamped one by default; ``given`` if
    it holds no results of this benchmark, or with ``overwrite`` (this benchmark's run
    folders in it are then removed first)."""
    if given is None:
        base = Path("outputs/benchmark").resolve() / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        out, k = base, 1
        while out.exists():
            k += 1
            out = base.with_name(f"{base.name}-{k}")
        out.mkdir(parents=True)
        return out
    out = given.expanduser().resolve()
    own = out / name  # where each benchmark writes its runs
    runs = [p for p in own.iterdir() if p.is_dir() and any((p / f).exists() for f in RUN_FILES)] \
        if own.is_dir() else []
    if (out / f"{name}.json").exists() or runs:
        if not overwrite:
            raise FileExistsError(f"{out} already holds {name} results: pass --overwrite to replace its runs, "
                                  "or another --out-dir (without --out-dir each invocation gets a new folder)")
        for run in runs:
            shutil.rmtree(run)
    out.mkdir(parents=True, exist_ok=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulations.benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=BENCHMARKS)
    parser.add_argument("--quick", action="store_true", help="smallest size (CI: checks that it runs)")
    parser.add_argument("--out-dir", type=Path, help="results folder (default: a new "
                        "outputs/benchmark/<name>-<time>/)")
    parser.add_argument("--overwrite", action="store_true", help="replace this benchmark's runs in --out-dir")
    parser.add_argument("--clients", type=int, help="overhead, gpu-fractions, fedhip-cost: number of clients")
    parser.add_argument("--rounds", type=int, help="overhead, scale, gpu-fractions, fedhip-cost: rounds (FedAvg)")
    parser.add_argument("--lr", type=float, help="fedhip-cost: FedAvg fine-tuning's lr (default: the lr key's)")
    parser.add_argument("--sizes", help="scale: comma list of client counts (default 1000,10000,100000,1000000)")
    parser.add_argument("--nodes", type=int, help="scale: nodes (SuperNodes) serving the clients (default 10)")
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
    try:
        args.out_dir = out_dir(args.name, args.out_dir, args.overwrite)
    except FileExistsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from simulations.superlink import stop_on_signals

    stop_on_signals()
    res = runner(args.name)(args)
    (args.out_dir / f"{args.name}.json").write_text(json.dumps(res, indent=2, default=str))
    return 0
