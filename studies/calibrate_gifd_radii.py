"""Choose GIFD's per-stage l1 radii by what the attacker observes: ``python -m studies.calibrate_gifd_radii``.

Candidates are scalings of a base radius vector (``--base``, default the current
``gifd-radii``; ``inf`` = no ball). On calibration updates that the evaluation never
attacks (run seed ``--seed``, default 100: other client batches, another initial model),
GIFD runs once per candidate and the candidate with the lowest mean final gradient
distance wins (ties: the smaller radius). The gradient distance is all an attacker has;
PSNR against the true images is never used, and ``calibrate`` never reads them
(``tests/test_gifd_resnet.py`` poisons them and gets the same radii). Also printed: for
every stage, the median distance it travels without a ball (``|h - h0|_1 / |h0|_1``).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np


def scaled(base: tuple[float, ...], scale: float) -> tuple[float, ...]:
    return tuple(math.inf if math.isinf(scale) else r * scale for r in base)


def calibrate(strategy, items, prior, settings: dict, scales: list[float], budget: int) -> tuple[tuple, list[dict]]:
    """(chosen radii, one row per candidate: scale, radii, mean gradient distance, displacement).

    ``items``: (partition, reply content, ground truth) as ``client_updates`` returns them;
    only the content reaches the attack, the truth is ignored."""
    from attacks.common import resolve_device
    from attacks.gifd import invert_gifd
    from attacks.label_inference import infer_labels
    from strategies.gifd import attacker_view

    data, device = strategy.test_data, resolve_device(strategy.cfg["attack-device"])
    inputs = [(part, attacker_view(content, strategy.sent, strategy.cfg["model"], data.num_classes,
                                   data.input_shape, data.mean, data.std, strategy.announced()).to(device))
              for part, content, _ in items]
    rows = []
    for scale in scales:
        radii = scaled(settings["radii"], scale)
        losses, moves = [], []
        for part, inp in inputs:
            res = invert_gifd(inp, infer_labels(inp, part), prior, budget=budget, restarts=settings["restarts"],
                              lr=settings["lr"], tv=settings["tv"], latent_fraction=settings["latent-fraction"],
                              radii=radii, stages=settings["stages"], label_map=settings["label-map"],
                              label_space=settings["label-space"], stage_start=settings["stage-start"], seed=part)
            losses.append(res.grad_loss)
            moves.append([res.info["l1-displacement"][k] for k in sorted(res.info["l1-displacement"])])
        rows.append({"scale": scale, "radii": radii, "grad-loss": float(np.mean(losses)),
                     "displacement": np.median(np.array(moves), axis=0).tolist()})
    best = min(rows, key=lambda r: (r["grad-loss"], r["scale"]))
    return best["radii"], rows


def main(argv=None) -> int:
    import torch

    from attacks.common import resolve_device
    from attacks.prior import GanPrior
    from simulations.attack_round import client_updates
    from strategies.gifd import settings_of

    from .gifd_benchmark import config_overrides, resolve_or_exit

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="generator checkpoint (train_gan's output)")
    parser.add_argument("--seed", type=int, default=100, help="run seed of the calibration updates")
    parser.add_argument("--updates", type=int, default=4, help="client updates to calibrate on")
    parser.add_argument("--round", type=int, default=1, help="the attacked round (earlier ones train the model)")
    parser.add_argument("--clients", type=int, help="clients in the federation that trains before --round "
                        "(default: --updates; pass the benchmark's --clients to calibrate on its federation)")
    parser.add_argument("--trained-dir", type=Path, help="keep the model trained before --round here and read "
                        "it back (simulations/attack_round.py; the benchmark's default is <gan-dir>/trained)")
    parser.add_argument("--budget", type=int, default=200)
    parser.add_argument("--scales", default="0.5,1,2,4,inf", help="candidate multiples of the base radii")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="run-config overrides (model, dataset, attack-batch-size, gifd-radii = the base...)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    over = {"method": "gifd", **config_overrides(args.set, parser), "seed": args.seed,
            "attack-round": str(args.round), "num-server-rounds": args.round}
    try:
        scales = [float(s) for s in args.scales.split(",") if s]
    except ValueError as err:
        parser.error(str(err))
    if args.clients is not None and args.clients < args.updates:
        parser.error(f"--clients ({args.clients}) must be at least --updates ({args.updates})")
    cfg = resolve_or_exit(over, parser)
    strategy, items = client_updates(cfg, args.clients or args.updates, args.round, args.trained_dir)
    prior = GanPrior.load(args.checkpoint, device=resolve_device(cfg["attack-device"]))
    chosen, rows = calibrate(strategy, items[: args.updates], prior, settings_of(cfg), scales, args.budget)
    print("| scale | radii | mean gradient distance | median unconstrained move per stage |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['scale']:g} | {','.join(f'{x:.3g}' for x in r['radii'])} | {r['grad-loss']:.4f} | "
              + ", ".join(f"{m:.3f}" for m in r["displacement"]) + " |")
    print("gifd-radii = \"" + ",".join(f"{x:.3g}" for x in chosen) + "\"")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
