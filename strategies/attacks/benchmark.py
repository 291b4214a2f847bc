"""The GIFD experiment without Flower: ``python -m strategies.attacks.benchmark``.

Reproduces the Flower run's attack round exactly (same partitions, same client batches,
same initial model for the same seed, the same ``GifdClient`` and
``GifdStrategy.attack_updates`` code) but calls them directly, so a grid over priors and
defenses runs in one process: IG once per defense (it needs no prior), GGL and GIFD
once per (defense, prior). Writes ``benchmark.csv`` (one row per image, attack,
defense, prior), ``summary.md`` (mean PSNR/SSIM tables) and ``grid.png`` (ground truth
and every attack without defense) under ``--out-dir``.

Example (the README's table; about 30-60 min on 2 shared cores)::

    nice -n 5 python -m strategies.attacks.benchmark --out-dir outputs/gifd/bench \\
        --priors mnist-holdout,digits,fashion-mnist \\
        --defenses none,noise:0.001,noise:0.01,noise:0.1,clip:4,prune:20
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch
from flwr.app import ArrayRecord, ConfigRecord, RecordDict


def parse_defense(text: str) -> dict:
    """``none`` | ``noise:STD`` | ``clip:NORM`` | ``prune:PERCENTILE`` -> run-config keys."""
    kind, _, value = text.partition(":")
    key = {"noise": "defense-noise-std", "clip": "defense-clip-norm", "prune": "defense-prune-percentile"}.get(kind)
    out = {"defense": kind}
    if key and value:
        out[key] = float(value)
    return out


def client_updates(cfg: dict, clients: int, server_round: int = 1):
    """(strategy, items) for the attack round: what the server received and the truth."""
    from clients.gifd import GifdClient
    from datasets import load_for
    from simulations.client_app import PARTITION_KEYS, client_data
    from simulations.config import seed_everything
    from strategies.gifd import GifdStrategy, strip_ground_truth

    seed_everything(int(cfg["seed"]))
    bundle = load_for(cfg)
    strategy = GifdStrategy(cfg, test_data=bundle)
    arrays = strategy.initial_arrays()
    record = strategy.train_record(server_round, arrays, ConfigRecord({"server-round": server_round}))
    config = dict(record["config"])
    key = tuple(cfg[k] for k in PARTITION_KEYS)
    items = []
    for pid in range(clients):
        client = GifdClient(cfg, client_data(key, pid, clients))
        reply = client.train({"arrays": arrays.to_torch_state_dict()}, config, {})
        content = RecordDict({name: ArrayRecord(values) for name, values in reply.arrays.items()})
        truth = strip_ground_truth(content)
        items.append((pid, content, truth))
    return strategy, items


def markdown(table: pd.DataFrame, fmt: str) -> str:
    """A pivot table as a GitHub markdown table (no tabulate dependency)."""
    cols = [str(c) for c in table.columns]
    lines = ["| " + " | ".join([table.index.name or ""] + cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for idx, row in table.iterrows():
        lines.append("| " + " | ".join([str(idx)] + [format(v, fmt) if pd.notna(v) else "" for v in row]) + " |")
    return "\n".join(lines)


def summarize(frame: pd.DataFrame) -> str:
    """Markdown tables: mean PSNR (and SSIM) by attack/prior x defense."""
    frame = frame.copy()
    frame["method"] = frame.apply(lambda r: r["attack"] if r["attack"] == "ig" else f"{r['attack']} ({r['prior']})", axis=1)
    frame["setting"] = frame.apply(
        lambda r: r["defense"] if r["defense"] == "none" else f"{r['defense']} {r['defense-param']:g}", axis=1)
    order = list(dict.fromkeys(frame["setting"]))
    out = []
    for metric in ("psnr", "ssim", "label-accuracy", "attack-seconds"):
        table = frame.pivot_table(index="method", columns="setting", values=metric, aggfunc="mean")[order]
        out.append(f"### mean {metric}\n\n{markdown(table, '.2f' if metric == 'psnr' else '.3g')}\n")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    from simulations.config import resolve
    from strategies.attacks.prior import GanPrior
    from strategies.attacks.train_gan import ensure_prior
    from strategies.gifd import save_grid

    parser = argparse.ArgumentParser(prog="python -m strategies.attacks.benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/gifd/bench"))
    parser.add_argument("--gan-dir", type=Path, help="where GAN checkpoints are cached (default: --out-dir)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--priors", default="mnist-holdout,digits,fashion-mnist",
                        help="comma-separated NAME (GAN trained on that data, cached) or NAME=CHECKPOINT")
    parser.add_argument("--defenses", default="none")
    parser.add_argument("--attacks", default="ig,ggl,gifd")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="run-config overrides, e.g. attack-budget=300 dataset=mnist")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    overrides = {"method": "gifd"}
    for item in args.set:
        k, _, v = item.partition("=")
        overrides[k] = type(resolve({})[k])(v) if not isinstance(resolve({})[k], bool) else v.lower() == "true"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    attacks = [a for a in args.attacks.split(",") if a]
    priors = [p for p in args.priors.split(",") if p]
    base = resolve(overrides)
    loaded = {}
    for spec in priors if any(a != "ig" for a in attacks) else []:
        name, _, path = spec.partition("=")  # NAME (trained and cached) or NAME=CHECKPOINT
        path = path or ensure_prior(name, args.gan_dir or args.out_dir, int(base["gan-train-steps"]), 0,
                                    base["data-root"])
        loaded[name] = GanPrior.load(path, name=name)
    rows, grid = [], None
    for text in [d for d in args.defenses.split(",") if d]:
        cfg = resolve({**overrides, **parse_defense(text)})
        t0 = time.perf_counter()
        strategy, items = client_updates(cfg, args.clients)
        items = items[: -(-int(cfg["attack-num-images"]) // int(cfg["attack-batch-size"]))]  # as run_attacks
        if "ig" in attacks:
            res = strategy.attack_updates(1, items, ["ig"], None)
            grid = grid or {"truth": res[0], "recs": {}, "psnrs": {}}
            if text == "none":
                grid["recs"]["ig"], grid["psnrs"]["ig"] = res[1]["ig"], res[2]["ig"]
        for name, prior in loaded.items():
            gan_attacks = [a for a in attacks if a != "ig"]
            res = strategy.attack_updates(1, items, gan_attacks, prior)
            grid = grid or {"truth": res[0], "recs": {}, "psnrs": {}}
            if text == "none":
                for a in gan_attacks:
                    grid["recs"][f"{a} ({name})"], grid["psnrs"][f"{a} ({name})"] = res[1][a], res[2][a]
        rows += strategy.attack_rows
        frame = pd.DataFrame(rows)
        frame.to_csv(args.out_dir / "benchmark.csv", index=False)
        print(f"[{text}] done in {time.perf_counter() - t0:.0f}s", flush=True)
        print(summarize(frame), flush=True)
    frame = pd.DataFrame(rows)
    (args.out_dir / "summary.md").write_text(summarize(frame))
    if grid and grid["recs"]:
        save_grid(args.out_dir / "grid.png", grid["truth"], grid["recs"], grid["psnrs"])
    print(f"results: {args.out_dir / 'benchmark.csv'}, {args.out_dir / 'summary.md'}, {args.out_dir / 'grid.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
