"""Calibrate GIFD's per-stage l1 radii so that the ball binds: ``python -m studies.calibrate_gifd_radii``.

Runs GIFD with no ball (``gifd-radii=inf,...``) on calibration images that the budget table
does not use (run seed ``--seed``, default 100: other client batches and another initial
model), records for every image and feature stage k how far the stage moves its feature
unconstrained, ``d_k = max_t |h_t - h0|_1 / |h0|_1``, and prints ``r_k = --fraction x
median_k(d_k)`` (default one half): a ball that cuts the typical unconstrained move in half,
so the projection is active on most steps. No ground truth is used.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def main(argv=None) -> int:
    from attacks.gifd import invert_gifd
    from attacks.label_inference import infer_labels
    from attacks.prior import GanPrior
    from simulations.attack_round import client_updates
    from simulations.config import resolve
    from strategies.gifd import attacker_view, settings_of

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="generator checkpoint (train_gan's output)")
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--budget", type=int, default=200)
    parser.add_argument("--fraction", type=float, default=0.5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = resolve({"method": "gifd", "seed": args.seed, "attack-num-images": args.images,
                   "gifd-radii": "inf,inf,inf,inf"})
    strategy, items = client_updates(cfg, args.images)
    prior = GanPrior.load(args.checkpoint)
    s = settings_of(cfg)
    data = strategy.test_data
    moves = []
    for part, content, _ in items[: args.images]:
        inp = attacker_view(content, strategy.sent, cfg["model"], data.num_classes, data.input_shape, data.mean,
                            data.std, strategy.announced())
        res = invert_gifd(inp, infer_labels(inp), prior, budget=args.budget, restarts=s["restarts"], lr=s["lr"],
                          tv=s["tv"], latent_fraction=s["latent-fraction"], radii=s["radii"], stages=s["stages"],
                          label_map=s["label-map"], label_space=s["label-space"], seed=part)
        moves.append([res.info["l1-displacement"][k] for k in sorted(res.info["l1-displacement"])])
        print(f"image {part}: unconstrained |h - h0|_1 / |h0|_1 per stage: "
              + ", ".join(f"{m:.3f}" for m in moves[-1]), flush=True)
    med = np.median(np.array(moves), axis=0)
    print("median per stage: " + ", ".join(f"{m:.3f}" for m in med))
    print("gifd-radii = \"" + ",".join(f"{args.fraction * m:.2g}" for m in med) + "\"")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
