"""OGC API - Tiles with a real client: GDAL's ``OGCAPI:`` driver opens the service's
landing page, reads windows whose pixels are the TMS route's tiles and fills the
layer's own keys; and the documents ``publish`` writes open from a bucket's website
endpoint (LocalStack), whose misses the redirect fills.

GDAL 3.6 takes a collection's CRS84 extent for coordinates of the tile matrix set's
CRS (later versions reproject it), so Web Mercator windows are named with the
driver's MINX/MINY/MAXX/MAXY open options, in meters: what a user of GDAL 3.6 does.
"""

from __future__ import annotations

import io
import json

import pytest
import requests
from PIL import Image

from s3maptiler.tiles.grids import WEB_MERCATOR, Tile
from tests.integration import test_website_gdal
from tests.integration.test_website_gdal import gdal, read_twice
from tests.servers import GunicornApp

pytestmark = pytest.mark.integration

# The layers of the bucket test (demo: TMS keys, xyz: XYZ keys) and one in WorldCRS84Quad.
LAYERS = (
    test_website_gdal.LAYERS
    + """
[layers.geo]
prefix = "geo/"
grid = "WorldCRS84Quad"
layout = "wmts"
max_zoom = 10
"""
)
Z = 12
COLUMNS, ROWS = range(1205, 1208), range(1538, 1541)  # lower Manhattan, rows from the top


def window_options() -> list[str]:
    """Open options naming the 3 x 3 tiles of COLUMNS x ROWS at zoom Z, in meters."""
    top_left = WEB_MERCATOR.tile_bbox(Tile(COLUMNS[0], ROWS[0], Z))
    bottom_right = WEB_MERCATOR.tile_bbox(Tile(COLUMNS[-1], ROWS[-1], Z))
    bounds = {
        "MINX": top_left.left,
        "MINY": bottom_right.bottom,
        "MAXX": bottom_right.right,
        "MAXY": top_left.top,
    }
    options = ["-oo", f"TILEMATRIX={Z}"]
    for name, value in bounds.items():
        options += ["-oo", f"{name}={value!r}"]
    return options


def stitched(url_of) -> bytes:
    """The RGBA pixels of the window's tiles, fetched from ``url_of(column, row)``."""
    mosaic = Image.new("RGBA", (256 * len(COLUMNS), 256 * len(ROWS)))
    for i, column in enumerate(COLUMNS):
        for j, row in enumerate(ROWS):
            answer = requests.get(url_of(column, row), timeout=60)
            assert answer.status_code == 200, answer.text
            mosaic.paste(Image.open(io.BytesIO(answer.content)).convert("RGBA"), (256 * i, 256 * j))
    return mosaic.tobytes()


def read_png(path) -> bytes:
    image = Image.open(path).convert("RGBA")
    assert image.size == (256 * len(COLUMNS), 256 * len(ROWS))
    return image.tobytes()


@pytest.fixture(scope="module")
def app(demo_wms, tmp_path_factory):
    """The service over a local tile directory (``app.tiles``)."""
    tmp = tmp_path_factory.mktemp("ogcapi")
    layers, tiles = tmp / "layers.toml", tmp / "tiles"
    layers.write_text(LAYERS.format(wms=demo_wms.url))
    env = {"LAYERS_FILE": str(layers), "LOCAL_CACHE_DIR": str(tiles), "LOG_LEVEL": "WARNING"}
    service = GunicornApp(env).start()
    service.tiles = tiles
    yield service
    service.stop()


def test_gdal_lists_every_layer_from_the_service_landing_page(app, tmp_path):
    info = gdal("gdalinfo", f"OGCAPI:{app.url}/ogcapi", cwd=tmp_path)
    for index, name in enumerate(("demo", "xyz", "geo"), start=1):
        url = f"OGCAPI:{app.url}/ogcapi/collections/{name}"
        assert f"SUBDATASET_{index}_NAME={url}" in info, info


def test_gdal_reads_a_window_whose_pixels_are_the_tms_routes_tiles(app, demo_wms, tmp_path):
    url = f"OGCAPI:{app.url}/ogcapi/collections/demo"
    info = gdal("gdalinfo", *window_options(), url, cwd=tmp_path)
    assert "Size is 768, 768" in info and "Pseudo-Mercator" in info
    gdal("gdal_translate", "-q", *window_options(), "-of", "PNG", url, "ogc.png", cwd=tmp_path)
    through_ogc = read_png(tmp_path / "ogc.png")
    assert len(Image.open(tmp_path / "ogc.png").getcolors(1 << 20)) > 50, "a blank read"

    getmaps = demo_wms.request_count()
    through_tms = stitched(lambda x, y: f"{app.url}/1.0.0/demo/{Z}/{x}/{2**Z - 1 - y}.png")
    assert through_ogc == through_tms
    # The OGC API read filled the layer's own TMS keys: the TMS route drew nothing.
    assert demo_wms.request_count() == getmaps
    for x in COLUMNS:
        for y in ROWS:
            assert (app.tiles / f"tiles/{Z}/{x}/{2**Z - 1 - y}.png").is_file()


def test_gdal_reads_the_world_crs84_quad_layer_as_its_wmts_route_serves_it(app, tmp_path):
    url = f"OGCAPI:{app.url}/ogcapi/collections/geo"
    info = gdal("gdalinfo", url, cwd=tmp_path)
    # Zoom 10 of WorldCRS84Quad: 2048 x 1024 tiles from (-180, 90).
    assert "Size is 524288, 262144" in info
    assert "Origin = (-180.000000000000000,90.000000000000000)" in info
    window = ("-srcwin", "256", "256", "256", "256")
    gdal("gdal_translate", "-q", "-oo", "TILEMATRIX=2", *window, "-of", "PNG", url, "geo.png",
         cwd=tmp_path)  # fmt: skip
    tile = requests.get(f"{app.url}/wmts/1.0.0/geo/default/WorldCRS84Quad/2/1/1.png", timeout=60)
    expected = Image.open(io.BytesIO(tile.content)).convert("RGBA").tobytes()
    assert Image.open(tmp_path / "geo.png").convert("RGBA").tobytes() == expected


# --- the documents in a bucket ------------------------------------------------------------


#: A bucket set up and published with the console script, the service behind it.
published = test_website_gdal.published


@pytest.mark.slow
def test_the_bucket_serves_the_ogcapi_documents_with_their_content_types(published):
    loop, bucket, website = published
    expected = {
        "/ogcapi": "application/json",
        "/ogcapi/conformance": "application/json",
        "/ogcapi/api": "application/vnd.oai.openapi+json;version=3.0",
        "/ogcapi/collections": "application/json",
        "/ogcapi/collections/demo": "application/json",
        "/ogcapi/collections/demo/map/tiles": "application/json",
        "/ogcapi/collections/demo/map/tiles/WebMercatorQuad?f=json": "application/json",
        "/ogcapi/tileMatrixSets": "application/json",
        "/ogcapi/tileMatrixSets/WebMercatorQuad": "application/json",
    }
    for path, content_type in expected.items():
        answer = loop.stack.website_get(bucket, path, {"Origin": "http://map.test"})
        assert (answer.status_code, answer.headers["Content-Type"]) == (200, content_type), path
        assert answer.headers["Access-Control-Allow-Origin"] == "*", path
    tileset = json.loads(
        loop.stack.website_get(bucket, "/ogcapi/collections/xyz/map/tiles/WebMercatorQuad").text
    )
    item = next(link for link in tileset["links"] if link["rel"] == "item")
    assert item["href"] == f"{website}/xyz/{{tileMatrix}}/{{tileCol}}/{{tileRow}}.png"


@pytest.mark.slow
def test_gdal_reads_the_bucket_ogcapi_and_the_redirect_fills_the_tiles(published, tmp_path):
    loop, bucket, website = published
    info = gdal("gdalinfo", f"OGCAPI:{website}/ogcapi", cwd=tmp_path)
    assert f"SUBDATASET_1_NAME=OGCAPI:{website}/ogcapi/collections/demo" in info
    reads = {}
    for name in ("xyz", "demo"):
        (tmp_path / name).mkdir()
        url = f"OGCAPI:{website}/ogcapi/collections/{name}"
        command = ("gdal_translate", "-q", *window_options(), "-of", "PNG", url, "read.png")
        first, second = read_twice(loop, tmp_path / name, *command)
        assert first == second
        reads[name] = first
    assert reads["xyz"] == reads["demo"]
    client = loop.stack.client()
    # The XYZ layer's own keys; the TMS layer's tiles under the tile route's keys.
    for x in COLUMNS:
        for y in ROWS:
            assert client.head_object(Bucket=bucket, Key=f"xyz/{Z}/{x}/{y}.png")
            key = f"ogcapi/collections/demo/map/tiles/WebMercatorQuad/{Z}/{y}/{x}"
            assert client.head_object(Bucket=bucket, Key=key)["ContentType"] == "image/png"
