"""Is any part of a trained FedSDWC inert? ``python -m studies.fedsdwc_probe DIR [--images N]``.

For every run of a sweep folder whose method is FedSDWC or one of its ablations, the
final global model (its ``checkpoint.pt``, read with ``weights_only=True``) is scored on
the first N images of the global test set, on the mean path the evaluation uses:

- ``link-flip``: share of predictions that change when the link g(v) is zeroed
  (``classifier(mu_s)`` against ``classifier(mu_s + g(mu_v))``); 0 without the link;
- ``link-ratio``: mean ||g(mu_v)|| / ||mu_s||, the size of the weak link's shift;
- ``intervention-kl``: KL(p(y | h_s, h_v) || p(y | h_s, h_v + gamma eps)) at the run's gamma,
  the quantity the interventional loss penalizes (measured in every arm, also where the
  loss is off), and ``intervention-flip``, the share of predictions it changes;
- ``share-<term>``: each term of the objective, at the run's weights, as its gradient norm on
  the shared encoder over the sum of them (``encoder_shares``, on the same images with their
  labels): how much each component still drives the encoder at the chosen weights.

Writes ``DIR/fedsdwc_probe.csv`` (one row per run) and prints the mean per method.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch
from torch.nn import functional as F

from clients.fedsdwc import TERMS, VARIANTS, sdwc_terms, term_weights, variant_config
from common import markdown as md
from datasets.registry import load_for
from models.causal import build_sdwc
from simulations.selection import phases


@torch.no_grad()
def probe(model, x: torch.Tensor, gamma: float, seed: int = 0) -> dict[str, float]:
    """The four numbers of the module docstring for one model on images ``x``."""
    h_s, h_v = model.heads(x)
    mu_s = model._gauss(model.q_s(h_s))[0]
    shift = model.shift(model._gauss(model.q_v(h_v))[0])
    clean = model.classifier(mu_s + shift)
    pred = clean.argmax(1)
    eps = torch.randn(h_v.shape, generator=torch.Generator().manual_seed(seed))
    noisy = model.mean_logits(h_s, h_v + gamma * eps)
    kl = F.kl_div(F.log_softmax(noisy, 1), F.log_softmax(clean, 1), reduction="batchmean", log_target=True)
    return {"link-flip": (model.classifier(mu_s).argmax(1) != pred).float().mean().item(),
            "link-ratio": (shift.norm(dim=1) / mu_s.norm(dim=1).clamp_min(1e-12)).mean().item(),
            "intervention-kl": kl.item(),
            "intervention-flip": (noisy.argmax(1) != pred).float().mean().item()}


def encoder_shares(model, batches, cfg: dict) -> dict[str, float]:
    """Each term's weighted gradient norm on the encoder, summed over ``batches`` of
    (images, labels), as a share of the sum over terms; the weights are the objective's
    (``term_weights``)."""
    weight = term_weights(cfg)
    params = list(model.encoder.parameters())
    norms = dict.fromkeys(TERMS, 0.0)
    for x, y in batches:
        terms = sdwc_terms(model, x, y, float(cfg["intervention-gamma"]), int(cfg["sdwc-mc-samples"]),
                           float(cfg["sdwc-x-std"]))
        for k, v in terms.items():
            if not weight[k] or not v.requires_grad:
                continue  # a term the objective leaves out (or a constant one) moves nothing
            grads = torch.autograd.grad(weight[k] * v, params, retain_graph=True, allow_unused=True)
            norms[k] += sum(float((g**2).sum()) for g in grads if g is not None) ** 0.5
    total = sum(norms.values())
    return {k: n / total if total else 0.0 for k, n in norms.items()}


def probe_run(run_dir: Path, images: int) -> dict | None:
    """One run's row, or None if it is not a finished FedSDWC-family run."""
    path = run_dir / "checkpoint.pt"
    if not path.exists():
        return None
    try:  # weights_only: tensors and plain values only, nothing is unpickled
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        print(f"skipped {path}: not readable as a checkpoint of this code ({type(err).__name__})", file=sys.stderr)
        return None
    cfg = variant_config(state["config"])
    if cfg["method"] not in VARIANTS or cfg["method"] == "fedavg-fourier":
        return None
    data = load_for(cfg)
    model = build_sdwc(cfg, data.num_classes, data.input_shape)
    model.load_state_dict({k: torch.as_tensor(v) for k, v in state["arrays"].items()})
    n = min(images, len(data.test))
    x = torch.stack([data.test[i][0] for i in range(n)])
    y = torch.as_tensor([int(data.test[i][1]) for i in range(n)])
    row = {"run-name": run_dir.name, "method": cfg["method"], "seed": cfg["seed"], "round": state["round"]}
    row |= probe(model.eval(), x, float(cfg["intervention-gamma"]), int(cfg["seed"]))
    torch.manual_seed(int(cfg["seed"]))  # the ELBO's reparameterized samples
    batches = [(x[i:i + 100], y[i:i + 100]) for i in range(0, n, 100)]
    return row | {f"share-{k}": v for k, v in encoder_shares(model, batches, cfg).items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path, help="a sweep's output folder (one sub-folder per run)")
    parser.add_argument("--images", type=int, default=1000, help="test images scored per run (default 1000)")
    args = parser.parse_args(argv)
    if not args.dir.is_dir() or args.images < 1:
        print(f"error: pass an existing sweep folder and --images >= 1 (got {args.dir}, {args.images})",
              file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    rows = [row for d in sorted(args.dir.iterdir()) if d.is_dir() and (row := probe_run(d, args.images))]
    if not rows:
        print(f"error: no finished FedSDWC run (checkpoint.pt) under {args.dir}", file=sys.stderr)
        return 2
    frame = pd.DataFrame(rows)
    frame.insert(3, "phase", phases(args.dir, frame))
    tuning = (frame["phase"] == "tune").any()
    frame.to_csv(args.dir / "fedsdwc_probe.csv", index=False)
    cols = ["link-flip", "link-ratio", "intervention-kl", "intervention-flip", *(f"share-{k}" for k in TERMS)]
    runs = frame[frame["phase"] == "eval"]
    means = runs.groupby("method")[cols].mean()
    counts = runs.groupby("method").size()
    print(f"Mean per method over its {'evaluation ' if tuning else ''}runs (n = runs; fedsdwc_probe.csv has each run):\n")
    print("\n".join(md.table(["method", "n", *cols], ([m, counts[m], *(md.cell(v, ".3g") for v in r)]
                                                      for m, r in means.iterrows()))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
