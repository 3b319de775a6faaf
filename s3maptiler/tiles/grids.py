"""Tile grids: tile matrix sets, tile <-> bounding box in CRS units, tile ranges.

A grid is a stack of tile matrices, one per zoom level. Tiles are always
addressed with the row counted from the TOP of the matrix, as XYZ, WMTS and
ArcGIS do; TMS rows (counted from the bottom) are a layout concern, see
:meth:`TileGrid.flip_y` and :mod:`s3maptiler.tiles.layouts`. Decimal degrees and
scales are :mod:`s3maptiler.tiles.tilemath`'s.

Everything here is pure: no state, no I/O. Tile edges along each axis come
from ONE function (``start + i * span``), so neighbouring tiles share
bit-identical edges and a metatile cut from a WMS image lines up exactly.

>>> WEB_MERCATOR.tile_bbox(Tile(0, 0, 1))
Bbox(left=-20037508.342789244, bottom=0.0, right=0.0, top=20037508.342789244)

One module of about 410 lines on purpose: TileGrid and the edge search it relies on
(bit-exact neighbours) must stay together.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from s3maptiler.tiles.srs import MERCATOR_EXTENT

__all__ = [
    "GLOBAL_GEODETIC",
    "WEB_MERCATOR",
    "WORLD_CRS84_QUAD",
    "Bbox",
    "GridError",
    "InvalidGrid",
    "Tile",
    "TileGrid",
    "TileOutOfRange",
    "UnknownGrid",
    "custom_grid",
    "get_grid",
    "with_tile_size",
]

# Overshoot of a bbox past a whole number of tiles that is ignored when sizing a matrix:
# published ArcGIS resolutions come from scales rounded to 1e-6 (z19 is 3e-10 too small,
# 0.04 px over 2**19 tiles), which must not add a column of slivers. The larger of a
# hundredth of a pixel and 1e-8 of the extent (0.4 m on the Web Mercator world).
_SIZE_TOLERANCE_PX = 0.01
_SIZE_TOLERANCE_REL = 1e-8

_ORIGINS = ("bottom-left", "top-left")


class Tile(NamedTuple):
    """A tile: column ``x``, row ``y`` counted from the TOP of the matrix, zoom ``z``."""

    x: int
    y: int
    z: int


class Bbox(NamedTuple):
    """A bounding box in the grid's CRS units (meters or decimal degrees)."""

    left: float
    bottom: float
    right: float
    top: float


class GridError(ValueError):
    """Base class for every error raised by this module."""


class TileOutOfRange(GridError):
    """A zoom level, column or row outside the grid (an HTTP 400/404, not a render)."""


class InvalidGrid(GridError):
    """A grid definition that cannot work (bad extent, resolutions, tile size or origin)."""


class UnknownGrid(GridError):
    """A grid name that is not one of the built-in grids."""


@dataclass(frozen=True)
class TileGrid:
    """A tile matrix set.

    ``bbox`` is the full extent of the grid in CRS units; its ``origin`` corner
    (``"bottom-left"`` like TMS or ``"top-left"`` like WMTS/ArcGIS) is where tile
    edges are counted from. ``resolutions[z]`` is CRS units per pixel at zoom z.
    The matrix at zoom z has ``ceil(extent / (resolution * tile_size))`` columns
    and rows, so power-of-two grids get exactly ``2**z`` times their zoom-0 matrix.
    """

    name: str
    srs: str
    bbox: Bbox
    tile_size: int
    resolutions: tuple[float, ...]
    origin: str = "bottom-left"
    # Derived once: tile span in CRS units and (columns, rows) per zoom.
    _spans: tuple[float, ...] = field(init=False, repr=False, compare=False)
    _matrices: tuple[tuple[int, int], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InvalidGrid("grid name must be a non-empty string")
        if self.origin not in _ORIGINS:
            raise InvalidGrid(f"grid {self.name}: origin {self.origin!r} is not one of {_ORIGINS}")
        if isinstance(self.tile_size, bool) or not isinstance(self.tile_size, int):
            raise InvalidGrid(f"grid {self.name}: tile_size must be an integer number of pixels")
        if self.tile_size <= 0:
            raise InvalidGrid(f"grid {self.name}: tile_size {self.tile_size} is not positive")
        try:
            bbox = Bbox(*(float(v) for v in self.bbox))
            resolutions = tuple(float(r) for r in self.resolutions)
        except (TypeError, ValueError) as exc:
            raise InvalidGrid(f"grid {self.name}: bbox and resolutions must be numbers") from exc
        if not all(math.isfinite(v) for v in bbox):
            raise InvalidGrid(f"grid {self.name}: bbox {tuple(bbox)} is not finite")
        if not (bbox.left < bbox.right and bbox.bottom < bbox.top):
            raise InvalidGrid(f"grid {self.name}: bbox {tuple(bbox)} is empty or inverted")
        if not resolutions:
            raise InvalidGrid(f"grid {self.name}: needs at least one resolution")
        if not all(math.isfinite(r) and r > 0 for r in resolutions):
            raise InvalidGrid(f"grid {self.name}: resolutions must be positive and finite")
        spans = tuple(r * self.tile_size for r in resolutions)
        width = bbox.right - bbox.left
        height = bbox.top - bbox.bottom
        matrices = tuple(
            (_count_tiles(width, r, self.tile_size), _count_tiles(height, r, self.tile_size))
            for r in resolutions
        )
        object.__setattr__(self, "bbox", bbox)
        object.__setattr__(self, "resolutions", resolutions)
        object.__setattr__(self, "_spans", spans)
        object.__setattr__(self, "_matrices", matrices)

    @property
    def max_zoom(self) -> int:
        """The highest zoom level (the lowest is always 0)."""
        return len(self.resolutions) - 1

    def _check_zoom(self, z: int) -> None:
        if not 0 <= z <= self.max_zoom:
            raise TileOutOfRange(f"zoom {z} outside 0..{self.max_zoom}")

    def resolution(self, z: int) -> float:
        """CRS units (meters or decimal degrees) per pixel at zoom ``z``."""
        self._check_zoom(z)
        return self.resolutions[z]

    def matrix_size(self, z: int) -> tuple[int, int]:
        """Number of (columns, rows) of tiles at zoom ``z``."""
        self._check_zoom(z)
        return self._matrices[z]

    def check(self, tile: Tile) -> None:
        """Raise :class:`TileOutOfRange` unless ``tile`` lies inside the grid."""
        x, y, z = tile
        self._check_zoom(z)
        cols, rows = self._matrices[z]
        if not 0 <= x < cols:
            raise TileOutOfRange(f"x {x} outside 0..{cols - 1} at zoom {z}")
        if not 0 <= y < rows:
            raise TileOutOfRange(f"y {y} outside 0..{rows - 1} at zoom {z}")

    # The two edge functions. Every coordinate this class hands out goes through them.
    def _x_edge(self, i: int, z: int) -> float:
        return self.bbox.left + i * self._spans[z]

    def _y_edge(self, j: int, z: int) -> float:
        # j counts edges from the origin corner: upwards for bottom-left, downwards for top-left.
        if self.origin == "bottom-left":
            return self.bbox.bottom + j * self._spans[z]
        return self.bbox.top - j * self._spans[z]

    def tile_bbox(self, tile: Tile) -> Bbox:
        """Bounding box of ``tile`` in CRS units (meters or decimal degrees).

        Neighbours share bit-identical edges:
        ``tile_bbox(Tile(x, y, z)).right == tile_bbox(Tile(x + 1, y, z)).left``.
        """
        self.check(tile)
        x, y, z = tile
        left, right = self._x_edge(x, z), self._x_edge(x + 1, z)
        if self.origin == "bottom-left":
            j = self.flip_y(y, z)
            bottom, top = self._y_edge(j, z), self._y_edge(j + 1, z)
        else:
            top, bottom = self._y_edge(y, z), self._y_edge(y + 1, z)
        return Bbox(left, bottom, right, top)

    def flip_y(self, y: int, z: int) -> int:
        """Row counted from the top <-> row counted from the bottom (TMS): ``rows - 1 - y``."""
        return self.matrix_size(z)[1] - 1 - y

    def _row_axis(self, z: int) -> tuple[Callable[[int], float], Callable[[float], float]]:
        """Increasing edge function over the row index and the map of y onto it.

        For bottom-left grids the index is the TMS row; for top-left grids it is the
        top-down row and coordinates are negated (exactly) so edges increase.
        """
        if self.origin == "bottom-left":
            return (lambda j: self._y_edge(j, z)), (lambda v: v)
        return (lambda j: -self._y_edge(j, z)), (lambda v: -v)

    def tiles_in(self, bbox: Bbox, z: int) -> tuple[range, range]:
        """Columns and top-down rows of the tiles at zoom ``z`` that overlap ``bbox``.

        ``bbox`` is in CRS units. A tile that only touches the bbox along an edge is
        left out; a zero-width or zero-height bbox selects the tile containing it.
        Both ranges are clipped to the matrix and may be empty.
        """
        self._check_zoom(z)
        left, bottom, right, top = (float(v) for v in bbox)
        if not all(math.isfinite(v) for v in (left, bottom, right, top)):
            raise GridError(f"bbox {tuple(bbox)} is not finite")
        if left > right or bottom > top:
            raise GridError(f"bbox {tuple(bbox)} is inverted")
        cols, rows = self._matrices[z]
        columns = _index_range(lambda i: self._x_edge(i, z), cols, left, right)
        edge, to_axis = self._row_axis(z)
        lo, hi = sorted((to_axis(bottom), to_axis(top)))
        indices = _index_range(edge, rows, lo, hi)
        if self.origin == "bottom-left" and indices:
            indices = range(rows - 1 - indices[-1], rows - indices[0])
        return columns, indices

    def locate(self, x: float, y: float, z: int) -> Tile:
        """The tile at zoom ``z`` containing the point (CRS units), clamped to the matrix."""
        self._check_zoom(z)
        cols, rows = self._matrices[z]
        col = min(_first_ending_after(lambda i: self._x_edge(i, z), cols, x), cols - 1)
        edge, to_axis = self._row_axis(z)
        row = min(_first_ending_after(edge, rows, to_axis(y)), rows - 1)
        if self.origin == "bottom-left":
            row = rows - 1 - row
        return Tile(col, row, z)


def _count_tiles(extent: float, resolution: float, tile_size: int) -> int:
    """Tiles of ``resolution * tile_size`` needed to cover ``extent`` (CRS units)."""
    pixels = extent / resolution
    slack = max(_SIZE_TOLERANCE_PX, pixels * _SIZE_TOLERANCE_REL)
    return max(1, math.ceil((pixels - slack) / tile_size))


def _guess_index(edge: Callable[[int], float], n: int, value: float) -> int:
    """A cell index near ``value``, clamped to 0..n-1; only a starting point for a search."""
    start = edge(0)
    span = edge(1) - start
    g = (value - start) / span
    if not g > 0:
        return 0
    if g >= n - 1:
        return n - 1
    return int(g)


def _first_ending_after(edge: Callable[[int], float], n: int, lo: float) -> int:
    """Smallest cell i in 0..n-1 with ``edge(i + 1) > lo``; ``n`` if there is none.

    ``edge`` must increase with its index. The answer is decided by comparing with
    ``edge`` itself, so it agrees bit-for-bit with ``tile_bbox``.
    """
    i = _guess_index(edge, n, lo)
    while i > 0 and edge(i) > lo:
        i -= 1
    while i < n and edge(i + 1) <= lo:
        i += 1
    return i


def _last_starting_before(edge: Callable[[int], float], n: int, hi: float) -> int:
    """Largest cell i in 0..n-1 with ``edge(i) < hi``; -1 if there is none."""
    i = _guess_index(edge, n, hi)
    while i < n - 1 and edge(i + 1) < hi:
        i += 1
    while i >= 0 and edge(i) >= hi:
        i -= 1
    return i


def _index_range(edge: Callable[[int], float], n: int, lo: float, hi: float) -> range:
    """Cells of an increasing edge function that overlap [lo, hi] with positive length."""
    if lo == hi:
        i = _first_ending_after(edge, n, lo)
        if i == n and lo == edge(n):
            i = n - 1  # a point on the far edge belongs to the last cell
        if i == n or edge(i) > lo:
            return range(0)
        return range(i, i + 1)
    first = _first_ending_after(edge, n, lo)
    last = _last_starting_before(edge, n, hi)
    return range(first, last + 1) if first <= last else range(0)


def _power_of_two_resolutions(zero: float, levels: int) -> tuple[float, ...]:
    # Dividing by a power of two is exact, so res * tile_size == extent / 2**z bit-for-bit.
    return tuple(zero / 2**z for z in range(levels))


#: GoogleMapsCompatible / XYZ / "global-mercator" with ONE tile at zoom 0
#: (156543.03392804097 m/px), levels 0..24, 256 px, edges counted from the bottom-left.
WEB_MERCATOR = TileGrid(
    name="GoogleMapsCompatible",
    srs="EPSG:3857",
    bbox=Bbox(-MERCATOR_EXTENT, -MERCATOR_EXTENT, MERCATOR_EXTENT, MERCATOR_EXTENT),
    tile_size=256,
    resolutions=_power_of_two_resolutions(2 * MERCATOR_EXTENT / 256, 25),
    origin="bottom-left",
)

#: TMS global-geodetic: EPSG:4326, 2x1 tiles at zoom 0 (0.703125 deg/px), levels 0..21.
GLOBAL_GEODETIC = TileGrid(
    name="global-geodetic",
    srs="EPSG:4326",
    bbox=Bbox(-180.0, -90.0, 180.0, 90.0),
    tile_size=256,
    resolutions=_power_of_two_resolutions(0.703125, 22),
    origin="bottom-left",
)

#: OGC WorldCRS84Quad: the same geometry as GLOBAL_GEODETIC under its OGC name. ``srs``
#: stays "EPSG:4326" (what a WMS is asked for); capabilities documents write the URN form.
WORLD_CRS84_QUAD = TileGrid(
    name="WorldCRS84Quad",
    srs=GLOBAL_GEODETIC.srs,
    bbox=GLOBAL_GEODETIC.bbox,
    tile_size=GLOBAL_GEODETIC.tile_size,
    resolutions=GLOBAL_GEODETIC.resolutions,
    origin=GLOBAL_GEODETIC.origin,
)

_GRIDS_BY_NAME = {
    alias.lower(): grid
    for grid, aliases in (
        (
            WEB_MERCATOR,
            (
                "GoogleMapsCompatible",
                "webmercator",
                "web-mercator",
                "global-mercator",
                "EPSG:3857",
                "EPSG:900913",
            ),
        ),
        (GLOBAL_GEODETIC, ("global-geodetic", "EPSG:4326")),
        (WORLD_CRS84_QUAD, ("WorldCRS84Quad",)),
    )
    for alias in aliases
}


def with_tile_size(grid: TileGrid, tile_size: int) -> TileGrid:
    """The same grid drawn with bigger tiles: 512 px tiles halve every resolution."""
    if tile_size == grid.tile_size:
        return grid
    factor = grid.tile_size / tile_size
    return dataclasses.replace(
        grid,
        name=f"{grid.name}-{tile_size}",
        tile_size=tile_size,
        resolutions=tuple(r * factor for r in grid.resolutions),
    )


def get_grid(name: str) -> TileGrid:
    """A built-in grid by name or alias, case-insensitive.

    "EPSG:4326" means the TMS global-geodetic grid (2x1 tiles at zoom 0).

    >>> get_grid("epsg:3857") is WEB_MERCATOR
    True
    """
    try:
        return _GRIDS_BY_NAME[name.strip().lower()]
    except (KeyError, AttributeError):
        known = ", ".join(sorted({g.name for g in _GRIDS_BY_NAME.values()}))
        raise UnknownGrid(f"unknown grid {name!r}; known grids: {known}") from None


def custom_grid(
    name: str,
    srs: str,
    top_left: tuple[float, float],
    tile_size: int,
    resolutions: Iterable[float],
    bbox: Bbox | None = None,
) -> TileGrid:
    """An ArcGIS/WMTS-style grid: tiles counted from ``top_left`` (CRS units), one
    resolution (CRS units per pixel) per zoom level, ``tile_size`` pixels square.

    ``bbox`` is the extent to cover (e.g. an ArcGIS ``fullExtent``); the matrix at
    zoom z is ``ceil(extent / (resolution * tile_size))`` tiles, counted from the
    origin, so the grid's bbox runs from ``top_left`` to the bbox's right and bottom
    edges. Without a bbox the grid is a quadtree: zoom 0 is exactly one tile, which
    is right for Esri's Web Mercator tiling scheme but not for grids whose first
    level already has many tiles; give a bbox for those.
    """
    try:
        ox, oy = (float(v) for v in top_left)
        res = tuple(float(r) for r in resolutions)
    except (TypeError, ValueError) as exc:
        raise InvalidGrid(f"grid {name}: top_left and resolutions must be numbers") from exc
    if not res:
        raise InvalidGrid(f"grid {name}: needs at least one resolution")
    if bbox is None:
        span = res[0] * tile_size
        full = Bbox(ox, oy - span, ox + span, oy)
    else:
        left, bottom, right, top = (float(v) for v in bbox)
        if left < ox or top > oy:
            raise InvalidGrid(
                f"grid {name}: bbox {(left, bottom, right, top)} reaches outside"
                f" the top-left origin {(ox, oy)}"
            )
        full = Bbox(ox, bottom, right, oy)
    return TileGrid(
        name=name, srs=srs, bbox=full, tile_size=tile_size, resolutions=res, origin="top-left"
    )
