"""A bounded background pool: work that may follow an answer, within a memory bound.

The tile path (:mod:`s3maptiler.service.tilepath`) runs here what follows a
metatile's first tile: encoding the rest, publishing it to the other rings of single
flight and queueing its uploads. It publishes nothing itself."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait

log = logging.getLogger(__name__)


class BoundedPool:
    """Threads that run work after the caller has answered, at most `backlog` jobs
    queued or running at once (each may hold a decoded metatile); past that `run`
    runs the work on the caller's thread, so memory stays bounded and a burst slows
    its own requests down instead. `drain` keeps to its
    deadline: jobs not started by then are abandoned (their waiters get a 502).
    """

    def __init__(self, threads: int, backlog: int):
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="background")
        self._room = threading.BoundedSemaphore(backlog)
        self._lock = threading.Lock()
        self._jobs: dict[Future, Callable[[], None]] = {}
        self._closed = False

    def run(self, work: Callable[[], None], abandon: Callable[[], None]) -> None:
        """`work()` in the background, or here when the backlog is full or the pool
        drains; `abandon()` instead when it is still queued at the drain's deadline."""
        if self._closed or not self._room.acquire(blocking=False):
            work()
            return
        try:
            job = self._executor.submit(work)
        except RuntimeError:  # shut down meanwhile
            self._room.release()
            work()
            return
        with self._lock:
            self._jobs[job] = abandon
        job.add_done_callback(self._done)

    def _done(self, job: Future) -> None:
        with self._lock:
            self._jobs.pop(job, None)
        self._room.release()

    def drain(self, deadline: float) -> None:
        """Run what is queued until `deadline` (a monotonic time); abandon the rest."""
        self._closed = True
        with self._lock:
            jobs = list(self._jobs)
        futures_wait(jobs, max(deadline - time.monotonic(), 0.0))
        with self._lock:
            left = dict(self._jobs)
        for job, abandon in left.items():
            if job.cancel():
                abandon()
        if left:
            log.error(
                "%d background jobs not finished when draining; their tiles are not stored",
                len(left),
            )
        self._executor.shutdown(wait=False, cancel_futures=True)
