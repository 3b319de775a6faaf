"""Metatiles against the real demo MapServer: cut tiles match direct GetMaps, and
blank tiles (sea, outside the data) are found uniform while city tiles are not."""

from __future__ import annotations

import io
import logging

import pytest
from PIL import Image, ImageChops, ImageStat

from s3maptiler.render.encode import Encoder, slice_metatile, uniform_tile
from s3maptiler.render.getmap import WMSSource
from s3maptiler.render.wms import WMSClient
from s3maptiler.tiles.grids import WEB_MERCATOR
from s3maptiler.tiles.metatile import metatile_for
from s3maptiler.tiles.tilemath import lonlat_to_tile

pytestmark = pytest.mark.integration

log = logging.getLogger(__name__)

# WMS layer names of demo/demo.map: the shaded relief raster alone, and the NYC boroughs.
RASTER_LAYER = "relief"
BOROUGHS_LAYER = "boroughs"
# A pixel "differs" when one of its channels is more than this many levels off.
LEVELS = 2

MANHATTAN = (-73.985, 40.758)
MID_ATLANTIC = (-40.0, 30.0)
ALPS = (10.0, 46.5)


@pytest.fixture(scope="module")
def client():
    return WMSClient(retries=0)


def source(wms, layers: str, transparent: bool = False) -> WMSSource:
    return WMSSource(wms.url, layers=layers, srs=WEB_MERCATOR.srs, transparent=transparent)


def rgba(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image.convert("RGBA")


def difference(a: Image.Image, b: Image.Image) -> tuple[list[float], float]:
    """Mean absolute difference per channel (levels), and the fraction of pixels with
    any channel more than LEVELS apart."""
    diff = ImageChops.difference(a, b)
    means = ImageStat.Stat(diff).mean
    over = [band.point(lambda v: 255 if v > LEVELS else 0) for band in diff.split()]
    worst = over[0]
    for band in over[1:]:
        worst = ImageChops.lighter(worst, band)
    fraction = worst.histogram()[255] / (a.width * a.height)
    return means, fraction


@pytest.mark.parametrize("zoom", [5, 7])
def test_tiles_cut_from_a_buffered_metatile_match_direct_getmaps(demo_wms, client, zoom):
    """Every tile of a 4x4 + 64 px metatile of the relief raster against a direct
    256 px GetMap of that tile.

    Measured on the demo WMS (MapServer 8, RESAMPLE=BILINEAR): no channel of any pixel
    is more than 1 level off, and the mean difference per channel is at most 0.11
    levels. Both requests draw the same pixel grid (the buffer is whole pixels), but
    MapServer reprojects the EPSG:4326 raster through an approximate transformer that
    samples a sparse grid of points over each output image and interpolates between
    them; the sample points differ between a 1152 px and a 256 px image, so the
    bilinear weights differ in the last bits and the rounded colour by one level.
    The bounds below leave room for that and nothing else: a crop one pixel off
    gives differences of 255 levels along the coasts, on 5 to 15 % of the pixels of a
    coastal tile, and a mean of 1 to 2.5 levels per channel.
    """
    wms = source(demo_wms, RASTER_LAYER, transparent=True)
    meta = metatile_for(WEB_MERCATOR, lonlat_to_tile(WEB_MERCATOR, *ALPS, zoom), (4, 4), 64)
    assert meta.buffer == (64, 64, 64, 64) and (meta.width, meta.height) == (1152, 1152)
    tiles = slice_metatile(
        client.get_map(wms, meta.bbox, meta.width, meta.height), meta, Encoder("png")
    )
    assert sum(not sliced.uniform for sliced in tiles.values()) >= 8, "needs raster content"
    worst_mean, worst_fraction = 0.0, 0.0
    for tile, sliced in tiles.items():
        cut = rgba(sliced.data)
        direct = rgba(client.get_map(wms, WEB_MERCATOR.tile_bbox(tile), 256, 256))
        assert cut.size == direct.size == (256, 256)
        means, fraction = difference(cut, direct)
        log.info(
            "z%d %s: mean |diff| per channel %s levels, %.5f of pixels differ by > %d",
            zoom,
            tuple(tile),
            [round(m, 3) for m in means],
            fraction,
            LEVELS,
        )
        worst_mean, worst_fraction = max(worst_mean, *means), max(worst_fraction, fraction)
    assert worst_mean < 0.25, worst_mean
    assert worst_fraction < 0.001, worst_fraction


def test_sea_and_out_of_data_tiles_are_uniform(demo_wms, client):
    sea = lonlat_to_tile(WEB_MERCATOR, *MID_ATLANTIC, 9)
    far_from_nyc = lonlat_to_tile(WEB_MERCATOR, *ALPS, 9)
    cases = [
        ("sea, opaque", source(demo_wms, demo_wms.layers), sea),
        ("sea, transparent", source(demo_wms, demo_wms.layers, transparent=True), sea),
        ("raster over the sea", source(demo_wms, RASTER_LAYER, transparent=True), sea),
        ("boroughs over the Alps", source(demo_wms, BOROUGHS_LAYER), far_from_nyc),
        (
            "boroughs over the Alps, transparent",
            source(demo_wms, BOROUGHS_LAYER, True),
            far_from_nyc,
        ),
    ]
    for label, wms, tile in cases:
        data = client.get_map(wms, WEB_MERCATOR.tile_bbox(tile), 256, 256)
        assert uniform_tile(data), label


@pytest.mark.parametrize("zoom", [12, 13, 14, 15])
def test_new_york_tiles_are_not_uniform(demo_wms, client, zoom):
    tile = lonlat_to_tile(WEB_MERCATOR, *MANHATTAN, zoom)
    data = client.get_map(source(demo_wms, demo_wms.layers), WEB_MERCATOR.tile_bbox(tile), 256, 256)
    assert not uniform_tile(data)


def test_an_ocean_metatile_slices_into_one_shared_blank(demo_wms, client):
    for transparent in (False, True):
        wms = source(demo_wms, demo_wms.layers, transparent)
        tile = lonlat_to_tile(WEB_MERCATOR, *MID_ATLANTIC, 10)
        meta = metatile_for(WEB_MERCATOR, tile, (4, 4), 64)
        data = client.get_map(wms, meta.bbox, meta.width, meta.height)
        tiles = slice_metatile(data, meta, Encoder("png"))
        assert len(tiles) == 16
        assert all(sliced.uniform for sliced in tiles.values())
        assert len({sliced.data for sliced in tiles.values()}) == 1
        # ... and the blank is what a direct GetMap of one of those tiles shows.
        direct = rgba(client.get_map(wms, WEB_MERCATOR.tile_bbox(tile), 256, 256))
        blank = rgba(tiles[tile].data)
        if transparent:
            assert direct.getextrema()[3] == blank.getextrema()[3] == (0, 0)
        else:
            assert blank.tobytes() == direct.tobytes()


def test_a_new_york_metatile_keeps_full_colour_and_flags_its_blank_tiles(demo_wms, client):
    wms = source(demo_wms, demo_wms.layers)
    centre = lonlat_to_tile(WEB_MERCATOR, *MANHATTAN, 12)
    meta = metatile_for(WEB_MERCATOR, centre, (4, 4), 64)
    data = client.get_map(wms, meta.bbox, meta.width, meta.height)
    tiles = slice_metatile(data, meta, Encoder("png"))
    whole = rgba(data)
    # The uniform flag agrees with a count of the colours each tile really has (this
    # block holds a few flat inland tiles west of the Hudson as well as the city).
    for tile, sliced in tiles.items():
        crop = whole.crop(meta.crop_box(tile))
        blank = len(crop.getcolors(1 << 20)) == 1 or crop.getextrema()[3][1] == 0
        assert sliced.uniform == blank, tile
    assert not tiles[centre].uniform
    # A png layer is not silently quantised: the tile keeps its > 256 colours, exactly.
    cut = Image.open(io.BytesIO(tiles[centre].data))
    assert cut.mode in ("RGB", "RGBA")
    assert len(cut.convert("RGBA").getcolors(1 << 20)) > 256
    assert cut.convert("RGBA").tobytes() == whole.crop(meta.crop_box(centre)).tobytes()
