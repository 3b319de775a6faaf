"""Publish the TMS, WMTS, ArcGIS and OGC API - Tiles documents into the bucket,
beside the tiles.

Documents are built in "keys" mode: their tile URLs are the layers' own S3 keys under
the bucket's public URL (website endpoint or CloudFront), so the bucket alone opens
as a TMS, a WMTS, an ArcGIS tiled service and an OGC API - Tiles. Layers whose layout a
document cannot express are left out of it and reported (the OGC API points those
at its tile route's keys, which the redirect fills). Objects whose bytes did not
change are not written again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from s3maptiler.config import Layer, Settings
from s3maptiler.documents import arcgis, errors, ogcapi, openapi, paths, tms, views, wmts
from s3maptiler.tiles.formats import etag_of

DOCUMENT_CACHE_CONTROL = "public, max-age=300"
#: Documents written outside every layer's prefix; `bucket setup` makes them public too.
SERVICE_DOCUMENT_KEYS = (
    paths.tms_service_path("keys"),
    paths.WMTS_CAPABILITIES_PATH,
    ogcapi.ROOT,  # the landing page; every other OGC API key is under ogcapi.PREFIX
)


@dataclass(frozen=True)
class Document:
    key: str
    body: bytes
    content_type: str


def documents(settings: Settings, base_url: str) -> tuple[list[Document], list[errors.Skipped]]:
    """Every document to publish for `layers` (and, but in OGC API, their high-DPI
    layers, ``roads@2x``, as the service serves them), and the layers a document had
    to skip."""
    ogcapi_docs = ogcapi_documents(settings.layers, base_url.rstrip("/"))
    layers = settings.served_layers
    base_url = base_url.rstrip("/")
    tms_type, wmts_type = paths.TMS_CONTENT_TYPE, paths.WMTS_CONTENT_TYPE
    docs = [
        Document(
            paths.tms_service_path("keys"),
            tms.tile_map_service(layers, base_url, "keys").encode(),
            tms_type,
        ),
        Document(
            paths.WMTS_CAPABILITIES_PATH,
            wmts.wmts_capabilities(layers, base_url, "keys").encode(),
            wmts_type,
        ),
    ]
    skipped = views.skipped_layers(layers, "tms", "keys")
    tms_skipped = {s.layer for s in skipped}
    skipped += views.skipped_layers(layers, "wmts", "keys")
    for layer in layers:
        if layer.name not in tms_skipped:
            body = tms.tile_map(layer, base_url, "keys").encode()
            docs.append(Document(paths.tile_map_path(layer, "keys"), body, tms_type))
        try:
            body, json_type = arcgis.json_document(arcgis.arcgis_mapserver(layer))
        except errors.DocumentError as exc:
            skipped.append(errors.Skipped(layer.name, f"ArcGIS: {exc}"))
            continue
        docs.append(Document(paths.arcgis_service_path(layer), body, json_type))
    return docs + ogcapi_docs, skipped


def ogcapi_documents(layers: Sequence[Layer], base_url: str) -> list[Document]:
    """The OGC API - Tiles documents, each under the key that is its path on the
    service (:mod:`s3maptiler.documents.ogcapi`), so a bucket answers like the service."""
    root, json_type = ogcapi.ROOT, ogcapi.JSON_TYPE
    described = ogcapi.published(layers)
    pages: list[tuple[str, dict, str]] = [
        (root, ogcapi.landing_page(base_url), json_type),
        (f"{root}/conformance", ogcapi.conformance(layers), json_type),
        (f"{root}/api", openapi.api_definition(layers, base_url), ogcapi.OPENAPI_TYPE),
        (f"{root}/collections", ogcapi.collections(layers, base_url), json_type),
        (f"{root}/tileMatrixSets", ogcapi.tile_matrix_sets(layers, base_url), json_type),
    ]
    for view, info in described:
        collection = ogcapi.collection_path(view.layer)
        pages += [
            (collection, ogcapi.collection(view.layer, base_url), json_type),
            (f"{collection}/map/tiles", ogcapi.tilesets(view.layer, base_url), json_type),
            (
                ogcapi.tileset_path(view.layer, info),
                ogcapi.tileset(view.layer, base_url, "keys"),
                json_type,
            ),
        ]
    for set_id in dict.fromkeys(info.id for _, info in described):
        doc = ogcapi.tile_matrix_set(layers, set_id)
        pages.append((ogcapi.tms_path(set_id), doc, json_type))
    return [Document(key, ogcapi.dumps(doc).encode(), kind) for key, doc, kind in pages]


def publish(client: Any, bucket: str, docs: Sequence[Document], dry_run: bool = False) -> dict:
    """Write each document that differs from what the bucket holds.

    Returns {key: "written" | "unchanged" | "would write"}. One HEAD per document:
    there are a handful, and an unchanged one costs no PUT.
    """
    outcome = {}
    for doc in docs:
        etag = etag_of(doc.body)
        try:
            head = client.head_object(Bucket=bucket, Key=doc.key)
            same = head.get("ETag") == etag and head.get("ContentType") == doc.content_type
        except ClientError:
            same = False
        if same:
            outcome[doc.key] = "unchanged"
        elif dry_run:
            outcome[doc.key] = "would write"
        else:
            client.put_object(
                Bucket=bucket,
                Key=doc.key,
                Body=doc.body,
                ContentType=doc.content_type,
                CacheControl=DOCUMENT_CACHE_CONTROL,
            )
            outcome[doc.key] = "written"
    return outcome
