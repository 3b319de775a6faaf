"""The tile path (service/tilepath.py) through the app's routes: cache read, render, upload,
single flight, errors; the WMS answered by `responses`."""

import io
import threading
import time
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import responses
from moto import mock_aws
from PIL import Image

from s3maptiler.config import load_settings
from s3maptiler.http.app import create_app
from s3maptiler.service.build import build_service
from s3maptiler.storage.s3 import StoreError
from s3maptiler.storage.stores import LocalStore, S3Store, StoredTile

WMS = "http://wms.test/mapserv"


def png(colour=(200, 30, 30), size=256) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(out, "PNG")
    return out.getvalue()


def jpeg(size=256) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), (10, 120, 10)).save(out, "JPEG")
    return out.getvalue()


def make_app(tmp_path, store=None, **env):
    settings = load_settings(
        {
            "WMS_SERVER": WMS,
            "MAP_LAYERS": "roads",
            "LOCAL_CACHE_DIR": str(tmp_path / "tiles"),
            # A spool of its own: renders published by an earlier test must not answer this one.
            "SPOOL_DIR": str(tmp_path / "spool"),
            "WMS_RETRIES": "0",
            # One GetMap per tile unless a test asks for metatiles: WMS calls map to tiles.
            "METATILE": "1x1",
            "META_BUFFER": "0",
            **env,
        },
        dotenv_path=None,
    )
    service = build_service(settings, store=store)
    app = create_app(settings, service)
    return app, service


def wait_uploaded(service, key, timeout=5.0):
    deadline = time.monotonic() + timeout
    while service.uploads.pending(key) is not None:
        assert time.monotonic() < deadline, "upload did not finish"
        time.sleep(0.01)


def wait_all_uploaded(service, submitted, timeout=5.0):
    """Wait until `submitted` uploads were queued (the background pool queues after the answer)
    and none is pending."""
    deadline = time.monotonic() + timeout
    while (stats := service.uploads.stats())["pending"] or stats["submitted"] < submitted:
        assert time.monotonic() < deadline, "uploads did not finish"
        time.sleep(0.01)


@pytest.fixture
def wms():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def wms_calls(mock) -> list:
    return [c for c in mock.calls if c.request.url.startswith(WMS)]


def test_heartbeat_makes_no_upstream_call(tmp_path, wms):
    app, _ = make_app(tmp_path)
    answer = app.test_client().get("/heartbeat")
    assert answer.status_code == 200
    assert answer.text.startswith("ok")
    assert app.test_client().head("/heartbeat").status_code == 200
    assert wms_calls(wms) == []


def test_render_then_store_then_hit(tmp_path, wms):
    wms.get(WMS, body=png(), content_type="image/png")
    app, service = make_app(tmp_path)
    client = app.test_client()
    first = client.get("/tiles/1/0/1.png")
    assert first.status_code == 200
    assert first.headers["X-Tile-Source"] == "render"
    assert first.headers["Cache-Control"] == "public, max-age=86400"
    wait_uploaded(service, "tiles/1/0/1.png")
    assert (tmp_path / "tiles/tiles/1/0/1.png").read_bytes() == first.data
    second = client.get("/tiles/1/0/1.png")
    assert second.headers["X-Tile-Source"] == "cache"
    assert second.headers["ETag"] == first.headers["ETag"]
    assert len(wms_calls(wms)) == 1
    # TMS y=1 at z1 is the top row: the northern half of the western hemisphere.
    query = parse_qs(urlsplit(wms_calls(wms)[0].request.url).query, keep_blank_values=True)
    assert query["BBOX"] == ["-20037508.342789244,0,0,20037508.342789244"]
    assert query["STYLES"] == [""]


def test_known_miss_skips_the_store_read(tmp_path, wms):
    wms.get(WMS, body=png((0, 0, 255)), content_type="image/png")
    store = LocalStore(tmp_path / "tiles")
    store.put("tiles/2/1/1.png", png((0, 255, 0)), "image/png", None)
    app, _ = make_app(tmp_path, store=store)
    client = app.test_client()
    assert client.get("/tiles/2/1/1.png").headers["X-Tile-Source"] == "cache"
    assert wms_calls(wms) == []
    for url in ("/miss/tiles/2/1/1.png", "/?tile=tiles/2/1/1.png"):
        answer = client.get(url)
        assert answer.headers["X-Tile-Source"] in ("render", "inflight")
    assert len(wms_calls(wms)) >= 1


def test_jpeg_tiles_ask_the_wms_for_jpeg(tmp_path, wms):
    wms.get(WMS, body=jpeg(), content_type="image/jpeg")
    app, _ = make_app(tmp_path)
    answer = app.test_client().get("/tiles/3/4/2.jpg")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "image/jpeg"
    query = parse_qs(urlsplit(wms_calls(wms)[0].request.url).query)
    assert query["FORMAT"] == ["image/jpeg"]


def test_wms_exception_is_502_and_nothing_is_stored(tmp_path, wms):
    report = (
        '<?xml version="1.0"?><ServiceExceptionReport version="1.1.1">'
        '<ServiceException code="LayerNotDefined">msWMSLoadGetMapParams(): Invalid layer(s) '
        "given in the LAYERS parameter. A layer might be disabled.</ServiceException>"
        "</ServiceExceptionReport>"
    )
    wms.get(WMS, body=report, content_type="application/vnd.ogc.se_xml")
    app, service = make_app(tmp_path)
    answer = app.test_client().get("/tiles/3/4/2.png")
    assert answer.status_code == 502
    assert "Invalid layer(s)" in answer.text
    assert answer.headers["Cache-Control"] == "no-store"
    assert service.uploads.stats()["submitted"] == 0
    assert not (tmp_path / "tiles").exists() or not any((tmp_path / "tiles").rglob("*.png"))


def test_wms_timeout_is_504(tmp_path):
    import requests

    with responses.RequestsMock() as mock:
        mock.get(WMS, body=requests.exceptions.ReadTimeout("read timed out"))
        app, service = make_app(tmp_path)
        answer = app.test_client().get("/tiles/3/4/2.png")
    assert answer.status_code == 504
    assert service.uploads.stats()["submitted"] == 0


def test_concurrent_requests_for_one_tile_make_one_wms_call(tmp_path, wms):
    release = threading.Event()

    def slow_png(request):
        release.wait(5)
        return 200, {"Content-Type": "image/png"}, png()

    wms.add_callback(responses.GET, WMS, callback=slow_png)
    app, _ = make_app(tmp_path, CACHE_READ="false")
    sources: list[str] = []

    def fetch():
        answer = app.test_client().get("/tiles/5/3/4.png")
        sources.append(f"{answer.status_code} {answer.headers.get('X-Tile-Source')}")

    threads = [threading.Thread(target=fetch) for _ in range(16)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    release.set()
    for thread in threads:
        thread.join(10)
    assert len(wms_calls(wms)) == 1
    assert sorted(sources) == ["200 inflight"] * 15 + ["200 render"]


def test_store_read_failure_still_serves_the_tile(tmp_path, wms):
    class BrokenReads(LocalStore):
        def get(self, key: str) -> StoredTile | None:
            raise StoreError("S3 is having a bad minute", retryable=True)

    wms.get(WMS, body=png(), content_type="image/png")
    app, _ = make_app(tmp_path, store=BrokenReads(tmp_path / "tiles"))
    answer = app.test_client().get("/tiles/3/4/2.png")
    assert answer.status_code == 200
    assert answer.headers["X-Tile-Source"] == "render"


def test_s3_store_object_has_type_and_cache_control(tmp_path):
    # moto first: its own `responses` patch must sit under the WMS mock, not over it.
    with mock_aws(), responses.RequestsMock() as wms:
        wms.get(WMS, body=png(), content_type="image/png")
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="tiles-unit")
        app, service = make_app(
            tmp_path, store=S3Store("tiles-unit", s3), CACHE_CONTROL="public, max-age=60"
        )
        assert app.test_client().get("/tiles/4/3/9.png").status_code == 200
        wait_uploaded(service, "tiles/4/3/9.png")
        head = s3.head_object(Bucket="tiles-unit", Key="tiles/4/3/9.png")
    assert head["ContentType"] == "image/png"
    assert head["CacheControl"] == "public, max-age=60"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/tiles/3/8/1.png", 404),
        ("/tiles/x/1/1.png", 400),
        ("/tiles/3/1/1.webp", 404),
        ("/elsewhere/3/1/1.png", 404),
        ("/tiles/23/1/1.png", 404),
        ("/?tile=tiles/3/1", 400),
    ],
)
def test_bad_addresses_make_no_wms_call(tmp_path, wms, path, status):
    app, service = make_app(tmp_path)
    answer = app.test_client().get(path)
    assert answer.status_code == status
    assert answer.text.count("\n") == 1
    assert wms_calls(wms) == []
    assert service.uploads.stats()["submitted"] == 0


@pytest.mark.parametrize(
    "url",
    [
        "/tiles/1/0/1.png",
        "/1.0.0/default/1/0/1.png",
        "/wmts/1.0.0/default/default/GoogleMapsCompatible/1/0/0.png",
        "/wmts?SERVICE=WMTS&REQUEST=GetTile&VERSION=1.0.0&LAYER=default&STYLE=default"
        "&FORMAT=image/png&TILEMATRIXSET=GoogleMapsCompatible&TILEMATRIX=1&TILEROW=0&TILECOL=0",
        "/wmts?service=wmts&request=GetTile&layer=default&style=default&format=image/png"
        "&tilematrixset=GoogleMapsCompatible&tilematrix=1&tilerow=0&tilecol=0",
        "/arcgis/rest/services/default/MapServer/tile/1/0/0",
    ],
)
def test_fixed_routes_read_and_fill_the_layers_own_key(tmp_path, wms, url):
    wms.get(WMS, body=png(), content_type="image/png")
    app, service = make_app(tmp_path)
    answer = app.test_client().get(url)
    assert answer.status_code == 200, answer.text
    wait_uploaded(service, "tiles/1/0/1.png")
    # The top-left tile at zoom 1 is TMS row 1: one object, under the layer's TMS key.
    assert [
        p.relative_to(tmp_path / "tiles").as_posix() for p in (tmp_path / "tiles").rglob("*.png")
    ] == ["tiles/1/0/1.png"]


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("/1.0.0/nope/1/0/1.png", 404),
        ("/1.0.0/default/1/0/2.png", 404),
        ("/1.0.0/default/1/0/x.png", 400),
        ("/wmts/1.0.0/default/default/WorldCRS84Quad/1/0/0.png", 404),
        ("/wmts?SERVICE=WMTS&REQUEST=GetTile&LAYER=default", 400),
        (
            "/wmts?SERVICE=WMTS&REQUEST=GetTile&LAYER=default&STYLE=default&FORMAT=image/gif"
            "&TILEMATRIXSET=GoogleMapsCompatible&TILEMATRIX=1&TILEROW=0&TILECOL=0",
            404,
        ),
        ("/wmts?SERVICE=WMS&REQUEST=GetMap", 400),
        ("/arcgis/rest/services/default/MapServer/tile/1/0/2", 404),
        ("/arcgis/rest/services/default/MapServer/tile/1/0/-1", 400),
    ],
)
def test_fixed_routes_reject_bad_addresses_without_upstream_calls(tmp_path, wms, url, status):
    app, service = make_app(tmp_path)
    answer = app.test_client().get(url)
    assert answer.status_code == status, answer.text
    assert wms_calls(wms) == []
    assert service.uploads.stats()["submitted"] == 0


def test_outside_the_extent_is_blank_or_404_by_setting(tmp_path, wms):
    wms.get(WMS, body=png(), content_type="image/png")
    layers = tmp_path / "layers.toml"
    layers.write_text(f"""
wms_url = "{WMS}"
wms_layers = "x"
metatile = "1x1"
meta_buffer = 0
extent = [-74.3, 40.45, -73.65, 40.95]
[layers.blank]
outside_extent = "blank"
[layers.hidden]
outside_extent = "404"
""")
    app, service = make_app(tmp_path, LAYERS_FILE=str(layers))
    client = app.test_client()
    # Zoom 10: New York is in column 301, TMS row 639 (XYZ row 384); column 10 is not.
    inside = client.get("/1.0.0/blank/10/301/639.png")
    assert inside.headers["X-Tile-Source"] == "render"
    blank = client.get("/blank/10/10/639.png")
    assert blank.status_code == 200
    assert blank.headers["X-Tile-Source"] == "blank"
    assert Image.open(io.BytesIO(blank.data)).getextrema()[3] == (0, 0)  # fully transparent
    wait_uploaded(service, "blank/10/10/639.png")
    assert (tmp_path / "tiles/blank/10/10/639.png").exists()
    assert client.get("/hidden/10/10/639.png").status_code == 404
    assert len(wms_calls(wms)) == 1


def test_documents_are_served_with_their_content_types(tmp_path, wms):
    app, _ = make_app(tmp_path, SERVICE_URL="https://tiles.example.com/")
    client = app.test_client()
    tms = client.get("/1.0.0/")
    assert tms.status_code == 200 and tms.content_type.startswith("text/xml")
    assert 'href="https://tiles.example.com/1.0.0/default"' in tms.text
    assert client.get("/1.0.0/default/").status_code == 200
    assert client.get("/1.0.0/default").status_code == 200
    assert client.get("/1.0.0/nope/").status_code == 404
    for url in (
        "/wmts/1.0.0/WMTSCapabilities.xml",
        "/wmts?SERVICE=WMTS&REQUEST=GetCapabilities&VERSION=1.0.0",
    ):
        wmts = client.get(url)
        assert wmts.status_code == 200 and wmts.content_type.startswith("application/xml")
        assert "https://tiles.example.com/wmts/1.0.0/default/{Style}" in wmts.text
    plain = client.get("/arcgis/rest/services/default/MapServer?f=json")
    assert plain.content_type == "application/json"
    assert plain.headers["Access-Control-Allow-Origin"] == "*"
    assert plain.json["tileInfo"]["lods"][0]["level"] == 0
    pretty = client.get("/arcgis/rest/services/default/MapServer?f=json&pretty=true")
    assert pretty.json == plain.json and "\n" in pretty.text
    jsonp = client.get("/arcgis/rest/services/default/MapServer?f=json&callback=cb.x")
    assert jsonp.content_type.startswith("application/javascript")
    assert jsonp.text.startswith("/**/cb.x(")
    assert jsonp.headers["Access-Control-Allow-Origin"] == "*"
    evil = client.get("/arcgis/rest/services/default/MapServer?f=json&callback=alert(1)")
    assert evil.status_code == 400
    assert wms_calls(wms) == []


def quadrants(size=512) -> bytes:
    """A metatile image whose four 256 px tiles are red, green, blue and yellow."""
    image = Image.new("RGB", (size, size))
    half = size // 2
    for (x, y), colour in {
        (0, 0): (255, 0, 0),
        (1, 0): (0, 255, 0),
        (0, 1): (0, 0, 255),
        (1, 1): (255, 255, 0),
    }.items():
        image.paste(colour, (x * half, y * half, (x + 1) * half, (y + 1) * half))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def test_a_metatile_is_one_getmap_sliced_into_stored_tiles(tmp_path, wms):
    wms.get(WMS, body=quadrants(), content_type="image/png")
    app, service = make_app(tmp_path, METATILE="2x2")
    client = app.test_client()
    # TMS z1: (0,1) top-left red, (1,1) top-right green, (0,0) bottom-left blue.
    first = client.get("/tiles/1/1/1.png")
    assert first.headers["X-Tile-Source"] == "render"
    assert Image.open(io.BytesIO(first.data)).convert("RGB").getcolors() == [(65536, (0, 255, 0))]
    query = parse_qs(urlsplit(wms_calls(wms)[0].request.url).query)
    assert query["WIDTH"] == ["512"] and query["HEIGHT"] == ["512"]
    assert query["BBOX"] == [
        "-20037508.342789244,-20037508.342789244,20037508.342789244,20037508.342789244"
    ]
    expected = {"0/1": (255, 0, 0), "1/1": (0, 255, 0), "0/0": (0, 0, 255), "1/0": (255, 255, 0)}
    for xy, colour in expected.items():
        deadline = time.monotonic() + 5  # the other tiles are encoded in the background
        while not (tmp_path / f"tiles/tiles/1/{xy}.png").exists():
            assert time.monotonic() < deadline, xy
            time.sleep(0.01)
        wait_uploaded(service, f"tiles/1/{xy}.png")
        stored = Image.open(tmp_path / f"tiles/tiles/1/{xy}.png").convert("RGB")
        assert stored.getcolors() == [(65536, colour)], xy
        assert client.get(f"/tiles/1/{xy}.png").headers["X-Tile-Source"] in ("cache", "inflight")
    assert len(wms_calls(wms)) == 1


def test_a_metatile_of_the_wrong_size_is_a_502(tmp_path, wms):
    wms.get(WMS, body=png(size=256), content_type="image/png")
    app, service = make_app(tmp_path, METATILE="2x2")
    answer = app.test_client().get("/tiles/1/1/1.png")
    assert answer.status_code == 502
    assert service.uploads.stats()["submitted"] == 0


def test_empty_tiles_can_redirect_to_one_shared_blank(tmp_path):
    sea = io.BytesIO()
    Image.new("RGB", (512, 512), (170, 211, 223)).save(sea, "PNG")
    with mock_aws(), responses.RequestsMock() as wms:
        wms.get(WMS, body=sea.getvalue(), content_type="image/png")
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="tiles-unit")
        app, service = make_app(
            tmp_path, store=S3Store("tiles-unit", s3), METATILE="2x2", EMPTY_TILES="redirect"
        )
        client = app.test_client()
        first = client.get("/tiles/2/0/0.png")
        assert first.status_code == 200
        wait_all_uploaded(service, 5)  # the shared blank and the four tiles
        blanks = [
            o["Key"]
            for o in s3.list_objects_v2(Bucket="tiles-unit", Prefix="tiles/_blank/")["Contents"]
        ]
        assert len(blanks) == 1
        # The requested tile was queued before the shared blank was known to be stored,
        # so it is stored whole: a pointer never points at an object that is not there.
        head = s3.head_object(Bucket="tiles-unit", Key="tiles/2/0/0.png")
        assert head["ContentLength"] == len(first.data)
        assert "WebsiteRedirectLocation" not in head

        second = client.get("/tiles/2/2/0.png")  # another metatile of the same sea
        assert second.data == first.data
        second_block = [f"tiles/2/{xy}.png" for xy in ("2/0", "2/1", "3/0", "3/1")]
        wait_all_uploaded(service, 9)
        for key in second_block:
            head = s3.head_object(Bucket="tiles-unit", Key=key)
            assert head["ContentLength"] == 0
            assert head["WebsiteRedirectLocation"] == "/" + blanks[0]
        assert s3.head_object(Bucket="tiles-unit", Key=blanks[0])["ContentLength"] == len(
            first.data
        )
        # Read back through the service: the pointer is followed to the blank's bytes
        # (once the host's own render of that metatile is no longer fresh in its spool).
        service.spool.ttl = 0
        again = client.get("/tiles/2/3/1.png")
        assert again.headers["X-Tile-Source"] == "cache"
        assert again.data == first.data
        assert len(wms_calls(wms)) == 2


# --- TILE_FORMATS without png -----------------------------------------------------------


@pytest.mark.parametrize(
    ("formats", "ext"), [("jpg", "jpg"), ("jpeg,png", "jpeg"), ("jpg,jpeg", "jpg")]
)
def test_the_first_tile_format_is_the_layers_own_everywhere(tmp_path, wms, formats, ext):
    """TILE_FORMATS without png: the ArcGIS route, the TMS, WMTS and ArcGIS documents
    and seeding all use the first format served, and every advertised URL answers."""
    import xml.etree.ElementTree as ET

    from s3maptiler.seeding import coverage as s_coverage
    from s3maptiler.seeding import plan as s_plan

    wms.get(WMS, body=jpeg(), content_type="image/jpeg")
    app, service = make_app(tmp_path, TILE_FORMATS=formats)
    client = app.test_client()
    (layer,) = service.settings.layers
    assert (layer.tile_format.media_type, layer.extension) == ("image/jpeg", ext)
    assert "png" not in layer.extension

    arcgis = client.get("/arcgis/rest/services/default/MapServer/tile/3/2/4")
    assert arcgis.status_code == 200, arcgis.text
    assert arcgis.headers["Content-Type"] == "image/jpeg"
    wait_uploaded(service, f"tiles/3/4/5.{ext}")
    assert (tmp_path / f"tiles/tiles/3/4/5.{ext}").is_file()

    tile_map = ET.fromstring(client.get("/1.0.0/default/").data)
    tile_format = tile_map.find("TileFormat")
    assert tile_format.get("extension") == ext
    assert tile_format.get("mime-type") == "image/jpeg"
    href = tile_map.find("TileSets/TileSet[@order='3']").get("href")
    answer = client.get(urlsplit(f"{href}/1/1.{ext}").path)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "image/jpeg"

    ns = {"w": "http://www.opengis.net/wmts/1.0"}
    caps = ET.fromstring(client.get("/wmts/1.0.0/WMTSCapabilities.xml").data)
    formats_advertised = [f.text for f in caps.iterfind(".//w:Layer/w:Format", ns)]
    assert formats_advertised == ["image/jpeg"]
    template = caps.find(".//w:Layer/w:ResourceURL", ns).get("template")
    assert template.endswith(f".{ext}")
    url = (
        template.replace("{Style}", "default")
        .replace("{TileMatrixSet}", "GoogleMapsCompatible")
        .replace("{TileMatrix}", "3")
        .replace("{TileRow}", "1")
        .replace("{TileCol}", "1")
    )
    answer = client.get(urlsplit(url).path)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "image/jpeg"

    doc = client.get("/arcgis/rest/services/default/MapServer?f=json").json
    assert doc["tileInfo"]["format"] == "JPEG"
    expected = "JPG,PNG32" if "png" in formats else "JPG"
    assert doc["supportedImageFormatTypes"] == expected

    runtime = service.addresses.runtimes["default"]
    jobs_ = list(
        s_plan.plan_jobs(runtime, s_coverage.Coverage.from_bbox((-74.0, 40.7, -73.9, 40.8)), [5])
    )
    assert jobs_ and {job.ext for job in jobs_} == {ext}

    # The preview asks for the same extension.
    from s3maptiler.http import preview

    addresses = preview.tile_addresses(layer, runtime.grid)
    assert {a.ext for a in addresses} == {ext, ""}


def test_png_first_keeps_png_documents(tmp_path, wms):
    app, service = make_app(tmp_path, TILE_FORMATS="png,jpg")
    (layer,) = service.settings.layers
    assert (layer.format, layer.extension) == ("png", "png")
    doc = app.test_client().get("/arcgis/rest/services/default/MapServer?f=json").json
    assert doc["tileInfo"]["format"] == "PNG32"
    assert doc["supportedImageFormatTypes"] == "PNG32,JPG"


# --- ArcGIS REST keys arriving through the redirect ------------------------------------


@pytest.mark.parametrize("form", ["tile-query", "miss-prefix"])
@pytest.mark.parametrize(("metatile", "empty_tiles"), [("1x1", "store"), ("2x2", "redirect")])
def test_a_redirected_arcgis_key_renders_and_is_stored_under_that_key(
    tmp_path, wms, form, metatile, empty_tiles
):
    wms.get(WMS, body=png(size=512 if metatile == "2x2" else 256), content_type="image/png")
    app, service = make_app(tmp_path, METATILE=metatile, EMPTY_TILES=empty_tiles)
    key = "arcgis/rest/services/default/MapServer/tile/3/2/4"
    url = f"/?tile={key}" if form == "tile-query" else f"/miss/{key}"
    answer = app.test_client().get(url)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "image/png"
    assert answer.headers["X-Tile-Source"] == "render"
    service.drain(5)
    stored = service.store.get(key)
    assert stored is not None and stored.data == answer.data
    assert len(wms_calls(wms)) == 1


# --- keys before fixed routes; route-shaped keys through the redirect --------------------

PROTOTYPE_PREFIX = "1.0.0/tms-mercator-naip/"


@pytest.mark.parametrize("name", [None, "aerial"])
@pytest.mark.parametrize("form", ["path", "tile-query", "miss-prefix"])
def test_a_layer_key_wins_over_the_fixed_tms_route(tmp_path, wms, form, name):
    """Named after the prefix, the TMS route and the key agree anyway; named otherwise
    (LAYER_NAME=aerial), the path is still the key, never 'no layer named ...'."""
    wms.get(WMS, body=png(), content_type="image/png")
    env = {"TILE_PREFIX": PROTOTYPE_PREFIX, **({"LAYER_NAME": name} if name else {})}
    app, service = make_app(tmp_path, **env)
    client = app.test_client()
    key = f"{PROTOTYPE_PREFIX}3/4/5.png"
    url = {"path": f"/{key}", "tile-query": f"/?tile={key}", "miss-prefix": f"/miss/{key}"}
    first = client.get(url[form])
    assert first.status_code == 200, first.text
    assert first.headers["X-Tile-Source"] == "render"
    service.drain(5)
    assert service.store.get(key).data == first.data
    again = client.get(f"/{key}")
    assert (again.status_code, again.headers["X-Tile-Source"]) == (200, "cache")
    assert again.data == first.data
    assert client.head(f"/{key}").headers["X-Tile-Source"] == "cache"
    assert len(wms_calls(wms)) == 1


def test_a_layers_file_key_shaped_like_the_tms_route_is_its_own_layout(tmp_path, wms):
    """prefix 1.0.0/naip/ with the xyz layout: /1.0.0/naip/3/4/2.png is that layer's
    XYZ key (row 2 from the top), not the TMS route of a layer called naip."""
    wms.get(WMS, body=png(), content_type="image/png")
    layers = tmp_path / "layers.toml"
    layers.write_text(
        f'wms_url = "{WMS}"\nwms_layers = "x"\nmetatile = 1\n'
        '[layers.naip]\nprefix = "naip/"\n'
        '[layers.photos]\nprefix = "1.0.0/naip/"\nlayout = "xyz"\n'
    )
    app, service = make_app(tmp_path, LAYERS_FILE=str(layers))
    answer = app.test_client().get("/1.0.0/naip/3/4/2.png")
    assert answer.status_code == 200, answer.text
    service.drain(5)
    assert service.store.get("1.0.0/naip/3/4/2.png").data == answer.data
    assert service.store.get("naip/3/4/5.png") is None  # not the TMS route's tile
    bbox = parse_qs(urlsplit(wms_calls(wms)[0].request.url).query)["BBOX"][0]
    assert [float(v) for v in bbox.split(",")] == pytest.approx(mercator_bbox(4, 2, 3))


def test_the_layer_named_by_the_prefix_has_its_key_urls_in_the_tms_document(tmp_path, wms):
    import xml.etree.ElementTree as ET

    app, service = make_app(tmp_path, TILE_PREFIX=PROTOTYPE_PREFIX)
    client = app.test_client()
    assert service.settings.layers[0].name == "tms-mercator-naip"
    service_doc = ET.fromstring(client.get("/1.0.0/").data)
    href = service_doc.find("TileMaps/TileMap").get("href")
    assert urlsplit(href).path == "/1.0.0/tms-mercator-naip"
    tile_map = ET.fromstring(client.get(urlsplit(href).path).data)
    tile_set = tile_map.find("TileSets/TileSet[@order='3']").get("href")
    # The tile URLs the document gives are the keys in the bucket.
    assert urlsplit(tile_set).path == f"/{PROTOTYPE_PREFIX}3"
    assert client.get("/1.0.0/tms-mercator-naip/").status_code == 200
    assert (
        client.get("/wmts/1.0.0/WMTSCapabilities.xml").data.count(
            b"<ows:Identifier>tms-mercator-naip</ows:Identifier>"
        )
        == 1
    )
    assert client.get("/arcgis/rest/services/tms-mercator-naip/MapServer?f=json").status_code == 200


def test_bad_keys_under_a_tms_shaped_prefix_touch_nothing(tmp_path, wms):
    app, service = make_app(tmp_path, TILE_PREFIX=PROTOTYPE_PREFIX)
    client = app.test_client()
    for path, status in [
        (f"/{PROTOTYPE_PREFIX}3/4/05.png", 400),
        (f"/{PROTOTYPE_PREFIX}3/9/5.png", 404),
        (f"/{PROTOTYPE_PREFIX}3/4/5.gif", 404),
        (f"/miss/{PROTOTYPE_PREFIX}40/4/5.png", 404),
        (f"/?tile={PROTOTYPE_PREFIX}3/4/-5.png", 400),
    ]:
        answer = client.get(path)
        assert answer.status_code == status, (path, answer.text)
        assert answer.text.count("\n") == 1
    service.drain(5)
    assert wms_calls(wms) == []
    assert not (tmp_path / "tiles").exists()


ROUTE_KEYS = [
    # (key that missed, tile in XYZ terms (x, y, z), Content-Type)
    ("1.0.0/default/3/4/5.png", (4, 2, 3), "image/png"),
    ("1.0.0/default/3/4/5.jpg", (4, 2, 3), "image/jpeg"),
    ("wmts/1.0.0/default/default/GoogleMapsCompatible/3/2/4.png", (4, 2, 3), "image/png"),
    ("arcgis/rest/services/default/MapServer/tile/3/2/4", (4, 2, 3), "image/png"),
]


@pytest.mark.parametrize("form", ["tile-query", "miss-prefix"])
@pytest.mark.parametrize(("key", "xyz", "content_type"), ROUTE_KEYS)
def test_a_redirected_route_shaped_key_is_stored_under_that_key(
    tmp_path, wms, form, key, xyz, content_type
):
    body = png() if content_type == "image/png" else jpeg()
    wms.get(WMS, body=body, content_type=content_type)
    app, service = make_app(tmp_path)
    url = f"/?tile={key}" if form == "tile-query" else f"/miss/{key}"
    answer = app.test_client().get(url)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == content_type
    service.drain(5)
    assert service.store.get(key).data == answer.data
    request = parse_qs(urlsplit(wms_calls(wms)[0].request.url).query)
    x, y, z = xyz
    expected = ",".join(repr(v) for v in mercator_bbox(x, y, z))
    assert [float(v) for v in request["BBOX"][0].split(",")] == pytest.approx(
        [float(v) for v in expected.split(",")]
    )
    assert len(wms_calls(wms)) == 1


def mercator_bbox(x, y, z):
    from s3maptiler.tiles.grids import WEB_MERCATOR, Tile

    return tuple(WEB_MERCATOR.tile_bbox(Tile(x, y, z)))


KVP = (
    "wmts?SERVICE=WMTS&REQUEST=GetTile&LAYER=default&STYLE=default&FORMAT=image/png"
    "&TILEMATRIXSET=GoogleMapsCompatible&TILEMATRIX=3&TILEROW=2&TILECOL=4"
)


@pytest.mark.parametrize("form", ["tile-query", "miss-prefix"])
def test_a_redirected_wmts_kvp_query_is_stored_under_the_layers_key(tmp_path, wms, form):
    from urllib.parse import quote

    wms.get(WMS, body=png(), content_type="image/png")
    app, service = make_app(tmp_path)
    url = f"/?tile={quote(KVP, safe='')}" if form == "tile-query" else f"/miss/{KVP}"
    answer = app.test_client().get(url)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "image/png"
    service.drain(5)
    assert service.store.get("tiles/3/4/5.png").data == answer.data  # TMS row 7-2 = 5
    # No key holds a query: nothing stored under "wmts".
    assert service.store.get("wmts") is None
    # The layer's key may well be cached: a KVP miss reads the store first.
    again = app.test_client().get(url)
    assert again.headers["X-Tile-Source"] == "cache"
    assert len(wms_calls(wms)) == 1


@pytest.mark.parametrize(
    ("key", "status"),
    [
        ("1.0.0/nope/3/4/5.png", 404),
        ("1.0.0/default/3/4/05.png", 400),
        ("wmts/1.0.0/default/default/WorldCRS84Quad/3/2/4.png", 404),
        ("wmts/1.0.0/default/st\u00fcl/GoogleMapsCompatible/3/2/4.png", 400),
        ("wmts/1.0.0/default/../GoogleMapsCompatible/3/2/4.png", 400),
        ("arcgis/rest/services/default/MapServer/tile/3/2/99", 404),
        ("arcgis/rest/services/default/MapServer/tile/3/2", 404),
        ("wmts?SERVICE=WMS&REQUEST=GetTile", 400),
        ("1.0.0/", 400),
        ("1.0.0/default/", 400),
        ("1.0.0/default", 404),
    ],
)
def test_bad_route_shaped_keys_touch_nothing(tmp_path, wms, key, status):
    from urllib.parse import quote

    app, service = make_app(tmp_path)
    client = app.test_client()
    for url in (f"/?tile={quote(key, safe='')}", f"/miss/{quote(key, safe='/?=&')}"):
        answer = client.get(url)
        assert answer.status_code == status, (url, answer.text)
        assert answer.text.count("\n") == 1
    service.drain(5)
    assert wms_calls(wms) == []
    assert not (tmp_path / "tiles").exists()


def test_redirected_arcgis_rest_keys_render_once_and_are_stored_under_their_own_keys(tmp_path, wms):
    # The bucket's routing rule sends a miss on the ArcGIS REST tile URL that a published
    # MapServer document advertises: /miss/arcgis/rest/services/<layer>/MapServer/tile/...
    wms.get(WMS, body=quadrants(), content_type="image/png")
    app, service = make_app(tmp_path, METATILE="2x2")
    client = app.test_client()
    base = "arcgis/rest/services/default/MapServer/tile/1"
    # z1, row 0 (top), col 1: green in the metatile's top-right quadrant.
    first = client.get(f"/miss/{base}/0/1")
    assert first.status_code == 200, first.text
    assert first.headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(first.data)).convert("RGB").getcolors() == [(65536, (0, 255, 0))]
    # A neighbour of the same metatile, asked by its ArcGIS key: no second GetMap.
    second = client.get(f"/miss/{base}/1/0")
    assert second.status_code == 200, second.text
    assert Image.open(io.BytesIO(second.data)).convert("RGB").getcolors() == [(65536, (0, 0, 255))]
    assert len(wms_calls(wms)) == 1
    for key in (f"{base}/0/1", f"{base}/1/0"):
        wait_uploaded(service, key)
        assert (tmp_path / "tiles" / key).is_file(), key  # the key the miss came from
    service.spool.ttl = 0  # past the host's own fresh render: from the store
    assert client.get(f"/{base}/0/1").headers["X-Tile-Source"] == "cache"
    assert len(wms_calls(wms)) == 1


def test_tiles_of_a_metatile_this_host_rendered_are_served_without_a_store_read(tmp_path, wms):
    """A plain-key request for a tile whose metatile this host is rendering or has just
    rendered would read 404 (or the same bytes) from the store: no read is made."""

    class CountedReads(LocalStore):
        reads: list[str] = []
        remote = True  # stands in for S3: a read is dearer than the host's spool

        def get(self, key: str) -> StoredTile | None:
            self.reads.append(key)
            return None  # as S3 before the uploads land

    wms.get(WMS, body=quadrants(), content_type="image/png")
    store = CountedReads(tmp_path / "tiles")
    app, service = make_app(tmp_path, store=store, METATILE="2x2")
    client = app.test_client()
    assert client.get("/tiles/1/1/1.png").headers["X-Tile-Source"] == "render"
    assert store.reads == ["tiles/1/1/1.png"]
    for xy in ("0/1", "0/0", "1/0"):
        answer = client.get(f"/tiles/1/{xy}.png")
        assert answer.headers["X-Tile-Source"] == "inflight", xy
    assert store.reads == ["tiles/1/1/1.png"]  # the spool (or the flight) answered
    assert len(wms_calls(wms)) == 1
    # Without a fresh render here (nor its upload queued), a plain key reads the store.
    wait_all_uploaded(service, 4)
    service.spool.ttl = 0
    client.get("/tiles/1/1/0.png")
    assert store.reads[-1] == "tiles/1/1/0.png"


def test_a_local_store_is_read_rather_than_the_spool(tmp_path, wms):
    """A file on this host's disk is cheaper to read than a spooled bundle: with a
    local store a hit right after the render is the stored file ("cache")."""
    wms.get(WMS, body=quadrants(), content_type="image/png")
    app, service = make_app(tmp_path, METATILE="2x2")
    client = app.test_client()
    assert client.get("/tiles/1/1/1.png").headers["X-Tile-Source"] == "render"
    wait_all_uploaded(service, 4)
    assert client.get("/tiles/1/0/1.png").headers["X-Tile-Source"] == "cache"
