"""The WMS client: one pooled session per process, timeouts, retries, answer checks.

One :class:`WMSClient` per process sends the GetMaps that
:mod:`s3maptiler.render.getmap` spells. :meth:`WMSClient.get_map` returns only bytes
that are a complete image of the requested type and size
(:mod:`s3maptiler.render.answers`), or raises a
:class:`~s3maptiler.render.errors.WMSError` whose ``status`` (502, or 504 for a
timeout) and one-line ``reason`` the tile service can answer with. Nothing that
failed here may ever be cached. Times are in seconds.

It fetches a tile service's tiles too (:mod:`s3maptiler.render.tilesource`): any
source with a ``url``, ``image_format``, ``endpoint`` and ``credentials``
(:mod:`s3maptiler.render.credentials`, added to every attempt and redacted from every
reason). An upstream 401/403 is :class:`SourceAuthRefused` (502, never retried).

One module of about 500 lines on purpose: the session, the attempts and the reading
of one answer belong to one retry loop; the request, the errors and the judging of
answers are already their own modules.
"""

from __future__ import annotations

import functools
import http.client
import logging
import math
import os
import random
import re
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ReadTimeoutError

from s3maptiler.render.answers import MAX_ERROR_BODY, body_message, check_image, exception_report
from s3maptiler.render.credentials import redact
from s3maptiler.render.errors import (
    SourceAuthRefused,
    TileMissing,
    WMSBadImage,
    WMSConnectionError,
    WMSError,
    WMSExceptionReport,
    WMSHTTPStatusError,
    WMSNotImage,
    WMSTimeout,
    WMSUsageError,
)
from s3maptiler.render.freshness import HEADERS, parse_http_date
from s3maptiler.render.getmap import WMSSource, getmap_url
from s3maptiler.tiles.formats import sniff

__all__ = ["MAX_BODY_BYTES", "WMSAnswer", "WMSClient"]

log = logging.getLogger(__name__)

#: Upper bound of a GetMap answer in bytes; a 4096 px RGBA PNG of noise stays below it.
MAX_BODY_BYTES = 64 * 1024 * 1024


_USER_AGENT = "s3maptiler (WMS GetMap client)"


def _status_line(response: requests.Response) -> str:
    return f"HTTP {response.status_code} {response.reason or ''}".strip()


def _scrub(reason: str, source: WMSSource) -> str:
    """Remove the WMS URL and host, and every credential, from a message the WMS may
    have echoed them in: the one place an upstream's answer is turned into text."""
    parts = urlsplit(source.url)
    # The URL's own query values too: a key written into a tile template (?key=...).
    in_url = [value for _, value in parse_qsl(parts.query) if "{" not in value]
    if source.credentials is not None:
        in_url += source.credentials.secrets()
    reason = redact(reason, in_url)
    for secret in (source.url, source._base.rstrip("?&"), parts.netloc, parts.hostname):
        if secret and len(secret) > 3:
            reason = re.sub(re.escape(secret), "<wms>", reason, flags=re.IGNORECASE)
    return reason


def _with_credentials(url: str, source: WMSSource) -> tuple[str, dict]:
    """The URL with the source's query credentials, and the request's auth and headers.
    Read per attempt: a refreshed secret is used from the next request on."""
    credentials = source.credentials
    if credentials is None:
        return url, {}
    params = credentials.params()
    if params:
        joiner = "&" if "?" in url else "?"
        url += joiner + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params)
    return url, {"auth": credentials.auth(), "headers": credentials.headers() or None}


def _retry_after(response: requests.Response) -> float | None:
    """Seconds the WMS asked us to wait (Retry-After as seconds or HTTP date)."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        when = parse_http_date(value)
        if when is None:
            return None
        seconds = when - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _causes(exc: BaseException):
    """`exc` and everything it wraps (args, reason, cause, context), each once:
    requests and urllib3 bury the socket error several layers down."""
    seen: set[int] = set()
    pending: list[object] = [exc]
    while pending:
        current = pending.pop(0)
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending.extend(current.args[:1])
        pending.extend([getattr(current, "reason", None), current.__cause__, current.__context__])


def _root_cause(exc: BaseException) -> str:
    """A short, URL-free description of why a connection failed."""
    for current in _causes(exc):
        if isinstance(current, ConnectionRefusedError):
            return "connection refused"
        if isinstance(current, http.client.RemoteDisconnected):  # before its base class
            return "the WMS closed the connection without answering"
        if isinstance(current, ConnectionResetError):
            return "connection reset by the WMS"
        if isinstance(current, (ConnectionAbortedError, BrokenPipeError)):
            return "connection aborted"
        if isinstance(current, socket.gaierror):
            return "the WMS host name could not be resolved"
    return type(exc).__name__


def _is_read_timeout(exc: BaseException) -> bool:
    timeouts = (ReadTimeoutError, requests.exceptions.ReadTimeout, TimeoutError)
    return any(isinstance(current, timeouts) for current in _causes(exc))


class WMSAnswer(NamedTuple):
    """A GetMap's image and the headers that say how long it may be cached."""

    data: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class _Failure:
    """One failed attempt: the error to raise and whether trying again may help."""

    error: WMSError
    retryable: bool = False
    retry_after: float | None = None


class WMSClient:
    """Sends GetMaps over one pooled :class:`requests.Session` per process.

    Thread-safe: :meth:`get_map` is meant to be called from many request threads.
    ``connect_timeout`` and ``read_timeout`` are seconds and apply to every attempt;
    ``retries`` extra attempts are made on connection failures and 5xx answers only,
    after ``backoff * 2**attempt`` seconds (plus up to 25 % jitter) or the 503
    Retry-After, capped at ``max_retry_after`` seconds.  Answers larger than
    ``max_body_bytes`` are refused.
    """

    def __init__(
        self,
        pool_size: int = 16,
        connect_timeout: float = 3.05,
        read_timeout: float = 30.0,
        retries: int = 2,
        backoff: float = 0.25,
        max_retry_after: float = 5.0,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        if pool_size < 1 or retries < 0 or max_body_bytes < 1:
            raise WMSUsageError("pool_size and max_body_bytes must be >= 1, retries >= 0")
        if min(connect_timeout, read_timeout) <= 0 or min(backoff, max_retry_after) < 0:
            raise WMSUsageError("timeouts must be > 0 seconds, backoff and max_retry_after >= 0")
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.retries = retries
        self.backoff = backoff
        self.max_retry_after = max_retry_after
        self.max_body_bytes = max_body_bytes
        self._lock = threading.Lock()
        self._sent = 0
        self._session: requests.Session | None = None
        self._pid = 0
        self._sleep = time.sleep  # replaceable in tests: retries are then instant

    # ----------------------------------------------------------------- session

    def _new_session(self) -> requests.Session:
        session = requests.Session()
        # max_retries=0: urllib3 must not retry behind our back; get_map does it, once.
        adapter = HTTPAdapter(pool_maxsize=self.pool_size, pool_block=False, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers["User-Agent"] = _USER_AGENT
        # Proxy settings are read once per WMS URL (_proxies), not from the whole
        # environment and ~/.netrc on every request as requests does by default:
        # that was a third of the client's CPU per tile.
        session.trust_env = False
        return session

    @staticmethod
    @functools.lru_cache(maxsize=64)
    def _proxies(url: str) -> dict[str, str]:
        return requests.utils.get_environ_proxies(url)

    def _session_for_process(self) -> requests.Session:
        # Sockets must not cross fork(): a session made before gunicorn forked is
        # replaced (not closed: the parent still owns those connections).
        pid = os.getpid()
        with self._lock:
            if self._session is None or self._pid != pid:
                self._session = self._new_session()
                self._pid = pid
            return self._session

    def check_capabilities(self, source: WMSSource, timeout: float) -> None:
        """Raise WMSError unless the WMS answers GetCapabilities with 200 within
        `timeout` seconds (the deep health check; no retries)."""
        params = [("SERVICE", "WMS"), ("REQUEST", "GetCapabilities"), ("VERSION", source.version)]
        # The endpoint without its standard keys, as GetMaps use it (a URL copied with
        # REQUEST=GetMap in it asks for capabilities all the same).
        url, extra = _with_credentials(source._base + urlencode(params), source)
        try:
            response = self._session_for_process().get(
                url,
                timeout=(min(self.connect_timeout, timeout), timeout),
                proxies=self._proxies(source.url),
                **extra,
            )
        except requests.exceptions.Timeout:
            raise WMSTimeout(f"no GetCapabilities answer within {timeout:g} s") from None
        except requests.exceptions.RequestException as exc:
            raise WMSConnectionError(f"cannot reach the WMS: {type(exc).__name__}") from None
        response.close()
        if response.status_code in (401, 403):
            raise SourceAuthRefused(f"credentials refused (HTTP {response.status_code})")
        if response.status_code != 200:
            raise WMSHTTPStatusError(f"GetCapabilities answered HTTP {response.status_code}")

    def check_tile_url(self, source, url: str, timeout: float) -> None:
        """Raise WMSError unless a tile service answers `url` within `timeout` seconds
        with anything but a 5xx or a refusal (the deep health check of a tile source)."""
        url, extra = _with_credentials(url, source)
        try:
            response = self._session_for_process().get(
                url, timeout=(min(self.connect_timeout, timeout), timeout), **extra
            )
        except requests.exceptions.Timeout:
            raise WMSTimeout(f"no tile within {timeout:g} s") from None
        except requests.exceptions.RequestException as exc:
            reason = f"cannot reach the tile service: {type(exc).__name__}"
            raise WMSConnectionError(reason) from None
        response.close()
        if response.status_code in (401, 403):
            raise SourceAuthRefused(f"credentials refused (HTTP {response.status_code})")
        if response.status_code >= 500:
            raise WMSHTTPStatusError(f"tile service answered HTTP {response.status_code}")

    def close(self) -> None:
        """Close the pooled connections; a later :meth:`get_map` opens new ones."""
        with self._lock:
            session, self._session = self._session, None
        if session is not None and self._pid == os.getpid():
            session.close()

    def __enter__(self) -> WMSClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def budget(self) -> float:
        """Seconds one :meth:`get_map` can take at most: every attempt's connect and
        read timeouts plus the longest wait between attempts."""
        waits = sum(
            max(self.max_retry_after, self.backoff * 2**attempt * 1.25)
            for attempt in range(self.retries)
        )
        return (self.retries + 1) * (self.connect_timeout + self.read_timeout) + waits

    @property
    def requests_sent(self) -> int:
        """Number of HTTP requests sent to any WMS so far (every attempt counts)."""
        with self._lock:
            return self._sent

    # ----------------------------------------------------------------- GetMap

    def get_map(self, source: WMSSource, bbox: Sequence[float], width: int, height: int) -> bytes:
        """Image bytes for ``bbox`` (``left, bottom, right, top`` in source SRS units)
        at ``width`` × ``height`` pixels, validated by :func:`check_image`.

        Raises :class:`WMSTimeout` (504) when the WMS does not answer within
        ``read_timeout`` seconds, otherwise another :class:`WMSError` (502).
        """
        return self.get_map_answer(source, bbox, width, height).data

    def get_map_answer(
        self, source: WMSSource, bbox: Sequence[float], width: int, height: int
    ) -> WMSAnswer:
        """:meth:`get_map`'s image with the answer's caching headers (``Cache-Control``,
        ``Expires``, ``Last-Modified``, ``Date``, ``Age``: those it sent)."""
        url = getmap_url(source, bbox, width, height)
        what = f"GetMap {source.endpoint} LAYERS={source.layers} {width}x{height}"
        return self.fetch(source, url, width, height, what)

    def fetch(self, source, url: str, width: int, height: int, what: str) -> WMSAnswer:
        """An image of `width` x `height` pixels from `url` of `source` (a WMSSource or
        a tile source), with retries, credentials and the answer's caching headers;
        `what` names the request in logs (no query, no credentials)."""
        session = self._session_for_process()
        attempts = self.retries + 1
        for attempt in range(1, attempts + 1):
            started = time.monotonic()
            outcome = self._attempt(session, url, source, width, height)
            elapsed_ms = (time.monotonic() - started) * 1000.0
            if isinstance(outcome, WMSAnswer):
                log.debug(
                    "%s attempt %d/%d: %d bytes in %.0f ms",
                    what, attempt, attempts, len(outcome.data), elapsed_ms,
                )  # fmt: skip
                return outcome
            error = outcome.error
            error.set_reason(_scrub(error.reason, source))
            log.debug(
                "%s attempt %d/%d: %s (%s) in %.0f ms",
                what, attempt, attempts, error.kind, error.reason, elapsed_ms,
            )  # fmt: skip
            if not outcome.retryable or attempt == attempts:
                log.warning(
                    "%s failed after %d attempt(s): %s: %s",
                    what, attempt, error.kind, error.reason,
                )  # fmt: skip
                raise error
            self._sleep(self._delay(attempt - 1, outcome.retry_after))
        raise AssertionError("unreachable")  # pragma: no cover

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before attempt ``attempt + 2``."""
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        delay = self.backoff * 2**attempt
        return delay + random.uniform(0.0, delay / 4)  # jitter: callers do not retry in step

    def _count(self) -> None:
        with self._lock:
            self._sent += 1

    def _attempt(
        self, session: requests.Session, url: str, source: WMSSource, width: int, height: int
    ) -> WMSAnswer | _Failure:
        self._count()
        url, extra = _with_credentials(url, source)
        try:
            response = session.get(
                url,
                timeout=(self.connect_timeout, self.read_timeout),
                stream=True,
                proxies=self._proxies(source.url),
                **extra,
            )
        except requests.exceptions.ConnectTimeout:
            return _Failure(
                WMSConnectionError(
                    f"could not connect to the WMS within {self.connect_timeout:g} s"
                ),
                retryable=True,
            )
        except requests.exceptions.ReadTimeout:
            # Never retried: the WMS is already slow, a second wait helps nobody.
            return _Failure(WMSTimeout(f"WMS did not answer within {self.read_timeout:g} s"))
        except requests.exceptions.SSLError:
            return _Failure(WMSConnectionError("TLS connection to the WMS failed"))
        except requests.exceptions.ConnectionError as exc:
            return _Failure(
                WMSConnectionError(f"WMS connection failed: {_root_cause(exc)}"), retryable=True
            )
        except requests.exceptions.RequestException as exc:
            return _Failure(WMSConnectionError(f"WMS request failed: {type(exc).__name__}"))
        with response:
            judged = self._judge(response, source, width, height)
        if isinstance(judged, _Failure):
            return judged
        kept = {name: response.headers[name] for name in HEADERS if name in response.headers}
        return WMSAnswer(judged, kept)

    def _read_body(self, response: requests.Response, limit: int) -> bytes | _Failure:
        """The whole body, read until the server ends it; reading stops once it is
        longer than ``limit`` bytes (the caller then refuses or trims it)."""
        chunks: list[bytes] = []
        total = 0
        try:
            for chunk in response.iter_content(chunk_size=64 * 1024):
                chunks.append(chunk)
                total += len(chunk)
                if total > limit:
                    break
        except requests.exceptions.ConnectionError as exc:
            if _is_read_timeout(exc):
                return _Failure(WMSTimeout(f"WMS stalled for {self.read_timeout:g} s mid-answer"))
            return _Failure(
                WMSConnectionError(f"WMS connection broke mid-answer: {_root_cause(exc)}"),
                retryable=True,
            )
        except requests.exceptions.ChunkedEncodingError:
            return _Failure(
                WMSConnectionError(f"WMS connection broke mid-answer after {total} bytes"),
                retryable=True,
            )
        except requests.exceptions.RequestException as exc:
            return _Failure(WMSBadImage(f"WMS answer could not be read: {type(exc).__name__}"))
        return b"".join(chunks)

    def _judge(
        self, response: requests.Response, source: WMSSource, width: int, height: int
    ) -> bytes | _Failure:
        status = response.status_code
        if status in (401, 403):
            # Final: asking again with the same credentials gets the same answer.
            return _Failure(
                SourceAuthRefused(
                    f"the upstream refused the credentials (HTTP {status})", upstream_status=status
                )
            )
        if status in (204, 404) and getattr(source, "missing_ok", False):
            return _Failure(TileMissing(f"the tile service has no tile here (HTTP {status})"))
        content_type = response.headers.get("Content-Type", "")
        is_image_type = content_type.strip().lower().startswith("image/")
        declared = response.headers.get("Content-Length", "")
        if is_image_type and declared.isdigit() and int(declared) > self.max_body_bytes:
            # Refused before reading: the Node prototype's fixed buffer cut big tiles.
            return _Failure(
                WMSBadImage(
                    f"WMS answer of {int(declared)} bytes exceeds {self.max_body_bytes} bytes",
                    upstream_status=status,
                )
            )
        limit = self.max_body_bytes if is_image_type else MAX_ERROR_BODY
        body = self._read_body(response, limit)
        if isinstance(body, _Failure):
            return body
        if len(body) > limit:
            if is_image_type:
                return _Failure(
                    WMSBadImage(
                        f"WMS answer exceeds {self.max_body_bytes} bytes", upstream_status=status
                    )
                )
            body = body[:limit]  # enough to find the message

        # An exception report is final whatever the status: retrying repeats it.
        report = None if (is_image_type and sniff(body)) else exception_report(body)
        if report is not None:
            return _Failure(WMSExceptionReport(report, upstream_status=status))

        if status != 200:
            message = body_message(body, content_type)
            line = _status_line(response)
            if message and str(status) not in message:
                message = f"{line}: {message}"
            error = WMSHTTPStatusError(message or line, upstream_status=status)
            retry_after = _retry_after(response) if status == 503 else None
            return _Failure(error, retryable=status >= 500, retry_after=retry_after)

        if not is_image_type:
            message = body_message(body, content_type)
            kind_of = content_type.split(";", 1)[0].strip() or "no Content-Type"
            return _Failure(
                WMSNotImage(
                    message or f"WMS answered {kind_of} instead of an image", upstream_status=status
                )
            )

        try:
            check_image(body, source.image_format, width, height)
        except WMSBadImage as exc:
            exc.upstream_status = status
            return _Failure(exc)
        return body
