"""What every route answers with: one-line text errors, documents, and tiles.

:func:`refusal` answers an address that names no tile (400/404 with the reason);
:func:`tile_reply` is the one place that turns a resolved tile into an HTTP answer:
get the tile from the service (502/504 with
the WMS's words, 503 with Retry-After when the WMS is not asked), answer 200 or 304
with Content-Type, Cache-Control (and Expires for a lifetime from the WMS), ETag and
X-Tile-Source, and log one line.
"""

from __future__ import annotations

import logging
import time

from flask import Response, current_app, request

from s3maptiler import metrics
from s3maptiler.render.errors import WMSError
from s3maptiler.render.freshness import http_date
from s3maptiler.render.guard import WMSUnavailable
from s3maptiler.service.addresses import TileRequest, TileRequestError
from s3maptiler.service.tilepath import TileResult, TileService

__all__ = ["document", "refusal", "service", "text", "tile_reply"]

log = logging.getLogger("s3maptiler.request")


def service() -> TileService:
    """The app's tile service (one per process)."""
    return current_app.extensions["s3maptiler"]


def text(status: int, message: str) -> Response:
    response = Response(message + "\n", status=status, mimetype="text/plain")
    if status >= 400:
        response.headers["Cache-Control"] = "no-store"
    return response


def document(body: str | bytes, content_type: str) -> Response:
    response = Response(body, content_type=content_type)
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


def refusal(exc: TileRequestError, address: str, started: float) -> Response:
    """The answer for an address that names no tile the service serves (400/404)."""
    response = text(exc.status, str(exc))
    _log(address, None, response.status_code, started)
    return response


def tile_reply(
    service: TileService,
    tile_request: TileRequest,
    key: str | None,
    started: float,
    known_miss: bool = False,
) -> Response:
    """Get the tile a route resolved (from `key`, or None at a fixed route), answer.
    `started`: when the route began resolving, for the log line."""
    result: TileResult | None = None
    # S3 redirected `key`: known to be missing only when the tile is stored under it.
    known_miss = known_miss and tile_request.key == key
    try:
        result = service.get(tile_request, known_miss=known_miss)
    except WMSError as exc:
        response = text(exc.status, f"WMS error: {exc.reason}")
        _log(key, tile_request, response.status_code, started, kind=exc.kind)
        return response
    except WMSUnavailable as exc:
        response = text(exc.status, exc.reason)
        response.headers["Retry-After"] = str(exc.retry_after)
        _log(key, tile_request, response.status_code, started, kind="shed")
        return response

    response = Response(result.data, mimetype=result.content_type)
    etag = result.etag.strip('"')
    response.set_etag(etag)
    response.headers["Cache-Control"] = result.cache_control
    if result.expires is not None:  # a lifetime from the WMS (cache_from_wms)
        response.headers["Expires"] = http_date(result.expires)
    response.headers["X-Tile-Source"] = result.source
    if request.if_none_match.contains(etag):
        response.status_code = 304
        response.set_data(b"")
    _log(key, tile_request, response.status_code, started, result=result)
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
