"""Faults with real servers on 127.0.0.1: the service under gunicorn (Procfile command),
a misbehaving WMS (`tests/faultwms.py`), moto's S3 server behind a fault-injecting
proxy (`tests/faults3.py`), and the corpus of hostile requests sent raw.

What a user or an operator would notice is asserted: the status and the one-line
body of each answer, objects in the bucket (read from moto directly, not through the
proxy), GetMaps counted by the WMS, PutObjects counted by the proxy, the gunicorn
log, `/heartbeat`, and the worker's resident memory.
"""

from __future__ import annotations

import io
import re
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from PIL import Image

from tests.badrequests import BadRequest, load_corpus, send_raw
from tests.faults3 import FaultS3Proxy, wait_until
from tests.faultwms import MESSAGES, FaultWMS, closed_url
from tests.integration.conftest import AWS_ENV
from tests.servers import GunicornApp, status_kib, tile_keys, worker_pids

pytestmark = pytest.mark.integration

WMS_RETRIES = 2
UPLOAD_RETRIES = 2  # the S3 client's retry budget for uploads: 3 PutObjects per tile


# --------------------------------------------------------------------------- helpers


def new_bucket(s3) -> str:
    name = f"faults-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


keys_in = tile_keys


def heartbeat(app: GunicornApp) -> dict[str, int]:
    """The counters `/heartbeat` prints as `name=value`."""
    text = requests.get(f"{app.url}/heartbeat", timeout=10).text
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", text)}


def wait_idle(app: GunicornApp, timeout: float = 30.0) -> bool:
    """Wait until no upload is pending (every one stored, failed or dropped)."""
    return wait_until(lambda: heartbeat(app).get("uploads_pending") == 0, timeout, 0.1)


def rss_kib(pid: int) -> int:
    kib = status_kib(pid, "VmRSS")
    assert kib is not None, f"no VmRSS for {pid}"
    return kib


def tms_key(x: int, y: int, z: int, prefix: str = "tiles/") -> str:
    return f"{prefix}{z}/{x}/{y}.png"


class Keys:
    """Tile keys in distinct 4x4 metatiles, so tests sharing one service never meet in
    its caches (a metatile stores its neighbours)."""

    def __init__(self, z: int = 12) -> None:
        self.z = z
        self.next = 0
        self.lock = threading.Lock()

    def __call__(self, prefix: str = "tiles/") -> str:
        with self.lock:
            self.next += 1
            n = self.next
        return tms_key(4 * (n % 1024), 4 * (n // 1024) + 400, self.z, prefix)


def is_png(data: bytes, size: int = 256) -> bool:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image.format == "PNG" and image.size == (size, size)


def start(env: dict[str, str]) -> GunicornApp:
    """The service with one worker that is never recycled during a test, so its log,
    its counters and its memory are those of one process."""
    return GunicornApp({**AWS_ENV, "WEB_CONCURRENCY": "1", "MAX_REQUESTS": "100000", **env}).start()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def fault_wms():
    wms = FaultWMS(slow_seconds=6.0, retry_after=1).start()
    yield wms
    wms.stop()


@pytest.fixture(scope="module")
def keys():
    return Keys()


@pytest.fixture(scope="module")
def wms_app(tmp_path_factory, fault_wms, moto_server, s3):
    """Two layers: `tiles/` on the misbehaving WMS, `down/` on a port nobody listens on.
    Metatiles of 4x4 tiles with a 64 px buffer, as shipped: one GetMap is 1152 px."""
    layers = tmp_path_factory.mktemp("wms-faults") / "layers.toml"
    layers.write_text(
        f'wms_layers = "roads"\nmax_zoom = 18\nmetatile = "4x4"\nmeta_buffer = 64\n'
        f'[layers.main]\nprefix = "tiles/"\nwms_url = "{fault_wms.url}"\n'
        f'[layers.down]\nprefix = "down/"\nwms_url = "{closed_url()}"\n'
    )
    bucket = new_bucket(s3)
    app = start(
        {
            "LAYERS_FILE": str(layers),
            "BUCKET_NAME": bucket,
            "AWS_ENDPOINT_URL": moto_server.url,
            "WMS_TIMEOUT": "1.5",
            "WMS_RETRIES": str(WMS_RETRIES),
            "GUNICORN_THREADS": "8",
        }
    )
    app.bucket = bucket
    yield app
    app.stop()


@pytest.fixture(scope="module")
def s3_proxy(moto_server):
    proxy = FaultS3Proxy(moto_server.url).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def s3_app(fault_wms, moto_server, s3, s3_proxy, tmp_path_factory):
    bucket = new_bucket(s3)
    app = start(
        {
            "WMS_SERVER": fault_wms.url,
            "MAP_LAYERS": "roads",
            "BUCKET_NAME": bucket,
            "AWS_ENDPOINT_URL": s3_proxy.url,
            "UPLOAD_RETRIES": str(UPLOAD_RETRIES),
            # Every PutObject is let through to meet its fault, so each tile's retry
            # budget is seen; the store's breaker has its tests (test_s3_down.py).
            "S3_BREAKER_FAILURES": "1000",
            "UPLOAD_WORKERS": "2",
            "GUNICORN_THREADS": "8",
            "METATILE": "1x1",  # one upload per miss: PutObjects are counted per tile
            "META_BUFFER": "0",
            "LOCAL_CACHE_DIR": str(tmp_path_factory.mktemp("unused")),
        }
    )
    app.bucket = bucket
    yield app
    app.stop()


# --------------------------------------------------------------------------- WMS faults

# mode, status, GetMaps the service may send (1 + WMS_RETRIES only where retrying is
# right: 5xx and broken connections), words the one-line body must hold.
WMS_FAULTS = [
    ("slow", 504, 1, ["did not answer within 1.5 s"]),
    ("500", 502, 1 + WMS_RETRIES, ["HTTP 500", MESSAGES["500"]]),
    ("503-retry-after", 502, 1 + WMS_RETRIES, ["HTTP 503", MESSAGES["503-retry-after"]]),
    ("exception-200", 502, 1, [MESSAGES["exception-200"]]),
    ("html", 502, 1, [MESSAGES["html"]]),
    ("truncated-png", 502, 1, ["truncated PNG"]),
    ("wrong-size", 502, 1, ["576x576 PNG", "expected 1152x1152"]),
    ("jpeg-for-png", 502, 1, ["JPEG", "image/png"]),
    ("reset", 502, 1 + WMS_RETRIES, ["connection"]),
]


@pytest.mark.parametrize(
    ("mode", "status", "getmaps", "words"), WMS_FAULTS, ids=[f[0] for f in WMS_FAULTS]
)
def test_wms_fault_is_answered_with_its_message_and_nothing_is_stored(
    wms_app, fault_wms, s3, keys, mode, status, getmaps, words
):
    key = keys()
    fault_wms.reset(mode)
    answer = requests.get(f"{wms_app.url}/{key}", timeout=30)

    assert answer.status_code == status, answer.text
    assert answer.headers["Content-Type"].startswith("text/plain")
    assert answer.headers["Cache-Control"] == "no-store", "an error must not be cached"
    assert answer.text.count("\n") == 1 and len(answer.text) <= 320, answer.text
    for word in words:
        assert word in answer.text, (word, answer.text)
    assert "127.0.0.1" not in answer.text and str(fault_wms.port) not in answer.text
    assert fault_wms.requests == getmaps, f"{mode}: {fault_wms.requests} GetMaps"

    # Nothing stored: not now, not after the upload pool had time to act.
    assert wait_idle(wms_app)
    assert key not in keys_in(s3, wms_app.bucket)
    if mode == "503-retry-after":
        gaps = [b - a for a, b in zip(fault_wms.times, fault_wms.times[1:], strict=False)]
        assert all(gap >= 0.9 for gap in gaps), f"Retry-After: 1 not honoured: {gaps}"

    # The fault gone, the same address renders and is stored.
    fault_wms.reset("ok")
    again = requests.get(f"{wms_app.url}/{key}", timeout=30)
    assert again.status_code == 200 and is_png(again.content)
    assert fault_wms.requests == 1
    assert wait_until(lambda: key in keys_in(s3, wms_app.bucket), 15)


def test_wms_refusing_connections_is_a_502_after_bounded_retries(wms_app, s3, keys):
    key = keys("down/")
    answer = requests.get(f"{wms_app.url}/{key}", timeout=30)
    assert answer.status_code == 502
    assert answer.text.count("\n") == 1
    assert "connection refused" in answer.text
    assert "127.0.0.1" not in answer.text
    # The WMS is not there to count: the service's own log says how often it tried.
    assert wait_until(lambda: f"failed after {1 + WMS_RETRIES} attempt(s)" in wms_app.log(), 5)
    assert f"failed after {2 + WMS_RETRIES} attempt" not in wms_app.log()
    assert wait_idle(wms_app)
    assert key not in keys_in(s3, wms_app.bucket)


def test_a_hanging_wms_does_not_take_every_request_thread(fault_wms, moto_server, s3, keys):
    threads = 4
    bucket = new_bucket(s3)
    cached = keys()
    s3.put_object(
        Bucket=bucket, Key=cached, Body=fault_wms.image(256, 256), ContentType="image/png"
    )
    app = start(
        {
            "WMS_SERVER": fault_wms.url,
            "MAP_LAYERS": "roads",
            "BUCKET_NAME": bucket,
            "AWS_ENDPOINT_URL": moto_server.url,
            "GUNICORN_THREADS": str(threads),
            "WMS_TIMEOUT": "30",
        }
    )
    fault_wms.reset("hang")
    pool = ThreadPoolExecutor(2 * threads)
    try:
        misses = [
            pool.submit(requests.get, f"{app.url}/{keys()}", timeout=60) for _ in range(2 * threads)
        ]
        assert wait_until(lambda: fault_wms.in_flight >= threads // 2, 10)
        time.sleep(0.5)  # let the other misses reach the WMS too, if nothing stops them
        # While the WMS hangs, the service still answers what needs no WMS.
        assert requests.get(f"{app.url}/heartbeat", timeout=5).status_code == 200
        hit = requests.get(f"{app.url}/{cached}", timeout=5)
        assert hit.status_code == 200 and hit.headers["X-Tile-Source"] == "cache"
        assert fault_wms.concurrent_max < threads, "GetMaps must be capped below the threads"
    finally:
        fault_wms.release()
        for miss in misses:
            miss.exception()
        pool.shutdown()
        fault_wms.reset("ok")
        app.stop()


# --------------------------------------------------------------------------- S3 faults

S3_FAULTS = [
    # fault, status of the error answer, retryable by the SDK and the pool
    ("slowdown", 503, True),
    ("500", 500, True),
    ("reset", None, True),
    ("expired", 400, False),
    ("expired", 403, False),
]


@pytest.mark.parametrize(
    ("fault", "status", "retryable"),
    S3_FAULTS,
    ids=[f"{f}-{s}" if s else f for f, s, _ in S3_FAULTS],
)
def test_s3_put_failures_still_serve_the_tile_then_count_the_upload_failed(
    s3_app, s3_proxy, fault_wms, s3, keys, fault, status, retryable
):
    fault_wms.reset("ok")
    assert wait_idle(s3_app, 60)  # the uploads of earlier tests are not counted here
    s3_proxy.reset_counts()
    if status is not None:
        s3_proxy.expired_status = status
    s3_proxy.fail_puts(fault)  # every PutObject, until cleared
    key = keys()
    try:
        answer = requests.get(f"{s3_app.url}/{key}", timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.headers["X-Tile-Source"] == "render"
        assert is_png(answer.content)
        # Nothing blocks: more misses are served while the uploads fail and retry.
        others = [keys() for _ in range(3)]
        with ThreadPoolExecutor(3) as pool:
            served = list(pool.map(lambda k: requests.get(f"{s3_app.url}/{k}", timeout=30), others))
        assert [a.status_code for a in served] == [200, 200, 200]
        assert wait_idle(s3_app, 60), "failing uploads must end, not stay pending"
    finally:
        s3_proxy.clear()

    # One retry policy, the S3 client's: exactly its budget for a retryable fault, one
    # PutObject for any other, and never a second loop on top.
    seen = s3_proxy.failed_keys.count(f"{s3_app.bucket}/{key}")
    attempts = 1 + UPLOAD_RETRIES if retryable else 1
    assert seen == attempts, f"{seen} PutObjects for one tile"
    for other in others:
        assert s3_proxy.failed_keys.count(f"{s3_app.bucket}/{other}") == attempts
    assert s3_proxy.counts()["forwarded"] == 0
    assert not keys_in(s3, s3_app.bucket) & {key, *others}
    failed = re.findall(rf"upload failed key={re.escape(key)} .*attempts=(\S+)", s3_app.log())
    # The data-path client counts its own requests, a lost connection's too.
    assert failed == [str(attempts)], s3_app.log()[-2000:]

    # The fault cleared: the same miss renders again and is stored this time.
    again = requests.get(f"{s3_app.url}/miss/{key}", timeout=30)
    assert again.status_code == 200
    assert wait_until(lambda: key in keys_in(s3, s3_app.bucket), 15)


def test_s3_throttling_that_passes_is_absorbed_by_retries(s3_app, s3_proxy, fault_wms, s3, keys):
    fault_wms.reset("ok")
    assert wait_idle(s3_app, 60)
    s3_proxy.fail_puts("slowdown", times=2)
    key = keys()
    assert requests.get(f"{s3_app.url}/{key}", timeout=30).status_code == 200
    assert wait_until(lambda: key in keys_in(s3, s3_app.bucket), 30)
    where = f"{s3_app.bucket}/{key}"
    # Two SlowDowns, then the SDK's third attempt goes through: one job, stored.
    assert (s3_proxy.failed_keys.count(where), s3_proxy.forwarded_keys.count(where)) == (2, 1)
    assert f"upload failed key={key}" not in s3_app.log()


def test_slowdown_costs_at_most_one_plus_upload_retries_puts_per_tile(fault_wms, moto_server, s3):
    """The shipped defaults (UPLOAD_RETRIES=3, METATILE=4x4, S3_BREAKER_FAILURES=3)
    while S3 answers every PutObject with SlowDown: a tile that is sent costs exactly 4
    PutObjects (the stacked retries of before cost up to 12), and once the store's
    breaker has opened the metatile's other tiles are not sent at all, but counted."""
    proxy = FaultS3Proxy(moto_server.url).start()
    bucket = new_bucket(s3)
    app = start(
        {
            "WMS_SERVER": fault_wms.url,
            "MAP_LAYERS": "roads",
            "BUCKET_NAME": bucket,
            "AWS_ENDPOINT_URL": proxy.url,
            "GUNICORN_THREADS": "8",
        }
    )
    try:
        fault_wms.reset("ok")
        proxy.fail_puts("slowdown")
        answer = requests.get(f"{app.url}/tiles/12/1204/2556.png", timeout=30)
        assert answer.status_code == 200, answer.text
        assert wait_idle(app, 120), "failing uploads must end, not stay pending"
        # The metatile's lease is a PUT too: its claim fails after the read budget (one
        # attempt) and the service renders without it, as it must.
        per_lease = Counter(k for k in proxy.failed_keys if "/_leases/" in k)
        assert list(per_lease.values()) == [1], per_lease
        per_tile = Counter(k for k in proxy.failed_keys if "/_leases/" not in k)
        assert set(per_tile.values()) == {4}, per_tile
        # The lease and the first uploads open the breaker; only the uploads already
        # being sent then (4 threads, and one more per 4 queued jobs) finish their budget.
        assert 2 <= len(per_tile) <= 8, per_tile
        assert proxy.counts()["forwarded"] == 0
        failed = re.findall(r"upload failed key=\S+ .*attempts=(\S+)", app.log())
        assert failed == ["4"] * len(per_tile), app.log()[-2000:]
        counts = heartbeat(app)
        assert counts["uploads_skipped"] == 16 - len(per_tile)
        assert counts["uploads_unstored"] == 16 and counts["uploads_stored"] == 0
    finally:
        proxy.clear()
        app.stop()
        proxy.stop()


def test_reads_denied_are_counted_reported_and_logged_at_a_bounded_rate(
    s3_app, s3_proxy, fault_wms, keys
):
    """A role without s3:GetObject: every read is a 403. The tiles are still served
    (rendered), but the operator can see it: /metrics counts the denied reads, the deep
    heartbeat fails with the reason, and the log says so once a minute, not per tile."""
    fault_wms.reset("ok")
    assert wait_idle(s3_app, 60)
    s3_proxy.deny_gets()
    try:
        for _ in range(5):
            answer = requests.get(f"{s3_app.url}/{keys()}", timeout=30)
            assert answer.status_code == 200, answer.text
            assert answer.headers["X-Tile-Source"] == "render"
        assert s3_proxy.gets_denied == 5  # one GetObject per tile: a 403 is not retried
        exposition = requests.get(f"{s3_app.url}/metrics", timeout=10).text
        counted = re.search(r"^s3maptiler_store_reads_denied_total (\S+)$", exposition, re.M)
        assert counted and float(counted[1]) == 5, exposition[-2000:]
        deep = requests.get(f"{s3_app.url}/heartbeat?deep=1", timeout=30)
        assert deep.status_code == 503
        check = deep.json()["checks"]["store_reads"]
        assert check.startswith("failing: reads denied: 5 GetObject(s) answered 403"), check
        assert "s3:GetObject" in check
        assert s3_app.log().count("S3 denied") == 1, s3_app.log()[-3000:]
    finally:
        s3_proxy.deny_gets(False)


def test_heartbeat_shows_failed_and_dropped_uploads(s3_app, s3_proxy, fault_wms, keys):
    fault_wms.reset("ok")
    s3_proxy.fail_puts("500")
    try:
        assert requests.get(f"{s3_app.url}/{keys()}", timeout=30).status_code == 200
        assert wait_idle(s3_app, 60)
    finally:
        s3_proxy.clear()
    counters = heartbeat(s3_app)
    assert counters.get("uploads_failed", 0) >= 1, counters
    assert "uploads_dropped" in counters, counters


# --------------------------------------------------------------------------- overflow


def test_upload_queue_overflow_serves_every_miss_counts_the_drops_and_bounds_memory(
    moto_server, s3
):
    misses, queue = 240, 5
    wms = FaultWMS(noise=True).start()  # ~200 KB tiles: an unbounded queue would show
    proxy = FaultS3Proxy(moto_server.url).start()
    bucket = new_bucket(s3)
    app = start(
        {
            "WMS_SERVER": wms.url,
            "MAP_LAYERS": "roads",
            "BUCKET_NAME": bucket,
            "AWS_ENDPOINT_URL": proxy.url,
            "UPLOAD_QUEUE": str(queue),
            "UPLOAD_WORKERS": "2",
            "S3_UPLOAD_TIMEOUT": "120",  # the held PutObjects wait, not time out
            "GUNICORN_THREADS": "8",
            "METATILE": "1x1",  # one upload per miss: the drops are counted per tile
            "META_BUFFER": "0",
        }
    )
    try:
        session = requests.Session()
        for n in range(8):  # warm up: threads, pools, allocator, one image size
            assert session.get(f"{app.url}/tiles/14/{n}/0.png", timeout=30).status_code == 200
        assert wait_idle(app)
        [worker] = worker_pids(app.process.pid)
        before = rss_kib(worker)

        proxy.hold_puts()
        keys = [tms_key(x, 5000, 14) for x in range(misses)]
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda k: requests.get(f"{app.url}/{k}", timeout=60), keys))
        after = rss_kib(worker)

        assert [a.status_code for a in answers] == [200] * misses
        assert all(a.headers["X-Tile-Source"] == "render" for a in answers)
        assert heartbeat(app)["uploads_pending"] == queue
        dropped = app.log().count("upload dropped (")
        assert dropped == misses - queue
        tile_bytes = len(answers[0].content)
        unbounded = misses * tile_bytes // 1024
        assert after - before < unbounded // 2, (
            f"RSS grew {after - before} KiB; an unbounded queue would hold {unbounded} KiB"
        )

        proxy.release_puts()
        assert wait_idle(app)
        stored = keys_in(s3, bucket) - {f"tiles/14/{n}/0.png" for n in range(8)}
        assert len(stored) == queue and stored <= set(keys)
    finally:
        proxy.release_puts()
        app.stop()
        proxy.stop()
        wms.stop()


# --------------------------------------------------------------------------- shutdown


def test_sigterm_with_thousands_of_pending_uploads_loses_none_silently(fault_wms, moto_server, s3):
    metatiles, z = 125, 18  # 125 misses x 16 tiles of a 4x4 metatile = 2000 uploads
    proxy = FaultS3Proxy(moto_server.url, delay=0.01).start()
    bucket = new_bucket(s3)
    app = start(
        {
            "WMS_SERVER": fault_wms.url,
            "MAP_LAYERS": "roads",
            "BUCKET_NAME": bucket,
            "AWS_ENDPOINT_URL": proxy.url,
            "METATILE": "4x4",
            "UPLOAD_QUEUE": "4000",
            "UPLOAD_WORKERS": "8",
            "UPLOAD_MAX_WORKERS": "8",  # a fixed pool, so thousands of uploads are pending
            "GUNICORN_THREADS": "8",
            "GRACEFUL_TIMEOUT": "30",
            "LOG_LEVEL": "WARNING",
        }
    )
    fault_wms.reset("ok")
    rows = 2**z
    # One tile from each of `metatiles` 4x4 blocks (XYZ rows aligned on 4), TMS keys.
    blocks = [(4 * (1000 + i), 4 * 2000) for i in range(metatiles)]
    expected = {
        tms_key(bx + dx, rows - 1 - (by + dy), z) for bx, by in blocks for dx in range(4)
        for dy in range(4)
    }  # fmt: skip
    try:
        with ThreadPoolExecutor(4) as pool:
            answers = list(
                pool.map(
                    lambda b: requests.get(
                        f"{app.url}/{tms_key(b[0], rows - 1 - b[1], z)}", timeout=60
                    ),
                    blocks,
                )
            )
        assert [a.status_code for a in answers] == [200] * metatiles
        assert fault_wms.requests == metatiles
        pending = heartbeat(app)["uploads_pending"]
        assert pending >= 1000, f"the test needs thousands pending, has {pending}"
        assert app.terminate(timeout=90) == 0
    finally:
        app.stop()
        proxy.stop()

    stored = keys_in(s3, bucket)
    log = app.log()
    assert len(expected) == 16 * metatiles
    assert stored <= expected
    left = [int(n) for n in re.findall(r"exit: (\d+) uploads left undone", log)]
    assert len(left) == 1, log[-2000:]
    # Every tile is in the bucket, or the log counts it as left undone: never silently.
    assert len(stored) + left[0] >= len(expected), (len(stored), left, log[-2000:])
    if left[0]:
        assert f"{left[0]} uploads not finished after draining" in log


# --------------------------------------------------------------------------- corpus

CORPUS = load_corpus()


@pytest.fixture(scope="module")
def corpus_app(tmp_path_factory, fault_wms):
    tiles = tmp_path_factory.mktemp("corpus-tiles")
    app = start(
        {
            "WMS_SERVER": fault_wms.url,
            "MAP_LAYERS": "roads",
            "LOCAL_CACHE_DIR": str(tiles),
            "GUNICORN_THREADS": "4",
            "METATILE": "1x1",  # the store then holds exactly the tiles asked for
            "META_BUFFER": "0",
        }
    )
    app.tiles = tiles
    yield app
    app.stop()


def corpus_params():
    for request in CORPUS:
        marks = [pytest.mark.xfail(strict=True, reason=request.comment)] if request.defect else []
        yield pytest.param(request, id=request.id, marks=marks)


@pytest.mark.parametrize("request_", list(corpus_params()))
def test_corpus_sent_raw_to_gunicorn(corpus_app, fault_wms, request_: BadRequest):
    fault_wms.reset("ok")
    answer = send_raw("127.0.0.1", corpus_app.port, request_)
    assert answer.status in request_.statuses, (request_.comment, answer.status, answer.body[:200])
    assert answer.status < 500
    assert "set-cookie" not in answer.headers and "location" not in answer.headers
    if answer.status >= 400 or request_.method not in ("GET", "HEAD"):
        assert fault_wms.requests == 0, request_.comment
    if request_.method == "OPTIONS":
        allowed = {m.strip() for m in answer.headers.get("allow", "").split(",")}
        assert {"GET", "HEAD", "OPTIONS"} <= allowed, answer.headers
        assert not allowed & {"POST", "PUT", "DELETE", "PATCH"}, answer.headers


def test_corpus_left_only_canonical_tiles_in_the_store(corpus_app):
    """Run last in this module: whatever the corpus did, the store holds only tiles its
    200 lines asked for, under their canonical keys."""
    stored = {p.relative_to(corpus_app.tiles).as_posix() for p in corpus_app.tiles.rglob("*.png")}
    assert "tiles/3/4/2.png" in stored
    # tiles/3/4/5.png is WMTS row 2, column 4: written while the encoded-slash defect
    # line of the WMTS route is still answered 200.
    assert stored <= {"tiles/3/4/2.png", "tiles/3/4/5.png"}, stored
