"""Addresses (service/addresses.py): which tile of which layer a key or a route names,
or the 400/404 and its one-line reason, without the app or a WMS."""

from __future__ import annotations

import re

import pytest

from s3maptiler.config import Layer, with_pixel_ratios
from s3maptiler.render.guard import WMSGuard
from s3maptiler.render.runtime import LayerRuntime
from s3maptiler.service.addresses import Addresses, BadTileRequest, TileNotFound
from s3maptiler.tiles.dimensions import parse_dimensions
from s3maptiler.tiles.grids import Tile

WMS = "http://127.0.0.1:9/wms"


def addresses(*layers: Layer) -> Addresses:
    guard = WMSGuard(4, 1.0, 5, 10.0)
    runtimes = [LayerRuntime.build(v, guard) for v in with_pixel_ratios(list(layers))]
    return Addresses(runtimes)


def layer(name: str = "roads", **fields) -> Layer:
    return Layer(name=name, wms_url=WMS, wms_layers="roads", **fields)


def test_a_tms_key_is_the_layers_tile_in_tms_numbering():
    request = addresses(layer()).resolve("tiles/12/1205/2556.png")
    # Tiles are numbered from the top (XYZ) inside; TMS row 2556 of zoom 12 is row 1539.
    assert (request.layer.layer.name, request.tile, request.ext) == (
        "roads",
        Tile(1205, 1539, 12),
        "png",
    )
    assert request.key == "tiles/12/1205/2556.png"
    assert not request.outside_extent


def test_the_longest_prefix_owns_a_nested_key():
    found = addresses(layer("outer", prefix="t/"), layer("inner", prefix="t/in/"))
    assert found.resolve("t/in/3/1/1.png").layer.layer.name == "inner"
    assert found.resolve("t/3/1/1.png").layer.layer.name == "outer"


@pytest.mark.parametrize(
    ("key", "error", "reason"),
    [
        ("other/1/0/0.png", TileNotFound, "no layer serves this key prefix"),
        ("tiles/1/0/../0.png", BadTileRequest, "'.' or '..' segment"),
        ("tiles/1/0/0.png\\", BadTileRequest, "characters a tile key never has"),
        ("tiles/1/0.png", BadTileRequest, "not a tms tile path"),
    ],
)
def test_a_key_that_is_no_layers_key_is_not_owned(key, error, reason):
    found = addresses(layer())
    with pytest.raises(error, match=re.escape(reason)):
        found.resolve(key)
    assert found.owned(key) is None


@pytest.mark.parametrize(
    ("key", "error", "reason"),
    [
        ("tiles/3/8/0.png", TileNotFound, "tile out of range"),
        ("tiles/18/0/0.png", TileNotFound, "zoom 18 outside 0..16 of layer roads"),
        ("tiles/3/1/1.gif", TileNotFound, None),
        ("tiles/3/1/1@2x.png", TileNotFound, "layer roads serves no @2x tiles"),
    ],
)
def test_a_layers_key_it_cannot_serve_is_its_404(key, error, reason):
    found = addresses(layer(max_zoom=16))
    with pytest.raises(error, match=reason):
        found.resolve(key)
    with pytest.raises(error):  # the layer's key: its answer, not "someone else's key"
        found.owned(key)


def test_outside_the_extent_is_404_or_a_blank_by_setting():
    manhattan = (-74.03, 40.69, -73.9, 40.88)
    london = "tiles/12/2046/2739.png"  # TMS row of a z12 tile over London
    with pytest.raises(TileNotFound, match="outside the extent of layer roads"):
        addresses(layer(extent=manhattan)).resolve(london)
    request = addresses(layer(extent=manhattan, outside_extent="blank")).resolve(london)
    assert request.outside_extent
    assert not addresses(layer(extent=manhattan)).resolve("tiles/12/1205/2556.png").outside_extent


def test_a_2x_key_is_the_layers_2x_layer():
    request = addresses(layer(pixel_ratios=(1, 2))).resolve("tiles/3/1/1@2x.png")
    assert request.layer.layer.name == "roads@2x"
    assert request.layer.grid.tile_size == 512


def test_routes_name_a_layer_and_get_its_own_key():
    found = addresses(layer(layout="xyz"))
    via_tms = found.request_via("roads", "tms", "3/1/6.png")
    assert via_tms.tile == Tile(1, 1, 3)  # TMS row 6 is XYZ row 1 at zoom 3
    assert via_tms.key == "tiles/3/1/1.png"
    assert found.request_for("roads", Tile(1, 1, 3)).key == "tiles/3/1/1.png"
    with pytest.raises(TileNotFound, match="no layer named 'nope'"):
        found.request_for("nope", Tile(0, 0, 0))
    with pytest.raises(BadTileRequest):
        found.request_via("roads", "tms", "3/x/6.png")


def test_a_dimension_value_picks_the_layers_runtime_and_a_bad_one_is_400():
    months = parse_dimensions(
        {"time": {"values": ["2024-01-31", "2024-02-29"], "default": "2024-02-29"}}
    )
    found = addresses(layer(dimensions=months))
    at_january = found.resolve("tiles/2024-01-31/3/1/1.png")
    assert at_january.layer.layer.prefix == "tiles/2024-01-31/"
    assert found.resolve("tiles/3/1/1.png").layer.layer.prefix == "tiles/"  # the default's key
    with pytest.raises(BadTileRequest):
        found.resolve("tiles/2031-01-31/3/1/1.png")
