"""Tile routes: parse the address into a tile request, call the service, answer.

Tile addresses, all mapping to the S3 key the tile is stored under:
- `/<key>`                the key itself, e.g. `/tiles/3/4/2.png` (a plain tile server)
- `/<MISS_PREFIX><key>`   an S3 website redirect with `ReplaceKeyPrefixWith`: a known miss
- `/?tile=<key>`          the Node prototype's redirect form: a known miss
- the fixed routes `/1.0.0/<layer>/...` (TMS), `/wmts/1.0.0/<layer>/...` and `/wmts?...`
  (WMTS REST and KVP), `/arcgis/rest/services/<layer>/MapServer/tile/...` (ArcGIS),
  `/ogcapi/collections/<layer>/map/tiles/<set>/...` (OGC API - Tiles): the layer's own key.

A path that is a configured layer's key is that key, before any fixed route (so
`TILE_PREFIX=1.0.0/<name>/` serves `/1.0.0/<name>/{z}/{x}/{y}.png` as keys). A
redirected key shaped like a fixed route (a bucket holding the service's documents
misses on those) is that route's tile, stored under exactly the key that missed; a
WMTS KVP query has no key of its own and is stored under the layer's key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from urllib.parse import parse_qsl

from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import MapAdapter

from s3maptiler.documents.ogcapi import tile_matrix_set_of
from s3maptiler.documents.wmts import tile_matrix_set_id
from s3maptiler.http import documents
from s3maptiler.http.preview import index_page
from s3maptiler.http.replies import service, text, tile_reply
from s3maptiler.service.addresses import (
    BadTileRequest,
    TileNotFound,
    TileRequest,
    TileRequestError,
    check_key,
)
from s3maptiler.service.tilepath import TileService
from s3maptiler.tiles.formats import EXTENSIONS
from s3maptiler.tiles.grids import TileGrid

MAX_PATH_LENGTH = 1024

blueprint = Blueprint("tiles", __name__)


@blueprint.before_app_request
def keys_before_fixed_routes() -> Response | None:
    """A configured layer's key is that key, whichever route its path looks like."""
    if request.method not in ("GET", "HEAD") or request.endpoint == "tiles.tile":
        return None  # the catch-all reads keys itself
    tiles = service()
    path = request.path[1:]
    try:
        owned = tiles.owned(path)
    except TileRequestError:  # the layer's key, one it cannot serve: its 400 or 404
        return tile_reply(tiles, path)
    return None if owned is None else tile_reply(tiles, path, lambda: owned)


def _key_request_here(tiles: TileService, key: str) -> TileRequest:
    return _key_request(tiles, lambda: current_app.url_map.bind("localhost"), key, request.args)


@blueprint.get("/")
def root() -> Response:
    key = request.args.get("tile")
    tiles = service()
    if key is not None:
        key = key.lstrip("/")
        return tile_reply(tiles, key, lambda: _key_request_here(tiles, key), known_miss=True)
    return Response(index_page(tiles), mimetype="text/html")


def _fixed_route(endpoint: str, values: Mapping[str, str]) -> Response:
    route = TILE_ROUTES[endpoint]
    tiles = service()
    return tile_reply(tiles, None, lambda: route(tiles, values, request.args))


@blueprint.get("/1.0.0/<layer>/<z>/<x>/<y>")
def tms_tile(**values: str) -> Response:
    return _fixed_route("tiles.tms_tile", values)


@blueprint.get("/wmts/1.0.0/<layer>/<style>/<matrix_set>/<z>/<row>/<col>")
@blueprint.get("/wmts/1.0.0/<layer>/<style>/<matrix_set>/<path:dimensions>/<z>/<row>/<col>")
def wmts_rest_tile(**values: str) -> Response:
    return _fixed_route("tiles.wmts_rest_tile", values)


@blueprint.get("/wmts")
def wmts_kvp() -> Response:
    args = {k.upper(): v for k, v in request.args.items()}
    wmts = args.get("SERVICE", "WMTS").upper() == "WMTS"
    if wmts and args.get("REQUEST", "").lower() == "getcapabilities":
        return documents.wmts_capabilities()
    return _fixed_route("tiles.wmts_kvp", {})


@blueprint.get("/arcgis/rest/services/<layer>/MapServer/tile/<z>/<row>/<col>")
def arcgis_tile(**values: str) -> Response:
    return _fixed_route("tiles.arcgis_tile", values)


@blueprint.get("/ogcapi/collections/<layer>/map/tiles/<matrix_set>/<z>/<row>/<col>")
def ogcapi_tile(**values: str) -> Response:
    return _fixed_route("tiles.ogcapi_tile", values)


@blueprint.get("/<path:path>")
def tile(path: str) -> Response:
    if len(path) > MAX_PATH_LENGTH:
        return text(400, f"path longer than {MAX_PATH_LENGTH} characters")
    tiles = service()
    miss_prefix = tiles.settings.miss_prefix
    known_miss = path.startswith(miss_prefix)
    key = path[len(miss_prefix) :] if known_miss else path
    return tile_reply(tiles, key, lambda: _key_request_here(tiles, key), known_miss=known_miss)


# --- the fixed tile routes -------------------------------------------------------------
# Each turns a route's URL values and query into the tile it names, for a request at
# the route and for a redirected miss whose key has the route's shape alike.


def _tms_route(service: TileService, values: Mapping[str, str], args) -> TileRequest:
    path = f"{values['z']}/{values['x']}/{values['y']}"
    return service.request_via(values["layer"], "tms", path)


def _wmts_rest_route(service: TileService, values: Mapping[str, str], args) -> TileRequest:
    path = f"{values['z']}/{values['row']}/{values['col']}"
    dimensions = _rest_dimensions(service, values["layer"], values.get("dimensions"))
    return _wmts_request(
        service, values["layer"], values["matrix_set"], path, dimensions=dimensions
    )


def _rest_dimensions(service: TileService, layer_name: str, text: str | None) -> dict[str, str]:
    """The `{Time}/...` segments of a WMTS REST URL by name, one per dimension of the
    layer, in the order of its ResourceURL template."""
    layer = service.layer(layer_name)
    if text is None or layer is None:  # no layer: request_via answers 404
        return {}
    names = [d.name.upper() for d in layer.dimensions]
    given = text.split("/")
    if len(given) != len(names):
        raise BadTileRequest(
            f"{len(given)} dimension values in the path, layer {layer_name[:64]} has {len(names)}"
        )
    return dict(zip(names, given, strict=True))


def _wmts_kvp_route(service: TileService, values: Mapping[str, str], args) -> TileRequest:
    upper = {k.upper(): v for k, v in args.items()}
    if upper.get("SERVICE", "WMTS").upper() != "WMTS":
        raise BadTileRequest("SERVICE must be WMTS")
    if upper.get("REQUEST", "").lower() != "gettile":
        raise BadTileRequest("REQUEST must be GetCapabilities or GetTile")
    return _wmts_kvp_request(service, upper)


def _arcgis_route(service: TileService, values: Mapping[str, str], args) -> TileRequest:
    layer = service.layer(values["layer"])
    ext = layer.extension if layer else "png"
    path = f"{values['z']}/{values['row']}/{values['col']}.{ext}"
    return service.request_via(values["layer"], "wmts", path)


def _ogcapi_route(service: TileService, values: Mapping[str, str], args) -> TileRequest:
    """An OGC API tile: the layer's own format, or the one ``f`` names (png, jpeg), at
    the time ``datetime`` names (absent: the layer's dimension-less key)."""
    layer = service.layer(values["layer"])
    ext = layer.extension if layer else "png"
    wanted = args.get("f")
    if wanted is not None and layer is not None:
        media = EXTENSIONS.get(wanted.lower())
        ext = service.extension_for(layer.name, media) if media else None
        if ext is None:
            raise TileNotFound(f"layer {layer.name} does not serve f={wanted[:20]!r}")
    path = f"{values['z']}/{values['row']}/{values['col']}.{ext}"
    # OGC API's datetime is the layer's TIME dimension (ignored by a layer without one).
    when = args.get("datetime")
    return _wmts_request(
        service,
        values["layer"],
        values["matrix_set"],
        path,
        set_id=_ogcapi_set_id,
        dimensions={"TIME": when} if when else None,
    )


def _ogcapi_set_id(grid: TileGrid) -> str:
    return tile_matrix_set_of(grid).id


TILE_ROUTES: dict[str, Callable[..., TileRequest]] = {
    "tiles.tms_tile": _tms_route,
    "tiles.wmts_rest_tile": _wmts_rest_route,
    "tiles.wmts_kvp": _wmts_kvp_route,
    "tiles.arcgis_tile": _arcgis_route,
    "tiles.ogcapi_tile": _ogcapi_route,
}


def _key_request(
    service: TileService, routes: Callable[[], MapAdapter], key: str, args: Mapping[str, str]
) -> TileRequest:
    """The tile a key (from the miss prefix, `?tile=` or the path) names.

    A configured layer's key first. Else a key shaped like a fixed route: that
    route's tile, stored under exactly this key (a WMTS KVP query, which no key can
    hold, under the layer's own key). Else the layer key's own error.
    """
    owned = service.owned(key)
    if owned is not None:
        return owned
    check_key(key)
    path, mark, query = key.partition("?")
    try:
        endpoint, values = routes().match("/" + path, method="GET")
    except HTTPException:  # no route, or one that only redirects (a missing slash)
        endpoint, values = None, {}
    route = TILE_ROUTES.get(str(endpoint))
    if route is None or (mark and endpoint != "tiles.wmts_kvp"):
        return service.resolve(key)
    tile_request = route(service, values, dict(parse_qsl(query, True)) if mark else args)
    if endpoint == "tiles.wmts_kvp":
        return tile_request
    return dataclasses.replace(tile_request, key=key)


def _wmts_request(
    service: TileService,
    layer: str,
    matrix_set: str,
    path: str,
    *,
    set_id: Callable[[TileGrid], str] = tile_matrix_set_id,
    dimensions: Mapping[str, str] | None = None,
) -> TileRequest:
    named = service.layer(layer)
    if named is not None and matrix_set != set_id(named.tile_grid):
        raise TileNotFound(f"layer {layer} has no TileMatrixSet {matrix_set[:64]!r}")
    return service.request_via(layer, "wmts", path, dimensions)


def _wmts_kvp_request(service: TileService, args: dict[str, str]) -> TileRequest:
    missing = [
        name
        for name in ("LAYER", "TILEMATRIXSET", "TILEMATRIX", "TILEROW", "TILECOL", "FORMAT")
        if not args.get(name)
    ]
    if missing:
        raise BadTileRequest(f"missing parameter {missing[0]}")
    if service.layer(args["LAYER"]) is None:
        raise TileNotFound(f"no layer named {args['LAYER'][:64]!r}")
    # The layer's own extension first: the key a WMTS client's tiles are stored under.
    ext = service.extension_for(args["LAYER"], args["FORMAT"])
    if ext is None:
        raise TileNotFound(f"layer {args['LAYER']} does not serve {args['FORMAT'][:64]!r}")
    path = f"{args['TILEMATRIX']}/{args['TILEROW']}/{args['TILECOL']}.{ext}"
    # A dimension's value under its identifier (Time=...), the default when absent.
    return _wmts_request(service, args["LAYER"], args["TILEMATRIXSET"], path, dimensions=args)
