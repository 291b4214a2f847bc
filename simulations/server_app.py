"""ServerApp: resolve the run config, build the method's strategy, run it, write results."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from logging import ERROR, INFO, WARNING
from pathlib import Path

from flwr.app import ConfigRecord, Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from common import progress
from common.keys import ConfigError
from common.threads import torch_threads
from common.outputs import LAUNCHER_LOG, check_run_folder, feature_cache_dir, is_this_app, out_root
from datasets import DataError, load_for
from datasets.partition import PartitionError
from models import features
from simulations import client_state
from simulations.config import resolve, seed_everything
from simulations.methods import METHODS
from simulations.provenance import run_provenance
from simulations.partitions import MAX_DRAWN, write_for_run
from simulations.results import RunWriter

app = ServerApp()


class RunAborted(RuntimeError):
    """Stops the run so that the SuperLink marks it failed, with this one line as reason."""


class _NoTracebackForRunAborted(logging.Filter):
    """Flower logs a ServerApp's exception with its traceback ("ServerApp raised an
    exception"); for ``RunAborted`` the one line logged before it says everything, so
    that record is dropped and the user's console shows one line, no traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], RunAborted))


if not any(isinstance(f, _NoTracebackForRunAborted) for f in logging.getLogger("flwr").filters):
    logging.getLogger("flwr").addFilter(_NoTracebackForRunAborted())


def run_name(cfg: dict) -> str:
    return cfg["run-name"] or f"{cfg['method']}-{cfg['dataset']}-seed{cfg['seed']}-{time.strftime('%Y%m%d-%H%M%S')}"


@app.main()
def main(grid: Grid, context: Context) -> None:
    try:
        cfg = resolve(dict(context.run_config))
        cfg["run-name"] = run_name(cfg)
        check_run_folder(cfg)
        seed_everything(int(cfg["seed"]))
        data = load_for(cfg)
    except (ConfigError, DataError) as err:
        log(ERROR, "bad run config: %s", err)
        raise RunAborted(f"bad run config: {err}") from None

    run_dir = out_root(cfg) / cfg["run-name"]
    if cfg["overwrite"] and not cfg["resume"]:  # a replaced run must not start from the old checkpoint or client state
        (run_dir / "checkpoint.pt").unlink(missing_ok=True)
        shutil.rmtree(run_dir / client_state.FOLDER, ignore_errors=True)
    # The run's flwr.log is written here, unless the launcher of the SuperLink (a sweep, a
    # benchmark, the loopback deployment) keeps the run's whole console there.
    run_log = progress.RunLog(run_dir / "flwr.log", "a" if cfg["resume"] else "w",
                              active=not os.environ.get(LAUNCHER_LOG))
    with run_log, progress.Heartbeat(float(cfg["progress-every"])), \
            server_threads(int(cfg["server-threads"])) as threads:
        if not Path(cfg["out-dir"]).expanduser().is_absolute() and not is_this_app(Path.cwd()):
            log(WARNING, "out-dir %r is relative to the ServerApp's working folder %s (the folder its SuperLink "
                "started in), which is not this app's folder: pass an absolute out-dir to choose", cfg["out-dir"],
                Path.cwd())
        features.use_disk_cache(feature_cache_dir(cfg))
        try:
            run(grid, context, cfg, data, run_dir, threads, run_log)
        finally:  # the features this process computed, for the runs in other processes
            features.flush()
            features.use_disk_cache(None)


@contextlib.contextmanager
def server_threads(asked: int):
    """torch's threads for the server's own work (aggregation, evaluation, server phases):
    ``server-threads``, or 0 = the CPUs this process may use. Restored after the run."""
    n = asked or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    with torch_threads(n):
        yield n


def run(grid: Grid, context: Context, cfg: dict, data, run_dir: Path, threads: int, run_log: progress.RunLog) -> None:
    local = getattr(grid, "in_process", False)  # a LocalGrid: no Flower run id
    writer = RunWriter(run_dir, cfg, {**run_provenance(run_dir, "" if local else context.run_id),
                                      "server-torch-threads": threads})
    log(INFO, "%s on %s: results in %s (server: %d torch threads)", cfg["method"], cfg["dataset"], writer.dir,
        threads)

    def on_round(row: dict) -> None:
        if not writer.rows:  # the first row: the strategy has found the federation by now
            ids = strategy.node_ids
            nodes = len(ids) if ids is not None else len(list(grid.get_node_ids()))
            writer.config["num-supernodes"] = nodes
            population = strategy.num_partitions or nodes  # num-clients: the clients, not the nodes
            if cfg["partition-assignment"] == "server" and population <= 10 * MAX_DRAWN:  # the server knows the split
                write_for_run(cfg, data, population, run_dir / "partitions.png")
        writer.add_row(row, replayed=strategy.replaying)
        run_log.open()  # the run writes its folder now (a run refused at start changes no file)
        if row["round"] and not strategy.replaying:  # a replayed round's clients are in clients.csv already
            writer.add_clients(row["round"], strategy.take_clients())

    strategy = METHODS[cfg["method"]].strategy(cfg, test_data=data, on_round=on_round)
    # keys the method sets itself (an ablation's override): recorded as the run uses them
    writer.config.update({k: v for k, v in strategy.cfg.items() if k in cfg and v != cfg[k]})
    try:
        strategy.start(
            grid=grid,
            initial_arrays=strategy.initial_arrays(),
            num_rounds=int(cfg["num-server-rounds"]),
            timeout=float(cfg["round-timeout"]),
            train_config=ConfigRecord(),
            evaluate_config=ConfigRecord(),
        )
    except (PartitionError, FileNotFoundError, ValueError) as err:  # bad federation or resume request
        writer.finish("FAILED")
        log(ERROR, "cannot run: %s", err)
        raise RunAborted(f"cannot run: {err}") from None
    except BaseException as err:  # a crash, or the run stopped (KeyboardInterrupt, SystemExit)
        writer.finish("KILLED" if isinstance(err, (KeyboardInterrupt, SystemExit)) else "FAILED")
        raise
    writer.finish()
    log(INFO, "results written to %s", writer.dir)
