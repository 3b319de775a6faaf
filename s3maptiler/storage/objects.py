"""The data-path S3 client: GetObject, PutObject (plain and conditional), HeadBucket.

Why not botocore here: even tuned it spends 1.6-2.0 ms of CPU per call building,
validating, serialising and parsing through its service model; this client 0.4-0.5
ms (``bench/s3_client_cost.py``, figures in ``docs/benchmarks.md``). It builds one
HTTP request, signs it with AWS Signature Version 4 (:func:`sigv4_headers`, held
against botocore's signer by the tests), and sends it through one keep-alive urllib3
pool. boto3 stays the control plane (bucket set-up, policies, listing, purge, SQS,
the CLI's own calls).

What it takes from botocore: the credential chain (environment, profile, container
and EC2/EB instance roles with refresh), never re-implemented. What it sends is raw
S3 headers, so everything a tile object carries is expressible: ``Expires``,
``x-amz-website-redirect-location``, ``x-amz-acl``, ``x-amz-meta-*``,
``If-None-Match``/``If-Match``.

A bucket in another region than the configured one is followed the way botocore's
region redirector does (S3's 301 names it). Retrying is written once, in
:meth:`ObjectClient._request`: at most `max_attempts` requests per call for the
errors :func:`~s3maptiler.storage.s3.retryable_status` names and for lost
connections, with full-jitter backoff. Every request sent,
retries included, is reported to `on_request(kind)` (the S3 bill counts them all).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from s3maptiler.storage.s3 import (
    StoreAccessDenied,
    StoreError,
    StoreUnavailable,
    backoff_delay,
    classify,
    retryable_status,
)

__all__ = ["ObjectClient", "Reply", "as_objects", "from_boto", "sigv4_headers"]

_CODE_RE = re.compile(rb"<Code>([^<]*)</Code>")
_MESSAGE_RE = re.compile(rb"<Message>([^<]*)</Message>")
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True)
class Reply:
    """S3's answer to one call: status, headers (case-insensitive), body, and the
    requests it took."""

    status: int
    headers: Mapping[str, str]
    body: bytes = field(repr=False)
    attempts: int = 1

    @property
    def code(self) -> str:
        """S3's error code from the XML body, else the status (HEAD has no body)."""
        found = _CODE_RE.search(self.body) if self.status >= 300 else None
        return found.group(1).decode() if found else str(self.status)

    def error(self, what: str) -> StoreError:
        """This answer as the matching StoreError, with its attempts."""
        found = _MESSAGE_RE.search(self.body)
        message = found.group(1).decode(errors="replace") if found else ""
        error = classify(self.code, self.status, f"{what}: {self.code} {message}".strip(), what)
        error.attempts = self.attempts
        return error


def _signing_key(secret: str, day: str, region: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


_keys: dict[tuple[str, str, str], bytes] = {}  # one per secret, day and region
_keys_lock = threading.Lock()


def sigv4_headers(
    method: str,
    host: str,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    credentials: Any,
    region: str,
    now: datetime,
) -> dict[str, str]:
    """`headers` plus Host, X-Amz-Date, X-Amz-Content-Sha256, the session token and
    Authorization: AWS Signature Version 4 for S3, every header signed. `path` is
    already URI-encoded; there is no query string. `credentials` has ``access_key``,
    ``secret_key`` and ``token`` (botocore's frozen credentials)."""
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    day = stamp[:8]
    payload = hashlib.sha256(body).hexdigest() if body else _EMPTY_SHA256
    signed = {k.lower(): " ".join(str(v).split()) for k, v in headers.items()}
    signed.update({"host": host, "x-amz-date": stamp, "x-amz-content-sha256": payload})
    if credentials.token:
        signed["x-amz-security-token"] = credentials.token
    names = sorted(signed)
    canonical = "\n".join(
        [method, path, "", *(f"{n}:{signed[n]}" for n in names), "", ";".join(names), payload]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    cache_key = (credentials.secret_key, day, region)
    key = _keys.get(cache_key)
    if key is None:
        key = _signing_key(credentials.secret_key, day, region)
        with _keys_lock:
            if len(_keys) > 16:
                _keys.clear()
            _keys[cache_key] = key
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out = dict(headers)
    out.update({"Host": host, "X-Amz-Date": stamp, "X-Amz-Content-Sha256": payload})
    if credentials.token:
        out["X-Amz-Security-Token"] = credentials.token
    out["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return out


class ObjectClient:
    """One bucket-agnostic S3 object client per process, shared by its threads.

    `endpoint_url` None: AWS's regional endpoint, virtual-hosted style (path style for
    bucket names with dots, which TLS wildcards do not cover); any other endpoint is
    addressed path-style (MinIO, moto, LocalStack). Timeouts in seconds;
    `max_attempts` counts the first request; `backoff` is the first retry's longest
    wait (full jitter, doubling). `credentials`: botocore credentials (refreshable
    ones refresh themselves); `on_request(kind)` is called for every request sent.
    """

    def __init__(
        self,
        credentials: Any,
        region: str,
        endpoint_url: str | None = None,
        connect_timeout: float = 3.0,
        read_timeout: float = 10.0,
        max_attempts: int = 3,
        pool_size: int = 10,
        backoff: float = 0.1,
        on_request: Callable[[str], None] | None = None,
    ):
        self.credentials = credentials
        self.region = region
        # A bucket that S3 said lives elsewhere (301 with x-amz-bucket-region): asked
        # there from then on, as botocore's region redirector does.
        self._regions: dict[str, str] = {}
        self.endpoint_url = (endpoint_url or "").rstrip("/") or None
        self.max_attempts = max(1, max_attempts)
        self.backoff = backoff
        self.on_request = on_request
        # urllib3 itself, not requests: a third less CPU per call (bench/s3_client_cost.py);
        # keep-alive connections, one pool per host, never retried by urllib3.
        self.http = urllib3.PoolManager(
            num_pools=4,
            maxsize=max(1, pool_size),
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            retries=False,
            ca_certs=os.environ.get("AWS_CA_BUNDLE") or None,  # as botocore: else the system's
        )
        self._pools: dict[str, Any] = {}

    def _address(self, bucket: str, key: str, region: str) -> tuple[str, str, str]:
        """(base URL, host, encoded path) of `key` in `bucket` (key "" for the bucket)."""
        if self.endpoint_url is None and "." not in bucket:
            host = f"{bucket}.s3.{region}.amazonaws.com"
            return f"https://{host}", host, "/" + quote(key, safe="/~")
        base = self.endpoint_url or f"https://s3.{region}.amazonaws.com"
        host = base.split("://", 1)[1].split("/", 1)[0]
        prefix = base.split("://", 1)[1][len(host) :]
        return base[: len(base) - len(prefix)], host, quote(f"{prefix}/{bucket}/{key}", safe="/~")

    def _pool(self, base: str) -> Any:
        """The keep-alive connection pool of one scheme and host (the PoolManager's,
        looked up once: a quarter less CPU per call than going through the manager)."""
        pool = self._pools.get(base)
        if pool is None:
            pool = self._pools[base] = self.http.connection_from_url(base)
        return pool

    def get(self, bucket: str, key: str, kind: str = "get") -> Reply:
        """GetObject; any status is returned except retryable ones left after the budget,
        which are returned too (their ``error()`` is StoreUnavailable)."""
        return self._request("GET", bucket, key, {}, b"", kind)

    def put(
        self, bucket: str, key: str, body: bytes, headers: Mapping[str, str], kind: str = "put"
    ) -> Reply:
        """PutObject with raw S3 headers (Content-Type, If-None-Match, x-amz-*...)."""
        return self._request("PUT", bucket, key, headers, body, kind)

    def head_bucket(self, bucket: str) -> Reply:
        return self._request("HEAD", bucket, "", {}, b"", "head")

    def _request(
        self, method: str, bucket: str, key: str, headers: Mapping[str, str], body: bytes, kind: str
    ) -> Reply:
        """The one retry loop of the data path."""
        what = f"{method} s3://{bucket}/{key}"
        frozen = self.credentials.get_frozen_credentials() if self.credentials else None
        if frozen is None or not frozen.access_key:
            raise StoreAccessDenied(f"{what}: no usable AWS credentials")
        attempt = 0
        while True:
            attempt += 1
            region = self._regions.get(bucket, self.region)
            base, host, path = self._address(bucket, key, region)
            if self.on_request is not None:
                self.on_request(kind)
            now = datetime.now(UTC)
            signed = sigv4_headers(method, host, path, headers, body, frozen, region, now)
            try:
                response = self._pool(base).urlopen(
                    method, path, body=body if method == "PUT" else None, headers=signed,
                    redirect=False, retries=False,
                )  # fmt: skip
                reply = Reply(response.status, response.headers, response.data or b"", attempt)
            except HTTPError as exc:
                if attempt >= self.max_attempts:
                    error = StoreUnavailable(f"{what}: {_reason(exc)}")
                    error.attempts = attempt
                    raise error from exc
            else:
                elsewhere = reply.headers.get("x-amz-bucket-region") or region
                moved = reply.status in (301, 400) and elsewhere != region
                if moved and self.endpoint_url is None and bucket not in self._regions:
                    # Once per bucket, and not an attempt: a one-attempt read budget
                    # must still reach a bucket in another region, as botocore does.
                    self._regions[bucket] = elsewhere
                    attempt -= 1
                    continue  # at once: the same request, signed for its region
                if reply.status < 400 or not retryable_status(reply.code, reply.status):
                    return reply
                if attempt >= self.max_attempts:
                    return reply
            time.sleep(backoff_delay(attempt, self.backoff))


def _reason(exc: HTTPError) -> str:
    """A one-line reason for a transport error (timeouts and refusals named as such)."""
    if isinstance(exc, NewConnectionError):  # a subclass of ConnectTimeoutError
        return "connection refused"
    if isinstance(exc, ConnectTimeoutError):
        return "connect timeout"
    if isinstance(exc, ReadTimeoutError):
        return "read timeout"
    if isinstance(exc, ProtocolError):
        return "connection lost"
    return type(exc).__name__


def from_boto(client: Any, on_request: Callable[[str], None] | None = None) -> ObjectClient:
    """A data-path client with the endpoint, region, credentials, timeouts and attempt
    budget of a boto3 S3 client (the CLI's and the tests' clients)."""
    config = client.meta.config
    endpoint = client.meta.endpoint_url
    aws = re.match(r"https://s3[.-]([a-z0-9-]+\.)?amazonaws\.com", endpoint or "")
    retries = config.retries or {}
    return ObjectClient(
        client._request_signer._credentials,  # botocore keeps the chain's result here
        client.meta.region_name or "us-east-1",
        None if aws else endpoint,
        config.connect_timeout,
        config.read_timeout,
        int(retries.get("total_max_attempts") or 1 + retries.get("max_attempts", 2)),
        config.max_pool_connections,
        on_request=on_request,
    )


def as_objects(client: Any) -> ObjectClient:
    """`client` itself when it is an ObjectClient, else one made from a boto3 client."""
    return client if isinstance(client, ObjectClient) else from_boto(client)
