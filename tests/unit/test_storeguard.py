"""The store's circuit breaker (service/storeguard.py) and what the tile path, the
upload pool and the heartbeat make of it, with a store that fails on demand."""

from __future__ import annotations

import logging

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from s3maptiler import metrics
from s3maptiler.render.guard import Breaker, BreakerOpen
from s3maptiler.service.storeguard import GuardedStore, StoreBreaker, unavailable
from s3maptiler.storage.s3 import StoreAccessDenied, StoreSkipped, StoreUnavailable
from s3maptiler.storage.stores import StoredTile, TileObject, TileStore
from s3maptiler.storage.uploads import UploadPool


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FlakyStore(TileStore):
    """Raises `error` on every call while it is set; counts the calls that reached it."""

    location = "s3://flaky"

    def __init__(self) -> None:
        self.error: Exception | None = None
        self.calls = 0
        self.written: list[str] = []

    def get(self, key: str) -> StoredTile | None:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return None

    def write(self, obj: TileObject) -> str:
        self.calls += 1
        if self.error is not None:
            raise self.error
        self.written.append(obj.key)
        return "stored"

    def check(self) -> None:
        self.get("probe")


def breaker(failures: int = 3, cooldown: float = 5.0) -> tuple[StoreBreaker, Clock]:
    clock = Clock()
    made = StoreBreaker("s3://flaky", failures, cooldown)
    made._clock = clock
    return made, clock


def job(key: str) -> TileObject:
    return TileObject(key, b"png", "image/png")


def test_one_breaker_class_opens_after_consecutive_failures_and_trials_after_cooldown():
    clock = Clock()
    b = Breaker(failures=2, cooldown=5.0, clock=clock)
    assert b.enter() is False and b.failed("refused") is False
    assert b.problem() is None
    b.enter()
    assert b.failed("refused again") is True and b.opened == 1
    with pytest.raises(BreakerOpen) as info:
        b.enter()
    assert info.value.retry_after == 6
    assert "2 consecutive failures" in b.problem() and "refused again" in b.problem()
    clock.now += 5.0
    assert b.enter() is True  # the trial
    with pytest.raises(BreakerOpen):
        b.enter()  # one at a time
    assert b.succeeded() is True
    assert b.problem() is None and b.enter() is False


def test_a_failing_store_is_asked_failures_times_then_skipped_until_the_trial():
    b, clock = breaker(failures=3)
    store = FlakyStore()
    store.error = StoreUnavailable("GetObject s3://flaky/a: connection refused")
    for _ in range(3):
        with pytest.raises(StoreUnavailable):
            b.run(lambda: store.get("a"), "read")
    skipped = metrics.STORE_CALLS_SKIPPED.labels("read")._value.get()
    for _ in range(50):
        with pytest.raises(StoreSkipped):
            b.run(lambda: store.get("a"), "read")
    assert store.calls == 3  # 50 reads cost S3 nothing while it is failing
    assert metrics.STORE_CALLS_SKIPPED.labels("read")._value.get() == skipped + 50
    clock.now += 5.0
    store.error = None
    assert b.run(lambda: store.get("a"), "read") is None  # the trial, answered
    assert b.problem() is None and store.calls == 4


def test_an_error_answer_proves_s3_up_and_does_not_open_the_breaker():
    b, _ = breaker(failures=2)
    store = FlakyStore()
    store.error = StoreAccessDenied("403")
    for _ in range(5):
        with pytest.raises(StoreAccessDenied):
            b.run(lambda: store.get("a"), "read")
    assert b.problem() is None


def test_which_errors_mean_s3_is_failing():
    slowdown = ClientError(
        {"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}, "GetObject"
    )
    missing = ClientError(
        {"Error": {"Code": "NoSuchKey"}, "ResponseMetadata": {"HTTPStatusCode": 404}}, "GetObject"
    )
    assert unavailable(slowdown)
    assert unavailable(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))
    assert unavailable(StoreUnavailable("timeout"))
    assert not unavailable(missing)
    assert not unavailable(StoreAccessDenied("403"))
    assert not unavailable(ValueError("a bug"))


def test_opening_and_closing_are_logged_once_each(caplog):
    b, clock = breaker(failures=2)
    store = FlakyStore()
    store.error = StoreUnavailable("refused")
    with caplog.at_level(logging.WARNING, logger="s3maptiler.service.storeguard"):
        for _ in range(20):
            with pytest.raises(StoreUnavailable):
                b.run(lambda: store.get("a"), "read")
        clock.now += 5.0
        store.error = None
        b.run(lambda: store.get("a"), "read")
        b.run(lambda: store.get("a"), "read")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "failing" in lines[0] and "refused" in lines[0]
    assert "answers again" in lines[1]


def test_uploads_while_s3_fails_are_counted_unstored_never_stored_then_stored_again():
    b, clock = breaker(failures=2)
    store = FlakyStore()
    guarded = GuardedStore(store, b, attempts=4)
    outcomes: list[str] = []
    pool = UploadPool(guarded, workers=1, on_result=lambda j, outcome: outcomes.append(outcome))
    store.error = StoreUnavailable("PutObject s3://flaky/t: SlowDown")
    for n in range(10):
        assert pool.submit(job(f"t/{n}.png"), wait=1.0)
    assert pool.drain(10) == 0
    stats = pool.stats()
    assert (stats["stored"], stats["failed"], stats["skipped"], stats["unstored"]) == (0, 2, 8, 10)
    assert outcomes.count("skipped") == 8 and "stored" not in outcomes
    assert store.calls == 2 and store.written == []
    problem = pool.unstored_problem()
    assert problem is not None and "2 failed, 8 skipped" in problem

    clock.now += 5.0
    store.error = None
    pool = UploadPool(guarded, workers=1)
    pool.submit(job("t/back.png"))
    assert pool.drain(10) == 0
    assert pool.stats()["stored"] == 1 and store.written == ["t/back.png"]
    assert pool.unstored_problem() is None and b.problem() is None


def test_an_upload_failure_says_how_many_attempts_it_made(caplog):
    b, _ = breaker(failures=100)
    store = FlakyStore()
    errors = [
        StoreUnavailable("PutObject: connection refused"),  # botocore retried it to the budget
        StoreAccessDenied("PutObject: AccessDenied"),  # not retried
    ]
    with caplog.at_level(logging.WARNING, logger="s3maptiler.storage.uploads"):
        for n, error in enumerate(errors):
            store.error = error
            pool = UploadPool(GuardedStore(store, b, attempts=4), workers=1)
            pool.submit(job(f"{n}.png"))
            pool.drain(10)
    lines = [r.getMessage() for r in caplog.records if "upload failed" in r.getMessage()]
    assert len(lines) == 2, lines
    assert "key=0.png" in lines[0] and "attempts=4 " in lines[0]
    assert "key=1.png" in lines[1] and "attempts=1 " in lines[1]


def test_the_deep_health_check_says_failing_without_waiting_and_its_probe_is_the_trial(tmp_path):
    import responses

    from tests.unit.test_tilepath import WMS, make_app

    store = FlakyStore()
    app, service = make_app(tmp_path, store=store)
    service.breaker, clock = breaker(failures=2)
    store.error = StoreUnavailable("GetObject s3://flaky/a: Read timeout")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as wms:
        wms.get(WMS, body="<WMT_MS_Capabilities/>", content_type="application/vnd.ogc.wms_xml")
        for _ in range(2):
            service.health_checks()  # each probe fails; the second opens the breaker
        calls = store.calls
        deep = app.test_client().get("/heartbeat?deep=1")
        assert deep.status_code == 503
        checks = deep.json["checks"]
        assert checks["store"].startswith("failing: 2 consecutive failures")
        assert "Read timeout" in checks["store"]
        assert checks["store_reads"] == checks["store"]
        assert store.calls == calls  # not probed while open: no wait for S3's timeout
        clock.now += 5.0
        store.error = None
        assert app.test_client().get("/heartbeat?deep=1").status_code == 200  # the trial
        assert service.breaker.problem() is None
