"""Single flight among the instances of a fleet: a lease per metatile in the bucket.

No new infrastructure: the bucket itself arbitrates. Before an instance renders a
metatile it writes the metatile's lease object with ``If-None-Match: *``; S3 lets
exactly one such write succeed. The lease records when it expires. Instances
that lose the race do not render: they read the lease until the winner replaces it
(``If-Match`` its own ETag) with the finished render, a
:class:`~s3maptiler.service.bundle.RenderedTiles` with ``state: done``, and serve their
tiles from it while the winner's uploads land.

A lease is short (LEASE_SECONDS, 6 s by default) and kept alive by its holder: one
renewal thread per process rewrites every lease it holds each third of that
(``If-Match`` its own ETag, a new expiry), until the render is published or its
budget has passed. So a holder that dies (SIGKILL, a lost host) stops renewing, and
its metatile is taken over within LEASE_SECONDS of its last renewal, not after the
render's whole budget. Renewals cost one PUT per held lease per renewal: a render of
R seconds costs about R / (LEASE_SECONDS / 3) of them, e.g. a 60 s render with a 6 s
lease renewed every 2 s = 30 PUTs; a render shorter than the first interval (most:
GetMaps take 15 ms to a few seconds) costs none.

Per metatile that costs the winner two PUTs (plus its renewals); every other instance
that asks for the metatile one refused PUT and a GET or two, timed by the render time
the winner expects, then reads in growing, jittered steps (at most _MAX_POLL apart),
so waiters never poll hard. A lease past its expiry (its holder died), a finished render older than
``done_ttl`` and a failed render seen by a new request are taken over with
``If-Match`` on the ETag that was read, so of several instances that find the same
stale lease exactly one takes it. A failed render is recorded in the lease, and the
instances that were waiting on it answer with the same error.

Any S3 error here makes the caller render without a lease: the lease saves
GetMaps, it must never cost a tile. Every call goes through the store's breaker
(service/storeguard.py): while S3 is failing no lease is asked for at all.

Clocks: expiries are wall-clock times, so the instances' clocks must agree to well
under LEASE_SECONDS (NTP does, to milliseconds).
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from s3maptiler import metrics
from s3maptiler.service.bundle import BadBundle, RenderedTiles, read_header
from s3maptiler.service.singleflight import WaitTimeout, failure_record, from_record
from s3maptiler.service.storeguard import StoreBreaker
from s3maptiler.storage.objects import ObjectClient, Reply, as_objects
from s3maptiler.storage.s3 import LEASE_PREFIX, MISSING_BUCKET_CODES, StoreError

log = logging.getLogger(__name__)

DEFAULT_PREFIX = LEASE_PREFIX
DEFAULT_DONE_TTL = 30.0  # seconds a finished render in a lease is served from it
DEFAULT_LEASE_SECONDS = 6.0  # a lease's life unless renewed (LEASE_SECONDS)
RENEWALS_PER_LEASE = 3  # renewed every third of its life: two renewals may fail
_MIN_POLL = 0.02
_MAX_POLL = 1.0

T = TypeVar("T")


@dataclass(eq=False)
class Lease:
    """A lease this instance holds: its key, the ETag of the record it last wrote
    (renewals change it), when it took it (wall clock), and until when it is renewed
    at most (the render's budget; wall clock)."""

    key: str
    etag: str
    started: float
    until: float = float("inf")
    record: dict = field(default_factory=dict)  # the rendering record, renewed with new expiry
    written: float = 0.0  # when its record was last written (wall clock)
    settled: bool = False  # published, failed, lost or past `until`: no more renewals
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


@dataclass
class Claim:
    """What asking for a metatile's lease gave: the lease, or another's render and
    the seconds that render took (for the next estimate)."""

    lease: Lease | None = None
    found: RenderedTiles | None = None
    took: float | None = None


class _Refused(Exception):
    """A conditional write that S3 refused (412), or a lease that vanished (404)."""


class Leases:
    """The fleet's leases in one bucket, through the shared data-path client (a boto3
    client is accepted and turned into one).

    `lease_seconds`: a lease's life unless renewed; `breaker`: the store's breaker
    (None: S3 is always asked)."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = DEFAULT_PREFIX,
        done_ttl: float = DEFAULT_DONE_TTL,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        breaker: StoreBreaker | None = None,
    ):
        self.client: ObjectClient = as_objects(client)
        self.bucket = bucket
        self.prefix = prefix
        self.done_ttl = done_ttl
        self.lease_seconds = lease_seconds
        self.breaker = breaker
        self.holder = f"{socket.gethostname()}/{os.getpid()}"
        self.renewals = 0  # renewal PUTs made since start
        self._held: dict[str, Lease] = {}
        self._held_lock = threading.Condition()
        self._renewer: threading.Thread | None = None

    def key(self, flight: str) -> str:
        return f"{self.prefix}{flight[:2]}/{flight}"

    def claim(self, flight: str, deadline: float, budget: float, expected: float) -> Claim:
        """Take the metatile's lease, or wait for the render of whoever holds it.

        `budget`: seconds our render may take (its lease is renewed until then);
        `expected`: how long a render usually takes, for timing the reads. Raises WaitTimeout at the
        monotonic `deadline`, or the failure of the render we waited on. Returns an
        empty Claim when S3 cannot be asked: the caller renders without a lease.
        """
        key = self.key(flight)
        if self.breaker is not None and self.breaker.problem() is not None:
            metrics.STORE_CALLS_SKIPPED.labels("lease").inc()
            return Claim()  # S3 is failing: not even one call (the trial is a read's)
        try:
            claim = self._claim(key, deadline, budget, expected)
        except StoreError as exc:
            if exc.attempts != 0:  # skipped by the breaker: said once, by it
                log.warning("lease %s not available, rendering without it: %s", key, exc)
            return Claim()
        if claim.lease is not None:
            self._hold(claim.lease)
        return claim

    def _claim(self, key: str, deadline: float, budget: float, expected: float) -> Claim:
        started = time.time()
        mine = self._rendering_header(started, expected)
        record = self._record(mine, started)
        polls = 0  # reads of a render under way; more than none: we wait for that render

        def taken(etag: str) -> Lease:
            return Lease(key, etag, started, started + budget, mine, time.time())

        while True:
            if time.monotonic() >= deadline:  # however S3 answers, never past the deadline
                raise WaitTimeout("gave up racing for another instance's lease")
            try:
                etag = self._s3(self._put, key, record, if_none_match=True)
                return Claim(lease=taken(etag))
            except _Refused:
                pass
            while True:
                read = self._s3(self._get, key)
                if read is None:
                    break  # the holder gave up: race for a new lease
                if time.monotonic() >= deadline:
                    raise WaitTimeout("gave up racing for another instance's lease")
                header, blob, etag = read
                state, now = header.get("state"), time.time()
                done_at = float(header.get("done_at", 0))
                if state == "done" and now - done_at < self.done_ttl:
                    try:
                        rendered = RenderedTiles.from_bytes(blob)[0]
                    except BadBundle as exc:
                        log.warning("lease %s holds an unreadable render: %s", key, exc)
                    else:
                        took = done_at - float(header.get("started", done_at))
                        return Claim(found=rendered, took=took)
                elif state == "rendering" and now < float(header.get("expires", 0)):
                    self._pause(header, polls, deadline)
                    polls += 1
                    continue
                elif state == "failed" and polls:
                    raise from_record(header.get("failure") or {})
                # Stale: an expired holder, an old render, a failure before our time.
                try:
                    return Claim(lease=taken(self._s3(self._put, key, record, if_match=etag)))
                except _Refused:
                    continue  # another instance took it over first: wait on it

    @staticmethod
    def _pause(header: dict, polls: int, deadline: float) -> None:
        """Sleep until the holder's render should be done, then in growing steps
        (bounded exponential backoff with jitter: waiters on one lease spread out)."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeout("waited too long for another instance's render")
        expected = float(header.get("expected", 1.0))
        if polls == 0:  # first read: a little after the holder expects to be done
            due = float(header.get("started", 0)) + expected - time.time()
            pause = min(max(due + 0.25 * expected, _MIN_POLL), 1.25 * expected)
        else:  # late: half the expected time, doubling, so reads stay few
            pause = min(max(expected * 2 ** (polls - 2), _MIN_POLL), _MAX_POLL)
            pause *= random.uniform(0.5, 1.0)
        # Never sleep past the lease's expiry: a dead holder's lease is taken over then,
        # however long its render was expected to take.
        expiry = float(header.get("expires", 0)) - time.time()
        pause = min(pause, max(expiry, 0.0) + _MIN_POLL)
        time.sleep(min(pause, left))

    def publish(self, lease: Lease, rendered: RenderedTiles) -> None:
        """Replace our lease with the finished render, for instances waiting on it."""
        blob = rendered.to_bytes(state="done", started=lease.started, done_at=time.time())
        self._settle(lease, blob)

    def fail(self, lease: Lease, exc: BaseException) -> None:
        """Record that our render failed: waiters answer with the same error."""
        blob = json.dumps({"state": "failed", "failure": failure_record(exc)}).encode() + b"\n"
        self._settle(lease, blob)

    def _settle(self, lease: Lease, blob: bytes) -> None:
        with lease.lock:  # after a renewal under way: its new ETag is the one to match
            lost, lease.settled = lease.settled and lease.etag == "", True
            self._release(lease)
            if lost:
                return  # a renewal found it taken over, and said so
            try:
                lease.etag = self._s3(self._put, lease.key, blob, if_match=lease.etag)
            except _Refused:
                log.warning("lease %s was taken over before our render finished", lease.key)
            except StoreError as exc:
                log.warning("lease %s not updated: %s", lease.key, exc)

    # ---------------------------------------------------------------- renewals

    def _hold(self, lease: Lease) -> None:
        """Keep `lease` alive until it is settled; start the renewal thread if needed."""
        with self._held_lock:
            self._held[lease.key] = lease
            if self._renewer is None or not self._renewer.is_alive():
                self._renewer = threading.Thread(
                    target=self._renew_forever, name="lease-renewal", daemon=True
                )
                self._renewer.start()
            self._held_lock.notify()

    def _release(self, lease: Lease) -> None:
        with self._held_lock:
            if self._held.get(lease.key) is lease:
                del self._held[lease.key]

    def held(self) -> list[Lease]:
        with self._held_lock:
            return list(self._held.values())

    def _renew_forever(self) -> None:
        """The process's renewal thread: every third of a lease's life, renew each
        lease held. Daemon: a process that dies takes it along, and so its leases."""
        interval = self.lease_seconds / RENEWALS_PER_LEASE
        while True:
            with self._held_lock:
                while not self._held:
                    self._held_lock.wait()
            time.sleep(interval / 2)  # so no lease goes more than 1.5 intervals unrenewed
            for lease in self.held():
                if time.time() - lease.written >= interval:
                    try:
                        self.renew(lease)
                    except Exception:  # one bad renewal must not end every lease's
                        log.exception("lease %s: renewal failed", lease.key)

    def renew(self, lease: Lease) -> bool:
        """Rewrite our rendering record with a new expiry (If-Match our ETag); False
        when the lease is settled, past its budget, or was taken over."""
        with lease.lock:
            if lease.settled:
                return False
            now = time.time()
            if now >= lease.until:  # a holder stuck past its budget is as good as dead
                lease.settled = True
                self._release(lease)
                log.warning("lease %s not renewed: its render ran past its budget", lease.key)
                return False
            record = self._record(lease.record, now)
            try:
                lease.etag = self._s3(self._put, lease.key, record, if_match=lease.etag)
                lease.written = now
            except _Refused:
                lease.settled, lease.etag = True, ""
                self._release(lease)
                log.warning("lease %s was taken over while we rendered", lease.key)
                return False
            except StoreError as exc:
                if exc.attempts != 0:  # skipped by the open breaker: said once, by it
                    log.warning("lease %s not renewed (trying again): %s", lease.key, exc)
                return False
            self.renewals += 1
            return True

    # ---------------------------------------------------------------- S3 calls

    def _s3(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """One lease call, through the store's breaker when there is one."""
        if self.breaker is None:
            return call(*args, **kwargs)
        return self.breaker.run(lambda: call(*args, **kwargs), "lease")

    def _rendering_header(self, started: float, expected: float) -> dict:
        return {
            "state": "rendering",
            "holder": self.holder,
            "started": started,
            "expected": round(expected, 3),
        }

    def _record(self, header: dict, now: float) -> bytes:
        """The rendering record, expiring LEASE_SECONDS after `now`."""
        record = {**header, "expires": now + self.lease_seconds}
        return json.dumps(record, separators=(",", ":")).encode() + b"\n"

    def _put(
        self, key: str, body: bytes, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        headers = {"Content-Type": "application/octet-stream", "Cache-Control": "no-store"}
        if if_none_match:
            headers["If-None-Match"] = "*"
        if if_match is not None:
            headers["If-Match"] = if_match
        reply = self.client.put(self.bucket, key, body, headers, "lease_put")
        if reply.status == 200:
            return reply.headers["ETag"]
        if _refused(reply):
            raise _Refused
        raise reply.error(f"lease PutObject {key}")

    def _get(self, key: str) -> tuple[dict, bytes, str] | None:
        reply = self.client.get(self.bucket, key, "lease_get")
        if reply.status != 200:
            if _refused(reply):
                return None
            raise reply.error(f"lease GetObject {key}")
        blob = reply.body
        try:
            header, _ = read_header(blob)
        except BadBundle:
            header = {}  # unreadable: treated as stale and taken over
        return header, blob, reply.headers["ETag"]


def _refused(reply: Reply) -> bool:
    """412 (the condition failed), 409 (a concurrent conditional write, left after the
    client's retries) or 404 (the lease is gone). Not a missing bucket, also a 404:
    that is no lease to race for, and taking it for one made claim() put and get in a
    loop forever."""
    code, status = reply.code, reply.status
    if code in MISSING_BUCKET_CODES:
        return False
    return status in (404, 409, 412) or code in (
        "PreconditionFailed",
        "ConditionalRequestConflict",
        "NoSuchKey",
    )
