"""The routes and the tile path with the WMS answered by `responses`."""

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
from s3maptiler.stores import LocalStore, S3Store, StoredTile, StoreError
from s3maptiler.web import build_service, create_app

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
        first = client.get("/tiles/1/0/0.png")
        assert first.status_code == 200
        deadline = time.monotonic() + 5  # four pointers and one blank
        while s3.list_objects_v2(Bucket="tiles-unit")["KeyCount"] < 5:
            assert time.monotonic() < deadline, s3.list_objects_v2(Bucket="tiles-unit")
            time.sleep(0.02)
        for xy in ("0/0", "0/1", "1/0", "1/1"):
            wait_uploaded(service, f"tiles/1/{xy}.png")
        objects = {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket="tiles-unit")["Contents"]}
        blanks = [k for k in objects if k.startswith("tiles/_blank/")]
        assert len(blanks) == 1 and objects[blanks[0]] == len(first.data)
        for xy in ("0/0", "0/1", "1/0", "1/1"):
            head = s3.head_object(Bucket="tiles-unit", Key=f"tiles/1/{xy}.png")
            assert head["ContentLength"] == 0
            assert head["WebsiteRedirectLocation"] == "/" + blanks[0]
        # Read back through the service: the pointer is followed to the blank's bytes.
        again = client.get("/tiles/1/1/1.png")
        assert again.headers["X-Tile-Source"] == "cache"
        assert again.data == first.data
        assert len(wms_calls(wms)) == 1


def test_redirected_arcgis_rest_keys_render_once_and_are_stored_under_their_own_keys(
    tmp_path, wms
):
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
    assert client.get(f"/{base}/0/1").headers["X-Tile-Source"] == "cache"
    assert len(wms_calls(wms)) == 1
