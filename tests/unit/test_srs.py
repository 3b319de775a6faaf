"""The one CRS table, held against the EPSG database (through pyproj), and the WMTS
ScaleDenominator of every grid the project knows against the OGC formula written
here on its own.

EPSG:4258 and EPSG:4269 used to be in degrees for the WMS client and in meters for
the grids, so their WMTS ScaleDenominators were 111319 times too small."""

from __future__ import annotations

import doctest
import math
import xml.etree.ElementTree as ET

import pytest
from pyproj import CRS as ProjCRS

from s3maptiler.config import Layer
from s3maptiler.documents.wmts import wmts_capabilities
from s3maptiler.render.getmap import bbox_text
from s3maptiler.tiles import srs
from s3maptiler.tiles.grids import (
    GLOBAL_GEODETIC,
    WEB_MERCATOR,
    WORLD_CRS84_QUAD,
    Bbox,
    TileGrid,
    custom_grid,
)
from s3maptiler.tiles.tilemath import arcgis_scale, scale_denominator

WMTS = "{http://www.opengis.net/wmts/1.0}"
OWS = "{http://www.opengis.net/ows/1.1}"

# Every code of the table and a few projected ones in meters, easting first. (Projected
# CRSs with northing first, such as EPSG:3035, are not in the table: they would be
# written easting first.)
CODES = sorted(srs._GEOGRAPHIC_CODES | srs._MERCATOR_CODES - {102100, 102113, 900913}) + [
    25832,
    2056,
    27700,
]


def test_module_doctests():
    assert doctest.testmod(srs).failed == 0


@pytest.mark.parametrize("code", CODES)
def test_the_table_agrees_with_the_epsg_database(code):
    ours = srs.crs(f"EPSG:{code}")
    theirs = ProjCRS.from_epsg(code)
    first = theirs.axis_info[0]
    assert (ours.kind == "geographic") == theirs.is_geographic
    assert ours.units == ("degrees" if first.unit_name == "degree" else "meters")
    if first.unit_name != "degree":
        assert first.unit_conversion_factor == 1.0  # meters, as the table assumes
    assert ours.lat_first == (first.direction in ("north", "south"))


@pytest.mark.parametrize(
    "spelling",
    [
        "CRS:84",
        "OGC:CRS84",
        "urn:ogc:def:crs:OGC:1.3:CRS84",
        "http://www.opengis.net/def/crs/OGC/1.3/CRS84",
    ],
)
def test_crs84_is_degrees_longitude_first(spelling):
    ours = srs.crs(spelling)
    theirs = ProjCRS.from_user_input("OGC:CRS84")
    assert ours.name == "CRS:84" and ours.units == "degrees"
    assert not ours.lat_first and theirs.axis_info[0].direction == "east"


@pytest.mark.parametrize(
    "spelling, name",
    [
        ("epsg:3857", "EPSG:3857"),
        ("EPSG:900913", "EPSG:3857"),
        ("ESRI:102100", "EPSG:3857"),
        ("urn:ogc:def:crs:EPSG::4258", "EPSG:4258"),
        ("urn:ogc:def:crs:EPSG:6.3:4269", "EPSG:4269"),
        ("http://www.opengis.net/def/crs/EPSG/0/4326", "EPSG:4326"),
        ("EPSG:25832", "EPSG:25832"),
        ("IAU:30100", "IAU:30100"),
    ],
)
def test_spellings_name_one_crs(spelling, name):
    assert srs.crs(spelling).name == name


def _geographic(name: str, epsg: str) -> TileGrid:
    return custom_grid(name, epsg, (-180.0, 90.0), 256, [0.703125 / 2**z for z in range(4)])


# Every kind of grid: the named ones, custom ones in degrees (both spellings) and meters.
GRIDS = [
    WEB_MERCATOR,
    GLOBAL_GEODETIC,
    WORLD_CRS84_QUAD,
    _geographic("etrs89", "EPSG:4258"),
    _geographic("nad83", "EPSG:4269"),
    _geographic("nad83urn", "urn:ogc:def:crs:EPSG::4269"),
    _geographic("crs84", "CRS:84"),
    custom_grid(
        "utm32", "EPSG:25832", (-46133.17, 9997964.94), 256, [4000.0 / 2**z for z in range(4)]
    ),
    custom_grid(
        "swiss",
        "EPSG:2056",
        (2420000.0, 1350000.0),
        256,
        [4000.0, 2000.0, 1000.0, 500.0],
        bbox=Bbox(2420000.0, 1030000.0, 2900000.0, 1350000.0),
    ),
]


def epsg(srs_name: str) -> ProjCRS:
    """The EPSG database's CRS (PROJ spells CRS:84 as OGC:CRS84)."""
    return ProjCRS.from_user_input("OGC:CRS84" if srs_name == "CRS:84" else srs_name)


def ogc_scale(grid: TileGrid, z: int) -> float:
    """WMTS 1.0.0, 6.1.1: scale denominator = cell size in meters / 0.28 mm, where a
    degree is 2 pi 6378137 / 360 meters. Units from the EPSG database, not our table."""
    system = epsg(grid.srs)
    unit = system.axis_info[0]
    if unit.unit_name == "degree":
        meters = 2 * math.pi * 6378137 / 360
    else:
        meters = unit.unit_conversion_factor
    return grid.resolutions[z] * meters / 0.00028


@pytest.mark.parametrize("grid", GRIDS, ids=lambda g: g.name)
def test_scale_denominator_of_every_grid(grid):
    for z in range(grid.max_zoom + 1):
        assert scale_denominator(grid, z) == pytest.approx(ogc_scale(grid, z), rel=1e-12)
        # ArcGIS scales: the same meters per pixel, at 96 dpi and Esri's 39.37 in/m.
        assert arcgis_scale(grid, z) == pytest.approx(
            ogc_scale(grid, z) * 0.00028 * 96 * 39.37, rel=1e-12
        )


@pytest.mark.parametrize("grid", GRIDS, ids=lambda g: g.name)
def test_the_wmts_document_writes_those_scales_and_axis_order(grid):
    layer = Layer(
        "x", "http://127.0.0.1:1/wms", "x", prefix="x/", grid=grid.name, grid_def=grid, max_zoom=3
    )
    root = ET.fromstring(wmts_capabilities([layer], "https://t.example").encode())
    matrices = (
        root.find(f"{WMTS}Contents").find(f"{WMTS}TileMatrixSet").findall(f"{WMTS}TileMatrix")
    )
    assert len(matrices) == min(grid.max_zoom, 3) + 1
    lat_first = epsg(grid.srs).axis_info[0].direction == "north"
    for z, matrix in enumerate(matrices):
        written = float(matrix.findtext(f"{WMTS}ScaleDenominator"))
        assert written == pytest.approx(ogc_scale(grid, z), rel=1e-12)
        corner = [float(v) for v in matrix.findtext(f"{WMTS}TopLeftCorner").split()]
        top_left = (grid.bbox.top, grid.bbox.left) if lat_first else (grid.bbox.left, grid.bbox.top)
        assert corner == pytest.approx(top_left)


@pytest.mark.parametrize("grid", GRIDS, ids=lambda g: g.name)
def test_the_wms_bbox_uses_the_same_axis_order(grid):
    """WMS 1.3.0 and WMTS agree: degrees with 10 decimals, latitude first where EPSG says so."""
    lat_first = epsg(grid.srs).axis_info[0].direction == "north"
    box = grid.bbox
    text = bbox_text(box, grid.srs, "1.3.0")
    values = [float(v) for v in text.split(",")]
    expected = (box.bottom, box.left, box.top, box.right) if lat_first else tuple(box)
    assert values == pytest.approx(expected)
