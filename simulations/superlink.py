"""SuperLink/SuperNode processes owned by this process, and one ``flwr run`` against them.

Used by sweeps (a simulation SuperLink) and by the loopback deployment
(``simulations/deploy.py``: TLS SuperLink + SuperNodes). Each federation gets a private
``FLWR_HOME`` and its processes start from a neutral folder (a SuperLink started inside
another app's folder would run that app's client code). On exit every process started
here is stopped by PID with all its descendants (the SuperExec detaches into its own
session, so a process-group kill would miss it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from common.outputs import LAUNCHER_LOG
from common.progress import PREFIX

APP_DIR = Path(__file__).resolve().parent.parent
# The SuperLink's log: in its private home while it runs, in a failed run's folder after.
LINK_LOG = "superlink.log"
# The lines of a run that a sweep shows on its terminal: rounds, progress, refusals, failures.
ECHOED = re.compile(r"\[round \d+/|" + re.escape(PREFIX) + r"|dropped reply|skipped|bad run config|cannot run")


def process_tree(pid: int) -> list:
    """``pid`` and all its live descendants as ``psutil.Process`` objects ([] if gone)."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def stop_tree(pid: int, timeout: float = 5) -> None:
    """SIGTERM ``pid`` and every descendant, then SIGKILL what is left."""
    import psutil

    procs = process_tree(pid)
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


def stop_on_signals() -> None:
    """Make SIGTERM (what ``timeout``, ``kill`` and batch schedulers send) stop this process
    as Ctrl-C does: a ``KeyboardInterrupt`` in the main thread, so that every ``Processes``
    block on the way out stops the processes it started (SuperLink, ``flwr run``, Ray)."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"stopped by signal {signum}")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flwr_bin(name: str) -> str:
    """An executable of this environment (the venv's flwr, not another one on PATH)."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else (shutil.which(name) or name)


def stage_app(dest: Path) -> Path:
    """A copy of the app's own files (what .gitignore keeps, without .git) at ``dest``.

    ``flwr run <folder>`` lists every file under the folder before it applies
    .gitignore: with the venv inside the checkout that is ~50,000 files and 6-20 s per
    run. A sweep stages the app once and runs the copy.
    """
    import pathspec

    ignore = (APP_DIR / ".gitignore").read_text().splitlines() if (APP_DIR / ".gitignore").exists() else []
    spec = pathspec.GitIgnoreSpec.from_lines([*ignore, ".git/"])

    def skip(folder: str, names: list[str]) -> set[str]:
        rel = Path(folder).relative_to(APP_DIR)
        return {n for n in names if spec.match_file(str(rel / n) + ("/" if Path(folder, n).is_dir() else ""))}

    shutil.copytree(APP_DIR, dest, ignore=skip)
    return dest


class Processes:
    """Long-lived processes started from a private folder, all stopped (by PID, with their
    descendants) on exit, and the folder removed."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="flwr-home-"))
        self.port = free_port()
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        # PYTHONUNBUFFERED: `flwr run --stream` prints the run's lines with print(), which a pipe
        # would hold back in 8 KB blocks (minutes of a quiet server phase); LAUNCHER_LOG: the
        # ServerApps of this SuperLink leave the run's flwr.log to `Federation.run`.
        self.env = {**os.environ, "PATH": path, "FLWR_HOME": str(self.home),
                    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "FLWR_DISABLE_UPDATE_CHECK": "1",
                    "PYTHONUNBUFFERED": "1", LAUNCHER_LOG: "1", **(env or {})}
        self.procs: list[subprocess.Popen] = []
        self.app: Path | None = None  # the staged app folder, made at the first run

    def start(self, name: str, cmd: list[str], port: int | None = None) -> subprocess.Popen:
        """Start a long-lived process (log in FLWR_HOME); wait for ``port`` if given."""
        log = open(self.home / f"{name}.log", "w")
        proc = subprocess.Popen(cmd, cwd=self.home, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        deadline = time.monotonic() + 60
        while port is not None and time.monotonic() < deadline:
            if proc.poll() is not None:
                self.__exit__()
                raise RuntimeError(f"{name} exited at start: {(self.home / f'{name}.log').read_text()[-800:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return proc
            time.sleep(0.2)
        if port is not None:
            self.__exit__()
            raise RuntimeError(f"{name} did not listen on port {port} within 60 s")
        return proc

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        # A second Ctrl-C or SIGTERM during the cleanup would orphan the simulation: ignore them here.
        main = threading.current_thread() is threading.main_thread()
        previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
        try:
            for proc in reversed(self.procs):
                stop_tree(proc.pid)
            self.procs.clear()
            shutil.rmtree(self.home, ignore_errors=True)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class Federation(Processes):
    """A SuperLink (and its SuperNodes) with a private FLWR_HOME, and ``run``: one ``flwr run``."""

    connection = "local-run"

    def write_connection(self, **options: str | bool) -> None:
        lines = [f'[superlink]\ndefault = "{self.connection}"\n\n[superlink.{self.connection}]',
                 f'address = "127.0.0.1:{self.port}"']
        lines += [f"{k} = {json.dumps(v)}" for k, v in options.items()]
        (self.home / "config.toml").write_text("\n".join(lines) + "\n")

    def flwr(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([flwr_bin("flwr"), *args], cwd=APP_DIR, env=self.env, capture_output=True,
                              text=True)

    def stream(self, cmd: list[str], log_path: Path, on_line: Callable[[float, str], None] | None = None,
               echo: bool = True) -> str:
        """Run ``cmd`` (in this federation's environment) to its end, each output line into
        ``log_path`` as it comes, the lines a user follows (``ECHOED``) on the terminal;
        ``on_line(seconds since start, line)`` sees every line. Returns the first
        "started run N" line, or ""."""
        started, t0 = "", time.perf_counter()
        with open(log_path, "w") as log:
            proc = subprocess.Popen(cmd, cwd=self.app or self.home, env=self.env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
            self.procs.append(proc)
            for line in proc.stdout:
                log.write(line)
                log.flush()  # the run's log is read while it runs
                line = re.sub(r"\x1b\[[0-9;]*m", "", line).rstrip()
                if not started and re.search(r"started run \d+", line):
                    started = line
                if echo and ECHOED.search(line):
                    print("   ", line, flush=True)
                if on_line:
                    on_line(time.perf_counter() - t0, line)
            proc.wait()
            self.procs.remove(proc)
        return started

    def run(self, cfg: dict, log_path: Path, fed: dict | None = None,
            on_line: Callable[[float, str], None] | None = None, echo: bool = True) -> dict:
        """One ``flwr run`` of this app, streamed to ``log_path`` (progress lines echoed;
        ``on_line(seconds since start, line)`` sees every line).

        Returns the SuperLink's record of the run (``status``, ``status-details``...):
        ``flwr run --stream`` exits 0 even when the run failed.
        """
        import tomli_w

        if self.app is None:
            self.app = stage_app(self.home / "app")
        from simulations.config import defaults

        # a relative out-dir is taken from here: the SuperLink's working folder is a temporary one
        cfg = {**cfg, "out-dir": str(Path(cfg.get("out-dir") or defaults()["out-dir"]).expanduser().resolve())}
        run_toml = log_path.parent / "run-config.toml"
        run_toml.write_text(tomli_w.dumps(cfg))
        cmd = [flwr_bin("flwr"), "run", str(self.app), self.connection, "--run-config", str(run_toml), "--stream"]
        if fed:
            cmd += ["--federation-config", " ".join(f"{k}={json.dumps(v)}" for k, v in fed.items())]
        link_log = self.home / LINK_LOG  # the process started as "superlink"
        start = link_log.stat().st_size if link_log.exists() else 0
        found = re.search(r"started run (\d+)", self.stream(cmd, log_path, on_line, echo))
        run_id = found[1] if found else None
        if run_id is None:
            record = {"status": "not started", "status-details": f"see {log_path}"}
        else:
            out = self.flwr("ls", self.connection, "--run-id", run_id, "--format", "json")
            try:
                record = json.loads(out.stdout)["runs"][0]
            except (ValueError, KeyError, IndexError):
                record = {"status": "unknown", "status-details": out.stdout[-500:] + out.stderr[-500:]}
        if record.get("status") != "finished:completed" and link_log.exists():
            # What the SuperLink and its simulation process printed during this run (a crash's
            # traceback, a dead heartbeat): kept beside the run's log, the private home is removed.
            with open(link_log, "rb") as f:
                f.seek(start)
                (log_path.parent / LINK_LOG).write_bytes(f.read())
        return record


class LocalSuperLink(Federation):
    """A simulation SuperLink (Ray engine) on loopback, for sweeps and tests."""

    connection = "sweep"
    ray: "RayCluster | None" = None  # the Ray instance its runs share, where it has one

    def __enter__(self) -> "LocalSuperLink":
        self.write_connection(insecure=True)
        self.start("superlink", [
            flwr_bin("flower-superlink"), "--insecure", "--simulation", "--isolation", "subprocess",
            "--host", "127.0.0.1", "--port", str(self.port), "--health-server-address",
            f"127.0.0.1:{free_port()}", "--database", str(self.home / "state.db"),
            "--disable-runtime-dependency-installation",
        ], port=self.port)
        return self


class RayCluster(Processes):
    """A Ray head node (``ray start --head``): one Ray instance for many simulations.

    A simulation attaches to it when the SuperLink runs with ``RAY_ADDRESS`` set to
    ``self.address`` (the simulation process inherits it and ``ray.init()`` connects
    instead of starting a private Ray). Its ``--temp-dir`` is private, so other
    simulations on this machine do not find it and attach by accident. GPUs are
    detected by Ray as usual; ``num_cpus`` defaults to the machine's.
    """

    def __init__(self, num_cpus: int | None = None, object_store_mb: int | None = None,
                 num_gpus: float | None = None) -> None:
        super().__init__()
        self.num_cpus = num_cpus or os.cpu_count() or 1
        self.object_store_mb = object_store_mb
        self.num_gpus = num_gpus  # None: Ray detects them; a number overrides (e.g. a GPU for a CPU dry run)
        self.address = f"127.0.0.1:{self.port}"

    def __enter__(self) -> "RayCluster":
        store = ["--object-store-memory", str(self.object_store_mb * 2**20)] if self.object_store_mb else []
        store += ["--num-gpus", str(self.num_gpus)] if self.num_gpus is not None else []
        self.start("ray-head", [
            flwr_bin("ray"), "start", "--head", "--block", "--port", str(self.port),
            "--temp-dir", str(self.home / "ray"), "--num-cpus", str(self.num_cpus), "--include-dashboard=false",
            "--disable-usage-stats", *store,
        ], port=self.port)
        return self

    def jobs(self) -> list[str]:
        """Entry points of the drivers that have connected to this cluster so far."""
        code = ("import json, ray; from ray._private import state; ray.init(address='%s', logging_level='ERROR');"
                "print(json.dumps([j['Entrypoint'] for j in state.jobs()]))" % self.address)
        out = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True)
        return [job for job in json.loads(out.stdout.strip().splitlines()[-1]) if "state.jobs()" not in job]


@contextlib.contextmanager
def shared_ray(object_store_mb: int | None = None):
    """A Ray instance for a series of simulations: ``RayCluster`` started here, or None
    where ``RAY_ADDRESS`` already names one (a user's cluster), which they then use."""
    if os.environ.get("RAY_ADDRESS"):
        yield None
        return
    with RayCluster(object_store_mb=object_store_mb) as ray:
        yield ray


@contextlib.contextmanager
def simulation_superlink(share_ray: bool = True):
    """A ``LocalSuperLink`` for a series of runs (a sweep, a benchmark).

    With ``share_ray`` its simulations attach to one Ray instance started here, instead
    of each run starting (and stopping) a private one: Ray's start is paid once per
    series, not once per run (about 6-7 s of every run's start-up; README "Benchmarks").
    Runs still get their own Ray job, so their actors and workers end with the run.
    Where ``RAY_ADDRESS`` is already set (a user's cluster), the runs attach to that one.
    Yields the link; ``link.ray`` is the ``RayCluster`` started here, or None.
    """
    if not share_ray:
        with LocalSuperLink() as link:
            yield link
        return
    with shared_ray() as ray, LocalSuperLink(env={"RAY_ADDRESS": ray.address} if ray else None) as link:
        link.ray = ray
        yield link
