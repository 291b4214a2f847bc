"""The attack round's kept trained model: read back, it gives the very updates a fresh
training gives; it is shared by cells that differ only in the attack; a file that does not
fit stops with one line."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from simulations.attack_round import (TrainedModelError, client_updates, load_trained, trained_identity,
                                      trained_path)
from simulations.config import resolve

torch.set_num_threads(1)


def _cfg(**over):
    return resolve({"method": "gifd", "attack-round": "2", "num-server-rounds": 2, "local-epochs": 1,
                    "samples-per-client": 40, "partitioner": "draw", **over})


def _gradients(items):
    return [{k: v.numpy().copy() for k, v in content["gradient"].to_torch_state_dict().items()}
            for _, content, _ in items]


def test_a_kept_model_gives_the_same_updates_and_is_shared_across_attack_settings(tmp_path):
    cfg = _cfg()
    fresh, items = client_updates(cfg, 2, 2)
    kept, kept_items = client_updates(cfg, 2, 2, tmp_path)  # trains, then writes the file
    files = list(tmp_path.glob("round1-*.safetensors"))
    assert len(files) == 1
    again, again_items = client_updates({**cfg, "attack-budget": 7}, 2, 2, tmp_path)  # reads it back
    assert list(tmp_path.glob("*.safetensors")) == files
    sent = fresh.sent.to_torch_state_dict()
    for other in (kept, again):
        state = other.sent.to_torch_state_dict()
        assert list(state) == list(sent) and all(torch.equal(state[k], sent[k]) for k in sent)
    for a, b in ((_gradients(items), _gradients(kept_items)), (_gradients(items), _gradients(again_items))):
        assert all((x[k] == y[k]).all() for x, y in zip(a, b) for k in x)
    for (_, _, t1), (_, _, t2) in zip(items, again_items):
        assert torch.equal(t1["images"], t2["images"]) and torch.equal(t1["labels"], t2["labels"])
    shifted = {k: v + 1 if v.is_floating_point() else v for k, v in sent.items()}
    save_file(shifted, str(files[0]))  # the file, not a retraining, is what a later cell attacks
    read, _ = client_updates(cfg, 2, 2, tmp_path)
    assert all(torch.equal(read.sent.to_torch_state_dict()[k], shifted[k]) for k in sent)


def test_the_identity_ignores_the_attack_and_paths_but_not_training():
    cfg = _cfg()
    key = trained_path("t", trained_identity(cfg, 8, 9))
    for same in ({"attack-batch-size": 8, "attack-budget": 1000, "gifd-radii": "inf,inf,inf,inf", "defense": "noise",
                  "attack-device": "cuda", "out-dir": "elsewhere", "attack-round": "10"}, {}):
        assert trained_path("t", trained_identity({**cfg, **same}, 8, 9)) == key
    for other in ({"lr": 0.5}, {"seed": 3}, {"model": "resnet18"}, {"batch-size": 8}):
        assert trained_path("t", trained_identity({**cfg, **other}, 8, 9)) != key
    assert trained_path("t", trained_identity(cfg, 4, 9)) != key  # another federation
    assert trained_path("t", trained_identity(cfg, 8, 4)) != key  # another number of rounds


def test_a_file_that_does_not_fit_the_model_stops_with_one_line(tmp_path):
    like = {"w": torch.zeros(2, 3), "b": torch.zeros(3)}
    cases = {"shape": {"w": torch.zeros(3, 2), "b": torch.zeros(3)},
             "names": {"w": torch.zeros(2, 3)},
             "nan": {"w": torch.full((2, 3), float("nan")), "b": torch.zeros(3)},
             "dtype": {"w": torch.zeros(2, 3, dtype=torch.float64), "b": torch.zeros(3)}}
    for name, state in cases.items():
        save_file(state, str(tmp_path / f"{name}.safetensors"))
        with pytest.raises(TrainedModelError, match="does not hold this model's weights"):
            load_trained(tmp_path / f"{name}.safetensors", like)
    (tmp_path / "junk.safetensors").write_bytes(b"\x80\x04pickle, not safetensors")
    with pytest.raises(TrainedModelError, match="not a readable safetensors file"):
        load_trained(tmp_path / "junk.safetensors", like)
    save_file({"b": torch.ones(3), "w": torch.ones(2, 3)}, str(tmp_path / "ok.safetensors"))
    assert list(load_trained(tmp_path / "ok.safetensors", like)) == ["w", "b"]  # the model's order


def test_the_benchmark_at_a_later_round_records_the_model_accuracy_and_trains_once(tmp_path):
    import pandas as pd

    from studies.gifd_benchmark import main

    common = ["--attacks", "idlg", "--round", "2", "--clients", "2", "--trained-dir", str(tmp_path / "trained"),
              "--set", "attack-num-images=2", "local-epochs=1", "samples-per-client=40", "partitioner=draw"]
    assert main(["--out-dir", str(tmp_path / "a"), "--budgets", "2", *common]) == 0
    assert main(["--out-dir", str(tmp_path / "b"), "--budgets", "3", *common]) == 0
    assert len(list((tmp_path / "trained").glob("round1-*.safetensors"))) == 1  # the second call read it
    a, b = (pd.read_csv(tmp_path / d / "benchmark.csv") for d in ("a", "b"))
    assert a["model-accuracy"].between(0, 1).all() and a["model-accuracy"].nunique() == 1
    assert b["model-accuracy"].iloc[0] == a["model-accuracy"].iloc[0]  # the same attacked model
    assert "attacked model's test accuracy" in (tmp_path / "a" / "summary.md").read_text()
