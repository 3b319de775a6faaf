"""Keep a down or overloaded dependency from taking the service's threads with it.

:class:`Breaker` is the one circuit breaker of the project: after `failures`
consecutive failures (connection errors, timeouts, throttling; never an answer that
proves the other side is up) it opens for `cooldown` seconds, during which callers
are told not to ask; then one trial call is let through, and its outcome closes the
breaker or opens it again. The WMS of each layer has one (inside :class:`WMSGuard`),
and so has each tile store (``service/storeguard.py``).

Each layer's WMS also gets a cap on concurrent GetMaps: past the cap a request waits
briefly, then is answered 503 (with Retry-After) instead of queueing behind a WMS
that is not keeping up; while its breaker is open requests are answered 503 at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import contextmanager


class BreakerOpen(Exception):
    """The breaker is open (or its one trial is out): the call must not be made."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"circuit breaker open, retry after {retry_after} s")
        self.retry_after = retry_after


class Breaker:
    """Closed, then open for `cooldown` s after `failures` consecutive failures, then
    half-open: one trial call at a time until one succeeds. Thread-safe."""

    def __init__(
        self, failures: int, cooldown: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._failures_to_open = failures
        self._cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._consecutive = 0
        self._open_until = 0.0
        self._trial = False
        self.last_failure = ""  # one line: why the last call failed
        self.opened = 0  # times the breaker opened since start

    def enter(self) -> bool:
        """Raise BreakerOpen while open; True when this call is the half-open trial
        (the caller must then call :meth:`end_trial` however the call ends)."""
        with self._lock:
            now = self._clock()
            if now < self._open_until:
                raise BreakerOpen(max(int(self._open_until - now) + 1, 1))
            if self._consecutive >= self._failures_to_open:
                if self._trial:  # one call is already testing the other side
                    raise BreakerOpen(1)
                self._trial = True
                return True
            return False

    def end_trial(self) -> None:
        with self._lock:
            self._trial = False

    def succeeded(self) -> bool:
        """The call was answered; True when that closed an open breaker."""
        with self._lock:
            was_open = self._consecutive >= self._failures_to_open
            self._consecutive = 0
            self._open_until = 0.0
            self._trial = False
            return was_open

    def failed(self, reason: str = "") -> bool:
        """The other side could not be reached or refused to work (not an error
        answer); True when this failure opened a closed breaker."""
        with self._lock:
            self._consecutive += 1
            self._trial = False
            if reason:
                self.last_failure = reason.splitlines()[0][:200]
            if self._consecutive < self._failures_to_open:
                return False
            self._open_until = self._clock() + self._cooldown
            if self._consecutive == self._failures_to_open:
                self.opened += 1
                return True
            return False

    def problem(self) -> str | None:
        """A one-line reason while the breaker is open or half-open, else None."""
        with self._lock:
            if self._consecutive < self._failures_to_open:
                return None
            left = self._open_until - self._clock()
            when = f"next trial in {left:.0f} s" if left > 0 else "trying again"
            return (
                f"{self._consecutive} consecutive failures, not asked ({when}); "
                f"last: {self.last_failure or 'unknown'}"
            )


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
        self.breaker = Breaker(failures, cooldown)

    @contextmanager
    def slot(self):
        """Hold one of the layer's WMS slots for the duration of a GetMap."""
        try:
            trial = self.breaker.enter()
        except BreakerOpen as exc:
            raise WMSUnavailable(
                "WMS unreachable: not asking it for a while", exc.retry_after
            ) from None
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
                self.breaker.end_trial()

    def succeeded(self) -> None:
        self.breaker.succeeded()

    def failed(self) -> None:
        """A connection error or timeout (not a WMS error answer: the WMS is up)."""
        self.breaker.failed()
