"""What the documents share: numbers written in full, views of layers (grid, CRS,
zooms, extents), the paths documents live at, the layers a document leaves out, and
XML helpers. Pure and deterministic."""

from __future__ import annotations

import logging
import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple
from urllib.parse import quote

from s3maptiler.config import Layer
from s3maptiler.tiles import srs
from s3maptiler.tiles.grids import GLOBAL_GEODETIC, WEB_MERCATOR, Bbox, Tile, TileGrid
from s3maptiler.tiles.srs import CRS

__all__ = [
    "MODES",
    "TMS_CONTENT_TYPE",
    "WMTS_CAPABILITIES_PATH",
    "WMTS_CONTENT_TYPE",
    "CannotDescribe",
    "DocumentError",
    "InvalidCallback",
    "Skipped",
    "UnknownFormat",
    "UnknownMode",
    "arcgis_service_path",
    "skipped_layers",
    "tile_map_path",
    "tms_service_path",
]

logger = logging.getLogger(__name__)

#: ``"service"``: tiles from the service's routes; ``"keys"``: tiles from their S3 keys.
MODES = ("service", "keys")
#: Content-Type of the TMS documents (the TMS spec's examples use text/xml).
TMS_CONTENT_TYPE = "text/xml; charset=utf-8"
#: Content-Type of the WMTS capabilities.
WMTS_CONTENT_TYPE = "application/xml; charset=utf-8"
#: Where the WMTS capabilities live under the base URL, in both modes (REST binding).
WMTS_CAPABILITIES_PATH = "wmts/1.0.0/WMTSCapabilities.xml"

XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'
# Layouts whose key path a WMTS ResourceURL template can spell, with their templates.
WMTS_KEY_TEMPLATES = {
    "xyz": "{TileMatrix}/{TileCol}/{TileRow}",
    "wmts": "{TileMatrix}/{TileRow}/{TileCol}",
}
# A corner that moves by less than this many pixels between zoom levels is "the same".
_CORNER_TOLERANCE_PX = 0.01


class DocumentError(ValueError):
    """Base class for every error raised by this module; the message is one line."""


class UnknownMode(DocumentError):
    """A mode that is not one of :data:`MODES`."""


class CannotDescribe(DocumentError):
    """A layer that the document cannot express (layout in keys mode, grid or CRS)."""


class InvalidCallback(DocumentError):
    """A JSONP callback that is not a dotted JavaScript identifier (HTTP 400)."""


class UnknownFormat(DocumentError):
    """A JSON output format other than ``json`` or ``pjson`` (HTTP 400)."""


class Skipped(NamedTuple):
    """A layer left out of a document, and why."""

    layer: str
    reason: str


# --------------------------------------------------------------------------- numbers


def num(value: float) -> str:
    """Full precision, never an exponent, no ``-0``: ``90.0`` -> ``"90"``."""
    v = float(value) + 0.0  # -0.0 + 0.0 is 0.0
    if not math.isfinite(v):
        raise DocumentError(f"cannot write the number {v!r}")
    if v.is_integer():
        return str(int(v))
    text = repr(v)  # the shortest string that reads back as the same float
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")
    return text


def pair(a: float, b: float) -> str:
    return f"{num(a)} {num(b)}"


# --------------------------------------------------------------------------- extents


def intersect(a: Bbox, b: Bbox) -> Bbox | None:
    box = Bbox(
        max(a.left, b.left), max(a.bottom, b.bottom), min(a.right, b.right), min(a.top, b.top)
    )
    return box if box.left < box.right and box.bottom < box.top else None


# --------------------------------------------------------------------------- layers


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


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise UnknownMode(f"mode {mode!r} is not one of {', '.join(MODES)}")


def base_of(base_url: str) -> str:
    return base_url.rstrip("/")


def segment(name: str) -> str:
    """A layer name as one URL path segment (``@`` of ``roads@2x`` kept: a path may
    hold it, and an S3 key written from it matches the URL a client asks for)."""
    return quote(name, safe="@")


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


# --------------------------------------------------------------------------- paths


def tms_service_path(mode: str = "service") -> str:
    """Path of the TMS TileMapService document under the base URL.

    ``1.0.0/`` on the service; ``1.0.0/tilemapservice.xml`` in a bucket, where a key
    ending in ``/`` would be answered by the website's index document instead.
    """
    check_mode(mode)
    return "1.0.0/" if mode == "service" else "1.0.0/tilemapservice.xml"


def tile_map_path(layer: Layer, mode: str = "service") -> str:
    """Path of a layer's TMS TileMap document under the base URL.

    ``1.0.0/{layer}`` on the service; ``{prefix}tilemapresource.xml`` in a bucket,
    beside the tiles it describes (the gdal2tiles/Cesium convention).
    """
    check_mode(mode)
    if mode == "service":
        return f"1.0.0/{segment(layer.name)}"
    return f"{layer.prefix}tilemapresource.xml"


#: Where every layer's ArcGIS REST service lives under the base URL (and in a bucket).
ARCGIS_SERVICES_PREFIX = "arcgis/rest/services/"


def arcgis_service_path(layer: Layer) -> str:
    """Path of a layer's ArcGIS MapServer under the base URL; clients append
    ``?f=json`` for :func:`arcgis_mapserver` and ``/tile/{level}/{row}/{col}`` for tiles."""
    return f"{ARCGIS_SERVICES_PREFIX}{segment(layer.name)}/MapServer"


# --------------------------------------------------------------------------- XML


def sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    # Tags carry their prefix literally ("ows:Title") and the root declares the
    # prefixes, so the output uses the prefixes clients expect, not ns0/ns1.
    element = ET.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = text
    return element


def to_xml(root: ET.Element) -> str:
    ET.indent(root, space="  ")
    return XML_DECLARATION + ET.tostring(root, encoding="unicode") + "\n"


# --------------------------------------------------------------------------- standard grids


def geometry(grid: TileGrid) -> tuple[Any, ...]:
    return (srs.crs(grid.srs).urn, grid.bbox, grid.tile_size, grid.resolutions, grid.origin)


@dataclass(frozen=True)
class StandardGrid:
    """What each document calls a grid that is a registered tile matrix set: matched
    by its geometry, whatever the configuration names it."""

    grid: TileGrid
    wmts_id: str  # WMTS 1.0.0 TileMatrixSet identifier
    ogc_id: str  # OGC TileMatrixSet 2.0 id (OGC API - Tiles)
    ogc_crs: str | None  # the CRS as the OGC set defines it (None: the grid's)
    scale_set: str  # the well-known scale set (OGC WMTS Annex E)
    tms_profile: str  # OSGeo TMS TileSets profile


STANDARD_GRIDS = (
    StandardGrid(WEB_MERCATOR, "GoogleMapsCompatible", "WebMercatorQuad", None,
                 "GoogleMapsCompatible", "global-mercator"),
    StandardGrid(GLOBAL_GEODETIC, "WorldCRS84Quad", "WorldCRS84Quad", "CRS:84",
                 "GoogleCRS84Quad", "global-geodetic"),
)  # fmt: skip


def standard_grid(grid: TileGrid) -> StandardGrid | None:
    """The registered set `grid` is, by geometry; None for a grid of its own."""
    shape = geometry(grid)
    return next((s for s in STANDARD_GRIDS if geometry(s.grid) == shape), None)
