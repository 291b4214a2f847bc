"""Leakage over training: ``python -m studies.gifd_rounds DIR``.

Reads every ``attacks.csv`` under ``DIR`` (runs with ``attack-round`` a list, e.g. the sweep
``simulations/configs/gifd_rounds.yaml``) and prints, per attacked round and attack, n and the
mean with its 95% Student-t interval over images of PSNR, SSIM and label accuracy, plus the
mean norm of the received update (gradients shrink as the model trains).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from .gifd_benchmark import markdown, t_interval


def table(frame: pd.DataFrame) -> str:
    rows = []
    for (rnd, attack), g in frame.groupby(["round", "attack"], sort=True):
        row = {"round": int(rnd), "attack": attack}
        for metric, fmt in (("psnr", ".2f"), ("ssim", ".3f"), ("label-accuracy", ".2f")):
            mean, hw, n = t_interval(g[metric])
            row["n"] = n
            row[metric] = f"{mean:{fmt}} ± {hw:{fmt}}" if hw == hw else f"{mean:{fmt}}"
        row["update norm"] = f"{g['update-norm'].mean():.3g}" if "update-norm" in g else ""
        rows.append(row)
    out = pd.DataFrame(rows).set_index("round")
    return markdown(out[["attack", "n", "psnr", "ssim", "label-accuracy", "update norm"]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studies.gifd_rounds", description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    files = sorted(args.dir.rglob("attacks.csv"))
    if not files:
        parser.error(f"no attacks.csv under {args.dir}: pass the out-dir of a gifd run or sweep")
    frame = pd.concat([pd.read_csv(f) for f in files])
    print(f"{len(files)} run(s): " + ", ".join(str(f.parent.name) for f in files) + "\n")
    print(table(frame))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
