"""The service under gunicorn (Procfile command), real MapServer, moto's S3 server."""

import http.client
import io
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import mercantile
import pytest
import requests
from PIL import Image

from s3maptiler.render.getmap import WMSSource, getmap_url
from s3maptiler.tiles.grids import WEB_MERCATOR, Tile
from tests.integration.conftest import AWS_ENV
from tests.servers import DelayProxy, GunicornApp, tile_keys

pytestmark = pytest.mark.integration

CACHE_CONTROL = "public, max-age=600"


def tms_path(lon: float, lat: float, z: int, prefix: str = "tiles/") -> tuple[str, Tile]:
    """The TMS key of the tile over (lon, lat), and the tile (row counted from the top)."""
    t = mercantile.tile(lon, lat, z)
    return f"{prefix}{z}/{t.x}/{2**z - 1 - t.y}.png", Tile(t.x, t.y, z)


def start_app(tmp_path, demo_wms, moto_server, bucket, **extra) -> GunicornApp:
    env = {
        **AWS_ENV,
        "WMS_SERVER": demo_wms.url,
        "MAP_LAYERS": demo_wms.layers,
        "BUCKET_NAME": bucket,
        "TILE_PREFIX": "tiles/",
        "AWS_ENDPOINT_URL": moto_server.url,
        "CACHE_CONTROL": CACHE_CONTROL,
        "LOCAL_CACHE_DIR": str(tmp_path / "tiles"),
        "GUNICORN_THREADS": "8",
        **extra,
    }
    return GunicornApp(env).start()


def wait_for_object(s3, bucket: str, key: str, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return s3.head_object(Bucket=bucket, Key=key)
        except s3.exceptions.ClientError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def keys_in(s3, bucket: str) -> list[str]:
    return sorted(tile_keys(s3, bucket))


@pytest.fixture
def app(tmp_path, demo_wms, moto_server, bucket):
    # 1x1 (META_BUFFER unset, so 0): each tile is its own GetMap, passed through untouched.
    service = start_app(tmp_path, demo_wms, moto_server, bucket, METATILE="1x1")
    yield service
    service.stop()


def test_miss_equals_direct_wms_then_stored_then_served_from_cache(app, demo_wms, s3, bucket):
    key, tile = tms_path(-73.98, 40.75, 12)
    before = demo_wms.request_count()
    answer = requests.get(f"{app.url}/{key}", timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["X-Tile-Source"] == "render"
    assert answer.headers["Content-Type"] == "image/png"
    assert answer.headers["Cache-Control"] == CACHE_CONTROL
    assert answer.headers["ETag"]

    source = WMSSource(url=demo_wms.url, layers=demo_wms.layers)
    direct = requests.get(getmap_url(source, WEB_MERCATOR.tile_bbox(tile), 256, 256), timeout=30)
    served = Image.open(io.BytesIO(answer.content)).convert("RGBA")
    expected = Image.open(io.BytesIO(direct.content)).convert("RGBA")
    assert served.size == (256, 256)
    assert len(served.getcolors(65536)) > 1, "the NYC tile should not be blank"
    assert served.tobytes() == expected.tobytes()
    assert answer.content == direct.content, "METATILE=1x1 passes the WMS's bytes through"

    stored = wait_for_object(s3, bucket, key)
    assert stored["ContentType"] == "image/png"
    assert stored["CacheControl"] == CACHE_CONTROL
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == answer.content

    renders = demo_wms.request_count() - before  # our GetMap plus the direct one
    assert renders == 2
    again = requests.get(f"{app.url}/{key}", timeout=30)
    assert again.status_code == 200
    assert again.headers["X-Tile-Source"] == "cache"
    assert again.content == answer.content
    assert again.headers["ETag"] == answer.headers["ETag"]
    assert demo_wms.request_count() - before == 2, "a hit must not call the WMS"

    not_modified = requests.get(
        f"{app.url}/{key}", headers={"If-None-Match": answer.headers["ETag"]}, timeout=30
    )
    assert not_modified.status_code == 304
    assert not_modified.content == b""

    head = requests.head(f"{app.url}/{key}", timeout=30)
    assert head.status_code == 200
    assert head.headers["Content-Type"] == "image/png"
    assert head.content == b""


@pytest.mark.parametrize("form", ["miss-prefix", "tile-query"])
def test_redirected_miss_is_stored_under_the_missed_key(app, demo_wms, s3, bucket, form):
    key, _ = tms_path(-74.05, 40.65, 11)
    url = f"{app.url}/miss/{key}" if form == "miss-prefix" else f"{app.url}/?tile={key}"
    answer = requests.get(url, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["X-Tile-Source"] in ("render", "inflight")
    assert wait_for_object(s3, bucket, key)["ContentType"] == "image/png"
    assert keys_in(s3, bucket) == [key]


BAD_REQUESTS = [
    ("tiles/12/1205/abc.png", 400),
    ("tiles/12/-1/5.png", 400),
    ("tiles/3/8/2.png", 404),  # x outside 0..7
    ("tiles/3/2/8.png", 404),
    ("tiles/40/1/1.png", 404),
    ("tiles/3/4/2.gif", 404),
    ("tiles/3/4/2.png.png", 400),
    ("tiles/3/04/2.png", 400),  # not the canonical key: it would be stored under another name
    ("tiles/3/4/2", 400),
    ("other/3/4/2.png", 404),
    ("tiles/../tiles/3/4/2.png", 400),
    ("tiles/3/%2e%2e/2.png", 400),
    ("tiles/3/4%2F2.png", 400),
    ("tiles/3/４/2.png", 400),  # a full-width digit
    ("tiles/99999999999999999999/1/1.png", 400),
    ("tiles/" + "9/" * 600 + "1.png", 400),
    ("miss/other/3/4/2.png", 404),
    ("?tile=../../etc/passwd", 400),
    ("?tile=", 400),
]


def test_bad_input_never_reaches_the_wms_nor_the_bucket(app, demo_wms, s3, bucket):
    before = demo_wms.request_count()
    for path, status in BAD_REQUESTS:
        # http.client sends the path as written (requests would normalise "..").
        connection = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
        connection.request("GET", "/" + quote(path, safe="/%?=."))
        answer = connection.getresponse()
        text = answer.read().decode()
        connection.close()
        assert answer.status == status, (path, answer.status, text)
        assert text.count("\n") == 1 and len(text) < 300, path
    post = requests.post(f"{app.url}/tiles/3/4/2.png", timeout=10)
    assert post.status_code == 405
    time.sleep(0.5)
    assert demo_wms.request_count() == before
    assert keys_in(s3, bucket) == []


def test_wms_error_is_a_502_with_its_message_and_nothing_is_stored(
    tmp_path, demo_wms, moto_server, s3, bucket
):
    service = start_app(tmp_path, demo_wms, moto_server, bucket, MAP_LAYERS="no_such_layer")
    try:
        key, _ = tms_path(-73.98, 40.75, 10)
        answer = requests.get(f"{service.url}/{key}", timeout=30)
        assert answer.status_code == 502
        assert "LayerNotDefined" in answer.text and "Invalid layer(s)" in answer.text
        assert "127.0.0.1" not in answer.text, "the WMS address must not leak"
        time.sleep(0.5)
        assert keys_in(s3, bucket) == []
    finally:
        service.stop()


def test_sigterm_drains_every_pending_upload(tmp_path, demo_wms, moto_server, s3, bucket):
    slow_s3 = DelayProxy(moto_server.url, delay=0.15).start()
    service = start_app(
        tmp_path,
        demo_wms,
        moto_server,
        bucket,
        AWS_ENDPOINT_URL=slow_s3.url,
        UPLOAD_WORKERS="1",
        WEB_CONCURRENCY="1",
    )
    try:
        keys = [f"tiles/8/{x}/{y}.png" for x in range(70, 78) for y in range(150, 155)]
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda k: requests.get(f"{service.url}/{k}", timeout=60), keys))
        assert all(a.status_code == 200 for a in answers)
        pending = requests.get(f"{service.url}/heartbeat", timeout=10).text
        assert "uploads_pending=0" not in pending, "the test needs uploads still pending"
        assert service.terminate() == 0
        # Every requested tile, and the metatile neighbours rendered with them.
        assert set(keys) <= set(keys_in(s3, bucket))
        assert "0 uploads left undone" in service.log()
    finally:
        service.stop()
        slow_s3.stop()


def test_64_simultaneous_requests_make_one_getmap_and_one_upload(
    tmp_path, demo_wms, moto_server, s3, bucket
):
    counting_s3 = DelayProxy(moto_server.url, delay=0).start()
    service = start_app(
        tmp_path,
        demo_wms,
        moto_server,
        bucket,
        AWS_ENDPOINT_URL=counting_s3.url,
        WEB_CONCURRENCY="1",
        GUNICORN_THREADS="64",
    )
    try:
        key, _ = tms_path(-73.95, 40.70, 14)
        before = demo_wms.request_count()
        with ThreadPoolExecutor(64) as pool:
            answers = list(
                pool.map(lambda _: requests.get(f"{service.url}/{key}", timeout=60), range(64))
            )
        assert {a.status_code for a in answers} == {200}
        assert len({a.content for a in answers}) == 1
        wait_for_object(s3, bucket, key)
        assert demo_wms.request_count() - before == 1
        calls = [method for method, path in counting_s3.seen if key in path]
        # One read by the first request, one write; requests that came after the
        # render had finished read the stored tile: at most 17 calls in all.
        assert calls.count("PUT") == 1 and calls[0] == "GET", calls
        assert len(calls) <= 17, calls
    finally:
        service.stop()
        counting_s3.stop()


def test_4x4_metatiles_ask_the_wms_6_25_times_per_100_tiles(
    tmp_path, demo_wms, moto_server, s3, bucket
):
    # Two workers: they share each metatile's render through the spool.
    service = start_app(
        tmp_path,
        demo_wms,
        moto_server,
        bucket,
        METATILE="4x4",
        META_BUFFER="32",
        WEB_CONCURRENCY="2",
        SPOOL_DIR=str(tmp_path / "spool"),
    )
    try:
        # An 8 x 8 block of zoom-13 tiles aligned on 4 x 4 metatiles: 64 tiles, 4 GetMaps.
        x0, y0 = 2408, 3076
        keys = [f"tiles/13/{x}/{y}.png" for x in range(x0, x0 + 8) for y in range(y0, y0 + 8)]
        before = demo_wms.request_count()
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda k: requests.get(f"{service.url}/{k}", timeout=60), keys))
        assert {a.status_code for a in answers} == {200}
        assert demo_wms.request_count() - before == 4
        deadline = time.monotonic() + 20
        while len(keys_in(s3, bucket)) < 64 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sorted(keys_in(s3, bucket)) == sorted(keys)
        # Every tile cut from a metatile is a full-colour PNG of 256 x 256 pixels.
        tile = Image.open(io.BytesIO(answers[0].content))
        assert tile.size == (256, 256) and tile.mode in ("RGB", "RGBA")
    finally:
        service.stop()
