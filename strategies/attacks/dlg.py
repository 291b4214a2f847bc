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
steps of up to 25 evaluations each). The candidate with the lowest distance evaluated is
returned.
"""

from __future__ import annotations

import time

import torch

from .common import AttackInput, AttackResult, BudgetExceeded, Matcher, split_budget


def invert_dlg(inp: AttackInput, labels: torch.Tensor | None, budget: int = 800, restarts: int = 1, lr: float = 1.0,
               distance: str = "euclid", seed: int = 0, batch_size: int | None = None) -> AttackResult:
    """``labels=None``: DLG (joint labels); given labels: iDLG-style fixed labels."""
    t0 = time.perf_counter()
    n = len(labels) if labels is not None else int(batch_size or inp.batch_size)
    matcher = Matcher(inp, labels if labels is not None else torch.zeros(n, dtype=torch.long), budget, distance)
    gen = torch.Generator().manual_seed(seed)
    for steps in split_budget(budget, restarts):
        if steps <= 0:
            continue
        x = torch.randn(n, *inp.input_shape, generator=gen).requires_grad_(True)
        params = [x]
        logits = None
        if labels is None:
            logits = torch.randn(n, inp.num_classes, generator=gen).requires_grad_(True)
            params.append(logits)
        opt = torch.optim.LBFGS(params, lr=lr)
        stop = matcher.used + steps

        def closure():
            if matcher.used >= stop:
                raise BudgetExceeded("restart's share spent")
            opt.zero_grad(set_to_none=True)
            loss = matcher(x, None if logits is None else logits.softmax(-1))
            loss.backward(inputs=params)
            return loss

        try:
            while matcher.used < stop:
                before = matcher.used
                opt.step(closure)
                if matcher.used == before:
                    break
        except BudgetExceeded:
            pass
    if labels is None:
        best = matcher.best_labels
        out_labels = best.argmax(-1) if best is not None and best.ndim == 2 else torch.zeros(n, dtype=torch.long)
    else:
        out_labels = labels
    best_x = matcher.best_x if matcher.best_x is not None else torch.zeros(n, *inp.input_shape)
    return AttackResult(best_x, out_labels, matcher.best_loss, matcher.used, time.perf_counter() - t0,
                        {"trace": matcher.trace})
