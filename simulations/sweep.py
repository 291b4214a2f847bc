"""Sweeps: ``python -m simulations.sweep SWEEP.yaml [--check] [--local [--jobs N]] [--resume]`` (docs/sweeps.md).

Expands the YAML (``base:``, ``grid:``, optional ``methods:``) into runs and validates
every one (keys, data, partitions) before the first starts, so a bad sweep fails in
seconds. Runs go through ``flwr run`` against a SuperLink and one Ray instance that the
sweep owns, or in-process with ``--local`` (``simulations/local.py``). A run's status is
read from the SuperLink because ``flwr run`` exits 0 even for a failed run; a failed run
is reported and the others go on. At the end: ``results.csv`` and the report
(``simulations/report.py``). SIGTERM or Ctrl-C stops every process the sweep started;
the run that was going is marked ``stopped`` in its ``status.json``, and ``--resume``
continues the sweep: completed runs are kept, stopped ones resume from their checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import yaml
from tqdm import tqdm

from common import safe_yaml
from common.keys import ConfigError, shown
from common.outputs import check_run_folder
from simulations.config import RENAMED, defaults, resolve
from simulations import parallel, tuning
from simulations.provenance import FEDERATION, write_launch
from simulations.report import report
from simulations.results import collect, summary
from simulations.superlink import simulation_superlink, stop_on_signals

# Federation (not run-config) keys a sweep may set; they go to --federation-config.
FEDERATION_KEYS = FEDERATION
FEDERATION_DEFAULTS = {"num-supernodes": 10, "client-resources-num-cpus": 1, "client-resources-num-gpus": 0.0}
# A sweep's runs keep frozen-backbone features in <out-dir>/feature-cache unless the YAML sets
# feature-cache (`""`: off), so runs in other processes (--jobs, --resume, Ray) extract them once.
FEATURE_CACHE = "feature-cache"


class SweepError(ValueError):
    """A sweep file that cannot be run as written."""


def _as_list(path: Path, where: str, key: str, values) -> list:
    if not isinstance(values, list) or not values:
        raise SweepError(f"{path}: {where} key '{key}' must be a non-empty list, got {shown(values)}")
    return values


def load_sweep(path: Path) -> tuple[dict, dict, dict]:
    """Read and check the YAML's shape: ``base`` mapping, ``grid`` of non-empty lists,
    ``methods`` of method -> {key: value or list} (that method's own grid)."""
    if not path.exists():
        raise SweepError(f"sweep file {path} not found")
    try:
        spec = safe_yaml.load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise SweepError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(spec, dict) or set(spec) - {"base", "grid", "methods", "tune"}:
        raise SweepError(f"{path}: top level must be a mapping with 'base:', 'grid:', 'methods:' and 'tune:' only")
    base, grid, methods = spec.get("base") or {}, spec.get("grid") or {}, spec.get("methods") or {}
    if not all(isinstance(part, dict) for part in (base, grid, methods)):
        raise SweepError(f"{path}: 'base', 'grid' and 'methods' must be mappings of key: value")
    for key, values in grid.items():
        _as_list(path, "grid", key, values)
    own = {}
    for method, keys in methods.items():
        keys = keys or {}
        if not isinstance(keys, dict):
            raise SweepError(f"{path}: methods: {method} must be a mapping of key: value or list, got {shown(keys)}")
        both = sorted(set(keys) & set(grid))
        if both:
            raise SweepError(f"{path}: key(s) {both} are in grid: and in methods: {method}: set each in one place")
        if "method" in keys:
            raise SweepError(f"{path}: methods: {method} cannot set 'method'")
        own[method] = {k: _as_list(path, f"methods: {method}", k, v if isinstance(v, list) else [v])
                       for k, v in keys.items()}
    if own and "method" not in grid:
        grid = {"method": list(own), **grid}  # the methods: block names the methods to run
    extra = sorted(set(own) - set(grid.get("method", [])))
    if extra:
        raise SweepError(f"{path}: methods: names {extra}, which grid: method does not list "
                         f"({grid.get('method')}): add them there")
    return base, grid, own


def points(grid: dict, own: dict) -> list[dict]:
    """Every grid combination, times the methods: block's grid of that run's method
    (its keys follow ``method``, in order)."""
    out = []
    for values in itertools.product(*grid.values()):
        point = dict(zip(grid, values))
        mine = own.get(point.get("method"), {})
        for more in itertools.product(*mine.values()):
            row = {}
            for key, value in point.items():
                row[key] = value
                if key == "method":
                    row.update(zip(mine, more))
            out.append(row)
    return out


def expand(base: dict, grid: dict, own: dict | None = None, resume: bool = False) -> list[tuple[dict, dict, str]]:
    """All combinations as (run config, federation config, run name), validated; with
    ``resume``, a run whose folder holds a run continues it (``resume_plan``)."""
    known = set(defaults()) | set(FEDERATION_KEYS) | set(RENAMED)  # a renamed key: resolve names the new one
    unknown = sorted((set(base) | set(grid) | {k for keys in own.values() for k in keys}) - known)
    if unknown:
        raise SweepError(f"unknown key(s) {unknown}: use run-config keys or {list(FEDERATION_KEYS)}")
    runs, names, errors = [], set(), {}
    for point in points(grid, own):
        combo = {**base, **point}
        fed = {**FEDERATION_DEFAULTS, **{k: combo.pop(k) for k in FEDERATION_KEYS if k in combo}}
        fixed = tuning.fixed_keys(own, point.get("method"))  # not in the name
        name = "_".join(f"{k}-{v}" for k, v in point.items() if k not in fixed) or "run"
        name = re.sub(r"[^A-Za-z0-9._=-]+", "-", name)
        if len(name) > 128:  # a run folder's limit (searched floats are long): a stable hash keeps it unique
            name = f"{name[:111]}-{hashlib.sha256(name.encode()).hexdigest()[:16]}"
        if name in names:
            raise SweepError(f"grid gives two runs named '{name}': remove duplicate values")
        names.add(name)
        try:
            cfg = resolve({**combo, "run-name": name})
            if resume:
                resume_plan(cfg)
            if not cfg.get("skip"):
                check_run_folder(cfg)
        except ConfigError as err:
            errors.setdefault(str(err), []).append(name)
            continue
        if int(fed["num-supernodes"]) < int(cfg["min-train-nodes"]):
            errors.setdefault(f"num-supernodes {fed['num-supernodes']} < min-train-nodes {cfg['min-train-nodes']}: "
                              "the server would wait forever", []).append(name)
        runs.append((cfg, fed, name))
    raise_all(errors)
    return runs


def raise_all(errors: dict[str, list[str]]) -> None:
    """Every problem found at once: one line per distinct message, naming its runs."""
    if errors:
        raise SweepError("\n".join(f"run '{names[0]}'" + (f" (and {len(names) - 1} more)" if len(names) > 1 else "")
                                   + f": {message}" for message, names in errors.items()))


STATUS = "status.json"  # the sweep's record of a run: completed, failed or stopped


def resume_plan(cfg: dict) -> None:
    """``--resume``: a run folder the sweep completed is kept (``cfg["skip"]``), one with
    a checkpoint resumes from it, one without restarts (``overwrite``)."""
    folder = Path(cfg["out-dir"]) / cfg["run-name"]
    status = json.loads((folder / STATUS).read_text()).get("status") if (folder / STATUS).exists() else None
    if status == "finished:completed":
        cfg["skip"] = True
    elif (folder / "checkpoint.pt").exists():
        cfg["resume"] = True
    elif (folder / "metrics.csv").exists() or (folder / "config.json").exists():
        cfg["overwrite"] = True


def write_status(folder: Path, status: str, details: str = "", seconds: float = 0.0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STATUS).write_text(json.dumps({"status": status, "details": details, "seconds": round(seconds, 1),
                                             "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=1))


def check_data(runs: list[tuple[dict, dict, str]]) -> None:
    """Load each dataset and partition it once per distinct setting: fail before running."""
    from datasets import DataError, load_for
    from datasets.partition import PartitionError, partition_for

    seen, errors = set(), {}
    for cfg, fed, name in runs:
        key = (cfg["dataset"], cfg["data-root"], cfg["image-size"], cfg["partitioner"], cfg["dirichlet-alpha"],
               cfg["classes-per-client"], cfg["seed"], fed["num-supernodes"], cfg["heldout-domain"],
               cfg["samples-per-client"], cfg["val-fraction"])
        if key in seen:
            continue
        seen.add(key)
        try:
            bundle = load_for(cfg)
            partition_for(cfg, bundle, int(fed["num-supernodes"]))
        except (DataError, PartitionError) as err:
            errors.setdefault(str(err), []).append(name)
    raise_all(errors)


@contextlib.contextmanager
def _console(quiet: bool):
    """With ``quiet``, Flower's console lines below WARNING are held back (the run's log
    file still gets them)."""
    from flwr.common.logger import console_handler

    level = console_handler.level
    if quiet:
        console_handler.setLevel(logging.WARNING)
    try:
        yield
    finally:
        console_handler.setLevel(level)


def each_run(runs: list[tuple[dict, dict, str]], out: Path, args,
             slots: parallel.Slots | None = None) -> Iterator[tuple[str, str, str, float]]:
    """Run every run; yield (name, status, failure reason, seconds) as each one ends.
    ``--local``: in this process one after another, or on ``slots`` (``--jobs``)."""
    for _, fed, name in runs:
        write_launch(out / name, fed)  # the run's federation and commit, for its provenance
    if args.local:  # in-process (simulations/local.py)
        from simulations.local import run_logged

        # torch threads = the client's CPUs, as Ray sets OMP_NUM_THREADS in a client's actor
        calls = [(cfg, int(fed["num-supernodes"]), out / name / "flwr.log", int(fed["client-resources-num-cpus"]))
                 for cfg, fed, name in runs]
        if slots is None:
            for i, ((_, _, name), call) in enumerate(zip(runs, calls), 1):
                if not args.quiet:
                    tqdm.write(f"[{i}/{len(runs)}] {name}")
                with _console(args.quiet):
                    result = run_logged(*call)
                yield (name, *result)
            return
        for i, result in slots.run(calls):  # each run in a process of its own
            yield (runs[i][2], *result)
        return
    with simulation_superlink(share_ray=not args.ray_per_run) as link:
        for i, (cfg, fed, name) in enumerate(runs, 1):
            if not args.quiet:
                tqdm.write(f"[{i}/{len(runs)}] {name}")
            t0 = time.perf_counter()
            record = link.run(cfg, out / name / "flwr.log", fed, echo=not args.quiet)
            yield (name, record.get("status", "unknown"), record.get("status-details", ""),
                   time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulations.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="sweep YAML with base:, grid: and methods:")
    parser.add_argument("--out-dir", type=Path, help="results folder (default: base out-dir, "
                        "else outputs/<sweep name>)")
    parser.add_argument("--check", action="store_true", help="validate the sweep and exit")
    parser.add_argument("--ray-per-run", action="store_true", help="start a private Ray instance in every run "
                        "(default: the sweep's runs share one, started once)")
    parser.add_argument("--local", action="store_true", help="run each run in-process on a LocalGrid, without "
                        "Ray or a SuperLink (simulations/local.py): same strategy, clients and results")
    parser.add_argument("--jobs", type=int, default=1, help="with --local: runs at a time, each in its own process "
                        "(default 1); a tune: block searches its settings at once, N runs in all")
    parser.add_argument("--quiet", action="store_true", help="the terminal shows the progress bar and one line "
                        "per run only; each run's log stays in <run>/flwr.log")
    parser.add_argument("--resume", action="store_true", help="continue a stopped sweep in its out-dir: keep "
                        "completed runs, resume stopped ones from their checkpoint")
    args = parser.parse_args(argv)
    if args.jobs < 1 or (args.jobs > 1 and not args.local):
        parser.error("--jobs takes a number >= 1 and needs --local (the Ray engine runs one run at a time)")
    try:
        base, grid, own = load_sweep(args.sweep)
        out = (args.out_dir or Path(base.get("out-dir") or Path("outputs") / args.sweep.stem)).expanduser().resolve()
        base["out-dir"] = str(out)
        base.setdefault("feature-cache", FEATURE_CACHE)  # the runs' processes share backbone features
        search = tuning.load(args.sweep, base, grid, own, expand, points)  # the tune: block, checked
        runs = search.check() if search else expand(base, grid, own, resume=args.resume)
        check_data(runs)
    except (SweepError, tuning.TuneError) as err:
        print("\n".join(f"error: {line}" for line in str(err).splitlines()), file=sys.stderr)
        return 2
    tuned = sum(1 for s in search.settings if search.cap(s)) if search else 0
    rest = f" ({len(search.settings) - tuned} more untuned: defaults or a followed choice)" \
        if search and len(search.settings) > tuned else ""
    print(f"{len(runs)} run(s) -> {out}" if not search else f"tuning {tuned} setting(s){rest}, budget "
          f"{search.tune['budget']} trial(s) x {len(search.tune['seeds'])} tuning seed(s), then the chosen "
          f"configurations x {len(search.eval_seeds)} evaluation seed(s) -> {out}", flush=True)
    if args.check:
        return 0
    out.mkdir(parents=True, exist_ok=True)
    stop_on_signals()
    failed, pending, lock = [], set(), threading.Lock()
    slots = parallel.Slots(args.jobs) if args.local and args.jobs > 1 else None
    if slots:
        print(f"{args.jobs} runs at a time", flush=True)
    # with --jobs, one bar for the whole sweep (the settings' searches add their runs to it)
    shared = tqdm(total=0, desc="sweep", unit="run", dynamic_ncols=True) if slots else None

    @contextlib.contextmanager
    def progress(count: int):
        if shared is None:
            with tqdm(total=count, desc="sweep", unit="run", dynamic_ncols=True) as bar:  # with an ETA
                yield bar
            return
        with lock:
            shared.total += count
            shared.refresh()
        yield shared

    def run_all(todo):
        todo = [r for r in todo if not r[0].pop("skip", False)]  # --resume: completed runs are kept
        pending.update(name for _, _, name in todo)
        with progress(len(todo)) as bar:
            for name, status, details, seconds in each_run(todo, out, args, slots):
                with lock:  # several settings' searches may report at once (--jobs)
                    pending.discard(name)
                    write_status(out / name, status, details, seconds)
                    bar.write(f"    {name}: {status} in {seconds:.1f}s")
                    if status != "finished:completed":
                        failed.append(name)
                        bar.write(f"    run failed: {details} (log: {out / name / 'flwr.log'})", file=sys.stderr)
                    bar.update()
                yield name, status, details, seconds

    try:
        if search:  # the search, then the chosen configurations (simulations/tuning.py)
            try:
                dirs, _ = search.run(out, run_all, slots)
            except tuning.TuneError as err:
                print(f"error: {err}", file=sys.stderr)
                return 1
        else:
            kept = sum(1 for r in runs if r[0].get("skip"))
            if kept:
                print(f"--resume: {kept} completed run(s) kept", flush=True)
            for _ in run_all(runs):
                pass
            dirs = [out / name for _, _, name in runs]
    except BaseException as err:
        if slots:  # end every run's process, start no more
            slots.stop()
        if not isinstance(err, KeyboardInterrupt):
            raise
        for name in pending:
            if (out / name / "config.json").exists():  # started: stopped midway
                write_status(out / name, "stopped", str(err) or "interrupted")
        print(f"stopped ({err or 'interrupted'}): every process of the sweep ended; continue with "
              f"python -m simulations.sweep {args.sweep} --resume" + (f" --out-dir {out}" if args.out_dir else ""),
              file=sys.stderr)
        return 130
    finally:
        if slots:
            shared.close()
            slots.close()
    keys = list(dict.fromkeys([*grid, *(k for keys in own.values() for k in keys)]))
    frame = collect(dirs, out)
    if search:
        frame = search.label(frame, out)
    if not frame.empty:
        print(summary(frame, ["run-name", *keys]).to_string(index=False))
    print(f"results: {out / 'results.csv'}")
    if not frame.empty:
        try:
            print(f"report: {report(out)['report']}")
        except Exception as err:  # the runs' results stay; the report can be rerun on them
            print(f"no report ({type(err).__name__}: {err}): rerun python -m simulations.report {out}",
                  file=sys.stderr)
    if failed:
        # a lost task heartbeat included: --resume runs them again (from a checkpoint where one was written)
        print(f"error: {len(failed)} run(s) failed: {failed}; run them again with python -m simulations.sweep "
              f"{args.sweep} --resume" + (f" --out-dir {out}" if args.out_dir else ""), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
