"""Label counts per client, as a picture: every run writes ``partitions.png``, and

``python -m simulations.partitions [--run-config "KEY=VALUE ..." | FILE.toml] [--num-supernodes N] [--out PNG]``

previews a partitioning from a run config without training (the data is loaded and
split exactly as a run would: same keys, same seed). Counts are over each client's whole
partition (its local test split, ``local-test-fraction``, is taken from it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

MAX_DRAWN = 200  # clients; a larger federation is summarized in the title only


def label_counts(cfg: dict, bundle, num_clients: int) -> np.ndarray:
    """[clients, classes] sample counts of the partitions ``cfg`` asks for."""
    from datasets.partition import partition_for

    labels = np.asarray(bundle.train_labels)
    return np.stack([np.bincount(labels[idx], minlength=bundle.num_classes)
                     for idx in partition_for(cfg, bundle, num_clients)])


def plot(counts: np.ndarray, path: Path, title: str) -> None:
    """Stacked bars: one per client (up to ``MAX_DRAWN``), one color per class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = counts[:MAX_DRAWN]
    fig, ax = plt.subplots(figsize=(min(16, max(6.5, 3 + 0.25 * len(shown))), 3.6))
    bottom = np.zeros(len(shown))
    cmap = plt.get_cmap("tab20" if counts.shape[1] > 10 else "tab10")
    for c in range(counts.shape[1]):
        ax.bar(range(len(shown)), shown[:, c], bottom=bottom, width=0.85, color=cmap(c % cmap.N),
               label=str(c) if counts.shape[1] <= 20 else None)
        bottom += shown[:, c]
    more = f" (first {MAX_DRAWN} of {len(counts)} clients)" if len(counts) > MAX_DRAWN else ""
    ax.set(xlabel="client (partition id)", ylabel="samples")
    ax.set_title(title + more, fontsize=9)
    if counts.shape[1] <= 20:
        ax.legend(title="class", fontsize=6, title_fontsize=7, ncol=2, bbox_to_anchor=(1.0, 1.0), loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def title_of(cfg: dict, num_clients: int) -> str:
    how = {"dirichlet": f"dirichlet alpha={cfg['dirichlet-alpha']}",
           "pathological": f"pathological {cfg['classes-per-client']} classes/client",
           "draw": f"draw {cfg['samples-per-client']}/client"}.get(cfg["partitioner"], cfg["partitioner"])
    return f"{cfg['dataset']}: {num_clients} clients, {how}, seed {cfg['seed']}"


def write_for_run(cfg: dict, bundle, num_clients: int, path: Path) -> None:
    """A run's ``partitions.png`` (nothing where the split cannot be made: the run then
    fails with its own line)."""
    from datasets.partition import PartitionError

    try:
        plot(label_counts(cfg, bundle, num_clients), path, title_of(cfg, num_clients))
    except PartitionError:
        pass


def main(argv: list[str] | None = None) -> int:
    from flwr.common.config import parse_config_args

    from common.keys import ConfigError
    from datasets import DataError, load_for
    from datasets.partition import PartitionError
    from simulations.config import resolve

    parser = argparse.ArgumentParser(prog="python -m simulations.partitions", description=__doc__.splitlines()[0])
    parser.add_argument("--run-config", default="", help='"KEY=VALUE ..." or a run-config .toml (as flwr run)')
    parser.add_argument("--num-supernodes", type=int, default=10, help="clients (default 10)")
    parser.add_argument("--out", type=Path, default=Path("outputs/partitions.png"), help="the picture's path")
    args = parser.parse_args(argv)
    try:
        cfg = resolve(parse_config_args([args.run_config]) if args.run_config else {})
        if args.num_supernodes < 1:
            raise ConfigError(f"--num-supernodes must be >= 1, got {args.num_supernodes}")
        bundle = load_for(cfg)
        counts = label_counts(cfg, bundle, args.num_supernodes)
    except (ConfigError, DataError, PartitionError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    plot(counts, args.out, title_of(cfg, args.num_supernodes))
    sizes, classes = counts.sum(1), (counts > 0).sum(1)
    print(f"{title_of(cfg, args.num_supernodes)}: samples per client min {sizes.min()} / median "
          f"{int(np.median(sizes))} / max {sizes.max()}; classes per client min {classes.min()} / max {classes.max()}")
    for p, row in enumerate(counts[:20]):
        print(f"  client {p:>3}: {int(row.sum()):>6} samples  " + " ".join(f"{int(v):>4}" for v in row))
    print(f"picture: {args.out.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
