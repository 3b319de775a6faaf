"""ArcGIS REST documents: the ONE MapServer JSON builder (``MapServer?f=json``) for a
configured layer and for an uploaded ArcGIS cache, and the JSON/JSONP answer."""

from __future__ import annotations

import json
import re
from typing import Any

from s3maptiler.config import Layer
from s3maptiler.documents.errors import CannotDescribe, InvalidCallback, UnknownFormat
from s3maptiler.documents.views import corner_of, view_of
from s3maptiler.tiles.arcgis_cache import ArcgisCacheInfo
from s3maptiler.tiles.formats import esri_formats
from s3maptiler.tiles.grids import Bbox
from s3maptiler.tiles.srs import MERCATOR_EXTENT, crs
from s3maptiler.tiles.tilemath import arcgis_scale

__all__ = [
    "ARCGIS_CAPABILITIES",
    "arcgis_mapserver",
    "cache_mapserver",
    "json_document",
    "mapserver_json",
]

#: ArcGIS ``capabilities``. Never "Tilemap": the ArcGIS JS API would then fetch
#: ``/tilemap/...`` documents that we do not serve.
ARCGIS_CAPABILITIES = "Map,TilesOnly"
_CALLBACK_RE = re.compile(r"[A-Za-z_$][0-9A-Za-z_$]*(?:\.[A-Za-z_$][0-9A-Za-z_$]*)*")
_CALLBACK_MAX = 128


def mapserver_json(
    *,
    name: str,
    reference: dict[str, Any],
    tile_size: tuple[int, int],
    dpi: int,
    tile_format: str,
    quality: int,
    origin: tuple[float, float],
    lods: list[dict[str, Any]],
    extent: Bbox,
    geographic: bool,
    formats: str,
    scales: tuple[float, float],
) -> dict[str, Any]:
    """The MapServer JSON of a tiled service, as GDAL, QGIS and the ArcGIS JS API read it.

    `reference` is the spatialReference (``wkid``/``latestWkid``, or ``wkt``),
    `tile_size` (rows, cols) in pixels, `origin` the top-left corner and `extent`
    the initial and full extent in CRS units, `lods` the levels of detail, `scales`
    the (minScale, maxScale) of the levels served.
    """
    envelope = {
        "xmin": extent.left,
        "ymin": extent.bottom,
        "xmax": extent.right,
        "ymax": extent.top,
        "spatialReference": reference,
    }
    return {
        "currentVersion": 10.81,
        "serviceDescription": "",
        "mapName": name,
        "description": "",
        "copyrightText": "",
        "supportsDynamicLayers": False,
        "layers": [],
        "tables": [],
        "spatialReference": reference,
        "singleFusedMapCache": True,
        "tileInfo": {
            "rows": tile_size[0],
            "cols": tile_size[1],
            "dpi": dpi,
            "format": tile_format,
            "compressionQuality": quality,
            "origin": {"x": origin[0], "y": origin[1]},
            "spatialReference": reference,
            "lods": lods,
        },
        "initialExtent": dict(envelope),
        "fullExtent": dict(envelope),
        "minScale": scales[0],
        "maxScale": scales[1],
        "units": "esriDecimalDegrees" if geographic else "esriMeters",
        "supportedImageFormatTypes": formats,
        "capabilities": ARCGIS_CAPABILITIES,
        "exportTilesAllowed": False,
    }


def arcgis_mapserver(layer: Layer) -> dict[str, Any]:
    """The ArcGIS MapServer JSON (``MapServer?f=json``) of a tiled layer.

    ``tileInfo.lods`` list every level from 0 to ``max_zoom``: GDAL takes the base
    resolution from level 0 and the deepest level from the count, and Esri's own
    caches list the whole tiling scheme too; ``minScale``/``maxScale`` bound the
    levels actually served (``min_zoom``..``max_zoom``). Scales are
    ``resolution * 96 dpi * 39.37 in/m``. Raises :class:`CannotDescribe` for a grid
    whose CRS has no EPSG code or whose tiles are not counted from one top-left corner.
    """
    view = view_of(layer)
    grid, system = view.grid, view.crs
    if system.wkid is None or system.latest_wkid is None:
        raise CannotDescribe(f"layer {layer.name}: {grid.srs} has no ArcGIS wkid")
    levels = range(0, view.zooms.stop)
    origin = corner_of(grid, levels, "top-left")
    if origin is None:
        raise CannotDescribe(f"layer {layer.name}: grid {grid.name} has no single top-left origin")
    fmt = layer.tile_format
    if fmt.esri_name is None:
        # ArcGIS clients that honour tileInfo.format (ArcGIS Pro, the Runtime SDKs)
        # know PNG, PNG8/24/32, JPG, MIXED and LERC only: no document beats a wrong one.
        raise CannotDescribe(
            f"layer {layer.name}: ArcGIS tiled services have no {fmt.name} tile format"
            " (PNG, PNG8, PNG24, PNG32, JPG, MIXED, LERC); use its WMTS or TMS document"
        )
    return mapserver_json(
        name=view.title,
        reference={"wkid": system.wkid, "latestWkid": system.latest_wkid},
        tile_size=(grid.tile_size, grid.tile_size),
        dpi=96,
        tile_format=fmt.esri_name,
        quality=_quality(layer),
        origin=origin,
        lods=[
            {"level": z, "resolution": grid.resolution(z), "scale": arcgis_scale(grid, z)}
            for z in levels
        ],
        extent=view.native,
        geographic=system.kind == "geographic",
        formats=esri_formats(fmt, [layer.extension, *layer.formats]),
        scales=(arcgis_scale(grid, view.zooms.start), arcgis_scale(grid, view.zooms.stop - 1)),
    )


def _quality(layer: Layer) -> int:
    """tileInfo.compressionQuality: the JPEG quality of a jpeg or mixed layer, else 0."""
    return layer.jpeg_quality if layer.tile_format.name in ("jpeg", "mixed") else 0


def cache_mapserver(info: ArcgisCacheInfo, name: str, extent: Bbox | None = None) -> dict:
    """The MapServer JSON of an uploaded ArcGIS cache, from its ``conf.xml``.

    `extent` (CRS units, from ``conf.cdi``) becomes initialExtent and fullExtent;
    without it Web Mercator caches get the whole world and others the span of their
    first level.
    """
    if info.wkid is not None:
        reference: dict[str, Any] = {"wkid": info.wkid, "latestWkid": info.latest_wkid or info.wkid}
    else:
        reference = {"wkt": info.wkt or ""}
    if extent is None:
        if info.wkid is not None and crs(f"EPSG:{info.wkid}").kind == "mercator":
            extent = Bbox(-MERCATOR_EXTENT, -MERCATOR_EXTENT, MERCATOR_EXTENT, MERCATOR_EXTENT)
        else:
            first = info.lods[0].resolution
            x, y = info.origin
            extent = Bbox(x, y - first * info.tile_rows, x + first * info.tile_cols, y)
    return mapserver_json(
        name=name,
        reference=reference,
        tile_size=(info.tile_rows, info.tile_cols),
        dpi=info.dpi,
        tile_format=info.tile_format,
        quality=info.compression_quality,
        origin=info.origin,
        lods=[
            {"level": lod.level, "resolution": lod.resolution, "scale": lod.scale}
            for lod in info.lods
        ],
        extent=extent,
        geographic=info.geographic,
        formats="PNG32,PNG24,PNG,JPG",
        scales=(info.lods[0].scale, info.lods[-1].scale),
    )


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
