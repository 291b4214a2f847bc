"""evaluate-every: the global model is evaluated at round 0, every N-th and the last round
only; the other rows keep their training columns, and training is unchanged."""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from common.keys import ConfigError
from simulations.config import main as check_config
from simulations.config import resolve
from simulations.local import run_local
from strategies.base import BaseStrategy

TINY = {"dataset": "digits", "num-server-rounds": 4, "local-epochs": 1, "partitioner": "draw",
        "samples-per-client": 30, "seed": 2}
SERVER = ["accuracy", "loss", "val-accuracy", "val-loss"]  # centralized evaluation (round 0 too)
EVALUATION = [*SERVER, "personalized-accuracy"]  # + federated evaluation (rounds >= 1)
TRAINING = ["train-loss", "uplink-bytes", "downlink-bytes", "uplink-bytes-total", "round-seconds", "failures"]


def run(out, name, **keys):
    cfg = resolve({**TINY, "out-dir": str(out), "run-name": name, **keys})
    run_dir = run_local(cfg, 2)
    model = torch.load(run_dir / "checkpoint.pt", weights_only=True)["arrays"]
    return pd.read_csv(run_dir / "metrics.csv").set_index("round"), model, run_dir


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same run evaluated every round (the default)."""
    return run(tmp_path_factory.mktemp("ref"), "every1")


def test_evaluated_rounds_only_and_training_unchanged(tmp_path, reference):
    every, model1, _ = reference
    sparse, model3, run_dir = run(tmp_path, "every3", **{"evaluate-every": 3})
    assert list(sparse.index) == [0, 1, 2, 3, 4]  # every round writes its row
    assert sparse.loc[[0, 3, 4], SERVER].notna().all().all()
    assert sparse.loc[[3, 4], EVALUATION].notna().all().all()
    assert sparse.loc[[1, 2], EVALUATION].isna().all().all()
    assert sparse.loc[[1, 2, 3, 4], TRAINING].notna().all().all()
    assert every.loc[[1, 2, 3, 4], EVALUATION].notna().all().all()  # evaluate-every=1: every row, as before
    # same seed: the same training, so the same models and the same metrics wherever both evaluated
    assert model1.keys() == model3.keys() and all(torch.equal(model1[k], model3[k]) for k in model1)
    assert sparse.loc[0, SERVER].tolist() == every.loc[0, SERVER].tolist()
    assert sparse.loc[[3, 4], EVALUATION].values.tolist() == every.loc[[3, 4], EVALUATION].values.tolist()
    for col in ("train-loss", "uplink-bytes-total", "downlink-bytes-total"):
        assert sparse[col].tolist()[1:] == every[col].tolist()[1:]
    clients = pd.read_csv(run_dir / "clients.csv")  # federated evaluation follows the schedule
    assert sorted(clients.dropna(subset=["local-accuracy"])["round"].unique()) == [3, 4]
    assert sorted(clients["round"].unique()) == [1, 2, 3, 4]


def test_resumed_run_keeps_the_schedule_and_its_last_round(tmp_path, monkeypatch, reference):
    """Stopped in round 3 (after round 2's checkpoint) and resumed with another
    evaluate-every (a resume may change it: training does not depend on it): the rows
    before the stop keep their schedule, the last round is evaluated, the model is the same."""
    every, model1, _ = reference
    train = BaseStrategy.configure_train

    def stop_in_round_3(self, server_round, *args):
        if server_round == 3:
            raise KeyboardInterrupt("stopped")
        return train(self, server_round, *args)

    monkeypatch.setattr(BaseStrategy, "configure_train", stop_in_round_3)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "cut", **{"evaluate-every": 2})
    monkeypatch.setattr(BaseStrategy, "configure_train", train)
    resumed, model, _ = run(tmp_path, "cut", **{"evaluate-every": 4, "resume": True})
    assert list(resumed.index) == [0, 1, 2, 3, 4]
    assert resumed.loc[[0, 2, 4], SERVER].notna().all().all()  # 2: before the stop (every 2)
    assert resumed.loc[[1, 3], EVALUATION].isna().all().all()
    assert all(torch.equal(model1[k], model[k]) for k in model1)
    assert resumed.loc[4, EVALUATION].tolist() == every.loc[4, EVALUATION].tolist()


def test_schedule_with_the_ood_suite_and_the_last_round():
    cfg = {"evaluate-every": 5, "num-server-rounds": 11, "corruptions": "gaussian_noise", "ood-datasets": "",
           "ood-eval-every": 2}
    rounds = [r for r in range(12) if BaseStrategy.evaluated(SimpleNamespace(cfg=cfg), r)]
    assert rounds == [0, 2, 4, 5, 6, 8, 10, 11]  # the OOD suite's rounds join the schedule
    cfg.update({"corruptions": ""})
    assert [r for r in range(12) if BaseStrategy.evaluated(SimpleNamespace(cfg=cfg), r)] == [0, 5, 10, 11]
    # the round count start() runs (FedHiP: 1) is the last round
    one = SimpleNamespace(cfg=cfg, last_round=1)
    assert BaseStrategy.evaluated(one, 1)


def test_evaluation_draws_no_random_number_training_would_see():
    """Building the model to evaluate draws its (discarded) initial weights from torch's
    global RNG: end_round runs it on a forked RNG, so the state after it is the state before."""
    from datasets import load_for

    cfg = resolve({k: v for k, v in TINY.items() if k != "num-server-rounds"})
    strategy = BaseStrategy(cfg, test_data=load_for(cfg))
    arrays = strategy.initial_arrays()
    torch.manual_seed(5)
    state = torch.get_rng_state()
    res = strategy.end_round(0, arrays)
    assert {"accuracy", "val-accuracy"} <= set(res.keys())  # it did evaluate
    assert torch.equal(torch.get_rng_state(), state)


def test_evaluate_every_below_one_is_one_line(capsys):
    with pytest.raises(ConfigError, match=r"^evaluate-every must be an integer >= 1, got 0$"):
        resolve({"evaluate-every": 0})
    assert check_config(["evaluate-every=0"]) == 2
    err = capsys.readouterr().err
    assert err == "error: bad run config: evaluate-every must be an integer >= 1, got 0\n"


def test_report_connects_curves_over_evaluated_rounds(tmp_path, monkeypatch):
    """Rows without evaluation metrics (NaN): the curves join the evaluated rounds, the
    final-round table reads the last round."""
    from matplotlib.axes import Axes

    from simulations.report import report

    rows = []
    for seed, every, accs in ((0, 3, [0.1, None, None, 0.6, 0.7]), (1, 2, [0.1, None, 0.3, None, 0.9])):
        name = f"fedavg-seed{seed}"
        cfg = {"method": "fedavg", "seed": seed, "num-server-rounds": 4, "evaluate-every": every, "run-name": name}
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(cfg))
        rows += [{**cfg, "round": r, "accuracy": a, "train-loss": 1.0 / (r + 1)} for r, a in enumerate(accs)]
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    drawn = []
    plot = Axes.plot
    monkeypatch.setattr(Axes, "plot", lambda ax, x, y, *a, **k: (drawn.append((list(x), list(y))), plot(ax, x, y, *a, **k))[1])
    report(tmp_path)
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert summary.loc[0, "accuracy-mean"] == pytest.approx(0.8) and summary.loc[0, "n"] == 2
    assert "evaluate-every" not in summary  # it changes no result: not a group key (one group here)
    (x, y), = drawn  # one line: the mean over the runs that evaluated each round, joined
    assert x == [0, 2, 3, 4] and y == pytest.approx([0.1, 0.3, 0.6, 0.8]) and not np.isnan(y).any()
