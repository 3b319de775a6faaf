"""Keep a down or overloaded WMS from taking the service's threads with it.

Each layer's WMS gets a cap on concurrent GetMaps and a circuit breaker. Past the
cap a request waits briefly, then is answered 503 (with Retry-After) instead of
queueing behind a WMS that is not keeping up; after `failures` consecutive
connection errors or timeouts the breaker opens for `cooldown` seconds and requests
are answered 503 at once, then one trial request is let through.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager


class WMSUnavailable(Exception):
    """The WMS is not asked: the layer's cap is reached or its breaker is open."""

    status = 503

    def __init__(self, reason: str, retry_after: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class WMSGuard:
    def __init__(self, max_concurrent: int, wait: float, failures: int, cooldown: float):
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self.wait = wait  # seconds a GetMap may wait for a slot
        self._failures_to_open = failures
        self._cooldown = cooldown
        self._lock = threading.Lock()
        self._consecutive = 0
        self._open_until = 0.0
        self._trial = False

    @contextmanager
    def slot(self):
        """Hold one of the layer's WMS slots for the duration of a GetMap."""
        trial = self._check_breaker()
        try:
            if not self._slots.acquire(timeout=self.wait):
                raise WMSUnavailable("WMS busy: too many requests waiting for it", retry_after=1)
            try:
                yield
            finally:
                self._slots.release()
        finally:
            if trial:
                # However the trial ended (no slot, an unexpected error, or after
                # succeeded()/failed() already cleared it), the next request may try.
                with self._lock:
                    self._trial = False

    def _check_breaker(self) -> bool:
        """Raise while the breaker is open; True when this request is the trial."""
        with self._lock:
            now = time.monotonic()
            if now < self._open_until:
                left = max(int(self._open_until - now) + 1, 1)
                raise WMSUnavailable("WMS unreachable: not asking it for a while", left)
            if self._consecutive >= self._failures_to_open:
                if self._trial:  # one request is already testing the WMS
                    raise WMSUnavailable("WMS unreachable: not asking it for a while", 1)
                self._trial = True
                return True
            return False

    def succeeded(self) -> None:
        with self._lock:
            self._consecutive = 0
            self._trial = False

    def failed(self) -> None:
        """A connection error or timeout (not a WMS error answer: the WMS is up)."""
        with self._lock:
            self._consecutive += 1
            self._trial = False
            if self._consecutive >= self._failures_to_open:
                self._open_until = time.monotonic() + self._cooldown
