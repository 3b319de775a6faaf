"""Documents that let GIS clients open the layers: TMS XML, WMTS capabilities, ArcGIS JSON.

Every function here is pure and deterministic: the same layers and base URL give the
same bytes, so a publisher can skip objects that did not change. URLs are built from a
``base_url`` (the S3 website / CloudFront host, or the service's own URL) and a
``mode``:

- ``"service"``: tiles come from the service's fixed routes, which work for every
  layout: ``{base}/1.0.0/{layer}/{z}/{x}/{y}.{ext}`` (TMS),
  ``{base}/wmts/1.0.0/{layer}/{Style}/{TileMatrixSet}/{TileMatrix}/{TileRow}/{TileCol}.{ext}``
  and ``{base}/wmts?`` (WMTS REST and KVP), ``{base}/arcgis/rest/services/{layer}/MapServer``.
- ``"keys"``: tiles come straight from their S3 keys, ``{base}/{prefix}{layout path}``.
  Only some layouts can be written down: TMS needs layout ``tms``; WMTS templates need
  ``xyz`` or ``wmts``. Other layers are left out of the document, logged, and listed by
  :func:`skipped_layers`.

Numbers in XML are written in full precision and never in exponent form
(``0.000042915344238281`` rather than ``4.2915344238281e-05``): some clients reject
exponents and ``%g`` loses metres.

Where the documents live under the base URL is decided here too
(:func:`tms_service_path`, :func:`tile_map_path`, :data:`WMTS_CAPABILITIES_PATH`,
:func:`arcgis_service_path`), so the hrefs inside them and the routes or keys that
serve them cannot drift apart.

>>> from s3maptiler.config import Layer
>>> layer = Layer("roads", "http://wms.example/", "roads", max_zoom=3)
>>> "units-per-pixel=\\"156543.03392804097\\" order=\\"0\\"" in tile_map(layer, "https://t.example")
True
"""

from __future__ import annotations

import json
import logging
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple
from urllib.parse import quote

from s3maptiler.config import Layer
from s3maptiler.tiles import srs
from s3maptiler.tiles.formats import JPEG_QUALITY, esri_formats
from s3maptiler.tiles.grids import GLOBAL_GEODETIC, WEB_MERCATOR, Bbox, Tile, TileGrid
from s3maptiler.tiles.srs import CRS
from s3maptiler.tiles.tilemath import arcgis_scale, scale_denominator

__all__ = [
    "ARCGIS_CAPABILITIES",
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
    "arcgis_mapserver",
    "arcgis_service_path",
    "json_document",
    "skipped_layers",
    "tile_map",
    "tile_map_path",
    "tile_map_service",
    "tile_matrix_set_id",
    "tms_root",
    "tms_service_path",
    "wmts_capabilities",
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
#: ArcGIS ``capabilities``. Never "Tilemap": the ArcGIS JS API would then fetch
#: ``/tilemap/...`` documents that we do not serve.
ARCGIS_CAPABILITIES = "Map,TilesOnly"

_TMS_VERSION = "1.0.0"
_WMTS_NS = "http://www.opengis.net/wmts/1.0"
_OWS_NS = "http://www.opengis.net/ows/1.1"
_XLINK_NS = "http://www.w3.org/1999/xlink"
_XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'
_GOOGLE_WKSS = "urn:ogc:def:wkss:OGC:1.0:GoogleMapsCompatible"
_STYLE = "default"
# Layouts whose key path a WMTS ResourceURL template can spell, with their templates.
_WMTS_KEY_TEMPLATES = {
    "xyz": "{TileMatrix}/{TileCol}/{TileRow}",
    "wmts": "{TileMatrix}/{TileRow}/{TileCol}",
}
_CALLBACK_RE = re.compile(r"[A-Za-z_$][0-9A-Za-z_$]*(?:\.[A-Za-z_$][0-9A-Za-z_$]*)*")
_CALLBACK_MAX = 128
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


def _num(value: float) -> str:
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


def _pair(a: float, b: float) -> str:
    return f"{_num(a)} {_num(b)}"


# --------------------------------------------------------------------------- extents


def _intersect(a: Bbox, b: Bbox) -> Bbox | None:
    box = Bbox(
        max(a.left, b.left), max(a.bottom, b.bottom), min(a.right, b.right), min(a.top, b.top)
    )
    return box if box.left < box.right and box.bottom < box.top else None


# --------------------------------------------------------------------------- layers


@dataclass(frozen=True)
class _View:
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


def _view(layer: Layer) -> _View:
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
        return _View(layer, grid, crs, zooms, grid.bbox, _bbox_or_none(layer.extent))
    grid_lonlat = Bbox(
        *srs.to_lonlat(crs, grid.bbox.left, grid.bbox.bottom),
        *srs.to_lonlat(crs, grid.bbox.right, grid.bbox.top),
    )
    if layer.extent is None:
        return _View(layer, grid, crs, zooms, grid.bbox, grid_lonlat)
    west, south, east, north = (float(v) for v in layer.extent)
    projected = Bbox(*srs.to_native(crs, west, south), *srs.to_native(crs, east, north))
    native = _intersect(projected, grid.bbox)
    lonlat = _intersect(Bbox(west, south, east, north), grid_lonlat)
    if native is None or lonlat is None:
        raise CannotDescribe(
            f"layer {layer.name}: extent {layer.extent} is outside grid {grid.name}"
        )
    return _View(layer, grid, crs, zooms, native, lonlat)


def _bbox_or_none(extent: tuple[float, float, float, float] | None) -> Bbox | None:
    return None if extent is None else Bbox(*(float(v) for v in extent))


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise UnknownMode(f"mode {mode!r} is not one of {', '.join(MODES)}")


def _base(base_url: str) -> str:
    return base_url.rstrip("/")


def _segment(name: str) -> str:
    """A layer name as one URL path segment."""
    return quote(name, safe="")


def _corner(grid: TileGrid, zooms: range, corner: str) -> tuple[float, float] | None:
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


def _tms_levels(layer: Layer, grid: TileGrid) -> range:
    # From 0, not min_zoom: GDAL refuses a TileMap whose first TileSet is not order 0.
    return range(0, min(layer.max_zoom, grid.max_zoom) + 1)


def _tms_problem(layer: Layer, mode: str) -> str | None:
    if mode == "keys" and layer.layout != "tms":
        return f"layout {layer.layout} is not the TMS z/x/y order with y counted from the bottom"
    grid = layer.tile_grid
    if _corner(grid, _tms_levels(layer, grid), "bottom-left") is None:
        return f"grid {grid.name} has no single bottom-left origin for all zoom levels"
    return None


def _wmts_problem(layer: Layer, mode: str) -> str | None:
    if mode == "keys" and layer.layout not in _WMTS_KEY_TEMPLATES:
        return f"layout {layer.layout} cannot be written as a WMTS ResourceURL template"
    return None


def skipped_layers(layers: Sequence[Layer], document: str, mode: str) -> list[Skipped]:
    """The layers that ``document`` (``"tms"`` or ``"wmts"``) leaves out in ``mode``."""
    _check_mode(mode)
    problems = {"tms": _tms_problem, "wmts": _wmts_problem}
    if document not in problems:
        raise DocumentError(f"document {document!r} is not one of tms, wmts")
    skipped = []
    for layer in layers:
        reason = problems[document](layer, mode)
        if reason is None:
            try:
                _view(layer)
            except CannotDescribe as exc:
                reason = str(exc)
        if reason is not None:
            skipped.append(Skipped(layer.name, reason))
    return skipped


def _usable(layers: Sequence[Layer], document: str, mode: str) -> list[_View]:
    """Views of the layers ``document`` can express; the rest are logged."""
    left_out = {s.layer: s.reason for s in skipped_layers(layers, document, mode)}
    for name, reason in left_out.items():
        logger.info("%s document (%s mode) leaves out layer %s: %s", document, mode, name, reason)
    return [_view(layer) for layer in layers if layer.name not in left_out]


# --------------------------------------------------------------------------- paths


def tms_service_path(mode: str = "service") -> str:
    """Path of the TMS TileMapService document under the base URL.

    ``1.0.0/`` on the service; ``1.0.0/tilemapservice.xml`` in a bucket, where a key
    ending in ``/`` would be answered by the website's index document instead.
    """
    _check_mode(mode)
    return "1.0.0/" if mode == "service" else "1.0.0/tilemapservice.xml"


def tile_map_path(layer: Layer, mode: str = "service") -> str:
    """Path of a layer's TMS TileMap document under the base URL.

    ``1.0.0/{layer}`` on the service; ``{prefix}tilemapresource.xml`` in a bucket,
    beside the tiles it describes (the gdal2tiles/Cesium convention).
    """
    _check_mode(mode)
    if mode == "service":
        return f"1.0.0/{_segment(layer.name)}"
    return f"{layer.prefix}tilemapresource.xml"


#: Where every layer's ArcGIS REST service lives under the base URL (and in a bucket).
ARCGIS_SERVICES_PREFIX = "arcgis/rest/services/"


def arcgis_service_path(layer: Layer) -> str:
    """Path of a layer's ArcGIS MapServer under the base URL; clients append
    ``?f=json`` for :func:`arcgis_mapserver` and ``/tile/{level}/{row}/{col}`` for tiles."""
    return f"{ARCGIS_SERVICES_PREFIX}{_segment(layer.name)}/MapServer"


# --------------------------------------------------------------------------- XML


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    # Tags carry their prefix literally ("ows:Title") and the root declares the
    # prefixes, so the output uses the prefixes clients expect, not ns0/ns1.
    element = ET.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = text
    return element


def _xml(root: ET.Element) -> str:
    ET.indent(root, space="  ")
    return _XML_DECLARATION + ET.tostring(root, encoding="unicode") + "\n"


# --------------------------------------------------------------------------- TMS


def _tms_profile(grid: TileGrid) -> str:
    if grid == WEB_MERCATOR:
        return "global-mercator"
    if _geometry(grid) == _geometry(GLOBAL_GEODETIC):
        return "global-geodetic"
    return "none"


def tms_root(base_url: str, mode: str = "service", title: str = "s3maptiler") -> str:
    """The TMS root document: ``<Services>`` with one TileMapService."""
    _check_mode(mode)
    root = ET.Element("Services")
    href = f"{_base(base_url)}/{tms_service_path(mode)}"
    # "version" first: GDAL recognises the document by the text '<TileMapService version="1.0'.
    _sub(root, "TileMapService", version=_TMS_VERSION, title=title, href=href)
    return _xml(root)


def tile_map_service(
    layers: Sequence[Layer], base_url: str, mode: str = "service", title: str = "s3maptiler"
) -> str:
    """The TMS TileMapService document: one TileMap entry per layer TMS can express."""
    _check_mode(mode)
    base = _base(base_url)
    root = ET.Element("TileMapService", {"version": _TMS_VERSION, "services": f"{base}/"})
    _sub(root, "Title", title)
    _sub(root, "Abstract", "")
    maps = _sub(root, "TileMaps")
    for view in _usable(layers, "tms", mode):
        _sub(
            maps,
            "TileMap",
            title=view.title,
            srs=view.crs.name,
            profile=_tms_profile(view.grid),
            href=f"{base}/{tile_map_path(view.layer, mode)}",
        )
    return _xml(root)


def tile_map(layer: Layer, base_url: str, mode: str = "service") -> str:
    """The TMS TileMap document of one layer.

    TileSets run from zoom 0 (not ``min_zoom``) to ``max_zoom``: GDAL refuses a
    TileMap whose first TileSet is not ``order="0"`` and takes the tile URL from it;
    tiles below ``min_zoom`` answer 404, which clients draw as empty. ``units-per-pixel``
    is the resolution in CRS units (meters or degrees); Origin is the bottom-left
    corner. BoundingBox is the whole tiled area, not the layer's extent: GDAL numbers
    tiles from the BoundingBox's corners, so a smaller box would fetch the wrong tiles.
    Raises :class:`CannotDescribe` for a layer TMS cannot express in ``mode``.
    """
    _check_mode(mode)
    problem = _tms_problem(layer, mode)
    if problem is not None:
        raise CannotDescribe(f"layer {layer.name}: {problem}")
    view = _view(layer)
    grid = view.grid
    base = _base(base_url)
    levels = _tms_levels(layer, grid)
    origin = _corner(grid, levels, "bottom-left")
    if origin is None:  # already ruled out by _tms_problem; keeps the type checker informed
        raise CannotDescribe(f"layer {layer.name}: grid {grid.name} has no bottom-left origin")
    fmt = layer.tile_format

    root = ET.Element(
        "TileMap",
        {"version": _TMS_VERSION, "tilemapservice": f"{base}/{tms_service_path(mode)}"},
    )
    _sub(root, "Title", view.title)
    _sub(root, "Abstract", "")
    _sub(root, "SRS", view.crs.name)
    _sub(
        root,
        "BoundingBox",
        minx=_num(origin[0]),
        miny=_num(origin[1]),
        maxx=_num(grid.bbox.right),
        maxy=_num(grid.bbox.top),
    )
    _sub(root, "Origin", x=_num(origin[0]), y=_num(origin[1]))
    _sub(
        root,
        "TileFormat",
        width=str(grid.tile_size),
        height=str(grid.tile_size),
        **{"mime-type": fmt.media_type},
        extension=layer.extension,
    )
    tile_sets = _sub(root, "TileSets", profile=_tms_profile(grid))
    if mode == "service":
        tiles = f"{base}/1.0.0/{_segment(layer.name)}"
    else:
        tiles = f"{base}/{layer.prefix}".rstrip("/")
    for z in levels:
        _sub(
            tile_sets,
            "TileSet",
            href=f"{tiles}/{z}",
            **{"units-per-pixel": _num(grid.resolution(z))},
            order=str(z),
        )
    return _xml(root)


# --------------------------------------------------------------------------- WMTS


def _geometry(grid: TileGrid) -> tuple[Any, ...]:
    return (srs.crs(grid.srs).urn, grid.bbox, grid.tile_size, grid.resolutions, grid.origin)


def tile_matrix_set_id(grid: TileGrid) -> str:
    """The WMTS TileMatrixSet identifier of ``grid``.

    ``GoogleMapsCompatible`` for the Web Mercator grid, ``WorldCRS84Quad`` for the
    2x1 EPSG:4326 grid (whatever it is called in the configuration), else its name.
    """
    if grid == WEB_MERCATOR:
        return "GoogleMapsCompatible"
    if _geometry(grid) == _geometry(GLOBAL_GEODETIC):
        return "WorldCRS84Quad"
    return grid.name


def _wgs84_box(parent: ET.Element, box: Bbox) -> None:
    element = _sub(parent, "ows:WGS84BoundingBox")
    _sub(element, "ows:LowerCorner", _pair(box.left, box.bottom))
    _sub(element, "ows:UpperCorner", _pair(box.right, box.top))


def _native_box(parent: ET.Element, crs: CRS, box: Bbox) -> None:
    element = _sub(parent, "ows:BoundingBox", crs=crs.urn)
    if crs.lat_first:
        lower, upper = _pair(box.bottom, box.left), _pair(box.top, box.right)
    else:
        lower, upper = _pair(box.left, box.bottom), _pair(box.right, box.top)
    _sub(element, "ows:LowerCorner", lower)
    _sub(element, "ows:UpperCorner", upper)


def _kvp_operation(parent: ET.Element, name: str, href: str) -> None:
    operation = _sub(parent, "ows:Operation", name=name)
    get = _sub(_sub(_sub(operation, "ows:DCP"), "ows:HTTP"), "ows:Get", **{"xlink:href": href})
    constraint = _sub(get, "ows:Constraint", name="GetEncoding")
    _sub(_sub(constraint, "ows:AllowedValues"), "ows:Value", "KVP")


def _resource_template(view: _View, base: str, mode: str) -> str:
    ext = view.layer.extension
    if mode == "service":
        return (
            f"{base}/wmts/1.0.0/{_segment(view.name)}"
            f"/{{Style}}/{{TileMatrixSet}}/{{TileMatrix}}/{{TileRow}}/{{TileCol}}.{ext}"
        )
    return f"{base}/{view.layer.prefix}{_WMTS_KEY_TEMPLATES[view.layer.layout]}.{ext}"


def _limits(parent: ET.Element, view: _View, set_levels: int) -> None:
    """TileMatrixSetLimits when the layer covers less than the whole set: fewer zoom
    levels (OpenLayers and QGIS only offer the listed ones) or a smaller extent."""
    whole = view.zooms == range(set_levels) and view.native == view.grid.bbox
    if whole:
        return
    limits = _sub(parent, "TileMatrixSetLimits")
    for z in view.zooms:
        cols, rows = view.grid.tiles_in(view.native, z)
        if not cols or not rows:  # an extent thinner than a float: the whole matrix
            width, height = view.grid.matrix_size(z)
            cols, rows = range(width), range(height)
        entry = _sub(limits, "TileMatrixLimits")
        _sub(entry, "TileMatrix", str(z))
        _sub(entry, "MinTileRow", str(rows[0]))
        _sub(entry, "MaxTileRow", str(rows[-1]))
        _sub(entry, "MinTileCol", str(cols[0]))
        _sub(entry, "MaxTileCol", str(cols[-1]))


def _tile_matrix_set(parent: ET.Element, set_id: str, grid: TileGrid, levels: int) -> None:
    crs = srs.crs(grid.srs)
    element = _sub(parent, "TileMatrixSet")
    _sub(element, "ows:Identifier", set_id)
    _sub(element, "ows:SupportedCRS", crs.urn)
    if grid == WEB_MERCATOR:
        _sub(element, "WellKnownScaleSet", _GOOGLE_WKSS)
    for z in range(levels):
        box = grid.tile_bbox(Tile(0, 0, z))
        width, height = grid.matrix_size(z)
        matrix = _sub(element, "TileMatrix")
        _sub(matrix, "ows:Identifier", str(z))
        _sub(matrix, "ScaleDenominator", _num(scale_denominator(grid, z)))
        corner = _pair(box.top, box.left) if crs.lat_first else _pair(box.left, box.top)
        _sub(matrix, "TopLeftCorner", corner)
        _sub(matrix, "TileWidth", str(grid.tile_size))
        _sub(matrix, "TileHeight", str(grid.tile_size))
        _sub(matrix, "MatrixWidth", str(width))
        _sub(matrix, "MatrixHeight", str(height))


def wmts_capabilities(
    layers: Sequence[Layer], base_url: str, mode: str = "service", title: str = "s3maptiler"
) -> str:
    """The WMTS 1.0.0 GetCapabilities document for ``layers``.

    One TileMatrixSet per distinct grid, with TileMatrix identifiers ``"0"``,
    ``"1"``, ... up to the highest ``max_zoom`` of its layers; a layer that covers
    less (zoom range or extent) says so in TileMatrixSetLimits. GDAL opens the
    deepest TileMatrix of the set whatever the limits say, so layers sharing a grid
    are best given the same ``max_zoom``. The KVP operations are advertised in
    ``"service"`` mode only (a bucket has no ``/wmts?`` endpoint).
    """
    _check_mode(mode)
    base = _base(base_url)
    views: list[_View] = []
    sets: dict[str, tuple[TileGrid, int]] = {}  # id -> (grid, number of levels)
    for view in _usable(layers, "wmts", mode):
        set_id = tile_matrix_set_id(view.grid)
        known = sets.get(set_id)
        if known is not None and _geometry(known[0]) != _geometry(view.grid):
            logger.info(
                "wmts document leaves out layer %s: another grid is also called %s",
                view.name,
                set_id,
            )
            continue
        levels = max(view.zooms.stop, known[1] if known else 0)
        sets[set_id] = (known[0] if known else view.grid, levels)
        views.append(view)

    root = ET.Element(
        "Capabilities",
        {
            "xmlns": _WMTS_NS,
            "xmlns:ows": _OWS_NS,
            "xmlns:xlink": _XLINK_NS,
            "version": "1.0.0",
        },
    )
    identification = _sub(root, "ows:ServiceIdentification")
    _sub(identification, "ows:Title", title)
    _sub(identification, "ows:ServiceType", "OGC WMTS")
    _sub(identification, "ows:ServiceTypeVersion", "1.0.0")
    if mode == "service":
        operations = _sub(root, "ows:OperationsMetadata")
        _kvp_operation(operations, "GetCapabilities", f"{base}/wmts?")
        _kvp_operation(operations, "GetTile", f"{base}/wmts?")

    contents = _sub(root, "Contents")
    for view in views:
        fmt = view.layer.tile_format
        set_id = tile_matrix_set_id(view.grid)
        # Child order is the schema's: Title, WGS84BoundingBox, Identifier, BoundingBox,
        # Style, Format, TileMatrixSetLink, ResourceURL.
        element = _sub(contents, "Layer")
        _sub(element, "ows:Title", view.title)
        if view.lonlat is not None:
            _wgs84_box(element, view.lonlat)
        _sub(element, "ows:Identifier", view.name)
        # The extent in the set's own CRS, exactly: GDAL prefers it to a re-projected
        # WGS84BoundingBox (whose 85.05112877980659 misses the top edge by a hair).
        _native_box(element, view.crs, view.native)
        style = _sub(element, "Style", isDefault="true")
        _sub(style, "ows:Identifier", _STYLE)
        _sub(element, "Format", fmt.media_type)
        link = _sub(element, "TileMatrixSetLink")
        _sub(link, "TileMatrixSet", set_id)
        _limits(link, view, sets[set_id][1])
        _sub(
            element,
            "ResourceURL",
            format=fmt.media_type,
            resourceType="tile",
            template=_resource_template(view, base, mode),
        )
    for set_id, (grid, levels) in sets.items():
        _tile_matrix_set(contents, set_id, grid, levels)
    _sub(root, "ServiceMetadataURL", **{"xlink:href": f"{base}/{WMTS_CAPABILITIES_PATH}"})
    return _xml(root)


# --------------------------------------------------------------------------- ArcGIS


def arcgis_mapserver(layer: Layer) -> dict[str, Any]:
    """The ArcGIS MapServer JSON (``MapServer?f=json``) of a tiled layer.

    ``tileInfo.lods`` list every level from 0 to ``max_zoom``: GDAL takes the base
    resolution from level 0 and the deepest level from the count, and Esri's own
    caches list the whole tiling scheme too; ``minScale``/``maxScale`` bound the
    levels actually served (``min_zoom``..``max_zoom``). Scales are
    ``resolution * 96 dpi * 39.37 in/m``. Raises :class:`CannotDescribe` for a grid
    whose CRS has no EPSG code or whose tiles are not counted from one top-left corner.
    """
    view = _view(layer)
    grid, crs = view.grid, view.crs
    if crs.wkid is None or crs.latest_wkid is None:
        raise CannotDescribe(f"layer {layer.name}: {grid.srs} has no ArcGIS wkid")
    levels = range(0, view.zooms.stop)
    origin = _corner(grid, levels, "top-left")
    if origin is None:
        raise CannotDescribe(f"layer {layer.name}: grid {grid.name} has no single top-left origin")
    reference = {"wkid": crs.wkid, "latestWkid": crs.latest_wkid}
    fmt = layer.tile_format
    lods = [
        {"level": z, "resolution": grid.resolution(z), "scale": arcgis_scale(grid, z)}
        for z in levels
    ]
    extent = {
        "xmin": view.native.left,
        "ymin": view.native.bottom,
        "xmax": view.native.right,
        "ymax": view.native.top,
        "spatialReference": reference,
    }
    return {
        "currentVersion": 10.81,
        "serviceDescription": "",
        "mapName": view.title,
        "description": "",
        "copyrightText": "",
        "supportsDynamicLayers": False,
        "layers": [],
        "tables": [],
        "spatialReference": reference,
        "singleFusedMapCache": True,
        "tileInfo": {
            "rows": grid.tile_size,
            "cols": grid.tile_size,
            "dpi": 96,
            "format": fmt.esri_name,
            "compressionQuality": JPEG_QUALITY if fmt.name == "jpeg" else 0,
            "origin": {"x": origin[0], "y": origin[1]},
            "spatialReference": reference,
            "lods": lods,
        },
        "initialExtent": dict(extent),
        "fullExtent": dict(extent),
        "minScale": arcgis_scale(grid, view.zooms.start),
        "maxScale": arcgis_scale(grid, view.zooms.stop - 1),
        "units": "esriDecimalDegrees" if crs.kind == "geographic" else "esriMeters",
        "supportedImageFormatTypes": esri_formats(fmt, [layer.extension, *layer.formats]),
        "capabilities": ARCGIS_CAPABILITIES,
        "exportTilesAllowed": False,
    }


def json_document(
    doc: dict[str, Any], fmt: str = "json", callback: str | None = None
) -> tuple[bytes, str]:
    """``(body, content type)`` of an ArcGIS REST answer.

    ``fmt`` is the ``f`` parameter: ``json`` (compact) or ``pjson`` (indented, one
    key per line; GDAL asks for it with ``pretty=true``). With a ``callback`` the
    body is JSONP, ``/**/cb({...});`` as ``application/javascript``; the callback
    must be a dotted JavaScript identifier of at most 128 characters, else
    :class:`InvalidCallback`. Non-ASCII text is escaped, so the body is ASCII.
    """
    key = fmt.strip().lower() if isinstance(fmt, str) else ""
    if key == "json":
        text = json.dumps(doc, separators=(",", ":"), allow_nan=False)
    elif key == "pjson":
        text = json.dumps(doc, indent=2, allow_nan=False)
    else:
        raise UnknownFormat(f"f={str(fmt)[:20]!r} is not json or pjson")
    body = text.encode("ascii")
    if callback is None:
        return body, "application/json"
    if (
        not isinstance(callback, str)
        or len(callback) > _CALLBACK_MAX
        or not _CALLBACK_RE.fullmatch(callback)
    ):
        raise InvalidCallback(
            f"callback must be a dotted JavaScript name of at most {_CALLBACK_MAX} characters"
        )
    # "/**/" keeps the first bytes from being read as anything but a comment
    # (the Rosetta Flash attack on JSONP endpoints).
    return b"/**/" + callback.encode("ascii") + b"(" + body + b");", "application/javascript"
