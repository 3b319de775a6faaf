"""The one S3 module: the client factory, the error classes, the one retry policy and
the one listing helper.

- :func:`make_s3_client`: one boto3 client per process, with explicit timeouts and
  botocore's "standard" retries with a total attempt budget: retrying is the
  client's job, never a second loop on top (the bulk tools' own ``--retries`` loop,
  :func:`with_retries`, which asks :func:`is_retryable` too, and one more PutObject
  after a 409 conflict in ``S3Store.write``, which botocore does not retry, are the
  exceptions);
- :func:`is_retryable`: which S3 errors are worth another try, written once;
- :class:`StoreError` and its subclasses: every failure of a store, S3 or local,
  with a ``retryable`` flag; :func:`client_error` and :func:`boto_error` translate
  botocore's errors into them;
- :func:`list_objects`: a prefix listed with ListObjectsV2, page by page, for
  uploads, purges and seeding alike.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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

__all__ = [
    "BulkReport",
    "LEASE_PREFIX",
    "RETRYABLE_CODES",
    "InvalidKeyError",
    "ListingFailed",
    "StoreAccessDenied",
    "StoreError",
    "StoreNotFound",
    "StoreSkipped",
    "StoreUnavailable",
    "backoff_delay",
    "boto_error",
    "classify",
    "client_error",
    "configured_endpoint",
    "describe_error",
    "is_retryable",
    "list_objects",
    "make_s3_client",
    "retryable_status",
    "skip_listing_timestamps",
    "supports_if_none_match",
    "with_retries",
]

log = logging.getLogger(__name__)

#: Where the fleet's metatile leases live in the bucket (service/leases.py); bucket
#: set-up expires them and grants the service's role access to them.
LEASE_PREFIX = "_leases/"

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


MISSING_KEY_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


ACCESS_DENIED_CODES = frozenset({"AccessDenied", "403", "Forbidden", "AllAccessDisabled"})


# What S3 answers for a missing key when the role lacks s3:ListBucket. Other 403s
# (InvalidAccessKeyId, SignatureDoesNotMatch, RequestTimeTooSkewed) are real errors.
MISSING_KEY_ACCESS_CODES = frozenset({"AccessDenied", "403", "Forbidden"})


MISSING_BUCKET_CODES = frozenset({"NoSuchBucket"})
# What HeadBucket (which has no body) and other bucket calls answer for a missing one.
BUCKET_NOT_FOUND_CODES = MISSING_BUCKET_CODES | {"404", "NotFound"}


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


class StoreSkipped(StoreUnavailable):
    """The store was not asked: its circuit breaker is open (service/storeguard.py)."""

    attempts = 0


def error_code(err: ClientError) -> tuple[str, int]:
    code = str(err.response.get("Error", {}).get("Code", ""))
    status = int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return code, status


def retryable_status(code: str, status: int) -> bool:
    """True when an S3 answer with this error code and HTTP status may succeed later:
    throttling, 5xx, 429. The one definition (RequestTimeTooSkewed is not one)."""
    return code in RETRYABLE_CODES or status >= 500 or status == 429


def is_retryable(err: BaseException) -> bool:
    """True when the same botocore call may succeed later: a retryable status
    (:func:`retryable_status`) or a lost connection."""
    if isinstance(err, ClientError):
        return retryable_status(*error_code(err))
    return isinstance(
        err, BotoConnectionError | HTTPClientError | IncompleteReadError | ConnectionClosedError
    )


def client_error(err: ClientError, what: str) -> StoreError:
    """Translate a botocore ClientError into the matching StoreError subclass."""
    error = _classified_client_error(err, what)
    retries = err.response.get("ResponseMetadata", {}).get("RetryAttempts")
    error.attempts = None if retries is None else int(retries) + 1
    return error


def _classified_client_error(err: ClientError, what: str) -> StoreError:
    code, status = error_code(err)
    message = err.response.get("Error", {}).get("Message") or code or "unknown error"
    return classify(code, status, f"{what}: {code or status} {message}".strip(), what)


def classify(code: str, status: int, text: str, what: str) -> StoreError:
    """The StoreError for an S3 error answer (code, HTTP status), written once for
    botocore's errors and the data-path client's answers; `text` is its message.
    A conditional-write conflict is worth another try but says S3 is up: not
    StoreUnavailable, so contention on a hot key never opens the store's breaker."""
    if code == "ConditionalRequestConflict":
        return StoreError(text, retryable=True)
    if retryable_status(code, status):
        return StoreUnavailable(text)
    if code in ACCESS_DENIED_CODES or status == 403:
        return StoreAccessDenied(text)
    if code == "AccessControlListNotSupported":
        return StoreAccessDenied(
            f"{what}: the bucket refuses ACLs (Object Ownership is BucketOwnerEnforced); "
            "configure no ACL and grant public read with a bucket policy"
        )
    if code in MISSING_BUCKET_CODES:
        return StoreNotFound(text)
    return StoreError(text, retryable=False)


def boto_error(err: BotoCoreError, what: str) -> StoreError:
    """Translate a botocore transport/configuration error into a StoreError."""
    if isinstance(err, NoCredentialsError | PartialCredentialsError):
        return StoreAccessDenied(f"{what}: no usable AWS credentials ({err})")
    if is_retryable(err):
        return StoreUnavailable(f"{what}: {err}")
    return StoreError(f"{what}: {err}", retryable=False)


def configured_endpoint(endpoint_url: str | None) -> str | None:
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
    if configured_endpoint(endpoint_url):
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


# Longest single backoff in seconds, however many attempts came before.
_MAX_BACKOFF = 20.0


_LAST_MODIFIED_RE = re.compile(rb"<LastModified>[^<]*</LastModified>")


def describe_error(err: BaseException) -> str:
    """A one-line reason for a botocore error: S3's code and message when it sent one."""
    if isinstance(err, ClientError):
        error = err.response.get("Error", {})
        return f"{error.get('Code', '?')} {error.get('Message') or ''}".strip()
    return str(err) or type(err).__name__


_NO_MTIME = "s3maptiler-no-mtime"


def _drop_last_modified(response_dict: dict, **_: Any) -> None:
    body = response_dict.get("body")
    if response_dict.get("status_code") == 200 and isinstance(body, bytes):
        response_dict["body"] = _LAST_MODIFIED_RE.sub(b"", body)


def skip_listing_timestamps(client: Any) -> None:
    """Make `client`'s ListObjectsV2 answers leave out ``LastModified``.

    Keys, sizes and ETags are all a bulk tool needs; botocore parses each timestamp
    with dateutil, which is the largest client cost of listing a big prefix (about a
    third of it). Affects every ListObjectsV2 call of this client.
    """
    client.meta.events.register(
        "before-parse.s3.ListObjectsV2", _drop_last_modified, unique_id=_NO_MTIME
    )


def backoff_delay(attempt: int, base: float) -> float:
    """Seconds to wait before retry `attempt` (1-based): full jitter up to base * 2**n."""
    return random.uniform(0, min(_MAX_BACKOFF, base * 2 ** (attempt - 1)))


def with_retries(call: Callable[[], Any], retries: int, backoff: float) -> Any:
    attempt = 0
    while True:
        try:
            return call()
        except (ClientError, BotoCoreError) as err:
            attempt += 1
            if attempt > retries or not is_retryable(err):
                raise
            delay = backoff_delay(attempt, backoff)
            log.debug("retry %d/%d in %.2fs after %s", attempt, retries, delay, describe_error(err))
            time.sleep(delay)


@dataclass
class BulkReport:
    """What a bulk tool (upload, purge) reports: tiles that failed, with a reason each,
    and the seconds the run took. Failures are counted, never raised."""

    failed: int = 0
    elapsed: float = 0.0  # seconds
    failures: list[tuple[str, str]] = field(default_factory=list)  # (key, reason)


class ListingFailed(StoreError):
    """A prefix could not be listed (no bucket, no access, S3 down)."""


def list_objects(
    client: Any,
    bucket: str,
    prefix: str,
    on_page: Callable[[int], None] | None = None,
    timestamps: bool = False,
) -> Iterator[dict[str, Any]]:
    """Every object under `prefix` (ListObjectsV2 pages of up to 1000 keys), each a
    dict with ``Key``, ``Size`` and ``ETag``, and ``LastModified`` with `timestamps`;
    `on_page(n)` after each page. Raises ListingFailed with a one-line reason. Without
    `timestamps` calls :func:`skip_listing_timestamps` (for the client: a run lists
    one way)."""
    if timestamps:
        client.meta.events.unregister("before-parse.s3.ListObjectsV2", unique_id=_NO_MTIME)
    else:
        skip_listing_timestamps(client)
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            contents = page.get("Contents", [])
            yield from contents
            if on_page is not None:
                on_page(len(contents))
    except (ClientError, BotoCoreError) as err:
        raise ListingFailed(f"cannot list s3://{bucket}/{prefix}: {describe_error(err)}") from err
