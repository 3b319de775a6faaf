"""WebP and mixed tiles from the demo MapServer, read by GDAL through the documents.

The service runs under gunicorn with its tiles in a moto S3 bucket. Beside a full
colour PNG layer (the reference: the same GetMaps, cut without loss) it serves the
same map as lossy WebP, lossless WebP and mixed (JPEG where opaque, PNG where
transparent). GDAL (Debian's gdal-bin, built with its WEBP driver) opens each through
the WMTS capabilities, the TMS TileMap and, for mixed, the ArcGIS MapServer JSON,
and reads a window of 3 x 3 tiles at zoom 10 over New York whose tiles are partly
land (opaque) and partly sea (transparent in this WMS).
"""

from __future__ import annotations

import hashlib
import io

import pytest
import requests
from PIL import Image, ImageChops, ImageStat

from s3maptiler.tiles.formats import sniff
from s3maptiler.tiles.grids import WEB_MERCATOR, Tile
from s3maptiler.tiles.tilemath import lonlat_to_tile
from tests.integration.conftest import AWS_ENV
from tests.integration.test_website_gdal import gdal  # GDAL with its WMS cache off
from tests.servers import GunicornApp

pytestmark = pytest.mark.integration

Z = 10
CENTRE = lonlat_to_tile(WEB_MERCATOR, -73.98, 40.75, Z)  # XYZ numbering
TILES = [Tile(CENTRE.x + dx, CENTRE.y + dy, Z) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
# The 3 x 3 tiles around the centre, in pixels of zoom 10 (WMTS and TMS count the same).
WINDOW = ((CENTRE.x - 1) * 256, (CENTRE.y - 1) * 256, 768, 768)

LAYERS = """
wms_url = "{wms}"
wms_layers = "demo"
transparent = true
max_zoom = 10  # the window's zoom: GDAL reads a TMS TileMap at its deepest level
[layers.png]
prefix = "png/"
[layers.webp]
prefix = "webp/"
format = "webp"
[layers.lossless]
prefix = "lossless/"
format = "webp"
webp_lossless = true
[layers.mixed]
prefix = "mixed/"
format = "mixed"
layout = "xyz"
"""


@pytest.fixture(scope="module")
def app(demo_wms, moto_server, tmp_path_factory):
    import boto3

    tmp = tmp_path_factory.mktemp("webp-mixed")
    (tmp / "layers.toml").write_text(LAYERS.format(wms=demo_wms.url))
    s3 = boto3.client("s3", endpoint_url=moto_server.url, **_credentials())
    s3.create_bucket(Bucket="webp-mixed")
    service = GunicornApp(
        {
            **AWS_ENV,
            "LAYERS_FILE": str(tmp / "layers.toml"),
            "BUCKET_NAME": "webp-mixed",
            "AWS_ENDPOINT_URL": moto_server.url,
            "LOG_LEVEL": "WARNING",
        }
    ).start()
    service.s3 = s3
    yield service
    service.stop()


def _credentials() -> dict[str, str]:
    return {
        "region_name": AWS_ENV["AWS_DEFAULT_REGION"],
        "aws_access_key_id": AWS_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": AWS_ENV["AWS_SECRET_ACCESS_KEY"],
    }


def gdal_window(source: str, out, cwd) -> Image.Image:
    """The 768 x 768 px window over New York at zoom 10 that GDAL reads from `source`."""
    command = ["gdal_translate", "-q", "-of", "PNG", "-srcwin", *map(str, WINDOW)]
    if source.startswith("WMTS:"):
        command += ["-oo", f"ZOOM_LEVEL={Z}"]
    gdal(*command, source, str(out), cwd=cwd)
    with Image.open(out) as image:
        image.load()
        return image


def mean_difference(a: Image.Image, b: Image.Image, opaque: bool = False) -> float:
    """Mean absolute difference per channel value over the pixels `b` shows (alpha > 0),
    or over those where `b` is opaque."""
    mask = b.getchannel("A").point(lambda v: 255 if v == 255 or (v and not opaque) else 0)
    diff = ImageChops.difference(a.convert("RGB"), b.convert("RGB"))
    return sum(ImageStat.Stat(diff, mask).mean) / 3


def check_window(window: Image.Image, reference: Image.Image, lossless: bool) -> None:
    """GDAL's window against the PNG layer's: alpha without loss and the colours within
    JPEG/WebP noise (or exactly). GDAL reads a TMS TileMap as three bands (its TileMap
    reader sets BandsCount 3 whatever the format): then only the opaque pixels count."""
    if window.mode == "RGBA":
        assert window.getchannel("A").tobytes() == reference.getchannel("A").tobytes()
    else:
        assert window.mode == "RGB"
    difference = mean_difference(window, reference, opaque=window.mode == "RGB")
    assert difference == 0 if lossless else 0 < difference < 4, difference


def visible(image: Image.Image) -> Image.Image:
    """The image with every fully transparent pixel set to (0, 0, 0, 0): what lies under
    alpha 0 is invisible, and lossless WebP may store it differently."""
    mask = image.getchannel("A").point(lambda v: 255 if v else 0)
    return Image.composite(image, Image.new("RGBA", image.size), mask)


@pytest.fixture(scope="module")
def reference(app, tmp_path_factory):
    """The PNG layer's window, read by GDAL through the WMTS capabilities."""
    tmp = tmp_path_factory.mktemp("reference")
    url = f"WMTS:{app.url}/wmts/1.0.0/WMTSCapabilities.xml,layer=png"
    window = gdal_window(url, tmp / "png.png", tmp)
    assert window.mode == "RGBA"
    return window


def test_the_window_holds_opaque_and_transparent_tiles(reference):
    alphas = [reference.crop(_box(tile)).getchannel("A").getextrema() for tile in TILES]
    assert any(low == 255 for low, _ in alphas), alphas  # land only
    assert any(low < 255 for low, _ in alphas), alphas  # sea in it


def _box(tile: Tile) -> tuple[int, int, int, int]:
    left = (tile.x - CENTRE.x + 1) * 256
    upper = (tile.y - CENTRE.y + 1) * 256
    return left, upper, left + 256, upper + 256


@pytest.mark.parametrize("document", ["wmts", "tms"])
def test_gdal_reads_webp_tiles(app, reference, tmp_path, document):
    sources = {
        "wmts": lambda layer: f"WMTS:{app.url}/wmts/1.0.0/WMTSCapabilities.xml,layer={layer}",
        # GDAL recognises a TMS TileMap by its first bytes: read it over /vsicurl/.
        "tms": lambda layer: f"/vsicurl/{app.url}/1.0.0/{layer}",
    }
    lossless = gdal_window(sources[document]("lossless"), tmp_path / "lossless.png", tmp_path)
    check_window(lossless, reference, lossless=True)
    lossy = gdal_window(sources[document]("webp"), tmp_path / "webp.png", tmp_path)
    check_window(lossy, reference, lossless=False)


def test_webp_tiles_are_webp_with_their_etag_in_the_response_and_in_s3(app):
    tile = CENTRE
    tms_y = 2**Z - 1 - tile.y
    for layer in ("webp", "lossless"):
        key = f"{layer}/{Z}/{tile.x}/{tms_y}.webp"
        answer = requests.get(f"{app.url}/{key}", timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.headers["Content-Type"] == "image/webp"
        assert sniff(answer.content) == "webp"
        etag = '"' + hashlib.md5(answer.content).hexdigest() + '"'
        assert answer.headers["ETag"] == etag
        again = requests.get(f"{app.url}/{key}", headers={"If-None-Match": etag}, timeout=60)
        assert again.status_code == 304
        stored = _wait_object(app, key)
        assert stored["ContentType"] == "image/webp" and stored["ETag"] == etag
    sizes = {
        layer: len(
            requests.get(f"{app.url}/{layer}/{Z}/{tile.x}/{tms_y}.{ext}", timeout=60).content
        )
        for layer, ext in (("png", "png"), ("webp", "webp"), ("lossless", "webp"))
    }
    assert sizes["webp"] < sizes["lossless"] < sizes["png"], sizes


def _wait_object(app, key: str, timeout: float = 30.0) -> dict:
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            return app.s3.head_object(Bucket="webp-mixed", Key=key)
        except app.s3.exceptions.ClientError:
            assert time.monotonic() < deadline, f"{key} not stored after {timeout} s"
            time.sleep(0.2)


def test_mixed_tiles_are_jpeg_or_png_and_say_so_in_the_response_and_in_s3(app, reference):
    kinds = {}
    for tile in TILES:
        key = f"mixed/{Z}/{tile.x}/{tile.y}.mixed"
        answer = requests.get(f"{app.url}/{key}", timeout=60)
        assert answer.status_code == 200, answer.text
        family = sniff(answer.content)
        kinds[tile] = family
        assert answer.headers["Content-Type"] == f"image/{family}", key
        assert _wait_object(app, key)["ContentType"] == f"image/{family}", key
        decoded = Image.open(io.BytesIO(answer.content)).convert("RGBA")
        want = reference.crop(_box(tile))
        opaque = want.getchannel("A").getextrema()[0] == 255
        # JPEG exactly where the tile is opaque; PNG (without loss) where it is not.
        assert family == ("jpeg" if opaque else "png"), (tile, family)
        if family == "png":
            assert visible(decoded).tobytes() == visible(want).tobytes(), tile
        else:
            assert mean_difference(decoded, want) < 4, tile
    assert set(kinds.values()) == {"jpeg", "png"}, kinds


@pytest.mark.parametrize("document", ["wmts", "tms", "arcgis"])
def test_gdal_reads_mixed_tiles(app, reference, tmp_path, document):
    source = {
        "wmts": f"WMTS:{app.url}/wmts/1.0.0/WMTSCapabilities.xml,layer=mixed",
        "tms": f"/vsicurl/{app.url}/1.0.0/mixed",
        "arcgis": f"{app.url}/arcgis/rest/services/mixed/MapServer?f=json",
    }[document]
    window = gdal_window(source, tmp_path / "mixed.png", tmp_path)
    check_window(window, reference, lossless=False)


def test_the_arcgis_document_of_a_webp_layer_says_why_there_is_none(app):
    answer = requests.get(f"{app.url}/arcgis/rest/services/webp/MapServer?f=json", timeout=30)
    assert answer.status_code == 400
    assert "no webp tile format" in answer.text and answer.text.count("\n") == 1
    # Its tiles still answer at the ArcGIS tile route.
    tile = requests.get(
        f"{app.url}/arcgis/rest/services/webp/MapServer/tile/{Z}/{CENTRE.y}/{CENTRE.x}", timeout=60
    )
    assert tile.status_code == 200 and tile.headers["Content-Type"] == "image/webp"
