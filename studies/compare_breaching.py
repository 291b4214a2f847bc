"""Our ``dlg`` and ``ig`` against breaching's implementations on the same gradients.

Run with ``scripts/compare_breaching.sh`` (it installs breaching 0.1.2 into a throwaway
virtual environment; breaching is not a dependency of this project). For each of the
first ``--images`` client updates of a GIFD run config (MNIST, FedSGD, batch 1, round 1,
run seed ``--seed``), both implementations attack the same received gradient with the
same number of gradient-matching evaluations (``--budgets``):

- DLG: breaching's ``attack=deepleakage`` (joint labels, L-BFGS) stopped after B objective
  evaluations (its own KeyboardInterrupt path keeps the best iterate), against our ``dlg``;
- IG: breaching's ``attack=invertinggradients`` with ``max_iterations=B`` (one evaluation
  per iteration), against our ``ig`` with one restart. breaching's TV kernel assumes 3
  channels; for 1-channel MNIST its kernel is cut to the one channel (same formula).

Both start from the same point: the same seed and the same order of random draws (pixels,
then DLG's label logits), so a difference comes from the implementations alone.

Prints per-image PSNR and, per (attack, budget), the mean PSNR of each implementation with
the 95% t-interval of the paired difference; writes ``compare.csv`` to ``--out-dir``.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import pandas as pd
import torch

from simulations.intervals import t_halfwidth, values_of


class Budget:
    """Counts breaching's objective calls; interrupts the trial after ``limit`` of them."""

    def __init__(self, objective, limit: int):
        self.objective, self.limit, self.calls, self.stopped = objective, limit, 0, False
        self.forward = objective.forward

    def __call__(self, *args, **kwargs):
        if not self.stopped and self.calls >= self.limit:
            self.stopped = True
            raise KeyboardInterrupt  # breaching's trial loop returns its best candidate on this
        self.calls += 1
        return self.forward(*args, **kwargs)


def breaching_attack(kind: str, model, inp, labels, budget: int, seed: int):
    import breaching
    from omegaconf import OmegaConf

    name = {"dlg": "deepleakage", "ig": "invertinggradients"}[kind]
    overrides = ["optim.callback=100000"] + ([f"optim.max_iterations={budget}"] if kind == "ig" else [])
    cfg = breaching.get_attack_config(name, overrides)
    model = copy.deepcopy(model).requires_grad_(True)  # the attacker's copy is frozen
    attacker = breaching.attacks.prepare_attack(model, torch.nn.CrossEntropyLoss(), cfg)
    for reg in attacker.regularizers:  # 1-channel images: breaching's TV kernel is built for 3 channels
        if hasattr(reg, "groups") and inp.input_shape[0] != 3:
            reg.groups = inp.input_shape[0]
            reg.weight = reg.weight[: 2 * reg.groups]
    if kind == "dlg":  # same starting point as ours: the label *template* (shape only) draws no random numbers
        draw, state = attacker._initialize_data, {"template": True}

        def init(shape):
            if state.pop("template", False):
                return torch.zeros(shape)
            return draw(shape)

        attacker._initialize_data = init
    counter = Budget(attacker.objective, budget)
    attacker.objective.forward = counter
    meta = OmegaConf.create({"shape": list(inp.input_shape), "mean": inp.mean.flatten().tolist(),
                             "std": inp.std.flatten().tolist(), "modality": "vision", "task": "classification",
                             "classes": inp.num_classes})
    payload = [{"parameters": [inp.params[n] for n in inp.target], "buffers": None, "metadata": meta}]
    shared = [{"gradients": [inp.target[n].clone() for n in inp.target], "buffers": None,
               "metadata": {"num_data_points": len(labels), "labels": None if kind == "dlg" else labels.clone(),
                            "local_hyperparams": None}}]
    torch.manual_seed(seed)
    rec, _ = attacker.reconstruct(payload, shared, {}, dryrun=False)
    return rec["data"].detach(), counter.calls


def main(argv=None) -> int:
    from attacks.dlg import invert_dlg
    from attacks.ig import invert_ig
    from attacks.label_inference import infer_labels
    from attacks.metrics import psnr
    from simulations.attack_round import client_updates
    from simulations.config import resolve
    from strategies.gifd import attacker_view

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budgets", default="200")
    parser.add_argument("--attacks", default="dlg,ig")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/gifd/breaching"))
    parser.add_argument("--report", type=Path, help="only print the table of an earlier compare.csv")
    args = parser.parse_args(argv)
    if args.report:
        print(report(pd.read_csv(args.report)))
        return 0
    torch.set_num_threads(1)
    cfg = resolve({"method": "gifd", "seed": args.seed, "attack-num-images": args.images})
    strategy, items = client_updates(cfg, args.images)
    data = strategy.test_data
    rows = []
    for budget in [int(b) for b in args.budgets.split(",")]:
        for part, content, truth in items[: args.images]:
            inp = attacker_view(content, strategy.sent, cfg["model"], data.num_classes, data.input_shape, data.mean,
                                data.std, strategy.announced())
            labels = infer_labels(inp)
            true_px = inp.to_pixels(truth["images"].float())[0]
            for kind in args.attacks.split(","):
                seed = 1000 * args.seed + part
                ours = (invert_dlg(inp, None, budget=budget, restarts=1, seed=seed) if kind == "dlg"
                        else invert_ig(inp, labels, budget=budget, restarts=1, tv=float(cfg["ig-tv"]), seed=seed,
                                  breaching=True))
                theirs, calls = breaching_attack(kind, inp.model, inp, labels, budget, seed)
                row = {"budget": budget, "image": part, "attack": kind, "ours-evaluations": ours.steps,
                       "breaching-evaluations": calls,
                       "ours-psnr": psnr(inp.to_pixels(ours.images)[0], true_px),
                       "breaching-psnr": psnr(inp.to_pixels(theirs)[0], true_px)}
                rows.append(row)
                print(row, flush=True)
    frame = pd.DataFrame(rows)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out_dir / "compare.csv", index=False)
    print(f"\nsetting: MNIST, FedSGD batch 1, round 1, run seed {args.seed}, {args.images} images")
    print(report(frame))
    return 0


def report(frame: pd.DataFrame) -> str:
    """Mean PSNR of each implementation and the paired difference with its 95% t-interval."""
    lines = ["| attack | budget | n | ours PSNR | breaching PSNR | ours − breaching [95% CI] | max \\|difference\\| |",
             "|---|---|---|---|---|---|---|"]
    for (kind, budget), g in frame.groupby(["attack", "budget"]):
        d = g["ours-psnr"] - g["breaching-psnr"]
        hw = t_halfwidth(values_of(d))
        lines.append(f"| {kind} | {budget} | {len(g)} | {g['ours-psnr'].mean():.2f} | "
                     f"{g['breaching-psnr'].mean():.2f} | {d.mean():+.2f} [{d.mean() - hw:+.2f}, {d.mean() + hw:+.2f}] "
                     f"| {d.abs().max():.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
