"""Image metrics of a reconstruction against the ground truth (evaluator side only).

PSNR and SSIM on pixels in [0, 1] (``factor=1`` as in inversefed's metrics), SSIM from
torchmetrics. For a batch, reconstructions are matched to ground-truth images by the
assignment that minimizes total MSE (the order of a reconstructed batch is arbitrary).
LPIPS is computed only where torchvision's AlexNet weights are already on disk
(``$TORCH_HOME/hub/checkpoints``; nothing is downloaded): torchmetrics ships LPIPS's
linear heads but not the backbone, and LPIPS on a randomly initialized backbone would
be meaningless, so otherwise the column is empty and ``lpips_note()`` says why.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"


def psnr(x: torch.Tensor, ref: torch.Tensor) -> float:
    """PSNR of one image (pixels in [0, 1]); inf for identical images."""
    mse = float((x.double() - ref.double()).pow(2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def ssim(x: torch.Tensor, ref: torch.Tensor) -> float:
    from torchmetrics.functional.image import structural_similarity_index_measure

    return float(structural_similarity_index_measure(x[None].float(), ref[None].float(), data_range=1.0))


def _alexnet_weights() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE


def lpips_available() -> bool:
    return _alexnet_weights().exists()


def lpips_note() -> str:
    if lpips_available():
        return "LPIPS (AlexNet) computed with the weights found in " + str(_alexnet_weights().parent)
    return (f"LPIPS not computed: torchvision's AlexNet weights ({ALEXNET_FILE}) are not in "
            f"{_alexnet_weights().parent} and nothing is downloaded at run time")


_LPIPS = None


def lpips(x: torch.Tensor, ref: torch.Tensor) -> float:
    """LPIPS of one image pair, or NaN when the backbone weights are absent."""
    global _LPIPS
    if not lpips_available():
        return math.nan
    if _LPIPS is None:
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        _LPIPS = LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True).eval()
    a, b = x[None].float(), ref[None].float()
    if a.shape[1] == 1:
        a, b = a.repeat(1, 3, 1, 1), b.repeat(1, 3, 1, 1)
    with torch.no_grad():
        return float(_LPIPS(a, b))


def match(rec: torch.Tensor, truth: torch.Tensor) -> np.ndarray:
    """For each ground-truth image, the index of its reconstruction (min total MSE)."""
    from scipy.optimize import linear_sum_assignment

    cost = ((truth[:, None] - rec[None]) ** 2).flatten(2).mean(2).numpy()
    rows, cols = linear_sum_assignment(cost)
    return cols[np.argsort(rows)]


def label_accuracy(pred: torch.Tensor, true: torch.Tensor) -> float:
    """Fraction of the batch's labels recovered (as multisets: order does not matter)."""
    c = max(int(pred.max()), int(true.max())) + 1
    hit = torch.minimum(torch.bincount(pred, minlength=c), torch.bincount(true, minlength=c)).sum()
    return float(hit) / len(true)


def score(rec_pixels: torch.Tensor, rec_labels: torch.Tensor, true_pixels: torch.Tensor,
          true_labels: torch.Tensor) -> list[dict]:
    """One row per ground-truth image: psnr, ssim, lpips, label-accuracy (of the batch)."""
    order = match(rec_pixels, true_pixels)
    acc = label_accuracy(rec_labels, true_labels)
    rows = []
    for i, j in enumerate(order):
        rows.append({"image": i, "true-label": int(true_labels[i]), "match": int(j),
                     "psnr": psnr(rec_pixels[j], true_pixels[i]), "ssim": ssim(rec_pixels[j], true_pixels[i]),
                     "lpips": lpips(rec_pixels[j], true_pixels[i]), "label-accuracy": acc})
    return rows
