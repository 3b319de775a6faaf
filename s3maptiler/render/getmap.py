"""A GetMap request: one :class:`WMSSource` per layer and format, and the URL of a map.

``WMSSource`` is built once at start-up from configuration; :func:`getmap_url` spells
the request for a bbox in the source's SRS units (meters for EPSG:3857, decimal
degrees for geographic CRSs) and an image size in pixels. Axis order and decimals
come from the one CRS table (:mod:`s3maptiler.tiles.srs`).

>>> src = WMSSource("http://127.0.0.1/mapserv?map=ROADS", layers="roads")
>>> getmap_url(src, (0.0, 0.0, 1000.5, 1000.5), 256, 256)[:62]
'http://127.0.0.1/mapserv?map=ROADS&SERVICE=WMS&VERSION=1.1.1&R'
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, unquote_plus, urlsplit

from s3maptiler.config import validators
from s3maptiler.render.credentials import ResolvedCredentials
from s3maptiler.render.errors import WMSUsageError
from s3maptiler.tiles.srs import crs

__all__ = [
    "STANDARD_KEYS",
    "VERSIONS",
    "WMSSource",
    "bbox_text",
    "getmap_params",
    "getmap_url",
    "resolution_params",
]

log = logging.getLogger(__name__)

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
    # Basic auth, headers and query parameters sent with every request (credentials.py).
    credentials: ResolvedCredentials | None = field(default=None, repr=False, compare=False)
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
        if self.bgcolor is not None:
            try:
                validators.bgcolor(self.bgcolor)
            except ValueError as exc:
                raise WMSUsageError(f"WMS bgcolor: {exc}") from None
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


#: How each WMS is told to draw a map at a higher resolution, and the dots per inch
#: it draws at without: MapServer's MAP_RESOLUTION (its RESOLUTION, 72 by default;
#: symbols scale by RESOLUTION/DEFRESOLUTION, MS RFC 55), GeoServer's
#: FORMAT_OPTIONS=dpi (90, its documented OGC standard), QGIS Server's DPI (the OGC's
#: 0.28 mm pixel, 90.7 dpi: QgsWmsRenderContext::dotsPerMm).
_RESOLUTION = {
    "mapserver": ("MAP_RESOLUTION", "{}", 72.0),
    "geoserver": ("FORMAT_OPTIONS", "dpi:{}", 90.0),
    "qgis": ("DPI", "{}", 25.4 / 0.28),
}


def resolution_params(vendor: str, ratio: int) -> tuple[tuple[str, str], ...]:
    """The vendor parameter that makes `vendor`'s WMS draw a map `ratio` times the
    pixels of its ground at `ratio` times its resolution: labels, symbols and lines
    `ratio` times as many pixels, and the same scale (so scale-dependent layers and
    labels are those of the 1x map). Empty for ratio 1, or for a WMS without one
    (``"none"``). Whole dots per inch: older QGIS Servers read DPI as an integer.

    >>> resolution_params("mapserver", 2), resolution_params("qgis", 2)
    ((('MAP_RESOLUTION', '144'),), (('DPI', '181'),))
    >>> resolution_params("geoserver", 2), resolution_params("none", 2)
    ((('FORMAT_OPTIONS', 'dpi:180'),), ())
    """
    if ratio == 1 or vendor not in _RESOLUTION:
        return ()
    key, template, base = _RESOLUTION[vendor]
    return ((key, template.format(round(base * ratio))),)


def getmap_url(source: WMSSource, bbox: Sequence[float], width: int, height: int) -> str:
    """The complete GetMap URL: the source URL (its own query kept) plus
    :func:`getmap_params` percent-encoded."""
    query = "&".join(
        f"{quote(k, safe=_QUERY_SAFE)}={quote(v, safe=_QUERY_SAFE)}"
        for k, v in getmap_params(source, bbox, width, height)
    )
    return source._base + query
