"""Leases in a real S3 server (moto over HTTP): the behaviour the fleet relies on.

Each `Leases` here has a boto3 client of its own, as separate instances would, and
every claim runs on its own thread, released together by a barrier.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from s3maptiler.render.errors import WMSTimeout
from s3maptiler.service.bundle import RenderedTiles
from s3maptiler.service.leases import Leases, _Refused
from s3maptiler.service.singleflight import WaitTimeout
from s3maptiler.tiles.grids import Tile
from tests.integration.conftest import AWS_ENV
from tests.servers import free_port, s3_client

pytestmark = pytest.mark.integration

FLIGHT = "c0ffee" * 7
RENDER = RenderedTiles("image/png", {Tile(x, 0, 2): b"tile %d" % x for x in range(4)})
EVENT_WAIT = 20
INSTANCES = 8


def client(url: str):
    return s3_client(url, Config(max_pool_connections=32, retries={"mode": "standard"}))


class Instance(Leases):
    """One instance's leases, reporting each conditional write S3 refused."""

    def __init__(
        self,
        url: str,
        bucket: str,
        refused: threading.Semaphore | None = None,
        lease_seconds: float = 6.0,
    ):
        super().__init__(client(url), bucket, lease_seconds=lease_seconds)
        self.refused = refused
        self.waiting = threading.Event()  # set once it has seen a render under way

    def _pause(self, header, polls, deadline):
        self.waiting.set()
        Leases._pause(header, polls, deadline)

    def _put(self, key, body, if_none_match=False, if_match=None):
        try:
            return super()._put(key, body, if_none_match=if_none_match, if_match=if_match)
        except _Refused:
            if self.refused is not None:
                self.refused.release()
            raise


def claim_together(instances, deadline=EVENT_WAIT, expected=0.05, on_lease=None):
    """Every instance claims FLIGHT at the same moment; returns their claims in order.
    `on_lease(instance, lease)` runs on the winner's thread."""
    barrier = threading.Barrier(len(instances))

    def claim(instance):
        barrier.wait()
        got = instance.claim(FLIGHT, time.monotonic() + deadline, 60.0, expected)
        if got.lease is not None and on_lease is not None:
            on_lease(instance, got.lease)
        return got

    with ThreadPoolExecutor(len(instances)) as pool:
        return list(pool.map(claim, instances))


def test_moto_lets_exactly_one_of_many_simultaneous_conditional_writes_win(moto_server, bucket):
    s3 = client(moto_server.url)
    for round_ in range(20):
        key = f"race/{round_}"
        barrier = threading.Barrier(16)

        def put(n, key=key, barrier=barrier):
            barrier.wait()
            try:
                s3.put_object(Bucket=bucket, Key=key, Body=b"%d" % n, IfNoneMatch="*")
                return True
            except ClientError as exc:
                assert exc.response["Error"]["Code"] == "PreconditionFailed"
                return False

        with ThreadPoolExecutor(16) as pool:
            assert sum(pool.map(put, range(16))) == 1, f"round {round_}"
    etag = s3.put_object(Bucket=bucket, Key="race/m", Body=b"1")["ETag"]
    s3.put_object(Bucket=bucket, Key="race/m", Body=b"2", IfMatch=etag)
    with pytest.raises(ClientError) as stale:
        s3.put_object(Bucket=bucket, Key="race/m", Body=b"3", IfMatch=etag)
    assert stale.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412


def test_one_instance_renders_and_the_others_serve_its_render(moto_server, bucket):
    refused = threading.Semaphore(0)
    instances = [Instance(moto_server.url, bucket, refused) for _ in range(INSTANCES)]

    def render(instance, lease):
        for _ in range(INSTANCES - 1):  # every other instance has lost the race
            assert refused.acquire(timeout=EVENT_WAIT)
        instance.publish(lease, RENDER)

    claims = claim_together(instances, on_lease=render)
    assert sum(c.lease is not None for c in claims) == 1
    losers = [c for c in claims if c.lease is None]
    assert all(c.found == RENDER for c in losers)
    assert all(c.took is not None and c.took >= 0 for c in losers)


def put_record(s3, bucket: str, **record) -> None:
    key = Leases(s3, bucket).key(FLIGHT)
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(record).encode() + b"\n")


def test_a_lease_whose_holder_died_is_taken_over_by_exactly_one_instance(moto_server, bucket):
    s3 = client(moto_server.url)
    now = time.time()
    put_record(s3, bucket, state="rendering", holder="dead/1", started=now - 90, expires=now - 1)
    refused = threading.Semaphore(0)
    instances = [Instance(moto_server.url, bucket, refused) for _ in range(INSTANCES)]

    def render(instance, lease):
        for _ in range(INSTANCES - 1):
            assert refused.acquire(timeout=EVENT_WAIT)
        instance.publish(lease, RENDER)

    claims = claim_together(instances, on_lease=render)
    assert sum(c.lease is not None for c in claims) == 1
    assert all(c.found == RENDER for c in claims if c.lease is None)


def test_waiters_answer_with_the_failure_and_the_next_request_tries_again(moto_server, bucket):
    holder = Instance(moto_server.url, bucket)
    lease = holder.claim(FLIGHT, time.monotonic() + EVENT_WAIT, 60.0, 0.05).lease
    assert lease is not None
    waiter = Instance(moto_server.url, bucket)
    outcome = {}

    def wait():
        try:
            waiter.claim(FLIGHT, time.monotonic() + EVENT_WAIT, 60.0, 0.05)
        except WMSTimeout as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=wait)
    thread.start()
    assert waiter.waiting.wait(EVENT_WAIT)  # it waits on the render under way
    holder.fail(lease, WMSTimeout("WMS did not answer within 30 s"))
    thread.join(EVENT_WAIT)
    assert outcome["error"].status == 504
    assert "did not answer" in outcome["error"].reason
    again = Instance(moto_server.url, bucket).claim(FLIGHT, time.monotonic() + 5, 60.0, 0.05)
    assert again.lease is not None  # a failure is never a cached answer


def test_a_finished_render_is_served_for_done_ttl_then_drawn_again(moto_server, bucket):
    s3 = client(moto_server.url)
    key = Leases(s3, bucket).key(FLIGHT)
    blob = RENDER.to_bytes(state="done", started=time.time() - 1, done_at=time.time())
    s3.put_object(Bucket=bucket, Key=key, Body=blob)
    fresh = Instance(moto_server.url, bucket).claim(FLIGHT, time.monotonic() + 5, 60.0, 0.05)
    assert fresh.found == RENDER and fresh.lease is None
    old = RENDER.to_bytes(state="done", started=time.time() - 99, done_at=time.time() - 60)
    s3.put_object(Bucket=bucket, Key=key, Body=old)
    stale = Instance(moto_server.url, bucket).claim(FLIGHT, time.monotonic() + 5, 60.0, 0.05)
    assert stale.lease is not None


def test_a_waiter_gives_up_at_its_deadline_with_a_504(moto_server, bucket):
    holder = Instance(moto_server.url, bucket)
    assert holder.claim(FLIGHT, time.monotonic() + 5, 60.0, 0.05).lease is not None
    with pytest.raises(WaitTimeout) as raised:
        Instance(moto_server.url, bucket).claim(FLIGHT, time.monotonic() + 0.3, 60.0, 0.05)
    assert raised.value.status == 504


def test_an_unreachable_bucket_means_rendering_without_a_lease(caplog):
    closed = f"http://127.0.0.1:{free_port()}"
    leases = Leases(
        boto3.client(
            "s3",
            endpoint_url=closed,
            region_name="us-east-1",
            aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
            config=Config(retries={"total_max_attempts": 1}, connect_timeout=1),
        ),
        "tiles",
    )
    with caplog.at_level(logging.WARNING):
        claim = leases.claim(FLIGHT, time.monotonic() + 5, 60.0, 0.05)
    assert claim.lease is None and claim.found is None
    assert "rendering without it" in caplog.text


def test_a_missing_bucket_is_no_lease_to_race_for(moto_server, localstack):
    # NoSuchBucket is a 404 like a vanished lease; taken for one, claim() put and got
    # in a loop forever (a tile request on a bucket that did not exist never answered).
    for url in (moto_server.url, localstack.url):
        leases = Leases(client(url), f"no-such-bucket-{free_port()}")
        claims = []

        # A daemon thread: a regression spins forever, and must not hold the test run.
        def claim(leases=leases, claims=claims):
            claims.append(leases.claim(FLIGHT, time.monotonic() + 30, budget=5, expected=1))

        thread = threading.Thread(target=claim, daemon=True)
        thread.start()
        thread.join(10)
        assert claims, f"claim on a missing bucket did not return ({url})"
        assert claims[0].lease is None and claims[0].found is None  # render without one


# --------------------------------------------------------------------------- renewals


def lease_record(s3, bucket: str) -> dict:
    key = Leases(s3, bucket).key(FLIGHT)
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read().splitlines()[0])


def test_a_holder_renews_its_short_lease_so_a_long_render_is_not_taken_over(moto_server, bucket):
    """A render ten times longer than the lease: the holder keeps it, the waiter waits
    and gets the holder's render, and renewals cost about one PUT per third of a lease."""
    holder = Instance(moto_server.url, bucket, lease_seconds=0.6)
    lease = holder.claim(FLIGHT, time.monotonic() + EVENT_WAIT, 60.0, 0.05).lease
    assert lease is not None
    first_etag = lease.etag
    waiter = Instance(moto_server.url, bucket, lease_seconds=0.6)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(waiter.claim, FLIGHT, time.monotonic() + EVENT_WAIT, 60.0, 0.05)
        assert waiter.waiting.wait(EVENT_WAIT)
        time.sleep(6.0)  # ten lease lifetimes of rendering
        record = lease_record(client(moto_server.url), bucket)
        assert record["state"] == "rendering" and record["expires"] > time.time()
        assert not waiting.done()  # never taken over while its holder lives
        holder.publish(lease, RENDER)
        claim = waiting.result(EVENT_WAIT)
    assert claim.lease is None and claim.found == RENDER
    assert lease.etag != first_etag and holder.held() == []
    # One renewal per 0.2 s (a third of the lease), give or take the renewal thread's ticks.
    assert 20 <= holder.renewals <= 32, holder.renewals


def test_a_holder_that_stops_renewing_is_taken_over_within_its_lease(moto_server, bucket):
    """As a SIGKILLed holder does: its renewals stop, and the waiter takes over the
    metatile about LEASE_SECONDS after the last one, not after the render's budget."""
    holder = Instance(moto_server.url, bucket, lease_seconds=1.5)
    lease = holder.claim(FLIGHT, time.monotonic() + EVENT_WAIT, 60.0, 0.05).lease
    assert lease is not None
    time.sleep(1.2)  # renewed at least once
    assert holder.renewals >= 1
    with lease.lock:  # the holder dies: no more renewals, no publish
        lease.settled = True
        holder._release(lease)
    died = time.monotonic()
    waiter = Instance(moto_server.url, bucket, lease_seconds=1.5)
    waiter.holder = "other-host/2"  # as another instance would be
    claim = waiter.claim(FLIGHT, time.monotonic() + EVENT_WAIT, 60.0, 0.05)
    took = time.monotonic() - died
    assert claim.lease is not None, "the waiter took the dead holder's lease over"
    assert took <= 1.5 + 1.0 + 0.5, f"taken over {took:.2f} s after the holder died"
    assert waiter.renew(claim.lease)  # renewed as the waiter's own, not the dead holder's
    assert lease_record(client(moto_server.url), bucket)["holder"] == waiter.holder
    waiter.publish(claim.lease, RENDER)


def test_a_renewal_that_finds_its_lease_taken_over_stops_and_overwrites_nothing(
    moto_server, bucket, caplog
):
    s3 = client(moto_server.url)
    holder = Instance(moto_server.url, bucket, lease_seconds=60)
    lease = holder.claim(FLIGHT, time.monotonic() + EVENT_WAIT, 600.0, 0.05).lease
    assert lease is not None
    put_record(s3, bucket, state="rendering", holder="other/2", started=time.time(),
               expires=time.time() + 60)  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="s3maptiler.service.leases"):
        assert holder.renew(lease) is False
        holder.publish(lease, RENDER)
    assert holder.held() == []
    assert lease_record(s3, bucket)["holder"] == "other/2"
    assert any("taken over while we rendered" in r.getMessage() for r in caplog.records)


def test_a_holder_stuck_past_its_budget_stops_renewing(moto_server, bucket):
    holder = Instance(moto_server.url, bucket, lease_seconds=0.6)
    lease = holder.claim(FLIGHT, time.monotonic() + EVENT_WAIT, 0.5, 0.05).lease
    assert lease is not None
    time.sleep(1.5)
    assert lease.settled and holder.held() == []
    assert lease_record(client(moto_server.url), bucket)["expires"] < time.time()


def test_waiters_back_off_with_jitter_up_to_a_bound(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    now = time.time()
    # A render expected to take a minute, in a lease that expires in 6 s: the first
    # read is at the expiry, not a minute later (its holder may be dead by then).
    Leases._pause({"started": now, "expected": 60.0, "expires": now + 6}, 0, time.monotonic() + 90)
    assert 5.5 <= slept.pop() <= 6.1
    header = {"state": "rendering", "started": now, "expected": 0.4, "expires": now + 60}
    for polls in range(1, 12):
        Leases._pause(header, polls, time.monotonic() + 60)
    assert all(0 < pause <= 1.0 for pause in slept)
    assert slept[-1] >= 0.5  # grew to the bound, less its jitter
    assert len({round(p, 6) for p in slept[-5:]}) > 1  # waiters on one lease spread out
