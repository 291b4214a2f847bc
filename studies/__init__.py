"""Study tools behind the pages of ``docs/results/``: each reads runs or replays a round and
prints or writes the tables a page shows. Not part of a run (the app never imports them).

- ``fedhip``: FedHiP's feature study, the linear-head lr probe, paired tables.
- ``fedsdwc_probe``: the terms of trained FedSDWC checkpoints.
- ``fedlsi_pool``: pools FedDG-LSI's comparison runs over held-out domains for the report.
- ``gifd_benchmark``, ``gifd_rounds``: the GIFD attack grid without Flower, and leakage over rounds.
- ``compare_breaching``, ``calibrate_gifd_radii``: our attacks against breaching's; GIFD's l1 radii.
"""
