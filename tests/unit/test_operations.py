"""Health, metrics, CORS and the WMS guard, with the WMS answered by `responses`."""

import threading
import time

import pytest
import requests
import responses

from s3maptiler.render.guard import WMSGuard, WMSUnavailable
from tests.unit.test_tilepath import WMS, make_app, png, wms_calls


@pytest.fixture
def wms():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def test_deep_heartbeat_reports_store_and_wms(tmp_path, wms):
    wms.get(WMS, body="<WMT_MS_Capabilities/>", content_type="application/vnd.ogc.wms_xml")
    app, _ = make_app(tmp_path)
    answer = app.test_client().get("/heartbeat?deep=1")
    assert answer.status_code == 200
    assert answer.json["checks"] == {
        "store": "ok",
        "store_reads": "ok",
        "store_writes": "ok",
        "wms:default": "ok",
    }
    assert app.test_client().get("/heartbeat").text.startswith("ok")


def test_deep_heartbeat_fails_when_the_wms_is_down(tmp_path):
    with responses.RequestsMock() as mock:
        mock.get(WMS, body=requests.exceptions.ConnectionError("refused"))
        app, _ = make_app(tmp_path)
        answer = app.test_client().get("/heartbeat?deep=1")
    assert answer.status_code == 503
    assert answer.json["checks"]["wms:default"].startswith("failing")
    assert answer.json["checks"]["store"] == "ok"


def test_metrics_count_requests_sources_and_wms_errors(tmp_path, wms):
    wms.get(WMS, body=png(), content_type="image/png")
    app, _ = make_app(tmp_path)
    client = app.test_client()
    client.get("/tiles/2/1/1.png")
    client.get("/tiles/2/9/1.png")
    text = client.get("/metrics").text
    assert 's3maptiler_tile_requests_total{layer="default",source="render",status="200"}' in text
    assert 's3maptiler_tile_requests_total{layer="-",source="-",status="404"}' in text
    assert "s3maptiler_wms_request_seconds_bucket" in text
    assert "s3maptiler_upload_queue_depth" in text


def test_cors_headers_and_preflight(tmp_path, wms):
    wms.get(WMS, body=png(), content_type="image/png")
    app, _ = make_app(tmp_path, CORS_ORIGINS="https://maps.example.com")
    client = app.test_client()
    allowed = client.get("/tiles/1/0/0.png", headers={"Origin": "https://maps.example.com"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://maps.example.com"
    assert "X-Tile-Source" in allowed.headers["Access-Control-Expose-Headers"]
    other = client.get("/tiles/1/0/0.png", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    preflight = client.options(
        "/tiles/1/0/0.png",
        headers={"Origin": "https://maps.example.com", "Access-Control-Request-Method": "GET"},
    )
    assert preflight.status_code == 200
    assert "GET" in preflight.headers["Access-Control-Allow-Methods"]
    assert len(wms_calls(wms)) == 1  # the preflight asked nothing upstream


def test_a_redirected_miss_is_readable_by_the_page_behind_origin_null(tmp_path, wms):
    # After S3's 307 from the bucket's origin to the service's, the browser sends
    # "Origin: null"; a canvas client's tile must still be readable.
    wms.get(WMS, body=png(), content_type="image/png")
    app, _ = make_app(tmp_path, CORS_ORIGINS="https://maps.example.com")
    client = app.test_client()
    miss = client.get("/miss/tiles/1/0/0.png", headers={"Origin": "null"})
    assert miss.status_code == 200
    assert miss.headers["Access-Control-Allow-Origin"] == "*"
    assert "X-Tile-Source" in miss.headers["Access-Control-Expose-Headers"]
    # Anywhere else "null" is an origin like any other that is not listed.
    direct = client.get("/tiles/1/0/0.png", headers={"Origin": "null"})
    assert "Access-Control-Allow-Origin" not in direct.headers


def test_the_breaker_opens_after_consecutive_failures_and_lets_one_trial_through():
    guard = WMSGuard(max_concurrent=4, wait=0.1, failures=3, cooldown=0.3)
    for _ in range(3):
        with guard.slot():
            guard.failed()
    with pytest.raises(WMSUnavailable) as info, guard.slot():
        pass
    assert info.value.status == 503 and info.value.retry_after >= 1
    time.sleep(0.35)
    with guard.slot():  # the trial request
        with pytest.raises(WMSUnavailable), guard.slot():  # a second one meanwhile
            pass
        guard.succeeded()
    with guard.slot():
        pass


def test_a_trial_that_gets_no_slot_lets_the_next_request_try():
    guard = WMSGuard(max_concurrent=1, wait=0.05, failures=2, cooldown=0.1)
    release = threading.Event()
    holder = threading.Thread(target=lambda: _hold(guard, release))
    holder.start()  # a GetMap that started before the WMS went away, still hanging
    time.sleep(0.05)
    for _ in range(2):
        guard.failed()  # two other GetMaps timed out: the breaker opens
    time.sleep(0.15)
    with pytest.raises(WMSUnavailable, match="busy"), guard.slot():  # the trial: no slot
        pass
    release.set()
    holder.join()
    # The hanging GetMap ended without a verdict; the trial flag must not stay set,
    # or every request would be refused until some other GetMap finished.
    with guard.slot():
        guard.succeeded()
    with guard.slot():
        pass


def test_a_trial_that_raises_something_unexpected_lets_the_next_request_try():
    guard = WMSGuard(max_concurrent=2, wait=0.05, failures=1, cooldown=0.05)
    guard.failed()
    time.sleep(0.1)
    with pytest.raises(RuntimeError), guard.slot():
        raise RuntimeError("not a WMS error")
    with guard.slot():
        pass


def test_the_cap_sheds_requests_beyond_it():
    guard = WMSGuard(max_concurrent=2, wait=0.05, failures=5, cooldown=1)
    release = threading.Event()
    holders = [threading.Thread(target=lambda: _hold(guard, release)) for _ in range(2)]
    for holder in holders:
        holder.start()
    time.sleep(0.1)
    with pytest.raises(WMSUnavailable, match="busy"), guard.slot():
        pass
    release.set()
    for holder in holders:
        holder.join()


def _hold(guard: WMSGuard, release: threading.Event) -> None:
    with guard.slot():
        release.wait(5)


def test_a_down_wms_is_answered_503_without_asking_it(tmp_path):
    with responses.RequestsMock() as mock:
        mock.get(WMS, body=requests.exceptions.ConnectTimeout("timed out"))
        app, _ = make_app(tmp_path, WMS_BREAKER_FAILURES="2", WMS_BREAKER_COOLDOWN="60")
        client = app.test_client()
        statuses = [client.get(f"/tiles/3/{x}/1.png").status_code for x in range(5)]
        calls = len(mock.calls)
    assert statuses[:2] == [502, 502]
    assert statuses[2:] == [503, 503, 503]
    assert calls == 2  # WMS_RETRIES is 0 in these tests: one call per failed tile


# --- who may read /metrics --------------------------------------------------------------


@pytest.mark.parametrize(
    ("allow", "peer", "forwarded", "status"),
    [
        # The default: the instance itself only.
        (None, "127.0.0.1", None, 200),
        (None, "::1", None, 200),
        # Through Elastic Beanstalk: nginx on 127.0.0.1, X-Forwarded-For "client, ALB".
        (None, "127.0.0.1", "203.0.113.9, 10.0.1.17", 403),
        (None, "10.0.1.17", None, 403),
        # A forged entry cannot help: the proxies' own entries are still there.
        (None, "127.0.0.1", "127.0.0.1, 203.0.113.9, 10.0.1.17", 403),
        ("127.0.0.0/8,10.0.0.0/16", "127.0.0.1", "10.0.5.5, 10.0.1.17", 200),
        ("127.0.0.0/8,10.0.0.0/16", "127.0.0.1", "10.0.5.5, 203.0.113.9, 10.0.1.17", 403),
        ("127.0.0.0/8,10.0.0.0/16", "127.0.0.1", "unknown, 10.0.1.17", 403),
        ("127.0.0.0/8,10.0.0.0/16", "127.0.0.1", "", 403),
        ("0.0.0.0/0,::/0", "198.51.100.1", "203.0.113.9", 200),
        ("off", "127.0.0.1", None, 404),
    ],
)
def test_metrics_answer_only_allowed_networks(tmp_path, allow, peer, forwarded, status):
    env = {} if allow is None else {"METRICS_ALLOW": allow}
    app, _ = make_app(tmp_path, **env)
    headers = {} if forwarded is None else {"X-Forwarded-For": forwarded}
    answer = app.test_client().get("/metrics", headers=headers, environ_base={"REMOTE_ADDR": peer})
    assert answer.status_code == status, answer.text
    if status == 200:
        assert "s3maptiler_tile_requests_total" in answer.text
        assert answer.headers["Cache-Control"] == "no-store"
    else:
        assert answer.text.count("\n") == 1 and "s3maptiler_" not in answer.text
    if status == 403:
        assert "METRICS_ALLOW" in answer.text


def test_x_real_ip_is_a_hop_too(tmp_path):
    app, _ = make_app(tmp_path)
    answer = app.test_client().get("/metrics", headers={"X-Real-IP": "203.0.113.9"})
    assert answer.status_code == 403


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "localhost", "10.0.0.0/8,", "on"])
def test_a_bad_metrics_allow_fails_at_start_up(tmp_path, bad):
    from s3maptiler.config import ConfigError

    with pytest.raises(ConfigError, match="^METRICS_ALLOW: "):
        make_app(tmp_path, METRICS_ALLOW=bad)


def test_metrics_count_s3_requests_by_kind_at_the_client(tmp_path):
    """Every S3 request the data-path client sends is counted by kind in /metrics."""
    import boto3
    from moto import mock_aws
    from prometheus_client import REGISTRY

    from tests.unit.test_tilepath import wait_uploaded

    def count(kind: str) -> float:
        value = REGISTRY.get_sample_value("s3maptiler_s3_requests_total", {"kind": kind})
        return value or 0.0

    # moto first: its own `responses` patch must sit under the WMS mock, not over it.
    # The service reaches the bucket over HTTP (conftest's moto), which shares its state.
    with mock_aws(), responses.RequestsMock() as wms:
        wms.get(WMS, body=png(), content_type="image/png")
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="metrics-tiles")
        app, service = make_app(tmp_path, BUCKET_NAME="metrics-tiles", FLEET_LEASES="false")
        before = {kind: count(kind) for kind in ("get", "put_conditional", "head")}
        client = app.test_client()
        assert client.get("/tiles/2/1/1.png").headers["X-Tile-Source"] == "render"
        wait_uploaded(service, "tiles/2/1/1.png")
        client.get("/heartbeat?deep=1")
        text = client.get("/metrics").text
    assert count("get") - before["get"] == 1  # the store read: a miss
    assert count("put_conditional") - before["put_conditional"] == 1  # the tile's upload
    assert count("head") - before["head"] == 1  # the deep heartbeat's HeadBucket
    assert 's3maptiler_s3_requests_total{kind="put_conditional"}' in text
