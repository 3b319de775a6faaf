"""The fleet's leases through the data-path client: what each S3 answer means to a claim
(S3's answers canned at the client's transport; the protocol itself runs against
moto and nginx in tests/integration/test_leases.py)."""

from __future__ import annotations

import logging
import time

from s3maptiler.service.bundle import RenderedTiles
from s3maptiler.service.leases import Leases
from s3maptiler.storage.objects import ObjectClient
from tests.unit.test_stores import MOTO_KEYS, CannedHTTP

BUCKET = "lease-bucket"


def leases(*answers, attempts: int = 3) -> tuple[Leases, CannedHTTP, list[str]]:
    kinds: list[str] = []
    client = ObjectClient(
        MOTO_KEYS, "us-east-1", "http://s3.test",
        max_attempts=attempts, backoff=0.0, on_request=kinds.append,
    )  # fmt: skip
    client.http = CannedHTTP(*answers)
    # Leases of an hour: no renewal asks the canned transport during a test.
    return Leases(client, BUCKET, lease_seconds=3600), client.http, kinds


def claim(fleet: Leases):
    return fleet.claim("ab" * 20, time.monotonic() + 5, budget=10, expected=0.1)


def test_a_free_metatile_is_claimed_with_if_none_match():
    fleet, http, kinds = leases((200, None))
    taken = claim(fleet)
    assert taken.lease is not None and taken.lease.etag == '"x"'
    method, url, headers = http.sent[0]
    assert (method, url) == ("PUT", f"http://s3.test/{BUCKET}/_leases/ab/{'ab' * 20}")
    assert headers["If-None-Match"] == "*" and headers["Cache-Control"] == "no-store"
    assert kinds == ["lease_put"]


def test_a_missing_bucket_renders_without_a_lease_after_one_request(caplog):
    """A 404 NoSuchBucket is no lease to race for: never a put-and-get loop."""
    fleet, http, _ = leases((404, "NoSuchBucket"))
    with caplog.at_level(logging.WARNING, logger="s3maptiler.service.leases"):
        taken = claim(fleet)
    assert (taken.lease, taken.found) == (None, None)
    assert len(http.sent) == 1
    assert "rendering without it" in caplog.text


def test_s3_slowing_down_renders_without_a_lease_within_the_budget():
    fleet, http, kinds = leases(*[(503, "SlowDown")] * 2, attempts=2)
    taken = claim(fleet)
    assert (taken.lease, taken.found) == (None, None)
    assert kinds == ["lease_put"] * 2


def test_a_taken_lease_is_read_and_a_vanished_one_raced_for_again():
    fleet, http, kinds = leases((412, "PreconditionFailed"), (404, "NoSuchKey"), (200, None))
    taken = claim(fleet)
    assert taken.lease is not None
    assert kinds == ["lease_put", "lease_get", "lease_put"]
    assert [m for m, _, _ in http.sent] == ["PUT", "GET", "PUT"]


def test_publishing_over_a_lease_taken_over_is_logged_not_raised(caplog):
    fleet, http, _ = leases((200, None), (412, "PreconditionFailed"))
    lease = claim(fleet).lease
    rendered = RenderedTiles("image/png", {}, None)
    with caplog.at_level(logging.WARNING, logger="s3maptiler.service.leases"):
        fleet.publish(lease, rendered)
    assert http.sent[1][2]["If-Match"] == '"x"'
    assert "taken over" in caplog.text
