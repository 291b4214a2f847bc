"""Faults and resume, end to end through Flower's simulation engine."""

import threading
import time

import numpy as np
import pandas as pd
import torch

from simulations.config import resolve
from simulations.local import run_logged
from simulations.superlink import LocalSuperLink
from tests.conftest import run_sweep

METRICS = ["accuracy", "loss", "personalized-accuracy", "train-loss", "uplink-bytes", "failures"]


def test_crashing_nan_and_misshapen_clients_are_dropped_not_aggregated(tmp_path):
    base = {"num-server-rounds": 2, "num-supernodes": 4, "fault-rate": 0.5, "fault-kind": "mixed",
            "min-train-nodes": 1}
    code, frame, _ = run_sweep(tmp_path, base, {"seed": [3]})
    assert code == 0
    rounds = frame[frame["round"] > 0]
    assert rounds["failures"].sum() >= 1  # some clients failed ...
    assert np.isfinite(rounds["accuracy"]).all()  # ... and never poisoned the model
    assert rounds["accuracy"].iloc[-1] > 0.3
    # In-process (--local), the same seeded faults: a raising client becomes an error reply there too
    code, local, _ = run_sweep(tmp_path, base, {"seed": [3]}, "--local")
    assert code == 0
    np.testing.assert_array_equal(local["failures"].to_numpy(), frame["failures"].to_numpy())
    np.testing.assert_allclose(local[METRICS].to_numpy(float), frame[METRICS].to_numpy(float), rtol=1e-5)


def _checkpoint_round(path) -> int:
    try:
        return int(torch.load(path, weights_only=True)["round"])
    except Exception:  # not written yet, or being replaced
        return -1


def test_killed_run_resumes_to_the_same_final_metrics(tmp_path):
    out = tmp_path / "out"
    fed = {"num-supernodes": 2}
    base = {"num-server-rounds": 3, "out-dir": str(out), "seed": 5, "local-epochs": 1}
    (out / "full").mkdir(parents=True)
    (out / "cut").mkdir(parents=True)
    # The uninterrupted reference runs in process: LocalGrid gives Flower's metrics (the faults
    # test above and test_fedlsi check that), so only the cut and the resume need the engine.
    assert run_logged(resolve({**base, "run-name": "full"}), fed["num-supernodes"], out / "full" / "flwr.log")[0] \
        == "finished:completed"

    # Start the same run, kill the SuperLink (and the whole simulation) after round 1.
    link = LocalSuperLink().__enter__()
    job = threading.Thread(target=link.run, args=(resolve({**base, "run-name": "cut"}),
                                                  out / "cut" / "flwr.log", fed))
    job.start()
    deadline = time.monotonic() + 600
    while _checkpoint_round(out / "cut" / "checkpoint.pt") < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    link.__exit__()
    job.join(timeout=60)
    killed_at = _checkpoint_round(out / "cut" / "checkpoint.pt")
    assert 1 <= killed_at < 3, f"run was not cut between rounds 1 and 3 (checkpoint at {killed_at})"

    with LocalSuperLink() as link:
        record = link.run(resolve({**base, "run-name": "cut", "resume": True}), out / "cut" / "resume.log", fed)
    assert record["status"] == "finished:completed"
    full = pd.read_csv(out / "full" / "metrics.csv")
    cut = pd.read_csv(out / "cut" / "metrics.csv")
    assert list(cut["round"]) == [0, 1, 2, 3]
    pd.testing.assert_frame_equal(full[METRICS], cut[METRICS])


def test_bad_run_config_in_flwr_run_fails_the_run_with_one_line(tmp_path):
    """`flwr run` exits 0 here too; the SuperLink's record says failed, and why."""
    (tmp_path / "bad").mkdir()
    with LocalSuperLink() as link:
        record = link.run({"method": "fedmagic", "out-dir": str(tmp_path)}, tmp_path / "bad" / "flwr.log",
                          {"num-supernodes": 2})
    assert record["status"] == "finished:failed"
    text = (tmp_path / "bad" / "flwr.log").read_text()
    assert "unknown method 'fedmagic'" in text
    assert "Traceback" not in text and "raised an exception" not in text  # one line, no traceback
    # the SuperLink's own lines of this failed run stay beside its log (its home is removed)
    assert (tmp_path / "bad" / "superlink.log").stat().st_size > 0
