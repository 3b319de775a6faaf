"""Views of layers as documents see them (grid, CRS, zooms, extents in both CRSs, the
corners and per-zoom limits of the tile matrices) and which layers a document can
describe in each mode."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from s3maptiler.config import Layer
from s3maptiler.documents.errors import CannotDescribe, DocumentError, Skipped
from s3maptiler.documents.paths import WMTS_KEY_TEMPLATES, check_mode
from s3maptiler.tiles import srs
from s3maptiler.tiles.grids import Bbox, Tile, TileGrid
from s3maptiler.tiles.srs import CRS

logger = logging.getLogger(__name__)


# A corner that moves by less than this many pixels between zoom levels is "the same".
_CORNER_TOLERANCE_PX = 0.01


def intersect(a: Bbox, b: Bbox) -> Bbox | None:
    box = Bbox(
        max(a.left, b.left), max(a.bottom, b.bottom), min(a.right, b.right), min(a.top, b.top)
    )
    return box if box.left < box.right and box.bottom < box.top else None


@dataclass(frozen=True)
class View:
    """A layer with what every document needs resolved once."""

    layer: Layer
    grid: TileGrid
    crs: CRS
    zooms: range  # the layer's zoom levels, clipped to the grid
    native: Bbox  # the extent in grid CRS units, inside the grid
    lonlat: Bbox | None  # the extent in decimal degrees; None when it cannot be known

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def title(self) -> str:
        return self.layer.title or self.layer.name


def view_of(layer: Layer) -> View:
    grid = layer.tile_grid
    crs = srs.crs(grid.srs)
    zooms = range(layer.min_zoom, min(layer.max_zoom, grid.max_zoom) + 1)
    if not zooms:
        raise CannotDescribe(
            f"layer {layer.name}: zoom {layer.min_zoom}..{layer.max_zoom} is outside"
            f" grid {grid.name} (0..{grid.max_zoom})"
        )
    if not crs.lonlat:
        # No projection library: a lon/lat extent cannot be moved into the grid's CRS.
        return View(layer, grid, crs, zooms, grid.bbox, _bbox_or_none(layer.extent))
    grid_lonlat = Bbox(
        *srs.to_lonlat(crs, grid.bbox.left, grid.bbox.bottom),
        *srs.to_lonlat(crs, grid.bbox.right, grid.bbox.top),
    )
    if layer.extent is None:
        return View(layer, grid, crs, zooms, grid.bbox, grid_lonlat)
    west, south, east, north = (float(v) for v in layer.extent)
    projected = Bbox(*srs.to_native(crs, west, south), *srs.to_native(crs, east, north))
    native = intersect(projected, grid.bbox)
    lonlat = intersect(Bbox(west, south, east, north), grid_lonlat)
    if native is None or lonlat is None:
        raise CannotDescribe(
            f"layer {layer.name}: extent {layer.extent} is outside grid {grid.name}"
        )
    return View(layer, grid, crs, zooms, native, lonlat)


def _bbox_or_none(extent: tuple[float, float, float, float] | None) -> Bbox | None:
    return None if extent is None else Bbox(*(float(v) for v in extent))


def corner_of(grid: TileGrid, zooms: range, corner: str) -> tuple[float, float] | None:
    """The grid's ``"top-left"`` or ``"bottom-left"`` tile corner, if one point serves all
    ``zooms``; None when the matrices are not aligned on that side.

    Built-in grids are aligned on both sides; a custom grid counted from its top-left
    corner whose bbox is not a whole number of tiles high has a different bottom edge
    at every zoom, which TMS (one Origin) cannot describe.
    """
    points = []
    for z in zooms:
        _, rows = grid.matrix_size(z)
        if corner == "top-left":
            box = grid.tile_bbox(Tile(0, 0, z))
            points.append((box.left, box.top, grid.resolution(z)))
        else:
            box = grid.tile_bbox(Tile(0, rows - 1, z))
            points.append((box.left, box.bottom, grid.resolution(z)))
    x0, y0, _ = points[0]
    for x, y, res in points:
        if abs(x - x0) > _CORNER_TOLERANCE_PX * res or abs(y - y0) > _CORNER_TOLERANCE_PX * res:
            return None
    return x0, y0


def matrix_limits(view: View) -> list[tuple[int, range, range]]:
    """``(z, columns, rows)`` of the tiles each of the layer's zoom levels covers in
    its extent (WMTS TileMatrixSetLimits, OGC API tileMatrixSetLimits); an extent
    thinner than a float covers the whole matrix."""
    limits = []
    for z in view.zooms:
        cols, rows = view.grid.tiles_in(view.native, z)
        if not cols or not rows:
            width, height = view.grid.matrix_size(z)
            cols, rows = range(width), range(height)
        limits.append((z, cols, rows))
    return limits


def tms_levels(layer: Layer, grid: TileGrid) -> range:
    # From 0, not min_zoom: GDAL refuses a TileMap whose first TileSet is not order 0.
    return range(0, min(layer.max_zoom, grid.max_zoom) + 1)


def tms_problem(layer: Layer, mode: str) -> str | None:
    if mode == "keys" and layer.layout != "tms":
        return f"layout {layer.layout} is not the TMS z/x/y order with y counted from the bottom"
    if mode == "keys" and layer.pixel_ratio != 1:
        return f"TMS tile URLs end in {{y}}.{{extension}}: no room for @{layer.pixel_ratio}x"
    grid = layer.tile_grid
    if corner_of(grid, tms_levels(layer, grid), "bottom-left") is None:
        return f"grid {grid.name} has no single bottom-left origin for all zoom levels"
    return None


def _wmts_problem(layer: Layer, mode: str) -> str | None:
    if mode == "keys" and layer.layout not in WMTS_KEY_TEMPLATES:
        return f"layout {layer.layout} cannot be written as a WMTS ResourceURL template"
    return None


def skipped_layers(layers: Sequence[Layer], document: str, mode: str) -> list[Skipped]:
    """The layers that ``document`` (``"tms"`` or ``"wmts"``) leaves out in ``mode``
    for their layout or grid. Not listed: a layer whose grid's TileMatrixSet id a
    different grid already has, which the WMTS document leaves out too (logged)."""
    check_mode(mode)
    problems = {"tms": tms_problem, "wmts": _wmts_problem}
    if document not in problems:
        raise DocumentError(f"document {document!r} is not one of tms, wmts")
    skipped = []
    for layer in layers:
        reason = problems[document](layer, mode)
        if reason is None:
            try:
                view_of(layer)
            except CannotDescribe as exc:
                reason = str(exc)
        if reason is not None:
            skipped.append(Skipped(layer.name, reason))
    return skipped


def usable(layers: Sequence[Layer], document: str, mode: str) -> list[View]:
    """Views of the layers ``document`` can express; the rest are logged."""
    left_out = {s.layer: s.reason for s in skipped_layers(layers, document, mode)}
    for name, reason in left_out.items():
        logger.info("%s document (%s mode) leaves out layer %s: %s", document, mode, name, reason)
    return [view_of(layer) for layer in layers if layer.name not in left_out]
