"""Gradient-inversion attacks for the GIFD experiment (pure torch, no Flower, no ground truth).

- ``common``: the attacker's view (``AttackInput``), the simulated update, the
  gradient-matching distance and the equal-budget ``Matcher``.
- ``label_inference``: iDLG (batch 1) and count-based labels (larger batches).
- ``dlg`` (``dlg``/``idlg``), ``ig``, ``ggl`` (CMA-ES ``ggl``, Adam ``ggl-adam``), ``gifd``: the
  attacks, each a plain function of an ``AttackInput``; ``l1``: Duchi's l1-ball projection.
- ``prior``: the GAN prior and GIFD's label mapping; ``train_gan``: trains the prior.
- ``metrics``: PSNR/SSIM/LPIPS/label accuracy (evaluator side only).
- ``benchmark``: the experiment without Flower (same code path as ``strategies/gifd.py``);
  ``rounds``: the summary of a run attacked at several rounds.
"""
