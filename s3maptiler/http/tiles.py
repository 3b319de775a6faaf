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
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl

from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import HTTPException

from s3maptiler.config import Layer
from s3maptiler.documents import ogcapi, wmts
from s3maptiler.http import documents
from s3maptiler.http.preview import index_page
from s3maptiler.http.replies import refusal, service, text, tile_reply
from s3maptiler.service.addresses import (
    Addresses,
    BadTileRequest,
    TileNotFound,
    TileRequest,
    TileRequestError,
    check_key,
)
from s3maptiler.service.tilepath import TileService
from s3maptiler.tiles.formats import EXTENSIONS

MAX_PATH_LENGTH = 1024

blueprint = Blueprint("tiles", __name__)

Values = Mapping[str, str]


@dataclass(frozen=True)
class TileRoute:
    """A fixed tile route: its URL rules, and the tile its URL values and query name
    (for a request at the route and for a redirected miss whose key has its shape)."""

    endpoint: str  # the view's name in this blueprint
    rules: tuple[str, ...]
    tile: Callable[[Addresses, Values, Values], TileRequest]
    # A KVP route (WMTS): answers GetCapabilities too, and has no key of its own, so
    # its tiles are stored under the layer's key.
    kvp: bool = False


@blueprint.before_app_request
def keys_before_fixed_routes() -> Response | None:
    """A configured layer's key is that key, whichever route its path looks like."""
    if request.method not in ("GET", "HEAD") or request.endpoint == "tiles.tile":
        return None  # the catch-all reads keys itself
    tiles = service()
    path = request.path[1:]
    started = time.perf_counter()
    try:
        owned = tiles.addresses.owned(path)
    except TileRequestError as exc:  # the layer's key, one it cannot serve: its 400 or 404
        return refusal(exc, path, started)
    return None if owned is None else tile_reply(tiles, owned, path, started)


@blueprint.get("/")
def root() -> Response:
    key = request.args.get("tile")
    tiles = service()
    if key is not None:
        return _key_reply(tiles, key.lstrip("/"), known_miss=True)
    return Response(index_page(tiles), mimetype="text/html")


@blueprint.get("/<path:path>")
def tile(path: str) -> Response:
    if len(path) > MAX_PATH_LENGTH:
        return text(400, f"path longer than {MAX_PATH_LENGTH} characters")
    tiles = service()
    miss_prefix = tiles.settings.miss_prefix
    known_miss = path.startswith(miss_prefix)
    key = path[len(miss_prefix) :] if known_miss else path
    return _key_reply(tiles, key, known_miss=known_miss)


def _key_reply(tiles: TileService, key: str, known_miss: bool) -> Response:
    """The answer for a key (the path, `?tile=` or a redirected miss)."""
    started = time.perf_counter()
    try:
        tile_request = _key_request(tiles.addresses, key, request.args)
    except _AsksCapabilities:
        return documents.wmts_capabilities()
    except TileRequestError as exc:
        return refusal(exc, key, started)
    return tile_reply(tiles, tile_request, key, started, known_miss=known_miss)


class _AsksCapabilities(Exception):
    """A redirected WMTS KVP key that asks for GetCapabilities, not a tile."""


def _route_reply(route: TileRoute, values: Values) -> Response:
    """The answer at a fixed route."""
    if route.kvp and _asks_capabilities(request.args):
        return documents.wmts_capabilities()
    tiles = service()
    started = time.perf_counter()
    try:
        tile_request = route.tile(tiles.addresses, values, request.args)
    except TileRequestError as exc:
        return refusal(exc, request.path, started)
    return tile_reply(tiles, tile_request, None, started)


def _key_request(addresses: Addresses, key: str, args: Values) -> TileRequest:
    """The tile a key (from the miss prefix, `?tile=` or the path) names.

    A configured layer's key first. Else a key shaped like a fixed route: that
    route's tile, stored under exactly this key (a WMTS KVP query, which no key can
    hold, under the layer's own key). Else the layer key's own error.
    """
    owned = addresses.owned(key)
    if owned is not None:
        return owned
    check_key(key)
    path, mark, query = key.partition("?")
    try:
        endpoint, values = current_app.url_map.bind("localhost").match("/" + path, method="GET")
    except HTTPException:  # no route, or one that only redirects (a missing slash)
        endpoint, values = None, {}
    route = _BY_ENDPOINT.get(str(endpoint))
    if route is None or (mark and not route.kvp):
        return addresses.resolve(key)
    query_args = dict(parse_qsl(query, True)) if mark else args
    if route.kvp and _asks_capabilities(query_args):
        raise _AsksCapabilities  # answered as at /wmts, through both redirect forms too
    tile_request = route.tile(addresses, values, query_args)
    return tile_request if route.kvp else dataclasses.replace(tile_request, key=key)


# --- the fixed tile routes -------------------------------------------------------------
# Each turns a route's URL values and query into the tile it names.


def _tms_route(addresses: Addresses, values: Values, args: Values) -> TileRequest:
    path = f"{values['z']}/{values['x']}/{values['y']}"
    return addresses.request_via(values["layer"], "tms", path)


def _wmts_rest_route(addresses: Addresses, values: Values, args: Values) -> TileRequest:
    path = f"{values['z']}/{values['row']}/{values['col']}"
    dimensions = _rest_dimensions(addresses, values["layer"], values.get("dimensions"))
    return _wmts_request(
        addresses, values["layer"], values["matrix_set"], path, dimensions=dimensions
    )


def _rest_dimensions(addresses: Addresses, layer_name: str, text: str | None) -> dict[str, str]:
    """The `{Time}/...` segments of a WMTS REST URL by name, one per dimension of the
    layer, in the order of its ResourceURL template."""
    layer = addresses.layer(layer_name)
    if text is None or layer is None:  # no layer: request_via answers 404
        return {}
    names = [d.name.upper() for d in layer.dimensions]
    given = text.split("/")
    if len(given) != len(names):
        raise BadTileRequest(
            f"{len(given)} dimension values in the path, layer {layer_name[:64]} has {len(names)}"
        )
    return dict(zip(names, given, strict=True))


def _asks_capabilities(args: Values) -> bool:
    upper = {k.upper(): v for k, v in args.items()}
    wmts_service = upper.get("SERVICE", "WMTS").upper() == "WMTS"
    return wmts_service and upper.get("REQUEST", "").lower() == "getcapabilities"


def _wmts_kvp_route(addresses: Addresses, values: Values, args: Values) -> TileRequest:
    upper = {k.upper(): v for k, v in args.items()}
    if upper.get("SERVICE", "WMTS").upper() != "WMTS":
        raise BadTileRequest("SERVICE must be WMTS")
    if upper.get("REQUEST", "").lower() != "gettile":
        raise BadTileRequest("REQUEST must be GetCapabilities or GetTile")
    return _wmts_kvp_request(addresses, upper)


def _arcgis_route(addresses: Addresses, values: Values, args: Values) -> TileRequest:
    layer = addresses.layer(values["layer"])
    ext = layer.extension if layer else "png"
    path = f"{values['z']}/{values['row']}/{values['col']}.{ext}"
    return addresses.request_via(values["layer"], "wmts", path)


def _ogcapi_route(addresses: Addresses, values: Values, args: Values) -> TileRequest:
    """An OGC API tile: the layer's own format, or the one ``f`` names (png, jpeg), at
    the time ``datetime`` names (absent: the layer's dimension-less key)."""
    layer = addresses.layer(values["layer"])
    ext = layer.extension if layer else "png"
    wanted = args.get("f")
    if wanted is not None and layer is not None:
        media = EXTENSIONS.get(wanted.lower())
        ext = addresses.extension_for(layer.name, media) if media else None
        if ext is None:
            raise TileNotFound(f"layer {layer.name} does not serve f={wanted[:20]!r}")
    path = f"{values['z']}/{values['row']}/{values['col']}.{ext}"
    # OGC API's datetime is the layer's TIME dimension (ignored by a layer without one).
    when = args.get("datetime")
    return _wmts_request(
        addresses,
        values["layer"],
        values["matrix_set"],
        path,
        set_id=ogcapi.layer_matrix_set,
        dimensions={"TIME": when} if when else None,
    )


def _wmts_request(
    addresses: Addresses,
    layer: str,
    matrix_set: str,
    path: str,
    *,
    set_id: Callable[[Layer], str] = wmts.layer_matrix_set,
    dimensions: Values | None = None,
) -> TileRequest:
    named = addresses.layer(layer)
    if named is not None and matrix_set != set_id(named):
        raise TileNotFound(f"layer {layer} has no TileMatrixSet {matrix_set[:64]!r}")
    return addresses.request_via(layer, "wmts", path, dimensions)


def _wmts_kvp_request(addresses: Addresses, args: dict[str, str]) -> TileRequest:
    missing = [
        name
        for name in ("LAYER", "TILEMATRIXSET", "TILEMATRIX", "TILEROW", "TILECOL", "FORMAT")
        if not args.get(name)
    ]
    if missing:
        raise BadTileRequest(f"missing parameter {missing[0]}")
    if addresses.layer(args["LAYER"]) is None:
        raise TileNotFound(f"no layer named {args['LAYER'][:64]!r}")
    # The layer's own extension first: the key a WMTS client's tiles are stored under.
    ext = addresses.extension_for(args["LAYER"], args["FORMAT"])
    if ext is None:
        raise TileNotFound(f"layer {args['LAYER']} does not serve {args['FORMAT'][:64]!r}")
    path = f"{args['TILEMATRIX']}/{args['TILEROW']}/{args['TILECOL']}.{ext}"
    # A dimension's value under its identifier (Time=...), the default when absent.
    return _wmts_request(addresses, args["LAYER"], args["TILEMATRIXSET"], path, dimensions=args)


# The one registry of fixed tile routes: each is registered from here, and a
# redirected key is matched against the same table.
TILE_ROUTES: tuple[TileRoute, ...] = (
    TileRoute("tms_tile", ("/1.0.0/<layer>/<z>/<x>/<y>",), _tms_route),
    TileRoute(
        "wmts_rest_tile",
        (
            "/wmts/1.0.0/<layer>/<style>/<matrix_set>/<z>/<row>/<col>",
            "/wmts/1.0.0/<layer>/<style>/<matrix_set>/<path:dimensions>/<z>/<row>/<col>",
        ),
        _wmts_rest_route,
    ),
    TileRoute("wmts_kvp", ("/wmts",), _wmts_kvp_route, kvp=True),
    TileRoute(
        "arcgis_tile",
        ("/arcgis/rest/services/<layer>/MapServer/tile/<z>/<row>/<col>",),
        _arcgis_route,
    ),
    TileRoute(
        "ogcapi_tile",
        ("/ogcapi/collections/<layer>/map/tiles/<matrix_set>/<z>/<row>/<col>",),
        _ogcapi_route,
    ),
)

_BY_ENDPOINT = {f"{blueprint.name}.{route.endpoint}": route for route in TILE_ROUTES}


def _view(route: TileRoute) -> Callable[..., Response]:
    def view(**values: str) -> Response:
        return _route_reply(route, values)

    return view


for _route in TILE_ROUTES:
    _route_view = _view(_route)
    for _rule in _route.rules:
        blueprint.add_url_rule(_rule, _route.endpoint, _route_view, methods=["GET"])
