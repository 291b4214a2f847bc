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


LOG_FORMAT = "%(levelname)s %(asctime)s: %(message)s"


def writes(path) -> bool:
    """Whether a handler of Flower's logger in this process already writes ``path``."""
    import os

    target = os.path.realpath(path)
    return any(isinstance(h, logging.FileHandler) and os.path.realpath(h.baseFilename) == target
               for h in logging.getLogger("flwr").handlers)


def file_handler(path, mode: str) -> logging.FileHandler:
    handler = logging.FileHandler(path, mode=mode)
    handler.setLevel(INFO)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    return handler


@contextlib.contextmanager
def log_file(path, mode: str = "a"):
    """Flower's log lines also in ``path``, timestamped (nothing added where a handler of
    this process already writes that file)."""
    if writes(path):
        yield
        return
    handler = file_handler(path, mode)
    logging.getLogger("flwr").addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger("flwr").removeHandler(handler)
        handler.close()


class RunLog(logging.Handler):
    """A run's ``flwr.log``, written by its ServerApp: Flower's log lines are held in
    memory until ``open`` (once the run writes its first row; a run refused at start
    changes no file), then written to the file as they come. ``with RunLog(path, mode):``
    attaches it to Flower's logger; it does nothing where ``active`` is false or a handler
    of this process already writes ``path`` (an in-process sweep's)."""

    def __init__(self, path, mode: str = "w", active: bool = True):
        super().__init__(INFO)
        self.path, self.mode = path, mode
        self.held: list[logging.LogRecord] = []
        self.file: logging.FileHandler | None = None
        self.active = active and not writes(path)

    def emit(self, record: logging.LogRecord) -> None:
        if self.file is not None:
            self.file.emit(record)
        else:
            self.held.append(record)

    def open(self) -> None:
        if self.active and self.file is None:
            self.file = file_handler(self.path, self.mode)
            for record in self.held:
                self.file.emit(record)
            self.held = []

    def __enter__(self) -> "RunLog":
        if self.active:
            logging.getLogger("flwr").addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger("flwr").removeHandler(self)
        if self.file is not None:
            self.file.close()
        self.held = []
