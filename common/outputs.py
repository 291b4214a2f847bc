"""Where a run writes: ``out-dir`` made absolute, a plain ``run-name``, and the rule that
a run folder is never overwritten by accident."""

from __future__ import annotations

import re
from pathlib import Path

from common.keys import ConfigError


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


RUN_NAME = re.compile(r"[A-Za-z0-9_=-][A-Za-z0-9._=-]*")


def check_run_name(name) -> None:
    """``run-name`` is one plain folder name, so that a run writes under ``out-dir`` only."""
    _check(isinstance(name, str) and (name == "" or (RUN_NAME.fullmatch(name) is not None and name != "..")),
           f"run-name must be a plain folder name (letters, digits, '._=-', no '/', not '.' or '..'), got {name!r}")


def out_root(cfg: dict) -> Path:
    """``out-dir`` as an absolute path (the ServerApp runs from an installed copy)."""
    return Path(cfg["out-dir"]).expanduser().resolve()


RUN_FILES = ("config.json", "metrics.csv", "checkpoint.pt")


def check_run_folder(cfg: dict) -> None:
    """Never overwrite a run by accident: a ``run-name`` folder that already holds a run
    (any of ``RUN_FILES``) needs ``resume=true`` or ``overwrite=true``."""
    if not cfg["run-name"] or cfg["resume"] or cfg["overwrite"]:
        return
    folder = out_root(cfg) / cfg["run-name"]
    found = [f for f in RUN_FILES if (folder / f).exists()]
    _check(not found, f"{folder} already holds a run ({', '.join(found)}): pass resume=true to continue it, "
                      "overwrite=true to replace it, or another run-name")
