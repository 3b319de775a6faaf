"""Bulk upload of an existing tile cache directory to S3.

The steps, each a function:

1. :func:`~s3maptiler.bucket.source.find_source`: where the tiles are (an ArcGIS
   ``_alllayers`` folder or a ``z/x/y`` tree) and whether an ArcGIS ``conf.xml`` lies
   beside them;
2. :func:`~s3maptiler.bucket.source.walk_tiles`: every file that parses as a tile in
   the source layout, with the S3 key it goes to, converted to another layout on
   request (for example ArcGIS hex rows to TMS); other files are counted as ignored;
3. :func:`list_existing`: the destination prefix listed ONCE with ListObjectsV2, so that
   unchanged tiles are skipped without a HEAD per file;
4. :func:`upload_tiles`: a bounded pool of threads sharing one boto3 client, each file
   read once, skipped when size and MD5 match the ETag of a single-part object, else
   put with ``ContentType`` sniffed from the bytes, ``CacheControl``, and an ACL only
   when asked; retryable errors are retried with exponential backoff.

With an ArcGIS ``conf.xml``, :func:`~s3maptiler.bucket.source.read_conf_xml` and
:func:`~s3maptiler.documents.arcgis.cache_mapserver` build the ArcGIS REST MapServer
JSON that matches the cache, which the ``upload`` command publishes beside the tiles
(:func:`s3maptiler.bucket.publish.publish`).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from s3maptiler.bucket.source import LocalTile
from s3maptiler.storage.s3 import (
    BulkReport,
    describe_error,
    list_objects,
    with_retries,
)
from s3maptiler.tiles.formats import content_type_for

__all__ = [
    "UPLOADED",
    "SKIPPED",
    "FAILED",
    "RemoteObject",
    "UploadOptions",
    "UploadReport",
    "list_existing",
    "upload_tiles",
]

log = logging.getLogger(__name__)

UPLOADED = "uploaded"
SKIPPED = "skipped"
FAILED = "failed"

# Bodies up to this many bytes are sent without waiting for "100 Continue".
_SEND_AT_ONCE = 1 << 20


# --- the destination ----------------------------------------------------------------


@dataclass(frozen=True)
class RemoteObject:
    """An object already in the bucket: `size` in bytes and its quoted `etag`."""

    size: int
    etag: str

    def same_as(self, size: int, md5_hex: str) -> bool:
        """True when a local file of `size` bytes and MD5 `md5_hex` is this object.

        Only a single-part object's ETag is the MD5 of its bytes; a multipart ETag
        (``"...-3"``) proves nothing, so such objects are uploaded again.
        """
        etag = self.etag.strip('"').lower()
        return self.size == size and "-" not in etag and etag == md5_hex


def list_existing(client: Any, bucket: str, prefix: str) -> dict[str, RemoteObject]:
    """Every object under `prefix` by key, from one listing (1000 keys a page).

    Raises ListingFailed with a one-line reason.
    """
    return {
        obj["Key"]: RemoteObject(int(obj["Size"]), obj.get("ETag", ""))
        for obj in list_objects(client, bucket, prefix)
    }


# --- upload -------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadOptions:
    """How to upload: `cache_control` header (None: none), canned `acl` (None: none,
    the default; buckets with ACLs disabled refuse any), `workers` threads (size the
    client's connection pool to match), `retries` after the first try, `backoff`
    base in seconds (doubled per retry, with jitter), `dry_run` to only count."""

    cache_control: str | None = None
    acl: str | None = None
    workers: int = 32
    retries: int = 4
    backoff: float = 0.25
    dry_run: bool = False


@dataclass
class UploadReport(BulkReport):
    """Counts of one upload run: `uploaded`, `skipped` (unchanged) and `failed` of `total`
    tiles, `ignored` files. In a dry run `uploaded` counts what would be uploaded."""

    total: int = 0
    uploaded: int = 0
    skipped: int = 0
    ignored: int = 0
    bytes_uploaded: int = 0
    dry_run: bool = False


def _send_body_at_once(request: Any, **_: Any) -> None:
    """botocore makes every PutObject wait for "100 Continue" before sending the body:
    one more network round trip per tile. A small body goes out with the headers."""
    headers = request.headers
    length = headers.get("Content-Length") or headers.get("X-Amz-Decoded-Content-Length")
    if "Expect" in headers and length is not None and int(length) <= _SEND_AT_ONCE:
        del headers["Expect"]


def _sends_no_checksum(client: Any) -> bool:
    """True when botocore only adds request checksums where an operation requires one
    (``when_required``, as make_s3_client sets for non-AWS endpoints)."""
    config = getattr(client.meta, "config", None)
    return getattr(config, "request_checksum_calculation", None) == "when_required"


def _upload_one(
    client: Any,
    bucket: str,
    tile: LocalTile,
    existing: dict[str, RemoteObject],
    options: UploadOptions,
) -> tuple[str, int]:
    """(outcome, bytes sent) for one file; raises on a failure that retries did not fix."""
    data = tile.path.read_bytes()
    digest = hashlib.md5(data, usedforsecurity=False)
    remote = existing.get(tile.key)
    if remote is not None and remote.same_as(len(data), digest.hexdigest()):
        return SKIPPED, 0
    if options.dry_run:
        return UPLOADED, len(data)
    params: dict[str, Any] = {
        "Bucket": bucket,
        "Key": tile.key,
        "Body": data,
        "ContentType": content_type_for(data, tile.path.name),
    }
    if _sends_no_checksum(client):
        # The SDK adds no CRC here (S3-compatible endpoints): let the store check the
        # bytes against their MD5, so a tile damaged in transit is refused.
        params["ContentMD5"] = base64.b64encode(digest.digest()).decode("ascii")
    if options.cache_control:
        params["CacheControl"] = options.cache_control
    if options.acl:
        params["ACL"] = options.acl
    with_retries(lambda: client.put_object(**params), options.retries, options.backoff)
    return UPLOADED, len(data)


def upload_tiles(
    client: Any,
    bucket: str,
    tiles: tuple[LocalTile, ...] | list[LocalTile],
    existing: dict[str, RemoteObject],
    options: UploadOptions,
    on_progress: Callable[[str], None] | None = None,
) -> UploadReport:
    """Upload `tiles` with `options.workers` threads sharing `client`; the counts.

    `existing` is :func:`list_existing` of the destination prefix: a tile whose key
    is there with the same size and MD5 is skipped. `on_progress` is called with
    "uploaded", "skipped" or "failed" once per tile (from worker threads, one at a
    time). Failures are counted and logged, never raised; Ctrl-C stops the workers
    after their current file and is re-raised. Registers on `client` a handler that
    sends bodies up to 1 MiB without ``Expect: 100-continue``.
    """
    if options.workers < 1:
        raise ValueError("workers must be at least 1")
    pool_size = getattr(getattr(client.meta, "config", None), "max_pool_connections", None)
    if pool_size is not None and pool_size < options.workers:
        log.warning(
            "%d upload threads share %d connections; size the client's pool to match",
            options.workers,
            pool_size,
        )
    client.meta.events.register(
        "before-send.s3.PutObject", _send_body_at_once, unique_id="s3maptiler-send-at-once"
    )
    report = UploadReport(total=len(tiles), dry_run=options.dry_run)
    queue = iter(tiles)
    lock = threading.Lock()
    stop = threading.Event()
    started = time.perf_counter()

    def work() -> None:
        while not stop.is_set():
            with lock:
                tile = next(queue, None)
            if tile is None:
                return
            try:
                outcome, sent = _upload_one(client, bucket, tile, existing, options)
                reason = ""
            except (ClientError, BotoCoreError, OSError) as err:
                outcome, sent, reason = FAILED, 0, describe_error(err)
                log.warning("upload failed key=%s path=%s reason=%s", tile.key, tile.path, reason)
            with lock:
                if outcome == UPLOADED:
                    report.uploaded += 1
                    report.bytes_uploaded += sent
                elif outcome == SKIPPED:
                    report.skipped += 1
                else:
                    report.failed += 1
                    report.failures.append((tile.key, reason))
                if on_progress is not None:
                    on_progress(outcome)

    threads = [
        threading.Thread(target=work, name=f"s3maptiler-upload-{i}")
        for i in range(min(options.workers, max(1, len(tiles))))
    ]
    for thread in threads:
        thread.start()
    try:
        # Short joins keep the main thread responsive to Ctrl-C.
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
    except KeyboardInterrupt:
        stop.set()
        for thread in threads:
            thread.join()
        raise
    finally:
        report.elapsed = time.perf_counter() - started
    return report
