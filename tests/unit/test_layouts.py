"""Key layouts: exact round trips, strict parsing, and the examples from the issue."""

import doctest

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3maptiler.tiles import layouts
from s3maptiler.tiles.grids import (
    GLOBAL_GEODETIC,
    WEB_MERCATOR,
    Bbox,
    Tile,
    TileGrid,
    TileOutOfRange,
    custom_grid,
)
from s3maptiler.tiles.layouts import LAYOUTS, LayoutError, TileKey, UnknownLayout, get_layout

E = 20037508.342789244

# ArcGIS-style grid large enough for the issue's example (row 0x05397fb1 at level 9).
BIG_ARCGIS_GRID = custom_grid(
    "big",
    "EPSG:3857",
    (0.0, 0.0),
    256,
    [2.0 ** (6 - z) for z in range(12)],  # 2**18 tiles across at z0, 2**27 at z9
    bbox=Bbox(0.0, -(2.0**32), 2.0**32, 0.0),
)
ESRI_GRID = custom_grid(
    "esri",
    "EPSG:3857",
    (-20037508.342787, 20037508.342787),
    256,
    [156543.03392800014 / 2**z for z in range(20)],
)
GRIDS = [WEB_MERCATOR, GLOBAL_GEODETIC, ESRI_GRID, BIG_ARCGIS_GRID]
EXTS = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=5)


@st.composite
def grid_tiles(draw, grid: TileGrid) -> Tile:
    z = draw(st.integers(0, grid.max_zoom))
    cols, rows = grid.matrix_size(z)
    return Tile(draw(st.integers(0, cols - 1)), draw(st.integers(0, rows - 1)), z)


@st.composite
def layout_grid_tile(draw):
    layout = draw(st.sampled_from(sorted(LAYOUTS)))
    grid = draw(st.sampled_from(GRIDS))
    return LAYOUTS[layout], grid, draw(grid_tiles(grid)), draw(EXTS)


def quadkey_can_express(tile: Tile) -> bool:
    return tile.z > 0 and tile.x < 2**tile.z and tile.y < 2**tile.z


def test_module_doctests_pass():
    result = doctest.testmod(layouts)
    assert result.attempted > 0
    assert result.failed == 0


@settings(max_examples=1000, deadline=None)
@given(layout_grid_tile())
def test_format_then_parse_gives_the_tile_back(args):
    layout, grid, tile, ext = args
    if layout.name == "quadkey" and not quadkey_can_express(tile):
        with pytest.raises(LayoutError):
            layout.format(tile, ext, grid)
        return
    key = layout.format(tile, ext, grid)
    assert layout.parse(key, grid) == TileKey(tile, ext)
    # the canonical key comes back unchanged: the S3 key equals the missed key
    parsed = layout.parse(key, grid)
    assert layout.format(*parsed, grid) == key
    assert layout.format(parsed.tile, parsed.ext, grid) == key


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(["tms", "xyz", "wmts"]),
    st.integers(0, 30),
    st.integers(0, 2**25),
    st.integers(0, 2**25),
    EXTS,
)
def test_every_parsable_decimal_key_is_canonical(name, a, b, c, ext):
    key = f"{a}/{b}/{c}.{ext}"
    layout = LAYOUTS[name]
    try:
        parsed = layout.parse(key, WEB_MERCATOR)
    except TileOutOfRange:
        return
    assert layout.format(*parsed, WEB_MERCATOR) == key


def test_arcgis_example_from_the_issue():
    layout = get_layout("arcgis")
    key = "L09/R05397fb1/C0012d687.png"
    parsed = layout.parse(key, BIG_ARCGIS_GRID)
    assert parsed == TileKey(Tile(x=0x0012D687, y=0x05397FB1, z=9), "png")
    assert layout.format(*parsed, BIG_ARCGIS_GRID) == key
    with pytest.raises(TileOutOfRange, match="outside 0..511 at zoom 9"):
        layout.parse(key, WEB_MERCATOR)


def test_arcgis_web_mercator_example_both_ways():
    layout = get_layout("arcgis")
    assert layout.parse("L05/R0000001a/C0000001b.png", WEB_MERCATOR) == TileKey(
        Tile(x=27, y=26, z=5), "png"
    )
    assert layout.format(Tile(x=27, y=26, z=5), "png", WEB_MERCATOR) == (
        "L05/R0000001a/C0000001b.png"
    )
    assert layout.format(Tile(0, 0, 0), "jpg", WEB_MERCATOR) == "L00/R00000000/C00000000.jpg"
    assert layout.format(Tile(1, 2, 12), "png", WEB_MERCATOR) == "L12/R00000002/C00000001.png"


def test_arcgis_accepts_upper_case_hex_but_writes_lower_case():
    layout = get_layout("arcgis")
    parsed = layout.parse("L05/R0000001A/C0000001B.PNG", WEB_MERCATOR)
    assert parsed == TileKey(Tile(x=27, y=26, z=5), "png")
    # documented: the canonical key differs from the received one in case
    assert layout.format(*parsed, WEB_MERCATOR) == "L05/R0000001a/C0000001b.png"


def test_arcgis_level_is_decimal_and_row_comes_before_col():
    layout = get_layout("arcgis")
    tile = Tile(x=1, y=1000, z=10)
    assert layout.format(tile, "png", WEB_MERCATOR) == "L10/R000003e8/C00000001.png"
    with pytest.raises(LayoutError):
        layout.parse("L0a/R00000000/C00000000.png", WEB_MERCATOR)  # hex level
    with pytest.raises(LayoutError):
        layout.parse("L5/R00000000/C00000000.png", WEB_MERCATOR)  # not %02d
    with pytest.raises(LayoutError):
        layout.parse("L005/R00000000/C00000000.png", WEB_MERCATOR)
    with pytest.raises(LayoutError):
        layout.parse("L05/R0000000/C00000000.png", WEB_MERCATOR)  # 7 hex digits


def test_tms_rows_count_from_the_bottom():
    tms, xyz = get_layout("tms"), get_layout("xyz")
    # z=1: TMS y=0 is the bottom row, which is top-down row 1
    assert tms.parse("1/0/0.png", WEB_MERCATOR).tile == Tile(0, 1, 1)
    assert xyz.parse("1/0/0.png", WEB_MERCATOR).tile == Tile(0, 0, 1)
    assert tms.format(Tile(0, 1, 1), "png", WEB_MERCATOR) == "1/0/0.png"
    assert tms.format(Tile(0, 0, 1), "png", WEB_MERCATOR) == "1/0/1.png"
    # the bottom row's bbox starts at the bottom of the world
    tile = tms.parse("3/5/0.png", WEB_MERCATOR).tile
    assert WEB_MERCATOR.tile_bbox(tile).bottom == -E
    # geodetic: 2 rows at z1
    assert tms.parse("1/3/1.jpeg", GLOBAL_GEODETIC) == TileKey(Tile(3, 0, 1), "jpeg")


def test_tms_out_of_range_row_is_reported_as_written():
    with pytest.raises(TileOutOfRange, match=r"^y 2 outside 0..1 at zoom 1$"):
        get_layout("tms").parse("1/0/2.png", WEB_MERCATOR)


def test_wmts_is_matrix_row_col():
    wmts = get_layout("wmts")
    assert wmts.parse("5/26/27.png", WEB_MERCATOR).tile == Tile(x=27, y=26, z=5)
    assert wmts.format(Tile(x=27, y=26, z=5), "png", WEB_MERCATOR) == "5/26/27.png"


def test_quadkey_examples():
    quadkey = get_layout("quadkey")
    # Bing Maps documentation: tile (3, 5) at level 3 is quadkey 213
    assert quadkey.format(Tile(3, 5, 3), "png", WEB_MERCATOR) == "213.png"
    assert quadkey.parse("213.png", WEB_MERCATOR).tile == Tile(3, 5, 3)
    assert quadkey.parse("0.png", WEB_MERCATOR).tile == Tile(0, 0, 1)
    assert quadkey.parse("3.png", WEB_MERCATOR).tile == Tile(1, 1, 1)


def test_quadkey_has_no_zoom_0():
    quadkey = get_layout("quadkey")
    with pytest.raises(LayoutError, match="no key for zoom 0"):
        quadkey.format(Tile(0, 0, 0), "png", WEB_MERCATOR)
    with pytest.raises(LayoutError, match="no key for zoom 0"):
        quadkey.parse(".png", WEB_MERCATOR)


def test_quadkey_beyond_the_grid_is_out_of_range():
    with pytest.raises(TileOutOfRange, match="zoom 25 outside 0..24"):
        get_layout("quadkey").parse("0" * 25 + ".png", WEB_MERCATOR)


def test_extension_is_returned_lower_case():
    assert get_layout("xyz").parse("3/1/2.PNG", WEB_MERCATOR) == TileKey(Tile(1, 2, 3), "png")
    assert get_layout("xyz").parse("3/1/2.webp", WEB_MERCATOR).ext == "webp"


@pytest.mark.parametrize(
    "path",
    [
        "03/1/1.png",  # leading zero
        "3/01/1.png",
        "3/1/00.png",
        "+3/1/1.png",
        "-1/0/0.png",
        " 3/1/1.png",
        "3/1/1.png ",
        "3/1/1.png\n",
        "3//1.png",
        "/3/1/1.png",
        "3/1/1/.png",
        "3/1/1.png/x",
        "3/1/1.png.png",
        "3/1/1.",
        "3/1/1",
        "3/1/1.toolong",
        "3/1/1.p_g",
        "3/1/1.png?x=1",
        "../1/1.png",
        "3/../1.png",
        "3/./1.png",
        "\u0663/1/1.png",  # ARABIC-INDIC DIGIT THREE
        "\uff13/1/1.png",  # FULLWIDTH DIGIT THREE
        "3/1/\u00b2.png",  # SUPERSCRIPT TWO
        "3/1/1.p\u0131g",  # dotless i
        "12345678901/0/0.png",  # 11 digits
        "3/1_000/1.png",
        "a/b/c.png",
        "",
    ],
)
@pytest.mark.parametrize("name", ["tms", "xyz", "wmts"])
def test_malformed_decimal_paths_are_rejected(name, path):
    with pytest.raises(LayoutError, match="not a .* tile path"):
        LAYOUTS[name].parse(path, WEB_MERCATOR)


@pytest.mark.parametrize(
    "path",
    [
        "L05/R0000001a/C0000001b",
        "L05/R0000001a/C0000001b.png/",
        "l05/r0000001a/c0000001b.png",
        "L05/C0000001b/R0000001a.png",
        "L05/R0000001g/C0000001b.png",
        "L05/R+000001a/C0000001b.png",
        "L05/R00000001a/C0000001b.png",  # 9 hex digits
        "L-5/R0000001a/C0000001b.png",
        "L05//R0000001a/C0000001b.png",
        "L\u0665/R0000001a/C0000001b.png",
    ],
)
def test_malformed_arcgis_paths_are_rejected(path):
    with pytest.raises(LayoutError):
        get_layout("arcgis").parse(path, WEB_MERCATOR)


@pytest.mark.parametrize("path", ["4.png", "0123.png.png", "01 2.png", "01.", "012", "0" * 33])
def test_malformed_quadkeys_are_rejected(path):
    with pytest.raises(LayoutError):
        get_layout("quadkey").parse(path, WEB_MERCATOR)


def test_ten_digit_numbers_parse_and_fail_as_out_of_range():
    with pytest.raises(TileOutOfRange, match="x 9999999999 outside"):
        get_layout("xyz").parse("3/9999999999/0.png", WEB_MERCATOR)


@pytest.mark.parametrize("ext", ["PNG", "", "toolong", "p.g", "p/g", 7])
def test_format_refuses_non_canonical_extensions(ext):
    with pytest.raises(LayoutError):
        get_layout("xyz").format(Tile(0, 0, 0), ext, WEB_MERCATOR)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_format_refuses_tiles_outside_the_grid(name):
    with pytest.raises(TileOutOfRange):
        LAYOUTS[name].format(Tile(4, 0, 2), "png", WEB_MERCATOR)


@pytest.mark.parametrize("name", ["tms", "xyz", "wmts"])
def test_format_refuses_numbers_longer_than_parse_accepts(name):
    huge = custom_grid("huge", "EPSG:3857", (0.0, 0.0), 1, [1.0], Bbox(0.0, -1.0, 1e11, 0.0))
    with pytest.raises(LayoutError, match="more than 10 digits"):
        LAYOUTS[name].format(Tile(10**10, 0, 0), "png", huge)
    assert LAYOUTS[name].parse(LAYOUTS[name].format(Tile(10**10 - 1, 0, 0), "png", huge), huge)


def test_get_layout():
    assert get_layout("TMS") is LAYOUTS["tms"]
    assert sorted(LAYOUTS) == ["arcgis", "quadkey", "tms", "wmts", "xyz"]
    assert all(layout.name == name for name, layout in LAYOUTS.items())
    with pytest.raises(UnknownLayout, match="unknown layout 'google'"):
        get_layout("google")
    assert issubclass(UnknownLayout, LayoutError)


def test_error_messages_are_one_short_line():
    with pytest.raises(LayoutError) as info:
        get_layout("xyz").parse("x\n" * 1000, WEB_MERCATOR)
    message = str(info.value)
    assert "\n" not in message
    assert len(message) < 120


PATH_ALPHABET = st.sampled_from(list("0123456789/.LRCabcdefABCDEFpngPNG -+_\u0663\uff13\n"))


@settings(max_examples=1000, deadline=None)
@given(
    st.sampled_from(sorted(LAYOUTS)),
    st.sampled_from(GRIDS),
    st.one_of(st.text(), st.text(PATH_ALPHABET, max_size=40)),
)
def test_parse_raises_only_layout_errors_or_out_of_range(name, grid, path):
    layout = LAYOUTS[name]
    try:
        key = layout.parse(path, grid)
    except (LayoutError, TileOutOfRange):
        return
    # whatever parses names a tile of the grid and formats back to the same key,
    # up to the case of the ext and of ArcGIS hex
    grid.check(key.tile)
    assert layout.format(*key, grid).lower() == path.lower()
