"""Background upload pool: bounded, one put per job (no retries of its own), drained, counted."""

from __future__ import annotations

import logging
import threading
from collections import Counter

import pytest
from moto import mock_aws

from s3maptiler.storage.s3 import StoreError, StoreUnavailable, make_s3_client
from s3maptiler.storage.stores import S3Store, TileStore
from s3maptiler.storage.uploads import InvalidPoolSettings, UploadJob, UploadPool

HANG_GUARD = 30.0  # seconds; only reached when the code under test is broken


def job(n: int | str, data: bytes | None = None) -> UploadJob:
    return UploadJob(f"tiles/{n}.png", data or f"png-{n}".encode(), "image/png", "max-age=60")


class FakeStore(TileStore):
    """In-memory store; can fail the first `fail_times` puts per key, or wait on a gate."""

    location = "memory://fake"

    def __init__(
        self,
        fail_times: int = 0,
        error: Exception | None = None,
        gate: threading.Event | None = None,
    ):
        self.fail_times = fail_times
        self.error = error or StoreUnavailable("503 SlowDown")
        self.gate = gate
        self.entered = threading.Event()  # set when a put is running
        self.calls: Counter[str] = Counter()
        self.objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def write(self, obj):
        key, data = obj.key, obj.data
        with self._lock:
            self.calls[key] += 1
            attempt = self.calls[key]
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(HANG_GUARD)
        if attempt <= self.fail_times:
            raise self.error
        with self._lock:
            if key in self.objects:
                return "exists"
            self.objects[key] = data
        return "stored"

    def get(self, key):
        return None

    def check(self):
        return None


@pytest.fixture
def make_pool():
    """Build pools that are always released and drained after the test."""
    made: list[tuple[UploadPool, threading.Event | None]] = []

    def factory(store: TileStore, **kwargs) -> UploadPool:
        pool = UploadPool(store, **kwargs)
        made.append((pool, getattr(store, "gate", None)))
        return pool

    yield factory
    for pool, gate in made:
        if gate is not None:
            gate.set()
        pool.drain(HANG_GUARD)


def assert_counts_add_up(stats: dict[str, int]) -> None:
    finished = stats["stored"] + stats["exists"] + stats["failed"] + stats["dropped"]
    assert stats["submitted"] == finished + stats["pending"]


# --- the normal path ----------------------------------------------------------------


def test_threads_start_on_first_submit_not_before(make_pool):
    before = set(threading.enumerate())
    pool = make_pool(FakeStore(), workers=3)
    assert set(threading.enumerate()) == before  # safe to create before a fork

    pool.submit(job(1))
    started = set(threading.enumerate()) - before
    assert len(started) == 3
    assert not any(thread.daemon for thread in started)  # daemon threads die silently


def test_all_jobs_end_up_stored(make_pool):
    store = FakeStore()
    results = []
    pool = make_pool(store, workers=4, on_result=lambda j, outcome: results.append((j, outcome)))
    jobs = [job(n) for n in range(200)]
    assert all(pool.submit(j) for j in jobs)

    assert pool.drain(HANG_GUARD) == 0
    assert store.objects == {j.key: j.data for j in jobs}
    assert sorted(results, key=lambda r: r[0].key) == sorted(
        ((j, "stored") for j in jobs), key=lambda r: r[0].key
    )
    stats = pool.stats()
    assert stats == {
        "submitted": 200,
        "stored": 200,
        "exists": 0,
        "failed": 0,
        "skipped": 0,
        "dropped": 0,
        "unstored": 0,
        "pending": 0,
        "threads": 0,  # every thread left after the drain
    }


def test_existing_tiles_are_counted_as_exists(make_pool):
    store = FakeStore()
    store.objects["tiles/1.png"] = b"old"
    outcomes = []
    pool = make_pool(store, on_result=lambda j, outcome: outcomes.append(outcome))
    pool.submit(job(1))
    pool.drain(HANG_GUARD)
    assert outcomes == ["exists"]
    assert store.objects["tiles/1.png"] == b"old"
    assert pool.stats()["exists"] == 1


def test_drain_uploads_1000_jobs_into_s3(make_pool):
    # conftest's aws_env: fake credentials, S3 at the test process's moto over HTTP
    with mock_aws():
        client = make_s3_client(max_pool_connections=8, region_name="us-east-1")
        client.create_bucket(Bucket="tiles")
        pool = make_pool(S3Store("tiles", client), workers=8)
        jobs = [job(n) for n in range(1000)]
        assert all(pool.submit(j) for j in jobs)

        assert pool.drain(120) == 0
        keys = [
            obj["Key"]
            for page in client.get_paginator("list_objects_v2").paginate(Bucket="tiles")
            for obj in page.get("Contents", [])
        ]
        assert sorted(keys) == sorted(j.key for j in jobs)
        head = client.head_object(Bucket="tiles", Key="tiles/999.png")
        assert (head["ContentType"], head["CacheControl"]) == ("image/png", "max-age=60")
        assert client.get_object(Bucket="tiles", Key="tiles/7.png")["Body"].read() == b"png-7"
        assert pool.stats()["stored"] == 1000
        assert pool.pending("tiles/0.png") is None


# --- failures: one put per job, retries are the store's ------------------------------


@pytest.mark.parametrize(
    "error",
    [StoreUnavailable("503 SlowDown please"), StoreError("AccessDenied", retryable=False)],
)
def test_a_failed_put_fails_the_job_without_a_second_try(make_pool, caplog, error):
    """The S3 client already retried (botocore, 1 + UPLOAD_RETRIES attempts): the pool
    must not multiply that budget with a loop of its own."""
    store = FakeStore(fail_times=10**6, error=error)
    outcomes = []
    pool = make_pool(store, on_result=lambda j, o: outcomes.append(o))
    with caplog.at_level(logging.WARNING, logger="s3maptiler.storage.uploads"):
        pool.submit(job(1))
        pool.drain(HANG_GUARD)

    assert store.calls["tiles/1.png"] == 1
    assert outcomes == ["failed"]
    assert pool.stats()["failed"] == 1
    assert "retried" not in pool.stats()
    failed_lines = [r for r in caplog.records if "tiles/1.png" in r.getMessage()]
    assert len(failed_lines) == 1
    assert failed_lines[0].levelno == logging.WARNING
    assert str(error) in failed_lines[0].getMessage()


def test_the_attempts_the_client_made_are_logged(make_pool, caplog):
    error = StoreUnavailable("PutObject s3://b/k: SlowDown")
    error.attempts = 4
    pool = make_pool(FakeStore(fail_times=1, error=error))
    with caplog.at_level(logging.WARNING, logger="s3maptiler.storage.uploads"):
        pool.submit(job(1))
        pool.drain(HANG_GUARD)
    assert "attempts=4 " in caplog.text


def test_a_store_bug_does_not_kill_the_worker(make_pool, caplog):
    class Broken(FakeStore):
        def write(self, obj):
            if obj.key == "tiles/bad.png":
                raise RuntimeError("boom")
            return super().write(obj)

    store = Broken()
    pool = make_pool(store, workers=1)
    with caplog.at_level(logging.WARNING, logger="s3maptiler.storage.uploads"):
        pool.submit(job("bad"))
        pool.submit(job("good"))
        assert pool.drain(HANG_GUARD) == 0
    assert store.objects == {"tiles/good.png": b"png-good"}
    assert pool.stats()["failed"] == 1
    assert "boom" in caplog.text


def test_on_result_called_once_per_job_and_its_errors_are_contained(make_pool, caplog):
    seen = Counter()

    def on_result(j, outcome):
        seen[j.key] += 1
        raise ValueError("callback bug")

    store = FakeStore()
    pool = make_pool(store, workers=2, on_result=on_result)
    with caplog.at_level(logging.ERROR, logger="s3maptiler.storage.uploads"):
        for n in range(20):
            pool.submit(job(n))
        assert pool.drain(HANG_GUARD) == 0
    assert seen == Counter({f"tiles/{n}.png": 1 for n in range(20)})
    assert len(store.objects) == 20  # the workers survived every callback error
    assert "callback bug" in caplog.text


# --- bounded queue and pending bytes ------------------------------------------------


def test_overflow_drops_without_blocking(make_pool, caplog):
    gate = threading.Event()
    store = FakeStore(gate=gate)
    pool = make_pool(store, workers=2, max_pending=10)
    results: list[bool] = []

    def submit_all():
        results.extend(pool.submit(job(n)) for n in range(50))

    with caplog.at_level(logging.WARNING, logger="s3maptiler.storage.uploads"):
        submitter = threading.Thread(target=submit_all)
        submitter.start()
        submitter.join(HANG_GUARD)
        # All 50 calls returned while the store is still stuck on its first uploads.
        assert not submitter.is_alive()
        assert not gate.is_set()

    assert results == [True] * 10 + [False] * 40
    stats = pool.stats()
    assert (stats["submitted"], stats["dropped"], stats["pending"]) == (50, 40, 10)
    drop_lines = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(drop_lines) == 40
    assert all(r.levelno == logging.WARNING for r in drop_lines)
    assert "tiles/49.png" in drop_lines[-1].getMessage()

    gate.set()
    assert pool.drain(HANG_GUARD) == 0
    assert sorted(store.objects) == sorted(f"tiles/{n}.png" for n in range(10))
    assert_counts_add_up(pool.stats())


def test_pending_bytes_during_upload_and_none_after(make_pool):
    gate = threading.Event()
    store = FakeStore(gate=gate)
    pool = make_pool(store, workers=1)
    pool.submit(job(1, b"uploading"))
    pool.submit(job(2, b"queued"))
    assert store.entered.wait(HANG_GUARD)  # job 1 is inside store.put now

    assert pool.pending("tiles/1.png") == b"uploading"
    assert pool.pending("tiles/2.png") == b"queued"
    assert pool.pending("tiles/3.png") is None

    gate.set()
    assert pool.drain(HANG_GUARD) == 0
    assert pool.pending("tiles/1.png") is None
    assert pool.pending("tiles/2.png") is None
    assert store.objects["tiles/1.png"] == b"uploading"


def test_pending_with_two_jobs_for_one_key(make_pool):
    gate = threading.Event()
    store = FakeStore(gate=gate)
    pool = make_pool(store, workers=1)
    pool.submit(job(1, b"first"))
    assert store.entered.wait(HANG_GUARD)
    pool.submit(job(1, b"second"))
    assert pool.pending("tiles/1.png") == b"second"

    gate.set()
    assert pool.drain(HANG_GUARD) == 0
    assert pool.pending("tiles/1.png") is None
    assert (pool.stats()["stored"], pool.stats()["exists"]) == (1, 1)


# --- draining -----------------------------------------------------------------------


def test_drain_is_idempotent_and_stops_intake(make_pool, caplog):
    store = FakeStore()
    pool = make_pool(store)
    pool.submit(job(1))
    assert pool.drain(HANG_GUARD) == 0
    assert pool.drain(HANG_GUARD) == 0

    with caplog.at_level(logging.WARNING, logger="s3maptiler.storage.uploads"):
        assert pool.submit(job(2)) is False
    assert "tiles/2.png" in caplog.text
    assert pool.stats()["dropped"] == 1
    assert pool.pending("tiles/2.png") is None
    assert list(store.objects) == ["tiles/1.png"]


def test_drain_of_an_unused_pool(make_pool):
    before = set(threading.enumerate())
    assert make_pool(FakeStore()).drain(1.0) == 0
    assert set(threading.enumerate()) == before


def test_drain_timeout_reports_what_was_lost(make_pool, caplog):
    gate = threading.Event()
    store = FakeStore(gate=gate)
    outcomes: list[tuple[str, str]] = []
    pool = make_pool(store, workers=1, on_result=lambda j, o: outcomes.append((j.key, o)))
    for n in range(5):
        pool.submit(job(n))
    assert store.entered.wait(HANG_GUARD)

    with caplog.at_level(logging.ERROR, logger="s3maptiler.storage.uploads"):
        # The store is blocked, so nothing can finish within this (short) drain.
        assert pool.drain(0.05) == 5
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "5 uploads not finished" in errors[0].getMessage()
    # Queued jobs were abandoned: no longer pending, reported as dropped.
    assert sorted(outcomes) == [(f"tiles/{n}.png", "dropped") for n in range(1, 5)]
    assert pool.pending("tiles/4.png") is None
    assert pool.pending("tiles/0.png") is not None  # still uploading

    gate.set()
    assert pool.drain(HANG_GUARD) == 0
    assert list(store.objects) == ["tiles/0.png"]
    assert ("tiles/0.png", "stored") in outcomes
    stats = pool.stats()
    assert (stats["stored"], stats["dropped"], stats["pending"]) == (1, 4, 0)
    assert_counts_add_up(stats)


@pytest.mark.parametrize(
    "kwargs",
    [{"workers": 0}, {"max_pending": 0}],
)
def test_impossible_settings_are_refused(kwargs):
    with pytest.raises(InvalidPoolSettings):
        UploadPool(FakeStore(), **kwargs)
