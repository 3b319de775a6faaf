"""S3 down in its three shapes, with real servers on 127.0.0.1: the service under
gunicorn (Procfile command), the demo MapServer as its WMS, moto's S3 server behind
`tests/faults3.py`'s proxy, which refuses connections (its port closed), accepts them
and never answers, or answers every call 503 SlowDown.

For each shape: every tile is answered 200 with the WMS's own pixels (the tile cut
from a direct GetMap of its metatile), a miss costs about a direct GetMap (the store's
breaker skips S3 instead of waiting on it), nothing is stored or said to be, the deep
heartbeat says failing; then S3 comes back, the breaker closes and tiles are stored
again.
"""

from __future__ import annotations

import io
import re
import statistics
import time
import uuid

import mercantile
import pytest
import requests
from PIL import Image

from s3maptiler.render.getmap import WMSSource, getmap_url
from s3maptiler.tiles.grids import WEB_MERCATOR, Tile
from s3maptiler.tiles.metatile import metatile_for
from tests.faults3 import DOWN, FaultS3Proxy, wait_until
from tests.integration.conftest import AWS_ENV
from tests.servers import GunicornApp

pytestmark = [pytest.mark.integration, pytest.mark.slow]

COOLDOWN = 2.0  # S3_BREAKER_COOLDOWN of the service under test
READ_TIMEOUT = 1.0  # S3_READ_TIMEOUT
METATILES = 16  # misses measured per shape


def tms_key(tile: Tile) -> str:
    return f"tiles/{tile.z}/{tile.x}/{2**tile.z - 1 - tile.y}.png"


def metatile_tiles(count: int, z: int, offset: int) -> list[Tile]:
    """The top-left tiles of `count` distinct 2x2 metatiles over New York."""
    centre = mercantile.tile(-73.97, 40.73, z)
    x0, y0 = centre.x - centre.x % 2, centre.y - centre.y % 2
    return [Tile(x0 + 2 * (offset + n), y0, z) for n in range(count)]


def pixels(data: bytes) -> bytes:
    image = Image.open(io.BytesIO(data))
    return image.convert("RGBA").tobytes()


def timed(session: requests.Session, url: str) -> tuple[float, requests.Response]:
    started = time.perf_counter()
    answer = session.get(url, timeout=60)
    return time.perf_counter() - started, answer


def metric(app: GunicornApp, name: str, labels: str = "") -> float:
    text = requests.get(f"{app.url}/metrics", timeout=10).text
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def heartbeat(app: GunicornApp) -> dict[str, int]:
    text = requests.get(f"{app.url}/heartbeat", timeout=10).text
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", text)}


def keys_in(s3, bucket: str) -> set[str]:
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="tiles/")
    return {item["Key"] for item in listed.get("Contents", [])}


@pytest.fixture
def proxy(moto_server):
    made = FaultS3Proxy(moto_server.url).start()
    yield made
    made.stop()


@pytest.fixture
def app(demo_wms, proxy, s3, tmp_path):
    bucket = f"down-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    made = GunicornApp(
        {
            **AWS_ENV,
            "WMS_SERVER": demo_wms.url,
            "MAP_LAYERS": demo_wms.layers,
            "BUCKET_NAME": bucket,
            "AWS_ENDPOINT_URL": proxy.url,
            "METATILE": "2x2",  # a metatile: the leases are on the path too
            "META_BUFFER": "0",  # so a tile is an exact crop of the direct GetMap
            "S3_BREAKER_COOLDOWN": str(COOLDOWN),
            "S3_READ_TIMEOUT": str(READ_TIMEOUT),
            "S3_UPLOAD_TIMEOUT": "2",
            "UPLOAD_RETRIES": "1",
            "WEB_CONCURRENCY": "1",
            "GUNICORN_THREADS": "8",
            "MAX_REQUESTS": "100000",
            "SPOOL_DIR": str(tmp_path / "spool"),
            "LOG_LEVEL": "WARNING",
        }
    ).start()
    made.bucket = bucket
    yield made
    made.stop()


@pytest.mark.parametrize("shape", DOWN)
def test_s3_down_is_skipped_tiles_answered_at_wms_speed_then_stored_again(
    app, proxy, demo_wms, s3, shape
):
    session = requests.Session()
    source = WMSSource(url=demo_wms.url, layers=demo_wms.layers)
    z = 16
    warm, *tiles = metatile_tiles(METATILES + 1, z, offset=0)
    # Warm both paths while S3 is up: the tile is stored.
    session.get(getmap_url(source, WEB_MERCATOR.tile_bbox(warm), 256, 256), timeout=30)
    assert session.get(f"{app.url}/{tms_key(warm)}", timeout=30).status_code == 200
    assert wait_until(lambda: heartbeat(app)["uploads_stored"] == 4, 10)  # its metatile
    stored_before = heartbeat(app)["uploads_stored"]
    opened_before = metric(app, "s3maptiler_store_breaker_opened_total")

    proxy.fail_all(shape)
    direct_s, miss_s = [], []
    for tile in tiles:
        meta = metatile_for(WEB_MERCATOR, tile, (2, 2), 0)
        took, direct = timed(session, getmap_url(source, meta.bbox, meta.width, meta.height))
        assert direct.status_code == 200
        direct_s.append(took)
        took, answer = timed(session, f"{app.url}/{tms_key(tile)}")  # a plain key: read first
        assert answer.status_code == 200, answer.text
        assert answer.headers["X-Tile-Source"] == "render"
        miss_s.append(took)
        whole = Image.open(io.BytesIO(direct.content))
        expected = whole.crop(meta.crop_box(tile)).convert("RGBA").tobytes()
        assert pixels(answer.content) == expected, f"{tile}: not the WMS's pixels"

    # A miss costs about a direct GetMap of its metatile: S3 is skipped, not waited on
    # (waiting would cost S3_READ_TIMEOUT or a retry's backoff on every one).
    p50_direct, p50_miss = statistics.median(direct_s), statistics.median(miss_s)
    assert p50_miss <= 1.5 * p50_direct + 0.05, (p50_miss, p50_direct)
    # Once the breaker is open, only its trial (one read per cooldown) may wait out
    # S3_READ_TIMEOUT; every other miss skips S3.
    trials = 1 + int(sum(direct_s[4:]) + sum(miss_s[4:])) // int(COOLDOWN)
    waited = [took for took in miss_s[4:] if took >= 0.9 * READ_TIMEOUT]
    assert len(waited) <= trials, (miss_s, trials)
    opened = metric(app, "s3maptiler_store_breaker_opened_total") - opened_before
    assert 1 <= opened <= 1 + trials
    assert metric(app, "s3maptiler_store_calls_skipped_total", '{call="read"}') >= METATILES - 4

    # Nothing stored, nothing said to be stored; unstored counted; deep check failing.
    assert wait_until(lambda: heartbeat(app)["uploads_pending"] == 0, 30)
    counts = heartbeat(app)
    assert counts["uploads_stored"] == stored_before
    assert counts["uploads_unstored"] >= 4 * METATILES  # each metatile's four tiles
    assert metric(app, "s3maptiler_uploads_total", '{outcome="skipped"}') > 0
    deep = requests.get(f"{app.url}/heartbeat?deep=1", timeout=10)
    assert deep.status_code == 503
    checks = deep.json()["checks"]
    for name in ("store", "store_reads", "store_writes"):
        assert checks[name].startswith("failing"), (name, checks)
    assert keys_in(s3, app.bucket) == {
        tms_key(Tile(x, y, z)) for x in (warm.x, warm.x + 1) for y in (warm.y, warm.y + 1)
    }

    # S3 is back: after the cooldown a call tries it, the breaker closes, tiles are stored.
    proxy.heal()
    time.sleep(COOLDOWN)
    fresh = metatile_tiles(8, z, offset=METATILES + 1)
    for tile in fresh:
        assert session.get(f"{app.url}/{tms_key(tile)}", timeout=30).status_code == 200
    assert wait_until(lambda: tms_key(fresh[-1]) in keys_in(s3, app.bucket), 15)
    assert wait_until(
        lambda: requests.get(f"{app.url}/heartbeat?deep=1", timeout=10).status_code == 200, 15
    ), requests.get(f"{app.url}/heartbeat?deep=1", timeout=10).text
