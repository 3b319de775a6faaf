"""Tile math between tiles, decimal degrees and scales.

:mod:`s3maptiler.tiles.grids` places tiles in a grid's own CRS units; this module
adds the rest a tile server needs: which tile holds a point given in decimal degrees,
a tile's bounds in decimal degrees, and the scale of a zoom level as WMTS and ArcGIS
write it. Units come from the ONE CRS table (:mod:`s3maptiler.tiles.srs`): a grid in
a geographic CRS (EPSG:4326, EPSG:4258, CRS:84, ...) is in degrees, every other grid
in meters.

>>> from s3maptiler.tiles.grids import WEB_MERCATOR, Tile
>>> lonlat_to_tile(WEB_MERCATOR, 13.4, 52.5, 10)
Tile(x=550, y=335, z=10)
>>> scale_denominator(WEB_MERCATOR, 0)
559082264.0287178
"""

from __future__ import annotations

import math

from s3maptiler.tiles.grids import Bbox, GridError, Tile, TileGrid
from s3maptiler.tiles.srs import crs, to_lonlat, to_native

__all__ = [
    "arcgis_scale",
    "extent_excludes",
    "has_lonlat",
    "lonlat_to_tile",
    "meters_per_unit",
    "overlaps",
    "scale_denominator",
    "tile_lonlat_bounds",
]

# WMTS "standardized rendering pixel size", in meters.
_WMTS_PIXEL = 0.00028
# Esri's inches per meter (not 1 / 0.0254) and dots per inch, as ArcGIS LOD scales use.
_ESRI_INCHES_PER_METER = 39.37
_ESRI_DPI = 96


def meters_per_unit(srs: str) -> float:
    """Meters per CRS unit: 111319.49079327358 for geographic CRSs (degrees), else 1.0."""
    return crs(srs).meters_per_unit


def has_lonlat(grid: TileGrid) -> bool:
    """Whether decimal degrees can be moved into the grid's CRS (Web Mercator or a
    geographic CRS; other CRSs have no transform here)."""
    return crs(grid.srs).lonlat


def _system(grid: TileGrid):
    system = crs(grid.srs)
    if not system.lonlat:
        raise GridError(f"grid {grid.name}: no lon/lat transform for {grid.srs}")
    return system


def lonlat_to_tile(grid: TileGrid, lon: float, lat: float, z: int) -> Tile:
    """The tile at zoom ``z`` containing a point in decimal degrees.

    For Web Mercator grids the latitude is clamped to +-85.0511287798066 and the
    tile to the matrix (lon=180 gives the last column); for geographic grids the
    point is used as is and also clamped to the matrix.

    >>> from s3maptiler.tiles.grids import WEB_MERCATOR
    >>> lonlat_to_tile(WEB_MERCATOR, 180.0, 90.0, 2)
    Tile(x=3, y=0, z=2)
    """
    lon, lat = float(lon), float(lat)
    if not (math.isfinite(lon) and math.isfinite(lat)):
        raise GridError(f"lon/lat ({lon}, {lat}) is not finite")
    grid.resolution(z)  # raises TileOutOfRange for a zoom outside the grid
    return grid.locate(*to_native(_system(grid), lon, lat), z)


def tile_lonlat_bounds(grid: TileGrid, tile: Tile) -> Bbox:
    """Bounding box of ``tile`` in decimal degrees (west, south, east, north)."""
    system = _system(grid)
    box = grid.tile_bbox(tile)
    return Bbox(*to_lonlat(system, box.left, box.bottom), *to_lonlat(system, box.right, box.top))


def scale_denominator(grid: TileGrid, z: int) -> float:
    """WMTS ScaleDenominator at zoom ``z``: resolution in meters / 0.00028 m per pixel."""
    return grid.resolution(z) * meters_per_unit(grid.srs) / _WMTS_PIXEL


def arcgis_scale(grid: TileGrid, z: int) -> float:
    """ArcGIS LOD scale at zoom ``z``: resolution in meters * 96 dpi * 39.37 inches per meter."""
    return grid.resolution(z) * meters_per_unit(grid.srs) * _ESRI_DPI * _ESRI_INCHES_PER_METER


def overlaps(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Whether two (west, south, east, north) boxes share more than an edge."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def extent_excludes(grid: TileGrid, tile: Tile, extent: tuple[float, ...] | None) -> bool:
    """Whether `tile` lies outside a layer's `extent` (west, south, east, north in
    decimal degrees): it shares at most an edge with it. Never without an extent."""
    return extent is not None and not overlaps(tile_lonlat_bounds(grid, tile), extent)
