"""Single flight among the threads of one process: one does the work, the rest wait.

The first thread to :meth:`SingleFlight.join` a key leads: it must settle the
returned future (a result or an exception) on every path. The others get the same
future and wait on it with a deadline. The key is forgotten as soon as its future
is settled, so the next caller starts afresh: whatever the leader produced must
already be findable elsewhere by then (the upload queue, the store, the spool).

Waiters never see the leader's exception object itself (it is shared between
threads and carries the leader's traceback): :func:`shared_failure` gives each a
copy that keeps its HTTP meaning, and a waiter that runs out of time gets
:class:`WaitTimeout`, a 504 with a one-line reason.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Generic, TypeVar

from s3maptiler.render.errors import WMSError, WMSTimeout
from s3maptiler.render.guard import WMSUnavailable

V = TypeVar("V")


class RenderFailed(WMSError):
    """A render failed in a way that is not the WMS's answer (a bug, a crash of the
    worker that rendered): 502, with a one-line reason."""

    kind = "render"


class WaitTimeout(WMSTimeout):
    """Waited for another request's render past the render's own budget: 504."""

    kind = "wait_timeout"


class SingleFlight(Generic[V]):
    """In-flight work by key, for the threads of one process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[Hashable, Future[V]] = {}

    def join(self, key: Hashable) -> tuple[Future[V], bool]:
        """The key's future, and True when the caller leads (and must settle it)."""
        with self._lock:
            future = self._flights.get(key)
            if future is not None:
                return future, False
            future = self._flights[key] = Future()
        future.add_done_callback(lambda _done: self._forget(key, future))
        return future, True

    def follow(self, key: Hashable) -> Future[V] | None:
        """The key's future when someone leads it now, else None (never leads)."""
        with self._lock:
            return self._flights.get(key)

    def _forget(self, key: Hashable, future: Future[V]) -> None:
        with self._lock:
            if self._flights.get(key) is future:
                del self._flights[key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._flights)


def wait_for(future: Future[V], timeout: float, what: str) -> V:
    """The future's value within `timeout` seconds; the leader's failure as a fresh
    exception of the same HTTP meaning, or WaitTimeout."""
    try:
        return future.result(max(timeout, 0.0))
    except FutureTimeout:
        raise WaitTimeout(f"waited {timeout:.0f} s for the render of {what}") from None
    except Exception as exc:  # the leader's failure, re-raised as this waiter's own
        raise shared_failure(exc) from None


def shared_failure(exc: BaseException) -> Exception:
    """A copy of a render failure for another thread, keeping its status and reason."""
    if isinstance(exc, WMSUnavailable):
        return WMSUnavailable(exc.reason, exc.retry_after)
    if isinstance(exc, WMSError):
        copy = type(exc).__new__(type(exc))
        WMSError.__init__(copy, exc.reason, upstream_status=exc.upstream_status)
        return copy
    return RenderFailed(f"render failed: {type(exc).__name__}: {exc}")


def failure_record(exc: BaseException) -> dict[str, object]:
    """A render failure as data, for waiters in other processes (see :func:`from_record`)."""
    failure = shared_failure(exc)
    if isinstance(failure, WMSUnavailable):
        return {"status": 503, "kind": "shed", "reason": failure.reason}
    return {"status": failure.status, "kind": failure.kind, "reason": failure.reason}


def from_record(record: dict) -> Exception:
    """The exception another process's :func:`failure_record` describes."""
    status, reason = record.get("status"), str(record.get("reason") or "render failed")
    if status == 503:
        return WMSUnavailable(reason, retry_after=1)
    if status == 504:
        return WMSTimeout(reason)
    return RenderFailed(reason)
