"""DLG (Zhu et al., NeurIPS 2019) and iDLG (Zhao et al., 2020): L-BFGS on the pixels.

Settings are breaching's ``attack/deepleakage.yaml``: Euclidean gradient distance
``0.5 sum_l |g_l - g*_l|^2``, ``torch.optim.LBFGS`` with lr 1.0 and its defaults
(20 iterations per step, no line search), N(0, 1) initialization, no box, no
regularizer, one trial.

- ``dlg``: labels are optimized jointly with the pixels: label logits ~ N(0, 1), the
  candidate's loss uses ``softmax(logits)`` as soft targets; the label returned is the
  argmax (breaching's ``OptimizationJointAttacker``).
- ``idlg``: the label is the analytic one (iDLG, ``label_inference``) and only the pixels
  are optimized.

Equal budget: every closure call of L-BFGS is one gradient-matching evaluation, so the
optimizer runs until ``budget`` evaluations are spent (breaching counts 1,200 L-BFGS
steps of up to 25 evaluations each).

What is returned is the optimizer's iterate, as in the official DLG code (which returns the
last iterate) and breaching: after each completed L-BFGS step, the point the step reached is
kept if the loss at the step's start is the lowest step-start loss so far (breaching's rule;
while those losses fall it is the last iterate, and a diverging run keeps its last good
point). A step cut short by the budget is discarded, and so is a point with non-finite entries
(L-BFGS without line search can diverge on a trained model; breaching would return it). This point was not evaluated itself:
the lowest distance *evaluated* is a poorer proxy here (on the budget-100 comparison it
picked transient low-loss points 8-10 dB worse on two of eight images).
"""

from __future__ import annotations

import math
import time

import torch

from .common import AttackInput, AttackResult, BudgetExceeded, Matcher, split_budget


def invert_dlg(inp: AttackInput, labels: torch.Tensor | None, budget: int = 800, restarts: int = 1, lr: float = 1.0,
               distance: str = "euclid", seed: int = 0, batch_size: int | None = None) -> AttackResult:
    """``labels=None``: DLG (joint labels); given labels: iDLG-style fixed labels."""
    t0 = time.perf_counter()
    n = len(labels) if labels is not None else int(batch_size or inp.batch_size)
    dev = inp.device
    matcher = Matcher(inp, labels if labels is not None else torch.zeros(n, dtype=torch.long), budget, distance)
    gen = torch.Generator().manual_seed(seed)  # starting points drawn on the CPU, then moved (the same on a GPU)
    best = keep = None  # (selecting loss, x, label logits)
    for steps in split_budget(budget, restarts):
        if steps <= 0:
            continue
        x = torch.randn(n, *inp.input_shape, generator=gen).to(dev).requires_grad_(True)
        params = [x]
        logits = None
        if labels is None:
            logits = torch.randn(n, inp.num_classes, generator=gen).to(dev).requires_grad_(True)
            params.append(logits)
        opt = torch.optim.LBFGS(params, lr=lr)
        stop = matcher.used + steps
        if keep is None:  # a restart that completes no step returns its starting point
            keep = (math.inf, x.detach().clone(), None if logits is None else logits.detach().clone())

        def closure():
            if matcher.used >= stop:
                raise BudgetExceeded("restart's share spent")
            opt.zero_grad(set_to_none=True)
            loss = matcher(x, None if logits is None else logits.softmax(-1), track=False)
            loss.backward(inputs=params)
            return loss

        try:
            while matcher.used < stop:
                before = matcher.used
                start_loss = float(opt.step(closure))  # LBFGS returns the loss at the step's start
                if not math.isfinite(start_loss):
                    break
                if start_loss < keep[0] and bool(torch.isfinite(x).all()):  # not a step that diverged
                    keep = (start_loss, x.detach().clone(), None if logits is None else logits.detach().clone())
                if matcher.used == before:
                    break
        except BudgetExceeded:
            pass
        if best is None or keep[0] < best[0]:  # restarts: the one with the lowest selecting loss
            best = keep
        keep = None
    if best is None:
        best = (math.inf, torch.zeros(n, *inp.input_shape), None)
    out_labels = labels if labels is not None else (
        best[2].argmax(-1) if best[2] is not None else torch.zeros(n, dtype=torch.long))
    return AttackResult(best[1], out_labels, best[0], matcher.used, time.perf_counter() - t0,
                        {"trace": matcher.trace, "budget-used": dict(matcher.usage)})
