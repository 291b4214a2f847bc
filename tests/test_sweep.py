"""Sweeps: bad sweep files fail in seconds; an end-to-end run through Flower's engine;
the README's main command."""

import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from simulations.sweep import main
from tests.conftest import run_sweep


@pytest.fixture(scope="module")
def warm_imports():
    """Time the checks, not the first import of torch/Flower or the mnist file."""
    from datasets import load_dataset
    from simulations.config import resolve

    resolve({})
    load_dataset("mnist")


@pytest.mark.parametrize(
    "text, message",
    [
        ("base: [1, 2\n", "not valid YAML"),
        ("- just\n- a list\n", "top level must be a mapping"),
        ("base: {}\ngrid: {method: fedavg}\n", "must be a non-empty list"),
        ("base: {learning-rate: 0.1}\n", "unknown key(s) ['learning-rate']"),
        ("grid: {method: [fedavg, fedzip]}\n", "unknown method 'fedzip'"),
        ("base: {dirichlet-alpha: -1}\n", "dirichlet-alpha must be > 0"),
        ("base: {alpha: 0.3}\n", "renamed: pass dirichlet-alpha=0.3"),
        ("base: {num-supernodes: 5000}\n", "5000 partitions but only 3600 samples"),
        ("base: {num-supernodes: 1}\n", "min-train-nodes"),
        ("base: {dataset: pacs, data-root: /nonexistent}\n", "data-root="),
        ("grid: {method: [fedavg, fedprox], lr: [0.1]}\nmethods: {fedprox: {lr: [0.2]}}\n", "in one place"),
        ("grid: {method: [fedavg]}\nmethods: {fedprox: {proximal-mu: 0.1}}\n", "add them there"),
        ("methods: {fedprox: {proximal-mu: []}}\n", "must be a non-empty list"),
        ("methods: {fedprox: {proximal-mu: -1}}\n", "proximal-mu must be >= 0"),
    ],
)
def test_bad_sweeps_fail_fast_with_one_line(tmp_path, capsys, warm_imports, text, message):
    spec = tmp_path / "s.yaml"
    spec.write_text(text)
    t0 = time.perf_counter()
    assert main([str(spec), "--out-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert time.perf_counter() - t0 < 2
    assert not (tmp_path / "out").exists()


def test_check_lists_every_problem_at_once(tmp_path, capsys, warm_imports):
    spec = tmp_path / "s.yaml"
    spec.write_text("grid: {method: [fedavg, fedzip], lr: [-1, 0.1]}\n")
    assert main([str(spec), "--check", "--out-dir", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("error: run '") for line in lines)
    assert "(and 1 more): lr must be > 0" in lines[0] and "unknown method 'fedzip'" in lines[1]


def test_missing_sweep_file(tmp_path, capsys):
    assert main([str(tmp_path / "nope.yaml")]) == 2
    assert "not found" in capsys.readouterr().err


def test_jobs_needs_local(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text("grid: {seed: [0, 1]}\n")
    with pytest.raises(SystemExit) as exit_:
        main([str(spec), "--jobs", "2"])
    assert exit_.value.code == 2 and "--jobs" in capsys.readouterr().err


def test_local_parallel_runs_report_a_failed_run_and_finish_the_other(tmp_path, capsys):
    """--local --jobs 2: two runs in two processes; the one asked to resume from a
    checkpoint that does not exist fails with its one-line reason, the other completes."""
    code, frame, out = run_sweep(tmp_path, {"num-server-rounds": 1, "num-supernodes": 2, "local-epochs": 1},
                                 {"resume": [False, True]}, "--local", "--jobs", "2")
    err = capsys.readouterr().err
    assert code == 1
    assert "1 run(s) failed: ['resume-True']; run them again with" in err and "no checkpoint" in err
    assert err.rstrip().endswith(f"--resume --out-dir {out}")
    assert list(frame["run-name"].unique()) == ["resume-False"] and frame["round"].max() == 1
    assert (out / "resume-False" / "flwr.log").read_text().count("results written") == 1


def test_methods_block_gives_each_method_its_own_grid_and_the_report_pairs_them(tmp_path, capsys):
    """A two-method grid with a per-method key: --check counts fedavg once and fedprox once
    per mu; a tiny in-process run of fedavg and fedprox(mu=0) ends with a report whose
    paired difference is 0 (mu=0 is FedAvg, same seed, same partitions)."""
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({
        "base": {"num-server-rounds": 1, "num-supernodes": 2, "local-epochs": 1, "seed": 3},
        "grid": {"method": ["fedavg", "fedprox"]}, "methods": {"fedprox": {"proximal-mu": [0.0, 0.5]}}}))
    assert main([str(spec), "--check", "--out-dir", str(tmp_path / "c")]) == 0
    assert "3 run(s)" in capsys.readouterr().out
    spec.write_text(spec.read_text().replace("- 0.5", ""))
    out = tmp_path / "out"
    assert main([str(spec), "--local", "--out-dir", str(out)]) == 0
    frame = pd.read_csv(out / "results.csv")
    assert sorted(frame["run-name"].unique()) == ["method-fedavg", "method-fedprox"]  # a single value names no run
    assert list(frame.groupby("method")["proximal-mu"].first()) == [0.01, 0.0]
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["method"]) == ["fedavg", "fedprox"] and list(summary["n"]) == [1, 1]
    paired = pd.read_csv(out / "paired.csv").set_index("metric")
    assert paired.loc["accuracy", "mean-diff"] == 0 and paired.loc["accuracy", "baseline"] == "fedavg"
    assert "## Paired differences against fedavg" in (out / "report.md").read_text()


def test_sweep_end_to_end_learns_and_is_reproducible(tmp_path):
    """FedAvg and FedProx(mu=0) through Flower/Ray, 3 clients x 2 rounds x 1 epoch, same seed.

    The two runs are separate simulations; with mu=0 FedProx is FedAvg, so equal rows
    prove that seeding, sampling and aggregation order are reproducible end to end.
    """
    code, frame, out = run_sweep(
        tmp_path,
        base={"dataset": "mnist", "num-server-rounds": 2, "num-supernodes": 3, "proximal-mu": 0.0,
              "seed": 7, "local-epochs": 1},
        grid={"method": ["fedavg", "fedprox"]},
    )
    assert code == 0
    assert len(frame) == 2 * 3  # rounds 0..2 for each run
    for col in ("accuracy", "loss", "personalized-accuracy", "personalized-accuracy-std", "round-seconds",
                "uplink-bytes", "downlink-bytes", "failures", "method", "seed", "dirichlet-alpha", "run-name"):
        assert col in frame.columns
    final = frame[frame["round"] == 2].set_index("method")
    assert (final["accuracy"] > 0.5).all()  # chance is 0.1
    assert (final["failures"] == 0).all() and (final["uplink-bytes"] > 0).all()
    metrics = ["accuracy", "loss", "personalized-accuracy", "train-loss"]
    a = frame[frame.method == "fedavg"][metrics].to_numpy()
    b = frame[frame.method == "fedprox"][metrics].to_numpy()
    np.testing.assert_array_equal(a, b)
    for run in ("method-fedavg", "method-fedprox"):
        assert {"config.json", "metrics.csv", "metrics.png", "flwr.log"} <= {p.name for p in (out / run).iterdir()}
    assert (out / "report-curves.png").exists() and not (out / "results.png").exists()


@pytest.mark.xdist_group("own-ray")  # a Ray head of its own: one such test at a time (conftest)
def test_readme_main_command_runs_with_a_bare_path(tmp_path):
    """`make run` (the README's first command) works without the venv on PATH, and keeps
    the run's log in the run's folder.

    `flwr run .` starts a background local SuperLink and reuses one that is already there;
    the ports named by Flower's FLWR_LOCAL_* variables give this test one of its own
    (README), which it stops at the end.
    """
    import psutil

    from simulations.superlink import free_port, stop_tree

    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "FLWR_HOME", "RAY_ADDRESS"))}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not p.startswith(str(root)))
    port = str(free_port())
    env.update(FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=port, FLWR_LOCAL_CONTROL_API_PORT=str(free_port()))
    out, make = tmp_path / "out", shutil.which("make")
    assert make, "make is needed for the README's commands"
    try:
        done = subprocess.run([make, "-s", "run", f"OUT={out}", f"FLWR_HOME={tmp_path / 'home'}",
                               "RUN_CONFIG=num-server-rounds=1 local-epochs=1 run-name='main' progress-every=2"],
                              cwd=root, env=env, capture_output=True, text=True, timeout=600)
    finally:
        for proc in psutil.process_iter(["cmdline"]):
            cmd = proc.info["cmdline"] or []
            if any("flower-superlink" in c for c in cmd) and port in cmd:  # the one this test started
                stop_tree(proc.pid)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = pd.read_csv(out / "main" / "metrics.csv")
    assert list(rows["round"]) == [0, 1]
    assert rows["loss"].iloc[1] < rows["loss"].iloc[0]  # one round of 10 clients x 1 epoch: a first step
    log = (out / "main" / "flwr.log").read_text()  # written by the ServerApp itself
    assert "[round 1/1]" in log and "results written to" in log
    assert "[progress] round 1: waiting for 10 training replies" in log  # the heartbeat
    assert "[progress] round 1: waiting for 10 training replies" in done.stdout  # on the terminal too
