"""Background upload pool: rendered tiles are written to the store after the response.

One pool per process. ``submit`` never waits for the store: when the pool already
holds ``max_pending`` jobs the new one waits up to the caller's ``wait`` seconds for
room, then is dropped (the next miss simply renders the tile again). The rest of a
metatile (in the service's background pool) and a request thread storing the tile
it rendered wait briefly (the tile service's ``UPLOAD_WAIT``), so a burst of renders
slows down rather than loses tiles;
a tile another render already drew is submitted without waiting. The
pool starts ``workers`` threads and grows, one thread per ``_BACKLOG_PER_THREAD``
queued jobs, up to ``max_workers`` while a backlog lasts; threads beyond
``workers`` leave after ``_IDLE_EXIT`` idle seconds. Each job is one ``store.put``:
retries are the store's own (the S3 client's botocore "standard" retries, with a
total attempt budget of 1 + UPLOAD_RETRIES, and one more PutObject after a 409
conflict, which botocore does not retry), never a second loop here. Everything is counted. While a
tile waits or uploads, its bytes are served from ``pending(key)`` so a second
request does not render it again.

Shutdown: ``drain(timeout)`` (called from gunicorn's ``worker_exit`` hook) stops
intake and waits for queued work. If nobody drains, the non-daemon workers still
finish the queue when the main thread ends, because interpreter shutdown joins
them (before ``atexit`` handlers run).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from s3maptiler.storage.s3 import StoreError, StoreSkipped
from s3maptiler.storage.stores import TileObject, TileStore

__all__ = ["InvalidPoolSettings", "UploadError", "UploadJob", "UploadPool"]

log = logging.getLogger(__name__)

STORED = "stored"
EXISTS = "exists"
FAILED = "failed"
DROPPED = "dropped"
SKIPPED = "skipped"  # not sent: the store's circuit breaker was open
#: Outcomes of a tile that is not in the store.
UNSTORED = (FAILED, SKIPPED, DROPPED)

# How often an idle worker checks whether the main thread has ended (seconds).
# Only matters for an undrained pool at interpreter exit.
_IDLE_POLL = 0.5
# Queued jobs per running thread beyond which the pool starts another thread.
_BACKLOG_PER_THREAD = 4
# Seconds an extra thread (beyond `workers`) waits for work before it leaves.
_IDLE_EXIT = 10.0
# An upload that failed or was skipped this recent (seconds), with none stored since,
# makes the deep health check say the store's writes are failing.
UNSTORED_RECENT = 300.0


class UploadError(Exception):
    """Base class for upload pool errors."""


class InvalidPoolSettings(UploadError, ValueError):
    """A pool was constructed with impossible settings (no workers, no room for a job)."""


#: One tile the pool writes: a :class:`~s3maptiler.storage.stores.TileObject`.
UploadJob = TileObject


class UploadPool:
    """A bounded, per-process pool of upload threads in front of one TileStore.

    `workers` threads (non-daemon) start on the first submit, so the pool may be
    created before gunicorn forks; more start while jobs queue up, up to
    `max_workers` (default: `workers`, a fixed pool). `max_pending` bounds queued +
    uploading jobs, and so the memory the pool holds: about `max_pending` tiles.
    A job is put once; a StoreError (after the store's own retries) fails it.
    `on_result(job, outcome)` is called from a worker thread after each job with
    "stored", "exists", "failed" or "skipped" (a store that raised StoreSkipped: not
    asked, its breaker is open), and with "dropped" for queued jobs that ``drain``
    had to abandon.

    Counters (``stats()``) satisfy: submitted = stored + exists + failed +
    skipped + dropped + pending; ``unstored`` is failed + skipped + dropped.
    """

    def __init__(
        self,
        store: TileStore,
        workers: int = 4,
        max_pending: int = 2000,
        max_workers: int | None = None,
        on_result: Callable[[UploadJob, str], None] | None = None,
    ):
        if workers < 1:
            raise InvalidPoolSettings(f"workers must be at least 1, got {workers}")
        if max_workers is not None and max_workers < workers:
            raise InvalidPoolSettings(f"max_workers must be at least workers ({workers})")
        if max_pending < 1:
            raise InvalidPoolSettings(f"max_pending must be at least 1, got {max_pending}")
        self.store = store
        self.workers = workers
        self.max_workers = max_workers or workers
        self.max_pending = max_pending
        self.on_result = on_result

        # One lock guards all state below; it is never held during I/O or callbacks.
        self._lock = threading.Lock()
        self._has_work = threading.Condition(self._lock)
        self._all_done = threading.Condition(self._lock)
        self._room = threading.Condition(self._lock)  # a pending job finished
        self._idle = 0  # threads waiting for work
        self._queue: deque[UploadJob] = deque()
        # key -> jobs queued or uploading under that key (almost always one).
        self._pending: dict[str, list[UploadJob]] = {}
        self._pending_count = 0
        self._threads: list[threading.Thread] = []
        self._started = 0  # threads ever started, for their names
        self._closing = False
        self._last_unstored: tuple[float, str] | None = None  # (monotonic, reason)
        self._counts = dict.fromkeys(("submitted", STORED, EXISTS, FAILED, SKIPPED, DROPPED), 0)

    # --- request side ---------------------------------------------------------------

    def submit(self, job: UploadJob, wait: float = 0.0) -> bool:
        """Queue `job` for upload; False (and a WARNING) when it had to be dropped.

        Never waits for the store. A full pool drops the job at once, or after up to
        `wait` seconds for room; a draining pool drops it.
        """
        deadline = time.monotonic() + wait
        with self._lock:
            self._counts["submitted"] += 1
            while not self._closing and self._pending_count >= self.max_pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._room.wait(left)
            if self._closing:
                reason = "pool is draining"
            elif self._pending_count >= self.max_pending:
                reason = f"{self._pending_count} uploads pending"
            else:
                self._queue.append(job)
                self._pending.setdefault(job.key, []).append(job)
                self._pending_count += 1
                self._grow()
                self._has_work.notify()
                return True
            self._counts[DROPPED] += 1
        log.warning("upload dropped (%s) key=%s", reason, job.key)
        return False

    def pending(self, key: str) -> bytes | None:
        """The bytes of the newest job for `key` while it is queued or uploading, else None."""
        job = self.pending_job(key)
        return None if job is None else job.data

    def pending_job(self, key: str) -> UploadJob | None:
        """The newest job for `key` while it is queued or uploading, else None."""
        with self._lock:
            jobs = self._pending.get(key)
            return jobs[-1] if jobs else None

    def stats(self) -> dict[str, int]:
        """Counters since start: submitted, stored, exists, failed, skipped, dropped,
        unstored (the sum of the three), pending, and the upload threads running now."""
        with self._lock:
            unstored = sum(self._counts[outcome] for outcome in UNSTORED)
            return {
                **self._counts,
                "unstored": unstored,
                "pending": self._pending_count,
                "threads": len(self._threads),
            }

    def unstored_problem(self) -> str | None:
        """A one-line reason when the latest upload failed or was skipped (in the last
        UNSTORED_RECENT s, none stored since), else None: the deep health check's."""
        with self._lock:
            if self._last_unstored is None:
                return None
            at, reason = self._last_unstored
            age = time.monotonic() - at
            if age > UNSTORED_RECENT:
                return None
            failed, skipped = self._counts[FAILED], self._counts[SKIPPED]
        return (
            f"uploads not stored: {failed} failed, {skipped} skipped since start; the "
            f"last {age:.0f} s ago: {reason}"
        )

    # --- shutdown -------------------------------------------------------------------

    def drain(self, timeout: float) -> int:
        """Stop intake and wait up to `timeout` seconds for every pending upload.

        Returns how many jobs were not finished (logged at ERROR when > 0). Jobs
        still queued at the deadline are abandoned and counted as dropped; uploads
        already running finish in the background. Safe to call more than once.
        """
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._lock:
            self._closing = True
            self._has_work.notify_all()
            self._room.notify_all()
            while self._pending_count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._all_done.wait(remaining)
            unfinished = self._pending_count
            uploading = unfinished - len(self._queue)
            abandoned = list(self._queue)
            self._queue.clear()
            for job in abandoned:
                self._forget(job)
                self._counts[DROPPED] += 1
            threads = list(self._threads)
        if unfinished:
            log.error(
                "%d uploads not finished after draining %.1f s: %d abandoned in the queue, "
                "%d still uploading; their tiles will be rendered again on the next miss",
                unfinished,
                timeout,
                len(abandoned),
                uploading,
            )
        for job in abandoned:
            self._report(job, DROPPED)
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        return unfinished

    # --- workers --------------------------------------------------------------------

    def _grow(self) -> None:
        # Called with the lock held: the first `workers` threads, then one more per
        # _BACKLOG_PER_THREAD jobs waiting that no idle thread is about to take.
        running = len(self._threads)
        if running < self.workers:
            wanted = self.workers
        elif len(self._queue) - self._idle > running * _BACKLOG_PER_THREAD:
            wanted = min(running + 1, self.max_workers)
        else:
            return
        for _ in range(running, wanted):
            name = f"upload-{self._started}"
            self._started += 1
            thread = threading.Thread(target=self._work, name=name, daemon=False)
            self._threads.append(thread)
            thread.start()

    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            with self._lock:
                idle_since = time.monotonic()
                while not self._queue:
                    # Exit when draining, or when the main thread has ended without a
                    # drain: interpreter shutdown joins us and must not wait forever.
                    # Threads beyond `workers` leave once the backlog has gone.
                    idle = time.monotonic() - idle_since
                    extra = len(self._threads) > self.workers and idle >= _IDLE_EXIT
                    if self._closing or extra or not threading.main_thread().is_alive():
                        self._threads.remove(me)
                        return
                    self._idle += 1
                    self._has_work.wait(_IDLE_POLL)
                    self._idle -= 1
                job = self._queue.popleft()
            outcome, reason = self._upload(job)
            with self._lock:
                self._forget(job)
                self._counts[outcome] += 1
                if outcome in (STORED, EXISTS):
                    self._last_unstored = None
                else:
                    self._last_unstored = (time.monotonic(), reason)
            self._report(job, outcome)

    def _upload(self, job: UploadJob) -> tuple[str, str]:
        """Put one job once (the store retries as its client is configured): "stored",
        "exists", "failed" or "skipped", and why when it is not stored."""
        try:
            outcome = self.store.write(job)
        except StoreSkipped as err:
            # Counted, not logged per tile: the breaker logged once why S3 is not asked.
            return SKIPPED, str(err)
        except StoreError as err:
            reason = str(err) if err.retryable else f"{err} (not retryable)"
            return self._failed(job, reason, err.attempts), reason
        except Exception as err:  # a bug in a store must not kill the worker
            log.debug("store raised", exc_info=True)
            reason = f"unexpected {type(err).__name__}: {err}"
            return self._failed(job, reason, None), reason
        return (EXISTS if outcome == EXISTS else STORED), ""

    def _failed(self, job: UploadJob, reason: str, attempts: int | None) -> str:
        log.warning(
            "upload failed key=%s store=%s attempts=%s reason=%s",
            job.key,
            self.store.location,
            "?" if attempts is None else attempts,
            reason,
        )
        return FAILED

    def _forget(self, job: UploadJob) -> None:
        # Called with the lock held: the job is no longer pending.
        jobs = self._pending[job.key]
        for index, candidate in enumerate(jobs):
            if candidate is job:
                del jobs[index]
                break
        if not jobs:
            del self._pending[job.key]
        self._pending_count -= 1
        self._room.notify()
        if not self._pending_count:
            self._all_done.notify_all()

    def _report(self, job: UploadJob, outcome: str) -> None:
        if self.on_result is None:
            return
        try:
            self.on_result(job, outcome)
        except Exception:
            log.exception("on_result callback failed for key=%s outcome=%s", job.key, outcome)
