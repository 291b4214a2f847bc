"""FedHiP's feature choices, measured on validation data: ``python -m simulations.fedhip_study``.

For each dataset, input size (``backbone-size``) and feature layer (``backbone-layer``: the
pooled final features, or a pooled earlier stage), a centralized ridge classifier is fit
on a random 80% of a subsample of the TRAINING pool and scored on the other 20%, for each
``ridge-gamma`` and seed (the seed draws the subsample and the split). The global test
sets are never read. One backbone pass per (dataset, size) gives every layer. Writes
``<out-dir>/fedhip_features.csv`` (one row per dataset, size, layer, gamma, seed) and prints
the mean over seeds.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch


def features_all_layers(net, adapter, x, mean, std, layers: list[int]) -> dict[int, torch.Tensor]:
    """{layer: pooled features} from one pass (-1 = timm's pooled final features)."""
    adapter.set_data_norm(mean, std)
    with torch.no_grad():
        inp = adapter(x.float())
        stages = sorted(k for k in layers if k >= 0)  # timm returns them in this order
        final, inter = net.forward_intermediates(inp, indices=stages)
        out = {-1: net.forward_head(final)}
        for k, maps in zip(stages, inter):
            out[k] = maps.mean(dim=(2, 3))
    return out


def main(argv: list[str] | None = None) -> int:
    from clients.fedhip import accuracy, ridge_solve, statistics
    from datasets import load_dataset
    from models.backbones import InputAdapter, backbone_norm, load_backbone

    parser = argparse.ArgumentParser(prog="python -m simulations.fedhip_study", description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="mnist,fashion-mnist-5k")
    parser.add_argument("--sizes", default="32,48,64,96")
    parser.add_argument("--layers", default="-1,4,3", help="-1 = final pooled features; k = pooled stage k")
    parser.add_argument("--gammas", default="1,10,100,1000")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--samples", type=int, default=2000, help="training-pool images per dataset")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/fedhip_study"))
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    layers = [int(k) for k in args.layers.split(",")]
    gammas = [float(g) for g in args.gammas.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    net = load_backbone("tf_efficientnet_lite0", pretrained=True)
    rows = []
    for name in args.datasets.split(","):
        bundle = load_dataset(name)
        pool = np.random.default_rng(0).permutation(len(bundle.train))[: args.samples]  # shared by every seed
        x, y = bundle.train[torch.as_tensor(pool)]
        for size in sizes:
            adapter = InputAdapter(size, *backbone_norm(net))
            t0 = time.process_time()
            feats: dict[int, list[torch.Tensor]] = {k: [] for k in layers}
            for chunk in torch.arange(len(y)).split(256):
                for k, f in features_all_layers(net, adapter, x[chunk], bundle.mean, bundle.std, layers).items():
                    if k in feats:
                        feats[k].append(f)
            cpu_ms = 1000 * (time.process_time() - t0) / len(y)
            for k in layers:
                X = torch.cat(feats[k]).double()
                for seed in seeds:
                    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
                    n_val = len(y) // 5
                    val, fit = order[:n_val], order[n_val:]
                    G, Q, _ = statistics(X[fit], y[fit], bundle.num_classes)
                    for gamma in gammas:
                        W = ridge_solve(G, Q, gamma, "study")
                        rows.append({"dataset": name, "backbone-size": size, "backbone-layer": k, "dim": X.shape[1],
                                     "ridge-gamma": gamma, "seed": seed, "val-accuracy": accuracy(W, X[val], y[val]),
                                     "cpu-ms-per-image-all-layers": cpu_ms})
            print(f"{name} {size}px done ({cpu_ms:.1f} CPU ms/image)", flush=True)
    frame = pd.DataFrame(rows)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out_dir / "fedhip_features.csv", index=False)
    table = frame.groupby(["dataset", "backbone-size", "backbone-layer", "dim", "ridge-gamma"])["val-accuracy"]
    print(table.agg(["mean", "std", "count"]).round(4).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
