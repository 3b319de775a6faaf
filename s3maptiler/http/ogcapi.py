"""OGC API - Tiles documents under ``/ogcapi`` (:mod:`s3maptiler.documents.ogcapi`):
the landing page, conformance, the OpenAPI definition, collections, tilesets and
TileMatrixSets, as JSON. Tiles are a fixed tile route of :mod:`s3maptiler.http.tiles`.

Every document is JSON, whatever ``Accept`` says; ``?f=json`` is accepted and any
other ``f`` is a 400. CORS is the app's, as for every document.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, request

from s3maptiler.config import Layer
from s3maptiler.documents import ogcapi, openapi
from s3maptiler.documents.errors import DocumentError
from s3maptiler.http.replies import document, service, text

blueprint = Blueprint("ogcapi", __name__, url_prefix="/" + ogcapi.ROOT)


def _base_url() -> str:
    return service().settings.service_url or request.host_url.rstrip("/")


def _json(build: Callable[[], dict[str, Any] | None], kind: str = ogcapi.JSON_TYPE) -> Response:
    """The document `build` makes, unless ``f`` asks for another encoding (400) or it
    makes none (404)."""
    wanted = request.args.get("f", "json").lower()
    if wanted != "json":
        return text(400, f"f={wanted[:20]!r}: only json is served")
    try:
        doc = build()
    except DocumentError as exc:
        return text(404, str(exc))
    if doc is None:
        return text(404, "no such tile matrix set here")
    return document(ogcapi.dumps(doc), kind)


def _of_layer(name: str, build: Callable[[Layer], dict[str, Any] | None]) -> Response:
    """The document `build` makes of layer `name`; 404 when the OGC API has no such
    layer (none configured, or one it leaves out: see ``ogcapi.published``)."""
    described = {view.name: view.layer for view, _ in ogcapi.published(service().settings.layers)}
    layer = described.get(name)
    if layer is None:
        return text(404, f"no collection named {name[:64]!r}")
    return _json(lambda: build(layer))


@blueprint.get("")
@blueprint.get("/")
def landing_page() -> Response:
    return _json(lambda: ogcapi.landing_page(_base_url()))


@blueprint.get("/conformance")
def conformance() -> Response:
    return _json(lambda: ogcapi.conformance(service().settings.layers))


@blueprint.get("/api")
def api_definition() -> Response:
    layers = service().settings.layers
    return _json(lambda: openapi.api_definition(layers, _base_url()), ogcapi.OPENAPI_TYPE)


@blueprint.get("/collections")
def collections() -> Response:
    return _json(lambda: ogcapi.collections(service().settings.layers, _base_url()))


@blueprint.get("/collections/<name>")
def collection(name: str) -> Response:
    return _of_layer(name, lambda layer: ogcapi.collection(layer, _base_url()))


@blueprint.get("/collections/<name>/map/tiles")
def tilesets(name: str) -> Response:
    return _of_layer(name, lambda layer: ogcapi.tilesets(layer, _base_url()))


@blueprint.get("/collections/<name>/map/tiles/<matrix_set>")
def tileset(name: str, matrix_set: str) -> Response:
    def build(layer: Layer) -> dict[str, Any] | None:
        if matrix_set != ogcapi.layer_matrix_set(layer):
            return None  # no such tileset: 404
        return ogcapi.tileset(layer, _base_url())

    return _of_layer(name, build)


@blueprint.get("/tileMatrixSets")
def tile_matrix_sets() -> Response:
    return _json(lambda: ogcapi.tile_matrix_sets(service().settings.layers, _base_url()))


@blueprint.get("/tileMatrixSets/<matrix_set>")
def tile_matrix_set(matrix_set: str) -> Response:
    return _json(lambda: ogcapi.tile_matrix_set(service().settings.layers, matrix_set))
