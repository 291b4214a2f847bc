"""What a run was made with, beside its run config: the federation (nodes, client
resources), the Python/Flower/torch/Ray versions, the git commit (and whether the
checkout had uncommitted changes) and Flower's run id.

The ServerApp knows the node count (its grid) and the run id; the versions are read from
the installed packages. The client resources and the commit are known where the run was
launched: a sweep or a benchmark writes them to ``<run>/launch.json`` (``write_launch``)
before the run starts, and the ServerApp (which runs from an installed copy of the app,
without ``.git``) reads them back. A run started by hand with ``flwr run .`` gets the commit
of the ServerApp's working folder where that is a checkout, and no client resources.
"""

from __future__ import annotations

import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent.parent
LAUNCH = "launch.json"
FEDERATION = ("num-supernodes", "client-resources-num-cpus", "client-resources-num-gpus")
# Columns of every row that describe the run, not its result; the report never groups by these.
PER_RUN = ("flwr-run-id",)
# The code a run was made with: recorded per run, never a group key (a study that runs over
# several sittings spans commits; the report lists them instead, ``simulations/report.py``).
PER_COMMIT = ("git-commit", "git-dirty")
# Config keys that change no result: where things are kept (out-dir, run-name, data-root,
# feature-cache), whether a folder is resumed or replaced, how a run is logged (tracker) and
# when its metrics are read (evaluate-every). The report never groups by them; a kept trained
# model's identity leaves them out (``simulations/attack_round.py``).
NO_RESULT = ("out-dir", "run-name", "resume", "overwrite", "data-root", "tracker", "feature-cache",
             "evaluate-every")
# Every provenance column a run's rows carry: config, never a metric (git-dirty is a bool).
COLUMNS = (*FEDERATION, "python-version", "flwr-version", "torch-version", "ray-version", *PER_COMMIT,
           *PER_RUN)


def versions() -> dict[str, str]:
    """Python and the packages a result depends on ("" where one is not installed)."""
    out = {"python-version": platform.python_version()}
    for name in ("flwr", "torch", "ray"):
        try:
            out[f"{name}-version"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[f"{name}-version"] = ""
    return out


def git_state(folder: Path = APP_DIR) -> dict[str, str | bool]:
    """``git-commit`` (full hash) and ``git-dirty`` (uncommitted changes to tracked files)
    of the checkout holding ``folder``; ``""`` where it is none."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {"git-commit": "", "git-dirty": ""}
    return {"git-commit": commit, "git-dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def launch_record(fed: dict) -> dict:
    """What a launcher (sweep, benchmark) knows of a run: its federation keys and the commit."""
    return {**{k: fed[k] for k in FEDERATION if k in fed}, **git_state()}


def write_launch(run_dir: Path, fed: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / LAUNCH).write_text(json.dumps(launch_record(fed), indent=2, sort_keys=True))


def run_provenance(run_dir: Path, run_id: int | str) -> dict:
    """The provenance columns of a run: versions and run id from the ServerApp, resources
    and commit from ``launch.json`` where a launcher wrote one. ``num-supernodes`` is
    what was asked; the ServerApp replaces it by the nodes it found (``server_app``)."""
    launched = {}
    if (run_dir / LAUNCH).exists():
        try:
            launched = json.loads((run_dir / LAUNCH).read_text())
        except ValueError:
            launched = {}
    if "git-commit" not in launched:
        launched.update(git_state(Path.cwd()))
    out = {"num-supernodes": "", "client-resources-num-cpus": "", "client-resources-num-gpus": "",
           **versions(), "flwr-run-id": str(run_id)}
    out.update({k: v for k, v in launched.items() if k in out or k.startswith("git-")})
    return out
