"""``gifd-cost``: seconds per reconstructed image, per attack, at the default budget."""

from __future__ import annotations

import os
import time

from .timing import load, say


# ---- gifd-cost -------------------------------------------------------------------------
def bench_gifd_cost(args) -> dict:
    import pandas as pd
    import torch

    from attacks.prior import GanPrior
    from attacks.train_gan import ensure_prior
    from simulations.attack_round import client_updates
    from simulations.config import resolve

    overrides = {"method": "gifd"}
    if args.quick:
        overrides.update({"attack-num-images": 1, "attack-budget": 20, "gan-train-steps": 20})
    cfg = resolve(overrides)
    images = int(cfg["attack-num-images"])
    attacks = ["ig", "ggl", "gifd"]
    gan_dir = args.gan_dir or args.out_dir / "gifd-cost"
    say(f"gifd-cost: {images} MNIST images (batch 1, FedSGD), budget {cfg['attack-budget']} steps/image, "
        f"{cfg['attack-restarts']} restarts, prior {cfg['gan-dataset']} ({load()})")
    t0 = time.perf_counter()
    path = ensure_prior(cfg["gan-dataset"], gan_dir, int(cfg["gan-train-steps"]), 0, cfg["data-root"], log_every=0)
    prior = GanPrior.load(path, name=cfg["gan-dataset"])
    say(f"  prior ready in {time.perf_counter() - t0:.1f} s ({path})")
    threads = torch.get_num_threads()
    strategy, items = client_updates(cfg, max(images, 2))
    items = items[: -(-images // int(cfg["attack-batch-size"]))]
    strategy.attack_updates(1, items, attacks, prior)
    torch.set_num_threads(threads)
    frame = pd.DataFrame(strategy.attack_rows)
    per_image = frame.groupby("attack")["attack-seconds"].sum() / frame.groupby("attack").size()
    per_image = {a: float(per_image[a]) for a in attacks}
    psnr = {a: float(frame.loc[frame["attack"] == a, "psnr"].mean()) for a in attacks}
    for a in attacks:
        say(f"  {a}: {per_image[a]:.2f} s per image (mean PSNR {psnr[a]:.1f} dB) ({load()})")
    say("summary: gifd-cost seconds per image at budget " + str(cfg["attack-budget"]) + ": "
        + ", ".join(f"{a} {per_image[a]:.2f}" for a in attacks) + f" ({load()})")
    return {"images": images, "budget": int(cfg["attack-budget"]), "seconds-per-image": per_image, "psnr": psnr,
            "load": os.getloadavg()[0]}
