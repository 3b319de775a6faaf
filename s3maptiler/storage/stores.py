"""Tile stores: where rendered tiles live and are read back.

Two implementations of one small interface:

- `S3Store`: a bucket reached through one long-lived data-path client
  (:mod:`s3maptiler.storage.objects`). A read is exactly one GetObject (never HEAD
  then GET; a pointer to a shared blank reads the blank once per process); a write
  is one PutObject with the tile's Content-Type, optional Cache-Control and Expires,
  and ``If-None-Match: *`` so that instances behind a load balancer never overwrite
  each other's tiles.
- `LocalStore`: a directory, the embedded default when no bucket is configured.
  Writes are atomic (temporary file + ``os.replace``); content types are sniffed
  from the bytes so no sidecar files are needed.

Every failure is a `StoreError` (:mod:`s3maptiler.storage.s3`) whose ``retryable``
flag says whether trying again could help. Retrying is the S3 client's job alone.

One module of about 460 lines on purpose: the interface and its two
implementations read best side by side, so a reader can compare S3 and a directory
rule by rule.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from typing import Any

from s3maptiler.storage.objects import ObjectClient, as_objects
from s3maptiler.storage.s3 import (
    MISSING_KEY_ACCESS_CODES,
    MISSING_KEY_CODES,
    InvalidKeyError,
    StoreAccessDenied,
    StoreError,
    StoreNotFound,
    StoreUnavailable,
)
from s3maptiler.tiles.formats import GENERIC_CONTENT_TYPES, etag_of, sniff_content_type

__all__ = ["LocalStore", "S3Store", "StoredTile", "TileObject", "TileStore"]

log = logging.getLogger(__name__)


# --- errors -------------------------------------------------------------------------


# --- interface ----------------------------------------------------------------------


@dataclass(frozen=True)
class TileObject:
    """One tile to write: the store key, the encoded bytes and their HTTP headers."""

    key: str
    data: bytes = field(repr=False)
    content_type: str
    cache_control: str | None = None
    redirect_to: str | None = None  # key of the shared blank this empty tile points to
    expires: float | None = None  # seconds since the epoch: the object's Expires header
    overwrite: bool = False  # replace a tile already there (no If-None-Match)


@dataclass(frozen=True)
class StoredTile:
    """One tile read back from a store.

    ``etag`` is a quoted entity tag (S3's ETag header, or an MD5 of the bytes for
    local files) suitable for answering ``If-None-Match``; None when unknown.
    ``expires`` is the object's Expires in seconds since the epoch (S3 only), if any.
    """

    data: bytes = field(repr=False)
    content_type: str
    etag: str | None
    expires: float | None = None


class TileStore(ABC):
    """Where tiles are cached. Implementations are safe to share between threads."""

    location: str
    """Human-readable place, e.g. ``s3://bucket`` or ``/var/cache/tiles``."""

    remote: bool = False
    """True when a read is a network call (S3), dearer than this host's spool."""

    @abstractmethod
    def get(self, key: str) -> StoredTile | None:
        """The tile stored under `key`, or None when there is none (a miss)."""

    def put(
        self,
        key: str,
        data: bytes,
        content_type: str,
        cache_control: str | None,
        redirect_to: str | None = None,
        expires: float | None = None,
        overwrite: bool = False,
    ) -> str:
        """Store `data` under `key`; "stored", or "exists" when a tile was already there
        (and `overwrite` is not set).

        `redirect_to` (another key holding the same bytes) lets a store that can,
        keep a tiny object that points there instead (S3 website redirects); others
        store `data`. `expires` (seconds since the epoch) is kept by stores that can
        (S3's Expires). Raises StoreError.
        """
        obj = TileObject(key, data, content_type, cache_control, redirect_to, expires, overwrite)
        return self.write(obj)

    @abstractmethod
    def write(self, obj: TileObject) -> str:
        """:meth:`put` of one object (what the upload pool and seeding call)."""

    @abstractmethod
    def check(self) -> None:
        """Cheap reachability check for start-up and deep health; StoreError if not usable."""

    def read_problem(self) -> str | None:
        """A one-line reason when recent reads were refused (deep health), else None."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"


# --- S3 -----------------------------------------------------------------------------

# Shared blanks an S3Store keeps in memory (uniform tiles: a handful per layer).
MAX_BLANKS_KEPT = 256

# Reads S3 refuses with 403 are misses (the tile is rendered), counted, and logged at
# most once per this many seconds with the count since the last line.
DENIED_LOG_INTERVAL = 60.0
# A refused read this recent (seconds) makes the deep health check report it.
DENIED_RECENT = 300.0
_DENIED_HINT = (
    "grant the role s3:GetObject on the tile prefixes, and s3:ListBucket "
    "(without it a missing tile reads as 403 too)"
)


class _ReadDenials:
    """403s on GetObject: how many, the last one, and when they were last logged."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self.clock = clock
        self.lock = threading.Lock()
        self.total = 0
        self.unlogged = 0
        self.logged_at: float | None = None
        self.last_at: float | None = None
        self.last_key = ""

    def record(self, location: str, key: str) -> None:
        with self.lock:
            now = self.clock()
            self.total += 1
            self.unlogged += 1
            self.last_at, self.last_key = now, key
            due = self.logged_at is None or now - self.logged_at >= DENIED_LOG_INTERVAL
            if due:
                count, self.unlogged, self.logged_at = self.unlogged, 0, now
        if due:
            log.warning(
                "S3 denied %d read(s) of %s with 403 AccessDenied (%d since start), the last "
                "%s; they are rendered as misses, so the cache is not read: %s",
                count,
                location,
                self.total,
                key,
                _DENIED_HINT,
            )

    def problem(self) -> str | None:
        with self.lock:
            if self.last_at is None or self.clock() - self.last_at > DENIED_RECENT:
                return None
            age = self.clock() - self.last_at
            return (
                f"reads denied: {self.total} GetObject(s) answered 403 AccessDenied, the "
                f"last {age:.0f} s ago ({self.last_key[:120]}); {_DENIED_HINT}"
            )


class S3Store(TileStore):
    """Tiles in an S3 bucket, through one shared (thread-safe) data-path client.

    `client`: a boto3 S3 client (the control plane: listing for seeding) or the
    data-path :class:`~s3maptiler.storage.objects.ObjectClient`; `objects` the data-path
    client for reads and writes (None: one with `client`'s endpoint, credentials and
    budget). `acl`: a canned ACL sent with every PutObject, None (the default) sends
    none; buckets created since April 2023 refuse ACLs. `conditional`: send
    ``If-None-Match: *`` so an existing tile is never overwritten. `metadata`: user
    metadata (``x-amz-meta-*``) written on every tile.
    """

    remote = True

    def __init__(
        self,
        bucket: str,
        client: Any,
        acl: str | None = None,
        conditional: bool = True,
        metadata: dict[str, str] | None = None,
        on_read_denied: Callable[[], None] | None = None,
        objects: ObjectClient | None = None,
    ):
        self.bucket = bucket
        self.on_read_denied = on_read_denied  # e.g. a metric's inc, called once per 403 read
        self._denials = _ReadDenials()
        self.client = client
        self.objects = objects or as_objects(client)
        self.acl = acl
        self.metadata = dict(metadata) if metadata else None
        self.location = f"s3://{bucket}"
        self.conditional = conditional
        # Shared blanks by key: their keys name their bytes (an MD5), so a blank read
        # once serves every pointer to it without a second GetObject.
        self._blanks: dict[str, StoredTile] = {}

    def get(self, key: str) -> StoredTile | None:
        """One GetObject. None for NoSuchKey/404, and for 403: a missing key when the role
        lacks s3:ListBucket, or no s3:GetObject at all (counted, see read_problem)."""
        reply = self.objects.get(self.bucket, key)
        if reply.status != 200:
            code = reply.code
            if code in MISSING_KEY_CODES:
                return None
            if code in MISSING_KEY_ACCESS_CODES:
                self._read_denied(key)
                return None
            raise reply.error(f"GetObject {self.location}/{key}")
        data, headers = reply.body, reply.headers
        when = _http_date(headers.get("Expires"))
        target = headers.get("x-amz-website-redirect-location")
        if not data and target and target.startswith("/") and target[1:] != key:
            # An empty tile stored as a pointer to the layer's shared blank: the blank's
            # bytes, the pointer's own lifetime.
            blank = self._blank(target[1:])
            return blank if blank is None or when is None else replace(blank, expires=when)
        content_type = headers.get("Content-Type") or ""
        if content_type in GENERIC_CONTENT_TYPES:
            # Objects uploaded by other tools often lack a type; the bytes know better.
            content_type = sniff_content_type(data) or "application/octet-stream"
        return StoredTile(data, content_type, headers.get("ETag"), when)

    def _blank(self, key: str) -> StoredTile | None:
        """The shared blank a pointer names: read once per process (a few per layer)."""
        blank = self._blanks.get(key)
        if blank is None:
            blank = self.get(key)
            if blank is not None:
                if len(self._blanks) >= MAX_BLANKS_KEPT:
                    self._blanks.clear()
                self._blanks[key] = blank
        return blank

    def _read_denied(self, key: str) -> None:
        """A 403 on GetObject: a missing key without s3:ListBucket, or no s3:GetObject.
        Either way a miss to render; counted, and logged at a bounded rate."""
        self._denials.record(self.location, key)
        if self.on_read_denied is not None:
            self.on_read_denied()

    def read_problem(self) -> str | None:
        """Why reads are refused, when a GetObject answered 403 in the last DENIED_RECENT s."""
        return self._denials.problem()

    def write(self, obj: TileObject) -> str:
        """One PutObject; "exists" on 412 PreconditionFailed (a 409 conflict is retried by
        the client). With `obj.overwrite` the write is unconditional: it replaces an
        expired tile.

        With `redirect_to`, a zero-byte object whose WebsiteRedirectLocation sends S3
        website clients to that key (the layer's shared blank tile)."""
        headers = {"Content-Type": obj.content_type}
        if obj.redirect_to:
            headers["x-amz-website-redirect-location"] = "/" + obj.redirect_to
        if obj.cache_control:
            headers["Cache-Control"] = obj.cache_control
        if obj.expires is not None:
            headers["Expires"] = formatdate(obj.expires, usegmt=True)
        if self.acl:
            headers["x-amz-acl"] = self.acl
        for name, value in (self.metadata or {}).items():
            headers[f"x-amz-meta-{name}"] = value
        kind = "put"
        if self.conditional and not obj.overwrite:
            headers["If-None-Match"] = "*"
            kind = "put_conditional"
        body = b"" if obj.redirect_to else obj.data
        reply = self.objects.put(self.bucket, obj.key, body, headers, kind)
        if reply.status == 200:
            return "stored"
        if reply.status == 412:
            return "exists"  # another writer cached it first: success
        raise reply.error(f"PutObject {self.location}/{obj.key}")

    def check(self) -> None:
        """HeadBucket; StoreError with a one-line reason when the bucket is not usable."""
        reply = self.objects.head_bucket(self.bucket)
        if reply.status == 200:
            return
        if reply.status == 404:
            raise StoreNotFound(f"bucket {self.bucket!r} does not exist")
        if reply.status == 403:
            raise StoreAccessDenied(
                f"access to bucket {self.bucket!r} denied (HeadBucket needs s3:ListBucket)"
            )
        raise reply.error(f"HeadBucket {self.location}")


def _http_date(value: str | None) -> float | None:
    """An HTTP date (an object's Expires) in seconds since the epoch; None if unparsable."""
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


# --- local directory ----------------------------------------------------------------


def _checked_parts(key: str) -> list[str]:
    """The path segments of `key`, or InvalidKeyError for anything that could escape."""
    if not key:
        raise InvalidKeyError("empty key")
    if "\\" in key or "\x00" in key:
        raise InvalidKeyError(f"key {key!r} contains a backslash or NUL")
    if key.startswith("/"):
        raise InvalidKeyError(f"key {key!r} is absolute")
    parts = key.split("/")
    if any(part in {"", ".", ".."} for part in parts):
        raise InvalidKeyError(f"key {key!r} has an empty, '.' or '..' segment")
    return parts


class LocalStore(TileStore):
    """Tiles as files under `root`: key ``a/b/c.png`` is the file ``root/a/b/c.png``.

    Content types are sniffed from the bytes on read; Cache-Control is not stored
    (it belongs to the layer). ETags are the quoted MD5 hex of the bytes.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.location = str(self.root)

    def path_for(self, key: str) -> Path:
        """The file that holds `key`; InvalidKeyError for keys that could leave `root`."""
        return self.root.joinpath(*_checked_parts(key))

    def get(self, key: str) -> StoredTile | None:
        """The file's bytes, or None when there is no file for `key`."""
        path = self.path_for(key)
        try:
            data = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as err:
            raise _os_error(err, f"cannot read {path}") from err
        content_type = sniff_content_type(data) or "application/octet-stream"
        return StoredTile(data, content_type, etag_of(data))

    def write(self, obj: TileObject) -> str:
        """Write atomically; "exists" when the file is already there (like IfNoneMatch),
        unless `obj.overwrite`. A directory has no redirects and no Expires:
        `redirect_to` and `expires` are ignored and the bytes written.

        Two writers racing on one key both write whole files and the last rename
        wins; for tiles of the same request that is harmless.
        """
        path = self.path_for(obj.key)
        if path.exists() and not obj.overwrite:
            return "exists"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Same directory as the target, so os.replace is an atomic rename.
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        except OSError as err:
            raise _os_error(err, f"cannot write under {path.parent}") from err
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(obj.data)
                f.flush()
                # A crash must never leave a short file under a tile's name.
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; a web server may serve this dir
            os.replace(tmp, path)
        except BaseException as err:
            _remove_quietly(tmp)
            if isinstance(err, OSError):
                raise _os_error(err, f"cannot write {path}") from err
            raise
        return "stored"

    def check(self) -> None:
        """Create `root` if needed and prove a file can be written there."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.root, prefix=".s3maptiler-check-")
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise _os_error(err, f"tile directory {self.root} is not writable") from err


# Local failures that waiting will not fix.
_PERMANENT_ERRNOS = frozenset(
    {errno.EROFS, errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ELOOP}
)


def _os_error(err: OSError, what: str) -> StoreError:
    reason = f"{what}: {err.strerror or err}"
    if isinstance(err, PermissionError):
        return StoreAccessDenied(reason)
    if err.errno in _PERMANENT_ERRNOS:
        return StoreError(reason, retryable=False)
    return StoreUnavailable(reason)  # EIO, ENOSPC, EMFILE, ...: may pass


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
