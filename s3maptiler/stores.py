"""Tile stores: where rendered tiles live and are read back.

Two implementations of one small interface:

- `S3Store`: a bucket reached through one long-lived boto3 client. A read is exactly
  one GetObject (never HEAD then GET); a write is one PutObject with the tile's
  Content-Type, optional Cache-Control and, where the SDK supports it,
  ``IfNoneMatch="*"`` so that instances behind a load balancer never overwrite
  each other's tiles.
- `LocalStore`: a directory, the embedded default when no bucket is configured.
  Writes are atomic (temporary file + ``os.replace``); content types are sniffed
  from the bytes so no sidecar files are needed.

Every failure is a `StoreError` whose ``retryable`` flag says whether trying again
could help. Retrying is the S3 client's job alone: botocore's "standard" mode with a
total attempt budget (`make_s3_client`), never a second loop on top. Which S3 errors
are worth another try is written once, in `is_retryable`, for the stores, bulk
uploads and purges alike.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from s3maptiler.tiles.formats import GENERIC_CONTENT_TYPES, etag_of, sniff_content_type

__all__ = [
    "RETRYABLE_CODES",
    "InvalidKeyError",
    "LocalStore",
    "S3Store",
    "StoreAccessDenied",
    "StoreError",
    "StoreNotFound",
    "StoreUnavailable",
    "StoredTile",
    "TileStore",
    "is_retryable",
    "make_s3_client",
    "supports_if_none_match",
]

log = logging.getLogger(__name__)

# S3 error codes that mean "try again later"; any 5xx and 429 are retryable too.
# Not RequestTimeTooSkewed: botocore does not correct the clock for S3, so a retry is
# signed with the same wrong time and refused again (fix the host's clock instead).
RETRYABLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
        "ConditionalRequestConflict",
    }
)
_MISSING_KEY_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_ACCESS_DENIED_CODES = frozenset({"AccessDenied", "403", "Forbidden", "AllAccessDisabled"})
# What S3 answers for a missing key when the role lacks s3:ListBucket. Other 403s
# (InvalidAccessKeyId, SignatureDoesNotMatch, RequestTimeTooSkewed) are real errors.
_MISSING_KEY_ACCESS_CODES = frozenset({"AccessDenied", "403", "Forbidden"})
_MISSING_BUCKET_CODES = frozenset({"NoSuchBucket"})


# --- errors -------------------------------------------------------------------------


class StoreError(Exception):
    """A store operation failed.

    ``retryable`` is True when the same call may succeed later (throttling, 5xx,
    connection trouble) and False when it cannot (access denied, no such bucket,
    a refused key).
    """

    retryable: bool = False
    attempts: int | None = None  # requests the S3 client made, retries included, if known

    def __init__(self, message: str, retryable: bool | None = None):
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable


class StoreUnavailable(StoreError):
    """The store could not answer now: throttled, 5xx, timeout, connection refused."""

    retryable = True


class StoreAccessDenied(StoreError):
    """The credentials may not do this (403, ACLs refused, no credentials at all)."""


class StoreNotFound(StoreError):
    """The bucket itself does not exist."""


class InvalidKeyError(StoreError):
    """A key that must never reach the store (absolute, ``..``, backslash, NUL, ...)."""


# --- interface ----------------------------------------------------------------------


@dataclass(frozen=True)
class StoredTile:
    """One tile read back from a store.

    ``etag`` is a quoted entity tag (S3's ETag header, or an MD5 of the bytes for
    local files) suitable for answering ``If-None-Match``; None when unknown.
    """

    data: bytes = field(repr=False)
    content_type: str
    etag: str | None


class TileStore(ABC):
    """Where tiles are cached. Implementations are safe to share between threads."""

    location: str
    """Human-readable place, e.g. ``s3://bucket`` or ``/var/cache/tiles``."""

    @abstractmethod
    def get(self, key: str) -> StoredTile | None:
        """The tile stored under `key`, or None when there is none (a miss)."""

    @abstractmethod
    def put(
        self,
        key: str,
        data: bytes,
        content_type: str,
        cache_control: str | None,
        redirect_to: str | None = None,
    ) -> str:
        """Store `data` under `key`; "stored", or "exists" when a tile was already there.

        `redirect_to` (another key holding the same bytes) lets a store that can,
        keep a tiny object that points there instead (S3 website redirects); others
        store `data`. Raises StoreError.
        """

    @abstractmethod
    def check(self) -> None:
        """Cheap reachability check for start-up and deep health; StoreError if not usable."""

    def read_problem(self) -> str | None:
        """A one-line reason when recent reads were refused (deep health), else None."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"


# --- S3 -----------------------------------------------------------------------------

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


def _error_code(err: ClientError) -> tuple[str, int]:
    code = str(err.response.get("Error", {}).get("Code", ""))
    status = int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return code, status


def is_retryable(err: BaseException) -> bool:
    """True when the same S3 call may succeed later: throttling, 5xx, lost connections.

    The one definition of a retryable S3 error (RequestTimeTooSkewed is not one)."""
    if isinstance(err, ClientError):
        code, status = _error_code(err)
        return code in RETRYABLE_CODES or status >= 500 or status == 429
    return isinstance(
        err, BotoConnectionError | HTTPClientError | IncompleteReadError | ConnectionClosedError
    )


def _client_error(err: ClientError, what: str) -> StoreError:
    """Translate a botocore ClientError into the matching StoreError subclass."""
    error = _classified_client_error(err, what)
    retries = err.response.get("ResponseMetadata", {}).get("RetryAttempts")
    error.attempts = None if retries is None else int(retries) + 1
    return error


def _classified_client_error(err: ClientError, what: str) -> StoreError:
    code, status = _error_code(err)
    message = err.response.get("Error", {}).get("Message") or code or "unknown error"
    text = f"{what}: {code or status} {message}".strip()
    if is_retryable(err):
        return StoreUnavailable(text)
    if code in _ACCESS_DENIED_CODES or status == 403:
        return StoreAccessDenied(text)
    if code == "AccessControlListNotSupported":
        return StoreAccessDenied(
            f"{what}: the bucket refuses ACLs (Object Ownership is BucketOwnerEnforced); "
            "configure no ACL and grant public read with a bucket policy"
        )
    if code in _MISSING_BUCKET_CODES:
        return StoreNotFound(text)
    return StoreError(text, retryable=False)


def _boto_error(err: BotoCoreError, what: str) -> StoreError:
    """Translate a botocore transport/configuration error into a StoreError."""
    if isinstance(err, NoCredentialsError | PartialCredentialsError):
        return StoreAccessDenied(f"{what}: no usable AWS credentials ({err})")
    if is_retryable(err):
        return StoreUnavailable(f"{what}: {err}")
    return StoreError(f"{what}: {err}", retryable=False)


def _configured_endpoint(endpoint_url: str | None) -> str | None:
    """The endpoint boto3 will use besides AWS's own: argument, then the environment."""
    if endpoint_url:
        return endpoint_url
    if os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
        return None
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def make_s3_client(
    max_pool_connections: int,
    endpoint_url: str | None = None,
    region_name: str | None = None,
    connect_timeout: float = 3.0,
    read_timeout: float = 10.0,
    max_attempts: int = 3,
) -> Any:
    """One boto3 S3 client for this process; create it after fork.

    `max_pool_connections` must cover every thread that uses the client (request
    threads + upload workers), or urllib3 discards connections. Timeouts are in
    seconds; `max_attempts` counts the first try (botocore "standard" retries).
    With `endpoint_url` None boto3 resolves ``AWS_ENDPOINT_URL_S3`` /
    ``AWS_ENDPOINT_URL`` itself. Whenever a non-AWS endpoint is in use (argument or
    environment) path-style addressing is used and checksums are only sent when
    required, which S3-compatible stores (MinIO, moto server, ...) accept.
    """
    s3_options: dict[str, str] = {}
    extra: dict[str, str] = {}
    if _configured_endpoint(endpoint_url):
        s3_options["addressing_style"] = "path"
        extra["request_checksum_calculation"] = "when_required"
        extra["response_checksum_validation"] = "when_required"
    config = Config(
        max_pool_connections=max_pool_connections,
        # total_max_attempts counts the first try (botocore's "max_attempts" key does not).
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        tcp_keepalive=True,
        s3=s3_options or None,
        **extra,
    )
    # A private Session: boto3's default session is not thread-safe to create clients from.
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=endpoint_url, region_name=region_name, config=config)


def supports_if_none_match(client: Any) -> bool:
    """True when this botocore build can send ``IfNoneMatch`` on PutObject (>= 1.35)."""
    shape = client.meta.service_model.operation_model("PutObject").input_shape
    return "IfNoneMatch" in shape.members


class S3Store(TileStore):
    """Tiles in an S3 bucket, through one shared (thread-safe) boto3 client.

    `acl`: a canned ACL sent with every PutObject, None (the default) sends none;
    buckets created since April 2023 refuse ACLs. `conditional`: send
    ``IfNoneMatch="*"`` so an existing tile is never overwritten. `metadata`: user
    metadata (``x-amz-meta-*``) written on every tile.
    """

    def __init__(
        self,
        bucket: str,
        client: Any,
        acl: str | None = None,
        conditional: bool = True,
        metadata: dict[str, str] | None = None,
        on_read_denied: Callable[[], None] | None = None,
    ):
        self.bucket = bucket
        self.on_read_denied = on_read_denied  # e.g. a metric's inc, called once per 403 read
        self._denials = _ReadDenials()
        self.client = client
        self.acl = acl
        self.metadata = dict(metadata) if metadata else None
        self.location = f"s3://{bucket}"
        # Checked once here, not per call: old SDKs would reject the parameter.
        self.conditional = conditional and supports_if_none_match(client)
        if conditional and not self.conditional:
            log.warning(
                "this botocore cannot send IfNoneMatch; %s writes are unconditional", self.location
            )

    def get(self, key: str) -> StoredTile | None:
        """One GetObject. None for NoSuchKey/404, and for 403: a missing key when the role
        lacks s3:ListBucket, or no s3:GetObject at all (counted, see read_problem)."""
        what = f"GetObject {self.location}/{key}"
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as err:
            code, _ = _error_code(err)
            if code in _MISSING_KEY_CODES:
                return None
            if code in _MISSING_KEY_ACCESS_CODES:
                self._read_denied(key)
                return None
            raise _client_error(err, what) from err
        except BotoCoreError as err:
            raise _boto_error(err, what) from err
        body = response["Body"]
        try:
            data = body.read()
        except BotoCoreError as err:
            raise _boto_error(err, what) from err
        finally:
            body.close()
        target = response.get("WebsiteRedirectLocation")
        if not data and target and target.startswith("/") and target[1:] != key:
            # An empty tile stored as a pointer to the layer's shared blank.
            return self.get(target[1:])
        content_type = response.get("ContentType") or ""
        if content_type in GENERIC_CONTENT_TYPES:
            # Objects uploaded by other tools often lack a type; the bytes know better.
            content_type = sniff_content_type(data) or "application/octet-stream"
        return StoredTile(data, content_type, response.get("ETag"))

    def _read_denied(self, key: str) -> None:
        """A 403 on GetObject: a missing key without s3:ListBucket, or no s3:GetObject.
        Either way a miss to render; counted, and logged at a bounded rate."""
        self._denials.record(self.location, key)
        if self.on_read_denied is not None:
            self.on_read_denied()

    def read_problem(self) -> str | None:
        """Why reads are refused, when a GetObject answered 403 in the last DENIED_RECENT s."""
        return self._denials.problem()

    def put(
        self,
        key: str,
        data: bytes,
        content_type: str,
        cache_control: str | None,
        redirect_to: str | None = None,
    ) -> str:
        """One PutObject; "exists" on 412 PreconditionFailed. A 409 conflict is retried once.

        With `redirect_to`, a zero-byte object whose WebsiteRedirectLocation sends S3
        website clients to that key (the layer's shared blank tile)."""
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "Body": b"" if redirect_to else data,
            "ContentType": content_type,
        }
        if redirect_to:
            params["WebsiteRedirectLocation"] = "/" + redirect_to
        if cache_control:
            params["CacheControl"] = cache_control
        if self.acl:
            params["ACL"] = self.acl
        if self.metadata:
            params["Metadata"] = self.metadata
        if self.conditional:
            params["IfNoneMatch"] = "*"
        what = f"PutObject {self.location}/{key}"
        outcome = self._put_object(params, what)
        if outcome == "conflict":  # a concurrent conditional write; S3 asks for one retry
            outcome = self._put_object(params, what)
        if outcome == "conflict":
            raise StoreUnavailable(f"{what}: ConditionalRequestConflict twice")
        return outcome

    def _put_object(self, params: dict[str, Any], what: str) -> str:
        try:
            self.client.put_object(**params)
        except ClientError as err:
            code, status = _error_code(err)
            if code == "PreconditionFailed" or status == 412:
                return "exists"  # another writer cached it first: success
            if code == "ConditionalRequestConflict":
                return "conflict"
            raise _client_error(err, what) from err
        except BotoCoreError as err:
            raise _boto_error(err, what) from err
        return "stored"

    def check(self) -> None:
        """HeadBucket; StoreError with a one-line reason when the bucket is not usable."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as err:
            code, status = _error_code(err)
            if code in {"404", "NoSuchBucket", "NotFound"}:
                raise StoreNotFound(f"bucket {self.bucket!r} does not exist") from err
            if code in _ACCESS_DENIED_CODES or status == 403:
                raise StoreAccessDenied(
                    f"access to bucket {self.bucket!r} denied (HeadBucket needs s3:ListBucket)"
                ) from err
            raise _client_error(err, f"HeadBucket {self.location}") from err
        except BotoCoreError as err:
            raise _boto_error(err, f"HeadBucket {self.location}") from err


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

    def put(
        self,
        key: str,
        data: bytes,
        content_type: str,
        cache_control: str | None,
        redirect_to: str | None = None,
    ) -> str:
        """Write atomically; "exists" when the file is already there (like IfNoneMatch).
        A directory has no redirects: `redirect_to` is ignored and the bytes written.

        Two writers racing on one key both write whole files and the last rename
        wins; for tiles of the same request that is harmless.
        """
        path = self.path_for(key)
        if path.exists():
            return "exists"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Same directory as the target, so os.replace is an atomic rename.
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        except OSError as err:
            raise _os_error(err, f"cannot write under {path.parent}") from err
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
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
