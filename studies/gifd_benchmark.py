"""The GIFD experiment without Flower: ``python -m studies.gifd_benchmark``.

Reproduces the Flower run's attack round exactly (same partitions, same client batches,
same initial model for the same seed, the same ``GifdClient`` and
``GifdStrategy.attack_updates`` code) but calls them directly, so a grid over seeds,
budgets, priors and defenses runs in one process: the pixel attacks (dlg, idlg, ig) once
per (seed, defense, budget), the GAN attacks once more per prior. Writes
``benchmark.csv`` (one row per image, attack, seed, budget, defense, prior; for a round > 1 the
attacked model's test accuracy, ``model-accuracy``),
``summary.csv``/``summary.md`` (per cell: n and the mean with its 95% Student-t interval
over images, computed here from the per-image rows) and ``grid.png`` (ground truth and
every attack, first seed, last budget, no defense) under ``--out-dir``.

Example (the method page's budget table)::

    nice -n 5 python -m studies.gifd_benchmark --out-dir outputs/gifd/budget \\
        --seeds 0,1,2 --budgets 50,100,200,400 --priors mnist-holdout

``--set attack-device=cuda`` runs the attacks (and trains a missing prior) on a GPU. Budgets
run in the order given and ``benchmark.csv`` (and ``grid.png``) are rewritten, whole, after
each: a run stopped at a deadline keeps every budget it finished.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from common import markdown as md
from simulations.intervals import t_halfwidth, values_of


def config_overrides(items: list[str], parser: argparse.ArgumentParser) -> dict:
    """``KEY=VALUE`` strings -> run-config overrides typed like the defaults (bad key: a parser error)."""
    from simulations.config import resolve

    defaults = resolve({})
    out = {}
    for item in items:
        k, _, v = item.partition("=")
        if k not in defaults:
            parser.error(f"unknown run-config key {k!r}")
        out[k] = type(defaults[k])(v) if not isinstance(defaults[k], bool) else v.lower() == "true"
    return out


def resolve_or_exit(overrides: dict, parser: argparse.ArgumentParser) -> dict:
    """The resolved run config, or exit 2 with one line saying what is wrong (no traceback)."""
    from simulations.config import resolve

    try:
        return resolve(overrides)
    except ValueError as err:  # ConfigError included
        parser.exit(2, f"{parser.prog}: error: {err}\n")


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Whole or not at all: a process killed while writing leaves the previous file."""
    tmp = path.with_name(path.name + ".part")
    frame.to_csv(tmp, index=False)
    tmp.replace(path)


def parse_defense(text: str) -> dict:
    """``none`` | ``noise:STD`` | ``clip:NORM`` | ``prune:PERCENTILE`` -> run-config keys."""
    kind, _, value = text.partition(":")
    key = {"noise": "defense-noise-std", "clip": "defense-clip-norm", "prune": "defense-prune-percentile"}.get(kind)
    out = {"defense": kind}
    if key and value:
        out[key] = float(value)
    return out


def markdown(table: pd.DataFrame, fmt: str | None = None) -> str:
    """A table, its index the first column, as markdown; strings kept as they are, NaN empty, other
    cells through ``fmt`` (else ``str``)."""
    rows = ([idx, *(v if isinstance(v, str) else ("" if pd.isna(v) else format(v, fmt) if fmt else str(v))
                    for v in row)] for idx, row in table.iterrows())
    return "\n".join(md.table([table.index.name or "", *table.columns], rows))


def t_interval(values) -> tuple[float, float, int]:
    """(mean, half-width of the 95% Student-t interval, n) of per-image values."""
    v = values_of(values)
    return (float(v.mean()) if len(v) else float("nan")), t_halfwidth(v), len(v)


def method_name(row) -> str:
    return f"{row['attack']} ({row['prior']})" if isinstance(row.get("prior"), str) and row["prior"] else row["attack"]


def summary_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, defense, budget): n and mean / 95% t-interval of each metric over images."""
    frame = frame.copy()
    frame["method"] = frame.apply(method_name, axis=1)
    frame["setting"] = frame.apply(
        lambda r: r["defense"] if r["defense"] == "none" else f"{r['defense']} {r['defense-param']:g}", axis=1)
    out = []
    for (method, setting, budget), g in frame.groupby(["method", "setting", "budget"], sort=False):
        row = {"method": method, "setting": setting, "budget": int(budget), "seeds": g["seed"].nunique()}
        for metric in ("psnr", "ssim", "label-accuracy", "l1-active", "attack-seconds"):
            mean, hw, n = t_interval(g[metric]) if metric in g else (float("nan"), float("nan"), 0)
            row.update({f"{metric}": mean, f"{metric}-ci95": hw})
            row["n"] = max(row.get("n", 0), n) if metric == "psnr" else row.get("n", 0)
        out.append(row)
    return pd.DataFrame(out)


def paired(frame: pd.DataFrame, a: str, b: str, metrics=("psnr", "ssim")) -> str:
    """Markdown table: ``a`` − ``b`` (method names as in ``summary_frame``) per defense and budget, paired
    on the same seed and partition, mean difference with its 95% t-interval and wins of ``a``."""
    frame = frame.copy()
    frame["method"] = frame.apply(method_name, axis=1)
    frame["defense-param"] = frame["defense-param"].fillna(0.0)
    key = ["seed", "defense", "defense-param", "budget", "partition", "image"]
    cols = key + list(metrics)
    both = frame.loc[frame["method"] == a, cols].merge(frame.loc[frame["method"] == b, cols], on=key,
                                                       suffixes=("-a", "-b"))
    if both.empty:
        raise ValueError(f"no (seed, partition, image) attacked by both '{a}' and '{b}'")
    lines = [f"| defense | budget | n | metric | {a} | {b} | difference [95% CI] | {a} higher |",
             "|---|---|---|---|---|---|---|---|"]
    for (defense, budget), g in both.groupby(["defense", "budget"]):
        for m in metrics:
            d = g[f"{m}-a"] - g[f"{m}-b"]
            mean, hw, n = t_interval(d)
            lines.append(f"| {defense} | {budget} | {n} | {m} | {g[f'{m}-a'].mean():.3f} | {g[f'{m}-b'].mean():.3f} "
                         f"| {mean:+.3f} [{mean - hw:+.3f}, {mean + hw:+.3f}] | {(d > 0).sum()}/{n} |")
    return "\n".join(lines)


def summarize(frame: pd.DataFrame) -> str:
    """Markdown tables: metric mean +- 95% t-interval by method x budget, one block per defense."""
    summary = summary_frame(frame)
    out = []
    if "model-accuracy" in frame and frame["model-accuracy"].notna().any():
        per_seed = frame.groupby("seed")["model-accuracy"].first().dropna()
        out.append("The attacked model's test accuracy (global model sent in the attacked round), per run seed: "
                   + ", ".join(f"seed {s}: {a:.3f}" for s, a in per_seed.items()) + "\n")
    for setting, block in summary.groupby("setting", sort=False):
        n = ", ".join(f"{m}: {k}" for m, k in block.groupby("method", sort=False)["n"].min().items())
        out.append(f"## defense {setting} (images per cell: {n})\n")
        for metric, fmt in (("psnr", ".2f"), ("ssim", ".3f"), ("label-accuracy", ".2f"), ("l1-active", ".2f"),
                            ("attack-seconds", ".1f")):
            if block[metric].isna().all():
                continue
            cell = block.apply(lambda r, metric=metric, fmt=fmt: "" if pd.isna(r[metric]) else (
                f"{r[metric]:{fmt}} ± {r[metric + '-ci95']:{fmt}}" if pd.notna(r[metric + "-ci95"])
                else f"{r[metric]:{fmt}}"), axis=1)
            table = block.assign(cell=cell).pivot_table(index="method", columns="budget", values="cell",
                                                        aggfunc="first", sort=False)
            table = table.replace("", float("nan")).dropna(how="all").fillna("")
            table.index.name = "attack \\ budget"
            out.append(f"### {metric} (mean ± 95% t-interval half-width)\n\n{markdown(table)}\n")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    from attacks.common import resolve_device
    from attacks.prior import GanPrior
    from attacks.train_gan import ensure_prior
    from simulations.attack_round import client_updates
    from strategies.gifd import GAN_ATTACKS, save_grid

    parser = argparse.ArgumentParser(prog="python -m studies.gifd_benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path("outputs/gifd/bench"))
    parser.add_argument("--gan-dir", type=Path, help="where GAN checkpoints are cached (default: --out-dir)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--trained-dir", type=Path, help="where the model trained before --round is kept and read "
                        "back by later cells (default: <gan-dir>/trained; `none`: train every time)")
    parser.add_argument("--priors", default="mnist-holdout",
                        help="comma-separated NAME (GAN trained on that data, cached) or NAME=CHECKPOINT")
    parser.add_argument("--defenses", default="none")
    parser.add_argument("--attacks", default="dlg,idlg,ig,ggl,ggl-adam,gifd")
    parser.add_argument("--seeds", default="", help="comma-separated run seeds (default: the config's seed)")
    parser.add_argument("--budgets", default="", help="comma-separated attack budgets (default: attack-budget)")
    parser.add_argument("--round", type=int, default=1,
                        help="the attacked round; rounds before it are the run's ordinary FedAvg rounds")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="run-config overrides, e.g. attack-num-images=4 gifd-radii=inf,inf,inf,inf")
    parser.add_argument("--merge", default="", metavar="DIR[:TAG],DIR",
                        help="only summarize: the benchmark.csv of these folders, into --out-dir; "
                             "DIR:TAG appends ' TAG' to that folder's attack names (an ablation)")
    parser.add_argument("--paired", default="", metavar="A,B[;A,C]",
                        help="with --merge: also print A - B paired on the same seed and image, e.g. "
                             "'gifd (mnist-holdout),gifd inf (mnist-holdout)'; several pairs separated by ';'")
    args = parser.parse_args(argv)
    if args.merge:
        parts = []
        for spec in [d for d in args.merge.split(",") if d]:
            folder, _, tag = spec.partition(":")
            part = pd.read_csv(Path(folder) / "benchmark.csv")
            if tag:
                part["attack"] = part["attack"] + " " + tag
            parts.append(part)
        frame = pd.concat(parts, ignore_index=True)
        args.out_dir.mkdir(parents=True, exist_ok=True)
        frame.to_csv(args.out_dir / "benchmark.csv", index=False)
        summary_frame(frame).to_csv(args.out_dir / "summary.csv", index=False)
        text = summarize(frame)
        for pair in [p for p in args.paired.split(";") if p]:
            a, _, b = pair.partition(",")
            try:
                text += f"\n## paired: {a} − {b}\n\n{paired(frame, a, b)}\n"
            except ValueError as err:
                parser.error(str(err))
        (args.out_dir / "summary.md").write_text(text)
        print(text)
        return 0
    torch.set_num_threads(1)
    overrides = {"method": "gifd", **config_overrides(args.set, parser)}
    if args.round < 1:
        parser.error(f"--round must be >= 1, got {args.round}")
    overrides.update({"attack-round": str(args.round),
                      "num-server-rounds": max(args.round, int(overrides.get("num-server-rounds", 1)))})
    base = resolve_or_exit(overrides, parser)  # a bad key (a missing GPU) ends here, before any work
    device = resolve_device(base["attack-device"])
    args.out_dir.mkdir(parents=True, exist_ok=True)
    attacks = [a for a in args.attacks.split(",") if a]
    pixel_attacks = [a for a in attacks if a not in GAN_ATTACKS]
    gan_attacks = [a for a in attacks if a in GAN_ATTACKS]
    priors = [p for p in args.priors.split(",") if p]
    seeds = [int(s) for s in args.seeds.split(",") if s] or [int(base["seed"])]
    budgets = [int(b) for b in args.budgets.split(",") if b] or [int(base["attack-budget"])]
    loaded = {}
    for spec in priors if gan_attacks else []:
        name, _, path = spec.partition("=")  # NAME (trained and cached) or NAME=CHECKPOINT
        path = path or ensure_prior(name, args.gan_dir or args.out_dir, int(base["gan-train-steps"]), 0,
                                    base["data-root"], device=device)
        loaded[name] = GanPrior.load(path, name=name, device=device)
    trained = args.trained_dir or (args.gan_dir or args.out_dir) / "trained"
    trained = None if str(trained) == "none" else trained
    rows, grid = [], None
    t_start = time.perf_counter()
    for seed in seeds:
        for text in [d for d in args.defenses.split(",") if d]:
            cfg = resolve_or_exit({**overrides, **parse_defense(text), "seed": seed}, parser)
            strategy, items = client_updates(cfg, args.clients, args.round, trained)
            accuracy = {}  # the attacked model's test accuracy (round > 1: how far training got)
            if args.round > 1 and (res := strategy.evaluate_global(args.round, strategy.sent)) is not None:
                accuracy = {"model-accuracy": float(res["accuracy"])}
            items = items[: -(-int(cfg["attack-num-images"]) // int(cfg["attack-batch-size"]))]  # as run_attacks
            for budget in budgets:
                t0 = time.perf_counter()
                strategy.cfg = {**cfg, "attack-budget": budget}
                strategy.attack_rows = []
                runs = [(pixel_attacks, None, "")] if pixel_attacks else []
                runs += [(gan_attacks, prior, f" ({name})") for name, prior in loaded.items()]
                shown = text == "none" and seed == seeds[0]  # the grid: first seed, latest budget, no defense
                for names, prior, suffix in runs:
                    res = strategy.attack_updates(args.round, items, names, prior)
                    grid = grid or {"truth": res[0], "recs": {}, "psnrs": {}}
                    if shown:
                        for a in names:
                            grid["recs"][a + suffix], grid["psnrs"][a + suffix] = res[1][a], res[2][a]
                rows += [{**r, "seed": seed, "budget": budget, **accuracy} for r in strategy.attack_rows]
                write_csv(pd.DataFrame(rows), args.out_dir / "benchmark.csv")
                if shown and grid["recs"]:
                    save_grid(args.out_dir / "grid.png", grid["truth"], grid["recs"], grid["psnrs"])
                print(f"[seed {seed} {text} budget {budget}] done in {time.perf_counter() - t0:.0f}s "
                      f"(total {time.perf_counter() - t_start:.0f}s)", flush=True)
    frame = pd.DataFrame(rows)
    summary_frame(frame).to_csv(args.out_dir / "summary.csv", index=False)
    (args.out_dir / "summary.md").write_text(summarize(frame))
    print(summarize(frame))
    print(f"results: {args.out_dir / 'benchmark.csv'}, {args.out_dir / 'summary.md'}, {args.out_dir / 'grid.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
