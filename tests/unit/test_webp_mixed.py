"""WebP and mixed (JPEG where opaque, PNG where transparent) tiles, without a network:
the formats table, the encoders, the settings, the documents, and the tile path with
the WMS answered by `responses`."""

import doctest
import hashlib
import io
import xml.etree.ElementTree as ET

import boto3
import pytest
import responses
from moto import mock_aws
from PIL import Image, ImageDraw

from s3maptiler.config import ConfigError, Layer, load_settings
from s3maptiler.config.layersfile import load_layers_file
from s3maptiler.documents.arcgis import arcgis_mapserver
from s3maptiler.documents.errors import CannotDescribe
from s3maptiler.documents.tms import tile_map
from s3maptiler.documents.wmts import wmts_capabilities
from s3maptiler.render.encode import Encoder, blank_tile, slice_metatile
from s3maptiler.render.runtime import LayerRuntime
from s3maptiler.storage.stores import S3Store
from s3maptiler.tiles import formats
from s3maptiler.tiles.formats import (
    MIXED_MEDIA_TYPE,
    TILE_FORMATS,
    esri_formats,
    sniff,
    tile_content_type,
)
from s3maptiler.tiles.grids import WEB_MERCATOR, Tile
from s3maptiler.tiles.metatile import metatile_for
from tests.unit.test_tilepath import WMS, make_app, png, wait_all_uploaded, wait_uploaded, wms_calls
from tests.unit.test_tilepath import wms as wms  # noqa: F401 - the fixture

WMTS = "{http://www.opengis.net/wmts/1.0}"
KEY = "tiles/1/0/1"  # the default prefix, TMS numbering: the north-west tile of zoom 1


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def gradient(size=(256, 256)) -> Image.Image:
    """An RGB image with thousands of colours: no encoder can cheat on it."""
    width, height = size
    red = Image.linear_gradient("L").resize(size)
    green = Image.linear_gradient("L").rotate(90).resize(size)
    blue = Image.radial_gradient("L").resize(size)
    assert (width, height) == red.size
    return Image.merge("RGB", (red, green, blue))


def coast(meta) -> Image.Image:
    """An RGBA metatile: land (opaque gradient) in the west half, transparent sea in the
    east half, and one translucent pixel in the land of the first tile."""
    image = gradient((meta.width, meta.height)).convert("RGBA")
    draw = ImageDraw.Draw(image)
    draw.rectangle((meta.width // 2, 0, meta.width, meta.height), fill=(0, 0, 0, 0))
    left, upper, _, _ = meta.crop_box(meta.tiles()[0])
    image.putpixel((left + 10, upper + 10), (10, 20, 30, 128))
    return image


def test_doctests():
    assert doctest.testmod(formats).failed == 0


# --------------------------------------------------------------------------- the table


def test_webp_and_mixed_are_reencoded_from_a_png_getmap():
    webp, mixed = TILE_FORMATS["webp"], TILE_FORMATS["mixed"]
    assert (webp.extension, webp.media_type, webp.wms_format) == ("webp", "image/webp", "image/png")
    assert (mixed.extension, mixed.media_type, mixed.wms_format) == (
        "mixed",
        "image/vnd.jpeg-png",
        "image/png",
    )
    assert webp.reencoded and mixed.reencoded
    assert not any(TILE_FORMATS[name].reencoded for name in ("png", "png8", "jpeg"))
    # ArcGIS has no WebP; MIXED is its own name for JPEG-or-PNG caches.
    assert webp.esri_name is None and mixed.esri_name == "MIXED"
    assert esri_formats(mixed, ["mixed"]) == "PNG32,JPG"
    assert esri_formats(webp, ["webp"]) == ""


def test_the_content_type_of_a_mixed_tile_is_that_of_its_bytes():
    jpeg_tile = Encoder("jpeg").encode(gradient())
    png_tile = png_bytes(gradient())
    mixed = TILE_FORMATS["mixed"]
    assert tile_content_type(mixed, jpeg_tile) == "image/jpeg"
    assert tile_content_type(mixed, png_tile) == "image/png"
    # Every other format names its own type, whatever the bytes.
    assert tile_content_type(TILE_FORMATS["webp"], png_tile) == "image/webp"
    assert tile_content_type(TILE_FORMATS["png"], png_tile) == "image/png"


# --------------------------------------------------------------------------- encoders


def test_lossless_webp_keeps_every_pixel_and_the_transparency():
    meta = metatile_for(WEB_MERCATOR, Tile(5, 5, 4), (2, 2), 16)
    image = coast(meta)
    tiles = slice_metatile(png_bytes(image), meta, Encoder("webp", webp_lossless=True))
    for tile, sliced in tiles.items():
        assert sniff(sliced.data) == "webp"
        got = decode(sliced.data).convert("RGBA")
        want = image.crop(meta.crop_box(tile))
        if want.getchannel("A").getextrema() == (0, 0):
            assert sliced.uniform and got.getchannel("A").getextrema() == (0, 0)
        else:
            assert got.tobytes() == want.tobytes(), tile


def test_lossy_webp_trades_quality_for_bytes_and_keeps_alpha_exact():
    meta = metatile_for(WEB_MERCATOR, Tile(5, 5, 4), (2, 2), 16)
    image = coast(meta)
    first = meta.tiles()[0]  # land, with one translucent pixel
    want = image.crop(meta.crop_box(first))
    sizes = {}
    for quality in (50, 90):
        encoder = Encoder("webp", webp_quality=quality)
        data = slice_metatile(png_bytes(image), meta, encoder)[first].data
        assert sniff(data) == "webp"
        got = decode(data).convert("RGBA")
        sizes[quality] = len(data)
        # Lossy colours, close to the original; the alpha band is stored without loss.
        diff = [abs(a - b) for a, b in zip(got.tobytes(), want.tobytes(), strict=True)]
        assert sum(diff) / len(diff) < 6
        assert got.getchannel("A").tobytes() == want.getchannel("A").tobytes()
    assert sizes[50] < sizes[90]
    lossless = Encoder("webp", webp_lossless=True).encode(want)
    assert sizes[90] < len(lossless)


def test_mixed_tiles_are_jpeg_where_opaque_and_png_where_not():
    meta = metatile_for(WEB_MERCATOR, Tile(4, 4, 4), (4, 1), 32)
    image = coast(meta)
    tiles = slice_metatile(png_bytes(image), meta, Encoder("mixed", jpeg_quality=85))
    west, west_middle, east_middle, east = meta.tiles()
    kinds = {tile: sniff(sliced.data) for tile, sliced in tiles.items()}
    # The first tile is land with one translucent pixel: PNG, to keep that pixel.
    assert kinds == {west: "png", west_middle: "jpeg", east_middle: "png", east: "png"}
    assert decode(tiles[west].data).tobytes() == image.crop(meta.crop_box(west)).tobytes()
    assert decode(tiles[west_middle].data).mode == "RGB"
    # The sea tile is the canonical transparent blank, a PNG.
    assert tiles[east].uniform and decode(tiles[east].data).getchannel("A").getextrema() == (0, 0)
    # A uniform opaque tile is a JPEG, like any opaque one.
    opaque = Image.new("RGBA", (meta.width, meta.height), (90, 140, 200, 255))
    uniform = slice_metatile(png_bytes(opaque), meta, Encoder("mixed"))
    assert {sniff(sliced.data) for sliced in uniform.values()} == {"jpeg"}


def test_blank_tiles_match_their_format():
    assert sniff(blank_tile("image/webp", 256)) == "webp"
    assert sniff(blank_tile(MIXED_MEDIA_TYPE, 256)) == "png"  # transparent: PNG
    assert decode(blank_tile("image/webp", 256)).getchannel("A").getextrema() == (0, 0)


# --------------------------------------------------------------------------- settings


def write_layers(tmp_path, body: str):
    path = tmp_path / "layers.toml"
    path.write_text('wms_url = "http://wms.test/mapserv"\nwms_layers = "roads"\n' + body)
    return path


def test_layers_file_webp_and_mixed_layers(tmp_path):
    path = write_layers(
        tmp_path,
        '[layers.photo]\nformat = "webp"\nwebp_quality = 70\n'
        '[layers.exact]\nformat = "webp"\nwebp_lossless = true\n'
        '[layers.coast]\nformat = "mixed"\ntransparent = true\njpeg_quality = 85\n',
    )
    photo, exact, coast_layer = load_layers_file(path)
    assert (photo.formats, photo.extension, photo.webp_quality) == (("webp",), "webp", 70)
    assert exact.webp_lossless is True and photo.webp_lossless is False
    assert (coast_layer.formats, coast_layer.extension) == (("mixed",), "mixed")


@pytest.mark.parametrize(
    "body, key",
    [
        ('format = "webp"\nwebp_quality = 101\n', "webp_quality"),
        ('format = "webp"\nwebp_quality = "high"\n', "webp_quality"),
        ('format = "webp"\nwebp_lossless = "yes"\n', "webp_lossless"),
        ('format = "avif"\n', "format"),
    ],
)
def test_layers_file_bad_webp_values_name_file_layer_and_key(tmp_path, body, key):
    path = write_layers(tmp_path, "[layers.photo]\n" + body)
    with pytest.raises(ConfigError) as caught:
        load_layers_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: layer photo: key '{key}'"), message
    assert "\n" not in message


def test_environment_webp_and_mixed(tmp_path):
    base = {"WMS_SERVER": WMS, "MAP_LAYERS": "roads"}
    layer = load_settings({**base, "TILE_FORMATS": "webp,png"}, dotenv_path=None).layers[0]
    assert (layer.format, layer.formats, layer.webp_quality) == ("webp", ("webp", "png"), 80)
    env = {**base, "TILE_FORMATS": "mixed", "WEBP_QUALITY": "60", "WEBP_LOSSLESS": "true"}
    layer = load_settings(env, dotenv_path=None).layers[0]
    assert (layer.format, layer.webp_quality, layer.webp_lossless) == ("mixed", 60, True)
    for name, value in (("WEBP_QUALITY", "101"), ("WEBP_LOSSLESS", "maybe")):
        with pytest.raises(ConfigError) as caught:
            load_settings({**base, name: value}, dotenv_path=None)
        assert str(caught.value).startswith(f"{name}:")


# --------------------------------------------------------------------------- documents


def make_layer(name="photo", **fields) -> Layer:
    fields.setdefault("prefix", f"{name}/")
    return Layer(name=name, wms_url="http://127.0.0.1:1/wms", wms_layers="all", **fields)


def test_documents_advertise_webp():
    layer = make_layer(format="webp", formats=("webp",), layout="xyz")
    root = ET.fromstring(wmts_capabilities([layer], "https://t.example").encode())
    entry = root.find(f"{WMTS}Contents/{WMTS}Layer")
    assert entry.findtext(f"{WMTS}Format") == "image/webp"
    url = entry.find(f"{WMTS}ResourceURL")
    assert url.get("format") == "image/webp" and url.get("template").endswith("{TileCol}.webp")
    keys = ET.fromstring(wmts_capabilities([layer], "https://b.example", "keys").encode())
    assert keys.find(f"{WMTS}Contents/{WMTS}Layer/{WMTS}ResourceURL").get("template") == (
        "https://b.example/photo/{TileMatrix}/{TileCol}/{TileRow}.webp"
    )
    tms = ET.fromstring(tile_map(make_layer(format="webp", formats=("webp",)), "https://t.e"))
    assert tms.find("TileFormat").get("mime-type") == "image/webp"
    assert tms.find("TileFormat").get("extension") == "webp"
    # ArcGIS caches have no WebP format: no MapServer JSON rather than a wrong one.
    with pytest.raises(CannotDescribe, match="no webp tile format"):
        arcgis_mapserver(layer)


def test_documents_advertise_mixed():
    layer = make_layer("coast", format="mixed", formats=("mixed",), jpeg_quality=85)
    root = ET.fromstring(wmts_capabilities([layer], "https://t.example").encode())
    entry = root.find(f"{WMTS}Contents/{WMTS}Layer")
    assert entry.findtext(f"{WMTS}Format") == "image/vnd.jpeg-png"
    assert entry.find(f"{WMTS}ResourceURL").get("template").endswith("{TileCol}.mixed")
    tms = ET.fromstring(tile_map(layer, "https://t.e"))
    assert tms.find("TileFormat").get("extension") == "mixed"
    assert tms.find("TileFormat").get("mime-type") == "image/vnd.jpeg-png"
    info = arcgis_mapserver(layer)["tileInfo"]
    assert (info["format"], info["compressionQuality"]) == ("MIXED", 85)


# --------------------------------------------------------------------------- tile path


def rgba_png(size=256) -> bytes:
    """A GetMap answer: an opaque gradient whose east half is transparent."""
    image = gradient((size, size)).convert("RGBA")
    ImageDraw.Draw(image).rectangle((size // 2, 0, size, size), fill=(0, 0, 0, 0))
    return png_bytes(image)


def test_a_webp_tile_drawn_alone_is_reencoded_not_passed_through(tmp_path, wms):  # noqa: F811
    wms.get(WMS, body=rgba_png(), content_type="image/png")
    app, service = make_app(tmp_path, TILE_FORMATS="webp", WMS_TRANSPARENT="true")
    client = app.test_client()
    answer = client.get("/" + KEY + ".webp")
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "image/webp"
    assert sniff(answer.data) == "webp"
    etag = '"' + hashlib.md5(answer.data).hexdigest() + '"'
    assert answer.headers["ETag"] == etag
    assert client.get("/" + KEY + ".webp", headers={"If-None-Match": etag}).status_code == 304
    # The WMS was asked for PNG: few WMS servers write WebP.
    (call,) = wms_calls(wms)
    assert "FORMAT=image/png&" in call.request.url
    assert client.get("/" + KEY + ".png").status_code == 404  # not served
    wait_uploaded(service, KEY + ".webp")
    stored = tmp_path / "tiles" / (KEY + ".webp")
    assert stored.read_bytes() == answer.data


BUCKET = "tiles"


def test_mixed_tiles_carry_the_content_type_of_their_bytes_in_s3(tmp_path):
    # One 2x1 metatile: its west tile opaque, its east tile transparent.
    with mock_aws(), responses.RequestsMock() as wms_mock:
        wms_mock.get(WMS, body=_two_tiles(), content_type="image/png")
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        app, service = make_app(
            tmp_path,
            store=S3Store(BUCKET, client),
            TILE_FORMATS="mixed",
            WMS_TRANSPARENT="true",
            METATILE="2x1",
        )
        http = app.test_client()
        west = http.get("/tiles/1/0/1.mixed")
        east = http.get("/tiles/1/1/1.mixed")
        assert west.headers["Content-Type"] == "image/jpeg" and sniff(west.data) == "jpeg"
        assert east.headers["Content-Type"] == "image/png" and sniff(east.data) == "png"
        assert len(wms_calls(wms_mock)) == 1  # one GetMap for both
        wait_all_uploaded(service, 2)
        for key, data, media in (
            ("tiles/1/0/1.mixed", west.data, "image/jpeg"),
            ("tiles/1/1/1.mixed", east.data, "image/png"),
        ):
            assert client.head_object(Bucket=BUCKET, Key=key)["ContentType"] == media, key
            assert client.get_object(Bucket=BUCKET, Key=key)["Body"].read() == data
        # From the bucket (once this host's own render is no longer fresh in its
        # spool): the same bytes and the same type.
        service.spool.ttl = 0
        again = http.get("/tiles/1/1/1.mixed")
        assert again.headers["X-Tile-Source"] == "cache"
        assert again.headers["Content-Type"] == "image/png" and again.data == east.data
        # WMTS KVP asks by the media type the capabilities advertise.
        kvp = http.get(
            "/wmts?SERVICE=WMTS&REQUEST=GetTile&LAYER=default&STYLE=default"
            "&TILEMATRIXSET=GoogleMapsCompatible&TILEMATRIX=1&TILEROW=0&TILECOL=0"
            "&FORMAT=image/vnd.jpeg-png"
        )
        assert kvp.status_code == 200 and kvp.data == west.data


def _two_tiles() -> bytes:
    """The GetMap answer of the 2x1 metatile of zoom 1's top row: 512 x 256 px, the
    west tile opaque, the east tile transparent."""
    image = Image.new("RGBA", (512, 256), (0, 0, 0, 0))
    image.paste(gradient((256, 256)).convert("RGBA"), (0, 0))
    return png_bytes(image)


def test_png_layers_still_pass_a_1x1_getmap_through(tmp_path, wms):  # noqa: F811
    wms.get(WMS, body=png(), content_type="image/png")
    app, _ = make_app(tmp_path)
    assert app.test_client().get("/" + KEY + ".png").data == png()


def test_seeded_mixed_tiles_are_stored_with_the_content_type_of_their_bytes():
    from s3maptiler.seeding import coverage, plan, run
    from tests.unit.test_seed import NYC, FakeWMS
    from tests.unit.test_seed import make_layer as make_seed_layer

    layer = make_seed_layer(name="coast", prefix="coast/", format="mixed", formats=("mixed",))
    runtime = LayerRuntime.build(layer)
    planned = list(plan.plan_jobs(runtime, coverage.Coverage.from_bbox(NYC), [12]))
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        store = S3Store(BUCKET, client)
        # The fake WMS draws opaque red: every tile is a JPEG, under a .mixed key.
        report = run.run_seed({"coast": runtime}, planned, FakeWMS(), store, run.SeedOptions(1))
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET)["Contents"]]
        assert len(keys) == report.done > 0
        for key in keys:
            assert key.startswith("coast/") and key.endswith(".mixed")
            assert client.head_object(Bucket=BUCKET, Key=key)["ContentType"] == "image/jpeg"
