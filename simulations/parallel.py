"""A sweep's ``--local --jobs N``: N run slots shared by every caller, and the tuning
searches of several settings at once on them (docs/sweeps.md).

Each run takes a slot and goes in a fresh process of its own, so a run killed (out of
memory) fails alone. Callers in several threads (one per setting being searched) submit
to the same slots, so at most N runs go at a time in all, not N per setting. Stopping
(Ctrl-C, SIGTERM: a ``KeyboardInterrupt`` in the main thread) ends every run's process,
starts no more, and ends each caller with ``Stopped`` before it records anything, so a
run cut off stays resumable (not reported failed) and a trial cut off stays open.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed


class Stopped(BaseException):
    """The sweep is stopping: end this caller, recording nothing (not an ``Exception``, so
    no ``except Exception`` on the way takes it for a failed run)."""


def in_own_process(call: tuple) -> tuple[str, str, float]:
    """``run_logged(*call)`` in a fresh process of its own: a run killed (out of memory)
    fails alone, not the runs after it, as in a shared process pool."""
    from simulations.local import run_logged

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(run_logged, *call).result()


def stop_children(timeout: float = 5) -> None:
    """SIGTERM every process this one started and their own children, all at once (N runs
    stop in seconds, not N times that), then SIGKILL what is left."""
    import psutil

    procs = psutil.Process().children(recursive=True)
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=timeout)


class Slots:
    """``jobs`` runs at a time, each by ``work(call)``, shared by every thread that calls ``run``."""

    def __init__(self, jobs: int, work: Callable | None = None):
        self.jobs, self.work = jobs, work or in_own_process
        self.pool = ThreadPoolExecutor(jobs, thread_name_prefix="run")
        self.stopped = threading.Event()
        self._lock = threading.Lock()  # a submit never races the shutdown in stop()
        self._busy = 0

    def _work(self, call):
        with self._lock:
            if self.stopped.is_set():
                raise Stopped
            self._busy += 1
        try:
            return self.work(call)
        finally:
            with self._lock:
                self._busy -= 1

    def run(self, calls: list) -> Iterator[tuple[int, tuple]]:
        """Yield (index in ``calls``, ``work``'s result) as each run ends; a worker that
        died gives ("finished:failed", reason, 0.0). Raises ``Stopped`` once stopping."""
        with self._lock:
            if self.stopped.is_set():
                raise Stopped
            futures = {self.pool.submit(self._work, call): i for i, call in enumerate(calls)}
        for future in as_completed(futures):
            if self.stopped.is_set():  # its end is the stop's doing, not the run's
                raise Stopped
            try:
                result = future.result()
            except Exception as err:  # the run's process died (killed, out of memory)
                result = "finished:failed", f"worker died: {type(err).__name__}: {err}", 0.0
            yield futures[future], result

    def stop(self, within: float = 10.0) -> None:
        """Start no more runs and end the running ones' processes (again while a worker
        thread may still be starting one), within ``within`` seconds."""
        with self._lock:
            self.stopped.set()
            # not cancel_futures: a cancelled future never wakes its caller's as_completed;
            # the queued runs end at once with Stopped instead (_work)
            self.pool.shutdown(wait=False)
        deadline = time.monotonic() + within
        while True:
            stop_children()
            if not self._busy or time.monotonic() > deadline:
                return
            time.sleep(0.1)

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def concurrently(fn: Callable, items: list, slots: Slots) -> list:
    """``[fn(item) for item in items]``, up to ``slots.jobs`` items at a time in threads of
    their own (their runs share ``slots``). The first error, or a ``KeyboardInterrupt`` in
    this (the main) thread, stops every run and is raised once the threads have ended."""
    if not items:
        return []
    threads = ThreadPoolExecutor(min(len(items), slots.jobs), thread_name_prefix="search")
    futures = [threads.submit(fn, item) for item in items]
    try:
        for future in as_completed(futures):
            future.result()
    except BaseException:
        slots.stop()
        threads.shutdown(wait=True, cancel_futures=True)
        raise
    threads.shutdown(wait=True)
    return [future.result() for future in futures]
