"""Where a run writes: ``out-dir`` made absolute, a plain ``run-name``, and the rule that
a run folder is never overwritten by accident."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from common.keys import ConfigError, shown


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


MAX_NAME = 128  # file systems allow 255 bytes per name; room for suffixes
RUN_NAME = re.compile(r"[A-Za-z0-9_=-][A-Za-z0-9._=-]*")


def check_run_name(name, key: str = "run-name") -> None:
    """``run-name`` (or another ``key``) is one plain folder name, so that a run writes
    under ``out-dir`` only."""
    _check(isinstance(name, str) and len(name) <= MAX_NAME and (name == "" or (RUN_NAME.fullmatch(name) is not None
                                                                              and name != "..")),
           f"{key} must be a plain folder name (letters, digits, '._=-', no '/', not '.' or '..', at most {MAX_NAME} characters), got {shown(name)}")


APP_DIR = Path(__file__).resolve().parent.parent
# Set in the environment of a SuperLink whose launcher (a sweep, a benchmark, the loopback
# deployment) keeps each run's whole console in the run's flwr.log: its ServerApps then
# write no flwr.log of their own.
LAUNCHER_LOG = "FLBENCH_LAUNCHER_LOG"


def out_root(cfg: dict) -> Path:
    """``out-dir`` as an absolute path. A relative one (the default, ``outputs``) is taken
    from the working folder: a launcher's (sweep, benchmark, ``make run``: the app's
    folder) or, for a ServerApp started by hand with ``flwr run .``, the folder Flower's
    local SuperLink was started in (that of the first ``flwr run`` that started it)."""
    return Path(cfg["out-dir"]).expanduser().resolve()


def recorded(out_dir: str) -> str:
    """``out-dir`` as a run records it: relative to the working folder where it lies inside
    it (a sweep resolves it for its processes), so a shipped record names no machine's path."""
    path = Path(out_dir).expanduser().resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(out_dir)


def is_this_app(folder: Path) -> bool:
    """Whether ``folder`` holds this Flower App (its pyproject.toml names the same project
    and components), for instance the checkout a ServerApp was started from."""
    def identity(where: Path):
        try:
            toml = tomllib.loads((where / "pyproject.toml").read_text())
        except (OSError, ValueError):
            return None
        return toml.get("project", {}).get("name"), toml.get("tool", {}).get("flwr", {}).get("app", {}).get("components")

    found = identity(folder)
    return found is not None and found == identity(APP_DIR)


def feature_cache_dir(cfg: dict) -> Path | None:
    """``<out-dir>/<feature-cache>``: the backbone features the runs of a sweep share
    (``models.features.use_disk_cache``); None where ``feature-cache`` is off (``""``)."""
    return out_root(cfg) / cfg["feature-cache"] if cfg.get("feature-cache") else None


RUN_FILES = ("config.json", "metrics.csv", "checkpoint.pt")


def check_run_folder(cfg: dict) -> None:
    """Never overwrite a run by accident: a ``run-name`` folder that already holds a run
    (any of ``RUN_FILES``) needs ``resume=true`` or ``overwrite=true``. ``out-dir`` must be
    a folder (or not exist yet), and neither the run folder nor anything in it may be a
    symbolic link (a write would follow it out of out-dir)."""
    root = out_root(cfg)
    _check(not root.exists() or root.is_dir(), f"out-dir {shown(str(root))} is not a folder: pass a folder path")
    cache = feature_cache_dir(cfg)
    _check(cache is None or not cache.is_symlink(), f"{shown(str(cache))} is a symbolic link: the feature cache "
                                                    "is written only under out-dir; remove the link or pass another "
                                                    "feature-cache")
    if not cfg["run-name"]:
        return
    folder = root / cfg["run-name"]
    links = [p for p in (folder, *(folder.iterdir() if folder.is_dir() and not folder.is_symlink() else ()))
             if p.is_symlink()]
    _check(not links, f"{shown(str(links[0]) if links else '')} is a symbolic link: a run writes only real files "
                      "under out-dir; remove the link or pass another run-name")
    if cfg["resume"] or cfg["overwrite"]:
        return
    found = [f for f in RUN_FILES if (folder / f).exists()]
    _check(not found, f"{folder} already holds a run ({', '.join(found)}): pass resume=true to continue it, "
                      "overwrite=true to replace it, or another run-name")
