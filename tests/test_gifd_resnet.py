"""GIFD on a batch-norm ResNet-18 with batches > 1, small budgets, and the radii calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from attacks.gifd import invert_gifd
from attacks.label_inference import infer_labels
from attacks.prior import GanPrior
from clients.base import ClientData
from clients.gifd import GROUND_TRUTH, GifdClient
from datasets import load_dataset
from models.generator import Generator, save_checkpoint
from simulations.config import resolve, seed_everything
from strategies.audit import strip_ground_truth
from strategies.gifd import GifdStrategy, attacker_view, run_attack, settings_of

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist")


@pytest.fixture(scope="module")
def prior(tmp_path_factory):
    """A random 28x28 generator whose label space is *not* the clients' (the gradient label map)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("gan") / "random-gan.pt"
    save_checkpoint(path, Generator(), "other", [str(i) for i in range(10)])
    return GanPrior.load(path)


def updates(mnist, classes, model="resnet18", **over):
    """One client update per tuple of ``classes`` (one image of each class, batch = its length)."""
    size = len(classes[0])
    cfg = resolve({"method": "gifd", "model": model, "attack-batch-size": size, "attack-num-images": size, **over})
    seed_everything(0)
    strategy = GifdStrategy(cfg, test_data=mnist)
    arrays = strategy.initial_arrays()
    config = dict(strategy.train_record(1, arrays, ConfigRecord({"server-round": 1}))["config"])
    items = []
    for pid, cls in enumerate(classes):
        idx = [int(np.flatnonzero(mnist.train_labels == c)[pid]) for c in cls]
        data = ClientData(pid, mnist.train.subset(idx), mnist.test.subset(range(4)), 10, (1, 28, 28))
        reply = GifdClient(cfg, data).train({"arrays": arrays.to_torch_state_dict()}, config, {})
        content = RecordDict({k: ArrayRecord(v) for k, v in reply.arrays.items()})
        items.append((pid, content, strip_ground_truth(content)))
    return strategy, items


def view(strategy, content, mnist):
    return attacker_view(content, strategy.sent, strategy.cfg["model"], 10, (1, 28, 28), mnist.mean, mnist.std,
                         strategy.announced())


def test_resnet18_batch_two_end_to_end_with_exact_labels(mnist, prior):
    strategy, items = updates(mnist, [(3, 7)])
    _, content, truth = items[0]
    inp = view(strategy, content, mnist)
    assert any("running_mean" in n for n in inp.buffers)  # the batch-norm network
    labels = infer_labels(inp)
    assert labels.tolist() == sorted(truth["labels"].tolist()) == [3, 7]
    res = invert_gifd(inp, labels, prior, budget=10, restarts=1, stages=2, label_map="identity")
    assert res.images.shape == (2, 1, 28, 28) and torch.isfinite(res.images).all()
    assert res.steps == 10 and res.grad_loss <= res.info["trace"][0]
    assert res.info["budget-used"] == {"latent": 5, "stage-1": 3, "stage-2": 2}


def test_a_budget_smaller_than_any_stage_ends_with_a_result(mnist, prior):
    """The reported failure: ResNet-18, batch 2, a label-inconsistent prior, a tiny budget."""
    strategy, items = updates(mnist, [(1, 8)], **{"attack-budget": 3, "attack-restarts": 1})
    inp = view(strategy, items[0][1], mnist)
    labels = infer_labels(inp)
    s = {**settings_of(strategy.cfg), "label-space": "fashion"}
    for name in ("gifd", "ggl", "idlg"):
        res = run_attack(name, inp, labels, prior, s, seed=0)
        assert res.images.shape == (2, 1, 28, 28) and res.steps <= 3, name
        assert sum(res.info["budget-used"].values()) == res.steps, name
    # the gradient label map would need 2 labels x 10 classes trials: it falls back to the model's map
    res = invert_gifd(inp, labels, prior, budget=3, restarts=1, label_space="fashion")
    assert "label-map" not in res.info["budget-used"] and res.steps == 3
    # two restarts of one evaluation each: no stage gets a step, still a result
    res = invert_gifd(inp, labels, prior, budget=1, restarts=2, label_map="identity")
    assert res.steps == 1 and math.isfinite(res.grad_loss) and res.images.shape == (2, 1, 28, 28)


def test_gradient_label_map_spends_at_most_a_quarter_of_the_budget(mnist, prior):
    strategy, items = updates(mnist, [(2,)], model="cnn")
    inp = view(strategy, items[0][1], mnist)
    res = invert_gifd(inp, infer_labels(inp), prior, budget=80, restarts=1, stages=1, label_space="fashion")
    assert res.info["budget-used"]["label-map"] == 20  # 10 classes x 2 samples <= 80 / 4
    assert sum(res.info["budget-used"].values()) == 80


def test_each_stage_starts_from_the_last_iterate_or_the_best(mnist, prior):
    strategy, items = updates(mnist, [(4,)], model="cnn")
    inp = view(strategy, items[0][1], mnist)
    labels = infer_labels(inp)
    last = invert_gifd(inp, labels, prior, budget=20, restarts=1, stages=2, label_map="identity")
    best = invert_gifd(inp, labels, prior, budget=20, restarts=1, stages=2, label_map="identity", stage_start="best")
    assert last.info["trace"][:10] == best.info["trace"][:10]  # the same latent stage
    assert last.info["trace"][10:] != best.info["trace"][10:]  # stage 1 starts elsewhere
    with pytest.raises(ValueError, match="stage start"):
        invert_gifd(inp, labels, prior, budget=4, stage_start="first")


def test_ggl_auto_population_gives_fifty_generations(mnist, prior):
    from attacks.ggl import auto_population, invert_ggl

    assert [auto_population(b) for b in (50, 200, 1000, 5000)] == [2, 4, 20, 50]
    strategy, items = updates(mnist, [(5,)], model="cnn")
    inp = view(strategy, items[0][1], mnist)
    res = invert_ggl(inp, infer_labels(inp), prior, budget=100, population=0, label_map="identity")
    assert res.info["population"] == 2 and res.info["generations"] == 50 and res.steps == 100


def test_radii_calibration_never_reads_the_true_images(mnist, prior):
    from studies.calibrate_gifd_radii import calibrate

    strategy, items = updates(mnist, [(0,), (6,)], model="cnn")
    s = {**settings_of(strategy.cfg), "label-map": "identity", "stages": 2}
    poisoned = [(p, c, {"images": torch.rand_like(t["images"]), "labels": (t["labels"] + 1) % 10})
                for p, c, t in items]
    chosen, rows = calibrate(strategy, items, prior, s, [1.0, math.inf], budget=8)
    again, rows2 = calibrate(strategy, poisoned, prior, s, [1.0, math.inf], budget=8)
    assert chosen == again and [r["grad-loss"] for r in rows] == [r["grad-loss"] for r in rows2]
    assert chosen == min(rows, key=lambda r: r["grad-loss"])["radii"]
    assert GROUND_TRUTH not in items[0][1].array_records


def test_a_later_attack_round_attacks_a_model_trained_by_fedavg(mnist):
    from simulations.attack_round import client_updates

    cfg = resolve({"method": "gifd", "attack-round": "2", "num-server-rounds": 2, "local-epochs": 1})
    strategy, items = client_updates(cfg, 2, server_round=2)
    seed_everything(0)
    initial = GifdStrategy(cfg, test_data=mnist).initial_arrays().to_torch_state_dict()
    sent = strategy.sent.to_torch_state_dict()
    model = strategy.eval_model(strategy.sent).eval()
    x, y = mnist.test[torch.arange(200)]
    assert any(not torch.equal(initial[k], sent[k]) for k in sent)  # one FedAvg round trained it
    with torch.no_grad():
        assert (model(x.float()).argmax(1) == y).float().mean() > 0.5
    for _, content, truth in items:  # round 2 is the attacked one: one gradient and its truth
        assert set(content.array_records) == {"gradient"} and truth["images"].shape == (1, 1, 28, 28)
        assert infer_labels(view(strategy, content, mnist)).tolist() == truth["labels"].tolist()
    with pytest.raises(ValueError, match="not an attack round"):
        client_updates(cfg, 2, server_round=1)
