"""A tile store behind a circuit breaker: S3 failing is skipped, not waited on.

One :class:`StoreBreaker` per bucket, shared by the three kinds of S3 call the
service makes: tile reads on the request path, the upload pool's writes and the
fleet's leases. After `failures` consecutive calls that found S3 unreachable (a
refused connection, a timeout, 5xx or 503 SlowDown: ``StoreUnavailable``, or the
botocore errors :func:`~s3maptiler.storage.s3.is_retryable` names) the breaker opens
for `cooldown` seconds, and while it is open:

- a read is not made: the tile is a miss and is rendered at WMS speed;
- no lease is taken: the metatile is rendered without the fleet's single flight;
- an upload is not sent: it ends as ``skipped`` (counted in ``/metrics`` and the
  heartbeat as unstored), never as stored.

Then one call of any kind is the trial: its answer closes the breaker (tiles are
stored again), its failure opens it for another cooldown. An error answer (403,
404, 412) proves S3 is up and counts as a success. Opening and closing are logged
once each, not once per tile.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from s3maptiler import metrics
from s3maptiler.render.guard import Breaker, BreakerOpen
from s3maptiler.storage.s3 import StoreError, StoreSkipped, StoreUnavailable, is_retryable
from s3maptiler.storage.stores import StoredTile, TileObject, TileStore

log = logging.getLogger(__name__)

T = TypeVar("T")


def unavailable(exc: BaseException) -> bool:
    """True for a failure that says S3 cannot be reached or is overloaded."""
    if isinstance(exc, StoreError):
        return isinstance(exc, StoreUnavailable)
    return isinstance(exc, ClientError | BotoCoreError) and is_retryable(exc)


class StoreBreaker(Breaker):
    """The breaker of one store (`location`), with its transitions logged and counted."""

    def __init__(self, location: str, failures: int, cooldown: float) -> None:
        super().__init__(failures, cooldown)
        self.location = location
        self.cooldown = cooldown

    def run(self, call: Callable[[], T], kind: str) -> T:
        """`call()` through the breaker; StoreSkipped (not asked) while it is open.
        `kind` ("read", "write", "lease") labels the skipped-calls metric."""
        try:
            trial = self.enter()
        except BreakerOpen:
            metrics.STORE_CALLS_SKIPPED.labels(kind).inc()
            raise StoreSkipped(f"{kind} not sent: {self.location} is failing") from None
        try:
            result = call()
        except Exception as exc:
            if unavailable(exc):
                self.failed(str(exc) or type(exc).__name__)
            else:
                self.succeeded()  # an answer: S3 is up
            raise
        finally:
            if trial:
                self.end_trial()
        self.succeeded()
        return result

    def failed(self, reason: str = "") -> bool:
        opened = super().failed(reason)
        if opened:
            metrics.STORE_BREAKER_OPENED.inc()
            log.warning(
                "store %s failing, not asked for %.0f s (reads are misses, no leases, "
                "uploads skipped): %s",
                self.location,
                self.cooldown,
                self.last_failure,
            )
        return opened

    def succeeded(self) -> bool:
        closed = super().succeeded()
        if closed:
            log.warning("store %s answers again: reads, leases and uploads resume", self.location)
        return closed


class GuardedStore(TileStore):
    """`store` whose reads and writes go through `breaker` (the upload pool's store).

    `attempts`: the requests the store's client makes per call at most; a failure
    that does not say how many it made was retried that many times when retryable
    (botocore retries those to its budget), else made once."""

    def __init__(self, store: TileStore, breaker: StoreBreaker, attempts: int = 1) -> None:
        self.store = store
        self.breaker = breaker
        self.attempts = attempts
        self.location = store.location
        self.remote = store.remote

    def get(self, key: str) -> StoredTile | None:
        return self.breaker.run(lambda: self.store.get(key), "read")

    def write(self, obj: TileObject) -> str:
        try:
            return self.breaker.run(lambda: self.store.write(obj), "write")
        except StoreError as exc:
            if exc.attempts is None:
                exc.attempts = self.attempts if exc.retryable else 1
            raise

    def check(self) -> None:
        self.store.check()

    def __getattr__(self, name: str):
        # The rest is the wrapped store's (its bucket, client, ...), for callers and tests.
        if name == "store":
            raise AttributeError(name)
        return getattr(self.store, name)

    def read_problem(self) -> str | None:
        return self.store.read_problem()
