"""Label counts per client: the preview command and a run's partitions.png."""

import numpy as np
from PIL import Image

from datasets import load_for
from datasets.partition import server_validation
from simulations.config import resolve
from simulations.local import run_local
from simulations.partitions import label_counts, main


def test_preview_counts_match_the_partitioner_and_draws_a_picture(tmp_path, capsys):
    out = tmp_path / "p.png"
    assert main(["--run-config", "partitioner='pathological' classes-per-client=2 seed=3",
                 "--num-supernodes", "5", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "5 clients, pathological 2 classes/client, seed 3" in text and "classes per client min 2 / max 2" in text
    assert Image.open(out).size[0] > 100
    cfg = resolve({"partitioner": "pathological", "classes-per-client": 2, "seed": 3})
    counts = label_counts(cfg, load_for(cfg), 5)
    assert counts.shape == (5, 10) and ((counts > 0).sum(1) == 2).all()
    pool, held = server_validation(cfg, load_for(cfg))  # the server keeps its validation split
    assert len(held) > 0 and counts.sum() == len(pool)  # every other sample once


def test_bad_preview_is_one_line(tmp_path, capsys):
    assert main(["--run-config", "partitioner='nope'", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown partitioner 'nope'") and len(err.splitlines()) == 1
    assert not (tmp_path / "x.png").exists()


def test_a_run_writes_its_partitions_picture(tmp_path):
    cfg = resolve({"num-server-rounds": 1, "local-epochs": 1, "partitioner": "draw", "samples-per-client": 30,
                   "out-dir": str(tmp_path), "run-name": "r"})
    run_dir = run_local(cfg, 3)
    image = np.asarray(Image.open(run_dir / "partitions.png"))
    assert image.ndim == 3 and image.shape[1] > 100
