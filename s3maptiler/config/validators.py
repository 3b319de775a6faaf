"""The one set of validators: every setting that the environment, the layers file, the
CLI or the bucket spec check, checked by one function here.

Each returns the value (normalised where it says so) or raises ``ValueError`` with a
reason that does not name the setting: the caller prefixes the name in its own way
(``TILE_PREFIX: ...``, ``layers.toml: layer x: key 'prefix': ...``, ``--prefix ...``).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "LAYER_NAME_RE",
    "bgcolor",
    "cors_origin",
    "key_prefix",
    "layer_name",
    "metatile",
    "pixel_ratios",
    "url",
]

# A key prefix: path segments of safe characters, each followed by "/".
_PREFIX_RE = re.compile(r"(?:[A-Za-z0-9_.~-]+/)*")
# A layer name: one URL path segment in TMS, WMTS and ArcGIS addresses.
LAYER_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_BGCOLOR_RE = re.compile(r"0x[0-9A-Fa-f]{6}")
# "*", or scheme://host[:port]; in S3's CORS rules the host may hold one "*".
_ORIGIN_RE = re.compile(r"https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?")
_WILDCARD_ORIGIN_RE = re.compile(r"https?://[A-Za-z0-9*.-]+(?::[0-9]{1,5})?")
_METATILE_RE = re.compile(r"([0-9]{1,2})(?:x([0-9]{1,2}))?")
# 8 x 8 tiles plus a buffer is about 2200 px: beyond that WMS size limits bite.
_MAX_METATILE = 8
# Device pixel ratios of high-DPI tiles: phones and laptops have 2 and 3.
_MAX_PIXEL_RATIO = 3


def url(value: str) -> str:
    """An http:// or https:// URL with a host and no spaces."""
    if not re.match(r"^https?://[^/\s?#]+", value) or any(c.isspace() for c in value):
        raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
    return value


def key_prefix(value: Any) -> str:
    """An S3 key prefix: empty, or '/'-terminated parts of letters, digits and ``_.~-``,
    with no leading '/' and no '.' or '..' part."""
    if not isinstance(value, str):
        raise ValueError("expected a string")
    if value.startswith("/"):
        raise ValueError("must not start with '/' (S3 keys have no leading slash)")
    if value and not value.endswith("/"):
        raise ValueError(f"must end with '/' (got {value!r})")
    if not _PREFIX_RE.fullmatch(value) or any(p in (".", "..") for p in value.split("/")):
        raise ValueError(f"{value!r}: only letters, digits and _.~- in '/'-separated parts")
    return value


def layer_name(value: str) -> str:
    """1-64 letters, digits, ``_`` or ``-``: one URL path segment."""
    if not LAYER_NAME_RE.match(value):
        raise ValueError(f"{value[:80]!r} must be 1-64 letters, digits, _ or -")
    return value


def bgcolor(value: Any) -> str:
    """A WMS BGCOLOR, ``0xRRGGBB``."""
    if not isinstance(value, str) or not _BGCOLOR_RE.fullmatch(value):
        raise ValueError(f"expected 0xRRGGBB, got {value!r}")
    return value


def cors_origin(value: str, wildcard: bool = False) -> str:
    """``*`` or an origin ``scheme://host[:port]``; with `wildcard` (S3's CORS rules)
    the host may hold one ``*``."""
    pattern = _WILDCARD_ORIGIN_RE if wildcard else _ORIGIN_RE
    if value != "*" and (not pattern.fullmatch(value) or value.count("*") > 1):
        shape = "scheme://host[:port] with at most one '*'" if wildcard else "like https://host"
        raise ValueError(f"{value!r} is not * or an origin {shape}")
    return value


def metatile(value: Any) -> tuple[int, int]:
    """Columns x rows of a metatile, each 1..8: ``"4x4"``, ``"4"``, ``4`` or ``[4, 4]``."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if isinstance(value, str):
        match = _METATILE_RE.fullmatch(value.strip().lower())
        value = [int(match[1]), int(match[2] or match[1])] if match else None
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(
            isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= _MAX_METATILE
            for v in value
        )
    ):
        raise ValueError('expected columns x rows such as "4x4", 4 or [4, 4], each 1..8')
    return value[0], value[1]


def pixel_ratios(value: Any) -> tuple[int, ...]:
    """Device pixel ratios a layer serves: distinct whole numbers 1..3 holding 1, given
    as ``[1, 2]`` or ``"1,2"``; sorted."""
    if isinstance(value, str):
        parts = [part.strip() for part in value.split(",")]
        value = [int(part) if part.isdigit() else part for part in parts]
    expected = (
        f"expected distinct pixel ratios from 1 to {_MAX_PIXEL_RATIO} holding 1, such as [1, 2]"
    )
    if not isinstance(value, list | tuple) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= _MAX_PIXEL_RATIO for v in value
    ):
        raise ValueError(f"{expected}, got {value!r}")
    if 1 not in value or len(set(value)) != len(value):
        raise ValueError(f"{expected}, got {list(value)!r}")
    return tuple(sorted(value))
