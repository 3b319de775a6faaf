"""High-DPI (2x) tiles without a network: settings, keys in every layout, the GetMap
(the same ground, twice the pixels, the WMS's resolution parameter), the routes, the
documents and purge; the WMS answered by `responses`."""

import io
import xml.etree.ElementTree as ET
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from s3maptiler.bucket.purge import TileSelection
from s3maptiler.config import ConfigError, Layer, load_settings, with_pixel_ratios
from s3maptiler.config.hidpi import WMS_VENDORS, at_pixel_ratio
from s3maptiler.config.layersfile import load_layers_file
from s3maptiler.documents.arcgis import arcgis_mapserver
from s3maptiler.documents.tms import tile_map, tile_map_service
from s3maptiler.documents.views import skipped_layers
from s3maptiler.documents.wmts import wmts_capabilities
from s3maptiler.render import getmap
from s3maptiler.render.getmap import resolution_params
from s3maptiler.render.runtime import LayerRuntime
from s3maptiler.tiles.grids import WEB_MERCATOR, Tile
from s3maptiler.tiles.layouts import LAYOUTS, LayoutError, split_pixel_ratio, with_pixel_ratio
from s3maptiler.tiles.tilemath import scale_denominator
from tests.unit.test_tilepath import WMS, make_app, wait_all_uploaded, wait_uploaded, wms_calls
from tests.unit.test_tilepath import wms as wms  # noqa: F401 - the fixture

WMTS = "{http://www.opengis.net/wmts/1.0}"
OWS = "{http://www.opengis.net/ows/1.1}"


def make_layer(name="roads", **fields) -> Layer:
    fields.setdefault("prefix", f"{name}/")
    return Layer(name=name, wms_url="http://127.0.0.1:1/wms", wms_layers="all", **fields)


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (120, 160, 90)).save(out, "PNG")
    return out.getvalue()


# --------------------------------------------------------------------------- settings


def test_a_layer_at_2x_is_the_same_grid_with_twice_the_pixels():
    layer = make_layer(pixel_ratios=(1, 2), metatile=(4, 4), meta_buffer=64, title="Roads")
    one, two = with_pixel_ratios([layer])
    assert one is layer
    assert (two.name, two.title, two.pixel_ratio, two.prefix) == (
        "roads@2x",
        "Roads (@2x)",
        2,
        "roads/",
    )
    assert (two.tile_size, two.metatile, two.meta_buffer) == (512, (4, 4), 128)
    grid, big = layer.tile_grid, two.tile_grid
    assert (big.tile_size, big.name) == (512, "GoogleMapsCompatible-512")
    for z in (0, 5, 18):
        assert big.resolution(z) == grid.resolution(z) / 2
        assert big.matrix_size(z) == grid.matrix_size(z)
    # Every 2x tile covers exactly the ground of its 1x tile, edges bit for bit.
    for tile in (Tile(0, 0, 0), Tile(1205, 1539, 12), Tile(77, 1, 7)):
        assert big.tile_bbox(tile) == grid.tile_bbox(tile)
    assert at_pixel_ratio(two, 2) is two
    assert with_pixel_ratios([make_layer()]) == (make_layer(),)


def test_layers_file_pixel_ratios_and_wms_vendor(tmp_path):
    path = tmp_path / "layers.toml"
    path.write_text(
        'wms_url = "http://wms.test/"\nwms_layers = "all"\n'
        "[layers.roads]\npixel_ratios = [2, 1]\n"
        '[layers.geo]\npixel_ratios = [1, 2, 3]\nwms_vendor = "geoserver"\n'
        "[layers.plain]\n"
    )
    roads, geo, plain = load_layers_file(path)
    assert (roads.pixel_ratios, roads.wms_vendor) == ((1, 2), "mapserver")
    assert (geo.pixel_ratios, geo.wms_vendor) == ((1, 2, 3), "geoserver")
    assert plain.pixel_ratios == (1,)
    names = [layer.name for layer in with_pixel_ratios([roads, geo, plain])]
    assert names == ["roads", "roads@2x", "geo", "geo@2x", "geo@3x", "plain"]


@pytest.mark.parametrize(
    "line, key",
    [
        ("pixel_ratios = [2]", "pixel_ratios"),  # the 1x tiles are always served
        ("pixel_ratios = [1, 4]", "pixel_ratios"),
        ("pixel_ratios = [1, 1]", "pixel_ratios"),
        ('pixel_ratios = "2x"', "pixel_ratios"),
        ("pixel_ratios = [1, true]", "pixel_ratios"),
        ('wms_vendor = "arcgis"', "wms_vendor"),
    ],
)
def test_layers_file_bad_pixel_ratios_name_file_layer_and_key(tmp_path, line, key):
    path = tmp_path / "layers.toml"
    path.write_text(f'wms_url = "http://wms.test/"\nwms_layers = "all"\n[layers.roads]\n{line}\n')
    with pytest.raises(ConfigError) as caught:
        load_layers_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: layer roads: key '{key}'"), message
    assert "\n" not in message


def test_environment_pixel_ratios_and_wms_vendor():
    base = {"WMS_SERVER": WMS, "MAP_LAYERS": "roads"}
    layer = load_settings({**base, "PIXEL_RATIOS": "1,2", "WMS_VENDOR": "qgis"}, None).layers[0]
    assert (layer.pixel_ratios, layer.wms_vendor) == ((1, 2), "qgis")
    assert load_settings(base, dotenv_path=None).layers[0].pixel_ratios == (1,)
    for name, value in (("PIXEL_RATIOS", "2"), ("PIXEL_RATIOS", "1,x"), ("WMS_VENDOR", "esri")):
        with pytest.raises(ConfigError) as caught:
            load_settings({**base, name: value}, dotenv_path=None)
        assert str(caught.value).startswith(f"{name}:"), caught.value


def test_every_vendor_but_none_has_a_resolution_parameter():
    assert set(getmap._RESOLUTION) == set(WMS_VENDORS) - {"none"}
    assert resolution_params("mapserver", 3) == (("MAP_RESOLUTION", "216"),)
    assert resolution_params("mapserver", 1) == ()


# --------------------------------------------------------------------------- keys


@given(
    layout=st.sampled_from(sorted(LAYOUTS)),
    z=st.integers(1, 20),
    fx=st.floats(0, 1, exclude_max=True),
    fy=st.floats(0, 1, exclude_max=True),
    ratio=st.sampled_from([2, 3]),
)
def test_a_2x_key_is_the_1x_key_with_at_2x_before_the_extension(layout, z, fx, fy, ratio):
    tile = Tile(int(fx * 2**z), int(fy * 2**z), z)
    one = LAYOUTS[layout].format(tile, "png", WEB_MERCATOR)
    key = with_pixel_ratio(one, ratio)
    assert key == one.removesuffix(".png") + f"@{ratio}x.png"
    path, found = split_pixel_ratio(key)
    assert (path, found) == (one, ratio)
    assert LAYOUTS[layout].parse(path, WEB_MERCATOR).tile == tile
    assert split_pixel_ratio(one) == (one, 1)
    with pytest.raises(LayoutError):  # the layout alone never reads a 2x key
        LAYOUTS[layout].parse(key, WEB_MERCATOR)


def test_at_1x_and_other_spellings_are_not_pixel_ratios():
    for path in ("3/4/2@1x.png", "3/4/2@2.png", "3/4/2@10x.png", "3/4/2@2x", "@2x.png"):
        assert split_pixel_ratio(path) == (path, 1)


# --------------------------------------------------------------------------- the tile path


def getmap_query(call) -> dict[str, str]:
    query = parse_qs(urlsplit(call.request.url).query, keep_blank_values=True)
    return {key: values[0] for key, values in query.items()}


@pytest.mark.parametrize(
    "vendor, param",
    [
        ("mapserver", ("MAP_RESOLUTION", "144")),
        ("geoserver", ("FORMAT_OPTIONS", "dpi:180")),
        ("qgis", ("DPI", "181")),
        ("none", None),
    ],
)
def test_a_2x_tile_asks_the_same_ground_at_twice_the_pixels_and_resolution(
    tmp_path,
    wms,  # noqa: F811
    vendor,
    param,
):
    # 2x2 metatiles with an 8 px buffer at 1x: 528 px; at 2x 1056 px, 16 px buffer.
    wms.get(WMS, body=png(528, 528), content_type="image/png")
    app, service = make_app(
        tmp_path, METATILE="2x2", META_BUFFER="8", PIXEL_RATIOS="1,2", WMS_VENDOR=vendor
    )
    client = app.test_client()
    assert client.get("/tiles/3/4/2.png").status_code == 200
    wms.replace("GET", WMS, body=png(1056, 1056), content_type="image/png")
    answer = client.get("/tiles/3/4/2@2x.png")
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(answer.data)).size == (512, 512)
    one, two = (getmap_query(call) for call in wms_calls(wms))
    assert one["BBOX"] == two["BBOX"]  # the same ground, buffer included
    assert (one["WIDTH"], one["HEIGHT"], two["WIDTH"], two["HEIGHT"]) == ("528",) * 2 + (
        "1056",
    ) * 2
    extra = {k: v for k, v in two.items() if k not in one}
    assert extra == ({} if param is None else dict([param]))
    assert not {"MAP_RESOLUTION", "DPI", "FORMAT_OPTIONS"} & set(one)
    # Stored under exactly the key asked, and the next request is a hit.
    # Both metatiles' 2x2 tiles: the rest of the 2x one is queued after its render is
    # published, so its next request no longer follows that render ("inflight").
    wait_all_uploaded(service, 8)
    assert (tmp_path / "tiles" / "tiles/3/4/2@2x.png").read_bytes() == answer.data
    service.spool.ttl = 0  # past the host's own fresh render: from the store
    assert client.get("/tiles/3/4/2@2x.png").headers["X-Tile-Source"] == "cache"
    assert len(wms_calls(wms)) == 2


def test_every_address_of_a_2x_tile_names_one_key(tmp_path, wms):  # noqa: F811
    wms.get(WMS, body=png(512, 512), content_type="image/png")
    app, service = make_app(tmp_path, PIXEL_RATIOS="1,2")
    client = app.test_client()
    key = "tiles/3/4/2@2x.png"  # TMS row 2 at zoom 3 is XYZ row 5
    for address in (
        "/" + key,
        "/miss/" + key,
        "/?tile=" + key,
        "/1.0.0/default@2x/3/4/2.png",
        "/1.0.0/default/3/4/2@2x.png",
        "/wmts/1.0.0/default@2x/default/GoogleMapsCompatible-512/3/5/4.png",
        "/arcgis/rest/services/default@2x/MapServer/tile/3/5/4",
    ):
        answer = client.get(address)
        assert answer.status_code == 200, (address, answer.text)
        assert Image.open(io.BytesIO(answer.data)).size == (512, 512), address
    wait_uploaded(service, key)
    stored = sorted(p.relative_to(tmp_path / "tiles").as_posix() for p in tmp_path.rglob("*.png"))
    assert stored == [key]
    assert len(wms_calls(wms)) == 1


def test_pixel_ratios_a_layer_does_not_serve_are_404_and_at_1x_is_400(tmp_path, wms):  # noqa: F811
    app, _ = make_app(tmp_path, PIXEL_RATIOS="1,2")
    client = app.test_client()
    answer = client.get("/tiles/3/4/2@3x.png")
    assert answer.status_code == 404 and "serves no @3x tiles" in answer.text
    assert client.get("/tiles/3/4/2@1x.png").status_code == 400
    plain, _ = make_app(tmp_path / "plain")
    assert plain.test_client().get("/tiles/3/4/2@2x.png").status_code == 404
    assert wms_calls(wms) == []


# --------------------------------------------------------------------------- documents


def test_documents_list_the_2x_layer_on_its_own_grid():
    layers = with_pixel_ratios([make_layer(pixel_ratios=(1, 2), layout="xyz", max_zoom=3)])
    root = ET.fromstring(wmts_capabilities(layers, "https://t.example").encode())
    entries = {e.findtext(f"{OWS}Identifier"): e for e in root.iter(f"{WMTS}Layer")}
    assert set(entries) == {"roads", "roads@2x"}
    two = entries["roads@2x"]
    assert two.findtext(f"{WMTS}TileMatrixSetLink/{WMTS}TileMatrixSet") == (
        "GoogleMapsCompatible-512"
    )
    assert (
        two.find(f"{WMTS}ResourceURL")
        .get("template")
        .startswith("https://t.example/wmts/1.0.0/roads@2x/")
    )
    for matrix_set in root.iter(f"{WMTS}TileMatrixSet"):
        if matrix_set.findtext(f"{OWS}Identifier") == "GoogleMapsCompatible-512":
            first = matrix_set.find(f"{WMTS}TileMatrix")
            assert first.findtext(f"{WMTS}TileWidth") == "512"
            assert first.findtext(f"{WMTS}MatrixWidth") == "1"
            denominator = float(first.findtext(f"{WMTS}ScaleDenominator"))
            assert denominator == pytest.approx(scale_denominator(WEB_MERCATOR, 0) / 2)
    keys = ET.fromstring(wmts_capabilities(layers, "https://b.example", "keys").encode())
    templates = {
        e.findtext(f"{OWS}Identifier"): e.find(f"{WMTS}ResourceURL").get("template")
        for e in keys.iter(f"{WMTS}Layer")
    }
    assert templates["roads@2x"] == (
        "https://b.example/roads/{TileMatrix}/{TileCol}/{TileRow}@2x.png"
    )
    # TMS: on the service a TileMap of its own; in a bucket no template can hold @2x.
    tms_layers = with_pixel_ratios([make_layer(pixel_ratios=(1, 2), max_zoom=3)])
    service_doc = ET.fromstring(tile_map_service(tms_layers, "https://t.example"))
    assert [m.get("href") for m in service_doc.iter("TileMap")] == [
        "https://t.example/1.0.0/roads",
        "https://t.example/1.0.0/roads@2x",
    ]
    two_map = ET.fromstring(tile_map(tms_layers[1], "https://t.example"))
    assert two_map.find("TileFormat").get("width") == "512"
    sets = two_map.find("TileSets")
    assert sets[0].get("href") == "https://t.example/1.0.0/roads@2x/0"
    assert float(sets[0].get("units-per-pixel")) == WEB_MERCATOR.resolution(0) / 2
    (skipped,) = skipped_layers(tms_layers, "tms", "keys")
    assert skipped.layer == "roads@2x" and "@2x" in skipped.reason
    info = arcgis_mapserver(tms_layers[1])["tileInfo"]
    assert (info["rows"], info["cols"]) == (512, 512)
    assert info["lods"][0]["resolution"] == WEB_MERCATOR.resolution(0) / 2


# --------------------------------------------------------------------------- purge


def test_purging_a_layer_takes_its_2x_tiles_and_a_2x_layer_only_those():
    layout = LAYOUTS["tms"]
    every = TileSelection(layout, WEB_MERCATOR, min_zoom=2, max_zoom=3)
    assert every.selects("3/4/2.png") and every.selects("3/4/2@2x.png")
    assert every.selects("1/0/0@2x.png") is False
    only = TileSelection(layout, WEB_MERCATOR, min_zoom=2, max_zoom=3, pixel_ratio=2)
    assert only.selects("3/4/2@2x.png") is True
    assert only.selects("3/4/2.png") is False
    assert only.selects("3/4/x@2x.png") is None


# --------------------------------------------------------------------------- seeding


def test_seeding_the_2x_layer_writes_2x_keys_from_2x_getmaps(tmp_path):
    from s3maptiler.seeding import coverage, plan, run
    from s3maptiler.storage.stores import LocalStore
    from tests.unit.test_seed import NYC, FakeWMS

    layer = make_layer("demo", prefix="tiles/", pixel_ratios=(1, 2), meta_buffer=8)
    runtime = LayerRuntime.build(with_pixel_ratios([layer])[1])
    planned = list(plan.plan_jobs(runtime, coverage.Coverage.from_bbox(NYC), [12]))
    wms = FakeWMS()
    store = LocalStore(tmp_path)
    report = run.run_seed({"demo@2x": runtime}, planned, wms, store, run.SeedOptions(1))
    written = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png")}
    assert written and all(key.endswith("@2x.png") for key in written)
    assert report.done == len(written) and report.failed == 0
    # 4x4 metatiles of 512 px tiles with a 16 px buffer (8 at 1x); MAP_RESOLUTION=144.
    assert {(width, height) for _, width, height in wms.calls} == {(2080, 2080)}
    assert runtime.sources["png"].extra_params == (("MAP_RESOLUTION", "144"),)
    for key in written:
        assert Image.open(tmp_path / key).size == (512, 512)


# --------------------------------------------------------------------------- preview


def test_the_preview_of_a_2x_layer_draws_its_512_px_tiles_on_the_1x_grid(tmp_path):
    from s3maptiler.http import preview

    layer = make_layer("demo", prefix="tiles/", pixel_ratios=(1, 2), max_zoom=4)
    one, two = with_pixel_ratios([layer])
    config = preview.preview_config(two, two.tile_grid, "", "http://b.example")
    base = preview.preview_config(one, one.tile_grid, "", "http://b.example")
    assert (config["tileSize"], config["tilePixelRatio"]) == (256, 2)
    assert config["resolutions"] == base["resolutions"]
    templates = {a["id"]: a["template"] for a in config["addresses"]}
    assert templates["bucket"] == "http://b.example/tiles/{z}/{x}/{-y}@2x.png"
    assert templates["keys"] == "/tiles/{z}/{x}/{-y}@2x.png"
    assert templates["tms"] == "/1.0.0/demo%402x/{z}/{x}/{-y}.png"  # the routes: by name
    app, _ = make_app(tmp_path, PIXEL_RATIOS="1,2")
    index = app.test_client().get("/").text
    assert "/preview/default%402x" in index
    assert app.test_client().get("/preview/default@2x").status_code == 200


@pytest.mark.parametrize("form", ["/{key}", "/miss/{key}", "/?tile={key}"])
def test_2x_tiles_under_the_prototypes_example_prefix(tmp_path, form):
    """The prototype's TILE_PREFIX=1.0.0/<name>/ with PIXEL_RATIOS=1,2: a 2x key is
    that layer's 2x tile in the plain and both redirect forms, stored under that key."""
    prefix = "1.0.0/tms-mercator-naip/"
    app, service = make_app(tmp_path, TILE_PREFIX=prefix, PIXEL_RATIOS="1,2")
    key = f"{prefix}3/2/5@2x.png"
    with responses.RequestsMock() as wms:
        wms.get(WMS, body=png(512, 512), content_type="image/png")
        answer = app.test_client().get(form.format(key=key))
        assert answer.status_code == 200, answer.text
        sent = parse_qs(urlsplit(wms.calls[0].request.url).query)
    assert (sent["WIDTH"], sent["MAP_RESOLUTION"]) == (["512"], ["144"])
    wait_uploaded(service, key)
    assert service.store.get(key).data == answer.data
