"""Files and real nodes: out-dir and run-name, symlinks, checkpoints, images, YAML,
echoed values, a node without its own data, a run that cannot work on real nodes."""

from __future__ import annotations

import pytest
import torch
from flwr.app import Context, RecordDict

from common.keys import ConfigError, shown
from common.outputs import check_run_folder
from simulations.config import resolve
from simulations.local import LocalGrid, run_logged


def _tiny(out, **over) -> dict:
    return resolve({"num-server-rounds": 1, "local-epochs": 0, "fraction-evaluate": 0.0, "out-dir": str(out),
                    "run-name": "r", **over})


# ---- out-dir and run-name ---------------------------------------------------------------------
def test_out_dir_that_is_a_file_and_a_long_run_name_fail_in_one_line_before_data_loads(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is not a folder") as err:
        check_run_folder(_tiny(tmp_path / "file"))
    assert len(str(err.value).splitlines()) == 1
    status, reason, _ = run_logged(_tiny(tmp_path / "file"), 2, tmp_path / "a.log")
    assert status == "finished:failed" and "is not a folder" in reason
    with pytest.raises(ConfigError, match="at most 128 characters") as err:
        resolve({"run-name": "a" * 300})
    assert len(str(err.value)) < 300


def test_a_symlinked_run_folder_or_file_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "r").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ConfigError, match="symbolic link"):
        check_run_folder(_tiny(tmp_path / "out"))
    (tmp_path / "out" / "r").unlink()
    (tmp_path / "out" / "r").mkdir()
    (tmp_path / "out" / "r" / "metrics.csv").symlink_to(outside / "m.csv")
    with pytest.raises(ConfigError, match="symbolic link"):
        check_run_folder(_tiny(tmp_path / "out", overwrite=True))
    assert list(outside.iterdir()) == []


# ---- checkpoints --------------------------------------------------------------------------------
@pytest.mark.parametrize("damage, reason", [
    (lambda s: s.update(rng=("x", 1, 2)), "rng is not the random states"),
    (lambda s: s.update(rows="not rows"), "rows must be a list"),
    (lambda s: s["arrays"].update({k: torch.zeros(3) for k in list(s["arrays"])[:1]}), "this run's model has"),
    (lambda s: s["arrays"].pop(next(iter(s["arrays"]))), "its model has arrays"),
    (lambda s: s.update(round=-1), "round must be an integer >= 0"),
])
def test_a_checkpoint_is_validated_against_the_run_before_resume(tmp_path, damage, reason):
    assert run_logged(_tiny(tmp_path), 2, tmp_path / "1.log")[0] == "finished:completed"
    path = tmp_path / "r" / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    damage(state)
    torch.save(state, path)
    status, why, _ = run_logged(_tiny(tmp_path, resume=True), 2, tmp_path / "2.log")
    assert status == "finished:failed" and "refused to load" in why and reason in why, why
    assert len(why.splitlines()) == 1


# ---- YAML and echoed values ----------------------------------------------------------------------
def test_a_yaml_alias_bomb_is_refused_in_one_line(tmp_path, capsys):
    from simulations.sweep import main

    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]" for i in range(9)]
    spec = tmp_path / "bomb.yaml"
    spec.write_text("\n".join(lines) + "\n")
    assert main([str(spec), "--out-dir", str(tmp_path / "out"), "--check"]) == 2
    err = capsys.readouterr().err.strip()
    assert "expand to more than" in err and len(err.splitlines()) == 1


def test_error_messages_cap_and_escape_echoed_values():
    assert shown("x\ny") == "'x\\ny'"
    long = shown("a" * 1000)
    assert len(long) < 120 and long.endswith("(1002 characters)")
    with pytest.raises(ConfigError) as err:
        resolve({"device": "cuda\n" + "x" * 1000})
    assert len(str(err.value).splitlines()) == 1 and len(str(err.value)) < 250


# ---- real nodes -------------------------------------------------------------------------------------
def test_a_real_node_without_its_own_data_root_refuses_in_one_line():
    from simulations.client_app import setup

    def ctx(**node):
        return Context(run_id=1, node_id=5, node_config=node, state=RecordDict(), run_config=dict(resolve({})))

    with pytest.raises(ValueError, match="no data-root in its node config") as err:
        setup(ctx(**{"partition-id": 0, "num-partitions": 2}))
    assert len(str(err.value).splitlines()) == 1
    with pytest.raises(ValueError, match="min-class-samples must be an integer"):
        setup(ctx(**{"sim-ground-truth": True, "min-class-samples": "x"}))


class RealNodes(LocalGrid):
    """In-process nodes configured as real SuperNodes (their own data-root, no simulation flag)."""

    def context(self, node):
        context = super().context(node)
        if context is not None:
            context.node_config.pop("sim-ground-truth", None)
            context.node_config["data-root"] = self.data_root
        return context


def test_server_assignment_on_real_nodes_fails_at_start_with_one_line(tmp_path):
    from simulations.client_app import app as client_app
    from simulations.server_app import RunAborted, main

    cfg = _tiny(tmp_path)
    grid = RealNodes(client_app, 2, cfg)
    grid.data_root = str(tmp_path / "data")
    with pytest.raises(RunAborted, match="is a real SuperNode") as err:
        main(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=dict(cfg)))
    assert len(str(err.value).splitlines()) == 1
    assert not (tmp_path / "r" / "metrics.csv").exists()
