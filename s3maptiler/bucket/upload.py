"""Bulk upload of an existing tile cache directory to S3.

The steps, each a function:

1. :func:`find_source`: where the tiles are (an ArcGIS ``_alllayers`` folder or a
   ``z/x/y`` tree) and whether an ArcGIS ``conf.xml`` lies beside them;
2. :func:`walk_tiles`: every file that parses as a tile in the source layout, with the
   S3 key it goes to, converted to another layout on request (for example ArcGIS hex
   rows to TMS); other files are counted as ignored;
3. :func:`list_existing`: the destination prefix listed ONCE with ListObjectsV2, so that
   unchanged tiles are skipped without a HEAD per file;
4. :func:`upload_tiles`: a bounded pool of threads sharing one boto3 client, each file
   read once, skipped when size and MD5 match the ETag of a single-part object, else
   put with ``ContentType`` sniffed from the bytes, ``CacheControl``, and an ACL only
   when asked; retryable errors are retried with exponential backoff.

With an ArcGIS ``conf.xml``, :func:`read_conf_xml` and :func:`mapserver_json` build the
ArcGIS REST MapServer JSON that matches the cache, and :func:`publish_json` puts it
beside the tiles.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from s3maptiler.storage.s3 import (
    BulkReport,
    ListingFailed,
    describe_error,
    is_retryable,
    list_objects,
    with_retries,
)
from s3maptiler.tiles.arcgis import (
    ArcgisCacheInfo,
    ConfXmlError,
    Lod,
    parse_conf_cdi,
    parse_conf_xml,
)
from s3maptiler.tiles.formats import content_type_for
from s3maptiler.tiles.grids import Bbox, GridError, TileGrid
from s3maptiler.tiles.layouts import Layout, LayoutError

__all__ = [
    "UPLOADED",
    "SKIPPED",
    "FAILED",
    "ArcgisCacheInfo",
    "BulkError",
    "ConfXmlError",
    "ListingFailed",
    "LocalTile",
    "Lod",
    "RemoteObject",
    "SourceError",
    "SourceTree",
    "TileWalk",
    "UploadOptions",
    "UploadReport",
    "content_type_for",
    "convert_key",
    "detect_layout",
    "find_source",
    "is_retryable",
    "list_existing",
    "publish_json",
    "read_conf_cdi",
    "read_conf_xml",
    "upload_tiles",
    "walk_tiles",
]

log = logging.getLogger(__name__)

UPLOADED = "uploaded"
SKIPPED = "skipped"
FAILED = "failed"

_LEVEL_DIR_RE = re.compile(r"L[0-9]{2,}")
# Bodies up to this many bytes are sent without waiting for "100 Continue".
_SEND_AT_ONCE = 1 << 20


class BulkError(Exception):
    """Base class for every error raised by this module; the message is one line."""


class SourceError(BulkError):
    """The source directory is missing, holds no tiles, or is a cache we cannot read."""


# --- the source tree ----------------------------------------------------------------


@dataclass(frozen=True)
class SourceTree:
    """A local tile cache: `tile_root` is the folder the layout's paths start in (for
    ArcGIS the ``_alllayers`` folder); `conf_xml` is the ArcGIS cache description
    beside it, if any; `name` is a service name for documents (the cache folder's)."""

    tile_root: Path
    conf_xml: Path | None
    name: str


def find_source(root: str | os.PathLike) -> SourceTree:
    """Where the tiles under `root` start.

    `root` may be an ArcGIS cache root holding one service, the service's cache
    folder (``<Service>/Layers/_alllayers``), its ``Layers`` folder, the
    ``_alllayers`` folder itself, or the top of a ``z/x/y`` tree. Raises SourceError
    when `root` is not a directory or holds several caches.
    """
    path = Path(root)
    if not path.is_dir():
        raise SourceError(f"{path} is not a directory")
    for candidate in (path / "Layers" / "_alllayers", path / "_alllayers"):
        if candidate.is_dir():
            tile_root = candidate
            break
    else:
        # An ArcGIS cache root (arcgiscache/) holding one service's cache.
        services = sorted(path.glob("*/Layers/_alllayers"))
        if len(services) > 1:
            names = ", ".join(p.parent.parent.name for p in services)
            raise SourceError(f"{path} holds several ArcGIS caches ({names}); pick one")
        tile_root = services[0] if services else path
    conf = tile_root.parent / "conf.xml" if tile_root.name == "_alllayers" else None
    if conf is not None and not conf.is_file():
        conf = None
    name_dir = tile_root.parent if tile_root.name == "_alllayers" else tile_root
    if name_dir.name == "Layers":
        name_dir = name_dir.parent
    return SourceTree(tile_root, conf, name_dir.resolve().name or "tiles")


def detect_layout(tile_root: Path) -> str | None:
    """ "arcgis" when `tile_root` holds ArcGIS level folders (``L00``, ``L01``, ...),
    else None: TMS and XYZ trees look alike, only the user knows which one it is."""
    try:
        with os.scandir(tile_root) as entries:
            for entry in entries:
                if entry.is_dir() and _LEVEL_DIR_RE.fullmatch(entry.name):
                    return "arcgis"
    except OSError as err:
        raise SourceError(f"cannot read {tile_root}: {err.strerror or err}") from err
    return None


def _relative_files(root: Path) -> Iterator[str]:
    """Paths of the regular files under `root`, '/'-separated, sorted per folder.

    Hidden entries (``.DS_Store``, ``.git``) are left out; symbolic links to
    folders are not followed, so a link loop cannot trap the walk.
    """
    stack = [("", root)]
    while stack:
        rel, folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as err:
            raise SourceError(f"cannot read {folder}: {err.strerror or err}") from err
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                subfolders.append((f"{rel}{entry.name}/", Path(entry.path)))
            elif entry.is_file():
                yield rel + entry.name
        stack.extend(reversed(subfolders))


def convert_key(path: str, source: Layout, target: Layout | None, grid: TileGrid) -> str:
    """The key path of the tile file at `path` (relative, in the `source` layout).

    With `target` None or the same layout the path is kept exactly as it is (an
    upper-case ArcGIS ``R0000001A`` stays so, which is the spelling clients ask
    for); otherwise the tile is parsed and formatted in `target`. Raises
    LayoutError or GridError when `path` is not a tile of `grid`.

    >>> from s3maptiler.tiles.grids import WEB_MERCATOR
    >>> from s3maptiler.tiles.layouts import get_layout
    >>> convert_key("L03/R00000002/C00000005.png", get_layout("arcgis"),
    ...             get_layout("tms"), WEB_MERCATOR)
    '3/5/5.png'
    """
    tile, ext = source.parse(path, grid)
    if target is None or target.name == source.name:
        return path
    return target.format(tile, ext, grid)


@dataclass(frozen=True)
class LocalTile:
    """One file to upload: its local `path` and the full S3 `key` it goes to."""

    path: Path
    key: str


@dataclass(frozen=True)
class TileWalk:
    """The result of :func:`walk_tiles`: the tiles, and the files that are not tiles."""

    tiles: tuple[LocalTile, ...]
    ignored: tuple[str, ...]


def walk_tiles(
    tile_root: Path,
    source: Layout,
    grid: TileGrid,
    prefix: str,
    target: Layout | None = None,
) -> TileWalk:
    """Every tile file under `tile_root` with its key: `prefix` + :func:`convert_key`.

    Files that are not tiles of `grid` in the `source` layout (``conf.xml``,
    ``Thumbs.db``, a gdal2tiles ``leaflet.html``, ...) are returned as ignored,
    never uploaded. Two files that convert to one key are an error.
    """
    tiles: list[LocalTile] = []
    ignored: list[str] = []
    seen: dict[str, str] = {}
    for rel in _relative_files(tile_root):
        try:
            key = prefix + convert_key(rel, source, target, grid)
        except (LayoutError, GridError):
            ignored.append(rel)
            continue
        if key in seen:
            raise SourceError(f"{seen[key]} and {rel} would both be uploaded as {key}")
        seen[key] = rel
        tiles.append(LocalTile(tile_root / rel, key))
    return TileWalk(tuple(tiles), tuple(ignored))


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

    @property
    def tiles_per_second(self) -> float:
        """Tiles handled (uploaded, skipped or failed) per second of wall time."""
        handled = self.uploaded + self.skipped + self.failed
        return handled / self.elapsed if self.elapsed > 0 else 0.0


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


def publish_json(
    client: Any,
    bucket: str,
    key: str,
    document: str,
    cache_control: str | None = None,
    retries: int = 4,
    backoff: float = 0.25,
) -> None:
    """Put a JSON `document` at `key` with ``Content-Type: application/json``.

    Raises ClientError or BotoCoreError when retries do not help.
    """
    params: dict[str, Any] = {
        "Bucket": bucket,
        "Key": key,
        "Body": document.encode("utf-8"),
        "ContentType": "application/json",
    }
    if cache_control:
        params["CacheControl"] = cache_control
    with_retries(lambda: client.put_object(**params), retries, backoff)


# --- ArcGIS conf.xml ----------------------------------------------------------------


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfXmlError(f"cannot read {path}: {err}") from err


def read_conf_xml(path: str | os.PathLike) -> ArcgisCacheInfo:
    """Parse an ArcGIS exploded cache's ``conf.xml`` (``CacheInfo`` / ``TileCacheInfo``)."""
    path = Path(path)
    parsed = parse_conf_xml(_read(path), str(path))
    if "Exploded" not in parsed.storage_format:
        raise ConfXmlError(
            f"{path}: {parsed.storage_format} is not an exploded cache "
            "(compact .bundle files are not uploaded tile by tile)"
        )
    return parsed


def read_conf_cdi(path: str | os.PathLike) -> Bbox | None:
    """The extent in a ``conf.cdi`` (``EnvelopeN``: XMin, YMin, XMax, YMax), or None."""
    path = Path(path)
    if not path.is_file():
        return None
    return parse_conf_cdi(_read(path), str(path))
