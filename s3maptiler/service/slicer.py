"""The slicer: encodes the rest of each metatile after its first tile was answered."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait

log = logging.getLogger(__name__)


class Slicer:
    """Encodes the rest of each metatile after its first tile was answered.

    At most `backlog` metatiles are queued or encoding at once, each holding its
    decoded image; past that `run` encodes on the caller's thread, so memory stays
    bounded and a burst slows its own requests down instead. `drain` keeps to its
    deadline: jobs not started by then are abandoned (their waiters get a 502).
    """

    def __init__(self, threads: int, backlog: int):
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="slicer")
        self._room = threading.BoundedSemaphore(backlog)
        self._lock = threading.Lock()
        self._jobs: dict[Future, Callable[[], None]] = {}
        self._closed = False

    def run(self, work: Callable[[], None], abandon: Callable[[], None]) -> None:
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
                "%d metatiles not finished when draining; their tiles are not stored", len(left)
            )
        self._executor.shutdown(wait=False, cancel_futures=True)
