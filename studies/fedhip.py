"""FedHiP's feature choices, measured on validation data: ``python -m studies.fedhip``.

``--paired DIR`` instead reads a sweep's ``results.csv`` and compares, within each fedhip
run (same clients, same seed), the personalized accuracy with the closed-form baselines
the run also reports (local-only ridge, global ridge) and the two personalization forms
(on validation and on the local tests): per dataset and Dirichlet alpha, the mean
paired difference with its 95% t-interval and wins / n, and all runs pooled; then per
method and model the bytes of a whole run (all rounds) and the chosen alphas; written to
``DIR/fedhip_paired.md``.

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


PAIRS = (  # (name, metric, minus metric)
    ("personalized - local-only ridge", "personalized-accuracy", "local-model-accuracy"),
    ("personalized - global ridge", "personalized-accuracy", "global-model-local-accuracy"),
    ("statistics - weights, validation", "val-accuracy-statistics", "val-accuracy-weights"),
    ("statistics - weights, local test", "personalized-accuracy-statistics", "personalized-accuracy-weights"),
)


def paired(out: Path) -> str:
    """Markdown: the within-run paired differences of a sweep's fedhip runs, then each group's bytes per run."""
    from simulations.intervals import t_halfwidth
    from simulations.report import load

    frame = load(out)[0]  # results.csv, or every run's metrics.csv (sweeps written into one folder)
    alpha = "dirichlet-alpha" if "dirichlet-alpha" in frame else "alpha"
    runs = frame[(frame["method"] == "fedhip") & (frame["round"] >= 1)]
    lines = ["| dataset | Dirichlet | comparison | n | mean difference | 95% interval | wins / n |", "|---|---|---|---|---|---|---|"]
    cells = [*runs.groupby(["dataset", alpha])]
    if len(cells) > 1:
        cells.append((("all", "all"), runs))  # every run pooled: the sweep-wide count
    for (dataset, a), rows in cells:
        for name, m, base in PAIRS:
            if m not in rows or base not in rows:
                continue
            diff = (rows[m] - rows[base]).dropna().to_numpy(float)
            n = len(diff)
            half = t_halfwidth(diff)
            lines.append(f"| {dataset} | {a} | {name} | {n} | {diff.mean():+.4f} | "
                         f"[{diff.mean() - half:+.4f}, {diff.mean() + half:+.4f}] | {int((diff > 0).sum())} / {n} |")
    text = "\n".join(lines) + "\n\n" + costs(frame, alpha)
    (out / "fedhip_paired.md").write_text(text)
    return text


def costs(frame: pd.DataFrame, alpha: str) -> str:
    """Markdown table: per method, model, dataset and Dirichlet alpha, the mean over seeds
    of each run's total uplink and downlink MB (all rounds) and of the chosen alphas."""
    rows = frame[frame["round"] >= 1]
    if not {"uplink-bytes", "downlink-bytes"} <= set(rows):
        return ""
    model = rows["model"] if "model" in rows else "-"
    rows = rows.assign(model=model)
    keys = ["method", "model", "dataset", alpha]
    per_run = rows.groupby([*keys, "run-name"], dropna=False).agg(
        rounds=("round", "max"), up=("uplink-bytes", "sum"), down=("downlink-bytes", "sum"),
        **{c: (c, "last") for c in ("alpha-weights-mean", "alpha-statistics-mean") if c in rows})
    table = per_run.groupby(keys, dropna=False).agg(["mean", "count"])
    lines = ["| method | model | dataset | Dirichlet | n | rounds | uplink MB / run | downlink MB / run | "
             "alpha weights (mean) | alpha statistics (mean) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for key, row in table.iterrows():
        model_name = "(closed form)" if key[0] == "fedhip" else key[1]
        cell = [f"{row[(c, 'mean')]:.3g}" if (c, "mean") in row and pd.notna(row[(c, "mean")]) else "–"
                for c in ("alpha-weights-mean", "alpha-statistics-mean")]
        lines.append(f"| {key[0]} | {model_name} | {key[2]} | {key[3]} | {int(row[('rounds', 'count')])} | "
                     f"{row[('rounds', 'mean')]:.0f} | {row[('up', 'mean')] / 1e6:.3g} | {row[('down', 'mean')] / 1e6:.3g} | "
                     f"{' | '.join(cell)} |")
    return "\n".join(lines) + "\n"


def lr_probe(datasets: list[str], lrs: list[float], epochs: int = 10, seed: int = 0) -> pd.DataFrame:
    """Validation accuracy of the linear head (``model=linear:...``, SGD momentum 0.9, batch
    32, as the FedAvg/FedProx clients train it) fit centrally on 80% of the training pool's
    cached features, per lr: the lr for the baselines, chosen without any test data."""
    from clients.fedhip import cached_features
    from datasets import load_dataset
    from simulations.config import resolve

    cfg = resolve({"method": "fedhip"})
    rows = []
    for name in datasets:
        bundle = load_dataset(name)
        X, y = cached_features(cfg, bundle.train)
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
        val, fit = order[: len(y) // 5], order[len(y) // 5:]
        for lr in lrs:
            torch.manual_seed(seed)
            head = torch.nn.Linear(X.shape[1], bundle.num_classes)
            opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9)
            for epoch in range(epochs):
                for idx in fit[torch.randperm(len(fit), generator=torch.Generator().manual_seed(epoch))].split(32):
                    loss = torch.nn.functional.cross_entropy(head(X[idx]), y[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
            with torch.no_grad():
                acc = float((head(X[val]).argmax(1) == y[val]).double().mean())
            rows.append({"dataset": name, "lr": lr, "epochs": epochs, "val-accuracy": acc})
            print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    from clients.fedhip import accuracy, ridge_solve, statistics
    from datasets import load_dataset
    from models.backbones import InputAdapter, backbone_norm, load_backbone

    parser = argparse.ArgumentParser(prog="python -m studies.fedhip", description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="mnist,fashion-mnist-5k")
    parser.add_argument("--sizes", default="32,48,64,96")
    parser.add_argument("--layers", default="-1,4,3", help="-1 = final pooled features; k = pooled stage k")
    parser.add_argument("--gammas", default="1,10,100,1000")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--samples", type=int, default=2000, help="training-pool images per dataset")
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/fedhip_study"))
    parser.add_argument("--paired", type=Path, help="a sweep folder: within-run comparisons of its fedhip runs")
    parser.add_argument("--lr-probe", default="", help="comma list of lrs: validation accuracy of the linear head")
    args = parser.parse_args(argv)
    if args.lr_probe:
        frame = lr_probe(args.datasets.split(","), [float(v) for v in args.lr_probe.split(",")])
        args.out_dir.mkdir(parents=True, exist_ok=True)
        frame.to_csv(args.out_dir / "linear_lr_probe.csv", index=False)
        return 0
    if args.paired:
        print(paired(args.paired))
        return 0
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
