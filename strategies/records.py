"""What a method's own records may hold, checked after ``replies.check_reply`` (shapes,
dtypes, finiteness) and before anything reads them. Each rule is a necessary property
of what an honest client computes, cheap to check (no decomposition); the rules are
listed in docs/security.md ("Method records").

- FedHiP statistics (``gram-triu``, ``q``, ``counts``): counts whole, >= 0, summing to
  ``num-examples`` (so ``max-num-examples`` caps them); the Gram ``XᵀX`` has a
  non-negative diagonal and obeys Cauchy-Schwarz (``|G_ij| <= sqrt(G_ii G_jj)``, a
  necessary condition for positive semi-definiteness); ``Q = XᵀY`` obeys
  ``|Q_jc| <= sqrt(n_c G_jj)``; and the mean squared feature norm ``trace(G) / n`` is at
  most ``feature_bound`` (set by the strategy from the server's own features), so a
  scaled Gram cannot outweigh the others.
- FedDG-LSI importances (MAS: mean absolute gradients): >= 0 and <= ``MAX_IMPORTANCE``,
  so that ``n_k Omega_k`` sums over any federation stay finite in float64.
- Ground truth (``sim-ground-truth``, simulation only): ``images`` real float of the
  dataset's input shape with values in a pixel-like range, ``labels`` int64 in
  ``[0, num_classes)``, one label per image; its shapes and byte size are capped by
  ``ground_truth_spec`` before it is decoded.
"""

from __future__ import annotations

import numpy as np
from flwr.app import RecordDict

from .replies import Spec

MAX_IMPORTANCE = 1e12
TOLERANCE = 1e-6  # relative slack for float64 round-off in the inequalities
MAX_PIXEL = 1e3  # images are normalized or in [0, 255]: anything beyond is not an image


def _np(content: RecordDict, record: str, key: str) -> np.ndarray:
    return content.array_records[record][key].numpy()


def check_statistics(content: RecordDict, record: str, feature_bound: float = 0.0) -> str | None:
    """Why a FedHiP statistics record is implausible (rules in the module docstring), or None."""
    n = float(content.metric_records["metrics"]["num-examples"])
    counts = _np(content, record, "counts").astype(np.float64)
    if (counts < 0).any() or (np.rint(counts) != counts).any():
        return "counts must be whole numbers >= 0"
    if counts.sum() != n:
        return f"counts sum to {counts.sum():.4g}, not num-examples {n:.4g}"
    q = _np(content, record, "q").astype(np.float64)
    d = q.shape[0]
    tri = _np(content, record, "gram-triu").astype(np.float64)
    rows, cols = np.triu_indices(d)
    diag = tri[rows == cols]
    if (diag < 0).any():
        return "the Gram has a negative diagonal entry (X^T X cannot)"
    scale = np.sqrt(diag[rows] * diag[cols])
    if (np.abs(tri) > scale * (1 + TOLERANCE) + TOLERANCE).any():
        return "the Gram breaks |G_ij| <= sqrt(G_ii G_jj) (not positive semi-definite)"
    if (np.abs(q) > np.sqrt(np.outer(diag, counts)) * (1 + TOLERANCE) + TOLERANCE).any():
        return "q breaks |Q_jc| <= sqrt(n_c G_jj) (not X^T Y of these features)"
    if feature_bound and diag.sum() > n * feature_bound:
        return f"mean squared feature norm {diag.sum() / n:.4g} > {feature_bound:.4g} (server features x 100)"
    return None


def check_importance(content: RecordDict, record: str = "importance") -> str | None:
    """Why FedDG-LSI importance weights are unusable, or None."""
    for key in content.array_records[record].keys():
        values = _np(content, record, key)
        if values.size and (values.min() < 0 or values.max() > MAX_IMPORTANCE):
            return f"importance '{key}' outside [0, {MAX_IMPORTANCE:g}]"
    return None


def ground_truth_spec(input_shape: tuple, max_rows: int) -> dict[str, Spec]:
    """The ground-truth record's arrays: up to ``max_rows`` images and labels."""
    return {"images": Spec((None, *input_shape), ("float32",), max_rows),
            "labels": Spec((None,), ("int64",), max_rows)}


def check_ground_truth(content: RecordDict, record: str, num_classes: int) -> str | None:
    """Why a ground-truth record is unusable (after ``ground_truth_spec``), or None."""
    images, labels = _np(content, record, "images"), _np(content, record, "labels")
    if len(images) != len(labels):
        return f"ground truth holds {len(images)} images but {len(labels)} labels"
    if labels.min() < 0 or labels.max() >= num_classes:
        return f"ground-truth labels outside [0, {num_classes})"
    if np.abs(images).max() > MAX_PIXEL:
        return f"ground-truth images hold values beyond {MAX_PIXEL:g}"
    return None


def take_ground_truth(content: RecordDict, accept: bool, input_shape: tuple, num_classes: int,
                      max_rows: int) -> tuple[dict | None, str | None]:
    """Remove the ground-truth record from a reply: (its tensors, None), (None, why it is
    refused), or (None, None) where the reply holds none. ``accept``: the server asked
    for it this round in a simulation (``partition-assignment=server``); a real node's
    reply holding it is refused whatever it holds."""
    from clients.base import SIM_GROUND_TRUTH

    from .replies import check_array

    if SIM_GROUND_TRUTH not in content.array_records:
        return None, None
    if not accept:
        return None, f"unexpected ArrayRecord(s) ['{SIM_GROUND_TRUTH}'] (sent only in a simulation, when asked)"
    record = content.array_records[SIM_GROUND_TRUTH]
    specs = ground_truth_spec(tuple(input_shape), max_rows)
    if set(record.keys()) != set(specs):
        return None, f"ArrayRecord '{SIM_GROUND_TRUTH}' must hold exactly {sorted(specs)}"
    for key, spec in specs.items():
        reason = check_array(f"{SIM_GROUND_TRUTH}/{key}", record[key], spec)
        if reason:
            return None, reason
    reason = check_ground_truth(content, SIM_GROUND_TRUTH, num_classes)
    if reason:
        return None, reason
    del content[SIM_GROUND_TRUTH]
    return record.to_torch_state_dict(), None
