"""WMS GetMap client: URL building, pooled session, timeouts, retries, image validation.

One :class:`WMSSource` per layer describes the upstream; one :class:`WMSClient` per
process sends the GetMaps.  :meth:`WMSClient.get_map` returns only bytes that are a
complete image of the requested type and size, or raises a :class:`WMSError` whose
``status`` (502, or 504 for a timeout) and one-line ``reason`` the tile service can
answer with.  Nothing that failed here may ever be cached.

Units: bounding boxes are in the units of the source's SRS (meters for EPSG:3857,
decimal degrees for geographic CRSs), image sizes in pixels, times in seconds.

>>> src = WMSSource("http://127.0.0.1/mapserv?map=ROADS", layers="roads")
>>> getmap_url(src, (0.0, 0.0, 1000.5, 1000.5), 256, 256)[:62]
'http://127.0.0.1/mapserv?map=ROADS&SERVICE=WMS&VERSION=1.1.1&R'
"""

from __future__ import annotations

import email.utils
import functools
import html.parser
import http.client
import logging
import math
import os
import random
import re
import socket
import struct
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote, unquote_plus, urlencode, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ReadTimeoutError

from s3maptiler.tiles.formats import families_of, family_label, sniff
from s3maptiler.tiles.srs import crs

__all__ = [
    "MAX_BODY_BYTES",
    "WMSBadImage",
    "WMSClient",
    "WMSConnectionError",
    "WMSError",
    "WMSExceptionReport",
    "WMSHTTPStatusError",
    "WMSNotImage",
    "WMSSource",
    "WMSTimeout",
    "WMSUsageError",
    "bbox_text",
    "check_image",
    "getmap_params",
    "getmap_url",
]

log = logging.getLogger(__name__)

#: Upper bound of a GetMap answer in bytes; a 4096 px RGBA PNG of noise stays below it.
MAX_BODY_BYTES = 64 * 1024 * 1024
#: Longest ``reason`` handed to clients, in characters.
MAX_REASON = 300
#: Non-image answers are read only this far: they serve to find a message.
_MAX_ERROR_BODY = 1024 * 1024

#: Keys this module owns; configuration may not set them (compared upper-case).
STANDARD_KEYS = frozenset(
    {
        "SERVICE",
        "VERSION",
        "REQUEST",
        "LAYERS",
        "STYLES",
        "SRS",
        "CRS",
        "BBOX",
        "WIDTH",
        "HEIGHT",
        "FORMAT",
        "TRANSPARENT",
        "BGCOLOR",
        "EXCEPTIONS",
    }
)
VERSIONS = ("1.1.1", "1.3.0")
_EXCEPTIONS_FORMAT = {"1.1.1": "application/vnd.ogc.se_xml", "1.3.0": "XML"}

_METER_DECIMALS = 9
_DEGREE_DECIMALS = 10
# BBOX commas and the colon of "EPSG:3857" are legal in a query; keeping them readable
# makes logged and captured URLs comparable with what people type.
_QUERY_SAFE = ",:/"
_USER_AGENT = "s3maptiler (WMS GetMap client)"


# --------------------------------------------------------------------------- errors


class WMSError(Exception):
    """A GetMap that produced no usable image.

    ``status`` is the HTTP status the tile service should answer (502, or 504 for a
    timeout), ``kind`` one of ``timeout``, ``connection``, ``http_status``,
    ``exception_report``, ``not_image``, ``bad_image``, and ``reason`` one line of at
    most 300 characters for the client: the WMS's own message where there is one,
    never the WMS URL.  ``upstream_status`` is the WMS's HTTP status, if it answered.
    """

    status: int = 502
    kind: str = "error"

    def __init__(self, reason: str, *, upstream_status: int | None = None) -> None:
        super().__init__()
        self.upstream_status = upstream_status
        self.set_reason(reason)

    def set_reason(self, reason: str) -> None:
        """Replace the reason, reduced to one line of at most 300 characters."""
        self.reason = _one_line(reason) or "WMS request failed"
        self.args = (self.reason,)


class WMSTimeout(WMSError):
    """The WMS did not answer within the read timeout (never retried)."""

    status = 504
    kind = "timeout"


class WMSConnectionError(WMSError):
    """No connection, or it broke before the answer was complete."""

    kind = "connection"


class WMSHTTPStatusError(WMSError):
    """The WMS answered with a status other than 200 and no exception report."""

    kind = "http_status"


class WMSExceptionReport(WMSError):
    """The WMS answered with an OGC ServiceExceptionReport / OWS ExceptionReport."""

    kind = "exception_report"


class WMSNotImage(WMSError):
    """The WMS answered 200 with a Content-Type that is not ``image/*``."""

    kind = "not_image"


class WMSBadImage(WMSError):
    """The bytes are not a complete image of the requested type and size."""

    kind = "bad_image"


class WMSUsageError(WMSError, ValueError):
    """Invalid configuration or arguments: a fault of the caller, not of the WMS."""

    status = 500
    kind = "usage"


# --------------------------------------------------------------------------- source


@dataclass(frozen=True)
class WMSSource:
    """One layer's upstream WMS, built once at start-up from configuration.

    ``url`` is opaque and may already hold a query (``…/mapserv?map=ROADS``); standard
    GetMap keys found in it are dropped when requests are built (ours win).
    ``extra_params`` are fixed vendor parameters sent after the standard ones; a
    standard key among them is a :class:`WMSUsageError`.
    """

    url: str
    layers: str
    styles: str = ""
    version: str = "1.1.1"
    srs: str = "EPSG:3857"
    image_format: str = "image/png"
    transparent: bool = False
    bgcolor: str | None = None
    extra_params: tuple[tuple[str, str], ...] = ()
    _base: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise WMSUsageError(f"WMS url must be an http(s) URL with a host, got {self.url!r}")
        if parts.fragment:
            raise WMSUsageError("WMS url must not contain a '#fragment'")
        if not self.layers.strip():
            raise WMSUsageError("WMS layers must not be empty")
        if self.version not in VERSIONS:
            raise WMSUsageError(
                f"WMS version must be one of {', '.join(VERSIONS)}, got {self.version!r}"
            )
        if not self.srs.strip():
            raise WMSUsageError("WMS srs must not be empty")
        if not self.image_format.lower().startswith("image/"):
            raise WMSUsageError(f"WMS format must be an image/* type, got {self.image_format!r}")
        if self.bgcolor is not None and not re.fullmatch(r"0x[0-9A-Fa-f]{6}", self.bgcolor):
            raise WMSUsageError(f"WMS bgcolor must look like 0xRRGGBB, got {self.bgcolor!r}")
        object.__setattr__(self, "extra_params", _checked_extra(self.extra_params))
        object.__setattr__(self, "_base", _endpoint_base(self.url))

    @property
    def endpoint(self) -> str:
        """Scheme, host and path of the WMS: safe to log (no query, no credentials)."""
        return _loggable(self.url)


def _checked_extra(
    extra: Iterable[tuple[str, str]] | dict[str, str],
) -> tuple[tuple[str, str], ...]:
    pairs = tuple(extra.items()) if isinstance(extra, dict) else tuple(extra)
    seen: set[str] = set()
    out = []
    for pair in pairs:
        if len(pair) != 2:
            raise WMSUsageError(f"WMS extra parameter must be a (key, value) pair, got {pair!r}")
        key, value = str(pair[0]).strip(), str(pair[1])
        if not key:
            raise WMSUsageError("WMS extra parameter with an empty key")
        if key.upper() in STANDARD_KEYS:
            raise WMSUsageError(
                f"WMS extra parameter {key!r} is a standard GetMap key, set it by its own setting"
            )
        if key.upper() in seen:
            raise WMSUsageError(f"WMS extra parameter {key!r} is given twice")
        seen.add(key.upper())
        out.append((key, value))
    return tuple(out)


def _endpoint_base(url: str) -> str:
    """The URL with standard keys removed from its query, ending in '?' or '&'."""
    path, _, query = url.partition("?")
    kept = []
    for part in query.split("&"):
        if not part:
            continue
        key = unquote_plus(part.split("=", 1)[0]).strip().upper()
        if key in STANDARD_KEYS:
            log.warning(
                "WMS url %s: dropping %s from its query, it is set per request", _loggable(url), key
            )
            continue
        kept.append(part)  # verbatim: the endpoint is opaque, do not re-encode it
    return path + "?" + "".join(p + "&" for p in kept)


def _loggable(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


# --------------------------------------------------------------------------- URL building


def _fixed(value: float, decimals: int) -> str:
    """Fixed-point text: never an exponent, never '-0', no trailing zeros."""
    text = f"{value + 0.0:.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _checked_bbox(bbox: Sequence[float]) -> tuple[float, float, float, float]:
    try:
        left, bottom, right, top = (float(v) for v in bbox)
    except (TypeError, ValueError) as exc:
        raise WMSUsageError(
            f"bbox must be four numbers (left, bottom, right, top), got {bbox!r}"
        ) from exc
    if not all(math.isfinite(v) for v in (left, bottom, right, top)):
        raise WMSUsageError(f"bbox must be finite, got {bbox!r}")
    if not (left < right and bottom < top):
        raise WMSUsageError(f"bbox must have left < right and bottom < top, got {bbox!r}")
    return left, bottom, right, top


def bbox_text(bbox: Sequence[float], srs: str, version: str) -> str:
    """The BBOX parameter for ``bbox = (left, bottom, right, top)`` in ``srs`` units.

    Fixed decimals, never an exponent and never ``-0``: 9 decimals for meters (and
    other projected units), 10 for decimal degrees.  For WMS 1.3.0 and a geographic
    EPSG CRS (4326, 4258, 4269, …) the axes are swapped to ``minlat,minlon,maxlat,maxlon``;
    CRS:84 and projected CRSs are never swapped.

    >>> bbox_text((-180.0, -90.0, 0.0, 4.291534423828125e-05), "EPSG:4326", "1.3.0")
    '-90,-180,0.0000429153,0'
    >>> bbox_text((-20037508.342789244, 0.0, 0.0, 20037508.342789244), "EPSG:3857", "1.3.0")
    '-20037508.342789244,0,0,20037508.342789244'
    """
    left, bottom, right, top = _checked_bbox(bbox)
    system = crs(srs)
    decimals = _DEGREE_DECIMALS if system.units == "degrees" else _METER_DECIMALS
    # Only WMS 1.3.0 follows the EPSG axis order; CRS:84 is lon/lat by definition.
    swap = version == "1.3.0" and system.lat_first
    order = (bottom, left, top, right) if swap else (left, bottom, right, top)
    return ",".join(_fixed(v, decimals) for v in order)


def _checked_size(width: int, height: int) -> None:
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise WMSUsageError(
                f"{name} must be a positive integer number of pixels, got {value!r}"
            )


def getmap_params(
    source: WMSSource, bbox: Sequence[float], width: int, height: int
) -> list[tuple[str, str]]:
    """GetMap query parameters, in order, for ``bbox`` (source SRS units) and a
    ``width`` × ``height`` pixel image.  STYLES is always present, EXCEPTIONS is
    always XML (never INIMAGE/BLANK, which return error pixels as a valid image)."""
    _checked_size(width, height)
    params = [
        ("SERVICE", "WMS"),
        ("VERSION", source.version),
        ("REQUEST", "GetMap"),
        ("LAYERS", source.layers),
        ("STYLES", source.styles),
        ("CRS" if source.version == "1.3.0" else "SRS", source.srs),
        ("BBOX", bbox_text(bbox, source.srs, source.version)),
        ("WIDTH", str(width)),
        ("HEIGHT", str(height)),
        ("FORMAT", source.image_format),
        ("TRANSPARENT", "TRUE" if source.transparent else "FALSE"),
    ]
    if source.bgcolor is not None:
        params.append(("BGCOLOR", source.bgcolor))
    params.append(("EXCEPTIONS", _EXCEPTIONS_FORMAT[source.version]))
    params.extend(source.extra_params)
    return params


def getmap_url(source: WMSSource, bbox: Sequence[float], width: int, height: int) -> str:
    """The complete GetMap URL: the source URL (its own query kept) plus
    :func:`getmap_params` percent-encoded."""
    query = "&".join(
        f"{quote(k, safe=_QUERY_SAFE)}={quote(v, safe=_QUERY_SAFE)}"
        for k, v in getmap_params(source, bbox, width, height)
    )
    return source._base + query


# --------------------------------------------------------------------------- image checks

# SOF markers whose frames browsers and Pillow decode: baseline, extended, progressive.
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2})
_JPEG_OTHER_SOF = frozenset({0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


def _wrong_size(label: str, got: tuple[int, int], width: int, height: int) -> WMSBadImage:
    return WMSBadImage(f"WMS sent a {got[0]}x{got[1]} {label}, expected {width}x{height}")


def _check_png(data: bytes, width: int, height: int) -> None:
    # IHDR must be the first chunk: length 13 at offset 8, width/height at 16/20.
    if len(data) < 33 or data[8:16] != b"\x00\x00\x00\x0dIHDR":
        raise WMSBadImage("WMS sent a PNG without a valid IHDR header")
    size = struct.unpack_from(">II", data, 16)
    if size != (width, height):
        raise _wrong_size("PNG", size, width, height)
    # Walk the chunks: every declared length must fit, and IEND must be reached.
    pos, end, has_data = 8, len(data), False
    while True:
        if pos + 12 > end:
            raise WMSBadImage(f"WMS sent a truncated PNG ({end} bytes, no IEND chunk)")
        length, ctype = struct.unpack_from(">I4s", data, pos)
        if length > 0x7FFFFFFF or not ctype.isalpha():
            raise WMSBadImage(f"WMS sent a corrupt PNG (bad chunk at byte {pos})")
        pos += 12 + length
        if pos > end:
            raise WMSBadImage(
                f"WMS sent a truncated PNG ({end} bytes, chunk {ctype.decode()} needs {pos})"
            )
        if ctype == b"IDAT":
            has_data = True
        elif ctype == b"IEND":
            break
    if not has_data:
        raise WMSBadImage("WMS sent a PNG without image data (no IDAT chunk)")


def _check_jpeg(data: bytes, width: int, height: int) -> None:
    end = len(data)
    if not data.endswith(b"\xff\xd9"):
        raise WMSBadImage(f"WMS sent a truncated JPEG ({end} bytes, no end-of-image marker)")
    # Walk the header segments up to the first scan; the entropy-coded data after it
    # is not parsed (that would be a decode), the final EOI vouches for its end.
    pos, size = 2, None
    while True:
        if pos + 4 > end:
            raise WMSBadImage(f"WMS sent a truncated JPEG ({end} bytes, no scan)")
        if data[pos] != 0xFF:
            raise WMSBadImage(f"WMS sent a corrupt JPEG (no marker at byte {pos})")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        pos += 2
        if marker in _JPEG_STANDALONE:
            continue
        if marker == 0xD9:
            raise WMSBadImage("WMS sent a JPEG without image data")
        (length,) = struct.unpack_from(">H", data, pos)
        if length < 2 or pos + length > end:
            raise WMSBadImage(f"WMS sent a truncated JPEG (segment at byte {pos - 2})")
        if marker in _JPEG_SOF:
            if length < 8:
                raise WMSBadImage("WMS sent a corrupt JPEG (short frame header)")
            rows, cols = struct.unpack_from(">HH", data, pos + 3)
            size = (cols, rows)
        elif marker in _JPEG_OTHER_SOF:
            raise WMSBadImage(f"WMS sent a JPEG with an unsupported coding (SOF 0x{marker:02X})")
        elif marker == 0xDA:
            break
        pos += length
    if size is None:
        raise WMSBadImage("WMS sent a JPEG without a frame header")
    if size != (width, height):
        raise _wrong_size("JPEG", size, width, height)


def _check_gif(data: bytes, width: int, height: int) -> None:
    if len(data) < 14:
        raise WMSBadImage("WMS sent a truncated GIF")
    size = struct.unpack_from("<HH", data, 6)
    if size != (width, height):
        raise _wrong_size("GIF", size, width, height)
    if not data.endswith(b"\x3b"):
        raise WMSBadImage(f"WMS sent a truncated GIF ({len(data)} bytes, no trailer)")


def _check_webp(data: bytes, width: int, height: int) -> None:
    if len(data) < 12:
        raise WMSBadImage("WMS sent a truncated WebP")
    (riff_size,) = struct.unpack_from("<I", data, 4)
    if len(data) < riff_size + 8:
        raise WMSBadImage(f"WMS sent a truncated WebP ({len(data)} of {riff_size + 8} bytes)")


def _check_magic_only(data: bytes, width: int, height: int) -> None:
    return None


_CHECKS = {
    "png": _check_png,
    "jpeg": _check_jpeg,
    "gif": _check_gif,
    "webp": _check_webp,
    "tiff": _check_magic_only,
}


def check_image(data: bytes, image_format: str, width: int, height: int) -> None:
    """Raise :class:`WMSBadImage` unless ``data`` is a complete image of the family of
    ``image_format`` (a WMS FORMAT such as ``image/png; mode=8bit``) and ``width`` ×
    ``height`` pixels.

    Structural and cheap, no decode: PNG signature, IHDR size and a chunk walk to IEND;
    JPEG SOI, SOF0/1/2 size and a final EOI; GIF screen size and trailer; WebP RIFF
    length; TIFF magic only.  Formats this module does not know accept any of those.
    """
    if not data:
        raise WMSBadImage("WMS sent an empty body instead of an image")
    expected = families_of(image_format)
    got = sniff(data)
    if got is None:
        wanted = "/".join(family_label(f) for f in expected)
        raise WMSBadImage(f"WMS sent bytes that are not a {wanted} image")
    if got not in expected:
        raise WMSBadImage(f"WMS sent a {family_label(got)} image where {image_format} was asked")
    _CHECKS[got](data, width, height)


# --------------------------------------------------------------------------- error texts


def _one_line(text: str, limit: int = MAX_REASON) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _charset(content_type: str) -> str:
    match = re.search(r"charset=[\"']?([\w.:-]+)", content_type, re.IGNORECASE)
    return match.group(1) if match else "utf-8"


def _decode(body: bytes, content_type: str) -> str:
    head = body[:65536]
    try:
        return head.decode(_charset(content_type), errors="replace")
    except LookupError:
        return head.decode("utf-8", errors="replace")


def _local_name(tag: object) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _exception_messages(root: ET.Element) -> list[str]:
    messages = []
    for element in root.iter():
        name = _local_name(element.tag)
        if name == "ServiceException":  # WMS 1.1.1 and 1.3.0 (ogc namespace)
            code, text = element.get("code"), "".join(element.itertext())
        elif name == "Exception":  # OWS 1.x ExceptionReport
            code = element.get("exceptionCode")
            text = " ".join(
                "".join(child.itertext())
                for child in element
                if _local_name(child.tag) == "ExceptionText"
            )
        else:
            continue
        text = " ".join(text.split())
        messages.append(f"{code}: {text}" if code and text else text or code or "")
    return [m for m in messages if m]


_EXCEPTION_RE = re.compile(
    r"<(?:\w+:)?(?:ServiceException|ExceptionText)\b[^>]*>(.*?)</(?:\w+:)?(?:ServiceException|ExceptionText)>",
    re.DOTALL,
)
_REPORT_ROOTS = ("ServiceExceptionReport", "ExceptionReport")


def _exception_report(body: bytes) -> str | None:
    """The messages of an OGC exception report, or None if ``body`` is not one."""
    head = body[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head.startswith(b"<") or not any(
        r.encode() in body[:_MAX_ERROR_BODY] for r in _REPORT_ROOTS
    ):
        return None
    try:
        root = ET.fromstring(body[:_MAX_ERROR_BODY])
    except ET.ParseError:
        # Malformed XML (or cut at the read limit): salvage the message texts.
        text = body[:_MAX_ERROR_BODY].decode("utf-8", errors="replace")
        found = [" ".join(re.sub(r"<[^>]+>", " ", m).split()) for m in _EXCEPTION_RE.findall(text)]
        found = [f for f in found if f]
        return "; ".join(found) if found else None
    messages = _exception_messages(root)
    if messages:
        return "; ".join(messages)
    if _local_name(root.tag) in _REPORT_ROOTS:
        return "WMS sent an exception report without a message"
    return None


class _HTMLText(html.parser.HTMLParser):
    """Collects the <title> and the visible text of an HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title: list[str] = []
        self.text: list[str] = []
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        (self.title if self._in_title else self.text).append(data)


def _looks_like_html(text: str, content_type: str) -> bool:
    if "html" in content_type.lower():
        return True
    return re.match(r"\s*(<!doctype\s+html|<html\b)", text, re.IGNORECASE) is not None


def _html_message(text: str) -> str:
    parser = _HTMLText()
    try:
        parser.feed(text)
        parser.close()
    except Exception:  # noqa: BLE001 - a broken error page must not hide the error itself
        return ""
    return _one_line(" ".join(parser.title)) or _one_line(" ".join(parser.text))


def _body_message(body: bytes, content_type: str) -> str:
    """The WMS's own words from an HTML or plain-text answer, or ''."""
    text = _decode(body, content_type)
    if _looks_like_html(text, content_type):
        return _html_message(text)
    if content_type.lower().startswith("text/plain"):
        return _one_line(text)
    return ""


def _status_line(response: requests.Response) -> str:
    return f"HTTP {response.status_code} {response.reason or ''}".strip()


def _scrub(reason: str, source: WMSSource) -> str:
    """Remove the WMS URL and host from a message the WMS may have echoed them in."""
    parts = urlsplit(source.url)
    for secret in (source.url, source._base.rstrip("?&"), parts.netloc, parts.hostname):
        if secret and len(secret) > 3:
            reason = re.sub(re.escape(secret), "<wms>", reason, flags=re.IGNORECASE)
    return reason


def _retry_after(response: requests.Response) -> float | None:
    """Seconds the WMS asked us to wait (Retry-After as seconds or HTTP date)."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
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
        url = source.url + ("&" if "?" in source.url else "?") + urlencode(params)
        try:
            response = self._session_for_process().get(
                url,
                timeout=(min(self.connect_timeout, timeout), timeout),
                proxies=self._proxies(source.url),
            )
        except requests.exceptions.Timeout:
            raise WMSTimeout(f"no GetCapabilities answer within {timeout:g} s") from None
        except requests.exceptions.RequestException as exc:
            raise WMSConnectionError(f"cannot reach the WMS: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise WMSHTTPStatusError(f"GetCapabilities answered HTTP {response.status_code}")

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
        url = getmap_url(source, bbox, width, height)
        session = self._session_for_process()
        what = f"{source.endpoint} LAYERS={source.layers} {width}x{height}"
        attempts = self.retries + 1
        for attempt in range(1, attempts + 1):
            started = time.monotonic()
            outcome = self._attempt(session, url, source, width, height)
            elapsed_ms = (time.monotonic() - started) * 1000.0
            if isinstance(outcome, bytes):
                log.debug(
                    "GetMap %s attempt %d/%d: %d bytes in %.0f ms",
                    what, attempt, attempts, len(outcome), elapsed_ms,
                )  # fmt: skip
                return outcome
            error = outcome.error
            error.set_reason(_scrub(error.reason, source))
            log.debug(
                "GetMap %s attempt %d/%d: %s (%s) in %.0f ms",
                what, attempt, attempts, error.kind, error.reason, elapsed_ms,
            )  # fmt: skip
            if not outcome.retryable or attempt == attempts:
                log.warning(
                    "GetMap %s failed after %d attempt(s): %s: %s",
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
    ) -> bytes | _Failure:
        self._count()
        try:
            response = session.get(
                url,
                timeout=(self.connect_timeout, self.read_timeout),
                stream=True,
                proxies=self._proxies(source.url),
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
            return self._judge(response, source, width, height)

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
        limit = self.max_body_bytes if is_image_type else _MAX_ERROR_BODY
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
        report = None if (is_image_type and sniff(body)) else _exception_report(body)
        if report is not None:
            return _Failure(WMSExceptionReport(report, upstream_status=status))

        if status != 200:
            message = _body_message(body, content_type)
            line = _status_line(response)
            if message and str(status) not in message:
                message = f"{line}: {message}"
            error = WMSHTTPStatusError(message or line, upstream_status=status)
            retry_after = _retry_after(response) if status == 503 else None
            return _Failure(error, retryable=status >= 500, retry_after=retry_after)

        if not is_image_type:
            message = _body_message(body, content_type)
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
