"""Document routes: the TMS TileMapService and TileMaps, the WMTS capabilities and the
ArcGIS MapServer JSON of every layer (and of its high-DPI tiles, ``roads@2x``), with
tile URLs on this service."""

from __future__ import annotations

from flask import Blueprint, Response, request

from s3maptiler.documents import arcgis, errors, paths, tms, wmts
from s3maptiler.http.replies import document, service, text

blueprint = Blueprint("documents", __name__)


def _base_url() -> str:
    return service().settings.service_url or request.host_url.rstrip("/")


@blueprint.get("/1.0.0/")
def tms_service() -> Response:
    body = tms.tile_map_service(service().settings.served_layers, _base_url())
    return document(body, paths.TMS_CONTENT_TYPE)


@blueprint.get("/1.0.0/<layer>")
@blueprint.get("/1.0.0/<layer>/")
def tms_tile_map(layer: str) -> Response:
    found = service().addresses.layer(layer)
    if found is None:
        return text(404, f"no layer named {layer[:64]!r}")
    try:
        body = tms.tile_map(found, _base_url())
    except errors.DocumentError as exc:
        return text(404, str(exc))
    return document(body, paths.TMS_CONTENT_TYPE)


@blueprint.get("/" + paths.WMTS_CAPABILITIES_PATH)
def wmts_capabilities() -> Response:
    body = wmts.wmts_capabilities(service().settings.served_layers, _base_url())
    return document(body, paths.WMTS_CONTENT_TYPE)


@blueprint.get("/arcgis/rest/services/<layer>/MapServer")
def arcgis_mapserver(layer: str) -> Response:
    found = service().addresses.layer(layer)
    if found is None:
        return text(404, f"no layer named {layer[:64]!r}")
    fmt = request.args.get("f", "json").lower()
    if request.args.get("pretty", "").lower() == "true":
        fmt = "pjson"  # GDAL adds &pretty=true
    if fmt not in ("json", "pjson"):
        return text(400, "f must be json or pjson")
    try:
        doc = arcgis.arcgis_mapserver(found)
        body, content_type = arcgis.json_document(doc, fmt, request.args.get("callback"))
    except errors.DocumentError as exc:
        return text(400, str(exc))
    response = document(body, content_type)
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response
