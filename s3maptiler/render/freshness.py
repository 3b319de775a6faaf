"""Tile lifetimes (``cache_from_wms``): how long a tile may be cached, read from its
WMS's own answer; what it is stored with; what it is answered with; when a stored
one has expired. The one module of the concept, for the WMS client, the tile path,
seeding and the upload recipe alike.

A layer with ``cache_from_wms`` stores and answers its tiles with a lifetime derived
from the GetMap answer's headers instead of its fixed ``cache_control``. The rules
are RFC 9111's, for a shared cache (the bucket and the service are one), applied to
the answer when it arrives:

1. ``Cache-Control: no-store`` or ``private``: a shared cache must not keep it. The
   tiles are not stored; the response passes the WMS's ``Cache-Control`` on.
2. ``no-cache``: it may be kept but must be validated before each use, which a cache
   of rendered tiles cannot do: lifetime 0 (stored, stale at once; the service's own
   read renders it again).
3. ``s-maxage`` (meant for shared caches), else ``max-age``: that many seconds. Both
   win over ``Expires`` (RFC 9111 section 5.3).
4. ``Expires``: its distance from the answer's ``Date`` (the WMS's own clock on both
   sides, so a skewed clock does not matter); one that is not a date (``0``) means
   already expired: 0.
5. ``Last-Modified`` alone: a heuristic lifetime, a tenth of the time since the image
   last changed (RFC 9111 section 4.2.2's customary fraction, what browsers and Squid
   use), at most ``heuristic_cap`` seconds: the layer's own ``max-age``, so that a
   guess never outlives what the operator configured for the layer.
6. None of these: no lifetime (:func:`freshness_of` returns None): the layer's fixed
   ``cache_control`` applies and the tiles never expire, as without the setting.

An ``Age`` header (a proxy held the answer that long) is subtracted. Lifetimes are
whole seconds, never negative.

The tile then carries ``Expires`` (the absolute moment, in S3 and in the response)
and ``Cache-Control: public`` in S3, whose stored object cannot count down a
``max-age``: browsers and CloudFront read ``Expires`` when no ``max-age`` is given,
so a tile served by the bucket late in its life is not cached past its end. The
service's own responses say ``public, max-age=<seconds left>``.

A layer without the setting answers every tile with its fixed ``cache_control`` and
nothing else; :func:`answer_headers`, :func:`of_expires` and :func:`expired` return
that at once. A layer with it answers with the seconds left, and renders a stored
tile again once its Expires has passed: a miss to the service. The website endpoint
serves what the bucket holds, expired or not; ``seed --refresh-older-than`` renews
those.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC

from s3maptiler.config import Layer

__all__ = [
    "HEADERS",
    "STORED_CACHE_CONTROL",
    "Freshness",
    "answer_headers",
    "expired",
    "freshness_of",
    "http_date",
    "left",
    "max_age_of",
    "of_expires",
    "parse_http_date",
    "stored_headers",
]

#: The answer headers the derivation reads; the WMS client keeps only these.
HEADERS = ("Cache-Control", "Expires", "Last-Modified", "Date", "Age")
#: What the stored object says besides its Expires.
STORED_CACHE_CONTROL = "public"
#: The fraction of the time since Last-Modified a heuristic lifetime is (RFC 9111 4.2.2).
HEURISTIC_FRACTION = 0.1
#: The heuristic's cap when the layer's own Cache-Control has no max-age: one day.
DEFAULT_HEURISTIC_CAP = 86400

_MAX_AGE_RE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:,|$)", re.IGNORECASE)


@dataclass(frozen=True)
class Freshness:
    """The lifetime of one rendered answer: until ``expires_at`` (seconds since the
    epoch); ``shared`` False when the WMS forbade shared caches to keep it, whose own
    ``Cache-Control`` is then ``directive``."""

    expires_at: float
    shared: bool = True
    directive: str = ""

    def cache_control(self, now: float) -> str:
        """The response's Cache-Control at ``now``: the seconds left, or the WMS's own
        directive for an answer no shared cache may keep."""
        if not self.shared:
            return self.directive
        return f"public, max-age={left(self.expires_at, now)}"


def left(expires_at: float, now: float) -> int:
    """Whole seconds from ``now`` to ``expires_at``, never negative."""
    return max(0, math.floor(expires_at - now))


def http_date(when: float) -> str:
    """An HTTP date (``Wed, 02 Jan 2030 03:04:05 GMT``) of seconds since the epoch."""
    return email.utils.formatdate(when, usegmt=True)


def parse_http_date(text: str | None) -> float | None:
    """Seconds since the epoch of an HTTP date, or None when it is not one."""
    if not text:
        return None
    try:
        when = email.utils.parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def max_age_of(cache_control: str | None) -> int | None:
    """The ``max-age`` seconds of a Cache-Control value, or None.

    >>> max_age_of("public, max-age=86400"), max_age_of("no-cache")
    (86400, None)
    """
    match = _MAX_AGE_RE.search(cache_control or "")
    return int(match[1]) if match else None


def _directives(value: str) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for part in value.split(","):
        name, sep, argument = part.strip().partition("=")
        name = name.strip().lower()
        if name and name not in found:  # the first occurrence counts
            found[name] = argument.strip().strip('"') if sep else None
    return found


def _seconds(argument: str | None) -> int:
    """delta-seconds; 0 (stale) for a value that is not one (RFC 9111 1.2.2)."""
    return int(argument) if argument is not None and argument.isdigit() else 0


def freshness_of(
    headers: Mapping[str, str], now: float, heuristic_cap: int | None = None
) -> Freshness | None:
    """The lifetime an answer's headers give it when it arrives at ``now`` (seconds
    since the epoch), by the rules of the module docstring; None when they give none.

    >>> freshness_of({"Cache-Control": "max-age=60"}, 1000.0)
    Freshness(expires_at=1060.0, shared=True, directive='')
    >>> freshness_of({"Cache-Control": "max-age=60", "Expires": "0"}, 1000.0).expires_at
    1060.0
    >>> freshness_of({}, 1000.0) is None
    True
    """
    value = headers.get("Cache-Control", "")
    directives = _directives(value)
    if "no-store" in directives or "private" in directives:
        return Freshness(now, shared=False, directive=value.strip())
    date = parse_http_date(headers.get("Date")) or now
    if "no-cache" in directives:
        lifetime: float | None = 0
    elif "s-maxage" in directives:
        lifetime = _seconds(directives["s-maxage"])
    elif "max-age" in directives:
        lifetime = _seconds(directives["max-age"])
    elif "Expires" in headers:
        expires = parse_http_date(headers["Expires"])
        lifetime = 0 if expires is None else expires - date
    else:
        lifetime = _heuristic(headers.get("Last-Modified"), date, heuristic_cap)
    if lifetime is None:
        return None
    lifetime -= _seconds(headers.get("Age")) if headers.get("Age") else 0
    return Freshness(now + max(0, math.floor(lifetime)))


def _heuristic(last_modified: str | None, date: float, cap: int | None) -> float | None:
    changed = parse_http_date(last_modified)
    if changed is None or changed > date:
        return None
    cap = DEFAULT_HEURISTIC_CAP if cap is None else cap
    return min(HEURISTIC_FRACTION * (date - changed), cap)


def stored_headers(
    fixed: str | None, fresh: Freshness | None
) -> tuple[str | None, float | None] | None:
    """``(Cache-Control, Expires)`` a tile is stored with: the layer's ``fixed``
    Cache-Control and no Expires, or ``public`` and the end of its lifetime; None when
    it must not be stored at all (its WMS said no-store or private)."""
    if fresh is None:
        return fixed or None, None
    if not fresh.shared:
        return None
    return STORED_CACHE_CONTROL, fresh.expires_at


def of_expires(layer: Layer, expires: float | None) -> Freshness | None:
    """The lifetime of a tile stored or queued with an ``Expires`` (seconds since the
    epoch), when the layer honours one."""
    if expires is None or not layer.cache_from_wms:
        return None
    return Freshness(expires)


def expired(layer: Layer, expires: float | None) -> bool:
    """Whether a stored tile whose ``Expires`` is `expires` has lived its lifetime: it
    is then rendered again and overwritten, as if it were missing."""
    if not layer.cache_from_wms or expires is None:
        return False
    return expires <= time.time()


def answer_headers(layer: Layer, fresh: Freshness | None) -> tuple[str, float | None]:
    """``(Cache-Control, Expires)`` of an answer: the layer's fixed Cache-Control and
    no Expires, or the lifetime left (none for an answer no shared cache may keep)."""
    if fresh is None:
        return layer.cache_control, None
    return fresh.cache_control(time.time()), fresh.expires_at if fresh.shared else None
