"""Flask app factory and thin routes: parse the address, call the service, shape HTTP.

Tile addresses, all mapping to the S3 key the tile is stored under:
- `/<key>`                the key itself, e.g. `/tiles/3/4/2.png` (a plain tile server)
- `/<MISS_PREFIX><key>`   an S3 website redirect with `ReplaceKeyPrefixWith`: a known miss
- `/?tile=<key>`          the Node prototype's redirect form: a known miss
- the fixed routes `/1.0.0/<layer>/...` (TMS), `/wmts/1.0.0/<layer>/...` and `/wmts?...`
  (WMTS REST and KVP), `/arcgis/rest/services/<layer>/MapServer/tile/...` (ArcGIS):
  the layer's own key.

A path that is a configured layer's key is that key, before any fixed route (so
`TILE_PREFIX=1.0.0/<name>/` serves `/1.0.0/<name>/{z}/{x}/{y}.png` as keys). A
redirected key shaped like a fixed route (a bucket holding the service's documents
misses on those) is that route's tile, stored under exactly the key that missed; a
WMTS KVP query has no key of its own and is stored under the layer's key.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import time
from collections.abc import Callable, Mapping
from urllib.parse import parse_qsl

from flask import Flask, Response, request
from werkzeug.datastructures import Headers
from werkzeug.exceptions import HTTPException
from werkzeug.routing import MapAdapter

from s3maptiler import capabilities, metrics, preview
from s3maptiler.config import IPNetwork, Settings, load_settings
from s3maptiler.guard import WMSUnavailable
from s3maptiler.leases import Leases
from s3maptiler.pipeline import SharedBlanks
from s3maptiler.service import (
    BadTileRequest,
    TileNotFound,
    TileRequest,
    TileRequestError,
    TileResult,
    TileService,
    check_key,
)
from s3maptiler.spool import Spool
from s3maptiler.stores import LocalStore, S3Store, TileStore, make_s3_client
from s3maptiler.uploads import UploadJob, UploadPool
from s3maptiler.wms import WMSClient, WMSError

log = logging.getLogger("s3maptiler.request")

MAX_PATH_LENGTH = 1024
# S3 requests per tile read (GetObject), retries included: a read is on the request
# path, so a throttled store costs a little latency, then the tile is rendered.
READ_ATTEMPTS = 3


def build_service(settings: Settings, store: TileStore | None = None) -> TileService:
    """Create the per-process clients (WMS session, S3 clients, upload pool) and the service.

    Two S3 clients, one retry policy (botocore "standard"), two budgets: reads (and
    the fleet's leases) make at most READ_ATTEMPTS requests, uploads at most
    1 + UPLOAD_RETRIES PutObjects. A given `store` (tests) serves both."""
    upload_store = store
    leases = None
    if store is None:
        if settings.bucket:
            store = _s3_store(settings, settings.threads, READ_ATTEMPTS)
            store.on_read_denied = metrics.STORE_READS_DENIED.inc
            upload_store = _s3_store(
                settings, settings.upload_max_workers, 1 + settings.upload_retries
            )
            if settings.fleet_leases:
                leases = Leases(store.client, settings.bucket)
        else:
            store = upload_store = LocalStore(settings.local_cache_dir)
    wms = WMSClient(
        pool_size=settings.threads,
        connect_timeout=settings.wms_connect_timeout,
        read_timeout=settings.wms_timeout,
        retries=settings.wms_retries,
    )
    blanks = SharedBlanks()

    def settled(job: UploadJob, outcome: str) -> None:
        """Called once for every job the pool accepted, whatever became of it."""
        metrics.UPLOADS.labels(outcome).inc()
        metrics.UPLOAD_QUEUE.dec()
        blanks.settled(job, outcome)

    uploads = UploadPool(
        upload_store,
        workers=settings.upload_workers,
        max_workers=settings.upload_max_workers,
        max_pending=settings.upload_queue,
        on_result=settled,
    )
    spool = Spool(settings.spool_dir)
    return TileService(settings, store, wms, uploads, spool, leases, blanks)


def _s3_store(settings: Settings, threads: int, attempts: int) -> S3Store:
    assert settings.bucket is not None
    client = make_s3_client(
        max_pool_connections=threads,
        endpoint_url=settings.aws_endpoint_url,
        region_name=settings.aws_region,
        max_attempts=attempts,
    )
    return S3Store(
        settings.bucket, client, acl=settings.s3_acl, conditional=settings.s3_conditional_put
    )


def create_app(settings: Settings | None = None, service: TileService | None = None) -> Flask:
    """The WSGI app. Long-lived clients are made here, once per (gunicorn worker) process."""
    settings = settings or load_settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    service = service or build_service(settings)
    app = Flask(__name__, static_folder=None)
    app.extensions["s3maptiler"] = service
    app.register_blueprint(preview.blueprint)
    if settings.tasks_enabled:
        # POST /tasks/seed renders on demand: only on a worker tier that asks for it.
        from s3maptiler.tasks import tasks

        app.register_blueprint(tasks)

    @app.get("/heartbeat")
    def heartbeat() -> Response:
        stats = service.uploads.stats()
        if request.args.get("deep") not in ("1", "true"):
            counts = " ".join(
                f"uploads_{name}={stats[name]}"
                for name in ("pending", "stored", "failed", "dropped")
            )
            return _text(200, f"ok {counts}")
        # Deep: the store and every WMS, each with a short timeout, reported one by one.
        checks = {"store": _check(service.store.check)}
        denied = service.store.read_problem()
        checks["store_reads"] = "ok" if denied is None else f"failing: {denied}"
        for runtime in service.layers:
            source = next(iter(runtime.sources.values()))
            checks[f"wms:{runtime.layer.name}"] = _check(
                lambda s=source: service.wms.check_capabilities(s, timeout=3.0)
            )
        healthy = all(result == "ok" for result in checks.values())
        body = {"status": "ok" if healthy else "failing", "checks": checks, "uploads": stats}
        return Response(json.dumps(body), 200 if healthy else 503, mimetype="application/json")

    @app.get("/metrics")
    def prometheus() -> Response:
        if settings.metrics_allow is None:
            return _text(404, "404 Not Found")  # METRICS_ALLOW=off: as if there were none
        refused = _refused_hop(settings.metrics_allow, request.remote_addr, request.headers)
        if refused is not None:
            return _text(403, f"metrics: {refused[:64]} is not in METRICS_ALLOW")
        body, content_type = metrics.exposition()
        response = Response(body, content_type=content_type)
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.before_request
    def refuse_encoded_slashes() -> Response | None:
        raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or ""
        if "%2f" in raw.split("?", 1)[0].lower():
            # No route's address holds an encoded slash; decoding it would change the key.
            return _text(400, "encoded slash in the path")
        return None

    @app.before_request
    def keys_before_fixed_routes() -> Response | None:
        """A configured layer's key is that key, whichever route its path looks like."""
        if request.method not in ("GET", "HEAD") or request.endpoint == "tile":
            return None  # the catch-all reads keys itself
        path = request.path[1:]
        if service.owns(path):
            return _tile_response(service, path)
        return None

    @app.errorhandler(HTTPException)
    def one_line_errors(error: HTTPException) -> Response:
        """Flask's own 404/405/... pages, as one line of text like every other error."""
        response = _text(error.code or 500, f"{error.code} {error.name}")
        allowed = error.get_response().headers.get("Allow")
        if allowed:
            response.headers["Allow"] = allowed
        return response

    @app.after_request
    def cors(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if "*" in settings.cors_origins:
            response.headers["Access-Control-Allow-Origin"] = "*"
        elif origin in settings.cors_origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.vary.add("Origin")
        elif origin == "null" and request.path.startswith("/" + settings.miss_prefix):
            # A miss the bucket redirected: a redirect from the bucket's origin to ours
            # makes the browser send "Origin: null" (Fetch's tainted origin), whatever
            # page asked. The bucket's own CORS already decided who may read its tiles.
            response.headers["Access-Control-Allow-Origin"] = "*"
            response.vary.add("Origin")
        else:
            return response
        response.headers["Access-Control-Expose-Headers"] = "ETag, X-Tile-Source"
        if request.method == "OPTIONS":
            response.headers["Access-Control-Allow-Methods"] = "GET, HEAD, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = "If-None-Match, Cache-Control"
            response.headers["Access-Control-Max-Age"] = "86400"
        return response

    def key_request(key: str) -> TileRequest:
        return _key_request(service, app.url_map.bind("localhost"), key, request.args)

    @app.get("/")
    def root() -> Response:
        key = request.args.get("tile")
        if key is not None:
            key = key.lstrip("/")
            return _tile_response(service, key, lambda: key_request(key), known_miss=True)
        return Response(preview.index_page(service), mimetype="text/html")

    def base_url() -> str:
        return settings.service_url or request.host_url.rstrip("/")

    @app.get("/1.0.0/")
    def tms_service() -> Response:
        body = capabilities.tile_map_service(settings.layers, base_url())
        return _document(body, capabilities.TMS_CONTENT_TYPE)

    @app.get("/1.0.0/<layer>")
    @app.get("/1.0.0/<layer>/")
    def tms_tile_map(layer: str) -> Response:
        runtime = service.by_name.get(layer)
        if runtime is None:
            return _text(404, f"no layer named {layer[:64]!r}")
        try:
            body = capabilities.tile_map(runtime.layer, base_url())
        except capabilities.DocumentError as exc:
            return _text(404, str(exc))
        return _document(body, capabilities.TMS_CONTENT_TYPE)

    @app.get("/" + capabilities.WMTS_CAPABILITIES_PATH)
    def wmts_capabilities() -> Response:
        body = capabilities.wmts_capabilities(settings.layers, base_url())
        return _document(body, capabilities.WMTS_CONTENT_TYPE)

    @app.get("/arcgis/rest/services/<layer>/MapServer")
    def arcgis_mapserver(layer: str) -> Response:
        runtime = service.by_name.get(layer)
        if runtime is None:
            return _text(404, f"no layer named {layer[:64]!r}")
        fmt = request.args.get("f", "json").lower()
        if request.args.get("pretty", "").lower() == "true":
            fmt = "pjson"  # GDAL adds &pretty=true
        if fmt not in ("json", "pjson"):
            return _text(400, "f must be json or pjson")
        try:
            doc = capabilities.arcgis_mapserver(runtime.layer)
            body, content_type = capabilities.json_document(doc, fmt, request.args.get("callback"))
        except capabilities.DocumentError as exc:
            return _text(400, str(exc))
        response = _document(body, content_type)
        response.headers["Access-Control-Allow-Origin"] = "*"
        return response

    def fixed_route(endpoint: str, values: Mapping[str, str]) -> Response:
        route = TILE_ROUTES[endpoint]
        return _tile_response(service, None, lambda: route(service, values, request.args))

    @app.get("/1.0.0/<layer>/<z>/<x>/<y>")
    def tms_tile(**values: str) -> Response:
        return fixed_route("tms_tile", values)

    @app.get("/wmts/1.0.0/<layer>/<style>/<matrix_set>/<z>/<row>/<col>")
    def wmts_rest_tile(**values: str) -> Response:
        return fixed_route("wmts_rest_tile", values)

    @app.get("/wmts")
    def wmts_kvp() -> Response:
        args = {k.upper(): v for k, v in request.args.items()}
        wmts = args.get("SERVICE", "WMTS").upper() == "WMTS"
        if wmts and args.get("REQUEST", "").lower() == "getcapabilities":
            return wmts_capabilities()
        return fixed_route("wmts_kvp", {})

    @app.get("/arcgis/rest/services/<layer>/MapServer/tile/<z>/<row>/<col>")
    def arcgis_tile(**values: str) -> Response:
        return fixed_route("arcgis_tile", values)

    @app.get("/<path:path>")
    def tile(path: str) -> Response:
        if len(path) > MAX_PATH_LENGTH:
            return _text(400, f"path longer than {MAX_PATH_LENGTH} characters")
        known_miss = path.startswith(settings.miss_prefix)
        key = path[len(settings.miss_prefix) :] if known_miss else path
        return _tile_response(service, key, lambda: key_request(key), known_miss=known_miss)

    return app


def _refused_hop(allowed: tuple[IPNetwork, ...], peer: str | None, headers: Headers) -> str | None:
    """The first address of a request's path that is in none of `allowed`, else None.

    The path is the peer (behind Elastic Beanstalk, nginx on 127.0.0.1) and every
    address in X-Forwarded-For and X-Real-IP (the load balancer, the client, and
    whatever the client wrote itself). All must be allowed: a forged entry can only
    make a request less allowed, so no count of trusted proxies is needed.
    """
    hops = [peer or ""]
    for name in ("X-Forwarded-For", "X-Real-IP"):
        for value in headers.getlist(name):
            hops.extend(part.strip() for part in value.split(","))
    for hop in hops:
        try:
            address = ipaddress.ip_address(hop.strip("[]"))
        except ValueError:
            return hop or "an unknown address"
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if not any(address in network for network in allowed):
            return hop
    return None


def _check(probe: Callable[[], object]) -> str:
    try:
        probe()
    except Exception as exc:  # every failure is reported, none is raised
        return f"failing: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}"
    return "ok"


def _document(body: str | bytes, content_type: str) -> Response:
    response = Response(body, content_type=content_type)
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


# --- the fixed tile routes -------------------------------------------------------------
# Each turns a route's URL values and query into the tile it names, for a request at
# the route and for a redirected miss whose key has the route's shape alike.


def _tms_route(service: TileService, values: Mapping[str, str], args) -> TileRequest:
    path = f"{values['z']}/{values['x']}/{values['y']}"
    return service.request_via(values["layer"], "tms", path)


def _wmts_rest_route(service: TileService, values: Mapping[str, str], args) -> TileRequest:
    path = f"{values['z']}/{values['row']}/{values['col']}"
    return _wmts_request(service, values["layer"], values["matrix_set"], path)


def _wmts_kvp_route(service: TileService, values: Mapping[str, str], args) -> TileRequest:
    upper = {k.upper(): v for k, v in args.items()}
    if upper.get("SERVICE", "WMTS").upper() != "WMTS":
        raise BadTileRequest("SERVICE must be WMTS")
    if upper.get("REQUEST", "").lower() != "gettile":
        raise BadTileRequest("REQUEST must be GetCapabilities or GetTile")
    return _wmts_kvp_request(service, upper)


def _arcgis_route(service: TileService, values: Mapping[str, str], args) -> TileRequest:
    runtime = service.by_name.get(values["layer"])
    ext = runtime.layer.extension if runtime else "png"
    path = f"{values['z']}/{values['row']}/{values['col']}.{ext}"
    return service.request_via(values["layer"], "wmts", path)


TILE_ROUTES: dict[str, Callable[..., TileRequest]] = {
    "tms_tile": _tms_route,
    "wmts_rest_tile": _wmts_rest_route,
    "wmts_kvp": _wmts_kvp_route,
    "arcgis_tile": _arcgis_route,
}


def _key_request(
    service: TileService, routes: MapAdapter, key: str, args: Mapping[str, str]
) -> TileRequest:
    """The tile a key (from the miss prefix, `?tile=` or the path) names.

    A configured layer's key first. Else a key shaped like a fixed route: that
    route's tile, stored under exactly this key (a WMTS KVP query, which no key can
    hold, under the layer's own key). Else the layer key's own error.
    """
    if service.owns(key):
        return service.resolve(key)
    check_key(key)
    path, mark, query = key.partition("?")
    try:
        endpoint, values = routes.match("/" + path, method="GET")
    except HTTPException:  # no route, or one that only redirects (a missing slash)
        endpoint, values = None, {}
    route = TILE_ROUTES.get(str(endpoint))
    if route is None or (mark and endpoint != "wmts_kvp"):
        return service.resolve(key)
    tile_request = route(service, values, dict(parse_qsl(query, True)) if mark else args)
    if endpoint == "wmts_kvp":
        return tile_request
    return dataclasses.replace(tile_request, key=key)


def _wmts_request(service: TileService, layer: str, matrix_set: str, path: str) -> TileRequest:
    runtime = service.by_name.get(layer)
    if runtime is not None and matrix_set != capabilities.tile_matrix_set_id(runtime.grid):
        raise TileNotFound(f"layer {layer} has no TileMatrixSet {matrix_set[:64]!r}")
    return service.request_via(layer, "wmts", path)


def _wmts_kvp_request(service: TileService, args: dict[str, str]) -> TileRequest:
    missing = [
        name
        for name in ("LAYER", "TILEMATRIXSET", "TILEMATRIX", "TILEROW", "TILECOL", "FORMAT")
        if not args.get(name)
    ]
    if missing:
        raise BadTileRequest(f"missing parameter {missing[0]}")
    runtime = service.by_name.get(args["LAYER"])
    if runtime is None:
        raise TileNotFound(f"no layer named {args['LAYER'][:64]!r}")
    # The layer's own extension first: the key a WMTS client's tiles are stored under.
    served = sorted(runtime.sources, key=lambda e: e != runtime.layer.extension)
    ext = next((e for e in served if runtime.content_type(e) == args["FORMAT"]), None)
    if ext is None:
        raise TileNotFound(f"layer {args['LAYER']} does not serve {args['FORMAT'][:64]!r}")
    path = f"{args['TILEMATRIX']}/{args['TILEROW']}/{args['TILECOL']}.{ext}"
    return _wmts_request(service, args["LAYER"], args["TILEMATRIXSET"], path)


def _tile_response(
    service: TileService,
    key: str | None,
    resolve: Callable[[], TileRequest] | None = None,
    known_miss: bool = False,
) -> Response:
    """Resolve the address (a key, or a fixed route's `resolve`), get the tile, answer."""
    started = time.perf_counter()
    result: TileResult | None = None
    try:
        tile_request = resolve() if resolve is not None else service.resolve(key)
    except TileRequestError as exc:
        response = _text(exc.status, str(exc))
        _log(key or request.path, None, response.status_code, started)
        return response
    # S3 redirected `key`: known to be missing only when the tile is stored under it.
    known_miss = known_miss and tile_request.key == key
    try:
        result = service.get(tile_request, known_miss=known_miss)
    except WMSError as exc:
        response = _text(exc.status, f"WMS error: {exc.reason}")
        _log(key, tile_request, response.status_code, started, kind=exc.kind)
        return response
    except WMSUnavailable as exc:
        response = _text(exc.status, exc.reason)
        response.headers["Retry-After"] = str(exc.retry_after)
        _log(key, tile_request, response.status_code, started, kind="shed")
        return response

    response = Response(result.data, mimetype=result.content_type)
    etag = result.etag.strip('"')
    response.set_etag(etag)
    response.headers["Cache-Control"] = result.cache_control
    response.headers["X-Tile-Source"] = result.source
    if request.if_none_match.contains(etag):
        response.status_code = 304
        response.set_data(b"")
    _log(key, tile_request, response.status_code, started, result=result)
    return response


def _text(status: int, message: str) -> Response:
    response = Response(message + "\n", status=status, mimetype="text/plain")
    if status >= 400:
        response.headers["Cache-Control"] = "no-store"
    return response


def _log(key, tile_request, status, started, result=None, kind=None) -> None:
    """One structured line per tile request."""
    fields = {
        "status": status,
        "ms": f"{(time.perf_counter() - started) * 1000:.1f}",
    }
    if tile_request is not None:
        tile = tile_request.tile
        fields.update(layer=tile_request.layer.layer.name, z=tile.z, x=tile.x, y=tile.y)
    else:
        fields["key"] = repr(key[:120])
    metrics.TILE_REQUESTS.labels(
        tile_request.layer.layer.name if tile_request else "-",
        result.source if result else "-",
        str(status),
    ).inc()
    if result is not None:
        fields["source"] = result.source
        if result.wms_ms is not None:
            fields["wms_ms"] = f"{result.wms_ms:.1f}"
        fields["upload"] = result.upload
    if kind is not None:
        fields["error"] = kind
    log.info("tile %s", " ".join(f"{k}={v}" for k, v in fields.items()))
