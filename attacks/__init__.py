"""Gradient-inversion attacks: a library of pure torch functions (no Flower, no ground truth).

The server-side strategies call it: ``strategies/gifd.py`` (the malicious server) and the
privacy audit (``strategies/audit.py``); each attack sees only what the server received.

- ``common``: the attacker's view (``AttackInput``), the simulated update, the
  gradient-matching distance and the equal-budget ``Matcher``.
- ``label_inference``: iDLG (batch 1) and count-based labels (larger batches).
- ``dlg`` (``dlg``/``idlg``), ``ig``, ``ggl`` (CMA-ES ``ggl``, Adam ``ggl-adam``), ``gifd``: the
  attacks, each a plain function of an ``AttackInput``; ``l1``: Duchi's l1-ball projection.
- ``prior``: the GAN prior and GIFD's label mapping; ``train_gan``: trains the prior.
- ``metrics``: PSNR/SSIM/LPIPS/label accuracy (evaluator side only).
- ``local_training``: the announced local training replayed on candidate images (weight
  uploads); ``statistics``: class means and feature inversion from FedHiP's statistics.
"""
