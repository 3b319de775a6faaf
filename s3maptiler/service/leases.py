"""Single flight among the instances of a fleet: a lease per metatile in the bucket.

No new infrastructure: the bucket itself arbitrates. Before an instance renders a
metatile it writes the metatile's lease object with ``If-None-Match: *``; S3 lets
exactly one such write succeed. The lease records when it expires. Instances
that lose the race do not render: they read the lease until the winner replaces it
(``If-Match`` its own ETag) with the finished render, a
:class:`~s3maptiler.render.pipeline.RenderedTiles` with ``state: done``, and serve their
tiles from it while the winner's uploads land.

Per metatile that costs the winner two PUTs; every other instance that asks for the
metatile one refused PUT and a GET or two, timed by the render time the winner
expects. A lease past its expiry (its holder died), a finished render older than
``done_ttl`` and a failed render seen by a new request are taken over with
``If-Match`` on the ETag that was read, so of several instances that find the same
stale lease exactly one takes it. A failed render is recorded in the lease, and the
instances that were waiting on it answer with the same error.

Any S3 error here makes the caller render without a lease: the lease saves
GetMaps, it must never cost a tile. Clocks: expiries are wall-clock times, so the
instances' clocks must agree to well under a render's budget (NTP does).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from s3maptiler.render.pipeline import BadBundle, RenderedTiles, read_header
from s3maptiler.service.singleflight import WaitTimeout, failure_record, from_record
from s3maptiler.storage.objects import ObjectClient, Reply, as_objects
from s3maptiler.storage.s3 import LEASE_PREFIX, MISSING_BUCKET_CODES, StoreError

log = logging.getLogger(__name__)

DEFAULT_PREFIX = LEASE_PREFIX
DEFAULT_DONE_TTL = 30.0  # seconds a finished render in a lease is served from it
_MIN_POLL = 0.02
_MAX_POLL = 1.0


@dataclass(frozen=True)
class Lease:
    """A lease this instance holds: its key, the ETag of the record it wrote, and
    when it took it (wall clock)."""

    key: str
    etag: str
    started: float


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
    client is accepted and turned into one)."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = DEFAULT_PREFIX,
        done_ttl: float = DEFAULT_DONE_TTL,
    ):
        self.client: ObjectClient = as_objects(client)
        self.bucket = bucket
        self.prefix = prefix
        self.done_ttl = done_ttl
        self.holder = f"{socket.gethostname()}/{os.getpid()}"

    def key(self, flight: str) -> str:
        return f"{self.prefix}{flight[:2]}/{flight}"

    def claim(self, flight: str, deadline: float, budget: float, expected: float) -> Claim:
        """Take the metatile's lease, or wait for the render of whoever holds it.

        `budget`: seconds our render may take (the lease's lifetime); `expected`: how
        long a render usually takes, for timing the reads. Raises WaitTimeout at the
        monotonic `deadline`, or the failure of the render we waited on. Returns an
        empty Claim when S3 cannot be asked: the caller renders without a lease.
        """
        key = self.key(flight)
        try:
            return self._claim(key, deadline, budget, expected)
        except StoreError as exc:
            log.warning("lease %s not available, rendering without it: %s", key, exc)
            return Claim()

    def _claim(self, key: str, deadline: float, budget: float, expected: float) -> Claim:
        started = time.time()
        record = self._rendering_record(started, budget, expected)
        polls = 0  # reads of a render under way; more than none: we wait for that render
        while True:
            if time.monotonic() >= deadline:  # however S3 answers, never past the deadline
                raise WaitTimeout("gave up racing for another instance's lease")
            try:
                etag = self._put(key, record, if_none_match=True)
                return Claim(lease=Lease(key, etag, started))
            except _Refused:
                pass
            while True:
                read = self._get(key)
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
                    return Claim(lease=Lease(key, self._put(key, record, if_match=etag), started))
                except _Refused:
                    continue  # another instance took it over first: wait on it

    @staticmethod
    def _pause(header: dict, polls: int, deadline: float) -> None:
        """Sleep until the holder's render should be done, then in growing steps."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeout("waited too long for another instance's render")
        expected = float(header.get("expected", 1.0))
        if polls == 0:  # first read: a little after the holder expects to be done
            due = float(header.get("started", 0)) + expected - time.time()
            pause = min(max(due + 0.25 * expected, _MIN_POLL), 1.25 * expected)
        else:  # late: half the expected time, doubling, so reads stay few
            pause = min(max(expected * 2 ** (polls - 2), _MIN_POLL), _MAX_POLL)
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
        try:
            self._put(lease.key, blob, if_match=lease.etag)
        except _Refused:
            log.warning("lease %s was taken over before our render finished", lease.key)
        except StoreError as exc:
            log.warning("lease %s not updated: %s", lease.key, exc)

    # ---------------------------------------------------------------- S3 calls

    def _rendering_record(self, started: float, budget: float, expected: float) -> bytes:
        header = {
            "state": "rendering",
            "holder": self.holder,
            "started": started,
            "expected": round(expected, 3),
            "expires": started + budget,
        }
        return json.dumps(header, separators=(",", ":")).encode() + b"\n"

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
