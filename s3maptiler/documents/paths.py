"""Where each document lives under the base URL, in both modes (``"service"``: tiles
from the service's routes; ``"keys"``: from their S3 keys), with its Content-Type, so
the hrefs inside documents and the routes or keys that serve them cannot drift apart."""

from __future__ import annotations

from urllib.parse import quote

from s3maptiler.config import Layer
from s3maptiler.documents.errors import UnknownMode

#: ``"service"``: tiles from the service's routes; ``"keys"``: tiles from their S3 keys.
MODES = ("service", "keys")


#: Content-Type of the TMS documents (the TMS spec's examples use text/xml).
TMS_CONTENT_TYPE = "text/xml; charset=utf-8"


#: Content-Type of the WMTS capabilities.
WMTS_CONTENT_TYPE = "application/xml; charset=utf-8"


#: Where the WMTS capabilities live under the base URL, in both modes (REST binding).
WMTS_CAPABILITIES_PATH = "wmts/1.0.0/WMTSCapabilities.xml"


# Layouts whose key path a WMTS ResourceURL template can spell, with their templates.
WMTS_KEY_TEMPLATES = {
    "xyz": "{TileMatrix}/{TileCol}/{TileRow}",
    "wmts": "{TileMatrix}/{TileRow}/{TileCol}",
}


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise UnknownMode(f"mode {mode!r} is not one of {', '.join(MODES)}")


def base_of(base_url: str) -> str:
    return base_url.rstrip("/")


def segment(name: str) -> str:
    """A layer name as one URL path segment (``@`` of ``roads@2x`` kept: a path may
    hold it, and an S3 key written from it matches the URL a client asks for)."""
    return quote(name, safe="@")


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
