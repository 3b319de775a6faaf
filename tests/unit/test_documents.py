"""TMS, WMTS and ArcGIS documents: parsed back the way clients read them."""

import doctest
import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET

import mercantile
import pytest

from s3maptiler.config import Layer
from s3maptiler.documents import arcgis, paths, standard_grids, tms, views, wmts, xmltext
from s3maptiler.documents.arcgis import arcgis_mapserver, json_document
from s3maptiler.documents.errors import (
    CannotDescribe,
    InvalidCallback,
    Skipped,
    UnknownFormat,
    UnknownMode,
)
from s3maptiler.documents.paths import arcgis_service_path, tile_map_path, tms_service_path
from s3maptiler.documents.tms import tile_map, tile_map_service
from s3maptiler.documents.views import skipped_layers
from s3maptiler.documents.wmts import tile_matrix_set_id, wmts_capabilities
from s3maptiler.tiles.grids import (
    GLOBAL_GEODETIC,
    WEB_MERCATOR,
    WORLD_CRS84_QUAD,
    Bbox,
    custom_grid,
    get_grid,
)

BASE = "https://tiles.example.org"
E = 20037508.342789244
WMTS = "{http://www.opengis.net/wmts/1.0}"
OWS = "{http://www.opengis.net/ows/1.1}"
XLINK = "{http://www.w3.org/1999/xlink}"
# A number written in exponent form, anywhere in a document.
EXPONENT = re.compile(r"[0-9.][eE][+-]?[0-9]")

# A Swiss LV95 grid like an ArcGIS cache: tiles counted from the top-left corner, and
# the bbox is not a whole number of tiles high, so the bottom edge moves with zoom.
SWISS = custom_grid(
    "swiss",
    "EPSG:2056",
    (2420000.0, 1350000.0),
    256,
    [4000.0, 2000.0, 1000.0, 500.0],
    bbox=Bbox(2420000.0, 1030000.0, 2900000.0, 1350000.0),
)


def make_layer(name="roads", **fields) -> Layer:
    fields.setdefault("prefix", f"{name}/")
    return Layer(name=name, wms_url="http://127.0.0.1:1/wms", wms_layers="all", **fields)


def parse(text: str) -> ET.Element:
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    return ET.fromstring(text.encode("utf-8"))


def wmts_layer(root: ET.Element, name: str) -> ET.Element:
    for layer in root.iter(f"{WMTS}Layer"):
        if layer.findtext(f"{OWS}Identifier") == name:
            return layer
    raise AssertionError(f"no layer {name}")


def matrix_set(root: ET.Element, set_id: str) -> ET.Element:
    sets = [
        s
        for s in root.find(f"{WMTS}Contents").findall(f"{WMTS}TileMatrixSet")
        if s.findtext(f"{OWS}Identifier") == set_id
    ]
    assert len(sets) == 1, f"{len(sets)} TileMatrixSets called {set_id}"
    return sets[0]


def test_module_doctests():
    for module in (xmltext, views, paths, standard_grids, tms, wmts, arcgis):
        assert doctest.testmod(module).failed == 0


# --------------------------------------------------------------------------- TMS


def test_tile_map_service_lists_each_layer_with_its_profile():
    layers = [make_layer("roads", title="Roads & rails"), make_layer("geo", grid="EPSG:4326")]
    root = parse(tile_map_service(layers, BASE))
    assert root.tag == "TileMapService"
    assert root.get("version") == "1.0.0"
    maps = root.find("TileMaps").findall("TileMap")
    assert [(m.get("title"), m.get("srs"), m.get("profile"), m.get("href")) for m in maps] == [
        ("Roads & rails", "EPSG:3857", "global-mercator", f"{BASE}/1.0.0/roads"),
        ("geo", "EPSG:4326", "global-geodetic", f"{BASE}/1.0.0/geo"),
    ]


def test_tile_map_service_in_keys_mode_leaves_out_layouts_tms_cannot_express():
    layers = [make_layer("a", layout="tms"), make_layer("b", layout="xyz")]
    root = parse(tile_map_service(layers, BASE, mode="keys"))
    maps = root.find("TileMaps").findall("TileMap")
    assert [m.get("href") for m in maps] == [f"{BASE}/a/tilemapresource.xml"]
    assert [s.layer for s in skipped_layers(layers, "tms", "keys")] == ["b"]
    # The service's own routes work for every layout.
    assert skipped_layers(layers, "tms", "service") == []
    assert len(parse(tile_map_service(layers, BASE)).find("TileMaps")) == 2


def test_tile_map_web_mercator():
    layer = make_layer(max_zoom=4, min_zoom=2)
    root = parse(tile_map(layer, BASE))
    assert root.get("version") == "1.0.0"
    assert root.get("tilemapservice") == f"{BASE}/1.0.0/"
    assert root.findtext("SRS") == "EPSG:3857"
    box = root.find("BoundingBox")
    assert [float(box.get(k)) for k in ("minx", "miny", "maxx", "maxy")] == [-E, -E, E, E]
    origin = root.find("Origin")  # bottom-left
    assert (float(origin.get("x")), float(origin.get("y"))) == (-E, -E)
    fmt = root.find("TileFormat")
    assert fmt.attrib == {
        "width": "256",
        "height": "256",
        "mime-type": "image/png",
        "extension": "png",
    }
    tile_sets = root.find("TileSets")
    assert tile_sets.get("profile") == "global-mercator"
    sets = tile_sets.findall("TileSet")
    # From order 0 even though min_zoom is 2: GDAL needs order 0 and its href.
    assert [s.get("order") for s in sets] == ["0", "1", "2", "3", "4"]
    assert sets[0].get("units-per-pixel") == "156543.03392804097"  # ONE tile at zoom 0
    assert [float(s.get("units-per-pixel")) for s in sets] == [
        156543.03392804097 / 2**z for z in range(5)
    ]
    assert [s.get("href") for s in sets] == [f"{BASE}/1.0.0/roads/{z}" for z in range(5)]


def test_tile_map_geodetic_has_two_tiles_at_zoom_0_and_no_exponents():
    layer = make_layer("geo", grid="EPSG:4326", max_zoom=21, format="jpeg")
    text = tile_map(layer, BASE)
    root = parse(text)
    assert root.findtext("SRS") == "EPSG:4326"
    assert root.find("Origin").attrib == {"x": "-180", "y": "-90"}
    assert root.find("TileSets").get("profile") == "global-geodetic"
    sets = root.find("TileSets").findall("TileSet")
    assert sets[0].get("units-per-pixel") == "0.703125"
    assert float(sets[21].get("units-per-pixel")) == 0.703125 / 2**21
    assert root.find("TileFormat").get("extension") == "jpg"
    assert root.find("TileFormat").get("mime-type") == "image/jpeg"
    assert not EXPONENT.search(text)


def test_tile_map_keys_mode_points_at_the_layer_prefix():
    layer = make_layer(prefix="maps/roads/", max_zoom=1)
    root = parse(tile_map(layer, BASE, mode="keys"))
    assert root.get("tilemapservice") == f"{BASE}/1.0.0/tilemapservice.xml"
    assert [s.get("href") for s in root.iter("TileSet")] == [
        f"{BASE}/maps/roads/0",
        f"{BASE}/maps/roads/1",
    ]
    assert tile_map_path(layer, "keys") == "maps/roads/tilemapresource.xml"
    assert tile_map_path(layer) == "1.0.0/roads"
    assert tms_service_path() == "1.0.0/"


@pytest.mark.parametrize("layout", ["xyz", "wmts", "arcgis", "quadkey"])
def test_tile_map_keys_mode_refuses_other_layouts(layout):
    with pytest.raises(CannotDescribe, match=layout):
        tile_map(make_layer(layout=layout), BASE, mode="keys")
    # The same layer is fine through the service's TMS route.
    assert parse(tile_map(make_layer(layout=layout), BASE)).tag == "TileMap"


def test_tms_refuses_a_grid_without_one_bottom_left_origin():
    layer = make_layer("swiss", grid="swiss", grid_def=SWISS, max_zoom=3)
    with pytest.raises(CannotDescribe, match="origin"):
        tile_map(layer, BASE)
    assert [s.layer for s in skipped_layers([layer], "tms", "service")] == ["swiss"]
    assert parse(tile_map_service([layer], BASE)).find("TileMaps").findall("TileMap") == []


# --------------------------------------------------------------------------- WMTS

# The schema's order of Layer children (OGC 07-057r7).
LAYER_ORDER = [
    f"{OWS}Title",
    f"{OWS}Abstract",
    f"{OWS}WGS84BoundingBox",
    f"{OWS}Identifier",
    f"{OWS}BoundingBox",
    f"{OWS}Metadata",
    f"{WMTS}Style",
    f"{WMTS}Format",
    f"{WMTS}InfoFormat",
    f"{WMTS}Dimension",
    f"{WMTS}TileMatrixSetLink",
    f"{WMTS}ResourceURL",
]


def test_wmts_document_shape_and_layer_child_order():
    text = wmts_capabilities([make_layer(title="Roads <main>", max_zoom=3)], BASE)
    root = parse(text)
    assert root.tag == f"{WMTS}Capabilities"
    assert root.get("version") == "1.0.0"
    # Prefixes clients and people expect, not ns0/ns1.
    assert 'xmlns:ows="http://www.opengis.net/ows/1.1"' in text
    assert 'xmlns:xlink="http://www.w3.org/1999/xlink"' in text
    assert [child.tag for child in root] == [
        f"{OWS}ServiceIdentification",
        f"{OWS}OperationsMetadata",
        f"{WMTS}Contents",
        f"{WMTS}ServiceMetadataURL",
    ]
    assert root.find(f"{WMTS}ServiceMetadataURL").get(f"{XLINK}href") == (
        f"{BASE}/wmts/1.0.0/WMTSCapabilities.xml"
    )
    layer = wmts_layer(root, "roads")
    tags = [child.tag for child in layer]
    assert tags == [
        f"{OWS}Title",
        f"{OWS}WGS84BoundingBox",
        f"{OWS}Identifier",
        f"{OWS}BoundingBox",
        f"{WMTS}Style",
        f"{WMTS}Format",
        f"{WMTS}TileMatrixSetLink",
        f"{WMTS}ResourceURL",
    ]
    assert tags == sorted(tags, key=LAYER_ORDER.index)
    assert layer.findtext(f"{OWS}Title") == "Roads <main>"
    style = layer.find(f"{WMTS}Style")
    assert style.get("isDefault") == "true"
    assert style.findtext(f"{OWS}Identifier") == "default"
    assert layer.findtext(f"{WMTS}Format") == "image/png"
    box = layer.find(f"{OWS}WGS84BoundingBox")
    assert box.findtext(f"{OWS}LowerCorner") == "-180 -85.0511287798066"
    assert box.findtext(f"{OWS}UpperCorner") == "180 85.0511287798066"
    native = layer.find(f"{OWS}BoundingBox")
    assert native.get("crs") == "urn:ogc:def:crs:EPSG::3857"
    assert native.findtext(f"{OWS}UpperCorner") == "20037508.342789244 20037508.342789244"
    assert not EXPONENT.search(text)


def test_wmts_kvp_operations_in_service_mode_only():
    layers = [make_layer(layout="xyz")]
    root = parse(wmts_capabilities(layers, BASE))
    operations = root.find(f"{OWS}OperationsMetadata").findall(f"{OWS}Operation")
    assert [op.get("name") for op in operations] == ["GetCapabilities", "GetTile"]
    for op in operations:
        get = op.find(f"{OWS}DCP/{OWS}HTTP/{OWS}Get")
        assert get.get(f"{XLINK}href") == f"{BASE}/wmts?"
        constraint = get.find(f"{OWS}Constraint")
        assert constraint.get("name") == "GetEncoding"
        assert constraint.findtext(f"{OWS}AllowedValues/{OWS}Value") == "KVP"
    keys = parse(wmts_capabilities(layers, BASE, mode="keys"))
    assert keys.find(f"{OWS}OperationsMetadata") is None


def test_google_maps_compatible_matrix_set():
    root = parse(wmts_capabilities([make_layer(max_zoom=5)], BASE))
    link = wmts_layer(root, "roads").find(f"{WMTS}TileMatrixSetLink")
    assert link.findtext(f"{WMTS}TileMatrixSet") == "GoogleMapsCompatible"
    assert link.find(f"{WMTS}TileMatrixSetLimits") is None  # the layer covers all of it
    tms = matrix_set(root, "GoogleMapsCompatible")
    assert tms.findtext(f"{OWS}SupportedCRS") == "urn:ogc:def:crs:EPSG::3857"
    assert tms.findtext(f"{WMTS}WellKnownScaleSet") == (
        "urn:ogc:def:wkss:OGC:1.0:GoogleMapsCompatible"
    )
    matrices = tms.findall(f"{WMTS}TileMatrix")
    assert [m.findtext(f"{OWS}Identifier") for m in matrices] == ["0", "1", "2", "3", "4", "5"]
    assert matrices[0].findtext(f"{WMTS}ScaleDenominator") == "559082264.0287178"
    for z, m in enumerate(matrices):
        assert float(m.findtext(f"{WMTS}ScaleDenominator")) == 559082264.0287178 / 2**z
        assert m.findtext(f"{WMTS}TopLeftCorner") == "-20037508.342789244 20037508.342789244"
        assert m.findtext(f"{WMTS}TileWidth") == m.findtext(f"{WMTS}TileHeight") == "256"
        assert int(m.findtext(f"{WMTS}MatrixWidth")) == 2**z
        assert int(m.findtext(f"{WMTS}MatrixHeight")) == 2**z


def test_world_crs84_quad_matrix_set_is_lat_lon_and_two_by_one():
    # Both spellings of the 2x1 EPSG:4326 grid share one matrix set.
    layers = [
        make_layer("a", grid="EPSG:4326", max_zoom=3),
        make_layer("b", grid="WorldCRS84Quad", max_zoom=2),
    ]
    root = parse(wmts_capabilities(layers, BASE))
    tms = matrix_set(root, "WorldCRS84Quad")
    assert len(root.find(f"{WMTS}Contents").findall(f"{WMTS}TileMatrixSet")) == 1
    assert tms.findtext(f"{OWS}SupportedCRS") == "urn:ogc:def:crs:EPSG::4326"
    assert tms.find(f"{WMTS}WellKnownScaleSet") is None
    matrices = tms.findall(f"{WMTS}TileMatrix")
    assert len(matrices) == 4  # up to the highest max_zoom of its layers
    assert matrices[0].findtext(f"{WMTS}ScaleDenominator") == "279541132.0143589"
    for z, m in enumerate(matrices):
        assert m.findtext(f"{WMTS}TopLeftCorner") == "90 -180"
        assert int(m.findtext(f"{WMTS}MatrixWidth")) == 2 ** (z + 1)
        assert int(m.findtext(f"{WMTS}MatrixHeight")) == 2**z
    # Layer b stops at zoom 2 and says so.
    limits = wmts_layer(root, "b").find(f"{WMTS}TileMatrixSetLink/{WMTS}TileMatrixSetLimits")
    assert [e.findtext(f"{WMTS}TileMatrix") for e in limits] == ["0", "1", "2"]
    assert wmts_layer(root, "a").find(f".//{WMTS}TileMatrixSetLimits") is None
    box = wmts_layer(root, "a").find(f"{OWS}BoundingBox")  # lat/lon order for the URN
    assert box.findtext(f"{OWS}LowerCorner") == "-90 -180"


def test_wmts_limits_follow_the_extent_and_zoom_range():
    extent = (5.9, 45.8, 10.5, 47.8)  # Switzerland, lon/lat
    layer = make_layer(min_zoom=3, max_zoom=9, extent=extent)
    root = parse(wmts_capabilities([layer], BASE))
    element = wmts_layer(root, "roads")
    box = element.find(f"{OWS}WGS84BoundingBox")
    assert box.findtext(f"{OWS}LowerCorner") == "5.9 45.8"
    assert box.findtext(f"{OWS}UpperCorner") == "10.5 47.8"
    native = element.find(f"{OWS}BoundingBox")
    lower = [float(v) for v in native.findtext(f"{OWS}LowerCorner").split()]
    assert lower == pytest.approx(list(mercantile.xy(5.9, 45.8)), rel=1e-12)
    limits = element.findall(f".//{WMTS}TileMatrixLimits")
    assert [e.findtext(f"{WMTS}TileMatrix") for e in limits] == [str(z) for z in range(3, 10)]
    for entry in limits:
        z = int(entry.findtext(f"{WMTS}TileMatrix"))
        tiles = list(mercantile.tiles(*extent, zooms=z))
        expected = (
            min(t.y for t in tiles),
            max(t.y for t in tiles),
            min(t.x for t in tiles),
            max(t.x for t in tiles),
        )
        got = tuple(
            int(entry.findtext(f"{WMTS}{k}"))
            for k in ("MinTileRow", "MaxTileRow", "MinTileCol", "MaxTileCol")
        )
        assert got == expected, f"zoom {z}"


def test_wmts_resource_url_templates():
    layers = [
        make_layer("t", layout="tms", format="jpeg"),
        make_layer("x", layout="xyz", prefix="cache/x/"),
        make_layer("w", layout="wmts", prefix=""),
        make_layer("a", layout="arcgis"),
        make_layer("q", layout="quadkey"),
    ]

    def templates(mode):
        root = parse(wmts_capabilities(layers, BASE, mode=mode))
        return {
            layer.findtext(f"{OWS}Identifier"): layer.find(f"{WMTS}ResourceURL")
            for layer in root.iter(f"{WMTS}Layer")
        }

    service = templates("service")
    assert sorted(service) == ["a", "q", "t", "w", "x"]
    assert service["t"].get("template") == (
        f"{BASE}/wmts/1.0.0/t/{{Style}}/{{TileMatrixSet}}/{{TileMatrix}}/{{TileRow}}/{{TileCol}}.jpg"
    )
    assert service["t"].get("format") == "image/jpeg"
    assert service["t"].get("resourceType") == "tile"

    keys = templates("keys")
    assert sorted(keys) == ["w", "x"]
    assert keys["x"].get("template") == f"{BASE}/cache/x/{{TileMatrix}}/{{TileCol}}/{{TileRow}}.png"
    assert keys["w"].get("template") == f"{BASE}/{{TileMatrix}}/{{TileRow}}/{{TileCol}}.png"
    assert skipped_layers(layers, "wmts", "keys") == [
        Skipped("t", "layout tms cannot be written as a WMTS ResourceURL template"),
        Skipped("a", "layout arcgis cannot be written as a WMTS ResourceURL template"),
        Skipped("q", "layout quadkey cannot be written as a WMTS ResourceURL template"),
    ]


def test_wmts_custom_grid_in_its_own_crs():
    layer = make_layer("swiss", grid="swiss", grid_def=SWISS, max_zoom=3)
    root = parse(wmts_capabilities([layer], BASE))
    assert tile_matrix_set_id(SWISS) == "swiss"
    tms = matrix_set(root, "swiss")
    assert tms.findtext(f"{OWS}SupportedCRS") == "urn:ogc:def:crs:EPSG::2056"
    assert tms.find(f"{WMTS}WellKnownScaleSet") is None
    first = tms.find(f"{WMTS}TileMatrix")
    assert first.findtext(f"{WMTS}TopLeftCorner") == "2420000 1350000"  # easting northing
    # 4000 m/px at 0.28 mm per pixel.
    assert float(first.findtext(f"{WMTS}ScaleDenominator")) == pytest.approx(4000 / 0.00028)
    element = wmts_layer(root, "swiss")
    # No projection library: no lon/lat box can be made, the native one is exact.
    assert element.find(f"{OWS}WGS84BoundingBox") is None
    assert element.find(f"{OWS}BoundingBox").findtext(f"{OWS}LowerCorner") == "2420000 1030000"


def test_tile_matrix_set_ids():
    assert tile_matrix_set_id(WEB_MERCATOR) == "GoogleMapsCompatible"
    assert tile_matrix_set_id(get_grid("global-mercator")) == "GoogleMapsCompatible"
    assert tile_matrix_set_id(GLOBAL_GEODETIC) == "WorldCRS84Quad"
    assert tile_matrix_set_id(WORLD_CRS84_QUAD) == "WorldCRS84Quad"


def test_documents_are_deterministic():
    layers = [
        make_layer("a", extent=(1.0, 2.0, 3.0, 4.0), max_zoom=6),
        make_layer("b", grid="EPSG:4326", layout="xyz"),
    ]
    for mode in ("service", "keys"):
        assert wmts_capabilities(layers, BASE, mode) == wmts_capabilities(layers, BASE, mode)
        assert tile_map_service(layers, BASE, mode) == tile_map_service(layers, BASE, mode)
    assert tile_map(layers[0], BASE) == tile_map(layers[0], BASE)
    assert json_document(arcgis_mapserver(layers[0])) == json_document(arcgis_mapserver(layers[0]))


def test_unknown_mode_is_refused():
    with pytest.raises(UnknownMode):
        wmts_capabilities([make_layer()], BASE, mode="bucket")
    with pytest.raises(UnknownMode):
        tile_map(make_layer(), BASE, mode="")


# --------------------------------------------------------------------------- ArcGIS


def test_arcgis_web_mercator_mapserver():
    layer = make_layer(title="Roads", min_zoom=2, max_zoom=18)
    doc = arcgis_mapserver(layer)
    assert doc["mapName"] == "Roads"
    assert doc["singleFusedMapCache"] is True
    assert doc["spatialReference"] == {"wkid": 102100, "latestWkid": 3857}
    assert "tilemap" not in doc["capabilities"].lower()
    assert doc["capabilities"] == "Map,TilesOnly"
    assert doc["exportTilesAllowed"] is False
    assert doc["layers"] == [] and doc["tables"] == []
    assert doc["units"] == "esriMeters"
    info = doc["tileInfo"]
    assert (info["rows"], info["cols"], info["dpi"]) == (256, 256, 96)
    assert info["format"] == "PNG32"
    assert info["origin"] == {"x": -E, "y": E}  # top-left
    assert info["spatialReference"] == {"wkid": 102100, "latestWkid": 3857}
    lods = info["lods"]
    # Every level of the scheme from 0 (GDAL reads the base resolution from level 0).
    assert [lod["level"] for lod in lods] == list(range(19))
    assert lods[0]["scale"] == pytest.approx(591657527.591555, rel=1e-6)
    assert lods[0]["resolution"] == 156543.03392804097
    for lod in lods:
        z = lod["level"]
        assert lod["resolution"] == 156543.03392804097 / 2**z
        assert lod["scale"] == pytest.approx(lod["resolution"] * 96 * 39.37, rel=1e-12)
    # The levels actually served.
    assert doc["minScale"] == pytest.approx(591657527.591555 / 4, rel=1e-6)
    assert doc["maxScale"] == pytest.approx(591657527.591555 / 2**18, rel=1e-6)
    assert doc["fullExtent"] == {
        "xmin": -E,
        "ymin": -E,
        "xmax": E,
        "ymax": E,
        "spatialReference": {"wkid": 102100, "latestWkid": 3857},
    }
    assert doc["initialExtent"] == doc["fullExtent"]


def test_arcgis_extent_is_projected_to_web_mercator():
    doc = arcgis_mapserver(make_layer(extent=(-74.3, 40.4, -73.6, 41.0)))
    left, bottom = mercantile.xy(-74.3, 40.4)
    right, top = mercantile.xy(-73.6, 41.0)
    box = doc["fullExtent"]
    assert [box["xmin"], box["ymin"], box["xmax"], box["ymax"]] == pytest.approx(
        [left, bottom, right, top], rel=1e-12
    )


def test_arcgis_geodetic_and_formats():
    doc = arcgis_mapserver(make_layer(grid="EPSG:4326", max_zoom=3, format="jpeg"))
    assert doc["spatialReference"] == {"wkid": 4326, "latestWkid": 4326}
    assert doc["units"] == "esriDecimalDegrees"
    assert doc["tileInfo"]["origin"] == {"x": -180.0, "y": 90.0}
    assert doc["tileInfo"]["lods"][0]["resolution"] == 0.703125
    assert doc["tileInfo"]["format"] == "JPEG"
    assert doc["tileInfo"]["compressionQuality"] > 0
    assert arcgis_mapserver(make_layer(format="png8"))["tileInfo"]["format"] == "PNG8"


def test_arcgis_custom_grid_keeps_its_wkid_and_origin():
    doc = arcgis_mapserver(make_layer("swiss", grid="swiss", grid_def=SWISS, max_zoom=3))
    assert doc["spatialReference"] == {"wkid": 2056, "latestWkid": 2056}
    assert doc["tileInfo"]["origin"] == {"x": 2420000.0, "y": 1350000.0}
    assert [lod["resolution"] for lod in doc["tileInfo"]["lods"]] == [4000, 2000, 1000, 500]
    assert arcgis_service_path(make_layer("swiss")) == "arcgis/rest/services/swiss/MapServer"


def test_json_document_formats():
    doc = arcgis_mapserver(make_layer())
    body, content_type = json_document(doc)
    assert content_type == "application/json"
    assert json.loads(body) == doc
    assert b"\n" not in body
    pretty, content_type = json_document(doc, "pjson")
    assert content_type == "application/json"
    assert json.loads(pretty) == doc
    assert b'\n  "tileInfo": {' in pretty
    with pytest.raises(UnknownFormat):
        json_document(doc, "html")


@pytest.mark.parametrize("callback", ["cb", "dojo.io.script.jsonp_dojoIoScript1._jsonpCallback"])
def test_jsonp_with_a_valid_callback(callback):
    doc = {"mapName": "caf\u00e9 \u2028"}
    body, content_type = json_document(doc, callback=callback)
    assert content_type == "application/javascript"
    prefix = f"/**/{callback}(".encode()
    assert body.startswith(prefix) and body.endswith(b");")
    assert json.loads(body[len(prefix) : -2]) == doc
    body.decode("ascii")  # U+2028 would end a JavaScript string literal


@pytest.mark.parametrize(
    "callback",
    ["alert(1)", "a b", "<script>", "", "a" * 129, "cb\n", "1cb", "a..b", "cb;", "cb.", "\u00e9"],
)
def test_jsonp_refuses_a_bad_callback(callback):
    with pytest.raises(InvalidCallback):
        json_document({"a": 1}, callback=callback)


def test_jsonp_callback_length_limit_is_inclusive():
    body, _ = json_document({}, callback="a" * 128)
    assert body.startswith(b"/**/" + b"a" * 128 + b"(")


# --------------------------------------------------------------------------- real clients


def gdalinfo_json(target: str) -> dict:
    if shutil.which("gdalinfo") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("gdalinfo is required under CI=true (Debian package gdal-bin)")
        pytest.skip("gdalinfo is not installed (Debian package gdal-bin)")
    # Opening reads only the local document; no tile is fetched.
    out = subprocess.run(
        ["gdalinfo", "-json", "-nomd", target],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "GDAL_HTTP_TIMEOUT": "1"},
    )
    return json.loads(out.stdout)


@pytest.mark.parametrize(
    ("grid", "max_zoom", "size", "transform"),
    [
        ("GoogleMapsCompatible", 5, [8192, 8192], [-E, E / 4096, 0.0, E, 0.0, -E / 4096]),
        ("EPSG:4326", 3, [4096, 2048], [-180.0, 0.703125 / 8, 0.0, 90.0, 0.0, -0.703125 / 8]),
    ],
)
@pytest.mark.parametrize("document", ["wmts", "tms"])
def test_gdal_opens_the_documents_at_max_zoom(tmp_path, document, grid, max_zoom, size, transform):
    layer = make_layer(grid=grid, max_zoom=max_zoom, min_zoom=1)
    path = tmp_path / f"{document}.xml"
    if document == "wmts":
        path.write_text(wmts_capabilities([layer], "http://127.0.0.1:9"), encoding="utf-8")
        info = gdalinfo_json(f"WMTS:{path}")
    else:
        path.write_text(tile_map(layer, "http://127.0.0.1:9"), encoding="utf-8")
        info = gdalinfo_json(str(path))
    assert info["size"] == size
    assert info["geoTransform"] == pytest.approx(transform, rel=1e-12, abs=1e-9)


def test_gdal_opens_a_wmts_layer_extent_on_whole_pixels(tmp_path):
    extent = (5.0, 45.0, 15.0, 55.0)
    layer = make_layer(grid="EPSG:4326", max_zoom=4, extent=extent)
    path = tmp_path / "wmts.xml"
    path.write_text(wmts_capabilities([layer], "http://127.0.0.1:9"), encoding="utf-8")
    info = gdalinfo_json(f"WMTS:{path}")
    res = 0.703125 / 16
    left, x_res, _, top, _, y_res = info["geoTransform"]
    assert (x_res, y_res) == (pytest.approx(res), pytest.approx(-res))
    # Snapped outwards to whole pixels of zoom 4, within one pixel of the extent.
    assert 5.0 - res < left <= 5.0
    assert 55.0 <= top < 55.0 + res
    width, height = info["size"]
    assert left + width * res == pytest.approx(15.0, abs=res)
    assert top - height * res == pytest.approx(45.0, abs=res)
    assert (left / res) == pytest.approx(round(left / res))  # on the tile matrix's pixels


def test_owslib_reads_the_wmts_document():
    wmts = pytest.importorskip("owslib.wmts")
    text = wmts_capabilities([make_layer(max_zoom=2)], BASE)
    service = wmts.WebMapTileService(f"{BASE}/wmts", xml=text.encode("utf-8"))
    assert "roads" in service.contents
    matrix = service.tilematrixsets["GoogleMapsCompatible"].tilematrix["0"]
    assert matrix.scaledenominator == pytest.approx(559082264.0287178)


def test_every_document_names_a_standard_grid_the_same_whatever_it_is_called():
    """One table says what a grid is: WMTS, OGC API and TMS agree on a renamed copy."""
    from dataclasses import replace

    from s3maptiler.documents.ogcapi import tile_matrix_set_of
    from s3maptiler.documents.tms import _tms_profile
    from s3maptiler.documents.wmts import tile_matrix_set_id
    from s3maptiler.tiles.grids import GLOBAL_GEODETIC, WEB_MERCATOR

    for grid, ids in (
        (WEB_MERCATOR, ("GoogleMapsCompatible", "WebMercatorQuad", "global-mercator")),
        (GLOBAL_GEODETIC, ("WorldCRS84Quad", "WorldCRS84Quad", "global-geodetic")),
    ):
        renamed = replace(grid, name="mine")
        named = (tile_matrix_set_id(renamed), tile_matrix_set_of(renamed).id)
        assert (*named, _tms_profile(renamed)) == ids
