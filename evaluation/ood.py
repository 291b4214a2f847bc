"""The OOD evaluation suite that every method gets (``strategies/base.py`` calls it; its
keys are ``OodKeys`` below).

Given a logits function (any ``nn.Module`` or callable ``x -> logits``) and the data,
it returns a flat dict of metrics for the round's row:

- Covariate shift (``corruptions``, ``severity``): ``corrupt-accuracy`` (mean over the
  chosen corruption types) and ``corrupt-accuracy-<type>`` per type, on a corrupted copy
  of a fixed subset (``ood-max-samples``) of the global test set (``datasets/shift.py``);
  ``corrupt-clean-accuracy``, the accuracy on the same images uncorrupted, and
  ``corrupt-ratio`` = ``corrupt-accuracy`` / ``corrupt-clean-accuracy``: robustness apart
  from clean accuracy (1 = corruptions cost nothing).
- Semantic shift (``ood-datasets``): OOD detection with the maximum softmax probability
  (MSP, Hendrycks & Gimpel 2017) and, as a second score, the negative energy
  ``logsumexp(logits)`` (Liu et al. 2020). Per OOD set: ``auroc-<set>``, ``fpr95-<set>``,
  ``auroc-energy-<set>``, ``fpr95-energy-<set>``, ``fpr95-foogd-<set>``; and their means
  over the sets without the suffix.

Definitions (higher score = "more in-distribution"):

- AUROC: area under the ROC curve of ID (positive) vs OOD (negative); tied scores count
  one half (the trapezoid through tied points), as in scikit-learn and torchmetrics.
- FPR95: the share of OOD samples accepted (score >= t) at the largest threshold t that
  accepts at least 95% of the ID samples, i.e. FPR at TPR >= 95% read off the exact ROC
  curve without interpolation (samples tied at t are accepted together). This is the
  standard definition (ID positive).
- ``fpr95-foogd``: what FOOGD's code (which FedSDWC's tables follow) reports as FPR95 for
  MSP: the share of *ID* samples rejected at the threshold where at most 5% of the OOD
  samples are accepted (FNR at FPR 5% with OOD positive). A different number, reported
  under its own name so that our figures can be set next to the paper's tables.

Both are computed with torchmetrics (``binary_auroc``, ``binary_roc``) on the rank of
each score, not the score itself: torchmetrics squashes scores outside [0, 1] through a
sigmoid, which would turn large energy scores into artificial ties in float32.
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
from pydantic import Field
from torch.nn import functional as F

from common.keys import ConfigError, Int, Keys
from datasets.registry import DataBundle

LogitsFn = Callable[[torch.Tensor], torch.Tensor]


# ---- detection metrics ------------------------------------------------------------
def _ranked(id_scores, ood_scores) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores mapped to their dense rank in [0, 1] (ties kept), and the ID=1 targets."""
    s_id = torch.as_tensor(id_scores, dtype=torch.float64).flatten()
    s_ood = torch.as_tensor(ood_scores, dtype=torch.float64).flatten()
    if not len(s_id) or not len(s_ood):
        raise ValueError("AUROC/FPR95 need at least one ID and one OOD score")
    scores = torch.cat([s_id, s_ood])
    if not torch.isfinite(scores).all():
        raise ValueError("AUROC/FPR95 got NaN or inf scores")
    _, rank = torch.unique(scores, return_inverse=True)
    preds = rank.double() / max(int(rank.max()), 1)
    target = torch.cat([torch.ones(len(s_id)), torch.zeros(len(s_ood))]).long()
    return preds, target


def auroc(id_scores, ood_scores) -> float:
    """Area under the ROC curve, ID positive; ties count 1/2."""
    from torchmetrics.functional.classification import binary_auroc

    preds, target = _ranked(id_scores, ood_scores)
    return float(binary_auroc(preds, target))


def fpr_at_tpr(id_scores, ood_scores, tpr: float = 0.95) -> float:
    """Share of OOD accepted at the largest threshold accepting >= ``tpr`` of ID (FPR95)."""
    from torchmetrics.functional.classification import binary_roc

    preds, target = _ranked(id_scores, ood_scores)
    fpr_curve, tpr_curve, _ = binary_roc(preds, target)
    ok = torch.nonzero(tpr_curve >= tpr - 1e-12)
    return float(fpr_curve[ok[0, 0]]) if len(ok) else 1.0


def fpr95_foogd(id_scores, ood_scores) -> float:
    """Share of ID rejected (score < t) at the lowest threshold t accepting <= 5% of OOD."""
    s_id = torch.as_tensor(id_scores, dtype=torch.float64).flatten()
    ood = torch.as_tensor(ood_scores, dtype=torch.float64).flatten().sort(descending=True).values
    k = int(0.05 * len(ood))  # at most k OOD samples accepted
    t = ood[k - 1] if k else torch.tensor(float("inf"), dtype=torch.float64)
    if k and int((ood >= t).sum()) > k:  # a tie at t would accept more than k: move just above it
        t = torch.nextafter(t, torch.tensor(float("inf"), dtype=torch.float64))
    return float((s_id < t).double().mean())


def msp(logits: torch.Tensor) -> torch.Tensor:
    return F.softmax(logits.double(), dim=1).max(dim=1).values


def energy(logits: torch.Tensor) -> torch.Tensor:
    """Negative free energy at temperature 1: high for ID."""
    return torch.logsumexp(logits.double(), dim=1)


# ---- model helpers ------------------------------------------------------------------
@torch.no_grad()
def predict(logits_fn: LogitsFn, data, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of ``data`` (an ArrayDataset or any (x, y) dataset)."""
    from clients.base import batches

    if isinstance(logits_fn, torch.nn.Module):
        logits_fn.eval()
    outs, ys = [], []
    for x, y in batches(data, batch_size):
        outs.append(logits_fn(x).float())
        ys.append(y)
    return torch.cat(outs), torch.cat(ys)


def detection_metrics(id_logits: torch.Tensor, ood_logits: torch.Tensor, suffix: str = "") -> dict[str, float]:
    out = {}
    for name, score in (("", msp), ("-energy", energy)):
        s_id, s_ood = score(id_logits), score(ood_logits)
        out[f"auroc{name}{suffix}"] = auroc(s_id, s_ood)
        out[f"fpr95{name}{suffix}"] = fpr_at_tpr(s_id, s_ood, 0.95)
    out[f"fpr95-foogd{suffix}"] = fpr95_foogd(msp(id_logits), msp(ood_logits))
    return out


def shift_metrics(logits_fn: LogitsFn, corrupted: dict, id_data, ood_sets: dict, batch_size: int = 512) -> dict[str, float]:
    """The suite on prepared data: ``corrupted`` name -> dataset, ``ood_sets`` name -> dataset;
    ``id_data`` the clean images that were corrupted (and the ID side of detection)."""
    out: dict[str, float] = {}
    id_logits = id_y = None
    if id_data is not None and (corrupted or ood_sets):
        id_logits, id_y = predict(logits_fn, id_data, batch_size)
    if corrupted:
        accs = {}
        for name, data in corrupted.items():
            logits, y = predict(logits_fn, data, batch_size)
            accs[name] = float((logits.argmax(1) == y).float().mean())
        out["corrupt-accuracy"] = sum(accs.values()) / len(accs)
        out.update({f"corrupt-accuracy-{k}": v for k, v in accs.items()})
        if id_logits is not None:
            clean = float((id_logits.argmax(1) == id_y).float().mean())
            out["corrupt-clean-accuracy"] = clean
            out["corrupt-ratio"] = out["corrupt-accuracy"] / clean if clean > 0 else float("nan")
    if ood_sets:
        per_set = {}
        for name, data in ood_sets.items():
            ood_logits, _ = predict(logits_fn, data, batch_size)
            per_set[name] = detection_metrics(id_logits, ood_logits)
            out.update(detection_metrics(id_logits, ood_logits, f"-{name}"))
        for key in per_set[next(iter(per_set))]:
            out[key] = sum(m[key] for m in per_set.values()) / len(per_set)
    return out


# ---- config and data --------------------------------------------------------------
def requested(cfg: dict) -> bool:
    return bool(str(cfg.get("corruptions", "")).strip() or str(cfg.get("ood-datasets", "")).strip())


def due(cfg: dict, server_round: int) -> bool:
    """After the last round, and every ``ood-eval-every`` rounds when that is > 0."""
    if server_round < 1 or not requested(cfg):
        return False
    every = int(cfg.get("ood-eval-every", 0))
    return server_round == int(cfg["num-server-rounds"]) or (every > 0 and server_round % every == 0)


class OodKeys(Keys):
    """The OOD evaluation suite (any method; see docs/methods/fedsdwc.md)."""

    corruptions: str = Field("", description="covariate shift: `\"\"` = off, `all` (19 CIFAR-10-C types), "
                                             "`common` (15) or a comma list, e.g. `fog,contrast`")
    severity: Int = Field(0, ge=0, le=5, description="corruption severity 1..5, or 0 = image i gets level i % 5 + 1")
    corruption_seed: Int = Field(0, ge=0, description="seeds the corrupted images (same for every method and seed)")
    corruption_constants: Literal["auto", "cifar", "imagenet"] = Field(
        "auto", description="severity constants: `cifar` (CIFAR-10-C's, 14 of the 19 types; `datasets/cifar_c.py`), "
                            "`imagenet` (the library's ImageNet-C ones), `auto` = `cifar` for images of 32 px and below")
    ood_datasets: str = Field("", description="semantic shift: comma list of OOD sets, e.g. `mnist` for "
                                              "Fashion-MNIST, `digits`, synthetic `noise-gaussian`, "
                                              "`noise-rademacher`, `blobs`; `\"\"` = off")
    ood_max_samples: Int = Field(2000, ge=0, description="size of the fixed ID/corrupted/OOD subsets (0 = all)")
    ood_eval_every: Int = Field(0, ge=0, description="run the suite every N rounds too (0 = last round only); "
                                                  "these rounds are evaluated whatever `evaluate-every` says")

    @classmethod
    def check(cls, cfg: dict) -> None:
        """The corruption and OOD set names exist (checked without loading data), and the
        in-distribution dataset is not among the OOD sets."""
        from datasets.registry import DataError
        from datasets.shift import corruption_names, known_ood_names, ood_names

        try:
            corruption_names(str(cfg["corruptions"]))
        except DataError as err:
            raise ConfigError(f"corruptions: {err}") from None
        names = ood_names(str(cfg["ood-datasets"]))
        bad = [n for n in names if n not in known_ood_names()]
        if bad:
            raise ConfigError(f"unknown ood-datasets {bad}: pass a comma list of {known_ood_names()}")
        if cfg.get("dataset") in names:
            raise ConfigError(f"ood-datasets contains the in-distribution dataset '{cfg['dataset']}'")


class ShiftSuite:
    """The shifted data of one run (built once, on first use) and its evaluation."""

    def __init__(self, cfg: dict, bundle: DataBundle):
        from datasets.shift import (
            corrupted_sets,
            corruption_names,
            id_subset,
            ood_names,
            ood_set,
        )

        self.cfg = cfg
        n, root = int(cfg["ood-max-samples"]), str(cfg["data-root"])
        self.corrupted = corrupted_sets(bundle, corruption_names(str(cfg["corruptions"])), int(cfg["severity"]),
                                        int(cfg["corruption-seed"]), n, root, str(cfg["corruption-constants"]))
        self.ood = {name: ood_set(name, bundle, n, root, bool(cfg["download"]), int(cfg["corruption-seed"]))
                    for name in ood_names(str(cfg["ood-datasets"]))}
        self.id_data = id_subset(bundle, n)  # the same fixed subset the corrupted copies are made of

    def __call__(self, logits_fn: LogitsFn) -> dict[str, float]:
        return shift_metrics(logits_fn, self.corrupted, self.id_data, self.ood)
