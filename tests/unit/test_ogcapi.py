"""OGC API - Tiles: the documents (pure), their routes, the tile route that reads and
fills the layer's own keys, and the documents ``publish`` writes."""

import doctest
import json

import mercantile
import pytest
import responses
from responses import matchers

from s3maptiler.bucket.publish import SERVICE_DOCUMENT_KEYS, documents
from s3maptiler.config import Layer
from s3maptiler.config.layersfile import with_tile_size
from s3maptiler.documents import ogcapi, openapi
from s3maptiler.tiles.grids import GLOBAL_GEODETIC, WEB_MERCATOR, WORLD_CRS84_QUAD, custom_grid
from s3maptiler.tiles.tilemath import scale_denominator
from tests.unit.test_tilepath import WMS, jpeg, make_app, png, wait_uploaded, wms_calls

BASE = "https://tiles.example.com"
ROUTE = "/ogcapi/collections/t/map/tiles/WebMercatorQuad/{tileMatrix}/{tileRow}/{tileCol}"
REL = "http://www.opengis.net/def/rel/ogc/1.0/"


def layer(name="roads", **fields) -> Layer:
    return Layer(name, "http://wms.test/", "roads", prefix=f"{name}/", **fields)


def links(doc: dict, rel: str) -> list[dict]:
    return [link for link in doc["links"] if link["rel"] == rel]


@pytest.fixture
def wms():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def test_module_doctests():
    assert doctest.testmod(ogcapi).failed == 0


def test_the_landing_page_links_what_gdal_and_common_ask_for():
    page = ogcapi.landing_page(BASE + "/")
    (data,) = links(page, "data")  # GDAL's OGCAPI driver follows rel="data"
    assert data == {
        "rel": "data",
        "type": "application/json",
        "title": "The layers",
        "href": f"{BASE}/ogcapi/collections",
    }
    assert links(page, "self")[0]["href"] == f"{BASE}/ogcapi"
    assert links(page, "service-desc")[0]["type"] == ogcapi.OPENAPI_TYPE
    assert links(page, REL + "conformance")[0]["href"] == f"{BASE}/ogcapi/conformance"
    assert links(page, REL + "tiling-schemes")[0]["href"] == f"{BASE}/ogcapi/tileMatrixSets"


def test_conformance_declares_what_is_implemented_and_nothing_else():
    classes = ogcapi.conformance([layer(), layer("photo", format="jpeg")])["conformsTo"]
    tiles = "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/"
    for name in ("core", "tileset", "tilesets-list", "geodata-tilesets", "oas30", "png", "jpeg"):
        assert tiles + name in classes
    for name in ("dataset-tilesets", "collections-selection", "mvt", "tiff", "datetime"):
        assert tiles + name not in classes
    assert "http://www.opengis.net/spec/ogcapi-common-1/1.0/conf/core" in classes
    assert "http://www.opengis.net/spec/tms/2.0/conf/json-tilematrixset" in classes
    only_png = ogcapi.conformance([layer()])["conformsTo"]
    assert tiles + "jpeg" not in only_png


@pytest.mark.parametrize(
    ("grid", "set_id", "uri"),
    [
        (WEB_MERCATOR, "WebMercatorQuad", True),
        (GLOBAL_GEODETIC, "WorldCRS84Quad", True),
        (WORLD_CRS84_QUAD, "WorldCRS84Quad", True),
        (with_tile_size(WEB_MERCATOR, 512), "GoogleMapsCompatible-512", False),
        (custom_grid("swiss", "EPSG:2056", (2420000, 1350000), 256, [100, 50]), "swiss", False),
    ],
)
def test_standard_tile_matrix_set_ids_only_for_the_grids_that_are_those_sets(grid, set_id, uri):
    info = ogcapi.tile_matrix_set_of(grid)
    assert info.id == set_id
    expected = f"http://www.opengis.net/def/tilematrixset/OGC/1.0/{set_id}" if uri else None
    assert info.uri == expected


def test_web_mercator_quad_is_the_ogc_definition_with_gdal_36_names_beside():
    doc = ogcapi.tile_matrix_set([layer()], "WebMercatorQuad")
    assert doc["crs"] == "http://www.opengis.net/def/crs/EPSG/0/3857"
    assert doc["uri"] == "http://www.opengis.net/def/tilematrixset/OGC/1.0/WebMercatorQuad"
    assert len(doc["tileMatrices"]) == 25  # levels 0..24, as the OGC registry has them
    zero, twelve = doc["tileMatrices"][0], doc["tileMatrices"][12]
    assert zero["scaleDenominator"] == pytest.approx(559082264.0287178, rel=1e-15)
    assert zero["cellSize"] == pytest.approx(156543.03392804097, rel=1e-15)
    assert zero["pointOfOrigin"] == [-20037508.342789244, 20037508.342789244]
    assert (twelve["matrixWidth"], twelve["matrixHeight"]) == (4096, 4096)
    assert twelve["cornerOfOrigin"] == "topLeft"
    # TileMatrixSet 1.0 names: GDAL before 3.7 reads only these.
    assert doc["supportedCRS"] == doc["crs"] and doc["identifier"] == "WebMercatorQuad"
    assert (zero["identifier"], zero["topLeftCorner"]) == ("0", zero["pointOfOrigin"])
    assert ogcapi.tile_matrix_set([layer()], "WorldCRS84Quad") is None


def test_world_crs84_quad_is_in_crs84_longitude_first_with_two_tiles_at_zoom_0():
    doc = ogcapi.tile_matrix_set([layer(grid="WorldCRS84Quad")], "WorldCRS84Quad")
    assert doc["crs"] == "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
    assert doc["orderedAxes"] == ["Lon", "Lat"]
    zero = doc["tileMatrices"][0]
    assert (zero["matrixWidth"], zero["matrixHeight"]) == (2, 1)
    assert zero["pointOfOrigin"] == [-180.0, 90.0]
    assert zero["scaleDenominator"] == pytest.approx(279541132.0143589, rel=1e-15)
    assert zero["scaleDenominator"] == scale_denominator(GLOBAL_GEODETIC, 0)


def test_a_custom_grid_in_epsg_4326_writes_its_corners_latitude_first():
    grid = custom_grid("tokyo", "EPSG:4326", (139.0, 36.0), 256, [0.01, 0.005])
    doc = ogcapi.tile_matrix_set([layer(grid="tokyo", grid_def=grid)], "tokyo")
    assert doc["crs"] == "http://www.opengis.net/def/crs/EPSG/0/4326"
    assert doc["orderedAxes"] == ["Lat", "Lon"]
    assert doc["tileMatrices"][1]["pointOfOrigin"] == [36.0, 139.0]
    assert "uri" not in doc


def test_a_custom_grid_named_like_a_standard_set_is_left_out():
    impostor = custom_grid("WebMercatorQuad", "EPSG:3857", (0, 0), 256, [10.0])
    layers = [layer(), layer("fake", grid="WebMercatorQuad", grid_def=impostor)]
    assert [view.name for view, _ in ogcapi.published(layers)] == ["roads"]


def test_a_collection_has_its_crs84_extent_and_its_map_tilesets():
    nyc = layer("nyc", extent=(-74.3, 40.45, -73.65, 40.95))
    doc = ogcapi.collection(nyc, BASE)
    assert doc["extent"]["spatial"]["bbox"] == [[-74.3, 40.45, -73.65, 40.95]]
    assert doc["extent"]["spatial"]["crs"] == "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
    (tilesets,) = links(doc, REL + "tilesets-map")
    assert tilesets["href"] == f"{BASE}/ogcapi/collections/nyc/map/tiles"
    whole = ogcapi.collection(layer(), BASE)["extent"]["spatial"]["bbox"][0]
    assert whole == pytest.approx([-180, -85.0511287798066, 180, 85.0511287798066])


def test_a_tileset_lists_its_zoom_levels_and_the_tiles_of_its_extent():
    nyc = layer("nyc", extent=(-74.3, 40.45, -73.65, 40.95), min_zoom=8, max_zoom=12)
    doc = ogcapi.tileset(nyc, BASE)
    assert doc["dataType"] == "map"
    assert doc["tileMatrixSetURI"].endswith("/WebMercatorQuad")
    limits = {entry["tileMatrix"]: entry for entry in doc["tileMatrixSetLimits"]}
    assert list(limits) == ["8", "9", "10", "11", "12"]
    west, north = mercantile.tile(-74.3, 40.95, 12), mercantile.tile(-73.65, 40.45, 12)
    assert limits["12"] == {
        "tileMatrix": "12",
        "minTileRow": west.y,
        "maxTileRow": north.y,
        "minTileCol": west.x,
        "maxTileCol": north.x,
    }
    (scheme,) = links(doc, REL + "tiling-scheme")
    assert scheme["href"] == f"{BASE}/ogcapi/tileMatrixSets/WebMercatorQuad"
    (item,) = links(doc, "item")
    assert item["type"] == "image/png" and item["templated"] is True


@pytest.mark.parametrize(
    ("layout", "mode", "template"),
    [
        ("tms", "service", ROUTE),
        ("xyz", "service", ROUTE),
        # In a bucket: the layer's own keys where a template can spell them ...
        ("xyz", "keys", "/t/{tileMatrix}/{tileCol}/{tileRow}.png"),
        ("wmts", "keys", "/t/{tileMatrix}/{tileRow}/{tileCol}.png"),
        # ... else the tile route's keys, filled through the redirect.
        ("tms", "keys", ROUTE),
        ("quadkey", "keys", ROUTE),
    ],
)  # fmt: skip
def test_the_tile_template_in_each_mode(layout, mode, template):
    assert ogcapi.tile_template(layer("t", layout=layout), BASE, mode) == BASE + template


def test_the_api_definition_names_every_path_and_the_layers():
    doc = openapi.api_definition([layer(), layer("geo", grid="WorldCRS84Quad")], BASE)
    assert doc["openapi"].startswith("3.0")
    assert doc["servers"] == [{"url": f"{BASE}/ogcapi"}]
    tile = (
        "/collections/{collectionId}/map/tiles/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}"
    )
    assert tile in doc["paths"]
    parameters = {p["name"]: p for p in doc["paths"][tile]["get"]["parameters"]}
    assert parameters["collectionId"]["schema"]["enum"] == ["roads", "geo"]
    assert parameters["tileMatrixSetId"]["schema"]["enum"] == ["WebMercatorQuad", "WorldCRS84Quad"]
    assert set(doc["paths"]) >= {"/", "/conformance", "/collections", "/tileMatrixSets"}


# --- the routes ---------------------------------------------------------------------------


def test_every_document_route_answers_json_with_cors(tmp_path, wms):
    app, _ = make_app(tmp_path, SERVICE_URL=BASE)
    client = app.test_client()
    for path in (
        "/ogcapi",
        "/ogcapi/",
        "/ogcapi/conformance",
        "/ogcapi/collections",
        "/ogcapi/collections/default",
        "/ogcapi/collections/default/map/tiles",
        "/ogcapi/collections/default/map/tiles/WebMercatorQuad",
        "/ogcapi/tileMatrixSets",
        "/ogcapi/tileMatrixSets/WebMercatorQuad?f=json",
    ):
        answer = client.get(path, headers={"Origin": "http://map.test"})
        assert answer.status_code == 200, (path, answer.text)
        assert answer.content_type == "application/json", path
        assert answer.headers["Access-Control-Allow-Origin"] == "*", path
        assert json.loads(answer.text)
    api = client.get("/ogcapi/api")
    assert api.content_type == "application/vnd.oai.openapi+json;version=3.0"
    assert client.get("/ogcapi/collections/default").json["links"][0]["href"] == (
        f"{BASE}/ogcapi/collections/default"
    )
    assert wms_calls(wms) == []


BAD_ADDRESSES = {
    "/ogcapi/conformance?f=html": 400,
    "/ogcapi/collections/nope": 404,
    "/ogcapi/collections/nope/map/tiles": 404,
    "/ogcapi/collections/default/map/tiles/WorldCRS84Quad": 404,
    "/ogcapi/tileMatrixSets/GoogleMapsCompatible": 404,
    "/ogcapi/collections/default/map/tiles/WorldCRS84Quad/3/2/4": 404,
    "/ogcapi/collections/default/map/tiles/WebMercatorQuad/3/8/4": 404,
    "/ogcapi/collections/default/map/tiles/WebMercatorQuad/3/x/4": 400,
    "/ogcapi/collections/default/map/tiles/WebMercatorQuad/3/2/4?f=tiff": 404,
    "/ogcapi/collections/nope/map/tiles/WebMercatorQuad/3/2/4": 404,
}


def test_bad_ogcapi_addresses_are_one_line_and_touch_nothing(tmp_path, wms):
    app, _ = make_app(tmp_path)
    client = app.test_client()
    for path, status in BAD_ADDRESSES.items():
        answer = client.get(path)
        assert (answer.status_code, answer.text.count("\n")) == (status, 1), (path, answer.text)
    assert wms_calls(wms) == []
    assert not (tmp_path / "tiles").exists() or not any((tmp_path / "tiles").rglob("*.png"))


def test_an_ogcapi_tile_is_read_from_and_filled_into_the_layers_own_key(tmp_path, wms):
    asks = matchers.query_param_matcher({"FORMAT": "image/jpeg"}, strict_match=False)
    wms.get(WMS, body=jpeg(), content_type="image/jpeg", match=[asks])
    wms.get(WMS, body=png(), content_type="image/png")
    app, service = make_app(tmp_path)
    client = app.test_client()
    # Row 2 from the top at zoom 3 is TMS y 5: the layer's key is tiles/3/4/5.png.
    first = client.get("/ogcapi/collections/default/map/tiles/WebMercatorQuad/3/2/4")
    assert first.status_code == 200 and first.headers["X-Tile-Source"] == "render"
    assert first.content_type == "image/png"
    wait_uploaded(service, "tiles/3/4/5.png")
    assert service.store.get("tiles/3/4/5.png").data == first.data
    for path in ("/tiles/3/4/5.png", "/ogcapi/collections/default/map/tiles/WebMercatorQuad/3/2/4"):
        again = client.get(path)
        assert again.headers["X-Tile-Source"] == "cache" and again.data == first.data
    other = client.get("/ogcapi/collections/default/map/tiles/WebMercatorQuad/3/2/4?f=jpeg")
    assert other.status_code == 200 and other.content_type == "image/jpeg"
    wait_uploaded(service, "tiles/3/4/5.jpg")
    assert len(wms_calls(wms)) == 2


@pytest.mark.parametrize("form", ["/miss/{key}", "/?tile={key}"])
def test_a_redirected_ogcapi_tile_key_is_stored_under_that_key(tmp_path, wms, form):
    """A bucket's OGC API points layers whose keys no template spells at the tile
    route's keys; their misses arrive redirected (either redirect form) and fill
    exactly that key."""
    wms.get(WMS, body=png(), content_type="image/png")
    app, service = make_app(tmp_path)
    key = "ogcapi/collections/default/map/tiles/WebMercatorQuad/3/2/4"
    answer = app.test_client().get(form.format(key=key))
    assert answer.status_code == 200 and answer.content_type == "image/png"
    service.drain(5)
    assert service.store.get(key).data == answer.data
    assert service.store.get("tiles/3/4/5.png").data == answer.data
    assert len(wms_calls(wms)) == 1


# --- publish ------------------------------------------------------------------------------


def test_publish_writes_each_ogcapi_document_under_its_service_path():
    layers = [layer("tms"), layer("xyz", layout="xyz"), layer("geo", grid="WorldCRS84Quad")]
    docs = {doc.key: doc for doc in documents(layers, BASE)[0]}
    expected = {
        "ogcapi": "application/json",
        "ogcapi/conformance": "application/json",
        "ogcapi/api": "application/vnd.oai.openapi+json;version=3.0",
        "ogcapi/collections": "application/json",
        "ogcapi/collections/xyz": "application/json",
        "ogcapi/collections/xyz/map/tiles": "application/json",
        "ogcapi/collections/xyz/map/tiles/WebMercatorQuad": "application/json",
        "ogcapi/collections/geo/map/tiles/WorldCRS84Quad": "application/json",
        "ogcapi/tileMatrixSets": "application/json",
        "ogcapi/tileMatrixSets/WebMercatorQuad": "application/json",
        "ogcapi/tileMatrixSets/WorldCRS84Quad": "application/json",
    }
    for key, kind in expected.items():
        assert docs[key].content_type == kind, key
    tileset = json.loads(docs["ogcapi/collections/xyz/map/tiles/WebMercatorQuad"].body)
    (item,) = links(tileset, "item")
    assert item["href"] == f"{BASE}/xyz/{{tileMatrix}}/{{tileCol}}/{{tileRow}}.png"
    tms_item = links(
        json.loads(docs["ogcapi/collections/tms/map/tiles/WebMercatorQuad"].body), "item"
    )
    assert tms_item[0]["href"].startswith(f"{BASE}/ogcapi/collections/tms/map/tiles/")
    # Every href of every document is the key of another document, or a tile.
    keys = set(docs)
    for key in (k for k in docs if k.startswith("ogcapi")):
        for link in json.loads(docs[key].body).get("links", []):
            path = link["href"][len(BASE) + 1 :]
            assert path in keys or link.get("templated"), (key, link["href"])
    assert "ogcapi" in SERVICE_DOCUMENT_KEYS


def test_a_published_ogcapi_describes_the_layers_the_service_does(tmp_path):
    """High-DPI tiles are in the WMTS and TMS documents (``roads@2x``), not in OGC
    API: a bucket's OGC API lists what the service's does, nothing more."""
    layers = [layer("xyz", layout="xyz", pixel_ratios=(1, 2))]
    docs = {doc.key for doc in documents(layers, BASE)[0]}
    assert "ogcapi/collections/xyz" in docs
    assert not any("@2x" in key for key in docs if key.startswith("ogcapi"))
    app, _ = make_app(tmp_path, PIXEL_RATIOS="1,2")
    listed = app.test_client().get("/ogcapi/collections").get_json()["collections"]
    assert [c["id"] for c in listed] == ["default"]
