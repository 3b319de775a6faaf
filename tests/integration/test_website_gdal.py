"""ArcGIS-on-S3 through the bucket: `s3maptiler publish` writes the MapServer JSON, the
WMTS capabilities and the TMS documents into a LocalStack bucket, and GDAL opens them
from the bucket's website endpoint as a GIS user would.

GDAL (libcurl) resolves ``<bucket>.s3-website.localhost`` to the loopback address by
itself, so the URLs are the bucket's public ones. A first read of a window whose tiles
are missing follows the 307s to the service, which draws and stores them; a second read
of the same window is answered by the bucket alone: no GetMap, no tile request at the
service, the same pixels.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from tests.integration.conftest import need
from tests.website import Loop, cli, new_bucket_name, start_service

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LAYERS = """\
wms_url = "{wms}"
wms_layers = "demo"
cache_control = "public, max-age=600"
max_zoom = 16

[layers.demo]
title = "Demo, TMS keys"
prefix = "tiles/"

[layers.xyz]
title = "Demo, XYZ keys"
prefix = "xyz/"
layout = "xyz"
"""
Z = 12
# A 512 x 512 px window over Manhattan at zoom 12: tile columns 1205-1207, rows 1538-1540.
WINDOW = (1205 * 256 - 128, 1539 * 256 - 128, 512, 512)
# Web Mercator metres around lower Manhattan, read at about 55 m per pixel.
PROJWIN = ("-8240000", "4980000", "-8226000", "4966000")


def gdal(*args: str, cwd: Path) -> str:
    """A GDAL command with its WMS cache off: every tile is read over HTTP."""
    need(None if shutil.which("gdal_translate") else "GDAL (gdal-bin) is not installed")
    done = subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=cwd,
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GDAL_HTTP_TIMEOUT": "60",
            "GDAL_ENABLE_WMS_CACHE": "NO",
            "GDAL_DEFAULT_WMS_CACHE_PATH": str(cwd / "gdalwmscache"),
            "CPL_DEBUG": "OFF",
        },
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def published(localstack, demo_wms, tmp_path_factory):
    """A bucket set up and published with the console script, the service behind it."""
    tmp = tmp_path_factory.mktemp("published")
    layers = tmp / "layers.toml"
    layers.write_text(LAYERS.format(wms=demo_wms.url))
    bucket = new_bucket_name()
    localstack.client().create_bucket(Bucket=bucket)
    app = start_service(localstack, bucket, layers)
    website = localstack.website_url(bucket)
    env = {"LAYERS_FILE": str(layers), "BUCKET_NAME": bucket, "AWS_ENDPOINT_URL": localstack.url}
    # Every layer's prefix and arcgis/rest/services/ by default; public read.
    setup = cli("bucket", "setup", "--tiler-url", app.url, "--relax-public-access-block", env=env)
    assert setup.returncode == 0, setup.stderr
    check = cli("bucket", "check", "--tiler-url", app.url, env=env)
    assert check.returncode == 0, check.stdout
    publish = cli("publish", "--base-url", website, env=env)
    assert publish.returncode == 0, publish.stderr
    yield Loop(localstack, app, demo_wms), bucket, website
    app.stop()


def test_the_bucket_serves_the_documents_with_their_content_types(published):
    loop, bucket, website = published
    stack = loop.stack
    expected = {
        "/1.0.0/tilemapservice.xml": "text/xml; charset=utf-8",
        "/tiles/tilemapresource.xml": "text/xml; charset=utf-8",
        "/wmts/1.0.0/WMTSCapabilities.xml": "application/xml; charset=utf-8",
        "/arcgis/rest/services/demo/MapServer": "application/json",
        "/arcgis/rest/services/xyz/MapServer": "application/json",
    }
    for path, content_type in expected.items():
        answer = stack.website_get(bucket, path)
        assert (answer.status_code, answer.headers["Content-Type"]) == (200, content_type), path
    capabilities = stack.website_get(bucket, "/wmts/1.0.0/WMTSCapabilities.xml").text
    assert f'template="{website}/xyz/{{TileMatrix}}/{{TileCol}}/{{TileRow}}.png"' in capabilities

    # ArcGIS clients add ?f=json, ?f=pjson or a JSONP callback: S3 ignores the query and
    # always answers the stored JSON. A bucket cannot do JSONP: clients read the JSON
    # through CORS, which the bucket grants.
    plain = stack.website_get(bucket, "/arcgis/rest/services/xyz/MapServer").content
    for query in ("?f=json", "?f=pjson", "?f=json&callback=cb"):
        answer = stack.website_get(
            bucket, "/arcgis/rest/services/xyz/MapServer" + query, {"Origin": "http://map.test"}
        )
        assert answer.headers["Content-Type"] == "application/json", query
        assert answer.content == plain, query
        assert answer.headers["Access-Control-Allow-Origin"] == "*", query
    service = json.loads(plain)
    assert service["tileInfo"]["lods"][Z]["level"] == Z
    assert service["spatialReference"]["latestWkid"] == 3857


def read_twice(loop: Loop, tmp_path: Path, *command: str) -> tuple[bytes, bytes]:
    """Run a GDAL read of missing tiles, then the same read again in a fresh folder;
    the second must reach neither the WMS nor the service."""
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    getmaps, served = loop.getmaps(), loop.service_tile_requests()
    gdal(*command, cwd=first_dir)
    assert loop.getmaps() > getmaps, "the first read drew nothing: were the tiles there?"
    assert loop.service_tile_requests() > served
    loop.wait_uploads()
    getmaps, served = loop.getmaps(), loop.service_tile_requests()
    gdal(*command, cwd=second_dir)
    assert loop.getmaps() == getmaps, "the second read drew tiles again"
    assert loop.service_tile_requests() == served, "the second read reached the service"
    out = command[-1]
    first = Image.open(first_dir / out).convert("RGBA")
    second = Image.open(second_dir / out).convert("RGBA")
    assert len(first.getcolors(1 << 20)) > 50, "a blank read"
    return first.tobytes(), second.tobytes()


def test_gdal_reads_the_arcgis_json_from_the_bucket_and_fills_the_missing_tiles(
    published, tmp_path
):
    loop, bucket, website = published
    url = f"{website}/arcgis/rest/services/demo/MapServer?f=json"
    info = gdal("gdalinfo", url, cwd=tmp_path)
    assert "Size is" in info and "3857" in info
    command = ("gdal_translate", "-q", "-projwin", *PROJWIN, "-outsize", "256", "256", "-of",
               "PNG", url, "arcgis.png")  # fmt: skip
    first, second = read_twice(loop, tmp_path, *command)
    assert first == second
    # The tiles were stored under the keys GDAL asked for: the ArcGIS REST tile URLs.
    keys = [
        o["Key"]
        for o in loop.stack.client().list_objects_v2(
            Bucket=bucket, Prefix="arcgis/rest/services/demo/MapServer/tile/"
        )["Contents"]
    ]
    assert keys and all(k.count("/") == 8 for k in keys), keys


def test_gdal_reads_the_wmts_capabilities_from_the_bucket_and_fills_the_missing_tiles(
    published, tmp_path
):
    loop, bucket, website = published
    url = f"WMTS:{website}/wmts/1.0.0/WMTSCapabilities.xml,layer=xyz"
    info = gdal("gdalinfo", "-oo", f"ZOOM_LEVEL={Z}", url, cwd=tmp_path)
    assert f"Size is {256 * 2**Z}, {256 * 2**Z}" in info
    x, y, w, h = WINDOW
    command = ("gdal_translate", "-q", "-oo", f"ZOOM_LEVEL={Z}", "-of", "PNG", "-srcwin",
               str(x), str(y), str(w), str(h), url, "wmts.png")  # fmt: skip
    first, second = read_twice(loop, tmp_path, *command)
    assert first == second
    # The window's nine tiles are in the bucket under the layer's XYZ keys.
    for col in (1205, 1206, 1207):
        for row in (1538, 1539, 1540):
            assert loop.stack.website_get(bucket, f"/xyz/{Z}/{col}/{row}.png").status_code == 200
