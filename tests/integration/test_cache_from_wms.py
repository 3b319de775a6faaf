"""``cache_from_wms`` with real components: the service (gunicorn) storing in moto's
S3 server, behind a fake WMS that sends each kind of cache header, and behind the
demo MapServer whose lighttpd says ``Cache-Control: max-age=600``; then ``s3maptiler
seed --refresh-older-than`` against the same bucket."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
import requests
from PIL import Image

from devtools.demowms import DemoWMS, unavailable_reason
from s3maptiler.render.freshness import http_date
from tests.faultwms import FaultWMS
from tests.integration.conftest import AWS_ENV, need
from tests.servers import GunicornApp

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BLUE = (30, 30, 200)
MANHATTAN = "-74.02,40.70,-73.95,40.76"


def service(wms_url: str, layers: str, moto_url: str, bucket: str, **env: str) -> GunicornApp:
    return GunicornApp(
        {
            **AWS_ENV,
            "WMS_SERVER": wms_url,
            "MAP_LAYERS": layers,
            "CACHE_FROM_WMS": "true",
            "BUCKET_NAME": bucket,
            "AWS_ENDPOINT_URL": moto_url,
            "LOG_LEVEL": "WARNING",
            **env,
        }
    ).start()


def seconds_until(http_date_text: str) -> float:
    return parsedate_to_datetime(http_date_text).timestamp() - time.time()


def wait_for(check, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return found


def stored(s3, bucket: str, key: str, newer_than: str | None = None) -> dict | None:
    """The object's HEAD once it is there (and its ETag differs from `newer_than`)."""
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except s3.exceptions.ClientError:
        return None
    return head if head["ETag"] != newer_than else None


@pytest.fixture(scope="module")
def fault_wms():
    wms = FaultWMS().start()
    yield wms
    wms.stop()


def test_each_kind_of_wms_header_gives_the_tile_its_lifetime(fault_wms, moto_server, s3, bucket):
    app = service(fault_wms.url, "roads", moto_server.url, bucket, METATILE="1x1")
    try:
        # Expires from the WMS's own Date, 5 seconds on; then the tile is drawn again.
        fault_wms.headers = {"Expires": http_date(time.time() + 5)}
        first = requests.get(f"{app.url}/tiles/3/4/5.png", timeout=30)
        assert first.headers["X-Tile-Source"] == "render"
        # The WMS's Date and Expires are whole seconds: ours may fall a second later.
        late = seconds_until(first.headers["Expires"]) - seconds_until(fault_wms.headers["Expires"])
        assert 0 <= late <= 1
        head = wait_for(lambda: stored(s3, bucket, "tiles/3/4/5.png"))
        assert (head["CacheControl"], head["ExpiresString"]) == ("public", first.headers["Expires"])
        calls = fault_wms.requests
        hit = requests.get(f"{app.url}/tiles/3/4/5.png", timeout=30)
        # Not drawn again: read from S3, or from the upload queue when the PUT that
        # just landed has not yet been counted done ("inflight").
        assert hit.headers["X-Tile-Source"] in ("cache", "inflight")
        assert fault_wms.requests == calls
        time.sleep(max(0.0, seconds_until(first.headers["Expires"])) + 0.5)
        fault_wms.colour, fault_wms.headers = BLUE, {"Cache-Control": "max-age=3600"}
        calls = fault_wms.requests
        again = requests.get(f"{app.url}/tiles/3/4/5.png", timeout=30)
        assert again.headers["X-Tile-Source"] == "render" and fault_wms.requests == calls + 1
        replaced = wait_for(lambda: stored(s3, bucket, "tiles/3/4/5.png", head["ETag"]))
        assert 3590 < seconds_until(replaced["ExpiresString"]) <= 3600
        body = s3.get_object(Bucket=bucket, Key="tiles/3/4/5.png")["Body"].read()
        assert Image.open(io.BytesIO(body)).convert("RGB").getpixel((5, 5)) == BLUE

        # Last-Modified alone: a tenth of its age (1000 s ago: 100 s).
        fault_wms.headers = {"Last-Modified": http_date(time.time() - 1000)}
        guessed = requests.get(f"{app.url}/tiles/3/4/4.png", timeout=30)
        assert guessed.headers["Cache-Control"] in ("public, max-age=100", "public, max-age=99")

        # no-store: answered as the WMS said, never stored.
        fault_wms.headers = {"Cache-Control": "no-store"}
        refused = requests.get(f"{app.url}/tiles/3/4/3.png", timeout=30)
        assert refused.headers["Cache-Control"] == "no-store" and "Expires" not in refused.headers
        time.sleep(1.0)
        assert stored(s3, bucket, "tiles/3/4/3.png") is None
    finally:
        fault_wms.headers, fault_wms.colour = {}, (40, 120, 200)
        app.stop()


@pytest.fixture(scope="module")
def caching_demo_wms():
    """The demo MapServer, its lighttpd adding the operator's Cache-Control."""
    need(unavailable_reason())
    wms = DemoWMS(response_headers={"Cache-Control": "public, max-age=600"}).start()
    yield wms
    wms.stop()


def seed(env: dict[str, str], tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "s3maptiler.cli", "seed", "--zoom", "12", "--bbox", MANHATTAN,
         *args],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done


def test_the_demo_wms_lifetime_reaches_the_answer_and_s3(
    caching_demo_wms, moto_server, s3, bucket, tmp_path
):
    wms = caching_demo_wms
    app = service(wms.url, wms.layers, moto_server.url, bucket)
    try:
        tile = requests.get(f"{app.url}/tiles/12/1206/2556.png", timeout=60)
        assert tile.status_code == 200
        assert tile.headers["Cache-Control"] in ("public, max-age=600", "public, max-age=599")
        assert 595 < seconds_until(tile.headers["Expires"]) <= 600
        head = wait_for(lambda: stored(s3, bucket, "tiles/12/1206/2556.png"))
        assert head["CacheControl"] == "public"
        assert 590 < head["Expires"].timestamp() - time.time() <= 600
    finally:
        app.stop()


def test_seed_refresh_older_than_draws_again_only_older_tiles(
    caching_demo_wms, moto_server, s3, bucket, tmp_path
):
    wms = caching_demo_wms
    env = {
        **os.environ,
        **AWS_ENV,
        "PYTHONPATH": str(ROOT),
        "WMS_SERVER": wms.url,
        "MAP_LAYERS": wms.layers,
        "CACHE_FROM_WMS": "true",
        "BUCKET_NAME": bucket,
        "AWS_ENDPOINT_URL": moto_server.url,
        "LAYERS_FILE": "",
    }
    seed(env, tmp_path)
    listing = s3.list_objects_v2(Bucket=bucket)["Contents"]
    written = {o["Key"]: o["LastModified"] for o in listing}
    assert written
    # Nothing is older than an hour: not one GetMap.
    getmaps = wms.request_count()
    kept = seed(env, tmp_path, "--refresh-older-than", "1h")
    assert wms.request_count() == getmaps
    assert f"0 done, {len(written)} skipped (stored since" in kept.stdout, kept.stdout
    # Everything is older than a moment ago: drawn again, replaced, with a new Expires.
    time.sleep(1.1)
    redrawn = seed(env, tmp_path, "--refresh-older-than", "1s")
    assert f"{len(written)} done, 0 skipped" in redrawn.stdout, redrawn.stdout
    assert wms.request_count() > getmaps
    for entry in s3.list_objects_v2(Bucket=bucket)["Contents"]:
        assert entry["LastModified"] > written[entry["Key"]], entry["Key"]
    head = s3.head_object(Bucket=bucket, Key="tiles/12/1206/2556.png")
    assert head["CacheControl"] == "public"
    assert 590 < head["Expires"].timestamp() - time.time() <= 600
