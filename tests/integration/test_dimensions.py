"""A layer with a TIME dimension against real components: the demo MapServer's
``months`` layer (one band of 30 degrees of longitude per month of 2024, filtered by
the WMS TIME parameter), the service under gunicorn, moto's S3 server, OWSLib and the
CLI as a subprocess.

OWSLib reads the dimension from the WMTS capabilities and gets tiles by time through
KVP and through the REST template; a tile of one month differs from another's where
the bands lie; a value the layer does not declare is a 400 that reaches no WMS;
redirected misses are stored under exactly the key that missed; seeding and purging
a range of months touch those months' keys only.
"""

import io
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
from PIL import Image

from s3maptiler.render.getmap import WMSSource, getmap_url
from s3maptiler.tiles.grids import WEB_MERCATOR, Tile
from tests.integration.conftest import AWS_ENV
from tests.servers import GunicornApp, tile_keys

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

LAYERS = """
wms_url = "{wms}"
wms_layers = "months"
layout = "xyz"
max_zoom = 8
[layers.months]
prefix = "months/"
[layers.months.dimensions.time]
values = "2024-01-01/2024-12-01/P1M"
default = "2024-12-01"
[layers.single]
prefix = "single/"
metatile = "1x1"
[layers.single.dimensions.time]
values = ["2024-01-01", "2024-03-01"]
default = "2024-03-01"
"""

# Zoom 2, XYZ column 0, row 1: longitudes -180 to -90, latitudes 0 to 66.5. The bands
# of January (-180 to -150), February and March (-120 to -90) cross it side by side;
# pixel rows below about 41 are under 60 N, where the bands end.
Z, X, Y = 2, 0, 1
JANUARY_PX, FEBRUARY_PX, MARCH_PX = (40, 150), (128, 150), (213, 150)


@pytest.fixture(scope="module")
def app(demo_wms, moto_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dimensions")
    (tmp / "layers.toml").write_text(LAYERS.format(wms=demo_wms.url))
    bucket = f"months-{uuid.uuid4().hex[:12]}"
    requests.put(f"{moto_server.url}/{bucket}", timeout=10).raise_for_status()  # CreateBucket
    env = {
        **AWS_ENV,
        "LAYERS_FILE": str(tmp / "layers.toml"),
        "BUCKET_NAME": bucket,
        "AWS_ENDPOINT_URL": moto_server.url,
        "GUNICORN_THREADS": "8",
        "LOG_LEVEL": "WARNING",
    }
    service = GunicornApp(env).start()
    service.bucket = bucket
    yield service
    service.stop()


def image(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGBA")


def wait_for_key(s3, bucket: str, key: str, timeout: float = 15.0) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except s3.exceptions.NoSuchKey:
            assert time.monotonic() < deadline, f"{key} was not stored"
            time.sleep(0.1)


def test_owslib_reads_the_time_dimension_and_tiles_differ_by_time(app):
    from owslib.wmts import WebMapTileService

    wmts = WebMapTileService(f"{app.url}/wmts/1.0.0/WMTSCapabilities.xml")
    time_dimension = wmts.contents["months"].dimensions["Time"]
    assert time_dimension["default"] == "2024-12-01"
    assert time_dimension["values"] == [f"2024-{m:02d}-01" for m in range(1, 13)]

    where = {
        "layer": "months",
        "tilematrixset": "GoogleMapsCompatible",
        "tilematrix": str(Z),
        "row": Y,
        "column": X,
    }

    def kvp(month: str) -> Image.Image:
        return image(wmts.gettile(**where, format="image/png", Time=month).read())

    january, march = kvp("2024-01-01"), kvp("2024-03-01")
    assert january.tobytes() != march.tobytes()
    band, sea = january.getpixel(JANUARY_PX), january.getpixel(FEBRUARY_PX)
    assert band != sea
    assert march.getpixel(MARCH_PX) == band and march.getpixel(JANUARY_PX) == sea
    # The same tiles by their keys, and by the REST template of the capabilities.
    keyed = requests.get(f"{app.url}/months/2024-01-01/{Z}/{X}/{Y}.png", timeout=60)
    assert keyed.headers["X-Tile-Source"] in ("cache", "inflight")
    assert image(keyed.content).tobytes() == january.tobytes()
    rest = wmts.buildTileResource(**where, Time="2024-03-01")
    assert "/2024-03-01/" in rest
    assert image(requests.get(rest, timeout=60).content).tobytes() == march.tobytes()


def test_a_tile_is_the_wms_map_of_its_time(app, demo_wms):
    """metatile 1x1: the tile is the WMS's own answer to TIME=<value> for its bbox."""
    source = WMSSource(demo_wms.url, layers="months", extra_params=(("TIME", "2024-01-01"),))
    bbox = WEB_MERCATOR.tile_bbox(Tile(X, Y, Z))
    direct = requests.get(getmap_url(source, bbox, 256, 256), timeout=60).content
    served = requests.get(f"{app.url}/single/2024-01-01/{Z}/{X}/{Y}.png", timeout=60).content
    assert image(served).tobytes() == image(direct).tobytes()
    default = requests.get(f"{app.url}/single/{Z}/{X}/{Y}.png", timeout=60).content
    assert image(default).getpixel(MARCH_PX) == image(served).getpixel(JANUARY_PX)


@pytest.mark.parametrize(
    "path",
    [
        f"/months/2025-01-01/{Z}/{X}/{Y}.png",
        f"/months/2024-01-15/{Z}/{X}/{Y}.png",
        f"/months/2024-01-01T00:00:00Z/{Z}/{X}/{Y}.png",
        f"/miss/months/2023-12-01/{Z}/{X}/{Y}.png",
        f"/?tile=months/2024-13-01/{Z}/{X}/{Y}.png",
        f"/wmts/1.0.0/months/default/GoogleMapsCompatible/2030-01-01/{Z}/{Y}/{X}.png",
        "/wmts?SERVICE=WMTS&REQUEST=GetTile&LAYER=months&STYLE=default&FORMAT=image/png"
        f"&TILEMATRIXSET=GoogleMapsCompatible&TILEMATRIX={Z}&TILEROW={Y}&TILECOL={X}"
        "&Time=2024-02-02",
    ],
)
def test_a_time_the_layer_does_not_declare_is_a_400_that_reaches_no_wms(app, demo_wms, path):
    before = demo_wms.request_count()
    answer = requests.get(app.url + path, timeout=30)
    assert answer.status_code == 400, answer.text
    assert "Time" in answer.text
    assert demo_wms.request_count() == before


@pytest.mark.parametrize(
    ("form", "month"), [("/miss/{key}", "2024-05-01"), ("/?tile={key}", "2024-06-01")]
)
def test_redirected_misses_are_stored_under_exactly_the_key_that_missed(app, s3, form, month):
    key = f"months/{month}/3/1/3.png"
    answer = requests.get(app.url + form.format(key=key), timeout=60)
    assert answer.status_code == 200
    assert wait_for_key(s3, app.bucket, key) == answer.content
    # The metatile's 16 tiles (zoom 3, columns and rows 0-3) under the same month only.
    deadline = time.monotonic() + 15
    while True:
        month_keys = {k for k in tile_keys(s3, app.bucket) if f"/{month}/" in k}
        if len(month_keys) >= 16 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert month_keys == {f"months/{month}/3/{x}/{y}.png" for x in range(4) for y in range(4)}


def test_seed_and_purge_a_range_of_months(demo_wms, moto_server, s3, bucket, tmp_path):
    (tmp_path / "layers.toml").write_text(LAYERS.format(wms=demo_wms.url))
    env = {
        **os.environ,
        **AWS_ENV,
        "PYTHONPATH": str(ROOT),
        "LAYERS_FILE": str(tmp_path / "layers.toml"),
        "BUCKET_NAME": bucket,
        "AWS_ENDPOINT_URL": moto_server.url,
    }

    def cli(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "s3maptiler.cli", *args]
        return subprocess.run(
            command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
        )

    before = demo_wms.request_count()
    area = "--layer months --zoom 1 --bbox -180,-60,180,60"
    seeded = cli("seed", *area.split(), "--dimension", "time=2024-01-01/2024-03-01")
    assert seeded.returncode == 0, seeded.stderr
    assert "time=2024-01-01..2024-03-01 (3 values)" in seeded.stdout
    # Zoom 1 is one metatile: one GetMap per month.
    assert demo_wms.request_count() - before == 3
    months = ("2024-01-01", "2024-02-01", "2024-03-01")
    expected = {f"months/{m}/1/{x}/{y}.png" for m in months for x in (0, 1) for y in (0, 1)}
    assert tile_keys(s3, bucket) == expected
    tiles = [
        s3.get_object(Bucket=bucket, Key=f"months/{m}/1/0/0.png")["Body"].read() for m in months
    ]
    assert len(set(tiles)) == 3

    refused = cli("seed", *area.split(), "--dimension", "time=2025-01-01")
    assert refused.returncode == 2 and "Time '2025-01-01'" in refused.stderr

    purged = cli("purge", "--layer", "months", "--dimension", "time=2024-02-01", "--yes")
    assert purged.returncode == 0, purged.stderr
    assert "4 deleted" in purged.stdout
    assert tile_keys(s3, bucket) == {k for k in expected if "/2024-02-01/" not in k}
