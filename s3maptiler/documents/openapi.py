"""The OpenAPI 3.0 definition of the OGC API - Tiles (``ogcapi/api``): every path of
:mod:`~s3maptiler.documents.ogcapi`, with the layers and TileMatrixSets as the values
their path parameters may take."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from s3maptiler.config import Layer
from s3maptiler.documents.ogcapi import JSON_TYPE, ROOT, published, time_of
from s3maptiler.documents.paths import base_of

__all__ = ["api_definition"]

_TEXT = {"text/plain": {"schema": {"type": "string"}}}
_ERRORS = {
    "400": {"description": "A bad parameter, in one line", "content": _TEXT},
    "404": {"description": "No such layer, tile matrix set or tile, in one line", "content": _TEXT},
}
_DATETIME = {
    "name": "datetime",
    "in": "query",
    "required": False,
    "description": "A value of the layer's time dimension (absent: its default)",
    "schema": {"type": "string"},
}
_F_JSON = {
    "name": "f",
    "in": "query",
    "required": False,
    "description": "The encoding of the answer: JSON, the only one served",
    "schema": {"type": "string", "enum": ["json"]},
}


def _path_parameter(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


def _operation(
    operation_id: str, summary: str, parameters: list[dict[str, Any]], content: dict[str, Any]
) -> dict[str, Any]:
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "parameters": parameters,
            "responses": {"200": {"description": summary, "content": content}, **_ERRORS},
        }
    }


def _json_operation(
    operation_id: str, summary: str, parameters: list[dict[str, Any]]
) -> dict[str, Any]:
    content = {JSON_TYPE: {"schema": {"type": "object"}}}
    return _operation(operation_id, summary, [*parameters, _F_JSON], content)


def api_definition(layers: Sequence[Layer], base_url: str, title: str = "s3maptiler") -> dict:
    """The OpenAPI 3.0 document: the paths below ``{base_url}/ogcapi`` and the values of
    their parameters (the layers' names, their TileMatrixSets, their tile formats)."""
    described = published(layers)
    names = [view.name for view, _ in described]
    set_ids = sorted({info.id for _, info in described})
    media = sorted({view.layer.tile_format.media_type for view, _ in described})
    timed = any(time_of(view.layer) for view, _ in described)  # datetime= is TIME
    collection_id = _path_parameter("collectionId", "A layer", {"type": "string", "enum": names})
    set_id = _path_parameter(
        "tileMatrixSetId", "A tile matrix set", {"type": "string", "enum": set_ids}
    )
    cell = [
        _path_parameter(name, what, {"type": "integer", "minimum": 0})
        for name, what in (
            ("tileMatrix", "The zoom level"),
            ("tileRow", "The row, counted from the top"),
            ("tileCol", "The column, counted from the left"),
        )
    ]
    tile_content = {kind: {"schema": {"type": "string", "format": "binary"}} for kind in media}
    collection = "/collections/{collectionId}"
    tiles = collection + "/map/tiles/{tileMatrixSetId}"
    paths = {
        "": _json_operation("getLandingPage", "The landing page", []),
        "/conformance": _json_operation("getConformance", "The conformance classes", []),
        "/api": _operation(
            "getAPI", "This API definition", [], {"application/vnd.oai.openapi+json": {}}
        ),
        "/collections": _json_operation("getCollections", "The layers", []),
        collection: _json_operation("getCollection", "A layer", [collection_id]),
        collection + "/map/tiles": _json_operation(
            "getCollectionMapTileSets", "The map tilesets of a layer", [collection_id]
        ),
        tiles: _json_operation(
            "getCollectionMapTileSet", "A map tileset of a layer", [collection_id, set_id]
        ),
        tiles + "/{tileMatrix}/{tileRow}/{tileCol}": _operation(
            "getCollectionMapTile",
            "A map tile, in the layer's own format",
            [collection_id, set_id, *cell, *([_DATETIME] if timed else [])],
            tile_content,
        ),
        "/tileMatrixSets": _json_operation("getTileMatrixSets", "The tile matrix sets", []),
        "/tileMatrixSets/{tileMatrixSetId}": _json_operation(
            "getTileMatrixSet", "A tile matrix set (TileMatrixSet 2.0 JSON)", [set_id]
        ),
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": f"{title} OGC API - Tiles", "version": "1.0.0"},
        "servers": [{"url": f"{base_of(base_url)}/{ROOT}"}],
        "paths": {path or "/": item for path, item in paths.items()},
    }
