"""Progress lines for long server phases (GAN prior training, corrupted-set generation,
FedDG-LSI inversion and translator training, backbone feature extraction).

A run's output goes to its log, not to a terminal, so a bar that redraws itself is of no
use there: ``LogProgress`` writes one line through Flower's logger (the run's
``flwr.log``) at most every ``every`` seconds and at the end, formatted by tqdm (count,
percentage, elapsed, remaining, rate).
"""

from __future__ import annotations

import time
from logging import INFO

from tqdm import tqdm

EVERY_S = 10.0
FORMAT = "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%) [{elapsed}<{remaining}, {rate_fmt}]"


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
        from flwr.common.logger import log

        log(INFO, "%s", line)
