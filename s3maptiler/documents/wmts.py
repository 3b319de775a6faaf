"""The WMTS 1.0.0 capabilities: one TileMatrixSet per distinct grid, a Layer per layer."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from s3maptiler.config import Layer
from s3maptiler.documents.paths import (
    WMTS_CAPABILITIES_PATH,
    WMTS_KEY_TEMPLATES,
    base_of,
    check_mode,
    segment,
)
from s3maptiler.documents.standard_grids import geometry, standard_grid
from s3maptiler.documents.views import View, matrix_limits, usable
from s3maptiler.documents.xmltext import num, pair, sub, to_xml
from s3maptiler.tiles import srs
from s3maptiler.tiles.grids import Bbox, Tile, TileGrid
from s3maptiler.tiles.layouts import with_pixel_ratio
from s3maptiler.tiles.srs import CRS
from s3maptiler.tiles.tilemath import scale_denominator

logger = logging.getLogger(__name__)

_WMTS_NS = "http://www.opengis.net/wmts/1.0"


_OWS_NS = "http://www.opengis.net/ows/1.1"


_XLINK_NS = "http://www.w3.org/1999/xlink"


_GOOGLE_WKSS = "urn:ogc:def:wkss:OGC:1.0:GoogleMapsCompatible"


_STYLE = "default"


def tile_matrix_set_id(grid: TileGrid) -> str:
    """The WMTS TileMatrixSet identifier of ``grid``.

    ``GoogleMapsCompatible`` for the Web Mercator grid, ``WorldCRS84Quad`` for the
    2x1 EPSG:4326 grid (whatever either is called in the configuration), else its name.
    """
    standard = standard_grid(grid)
    return grid.name if standard is None else standard.wmts_id


def layer_matrix_set(layer: Layer) -> str:
    """The WMTS TileMatrixSet identifier of ``layer``'s grid."""
    return tile_matrix_set_id(layer.tile_grid)


def _wgs84_box(parent: ET.Element, box: Bbox) -> None:
    element = sub(parent, "ows:WGS84BoundingBox")
    sub(element, "ows:LowerCorner", pair(box.left, box.bottom))
    sub(element, "ows:UpperCorner", pair(box.right, box.top))


def _native_box(parent: ET.Element, crs: CRS, box: Bbox) -> None:
    element = sub(parent, "ows:BoundingBox", crs=crs.urn)
    if crs.lat_first:
        lower, upper = pair(box.bottom, box.left), pair(box.top, box.right)
    else:
        lower, upper = pair(box.left, box.bottom), pair(box.right, box.top)
    sub(element, "ows:LowerCorner", lower)
    sub(element, "ows:UpperCorner", upper)


def _kvp_operation(parent: ET.Element, name: str, href: str) -> None:
    operation = sub(parent, "ows:Operation", name=name)
    get = sub(sub(sub(operation, "ows:DCP"), "ows:HTTP"), "ows:Get", **{"xlink:href": href})
    constraint = sub(get, "ows:Constraint", name="GetEncoding")
    sub(sub(constraint, "ows:AllowedValues"), "ows:Value", "KVP")


def _resource_template(view: View, base: str, mode: str) -> str:
    ext = view.layer.extension
    # One segment per dimension, as in the keys: {prefix}{Time}/{TileMatrix}/...
    values = "".join(f"{{{d.identifier}}}/" for d in view.layer.dimensions)
    if mode == "service":
        return (
            f"{base}/wmts/1.0.0/{segment(view.name)}/{{Style}}/{{TileMatrixSet}}/"
            f"{values}{{TileMatrix}}/{{TileRow}}/{{TileCol}}.{ext}"
        )
    path = with_pixel_ratio(
        f"{WMTS_KEY_TEMPLATES[view.layer.layout]}.{ext}", view.layer.pixel_ratio
    )
    return f"{base}/{view.layer.prefix}{values}{path}"


def _dimensions(parent: ET.Element, layer: Layer) -> None:
    """A Dimension per dimension of the layer, children in the schema's order:
    Identifier, Default, Value (one per value; a long interval as start/end/period)."""
    for dimension in layer.dimensions:
        element = sub(parent, "Dimension")
        sub(element, "ows:Identifier", dimension.identifier)
        sub(element, "Default", dimension.default)
        for value in dimension.listed():
            sub(element, "Value", value)


def _limits(parent: ET.Element, view: View, set_levels: int) -> None:
    """TileMatrixSetLimits when the layer covers less than the whole set: fewer zoom
    levels (OpenLayers and QGIS only offer the listed ones) or a smaller extent."""
    whole = view.zooms == range(set_levels) and view.native == view.grid.bbox
    if whole:
        return
    limits = sub(parent, "TileMatrixSetLimits")
    for z, cols, rows in matrix_limits(view):
        entry = sub(limits, "TileMatrixLimits")
        sub(entry, "TileMatrix", str(z))
        sub(entry, "MinTileRow", str(rows[0]))
        sub(entry, "MaxTileRow", str(rows[-1]))
        sub(entry, "MinTileCol", str(cols[0]))
        sub(entry, "MaxTileCol", str(cols[-1]))


def _tile_matrix_set(parent: ET.Element, set_id: str, grid: TileGrid, levels: int) -> None:
    crs = srs.crs(grid.srs)
    element = sub(parent, "TileMatrixSet")
    sub(element, "ows:Identifier", set_id)
    sub(element, "ows:SupportedCRS", crs.urn)
    if tile_matrix_set_id(grid) == "GoogleMapsCompatible":
        sub(element, "WellKnownScaleSet", _GOOGLE_WKSS)
    for z in range(levels):
        box = grid.tile_bbox(Tile(0, 0, z))
        width, height = grid.matrix_size(z)
        matrix = sub(element, "TileMatrix")
        sub(matrix, "ows:Identifier", str(z))
        sub(matrix, "ScaleDenominator", num(scale_denominator(grid, z)))
        corner = pair(box.top, box.left) if crs.lat_first else pair(box.left, box.top)
        sub(matrix, "TopLeftCorner", corner)
        sub(matrix, "TileWidth", str(grid.tile_size))
        sub(matrix, "TileHeight", str(grid.tile_size))
        sub(matrix, "MatrixWidth", str(width))
        sub(matrix, "MatrixHeight", str(height))


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
    check_mode(mode)
    base = base_of(base_url)
    views: list[View] = []
    sets: dict[str, tuple[TileGrid, int]] = {}  # id -> (grid, number of levels)
    for view in usable(layers, "wmts", mode):
        set_id = tile_matrix_set_id(view.grid)
        known = sets.get(set_id)
        if known is not None and geometry(known[0]) != geometry(view.grid):
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
    identification = sub(root, "ows:ServiceIdentification")
    sub(identification, "ows:Title", title)
    sub(identification, "ows:ServiceType", "OGC WMTS")
    sub(identification, "ows:ServiceTypeVersion", "1.0.0")
    if mode == "service":
        operations = sub(root, "ows:OperationsMetadata")
        _kvp_operation(operations, "GetCapabilities", f"{base}/wmts?")
        _kvp_operation(operations, "GetTile", f"{base}/wmts?")

    contents = sub(root, "Contents")
    for view in views:
        fmt = view.layer.tile_format
        set_id = tile_matrix_set_id(view.grid)
        # Child order is the schema's: Title, WGS84BoundingBox, Identifier, BoundingBox,
        # Style, Format, Dimension, TileMatrixSetLink, ResourceURL.
        element = sub(contents, "Layer")
        sub(element, "ows:Title", view.title)
        if view.lonlat is not None:
            _wgs84_box(element, view.lonlat)
        sub(element, "ows:Identifier", view.name)
        # The extent in the set's own CRS, exactly: GDAL prefers it to a re-projected
        # WGS84BoundingBox (whose 85.05112877980659 misses the top edge by a hair).
        _native_box(element, view.crs, view.native)
        style = sub(element, "Style", isDefault="true")
        sub(style, "ows:Identifier", _STYLE)
        sub(element, "Format", fmt.media_type)
        _dimensions(element, view.layer)
        link = sub(element, "TileMatrixSetLink")
        sub(link, "TileMatrixSet", set_id)
        _limits(link, view, sets[set_id][1])
        sub(
            element,
            "ResourceURL",
            format=fmt.media_type,
            resourceType="tile",
            template=_resource_template(view, base, mode),
        )
    for set_id, (grid, levels) in sets.items():
        _tile_matrix_set(contents, set_id, grid, levels)
    sub(root, "ServiceMetadataURL", **{"xlink:href": f"{base}/{WMTS_CAPABILITIES_PATH}"})
    return to_xml(root)
