"""The fixed tile routes (http/tiles.py's one registry, TILE_ROUTES) and the service's
face the routes use (TileService: addresses, seed, upload_stats; Settings.served_layers)."""

import subprocess
import sys

import pytest
import responses

from s3maptiler.http import tiles as tile_routes
from tests.unit.test_tilepath import WMS, make_app, png, wait_uploaded


def routes_of(app) -> dict[str, set[str]]:
    rules: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        rules.setdefault(rule.endpoint, set()).add(rule.rule)
    return rules


def test_every_fixed_route_of_the_registry_is_registered_and_no_other(tmp_path):
    app, _ = make_app(tmp_path)
    registered = routes_of(app)
    for route in tile_routes.TILE_ROUTES:
        assert registered[f"tiles.{route.endpoint}"] == set(route.rules)
    fixed = {e for e in registered if e.startswith("tiles.")} - {"tiles.tile", "tiles.root"}
    assert fixed == {f"tiles.{route.endpoint}" for route in tile_routes.TILE_ROUTES}


@pytest.mark.parametrize(
    "path, key",
    [
        # At the route: the layer's own key. Redirected: exactly the key that missed.
        ("1.0.0/default/1/0/1.png", "tiles/1/0/1.png"),
        ("miss/1.0.0/default/1/0/1.png", "1.0.0/default/1/0/1.png"),
        ("wmts/1.0.0/default/default/GoogleMapsCompatible/1/0/0.png", "tiles/1/0/1.png"),
        (
            "miss/wmts/1.0.0/default/default/GoogleMapsCompatible/1/0/0.png",
            "wmts/1.0.0/default/default/GoogleMapsCompatible/1/0/0.png",
        ),
        ("arcgis/rest/services/default/MapServer/tile/1/0/0", "tiles/1/0/1.png"),
        (
            "miss/arcgis/rest/services/default/MapServer/tile/1/0/0",
            "arcgis/rest/services/default/MapServer/tile/1/0/0",
        ),
        ("ogcapi/collections/default/map/tiles/WebMercatorQuad/1/0/0", "tiles/1/0/1.png"),
    ],
)
@responses.activate
def test_a_fixed_route_and_a_redirected_key_of_its_shape_fill_the_key_asked(tmp_path, path, key):
    responses.get(WMS, body=png(), content_type="image/png")
    app, service = make_app(tmp_path)
    answer = app.test_client().get("/" + path)
    assert answer.status_code == 200, answer.text
    assert answer.headers["X-Tile-Source"] == "render"
    wait_uploaded(service, key)
    assert (tmp_path / "tiles" / key).is_file()


@responses.activate
def test_a_redirected_wmts_kvp_query_is_stored_under_the_layer_key(tmp_path):
    responses.get(WMS, body=png(), content_type="image/png")
    app, service = make_app(tmp_path)
    query = (
        "SERVICE=WMTS&REQUEST=GetTile&LAYER=default&TILEMATRIXSET=GoogleMapsCompatible"
        "&TILEMATRIX=1&TILEROW=0&TILECOL=0&FORMAT=image/png"
    )
    assert app.test_client().get("/wmts?" + query).status_code == 200
    assert app.test_client().get("/?tile=wmts?" + query.replace("&", "%26")).status_code == 200
    wait_uploaded(service, "tiles/1/0/1.png")
    assert (tmp_path / "tiles" / "tiles/1/0/1.png").is_file()
    assert len(responses.calls) == 1  # the second was a hit on the same key


def test_a_route_refusal_is_one_line_and_asks_nothing_upstream(tmp_path):
    app, service = make_app(tmp_path)
    client = app.test_client()
    for path, status in [
        ("/1.0.0/nope/1/0/1.png", 404),
        ("/wmts/1.0.0/default/default/WorldCRS84Quad/1/0/0.png", 404),
        ("/wmts?SERVICE=WMS&REQUEST=GetTile", 400),
        ("/ogcapi/collections/default/map/tiles/WorldCRS84Quad/1/0/0", 404),
    ]:
        answer = client.get(path)
        assert answer.status_code == status, path
        assert answer.text.count("\n") == 1
    assert service.upload_stats()["submitted"] == 0


@pytest.mark.parametrize(
    "url",
    [
        "/wmts?service=WMTS&request=GetCapabilities",
        "/miss/wmts?service=WMTS&request=GetCapabilities",  # the bucket's redirect rule
        "/?tile=wmts%3Fservice%3DWMTS%26request%3DGetCapabilities",  # the prototype's
    ],
)
def test_the_wmts_kvp_route_answers_get_capabilities(tmp_path, url):
    app, service = make_app(tmp_path)
    answer = app.test_client().get(url)
    assert answer.status_code == 200
    assert b"<Capabilities" in answer.data
    assert service.upload_stats()["submitted"] == 0


def test_served_layers_are_each_layer_then_its_high_dpi_layers(tmp_path):
    _, service = make_app(tmp_path, PIXEL_RATIOS="1,2")
    names = [layer.name for layer in service.settings.served_layers]
    assert names == ["default", "default@2x"]
    assert sorted(service.addresses.runtimes) == names
    # The 2x tiles share the layer's WMS guard: one WMS, one cap.
    runtimes = service.addresses.runtimes
    assert runtimes["default"].guard is runtimes["default@2x"].guard


def test_the_heartbeat_reads_the_upload_stats_of_the_face(tmp_path):
    app, service = make_app(tmp_path)
    body = app.test_client().get("/heartbeat").text
    stats = service.upload_stats()
    assert body.startswith("ok ") and f"uploads_stored={stats['stored']}" in body


def test_a_web_worker_does_not_load_seeding_s_area_code():
    """TileService.seed imports seeding when a message comes: shapely and numpy would
    add about 17 MB to every web worker that never seeds."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, s3maptiler.http.app; print(sorted(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "'shapely'" not in loaded and "'s3maptiler.seeding.coverage'" not in loaded
