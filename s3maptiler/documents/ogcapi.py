"""OGC API - Tiles (OGC 20-057) for every layer: the landing page, conformance, the
collections, each collection's map tilesets and tileset metadata, and the
TileMatrixSets in the JSON encoding of OGC TileMatrixSet 2.0 (17-083r4). The OpenAPI
definition is :mod:`~s3maptiler.documents.openapi`.

Every document lives at the same path on the service and in a bucket (``publish``),
below ``ogcapi``: S3 keys may be prefixes of other keys, so each path is both a route
and a key, and a bucket answers them as the service does (it ignores ``?f=json``).

- ``ogcapi``: landing page; ``ogcapi/conformance``; ``ogcapi/api``: the OpenAPI definition
- ``ogcapi/collections``, ``ogcapi/collections/{id}``: the layers
- ``ogcapi/collections/{id}/map/tiles``: a layer's tilesets (one: its grid)
- ``ogcapi/collections/{id}/map/tiles/{tms}``: that tileset (limits, tile template)
- ``ogcapi/collections/{id}/map/tiles/{tms}/{tileMatrix}/{tileRow}/{tileCol}``: a tile
- ``ogcapi/tileMatrixSets``, ``ogcapi/tileMatrixSets/{tms}``: the tiling schemes

The tile template (:func:`tile_template`) depends on the mode: ``"service"``, the
service's tile route; ``"keys"``, the layer's own keys where a template can spell
them (layouts ``xyz`` and ``wmts``), else the tile route's path in the bucket, whose
first request misses, is redirected to the service (``bucket setup`` adds a rule for
``ogcapi/``), and is stored under exactly that key, beside the layer's own.

A TileMatrixSet is ``WebMercatorQuad`` or ``WorldCRS84Quad`` when a layer's grid is that
set (same CRS, extent, tile size and resolutions), else it is named after the grid.
Its document also carries the TileMatrixSet 1.0 names (``identifier``,
``supportedCRS``, ``topLeftCorner``), the only ones GDAL before 3.7 reads.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from s3maptiler.config import Layer
from s3maptiler.documents.errors import CannotDescribe
from s3maptiler.documents.paths import WMTS_KEY_TEMPLATES, base_of, check_mode, segment
from s3maptiler.documents.standard_grids import geometry, standard_grid
from s3maptiler.documents.views import View, matrix_limits, view_of
from s3maptiler.tiles import srs
from s3maptiler.tiles.dimensions import Dimension
from s3maptiler.tiles.grids import Tile, TileGrid
from s3maptiler.tiles.tilemath import scale_denominator

__all__ = [
    "JSON_TYPE",
    "OPENAPI_TYPE",
    "PREFIX",
    "ROOT",
    "TileMatrixSetInfo",
    "collection",
    "collections",
    "conformance",
    "dumps",
    "landing_page",
    "published",
    "tile_matrix_set",
    "tile_matrix_set_of",
    "tile_matrix_sets",
    "tile_template",
    "tileset",
    "tilesets",
]

log = logging.getLogger(__name__)

#: Where the OGC API lives under the base URL, on the service and in a bucket.
ROOT = "ogcapi"
#: The key prefix of every OGC API document but the landing page, and of the tiles
#: filled through the redirect: ``bucket setup`` makes it public and routes its misses.
PREFIX = ROOT + "/"
JSON_TYPE = "application/json"
OPENAPI_TYPE = "application/vnd.oai.openapi+json;version=3.0"

_REL = "http://www.opengis.net/def/rel/ogc/1.0/"
_TMS_URI = "http://www.opengis.net/def/tilematrixset/OGC/1.0/"
_WKSS = "http://www.opengis.net/def/wkss/OGC/1.0/"
_COMMON = "http://www.opengis.net/spec/ogcapi-common-1/1.0/conf/"
_TILES = "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/"
_TMS_CONF = "http://www.opengis.net/spec/tms/2.0/conf/"
# Tile encodings with a conformance class of their own in OGC API - Tiles.
_ENCODING_CLASSES = {"image/png": "png", "image/jpeg": "jpeg"}
# TMS 2.0 orderedAxes by (geographic, latitude first).
_AXES = {(True, True): ["Lat", "Lon"], (True, False): ["Lon", "Lat"]}
_AXES.update({(False, True): ["N", "E"], (False, False): ["X", "Y"]})


@dataclass(frozen=True)
class TileMatrixSetInfo:
    """A layer grid as an OGC TileMatrixSet: its id, its registered URI (None for a
    set of our own), the grid, and the CRS written as TMS 2.0 wants it."""

    id: str
    uri: str | None
    grid: TileGrid
    crs: srs.CRS
    well_known_scale_set: str | None = None


def layer_matrix_set(layer: Layer) -> str:
    """The id of the OGC TileMatrixSet of ``layer``'s grid."""
    return tile_matrix_set_of(layer.tile_grid).id


def tile_matrix_set_of(grid: TileGrid) -> TileMatrixSetInfo:
    """``WebMercatorQuad`` or ``WorldCRS84Quad`` for the grids that are those sets (the
    latter in CRS84, longitude first, as the standard defines it), else a set named
    after the grid, in the grid's own CRS.

    >>> from s3maptiler.tiles.grids import WEB_MERCATOR
    >>> tile_matrix_set_of(WEB_MERCATOR).id
    'WebMercatorQuad'
    """
    standard = standard_grid(grid)
    if standard is None:
        return TileMatrixSetInfo(grid.name, None, grid, srs.crs(grid.srs))
    set_id, crs = standard.ogc_id, srs.crs(standard.ogc_crs or grid.srs)
    return TileMatrixSetInfo(set_id, _TMS_URI + set_id, grid, crs, _WKSS + standard.scale_set)


def published(layers: Sequence[Layer]) -> list[tuple[View, TileMatrixSetInfo]]:
    """The layers the OGC API describes, with their TileMatrixSets. A layer whose
    zooms or extent lie outside its grid is left out, and so is one whose grid's name
    is taken by another set (e.g. a custom grid called ``WebMercatorQuad``); logged."""
    described: list[tuple[View, TileMatrixSetInfo]] = []
    sets: dict[str, TileGrid] = {}
    for layer in layers:
        try:
            view = view_of(layer)
        except CannotDescribe as exc:
            log.info("OGC API leaves out layer %s: %s", layer.name, exc)
            continue
        info = tile_matrix_set_of(view.grid)
        known = sets.setdefault(info.id, info.grid)
        if geometry(known) != geometry(info.grid):
            log.info("OGC API leaves out layer %s: another grid is also %s", layer.name, info.id)
            continue
        described.append((view, info))
    return described


def _sets(layers: Sequence[Layer]) -> dict[str, TileMatrixSetInfo]:
    return {info.id: info for _, info in published(layers)}


def dumps(doc: dict[str, Any]) -> str:
    """A document as JSON text: indented, in the order it was built, no NaN."""
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def _link(rel: str, href: str, title: str, kind: str = JSON_TYPE) -> dict[str, Any]:
    return {"rel": rel, "type": kind, "title": title, "href": href}


# Where each document lives below the base URL: its route on the service and its key
# in a published bucket alike, so links and keys cannot drift apart.


def collection_path(layer: Layer) -> str:
    return f"{ROOT}/collections/{segment(layer.name)}"


def tileset_path(layer: Layer, info: TileMatrixSetInfo) -> str:
    return f"{collection_path(layer)}/map/tiles/{segment(info.id)}"


def tms_path(set_id: str) -> str:
    return f"{ROOT}/tileMatrixSets/{segment(set_id)}"


def _root(base_url: str) -> str:
    return f"{base_of(base_url)}/{ROOT}"


def _collection_url(base_url: str, layer: Layer) -> str:
    return f"{base_of(base_url)}/{collection_path(layer)}"


def _tileset_url(base_url: str, layer: Layer, info: TileMatrixSetInfo) -> str:
    return f"{base_of(base_url)}/{tileset_path(layer, info)}"


def _tms_url(base_url: str, info: TileMatrixSetInfo) -> str:
    return f"{base_of(base_url)}/{tms_path(info.id)}"


# --------------------------------------------------------------------------- the API


def landing_page(base_url: str, title: str = "s3maptiler") -> dict[str, Any]:
    """The landing page: links to itself, the API definition, the conformance classes,
    the collections (``rel="data"``, which GDAL's ``OGCAPI:`` driver follows) and the
    tiling schemes."""
    root = _root(base_url)
    return {
        "title": title,
        "description": "Map tiles of every layer, cut from WMS metatiles and cached in S3",
        "links": [
            _link("self", root, "This document"),
            _link("service-desc", f"{root}/api", "The API definition", OPENAPI_TYPE),
            _link(_REL + "conformance", f"{root}/conformance", "Conformance classes"),
            _link("data", f"{root}/collections", "The layers"),
            _link(_REL + "tiling-schemes", f"{root}/tileMatrixSets", "Tile matrix sets"),
        ],
    }


def conformance(layers: Sequence[Layer]) -> dict[str, Any]:
    """The conformance classes this implementation meets: OGC API - Common (core,
    landing page, JSON, OpenAPI 3.0, collections), OGC API - Tiles (core, tileset,
    tilesets list, geodata tilesets, OpenAPI 3.0, and PNG and JPEG for the layers
    that serve them) and TileMatrixSet 2.0 (the set, its limits and tileset metadata,
    in JSON). Not dataset tilesets or collections selection: the layers are not
    composed into one map."""
    classes = [_COMMON + name for name in ("core", "landing-page", "json", "oas30")]
    classes.append("http://www.opengis.net/spec/ogcapi-common-2/1.0/conf/collections")
    classes += [_TILES + name for name in ("core", "tileset", "tilesets-list")]
    classes += [_TILES + "geodata-tilesets", _TILES + "oas30"]
    served = {view.layer.tile_format.media_type for view, _ in published(layers)}
    classes += [_TILES + name for kind, name in _ENCODING_CLASSES.items() if kind in served]
    if any(time_of(view.layer) for view, _ in published(layers)):
        classes.append(_TILES + "datetime")
    for name in ("tilematrixset", "tilematrixsetlimits", "tilesetmetadata"):
        classes += [_TMS_CONF + name, _TMS_CONF + "json-" + name]
    return {"conformsTo": classes}


def time_of(layer: Layer) -> Dimension | None:
    """The layer's time dimension: what a tile request's ``datetime`` names."""
    return next((d for d in layer.dimensions if d.name == "time"), None)


def _temporal(time: Dimension) -> dict[str, Any]:
    """The interval of a time dimension's values, in RFC 3339 (dates at midnight UTC)."""
    stamp = [v if "T" in v else f"{v}T00:00:00Z" for v in time.bounds()]
    return {"interval": [stamp], "trs": "http://www.opengis.net/def/uom/ISO-8601/0/Gregorian"}


def collection(layer: Layer, base_url: str) -> dict[str, Any]:
    """One layer as a collection: its extent in CRS84 (omitted for a grid whose CRS has
    no lon/lat transform here) and the link to its map tilesets."""
    view = view_of(layer)
    info = tile_matrix_set_of(view.grid)
    url = _collection_url(base_url, layer)
    doc: dict[str, Any] = {"id": layer.name, "title": view.title, "description": ""}
    if view.lonlat is not None:
        box = view.lonlat
        doc["extent"] = {
            "spatial": {
                "bbox": [[box.left, box.bottom, box.right, box.top]],
                "crs": srs.crs("CRS:84").uri,
            }
        }
    time = time_of(layer)
    if time is not None:
        doc.setdefault("extent", {})["temporal"] = _temporal(time)
    doc["dataType"] = "map"
    doc["crs"] = [info.crs.uri]
    doc["links"] = [
        _link("self", url, f"Layer {layer.name}"),
        _link(_REL + "tilesets-map", f"{url}/map/tiles", f"Map tilesets of {layer.name}"),
    ]
    return doc


def collections(layers: Sequence[Layer], base_url: str) -> dict[str, Any]:
    """Every layer the OGC API describes, as collections."""
    return {
        "links": [_link("self", f"{_root(base_url)}/collections", "The layers")],
        "collections": [collection(view.layer, base_url) for view, _ in published(layers)],
    }


def _tileset_summary(view: View, info: TileMatrixSetInfo, base_url: str) -> dict[str, Any]:
    doc: dict[str, Any] = {"title": f"{view.title}, {info.id}"}
    if info.uri is not None:
        doc["tileMatrixSetURI"] = info.uri
    doc["dataType"] = "map"
    doc["crs"] = info.crs.uri
    doc["links"] = [
        _link("self", _tileset_url(base_url, view.layer, info), f"{info.id} tileset"),
        _link(_REL + "tiling-scheme", _tms_url(base_url, info), f"{info.id} definition"),
    ]
    return doc


def tilesets(layer: Layer, base_url: str) -> dict[str, Any]:
    """A layer's map tilesets: one, in its grid's TileMatrixSet."""
    view = view_of(layer)
    url = f"{_collection_url(base_url, layer)}/map/tiles"
    return {
        "links": [_link("self", url, f"Map tilesets of {layer.name}")],
        "tilesets": [_tileset_summary(view, tile_matrix_set_of(view.grid), base_url)],
    }


def tile_template(layer: Layer, base_url: str, mode: str = "service") -> str:
    """The templated URL of a layer's tiles, with ``{tileMatrix}``, ``{tileRow}`` and
    ``{tileCol}``: the tile route on the service; in a bucket the layer's own keys
    (``xyz``, ``wmts``), else the tile route's path, filled through the redirect."""
    check_mode(mode)
    own = WMTS_KEY_TEMPLATES.get(layer.layout)
    if mode == "keys" and own is not None:
        for wmts_name in ("TileMatrix", "TileRow", "TileCol"):
            own = own.replace(wmts_name, wmts_name[0].lower() + wmts_name[1:])
        return f"{base_of(base_url)}/{layer.prefix}{own}.{layer.extension}"
    info = tile_matrix_set_of(layer.tile_grid)
    return f"{_tileset_url(base_url, layer, info)}/{{tileMatrix}}/{{tileRow}}/{{tileCol}}"


def tileset(layer: Layer, base_url: str, mode: str = "service") -> dict[str, Any]:
    """A layer's tileset: its TileMatrixSet, the limits of its zoom levels and extent
    (GDAL opens only the levels listed), and the tile template."""
    view = view_of(layer)
    info = tile_matrix_set_of(view.grid)
    doc = _tileset_summary(view, info, base_url)
    links = doc.pop("links")
    doc["tileMatrixSetLimits"] = [
        {
            "tileMatrix": str(z),
            "minTileRow": rows[0],
            "maxTileRow": rows[-1],
            "minTileCol": cols[0],
            "maxTileCol": cols[-1],
        }
        for z, cols, rows in matrix_limits(view)
    ]
    media = layer.tile_format.media_type
    template = _link("item", tile_template(layer, base_url, mode), f"{media} tiles", media)
    collection_link = _collection_url(base_url, layer)
    doc["links"] = [
        *links,
        {**template, "templated": True},
        _link(_REL + "geodata", collection_link, f"Layer {layer.name}"),
    ]
    return doc


def tile_matrix_sets(layers: Sequence[Layer], base_url: str) -> dict[str, Any]:
    """The TileMatrixSets of the layers, each with a link to its definition."""
    entries = []
    for info in _sets(layers).values():
        entry: dict[str, Any] = {"id": info.id, "title": info.id}
        if info.uri is not None:
            entry["uri"] = info.uri
        entry["links"] = [_link("self", _tms_url(base_url, info), f"{info.id} definition")]
        entries.append(entry)
    url = f"{_root(base_url)}/tileMatrixSets"
    return {"links": [_link("self", url, "Tile matrix sets")], "tileMatrixSets": entries}


def tile_matrix_set(layers: Sequence[Layer], set_id: str) -> dict[str, Any] | None:
    """The TileMatrixSet ``set_id`` of the layers in the TMS 2.0 JSON encoding, every
    level of its grid, or None when no layer uses it. Corners are in the CRS's own
    axis order (latitude first for EPSG:4326 grids, longitude first in CRS84)."""
    info = _sets(layers).get(set_id)
    if info is None:
        return None
    grid, crs = info.grid, info.crs
    doc: dict[str, Any] = {"id": info.id, "title": info.id}
    if info.uri is not None:
        doc["uri"] = info.uri
    doc["crs"] = crs.uri
    doc["orderedAxes"] = _AXES[(crs.kind == "geographic", crs.lat_first)]
    if info.well_known_scale_set is not None:
        doc["wellKnownScaleSet"] = info.well_known_scale_set
    box = grid.bbox
    lower, upper = [box.left, box.bottom], [box.right, box.top]
    if crs.lat_first:
        lower, upper = lower[::-1], upper[::-1]
    # Also what GDAL before 3.7 looks for to tell a TileMatrixSet document from a name.
    doc["boundingBox"] = {"lowerLeft": lower, "upperRight": upper, "crs": crs.uri}
    matrices = []
    for z in range(grid.max_zoom + 1):
        box = grid.tile_bbox(Tile(0, 0, z))
        corner = [box.top, box.left] if crs.lat_first else [box.left, box.top]
        cols, rows = grid.matrix_size(z)
        matrices.append(
            {
                "id": str(z),
                "scaleDenominator": scale_denominator(grid, z),
                "cellSize": grid.resolution(z),
                "cornerOfOrigin": "topLeft",
                "pointOfOrigin": corner,
                "tileWidth": grid.tile_size,
                "tileHeight": grid.tile_size,
                "matrixWidth": cols,
                "matrixHeight": rows,
                # TileMatrixSet 1.0 names, for GDAL before 3.7.
                "identifier": str(z),
                "topLeftCorner": corner,
            }
        )
    doc["tileMatrices"] = matrices
    doc["identifier"] = info.id
    doc["supportedCRS"] = crs.uri
    return doc
