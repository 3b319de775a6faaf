"""Metatiles: the geometry of one WMS GetMap for a block of tiles plus a buffer.

A metatile is an aligned block of ``columns x rows`` tiles (clipped to the tile
matrix at the grid's far edges) drawn by ONE GetMap whose bbox is widened by a
``buffer`` of pixels on each side, so labels and symbols that cross tile edges are
drawn whole and the WMS is asked about N² times less. The buffer is cut away again
and each tile encoded on its own (:mod:`s3maptiler.render.encode`).

Geometry is pure and exact: the bbox comes from the grid's own edge function
(:meth:`TileGrid.tile_bbox` of the corner tiles), so a 1x1 metatile without a buffer
is exactly the tile's bbox and size, and neighbouring metatiles share edges
bit-for-bit. Units: bboxes in the grid's CRS units (meters or decimal degrees),
sizes, buffers and crop boxes in pixels, image rows counted from the top.

>>> from s3maptiler.tiles.grids import WEB_MERCATOR, Tile
>>> meta = metatile_for(WEB_MERCATOR, Tile(5, 6, 3), (4, 4), 64)
>>> meta.columns, meta.rows, meta.width, meta.height, meta.buffer
(range(4, 8), range(4, 8), 1088, 1088, (64, 0, 0, 64))
>>> meta.crop_box(Tile(5, 6, 3))
(320, 576, 576, 832)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from s3maptiler.tiles.grids import Bbox, Tile, TileGrid

__all__ = [
    "InvalidMetaTile",
    "MetaTile",
    "MetaTileError",
    "TileNotInMetaTile",
    "metatile_for",
]

# Pixels of slack when counting how much buffer fits between a metatile and the grid's
# edge: the distance is a float difference of edges that are whole pixels apart.
_PIXEL_TOLERANCE = 1e-6


class MetaTileError(Exception):
    """Base class for every error raised by this module."""


class InvalidMetaTile(MetaTileError, ValueError):
    """A metatile size or buffer that cannot work (not positive whole numbers)."""


class TileNotInMetaTile(MetaTileError, ValueError):
    """A tile asked of a metatile that does not contain it."""


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class MetaTile:
    """A block of tiles drawn by one GetMap.

    ``columns`` and ``rows`` are the tile columns and top-down rows covered (clipped
    to the matrix); ``bbox`` is the GetMap bbox INCLUDING the buffer, in grid CRS
    units; ``width`` x ``height`` is the GetMap size in pixels including the buffer;
    ``buffer`` is the number of pixels actually added on the (left, bottom, right,
    top) sides, which is less than asked where the grid's extent ends. Hashable: it
    can key a single-flight map of metatiles being rendered.
    """

    z: int
    columns: range
    rows: range
    bbox: Bbox
    width: int
    height: int
    buffer: tuple[int, int, int, int]

    @property
    def tile_size(self) -> int:
        """Edge of one tile in pixels."""
        left, _, right, _ = self.buffer
        return (self.width - left - right) // len(self.columns)

    def tiles(self) -> list[Tile]:
        """The tiles of this metatile, row by row from the top-left."""
        return [Tile(x, y, self.z) for y in self.rows for x in self.columns]

    def __contains__(self, tile: object) -> bool:
        if not isinstance(tile, tuple) or len(tile) != 3:
            return False
        x, y, z = tile
        return z == self.z and x in self.columns and y in self.rows

    def crop_box(self, tile: Tile) -> tuple[int, int, int, int]:
        """Pillow crop box ``(left, upper, right, lower)`` of ``tile`` in the metatile
        image, in pixels from the image's top-left corner."""
        if tile not in self:
            raise TileNotInMetaTile(f"tile {tuple(tile)} is not in metatile {self.describe()}")
        size = self.tile_size
        left = self.buffer[0] + (tile[0] - self.columns.start) * size
        upper = self.buffer[3] + (tile[1] - self.rows.start) * size
        return (left, upper, left + size, upper + size)

    def describe(self) -> str:
        """Short text for logs: ``z/x0-x1/y0-y1`` (inclusive, rows from the top)."""
        c, r = self.columns, self.rows
        return f"{self.z}/{c.start}-{c.stop - 1}/{r.start}-{r.stop - 1}"


def _whole_number(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidMetaTile(f"{name} must be a whole number >= {low}, got {value!r}")
    return value


def _fits(distance: float, resolution: float, wanted: int) -> int:
    """Whole pixels of ``wanted`` that fit in ``distance`` (CRS units) at ``resolution``."""
    if wanted == 0 or not distance > 0:
        return 0
    return min(wanted, math.floor(distance / resolution + _PIXEL_TOLERANCE))


def metatile_for(grid: TileGrid, tile: Tile, size: tuple[int, int], buffer: int) -> MetaTile:
    """The metatile of ``size = (columns, rows)`` tiles that contains ``tile``.

    Blocks are aligned on multiples of ``size`` counted from the grid's top-left tile
    and clipped to the matrix, so at zoom 0 and 1 of Web Mercator a 4x4 metatile is
    1x1 and 2x2 tiles. ``buffer`` pixels are added on each side, except past the grid's
    bbox: the WMS is never asked for anything outside the grid's extent. Raises
    :class:`~s3maptiler.tiles.grids.TileOutOfRange` for a tile outside the grid.
    """
    cols = _whole_number("metatile columns", size[0], 1)
    rows = _whole_number("metatile rows", size[1], 1)
    buffer = _whole_number("meta_buffer", buffer, 0)
    grid.check(tile)
    x, y, z = tile
    matrix_cols, matrix_rows = grid.matrix_size(z)
    x0 = x // cols * cols
    y0 = y // rows * rows
    columns = range(x0, min(x0 + cols, matrix_cols))
    block_rows = range(y0, min(y0 + rows, matrix_rows))

    # Corner tiles give the edges, so the block shares its edges with every tile in it.
    top_left = grid.tile_bbox(Tile(columns.start, block_rows.start, z))
    bottom_right = grid.tile_bbox(Tile(columns.stop - 1, block_rows.stop - 1, z))
    left, top = top_left.left, top_left.top
    right, bottom = bottom_right.right, bottom_right.bottom

    res = grid.resolution(z)
    extent = grid.bbox
    pad = (
        _fits(left - extent.left, res, buffer),
        _fits(bottom - extent.bottom, res, buffer),
        _fits(extent.right - right, res, buffer),
        _fits(extent.top - top, res, buffer),
    )
    # Only widen sides that have a buffer, and never past the extent: a buffer that
    # reaches the grid's edge can overshoot it by a rounding error of the last bit.
    bbox = Bbox(
        max(left - pad[0] * res, extent.left) if pad[0] else left,
        max(bottom - pad[1] * res, extent.bottom) if pad[1] else bottom,
        min(right + pad[2] * res, extent.right) if pad[2] else right,
        min(top + pad[3] * res, extent.top) if pad[3] else top,
    )
    size_px = grid.tile_size
    return MetaTile(
        z=z,
        columns=columns,
        rows=block_rows,
        bbox=bbox,
        width=len(columns) * size_px + pad[0] + pad[2],
        height=len(block_rows) * size_px + pad[1] + pad[3],
        buffer=pad,
    )
