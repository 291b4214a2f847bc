"""Progress lines for long server phases and for the whole server side of a run.

A run's output goes to its log, not to a terminal, so a bar that redraws itself is of no
use there. Two line writers, both through Flower's logger (the run's ``flwr.log``, the
terminal of ``flwr run --stream`` and of a sweep, which echoes lines starting with
``PREFIX``):

- ``LogProgress``: a phase that counts its steps (GAN prior training, corrupted-set
  generation, FedDG-LSI inversion and translator training, feature extraction) logs one
  line at most every ``every`` seconds and one at the end, formatted by tqdm (count,
  percentage, elapsed, remaining, rate).
- ``Heartbeat``: while a ServerApp runs, a line naming the current ``phase`` whenever
  Flower's logger has been silent for ``every`` seconds (a server phase without its own
  counter, or the wait for clients whose lines are logged elsewhere).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from logging import INFO

from tqdm import tqdm

EVERY_S = 10.0
PREFIX = "[progress]"
FORMAT = "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%) [{elapsed}<{remaining}, {rate_fmt}]"


def _log(line: str) -> None:
    from flwr.common.logger import log

    log(INFO, "%s %s", PREFIX, line)


class LogProgress:
    """``tick(k)`` after each k units of work; logs when ``every`` seconds have passed since
    the last line, and once when ``total`` is reached (phases shorter than ``every`` log
    only that last line)."""

    def __init__(self, what: str, total: int, unit: str = "it", every: float = EVERY_S):
        self.what, self.total, self.unit, self.every = what, int(total), unit, every
        self.done = 0
        self.t0 = self.last = time.monotonic()

    def line(self) -> str:
        return tqdm.format_meter(self.done, self.total, time.monotonic() - self.t0, prefix=self.what,
                                 unit=self.unit, bar_format=FORMAT)

    def tick(self, k: int = 1) -> None:
        self.done += k
        now = time.monotonic()
        if now - self.last >= self.every or (self.done >= self.total and self.done - k < self.total):
            self.last = now
            self.emit(self.line())

    def emit(self, line: str) -> None:
        _log(line)


_phase: list[tuple[str, float]] = [("server", time.monotonic())]  # (name, start) of the current phase


@contextlib.contextmanager
def phase(name: str):
    """Name what the server does now, for the ``Heartbeat``'s lines."""
    _phase.append((name, time.monotonic()))
    try:
        yield
    finally:
        _phase.pop()


class Heartbeat(logging.Handler):
    """``with Heartbeat(every):`` logs ``[progress] <phase>: <s> s`` whenever Flower's logger
    has written nothing for ``every`` seconds (0 = off). It is a logging handler that only
    notes the time of each record, and a daemon thread that wakes to check it."""

    def __init__(self, every: float = EVERY_S):
        super().__init__()
        self.every = float(every)
        self.last = time.monotonic()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.beat, name="progress-heartbeat", daemon=True)

    def emit(self, record: logging.LogRecord) -> None:
        self.last = time.monotonic()

    def beat(self) -> None:
        while not self.stopped.wait(max(0.05, self.last + self.every - time.monotonic())):
            now = time.monotonic()
            if now - self.last >= self.every:
                name, start = _phase[-1]
                _log(f"{name}: {now - start:.0f} s")
                self.last = now

    def __enter__(self) -> "Heartbeat":
        _phase.append(("server", time.monotonic()))
        if self.every > 0:
            logging.getLogger("flwr").addHandler(self)
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.every > 0:
            self.stopped.set()
            self.thread.join()
            logging.getLogger("flwr").removeHandler(self)
        _phase.pop()


@contextlib.contextmanager
def log_file(path, mode: str = "a"):
    """Flower's log lines also in ``path`` (a run's ``flwr.log``), timestamped; nothing is
    added where a handler of this process already writes that file."""
    import os

    logger = logging.getLogger("flwr")
    target = os.path.realpath(path)
    if any(os.path.realpath(getattr(h, "baseFilename", "")) == target for h in logger.handlers
           if isinstance(h, logging.FileHandler)):
        yield
        return
    handler = logging.FileHandler(target, mode=mode)
    handler.setLevel(INFO)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()


LOG_FORMAT = "%(levelname)s %(asctime)s: %(message)s"
