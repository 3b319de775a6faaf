import json
from pathlib import Path

import pytest

from s3maptiler.config import ConfigError, load_settings
from s3maptiler.tiles.grids import WEB_MERCATOR, Tile

EXAMPLE = Path(__file__).resolve().parents[2] / "layers.example.toml"


def load(tmp_path, text: str):
    path = tmp_path / "layers.toml"
    path.write_text(text)
    return load_settings({"LAYERS_FILE": str(path)}, dotenv_path=None).layers


def test_the_shipped_example_loads():
    layers = {
        layer.name: layer
        for layer in load_settings(
            {"LAYERS_FILE": str(EXAMPLE), "WMS_SERVER": "http://wms.test/"}, dotenv_path=None
        ).layers
    }
    assert {layer.wms_url for layer in layers.values()} == {"http://wms.test/"}
    assert set(layers) == {
        *("demo", "nyc", "world4326", "esri"),
        *("photo", "coast", "retina", "months", "fresh"),  # one of each kind
    }
    assert layers["photo"].formats == ("webp",) and layers["coast"].formats == ("mixed",)
    assert layers["retina"].pixel_ratios == (1, 2) and layers["fresh"].cache_from_wms
    assert layers["months"].dimensions[0].wms_param == "TIME"
    assert layers["demo"].metatile == (4, 4) and layers["demo"].meta_buffer == 64
    assert layers["nyc"].layout == "xyz" and layers["nyc"].prefix == "nyc/"
    assert layers["world4326"].tile_grid.matrix_size(0) == (2, 1)
    assert layers["world4326"].formats == ("jpg", "jpeg")
    esri = layers["esri"].tile_grid
    # Esri's published Web Mercator scheme lands on our grid within a centimetre.
    for a, b in zip(
        esri.tile_bbox(Tile(3, 5, 4)), WEB_MERCATOR.tile_bbox(Tile(3, 5, 4)), strict=True
    ):
        assert abs(a - b) < 0.01


def test_defaults_apply_and_layers_override(tmp_path):
    a, b = load(
        tmp_path,
        """
wms_url = "http://wms.test/"
format = "jpeg"
[layers.a]
wms_layers = "x"
[layers.b]
wms_layers = "y"
format = "png"
prefix = "bee/"
""",
    )
    assert (a.format, a.prefix, a.title) == ("jpeg", "a/", "a")
    assert (b.format, b.prefix) == ("png", "bee/")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[layers.a]\nwms_url="http://w/"\nwms_layer="x"', "layer a: key 'wms_layer' is unknown"),
        ('[layers.a]\nwms_url="http://w/"', "layer a: key 'wms_layers' is missing"),
        ('[layers.a]\nwms_url="http://w/"\nwms_layers="x"\nlayout="s2"', "key 'layout'"),
        ('[layers.a]\nwms_url="http://w/"\nwms_layers="x"\nmax_zoom=-1', "key 'max_zoom'"),
        ('[layers.a]\nwms_url="http://w/"\nwms_layers="x"\ngrid="nope"', "layer a: unknown grid"),
        ('[layers.a]\nwms_url="ftp://w/"\nwms_layers="x"', "layer a: wms_url"),
        ('[layers.a]\nwms_url="http://w/"\nwms_layers="x"\nprefix="p"', "layer a: prefix"),
        ('[layers.a]\nwms_url="http://w/"\nwms_layers="x"\nextent=[10,0,5,1]', "key 'extent'"),
        ('[layers.a]\nwms_url="http://w/"\nwms_layers="x"\nmetatile="0x4"', "key 'metatile'"),
        ('[layers.a]\nwms_url="http://w/"\nwms_layers="x"\ntile_size=300', "key 'tile_size'"),
        (
            'colour="red"\n[layers.a]\nwms_url="http://w/"\nwms_layers="x"',
            "top level: key 'colour'",
        ),
        (
            'wms_url="http://w/"\n[layers.a]\nwms_layers="x"\n[layers.b]\nwms_layers="y"\n'
            'prefix="a/"',
            "layer b: key 'prefix' 'a/' is already layer a's",
        ),
        ("[layers.a\n", "not valid TOML"),
        ('wms_url="http://w/"', "no [layers.<name>] table"),
        (
            '[grids.g]\nsrs="EPSG:2056"\n[layers.a]\nwms_url="http://w/"\nwms_layers="x"\ngrid="g"',
            "grid g: key 'origin' is missing",
        ),
    ],
)
def test_bad_files_name_the_file_layer_and_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert message in str(info.value)
    assert str(tmp_path / "layers.toml") in str(info.value) or "LAYERS_FILE" in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file_names_the_setting(tmp_path):
    with pytest.raises(ConfigError, match="^LAYERS_FILE: cannot read"):
        load_settings({"LAYERS_FILE": str(tmp_path / "none.toml")}, dotenv_path=None)


def test_512_pixel_tiles_halve_the_resolutions(tmp_path):
    (layer,) = load(tmp_path, '[layers.a]\nwms_url="http://w/"\nwms_layers="x"\ntile_size=512')
    grid = layer.tile_grid
    assert grid.tile_size == 512
    assert grid.resolution(0) == WEB_MERCATOR.resolution(1)
    assert grid.tile_bbox(Tile(0, 0, 1)) == WEB_MERCATOR.tile_bbox(Tile(0, 0, 1))


def test_grids_from_an_arcgis_tileinfo_and_conf_xml(tmp_path):
    lods = [{"level": z, "resolution": 156543.03392800014 / 2**z, "scale": 1} for z in range(6)]
    info = {
        "tileInfo": {
            "rows": 256,
            "cols": 256,
            "origin": {"x": -20037508.342787, "y": 20037508.342787},
            "spatialReference": {"wkid": 102100, "latestWkid": 3857},
            "lods": lods,
        }
    }
    (tmp_path / "MapServer.json").write_text(json.dumps(info))
    lod_xml = "".join(
        f"<LODInfo><LevelID>{lod['level']}</LevelID><Scale>1</Scale>"
        f"<Resolution>{lod['resolution']!r}</Resolution></LODInfo>"
        for lod in lods
    )
    (tmp_path / "conf.xml").write_text(
        "<?xml version='1.0'?><CacheInfo xmlns:typens='http://www.esri.com/schemas/ArcGIS/10.1'>"
        "<TileCacheInfo><SpatialReference><WKID>102100</WKID><LatestWKID>3857</LatestWKID>"
        "</SpatialReference><TileOrigin><X>-20037508.342787</X><Y>20037508.342787</Y>"
        f"</TileOrigin><TileCols>256</TileCols><TileRows>256</TileRows><DPI>96</DPI>"
        f"<LODInfos>{lod_xml}</LODInfos></TileCacheInfo></CacheInfo>"
    )
    a, b = load(
        tmp_path,
        """
wms_url = "http://w/"
wms_layers = "x"
[grids.fromjson]
arcgis_tileinfo = "MapServer.json"
[grids.fromconf]
arcgis_conf = "conf.xml"
[layers.a]
grid = "fromjson"
[layers.b]
grid = "fromconf"
prefix = "b/"
""",
    )
    for layer in (a, b):
        grid = layer.tile_grid
        assert grid.srs == "EPSG:3857"
        assert grid.max_zoom == 5 and layer.max_zoom == 5
        assert grid.matrix_size(5) == (32, 32)


def test_metatile_1x1_draws_no_buffer_unless_asked(tmp_path):
    layers = load(
        tmp_path,
        """
wms_url = "http://wms.test/"
wms_layers = "x"
[layers.plain]
[layers.single]
metatile = "1x1"
[layers.single_buffered]
metatile = 1
meta_buffer = 16
""",
    )
    got = {layer.name: (layer.metatile, layer.meta_buffer) for layer in layers}
    assert got == {
        "plain": ((4, 4), 64),
        "single": ((1, 1), 0),
        "single_buffered": ((1, 1), 16),
    }


def test_a_top_level_meta_buffer_is_explicit_for_1x1_layers(tmp_path):
    (layer,) = load(
        tmp_path,
        """
wms_url = "http://wms.test/"
wms_layers = "x"
meta_buffer = 8
[layers.single]
metatile = "1x1"
""",
    )
    assert (layer.metatile, layer.meta_buffer) == ((1, 1), 8)


def test_wms_server_is_the_url_of_layers_that_give_none(tmp_path):
    text = (
        '[layers.a]\nwms_layers = "x"\n[layers.b]\nwms_layers = "y"\nwms_url = "http://b.test/"\n'
    )
    path = tmp_path / "layers.toml"
    path.write_text(text)
    env = {"LAYERS_FILE": str(path), "WMS_SERVER": "http://server.test/"}
    a, b = load_settings(env, dotenv_path=None).layers
    assert (a.wms_url, b.wms_url) == ("http://server.test/", "http://b.test/")
    with pytest.raises(ConfigError, match="layer a: key 'wms_url' is missing"):
        load_settings({"LAYERS_FILE": str(path)}, dotenv_path=None)
