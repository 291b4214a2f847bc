"""Label inference from the last layer's gradient (needs no optimization, no ground truth).

With mean cross-entropy, the gradient of the last layer's bias is
``g_b = mean_i (softmax(z_i) - onehot(y_i))`` and its weight gradient is
``g_W[c] = mean_i (p_ic - y_ic) h_i`` with non-negative features h_i (after a ReLU).

- Batch 1 (iDLG, Zhao et al. 2020): the true label is the only class with a negative
  entry: ``argmin g_b`` (``argmin sum_j g_W[c, j]`` without a bias; breaching's
  ``_recover_label_information``, GIFD's ``argsort(sum(g*[-2]))[:B]``).
- Batch B > 1 (count-based, as in Geng et al. 2021 / Ma et al.'s iLRG): the count of
  class c is ``n_c = B (pbar_c - g_b[c])`` where pbar is the batch-mean softmax. The
  attacker does not know the batch, so pbar is estimated as the model's mean softmax on
  random inputs in the valid pixel box (close for the untrained model of round 1). Every
  class with a negative bias gradient gets at least one sample and the counts are
  rounded to sum to B (largest remainder). Unlike GIFD's top-B rule this handles
  repeated labels (invertinggradients#11).
- FedAvg updates: ``(w_sent - w_received) / (lr * steps)`` stands in for the gradient
  (``(1 - momentum) / (lr * steps)`` for an announced local training with momentum, whose
  labels are counted over its ``num_examples`` images).
"""

from __future__ import annotations

import torch
from torch.func import functional_call

from .common import AttackInput


def last_layer(inp: AttackInput) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight, bias) of the classifier in the attacker's pseudo-gradient."""
    if inp.procedure is not None:  # SGD with momentum m moves about lr / (1 - m) per unit gradient
        proc = inp.procedure
        scale = (1 - proc.momentum) / (proc.lr * proc.steps)
    else:
        scale = 1.0 if inp.threat == "fedsgd" else 1.0 / (inp.lr * max(int(inp.local_steps), 1))
    names = list(inp.target)
    weights = [n for n in names if inp.target[n].ndim == 2 and inp.target[n].shape[0] == inp.num_classes]
    if not weights:
        raise ValueError(f"no last-layer weight of shape [{inp.num_classes}, d] in the update")
    w_name = weights[-1]
    b_name = w_name[: -len("weight")] + "bias" if w_name.endswith("weight") else None
    bias = inp.target.get(b_name) if b_name else None
    return inp.target[w_name] * scale, (None if bias is None else bias * scale)


def idlg(g_w: torch.Tensor, g_b: torch.Tensor | None) -> int:
    """Batch-1 label: the only class with a negative (bias or row-sum) gradient."""
    score = g_b if g_b is not None else g_w.sum(1)
    return int(score.argmin())


@torch.no_grad()
def mean_softmax(inp: AttackInput, n: int = 64, seed: int = 0) -> torch.Tensor:
    """Mean softmax of the sent model on random inputs in the pixel box (estimate of pbar)."""
    gen = torch.Generator().manual_seed(seed)
    x = inp.clamp(torch.randn(n, *inp.input_shape, generator=gen).to(inp.device))  # drawn on the CPU
    logits = functional_call(inp.model, {**inp.buffers, **inp.params}, (x,))
    return logits.softmax(1).mean(0)


def count_labels(g_b: torch.Tensor, batch_size: int, pbar: torch.Tensor) -> torch.Tensor:
    """Per-class counts from the bias gradient (sum = batch_size)."""
    est = (batch_size * (pbar - g_b)).clamp(min=0)
    counts = est.floor().long()
    present = g_b < 0
    counts[present] = counts[present].clamp(min=1)
    while counts.sum() < batch_size:
        counts[int((est - counts).argmax())] += 1
    while counts.sum() > batch_size:
        surplus = torch.where(counts > present.long(), counts - est, torch.full_like(est, -1e9))
        counts[int(surplus.argmax())] -= 1
    return counts


def infer_labels(inp: AttackInput, seed: int = 0) -> torch.Tensor:
    """The batch's labels, sorted (iDLG for one image, counts for more), on the CPU wherever ``inp`` is."""
    g_w, g_b = last_layer(inp)
    if inp.batch_size == 1:
        return torch.tensor([idlg(g_w, g_b)])
    if g_b is None:  # no bias: classes by most negative weight-row sums, one each, then repeat the most negative
        order = g_w.sum(1).argsort().cpu()
        return order.repeat(inp.batch_size // len(order) + 1)[: inp.batch_size].sort().values
    counts = count_labels(g_b.float().cpu(), inp.batch_size, mean_softmax(inp, seed=seed).cpu())
    return torch.repeat_interleave(torch.arange(len(counts)), counts)
