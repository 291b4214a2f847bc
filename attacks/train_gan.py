"""Train the GIFD/GGL image prior: ``python -m attacks.train_gan``.

No pretrained GAN can be downloaded here, so the prior is trained locally, on a public
dataset that is **disjoint from the clients' data**:

- ``digits``: scikit-learn's 1,797 digits upscaled to 28x28 (UCI optdigits, not MNIST):
  same labels as MNIST, another distribution (thick, blurry, frame-filling strokes).
  This is the paper's "OOD, label-consistent" case.
- ``fashion-mnist``: 70,000 clothing images: the "OOD, label-inconsistent" case (GIFD's
  label mapping picks the GAN class, see ``attacks/prior.py``).
- ``<name>-holdout``: only the global *test* split of dataset ``<name>``, e.g.
  ``mnist-holdout`` = the 1,000 MNIST digits that the server keeps for evaluation and
  that no client ever holds (partitions are cut from the training pool only). This is
  the closest thing to the paper's in-distribution prior (a GAN trained on public data
  from the clients' distribution).
- any other registered dataset name: its whole pool (train + test).

Training the GAN on the clients' own training pool (``gan-dataset`` equal to the FL
``dataset``) is refused by the strategy's config check.

GAN: the conditional generator of ``models/generator.py`` against a spectral-norm
projection discriminator, hinge loss, Adam (2e-4, betas 0/0.9), random +-2 px
translations of real and fake images before the discriminator (DiffAugment-style, for
the small data sets), and an exponential moving average of the generator's weights
(0.999) whose batch-norm statistics are re-estimated at the end. Default 2,000 steps of
batch 64 (the run config's ``gan-train-steps``, so that the CLI writes the checkpoint a
run looks for): about 0.15 s per step (5 minutes) at moderate load; 16-29 minutes on a
2-core machine shared with several other jobs (load 8-20). One torch thread is used.
``--device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``; default ``cpu``) trains on a GPU: every
random draw (batches, latents, translations) still comes from the CPU's seeded generator and
is moved, so the CPU's checkpoint stays bit for bit what it was; a GPU's differs in rounding.

``--z-dim``/``--widths`` train another size of the generator into its own checkpoint
(``<dataset>-steps<N>-seed<S>-zdim<Z>-widths<W0>x..x<W3>.pt``, plugged in with
``gan-checkpoint``), never into the default cache. The README's "wider prior" is
``--z-dim 64 --widths 128,64,32,16``: a better range for GGL and GIFD's latent stage (GGL +3 dB
at budget 200), about 4x the convolution cost.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm

from common.progress import LogProgress
from models.generator import Generator, load_checkpoint, save_checkpoint

from .common import resolve_device

LABEL_SPACES = {"mnist": "digits", "digits": "digits", "fashion-mnist": "fashion", "fashion-mnist-5k": "fashion"}
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle-boot"]


def label_space(dataset: str) -> str:
    """Datasets with the same label space share class meanings (mnist and digits: 0-9)."""
    base = dataset[: -len("-holdout")] if dataset.endswith("-holdout") else dataset
    return LABEL_SPACES.get(base, base)


def class_names(dataset: str, num_classes: int) -> list[str]:
    space = label_space(dataset)
    if space == "digits":
        return [str(i) for i in range(10)]
    if space == "fashion":
        return list(FASHION_CLASSES)
    return [str(i) for i in range(num_classes)]


def prior_images(dataset: str, data_root: str = "") -> tuple[torch.Tensor, torch.Tensor, int]:
    """(images in [-1, 1] as float [N,C,H,W], labels, num_classes) of the prior's data."""
    from datasets import load_dataset
    from datasets.registry import ArrayDataset

    holdout = dataset.endswith("-holdout")
    bundle = load_dataset(dataset[: -len("-holdout")] if holdout else dataset, data_root)
    parts = [bundle.test] if holdout else [bundle.train, bundle.test]
    xs, ys = [], []
    for part in parts:
        if isinstance(part, ArrayDataset) and part.x.dtype == torch.uint8:
            xs.append(part.x.float() / 127.5 - 1)
            ys.append(part.y)
        else:  # any other dataset: undo its normalization
            mean = torch.tensor(bundle.mean).view(1, -1, 1, 1)
            std = torch.tensor(bundle.std).view(1, -1, 1, 1)
            for i in range(len(part)):
                x, y = part[i]
                xs.append(((x[None] * std + mean) * 2 - 1).clamp(-1, 1))
                ys.append(torch.as_tensor([y]))
    return torch.cat(xs), torch.cat(ys).long(), bundle.num_classes


class Discriminator(nn.Module):
    """Spectral-norm conv net with a class projection (Miyato & Koyama 2018)."""

    def __init__(self, num_classes: int, channels: int = 1, width: int = 16):
        super().__init__()
        self.convs = nn.Sequential(
            spectral_norm(nn.Conv2d(channels, width, 3, 1, 1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(width, 2 * width, 4, 2, 1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(2 * width, 4 * width, 4, 2, 1)), nn.LeakyReLU(0.2),
        )
        self.fc = spectral_norm(nn.Linear(4 * width, 1))
        self.embed = spectral_norm(nn.Embedding(num_classes, 4 * width))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.convs(x).sum((2, 3))
        return self.fc(h).squeeze(1) + (self.embed(y) * h).sum(1)


def translate(x: torch.Tensor, shift: int = 2) -> torch.Tensor:
    """Random integer translation by up to ``shift`` pixels (zero padding = background -1); shifts drawn on the CPU."""
    if shift <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (shift, shift, shift, shift), value=-1.0)
    dx = torch.randint(0, 2 * shift + 1, (n,)).to(x.device)
    dy = torch.randint(0, 2 * shift + 1, (n,)).to(x.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)[None]  # [n, h]
    cols = dx[:, None] + torch.arange(w, device=x.device)[None]  # [n, w]
    out = padded[torch.arange(n, device=x.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2)


@torch.no_grad()
def restat(gen: Generator, batches: int = 50, batch_size: int = 64) -> None:
    """Re-estimate batch-norm running statistics (cumulative average) of ``gen``."""
    for m in gen.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    gen.train()
    device = next(gen.parameters()).device
    for _ in range(batches):
        z = torch.randn(batch_size, gen.z_dim).to(device)
        y = torch.randint(0, gen.num_classes, (batch_size,)).to(device)
        gen(z, y)
    for m in gen.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    gen.eval()


def train_gan(dataset: str, steps: int = 2000, seed: int = 0, batch_size: int = 64, data_root: str = "",
              log_every: int = 500, gen_kwargs: dict | None = None,
              device: torch.device | str = "cpu") -> tuple[Generator, dict]:
    """Train the conditional GAN on ``dataset`` (see module doc); returns (EMA generator on the CPU, meta).

    Deterministic for a given ``seed`` (one torch thread on CPU): every random draw comes
    from the CPU's global RNG seeded here, inside ``fork_rng`` so the caller's RNG state is left
    as it was. Progress goes to the run's log about every 10 s (``LogProgress``); the CLI
    also prints the losses every ``log_every`` steps (0: not).
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return _train(dataset, steps, seed, batch_size, data_root, log_every, gen_kwargs, torch.device(device))


def _train(dataset, steps, seed, batch_size, data_root, log_every, gen_kwargs, device):
    images, labels, num_classes = prior_images(dataset, data_root)
    gen = Generator(num_classes=num_classes, image_size=images.shape[-1], channels=images.shape[1],
                    **(gen_kwargs or {}))
    disc = Discriminator(num_classes, images.shape[1])
    gen, disc = gen.to(device), disc.to(device)  # built on the CPU (the same initial weights), then moved
    ema = copy.deepcopy(gen).eval().requires_grad_(False)
    opt_g = torch.optim.Adam(gen.parameters(), 2e-4, betas=(0.0, 0.9))
    opt_d = torch.optim.Adam(disc.parameters(), 2e-4, betas=(0.0, 0.9))
    t0 = time.perf_counter()
    progress = LogProgress(f"gan prior on {dataset}", steps, "step")  # the run's log, every ~10 s
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(images), (batch_size,))
        real, y = images[idx].to(device), labels[idx].to(device)
        z = torch.randn(batch_size, gen.z_dim).to(device)
        fake = gen(z, y)
        d_loss = F.relu(1 - disc(translate(real), y)).mean() + F.relu(1 + disc(translate(fake.detach()), y)).mean()
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        g_loss = -disc(translate(fake), y).mean()
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        with torch.no_grad():
            decay = min(0.999, (1 + step) / (10 + step))
            for pe, pg in zip(ema.parameters(), gen.parameters()):
                pe.lerp_(pg, 1 - decay)
        progress.tick()
        if log_every and (step % log_every == 0 or step == steps):
            print(f"[gan {dataset}] step {step}/{steps} d={d_loss.item():.3f} g={g_loss.item():.3f} "
                  f"({time.perf_counter() - t0:.0f}s)", flush=True)
    restat(ema)
    meta = {"dataset": dataset, "steps": steps, "seed": seed, "train-images": len(images)}  # no timings,
    # so the same seed gives the same checkpoint
    if device.type != "cpu":  # a GPU's rounding differs: say where it was trained
        meta["device"] = str(device)
    return ema.cpu(), meta


def checkpoint_path(out_dir: str | Path, dataset: str, steps: int, seed: int) -> Path:
    return Path(out_dir).expanduser().resolve() / "gan" / f"{dataset}-steps{steps}-seed{seed}.pt"


def ensure_prior(dataset: str, out_dir: str | Path, steps: int = 2000, seed: int = 0, data_root: str = "",
                 log_every: int = 500, device: torch.device | str = "cpu") -> Path:
    """The cached checkpoint for (dataset, steps, seed) under ``out-dir/gan``; trained (on ``device``) if missing."""
    path = checkpoint_path(out_dir, dataset, steps, seed)
    if not path.exists():
        gen, meta = train_gan(dataset, steps, seed, data_root=data_root, log_every=log_every, device=device)
        save_checkpoint(path, gen, label_space(dataset), class_names(dataset, gen.num_classes), meta)
    return path


def save_samples(gen: Generator, path: Path, per_class: int = 8) -> None:
    """A PNG grid: one row per class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    torch.manual_seed(0)
    with torch.no_grad():
        y = torch.arange(gen.num_classes).repeat_interleave(per_class)
        img = (gen(torch.randn(len(y), gen.z_dim), y) + 1) / 2
    fig, axes = plt.subplots(gen.num_classes, per_class, figsize=(per_class * 0.6, gen.num_classes * 0.6))
    for ax, im in zip(axes.flat, img):
        ax.imshow(im.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
        ax.axis("off")
    fig.tight_layout(pad=0.1)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attacks.train_gan", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits", help="digits, fashion-mnist, mnist-holdout, ...")
    parser.add_argument("--out-dir", default="outputs", help="checkpoint goes to OUT-DIR/gan/ (the run-config default)")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", default="")
    parser.add_argument("--force", action="store_true", help="retrain even if the checkpoint exists")
    parser.add_argument("--z-dim", type=int, help="generator latent size (default: models.generator's)")
    parser.add_argument("--widths", help="generator widths, e.g. 64,32,16,8 (default: models.generator's)")
    parser.add_argument("--out", help="checkpoint path (default: OUT-DIR/gan/<dataset>-steps<N>-seed<S>.pt)")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default cpu)")
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device, "--device")
    except ValueError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    torch.set_num_threads(1)  # tiny convs: one thread is faster, and much faster on a shared machine
    path = checkpoint_path(args.out_dir, args.dataset, args.steps, args.seed)
    gen_kwargs = {}
    if args.z_dim:
        gen_kwargs["z_dim"] = args.z_dim
    if args.widths:
        gen_kwargs["widths"] = tuple(int(w) for w in args.widths.split(","))
    if args.out or gen_kwargs:  # a custom generator: its own file (plug in with gan-checkpoint=<path>)
        path = Path(args.out or path.with_name(path.stem + "-" + "-".join(
            f"{k.replace('_', '')}{'x'.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in gen_kwargs.items())
                                                + ".pt")).expanduser().resolve()
        if args.force or not path.exists():
            gen, meta = train_gan(args.dataset, args.steps, args.seed, data_root=args.data_root, gen_kwargs=gen_kwargs,
                                  device=device)
            save_checkpoint(path, gen, label_space(args.dataset), class_names(args.dataset, gen.num_classes), meta)
    else:
        if args.force and path.exists():
            path.unlink()
        path = ensure_prior(args.dataset, args.out_dir, args.steps, args.seed, args.data_root, device=device)
    gen, _ = load_checkpoint(path)
    save_samples(gen, path.with_suffix(".png"))
    print(f"checkpoint: {path}\nsamples: {path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
