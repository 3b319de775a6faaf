"""The Flask app factory: one service per process, the blueprints, CORS and one-line errors.

Routes live in blueprints by concern: :mod:`~s3maptiler.http.tiles`,
:mod:`~s3maptiler.http.documents`, :mod:`~s3maptiler.http.operations`,
:mod:`~s3maptiler.http.preview` and, on a worker tier, :mod:`~s3maptiler.http.tasks`.
Each turns HTTP into a call of the :class:`~s3maptiler.service.tilepath.TileService`
and back.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from s3maptiler.config import Settings, load_settings
from s3maptiler.http import documents, ogcapi, operations, preview, tiles
from s3maptiler.http.replies import text
from s3maptiler.service.build import build_service
from s3maptiler.service.tilepath import TileService

__all__ = ["create_app"]


def create_app(settings: Settings | None = None, service: TileService | None = None) -> Flask:
    """The WSGI app. Long-lived clients are made here, once per (gunicorn worker) process."""
    settings = settings or load_settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    service = service or build_service(settings)
    app = Flask(__name__, static_folder=None)
    app.extensions["s3maptiler"] = service
    app.before_request(_refuse_encoded_slashes)
    for blueprint in (operations, documents, ogcapi, preview, tiles):
        app.register_blueprint(blueprint.blueprint)
    if settings.tasks_enabled:
        # POST /tasks/seed renders on demand: only on a worker tier that asks for it.
        from s3maptiler.http import tasks

        app.register_blueprint(tasks.blueprint)
    app.register_error_handler(HTTPException, _one_line_errors)
    app.after_request(lambda response: _cors(settings, response))
    return app


def _refuse_encoded_slashes() -> Response | None:
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or ""
    if "%2f" in raw.split("?", 1)[0].lower():
        # No route's address holds an encoded slash; decoding it would change the key.
        return text(400, "encoded slash in the path")
    return None


def _one_line_errors(error: HTTPException) -> Response:
    """Flask's own 404/405/... pages, as one line of text like every other error."""
    response = text(error.code or 500, f"{error.code} {error.name}")
    allowed = error.get_response().headers.get("Allow")
    if allowed:
        response.headers["Allow"] = allowed
    return response


def _cors(settings: Settings, response: Response) -> Response:
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
