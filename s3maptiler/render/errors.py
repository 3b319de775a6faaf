"""What can go wrong with a GetMap: one error class per way, each with the HTTP status
the tile service answers (502, 504 for a timeout, 503 when the WMS is not asked) and
one line of reason for the client."""

from __future__ import annotations

__all__ = [
    "MAX_REASON",
    "WMSBadImage",
    "WMSConnectionError",
    "WMSError",
    "WMSExceptionReport",
    "WMSHTTPStatusError",
    "WMSNotImage",
    "WMSTimeout",
    "WMSUsageError",
    "SourceAuthRefused",
    "TileMissing",
    "one_line",
]

#: Longest ``reason`` handed to clients, in characters.
MAX_REASON = 300


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
        self.reason = one_line(reason) or "WMS request failed"
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


class SourceAuthRefused(WMSError):
    """The upstream answered 401 or 403: it refused our credentials (or wants some)."""

    kind = "auth"


class TileMissing(WMSError):
    """A tile service has no tile here (HTTP 404 or 204, as tile services answer
    outside their data): a blank tile or a 404, as the layer says."""

    status = 404
    kind = "no_tile"


class WMSUsageError(WMSError, ValueError):
    """Invalid configuration or arguments: a fault of the caller, not of the WMS."""

    status = 500
    kind = "usage"


def one_line(text: str, limit: int = MAX_REASON) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
