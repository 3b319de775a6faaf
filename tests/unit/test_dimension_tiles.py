"""A layer with a TIME dimension through the routes, the tile path and the documents,
with the WMS answered by `responses`: each value is a cache of its own under
``{prefix}{value}/``, its GetMaps carry TIME=, and a value the layer does not declare
is a 400 that reaches no WMS and writes nothing."""

import json
import re
import xml.etree.ElementTree as ET
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

from s3maptiler.documents.wmts import wmts_capabilities
from s3maptiler.render.runtime import LayerRuntime
from s3maptiler.service.addresses import Addresses, BadTileRequest
from s3maptiler.tiles.dimensions import parse_dimensions
from s3maptiler.tiles.grids import Tile
from tests.unit.test_seed import make_layer
from tests.unit.test_tilepath import WMS, make_app, png, wait_all_uploaded, wait_uploaded, wms_calls

MONTHS = json.dumps({"time": {"values": "2024-01-01/2024-06-01/P1M", "default": "2024-06-01"}})
WMTS_NS = {"w": "http://www.opengis.net/wmts/1.0", "ows": "http://www.opengis.net/ows/1.1"}


@pytest.fixture
def wms():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(WMS, body=png(), content_type="image/png")
        yield mock


def query(call) -> dict:
    return parse_qs(urlsplit(call.request.url).query, keep_blank_values=True)


def stored(tmp_path) -> set[str]:
    root = tmp_path / "tiles"
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_each_value_is_a_cache_of_its_own_drawn_with_its_time(tmp_path, wms):
    app, service = make_app(tmp_path, DIMENSIONS=MONTHS)
    client = app.test_client()
    for key, time in (
        ("tiles/2024-01-01/1/0/1.png", "2024-01-01"),
        ("tiles/2024-02-01/1/0/1.png", "2024-02-01"),
        ("tiles/1/0/1.png", "2024-06-01"),  # dimension-less: the default
    ):
        answer = client.get(f"/{key}")
        assert answer.status_code == 200, answer.text
        assert answer.headers["X-Tile-Source"] == "render"
        assert query(wms_calls(wms)[-1])["TIME"] == [time]
        wait_uploaded(service, key)
    assert stored(tmp_path) == {
        "tiles/2024-01-01/1/0/1.png",
        "tiles/2024-02-01/1/0/1.png",
        "tiles/1/0/1.png",
    }
    assert client.get("/tiles/2024-01-01/1/0/1.png").headers["X-Tile-Source"] == "cache"
    assert len(wms_calls(wms)) == 3


BAD_ADDRESSES = [
    "/tiles/2025-01-01/1/0/1.png",  # outside the interval
    "/tiles/2024-01-15/1/0/1.png",  # between two values
    "/tiles/2024-01-01T00:00:00Z/1/0/1.png",  # an allowed instant, not the key's spelling
    "/tiles/january/1/0/1.png",
    "/miss/tiles/2025-01-01/1/0/1.png",
    "/?tile=tiles/2025-01-01/1/0/1.png",
    "/wmts/1.0.0/default/default/GoogleMapsCompatible/2025-01-01/1/0/0.png",
    "/wmts/1.0.0/default/default/GoogleMapsCompatible/2024-01-01/2024-02-01/1/0/0.png",
    "/wmts?SERVICE=WMTS&REQUEST=GetTile&LAYER=default&STYLE=default&FORMAT=image/png"
    "&TILEMATRIXSET=GoogleMapsCompatible&TILEMATRIX=1&TILEROW=0&TILECOL=0&Time=2025-01-01",
]


@pytest.mark.parametrize("url", BAD_ADDRESSES)
def test_a_value_the_layer_does_not_declare_is_a_400_without_wms_call_or_write(tmp_path, wms, url):
    app, service = make_app(tmp_path, DIMENSIONS=MONTHS)
    answer = app.test_client().get(url)
    assert answer.status_code == 400, answer.text
    assert "\n" not in answer.text.strip()
    assert wms_calls(wms) == []
    assert service.uploads.stats()["submitted"] == 0
    assert stored(tmp_path) == set()


def test_a_rest_url_with_values_for_no_layer_or_a_layer_without_dimensions(tmp_path, wms):
    app, _ = make_app(tmp_path)
    client = app.test_client()
    path = "default/GoogleMapsCompatible/2024-01-01/1/0/0.png"
    assert client.get(f"/wmts/1.0.0/nosuch/{path}").status_code == 404
    answer = client.get(f"/wmts/1.0.0/default/{path}")
    assert answer.status_code == 400 and "layer default has 0" in answer.text
    assert wms_calls(wms) == []


@pytest.mark.parametrize("form", ["/miss/{key}", "/?tile={key}"])
def test_redirected_misses_are_stored_under_exactly_the_key_that_missed(tmp_path, wms, form):
    app, service = make_app(tmp_path, DIMENSIONS=MONTHS)
    key = "tiles/2024-03-01/2/1/1.png"
    answer = app.test_client().get(form.format(key=key))
    assert answer.status_code == 200
    wait_uploaded(service, key)
    assert stored(tmp_path) == {key}
    assert query(wms_calls(wms)[0])["TIME"] == ["2024-03-01"]


def test_wmts_routes_take_any_spelling_and_fill_the_canonical_key(tmp_path, wms):
    app, service = make_app(tmp_path, DIMENSIONS=MONTHS)
    client = app.test_client()
    # WMTS row 0 of zoom 1 is TMS row 1: the layer's own key.
    rest = "/wmts/1.0.0/default/default/GoogleMapsCompatible/2024-03-01T00:00:00Z/1/0/0.png"
    assert client.get(rest).status_code == 200
    wait_uploaded(service, "tiles/2024-03-01/1/0/1.png")
    kvp = (
        "/wmts?SERVICE=WMTS&REQUEST=GetTile&LAYER=default&STYLE=default&FORMAT=image/png"
        "&TILEMATRIXSET=GoogleMapsCompatible&TILEMATRIX=1&TILEROW=0&TILECOL=0"
    )
    assert client.get(kvp + "&Time=2024-03-01").headers["X-Tile-Source"] == "cache"
    assert client.get(kvp).status_code == 200  # no Time: the dimension-less key
    wait_uploaded(service, "tiles/1/0/1.png")
    assert stored(tmp_path) == {"tiles/2024-03-01/1/0/1.png", "tiles/1/0/1.png"}
    assert [query(c)["TIME"] for c in wms_calls(wms)] == [["2024-03-01"], ["2024-06-01"]]


def test_a_metatile_of_a_value_stores_its_tiles_under_that_value(tmp_path, wms):
    wms.replace(responses.GET, WMS, body=png(size=512), content_type="image/png")
    app, service = make_app(tmp_path, DIMENSIONS=MONTHS, METATILE="2x2")
    assert app.test_client().get("/tiles/2024-05-01/1/0/0.png").status_code == 200
    wait_all_uploaded(service, 4)
    assert stored(tmp_path) == {f"tiles/2024-05-01/1/{x}/{y}.png" for x in (0, 1) for y in (0, 1)}
    assert len(wms_calls(wms)) == 1


def test_the_wmts_capabilities_carry_the_dimension_and_a_time_template(tmp_path, wms):
    app, _ = make_app(tmp_path, DIMENSIONS=MONTHS)
    document = ET.fromstring(app.test_client().get("/wmts/1.0.0/WMTSCapabilities.xml").data)
    layer = document.find("w:Contents/w:Layer", WMTS_NS)
    order = [child.tag.split("}")[1] for child in layer]
    assert order == [
        "Title",
        "WGS84BoundingBox",
        "Identifier",
        "BoundingBox",
        "Style",
        "Format",
        "Dimension",
        "TileMatrixSetLink",
        "ResourceURL",
    ]
    dimension = layer.find("w:Dimension", WMTS_NS)
    assert [child.tag.split("}")[1] for child in dimension][:3] == [
        "Identifier",
        "Default",
        "Value",
    ]
    assert dimension.findtext("ows:Identifier", namespaces=WMTS_NS) == "Time"
    assert dimension.findtext("w:Default", namespaces=WMTS_NS) == "2024-06-01"
    values = [v.text for v in dimension.findall("w:Value", WMTS_NS)]
    assert values == [f"2024-0{m}-01" for m in range(1, 7)]
    template = layer.find("w:ResourceURL", WMTS_NS).get("template")
    assert template.endswith("/{Style}/{TileMatrixSet}/{Time}/{TileMatrix}/{TileRow}/{TileCol}.png")
    tile_map = app.test_client().get("/1.0.0/default/").text
    assert "Tiles at TIME=2024-06-01" in tile_map


def test_the_wmts_key_template_puts_the_value_after_the_prefix():
    layer = make_layer(
        layout="xyz", prefix="rain/", dimensions=parse_dimensions(json.loads(MONTHS))
    )
    document = wmts_capabilities([layer], "https://bucket.example", mode="keys")
    assert 'template="https://bucket.example/rain/{Time}/{TileMatrix}/{TileCol}/{TileRow}.png"' in (
        document
    )


@pytest.mark.parametrize("layout", ["tms", "xyz", "wmts", "arcgis", "quadkey"])
def test_keys_with_and_without_values_round_trip_in_every_layout(layout):
    layer = make_layer(layout=layout, dimensions=parse_dimensions(json.loads(MONTHS)))
    addresses = Addresses([LayerRuntime.build(layer)])
    tile = Tile(5, 9, 4)
    plain = addresses.request_for("demo", tile)
    dated = addresses.request_for("demo", tile, dimensions={"TIME": "2024-03-01T00:00Z"})
    path = plain.key.removeprefix("tiles/")
    assert dated.key == f"tiles/2024-03-01/{path}"
    for request in (plain, dated):
        again = addresses.resolve(request.key)
        assert (again.key, again.tile) == (request.key, tile)
        assert again.layer.layer.prefix == request.layer.layer.prefix
        assert addresses.owned(request.key).key == request.key
    assert dated.layer.sources["png"].extra_params == (("TIME", "2024-03-01"),)
    for method in (addresses.owned, addresses.resolve):  # the layer's key shape: its 400
        with pytest.raises(BadTileRequest, match="Time '2025-01-01'"):
            method(f"tiles/2025-01-01/{path}")
    assert addresses.owned(f"tiles/2024-03-01/extra/{path}") is None


OGC_TILE = "/ogcapi/collections/default/map/tiles/WebMercatorQuad/1/0/1"


def test_ogc_api_datetime_is_the_time_dimension(tmp_path, wms):
    """``datetime`` names the TIME value (any ISO 8601 spelling), stored under the
    value's key; without it the dimension-less key; a value not declared is a 400."""
    app, service = make_app(tmp_path, DIMENSIONS=MONTHS)
    client = app.test_client()
    answer = client.get(OGC_TILE + "?datetime=2024-02-01T00:00:00Z")
    assert answer.status_code == 200, answer.text
    assert query(wms_calls(wms)[-1])["TIME"] == ["2024-02-01"]
    wait_uploaded(service, "tiles/2024-02-01/1/1/1.png")  # row 0 from the top: TMS y 1
    assert client.get(OGC_TILE).status_code == 200
    assert query(wms_calls(wms)[-1])["TIME"] == ["2024-06-01"]
    wait_uploaded(service, "tiles/1/1/1.png")
    assert {"tiles/2024-02-01/1/1/1.png", "tiles/1/1/1.png"} <= stored(tmp_path)
    calls = len(wms_calls(wms))
    bad = client.get(OGC_TILE + "?datetime=2025-01-01")
    assert bad.status_code == 400 and "\n" not in bad.text.strip()
    assert len(wms_calls(wms)) == calls


def test_ogc_api_documents_say_the_time_extent_and_datetime(tmp_path):
    app, _ = make_app(tmp_path, DIMENSIONS=MONTHS)
    client = app.test_client()
    collection = client.get("/ogcapi/collections/default").get_json()
    assert collection["extent"]["temporal"]["interval"] == [
        ["2024-01-01T00:00:00Z", "2024-06-01T00:00:00Z"]
    ]
    classes = client.get("/ogcapi/conformance").get_json()["conformsTo"]
    assert "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/datetime" in classes
    api = client.get("/ogcapi/api").get_json()
    tile_path = next(p for p in api["paths"] if p.endswith("{tileCol}"))
    names = [p["name"] for p in api["paths"][tile_path]["get"]["parameters"]]
    assert "datetime" in names


def test_ogc_api_without_time_leaves_datetime_out(tmp_path):
    app, _ = make_app(tmp_path)
    client = app.test_client()
    assert "temporal" not in client.get("/ogcapi/collections/default").get_json().get("extent", {})
    classes = client.get("/ogcapi/conformance").get_json()["conformsTo"]
    assert not any(c.endswith("/datetime") for c in classes)


def test_a_2x_tile_of_a_value_is_drawn_at_both(tmp_path):
    """Dimensions and high-DPI together: ``{prefix}{value}/{path}@2x.png`` is the 2x
    layer at that value; its GetMap carries TIME and MAP_RESOLUTION, at 512 px; the
    WMTS template of the 2x layer has both the {Time} segment and ``@2x``."""
    app, service = make_app(tmp_path, DIMENSIONS=MONTHS, PIXEL_RATIOS="1,2", METATILE="1x1")
    key = "tiles/2024-02-01/1/0/1@2x.png"
    with responses.RequestsMock() as wms:
        wms.get(WMS, body=png(size=512), content_type="image/png")
        answer = app.test_client().get(f"/{key}")
        assert answer.status_code == 200, answer.text
        sent = query(wms_calls(wms)[-1])
    assert sent["TIME"] == ["2024-02-01"] and sent["MAP_RESOLUTION"] == ["144"]
    assert sent["WIDTH"] == ["512"]
    wait_uploaded(service, key)
    assert key in stored(tmp_path)
    capabilities = app.test_client().get("/wmts/1.0.0/WMTSCapabilities.xml").text
    templates = [t for t in re.findall(r'template="([^"]+)"', capabilities) if "@2x" in t]
    assert templates and all("/{Time}/{TileMatrix}/" in t for t in templates), templates
