"""GIFD: l1 projection, label inference, metrics, defenses, ground-truth isolation, attacks, Flower."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.supercore.task_identity import TaskIdentity

from attacks.common import Matcher, grad_distance, simulate
from attacks.gifd import invert_gifd
from attacks.ig import invert_ig
from attacks.l1 import project_l1_ball
from attacks.label_inference import infer_labels
from attacks.metrics import label_accuracy, psnr, ssim
from attacks.prior import GanPrior
from clients.base import ClientData
from clients.gifd import GROUND_TRUTH, GifdClient, apply_defense
from datasets import load_dataset
from models.generator import Generator, save_checkpoint
from simulations.config import ConfigError, resolve, seed_everything
from strategies.audit import strip_ground_truth
from strategies.gifd import GifdStrategy, attacker_view

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _task_identity():
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = None


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist")


def cfg_of(**over):
    return resolve({"method": "gifd", **over})


def setup(mnist, n_clients=2, **over):
    """Strategy, sent arrays, and (partition, content, truth) replies of n clients."""
    cfg = cfg_of(**over)
    seed_everything(0)
    strategy = GifdStrategy(cfg, test_data=mnist)
    arrays = strategy.initial_arrays()
    config = dict(strategy.train_record(1, arrays, ConfigRecord({"server-round": 1}))["config"])
    out = []
    for pid in range(n_clients):
        idx = np.flatnonzero(mnist.train_labels == (3 * pid + 1) % 10)[:20]
        data = ClientData(pid, mnist.train.subset(idx), mnist.test.subset(range(4)), 10, (1, 28, 28))
        reply = GifdClient(cfg, data).train({"arrays": arrays.to_torch_state_dict()}, config, {})
        content = RecordDict({k: ArrayRecord(v) for k, v in reply.arrays.items()})
        content["metrics"] = MetricRecord(reply.metrics)
        out.append((pid, content))
    return strategy, arrays, out


def view(strategy, arrays, content, mnist):
    return attacker_view(content, arrays, "cnn", 10, (1, 28, 28), mnist.mean, mnist.std, strategy.announced())


def one_update(mnist):
    """One client's batch-1 update: the attacker's input, inferred labels, the true image's pixels."""
    strategy, arrays, replies = setup(mnist, 1)
    content = replies[0][1]
    truth = strip_ground_truth(content)
    inp = view(strategy, arrays, content, mnist)
    return inp, infer_labels(inp), inp.to_pixels(truth["images"])[0]


# ---- l1 ball --------------------------------------------------------------------------
def bisection_projection(v: torch.Tensor, r: float) -> torch.Tensor:
    """Brute force: soft-threshold with theta found by bisection on sum(max(|v|-theta, 0)) = r."""
    if v.abs().sum() <= r:
        return v.clone()
    lo, hi = 0.0, float(v.abs().max())
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if (v.abs() - mid).clamp(min=0).sum() > r else (lo, mid)
    return v.sign() * (v.abs() - hi).clamp(min=0)


def test_l1_projection_known_cases_ball_and_identity():
    out = project_l1_ball(torch.tensor([[3.0, 1.0], [1.0, 1.0], [0.2, -0.3], [-4.0, 0.0]]),
                          torch.tensor([2.0, 1.0, 1.0, 0.0]))
    torch.testing.assert_close(out, torch.tensor([[2.0, 0.0], [0.5, 0.5], [0.2, -0.3], [0.0, 0.0]]))
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(16, 3, 5, 5, generator=gen) * 3
    radius = torch.rand(16, generator=gen) * 360
    w = project_l1_ball(v, radius)
    assert (w.flatten(1).abs().sum(1) <= radius * (1 + 1e-5) + 1e-5).all()
    inside = v.flatten(1).abs().sum(1) <= radius
    assert inside.any() and (~inside).any()
    torch.testing.assert_close(w[inside], v[inside])
    for i in range(16):
        torch.testing.assert_close(w[i].flatten(), bisection_projection(v[i].flatten().double(), float(radius[i])).float(),
                                   atol=1e-4, rtol=1e-4)
    # optimality: no random point of the ball is closer to v
    for i in torch.nonzero(~inside).flatten()[:3]:
        d_best = (w[i] - v[i]).norm()
        pts = torch.randn(500, 75, generator=gen)
        pts = pts / pts.abs().sum(1, keepdim=True) * radius[i] * torch.rand(500, 1, generator=gen)
        assert ((pts - v[i].flatten()).norm(dim=1) >= d_best - 1e-4).all()


# ---- label inference ----------------------------------------------------------------
def test_idlg_is_exact_at_batch_one_for_a_fresh_model(mnist):
    cfg = cfg_of()
    strategy = GifdStrategy(cfg, test_data=mnist)
    for c in range(10):
        torch.manual_seed(c)
        arrays = strategy.initial_arrays()
        idx = np.flatnonzero(mnist.train_labels == c)[:1]
        data = ClientData(0, mnist.train.subset(idx), mnist.test.subset(range(2)), 10, (1, 28, 28))
        config = dict(strategy.train_record(1, arrays, ConfigRecord({"server-round": 1}))["config"])
        reply = GifdClient(cfg, data).train({"arrays": arrays.to_torch_state_dict()}, config, {})
        content = RecordDict({k: ArrayRecord(v) for k, v in reply.arrays.items()})
        assert infer_labels(view(strategy, arrays, content, mnist)).tolist() == [c]


@pytest.mark.parametrize("threat", ["fedsgd", "fedavg"])
def test_count_based_labels_on_a_small_batch(mnist, threat):
    cfg = cfg_of(**{"attack-batch-size": 5, "attack-threat": threat})
    seed_everything(0)
    strategy = GifdStrategy(cfg, test_data=mnist)
    arrays = strategy.initial_arrays()
    labels = [2, 2, 5, 7, 7]
    idx = np.concatenate([np.flatnonzero(mnist.train_labels == c)[i:i + 1] for i, c in enumerate(labels)])
    data = ClientData(0, mnist.train.subset(idx), mnist.test.subset(range(2)), 10, (1, 28, 28))
    config = dict(strategy.train_record(1, arrays, ConfigRecord({"server-round": 1}))["config"])
    reply = GifdClient(cfg, data).train({"arrays": arrays.to_torch_state_dict()}, config, {})
    content = RecordDict({k: ArrayRecord(v) for k, v in reply.arrays.items()})
    inferred = infer_labels(view(strategy, arrays, content, mnist))
    assert sorted(inferred.tolist()) == labels
    assert label_accuracy(torch.tensor([2, 5, 5, 7, 1]), torch.tensor(labels)) == pytest.approx(0.6)


# ---- metrics and defenses ---------------------------------------------------------------
def test_psnr_ssim_sanity():
    x = torch.rand(1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert psnr(x, x) == math.inf and ssim(x, x) == pytest.approx(1.0)
    y = (x + 0.1).clamp(0, 1)
    assert psnr(torch.zeros(1, 4, 4), torch.full((1, 4, 4), 0.1)) == pytest.approx(20.0)
    assert ssim(y, x) < 1.0


def test_defenses_noise_clip_prune():
    gen = torch.Generator().manual_seed(0)
    update = {"a": torch.randn(200, 50, generator=gen), "b": torch.randn(1000, generator=gen)}
    noisy = apply_defense(update, "noise", noise_std=0.05, seed=1)
    diff = torch.cat([(noisy[k] - update[k]).flatten() for k in update])
    assert diff.std() == pytest.approx(0.05, rel=0.05) and abs(float(diff.mean())) < 0.005
    clipped = apply_defense(update, "clip", clip_norm=3.0)
    norm = torch.sqrt(sum(v.pow(2).sum() for v in clipped.values()))
    assert float(norm) == pytest.approx(3.0, rel=1e-4)
    torch.testing.assert_close(clipped["a"] / clipped["a"].norm(), update["a"] / update["a"].norm())
    small = apply_defense({"a": update["a"] * 1e-3}, "clip", clip_norm=3.0)
    torch.testing.assert_close(small["a"], update["a"] * 1e-3)  # inside the bound: unchanged
    pruned = apply_defense(update, "prune", prune_percentile=70)
    for k, v in pruned.items():
        zero = (v == 0).float().mean()
        assert 0.69 <= float(zero) <= 0.71
        kept = v != 0
        torch.testing.assert_close(v[kept], update[k][kept])
        assert v.abs()[kept].min() >= update[k].abs()[~kept].max()
    assert apply_defense(update, "none")["a"].equal(update["a"])


# ---- the attacker's view and the ground truth -------------------------------------------
@pytest.mark.parametrize("threat", ["fedsgd", "fedavg"])
def test_simulated_update_of_the_true_batch_matches_the_received_one(mnist, threat):
    strategy, arrays, replies = setup(mnist, 1, **{"attack-threat": threat, "attack-local-steps": 3})
    content = replies[0][1]
    truth = strip_ground_truth(content)
    inp = view(strategy, arrays, content, mnist)
    sim = simulate(inp, truth["images"], truth["labels"].long(), create_graph=False)
    assert float(grad_distance(sim, list(inp.target.values())).detach()) < 1e-5


def poisoned(content: RecordDict) -> RecordDict:
    out = RecordDict(dict(content.items()))
    out[GROUND_TRUTH] = ArrayRecord({"images": torch.full((1, 1, 28, 28), 2.5), "labels": torch.tensor([9])})
    return out


def test_attacker_view_ignores_the_ground_truth_record(mnist):
    strategy, arrays, replies = setup(mnist, 1)
    content = replies[0][1]
    stripped = RecordDict({k: v for k, v in content.items() if k != GROUND_TRUTH})
    a, b = view(strategy, arrays, content, mnist), view(strategy, arrays, poisoned(stripped), mnist)
    for name in a.target:
        assert a.target[name].equal(b.target[name]) and a.params[name].equal(b.params[name])
    assert strip_ground_truth(content) is not None and GROUND_TRUTH not in content.array_records


def tiny_prior(tmp_path) -> str:
    torch.manual_seed(0)
    path = tmp_path / "random-gan.pt"
    save_checkpoint(path, Generator(), "digits", [str(i) for i in range(10)])
    return str(path)


def messages(replies) -> list[Message]:
    out = []
    for pid, content in replies:
        sent = Message(RecordDict(), message_type=MessageType.TRAIN, dst_node_id=pid + 1)
        sent.metadata.__dict__["_message_id"] = f"sent-{pid}"  # as a grid sets it: replies name the message
        out.append(Message(content, reply_to=sent))
    return out


def test_attacks_never_receive_the_ground_truth(mnist, tmp_path, monkeypatch):
    """Spy on every attack call: no argument holds the truth; poisoning it changes scores only."""
    import strategies.gifd as sg

    over = {"attack": "ig,gifd", "attack-budget": 8, "attack-restarts": 1, "attack-num-images": 2,
            "gan-checkpoint": tiny_prior(tmp_path), "out-dir": str(tmp_path), "run-name": "iso", "min-train-nodes": 1}
    calls = []
    real = sg.run_attack

    def spy(name, inp, labels, prior, settings, seed):
        calls.append((inp, labels))
        return real(name, inp, labels, prior, settings, seed)

    monkeypatch.setattr(sg, "run_attack", spy)
    results = []
    for poison in (False, True):
        strategy, arrays, replies = setup(mnist, 2, **over)
        strategy.partitions = {1: 0, 2: 1}
        truths = [c.array_records[GROUND_TRUTH].to_torch_state_dict() for _, c in replies]
        if poison:
            replies = [(pid, poisoned(c)) for pid, c in replies]
        strategy.row = {"failures": 0}
        strategy.expected = strategy.expected_arrays(arrays)
        msgs = messages(replies)
        new, _ = strategy.aggregate_train(1, msgs)
        assert new is not None and strategy.row["failures"] == 0
        assert all(GROUND_TRUTH not in m.content.array_records for m in msgs)  # stripped before anything else
        for inp, _ in calls:
            fields = [*inp.params.values(), *inp.target.values(), *inp.buffers.values()]
            for t in truths:
                assert not any(f.shape == t["images"].shape and torch.equal(f, t["images"].float()) for f in fields)
            assert not hasattr(inp, "truth") and not hasattr(inp, "images")
        calls.clear()
        frame = pd.read_csv(tmp_path / "iso" / "attacks.csv")
        results.append((frame, [r for r in strategy.attack_rows]))
    (clean, _), (bad, _) = results
    np.testing.assert_array_equal(clean["grad-loss"].to_numpy(), bad["grad-loss"].to_numpy())
    np.testing.assert_array_equal(clean["inferred-label"].to_numpy(), bad["inferred-label"].to_numpy())
    assert not np.allclose(clean["psnr"].to_numpy(), bad["psnr"].to_numpy())  # only the evaluator saw the poison
    assert (bad["true-label"] == 9).all() and (clean["label-accuracy"] == 1).all()


def test_fedsgd_server_applies_the_mean_gradient(mnist):
    strategy, arrays, replies = setup(mnist, 2, **{"attack": "none", "min-train-nodes": 1})
    strategy.partitions = {1: 0, 2: 1}
    strategy.row, strategy.expected = {"failures": 0}, strategy.expected_arrays(arrays)
    grads = [c.array_records["gradient"].to_torch_state_dict() for _, c in replies]
    new, _ = strategy.aggregate_train(1, messages(replies))
    sent, lr = arrays.to_torch_state_dict(), strategy.cfg["lr"]
    for k, v in new.to_torch_state_dict().items():
        torch.testing.assert_close(v, sent[k] - lr * (grads[0][k] + grads[1][k]) / 2)


# ---- attacks --------------------------------------------------------------------------
def test_generator_stages_compose():
    torch.manual_seed(0)
    gen = Generator().eval()
    z, y = torch.randn(3, gen.z_dim), torch.tensor([0, 4, 9])
    full = gen(z, y)
    assert full.shape == (3, 1, 28, 28)
    for k in range(1, gen.num_stages):
        torch.testing.assert_close(gen.run(gen.run(z, y, 0, k), y, k), full)


def test_tiny_attacks_improve_over_their_start(mnist, tmp_path):
    inp, labels, true_px = one_update(mnist)
    res = invert_ig(inp, labels, budget=60, restarts=1, tv=1e-4)
    start = inp.to_pixels(inp.clamp(torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))))[0]
    assert psnr(inp.to_pixels(res.images)[0], true_px) > psnr(start, true_px) + 3
    assert res.steps == 60 and res.grad_loss < res.info["trace"][0] / 3
    # breaching's settings: the kept iterate is chosen by the total objective (TV >= 0 included)
    res = invert_ig(inp, labels, budget=30, restarts=1, tv=0.2, breaching=True)
    assert res.steps == 30 and min(res.info["trace"]) <= res.grad_loss < res.info["trace"][0]
    assert torch.equal(inp.clamp(res.images), res.images)  # a boxed iterate, not the unclamped start
    prior = GanPrior.load(tiny_prior(tmp_path))
    res = invert_gifd(inp, labels, prior, budget=24, restarts=2, stages=2, label_space="digits")
    assert res.steps == 24 and res.grad_loss < res.info["trace"][0]
    assert len(res.info["stage-best"]) == 2 and len(res.info["stage-best"][0]) == 3  # latent + 2 stages


def test_matcher_enforces_the_budget(mnist):
    strategy, arrays, replies = setup(mnist, 1)
    inp = view(strategy, arrays, replies[0][1], mnist)
    m = Matcher(inp, torch.tensor([1]), budget=2)
    m(torch.zeros(1, 1, 28, 28))
    m(torch.zeros(1, 1, 28, 28))
    with pytest.raises(RuntimeError, match="budget"):
        m(torch.zeros(1, 1, 28, 28))


@pytest.mark.parametrize("over, message", [
    ({"attack": "ig,deepinversion"}, "attack must be"),
    ({"attack-round": "1,x"}, "attack-round must be"),
    ({"attack-round": "0"}, "attack-round must be"),
    ({"attack-round": "1,9"}, "attack-round 9 > num-server-rounds"),
    ({"gan-dataset": "mnist"}, "clients' training pool"),
    ({"defense": "dp"}, "defense must be"),
    ({"gifd-radii": "0.1,0.2"}, "gifd-radii"),
])
def test_bad_gifd_config_fails_clearly(over, message):
    with pytest.raises(ConfigError, match=message):
        cfg_of(**over)


# ---- end to end through Flower --------------------------------------------------------
def test_gifd_end_to_end_through_flower(tmp_path):
    from tests.conftest import run_sweep

    code, frame, out = run_sweep(
        tmp_path,
        base={"method": "gifd", "num-supernodes": 2, "num-server-rounds": 2, "attack-round": "1,2",
              "attack": "idlg,ig,ggl,gifd", "attack-num-images": 2, "attack-budget": 6, "attack-restarts": 1,
              "gan-checkpoint": tiny_prior(tmp_path), "fraction-evaluate": 0.0},
        grid={"defense": ["noise"]},
    )
    assert code == 0
    attacks = pd.read_csv(out / "defense-noise" / "attacks.csv")
    for col in ("round", "partition", "attack", "defense", "psnr", "ssim", "lpips", "label-accuracy",
                "attack-seconds", "true-label", "inferred-label", "grad-loss", "steps", "l1-active"):
        assert col in attacks.columns
    assert sorted(attacks["attack"].unique()) == ["ggl", "gifd", "idlg", "ig"] and len(attacks) == 16
    assert sorted(attacks["round"].unique()) == [1, 2] and (attacks.groupby("round").size() == 8).all()
    assert (attacks["steps"] == 6).all() and attacks["psnr"].notna().all()
    assert attacks.loc[attacks["attack"] == "gifd", "l1-active"].notna().all()
    assert attacks.loc[attacks["attack"] != "gifd", "l1-active"].isna().all()
    assert (out / "defense-noise" / "attacks.png").exists() and (out / "defense-noise" / "attacks-round2.png").exists()
    assert {"ig-psnr", "ggl-psnr", "gifd-psnr", "idlg-psnr", "label-accuracy"} <= set(frame.columns)
    assert frame["gifd-psnr"].notna().sum() == 2  # one metrics row per attacked round


def test_gan_prior_is_trained_once_and_cached(tmp_path):
    from attacks.train_gan import ensure_prior

    path = ensure_prior("digits", tmp_path, steps=2, log_every=0)
    assert path == tmp_path / "gan" / "digits-steps2-seed0.pt" and path.exists()
    mtime = path.stat().st_mtime_ns
    assert ensure_prior("digits", tmp_path, steps=2, log_every=0).stat().st_mtime_ns == mtime
    prior = GanPrior.load(path)
    assert prior.label_space == "digits" and prior.num_classes == 10 and not prior.gen.training


def test_train_gan_cli_custom_generator_gets_its_own_checkpoint(tmp_path):
    from attacks.train_gan import main
    from models.generator import load_checkpoint

    assert main(["--dataset", "digits", "--steps", "2", "--z-dim", "8", "--widths", "8,8,4,4",
                 "--out-dir", str(tmp_path)]) == 0
    path = tmp_path / "gan" / "digits-steps2-seed0-zdim8-widths8x8x4x4.pt"
    gen, info = load_checkpoint(path)
    assert gen.z_dim == 8 and gen.widths == (8, 8, 4, 4) and info["label-space"] == "digits"
    assert not (tmp_path / "gan" / "digits-steps2-seed0.pt").exists()  # the default prior's cache is untouched


def test_gan_training_is_seeded_and_reports_progress(tmp_path, monkeypatch):
    """Same seed: the same checkpoint (tiny size); another seed: other weights; progress lines."""
    from attacks.train_gan import label_space, train_gan
    from common.progress import LogProgress
    from models.generator import load_checkpoint

    lines = []
    monkeypatch.setattr(LogProgress, "emit", lambda self, line: lines.append(line))
    small = {"z_dim": 8, "widths": (8, 8, 4, 4)}
    saved = []
    for seed, name in ((3, "a"), (3, "b"), (4, "c")):
        before = torch.random.get_rng_state()
        gen, meta = train_gan("digits", steps=3, seed=seed, gen_kwargs=small, log_every=0)
        assert torch.equal(torch.random.get_rng_state(), before)  # the caller's RNG is untouched
        path = tmp_path / f"{name}.pt"
        save_checkpoint(path, gen, label_space("digits"), [str(i) for i in range(10)], meta)
        saved.append(load_checkpoint(path))
    (a, info_a), (b, info_b), (c, _) = saved
    assert info_a == info_b
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert not torch.equal(a.state_dict()["fc.weight"], c.state_dict()["fc.weight"])
    assert len(lines) == 3 and all("gan prior on digits" in line and "3/3" in line for line in lines)


def l1_case(mnist, tmp_path, radii):
    strategy, arrays, replies = setup(mnist, 1)
    inp = view(strategy, arrays, replies[0][1], mnist)
    prior = GanPrior.load(tiny_prior(tmp_path))
    return invert_gifd(inp, infer_labels(inp), prior, budget=40, restarts=1, radii=radii, label_space="digits")


def test_l1_ball_binds_at_the_default_radii_and_not_at_inf(mnist, tmp_path):
    from strategies.gifd import settings_of

    default = settings_of(cfg_of())["radii"]
    bound = l1_case(mnist, tmp_path, default)
    free = l1_case(mnist, tmp_path, (math.inf,) * 4)
    assert bound.info["l1-steps"] == free.info["l1-steps"] == 20  # 20 feature steps of one image
    assert bound.info["l1-active"] >= 0.5  # the projection moves the point on most steps
    assert free.info["l1-active"] == 0.0
    # without the ball every stage goes further than its default radius
    assert all(free.info["l1-displacement"][k] > default[k - 1] for k in range(1, 5))
    assert all(bound.info["l1-displacement"][k] >= default[k - 1] for k in range(1, 5))


def test_dlg_idlg_and_cma_ggl_spend_exactly_the_budget(mnist, tmp_path):
    from attacks.dlg import invert_dlg
    from attacks.ggl import invert_ggl

    inp, labels, true_px = one_update(mnist)
    start = inp.to_pixels(torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(0)))[0]
    idlg = invert_dlg(inp, labels, budget=40)
    assert idlg.steps == 40 and idlg.labels.tolist() == labels.tolist()
    assert psnr(inp.to_pixels(idlg.images)[0], true_px) > psnr(start, true_px) + 10
    # the iterate after the last whole L-BFGS step (20 evaluations each) is kept, as breaching does:
    # selected by the loss at that step's start; a step cut short by the budget is discarded
    assert idlg.grad_loss == idlg.info["trace"][20] < idlg.info["trace"][0]
    assert torch.equal(invert_dlg(inp, labels, budget=45).images, idlg.images)
    assert inp.to_pixels(torch.full((1, 1, 28, 28), float("nan"))).eq(0).all()  # a diverged result scores
    dlg = invert_dlg(inp, None, budget=40)
    assert dlg.steps == 40 and dlg.labels.shape == (1,) and dlg.grad_loss == dlg.info["trace"][20] < dlg.info["trace"][0] / 5
    prior = GanPrior.load(tiny_prior(tmp_path))
    a = invert_ggl(inp, labels, prior, budget=60, population=25, label_space="digits", seed=5)
    b = invert_ggl(inp, labels, prior, budget=60, population=25, label_space="digits", seed=5)
    assert a.steps == 60 and a.info["generations"] == 3  # 25 + 25 + 10 candidates
    assert a.grad_loss == b.grad_loss and torch.equal(a.images, b.images)  # seeded
    assert a.grad_loss == min(a.info["trace"])


def test_rounds_summary_per_round_and_attack():
    from studies.gifd_rounds import table

    frame = pd.DataFrame({"round": [1, 1, 5, 5], "attack": ["gifd"] * 4, "psnr": [20.0, 22.0, 12.0, 12.0],
                          "ssim": [0.8, 0.9, 0.3, 0.3], "label-accuracy": [1.0, 1.0, 1.0, 0.0],
                          "update-norm": [4.0, 2.0, 0.5, 0.5]})
    lines = table(frame).splitlines()
    assert len(lines) == 4 and lines[2].startswith("| 1 | gifd | 2 | 21.00 ± 12.71 |")  # t(0.975, 1) = 12.71
    assert "| 3 |" in lines[2] and lines[3].startswith("| 5 | gifd | 2 | 12.00 ± 0.00 | 0.300 ± 0.000 | 0.50 ±")


def test_benchmark_paired_difference_matches_on_seed_and_image():
    from studies.gifd_benchmark import paired

    base = {"defense": "none", "defense-param": float("nan"), "budget": 200, "prior": "p", "ssim": 0.5}
    rows = [{**base, "attack": "gifd", "seed": s, "partition": i, "image": 0, "psnr": 20.0 + s + i}
            for s in (0, 1) for i in (0, 1)]
    # the ablation: 2 dB lower on each image, listed in another order; one extra image only it has
    rows += [{**r, "attack": "gifd inf", "psnr": r["psnr"] - 2 + 0.5 * r["seed"]} for r in reversed(rows)]
    rows += [{**base, "attack": "gifd inf", "seed": 2, "partition": 0, "image": 0, "psnr": 99.0}]
    lines = paired(pd.DataFrame(rows), "gifd (p)", "gifd inf (p)").splitlines()
    # differences 2, 2, 1.5, 1.5: mean 1.75, sd 0.2887, t(0.975, 3) = 3.182 -> half-width 0.459
    assert lines[2].startswith("| none | 200 | 4 | psnr | 21.000 | 19.250 | +1.750 [+1.291, +2.209] | 4/4 |")
    assert "| ssim |" in lines[3] and "+0.000" in lines[3]
    with pytest.raises(ValueError, match="no \\(seed"):
        paired(pd.DataFrame(rows), "gifd (p)", "ggl (p)")


def test_rounds_that_are_not_attacked_are_ordinary_fedavg_rounds(mnist):
    from clients.gifd import PLAIN_ROUND

    strategy = GifdStrategy(cfg_of(**{"num-server-rounds": 5, "attack-round": "1,5"}), test_data=mnist)
    arrays = strategy.initial_arrays()
    config = {r: dict(strategy.train_record(r, arrays, ConfigRecord({"server-round": r}))["config"])
              for r in (1, 2, 5)}
    assert [config[r][PLAIN_ROUND] for r in (1, 2, 5)] == [False, True, False]
    assert [config[r][GROUND_TRUTH] for r in (1, 2, 5)] == [True, False, True]
    strategy.train_record(2, arrays, ConfigRecord({"server-round": 2}))
    assert set(strategy.expected_arrays(arrays)) == {"arrays"}  # the weights, not a gradient
    strategy.train_record(5, arrays, ConfigRecord({"server-round": 5}))
    assert set(strategy.expected_arrays(arrays)) == {"gradient"}
    idx = np.flatnonzero(mnist.train_labels < 10)[:40]
    data = ClientData(0, mnist.train.subset(idx), mnist.test.subset(range(4)), 10, (1, 28, 28))
    reply = GifdClient(cfg_of(**{"local-epochs": 1}), data).train({"arrays": arrays.to_torch_state_dict()},
                                                                    config[2], {})
    assert set(reply.arrays) == {"arrays"} and reply.metrics["num-examples"] == 40  # all its data, no truth
