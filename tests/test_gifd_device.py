"""Device placement of the attacks (`attack-device`): the CPU's numbers, the refusal of a missing GPU,
and (on a machine with CUDA only) the GPU path end to end."""

from __future__ import annotations

import math

import pytest
import torch

from attacks.common import resolve_device
from common.keys import ConfigError
from simulations.config import resolve
from tests.test_gifd_resnet import mnist, prior, updates, view  # noqa: F401 (fixtures)

torch.set_num_threads(1)
CUDA = torch.cuda.is_available()
ATTACKS = ["dlg", "idlg", "ig", "ggl", "gifd"]


def attack_grid(strategy, items, prior, device: str | None, budget: int = 4):
    """Every attack on the items at ``budget``, with ``attack-device`` set (None: the default)."""
    cfg = {**strategy.cfg, "attack-budget": budget, "ggl-population": 2}
    if device is not None:
        cfg["attack-device"] = device
    strategy.cfg, strategy.attack_rows = cfg, []
    truth, recs, psnrs = strategy.attack_updates(1, items, ATTACKS, prior)
    return truth, recs, strategy.attack_rows


def test_cpu_and_the_default_give_identical_outputs_on_a_cpu_machine(mnist, prior):
    """Two images (a batch of 2), every attack, a budget of 4: bit-identical reconstructions and rows."""
    strategy, items = updates(mnist, [(1, 8)], model="cnn")
    assert strategy.cfg["attack-device"] == "auto"
    _, default, rows_default = attack_grid(strategy, items, prior, None)
    _, cpu, rows_cpu = attack_grid(strategy, items, prior, "cpu")
    for name in ATTACKS:
        assert all(img.device.type == "cpu" for img in cpu[name])
        assert all(torch.equal(a, b) for a, b in zip(default[name], cpu[name])), name
    keys = ("attack", "psnr", "ssim", "grad-loss", "steps", "inferred-label", "budget-used")
    assert [{k: r[k] for k in keys} for r in rows_default] == [{k: r[k] for k in keys} for r in rows_cpu]
    assert all(r["steps"] == 4 for r in rows_cpu)


def test_attack_input_moves_every_tensor_and_leaves_the_original(mnist):
    """``AttackInput.to``: on the meta device (no GPU needed) every tensor and the model move; the CPU view stays."""
    strategy, items = updates(mnist, [(1, 8)], model="cnn")
    inp = view(strategy, items[0][1], mnist)
    assert inp.to("cpu") is inp
    moved = inp.to("meta")
    tensors = [*moved.params.values(), *moved.target.values(), *moved.buffers.values(), moved.mean, moved.std,
               *moved.model.parameters()]
    assert moved.device.type == "meta" and all(t.device.type == "meta" for t in tensors)
    assert inp.device.type == "cpu" and all(p.device.type == "cpu" for p in inp.model.parameters())


@pytest.mark.skipif(CUDA, reason="checks the refusal on a machine without a GPU")
def test_cuda_without_a_gpu_is_refused_with_one_line(capsys, tmp_path):
    from attacks.train_gan import main as train_gan_main
    from simulations.config import main as config_main
    from studies.gifd_benchmark import main as benchmark_main

    with pytest.raises(ConfigError, match="attack-device=cuda asks for a CUDA GPU.*pass attack-device=cpu"):
        resolve({"method": "gifd", "attack-device": "cuda"})
    with pytest.raises(ConfigError, match="attack-device must be auto, cpu, cuda or cuda:N, got 'gpu'"):
        resolve({"method": "gifd", "attack-device": "gpu"})
    assert resolve_device("auto").type == "cpu" and resolve_device("cpu").type == "cpu"
    assert config_main(["method='gifd' attack-device='cuda:1'"]) == 2
    for run in (lambda: train_gan_main(["--device", "cuda", "--steps", "1"]),
                lambda: benchmark_main(["--set", "attack-device=cuda", "--out-dir", str(tmp_path / "bench")])):
        with pytest.raises(SystemExit) as stop:
            run()
        assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all("cuda" in line and "Traceback" not in line for line in err), err
    assert not (tmp_path / "bench").exists()  # refused before any work


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_the_cuda_path_runs_end_to_end_close_to_the_cpu(mnist, prior):
    """Budget 2: the GPU starts from the CPU's points, so its PSNR stays close (rounding differs)."""
    strategy, items = updates(mnist, [(1, 8)], model="cnn")
    _, cpu, rows_cpu = attack_grid(strategy, items, prior, "cpu", budget=2)
    _, gpu, rows_gpu = attack_grid(strategy, items, prior, "cuda", budget=2)
    assert prior.device.type == "cuda"  # the attacks moved the generator there
    for name in ATTACKS:
        assert all(img.device.type == "cpu" for img in gpu[name])
    for a, b in zip(rows_cpu, rows_gpu):
        assert (a["attack"], a["steps"], a["inferred-label"]) == (b["attack"], b["steps"], b["inferred-label"])
        assert math.isfinite(b["psnr"]) and abs(a["psnr"] - b["psnr"]) < 0.5, (a["attack"], a["psnr"], b["psnr"])


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_gan_training_on_cuda_returns_a_cpu_generator():
    from attacks.train_gan import train_gan

    gen, meta = train_gan("digits", steps=3, seed=0, gen_kwargs={"z_dim": 8, "widths": (8, 8, 4, 4)}, log_every=0,
                          device="cuda")
    assert meta["device"].startswith("cuda")
    assert all(p.device.type == "cpu" and torch.isfinite(p).all() for p in gen.parameters())
