"""A WMTS as a layer's tile source: its GetCapabilities read once at start-up.

From the capabilities: the layer (by ``ows:Identifier``), its style (the one given,
else the default), its format (the one given, else the layer's own media type when
offered, else the first), the TileMatrixSet (the one given, else the first linked set
that lines up), and how to ask for a tile: the REST ``ResourceURL`` template, else KVP
on the GetTile operation's URL. The TileMatrixSet must line up with the layer's grid
(CRS, tile size, and for each zoom of the layer a TileMatrix of the same scale and
top-left corner); the layer's zoom ``z`` is then the TileMatrix found for it (its
identifier may be ``"05"`` or ``"EPSG:3857:5"``). A ``Time`` dimension in the
template is filled with its default value. The result is an ordinary
:class:`~s3maptiler.render.tilesource.TileSource`; any mismatch is one line at start-up.
"""

from __future__ import annotations

import re
import threading
import xml.etree.ElementTree as ET
from urllib.parse import quote

import requests

from s3maptiler.config import ConfigError, Layer
from s3maptiler.config.sources import TileSourceSpec
from s3maptiler.render.credentials import ResolvedCredentials, redact
from s3maptiler.render.errors import WMSUsageError
from s3maptiler.render.getmap import _loggable
from s3maptiler.render.tilesource import TileSource
from s3maptiler.tiles.grids import TileGrid
from s3maptiler.tiles.srs import crs
from s3maptiler.tiles.tilemath import scale_denominator

__all__ = ["WMTSSourceError", "tile_source_for", "wmts_tile_source"]

_NS = {
    "wmts": "http://www.opengis.net/wmts/1.0",
    "ows": "http://www.opengis.net/ows/1.1",
    "xlink": "http://www.w3.org/1999/xlink",
}
_TOLERANCE = 1e-6  # relative: capabilities write scales and corners with few digits
_READ_TIMEOUT = 10.0  # seconds for the one GetCapabilities at start-up
_SOURCES: dict[tuple, TileSource] = {}
_LOCK = threading.Lock()


def tile_source_for(
    layer: Layer, grid: TileGrid, credentials: ResolvedCredentials | None
) -> TileSource:
    """The tile source of `layer` (drawn on `grid`): a template's, or a WMTS's read
    from its capabilities (once per process)."""
    spec = layer.tile_source
    assert spec is not None
    if spec.kind != "wmts":
        return TileSource.build(spec, grid, credentials)
    zooms = range(layer.min_zoom, layer.max_zoom + 1)
    dims = tuple(d.identifier for d in layer.dimensions)
    own = layer.tile_format.wms_format
    return wmts_tile_source(spec, grid, zooms, credentials, own, dims)


def wmts_tile_source(
    spec: TileSourceSpec,
    grid: TileGrid,
    zooms: range,
    credentials: ResolvedCredentials | None = None,
    preferred: str = "image/png",
    dimensions: tuple[str, ...] = (),
) -> TileSource:
    """The TileSource a WMTS spec describes for a layer on `grid` serving `zooms`,
    in the format `preferred` (the layer's) when the spec names none and the WMTS has
    it; read once per process (a layer's variants share it). The layer's `dimensions`
    (identifiers) must be the WMTS layer's: their placeholders stay in the template,
    for each variant's values; the WMTS's other dimensions get their defaults.
    Raises WMSUsageError."""
    key = (spec, grid, zooms.start, zooms.stop, preferred, dimensions)
    with _LOCK:
        if key not in _SOURCES:
            _SOURCES[key] = _read(spec, grid, zooms, credentials, preferred, dimensions)
        return _SOURCES[key]


class WMTSSourceError(WMSUsageError, ConfigError):
    """A WMTS that cannot be a layer's source: a configuration error at start-up (one
    line, no traceback, application.py) that is also the client's usage error."""


def _fail(spec: TileSourceSpec, message: str) -> WMTSSourceError:
    return WMTSSourceError(f"WMTS source {_loggable(spec.url)} layer {spec.layer!r}: {message}")


def _fetch(spec: TileSourceSpec, credentials: ResolvedCredentials | None) -> ET.Element:
    url, kwargs = spec.url, {}
    if credentials is not None:
        params = credentials.params()
        if params:
            url += ("&" if "?" in url else "?") + "&".join(
                f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params
            )
        kwargs = {"auth": credentials.auth(), "headers": credentials.headers() or None}
    try:
        answer = requests.get(url, timeout=(3.05, _READ_TIMEOUT), **kwargs)
    except requests.RequestException as exc:
        raise _fail(spec, f"capabilities not read: {type(exc).__name__}") from None
    if answer.status_code in (401, 403):
        raise _fail(spec, f"credentials refused (HTTP {answer.status_code})")
    if answer.status_code != 200:
        raise _fail(spec, f"capabilities answered HTTP {answer.status_code}")
    try:
        return ET.fromstring(answer.content)
    except ET.ParseError as exc:
        secrets = credentials.secrets() if credentials is not None else []
        raise _fail(spec, redact(f"capabilities are not XML: {exc}", secrets)) from None


def _text(element: ET.Element | None, path: str) -> str:
    found = element.find(path, _NS) if element is not None else None
    return (found.text or "").strip() if found is not None else ""


def _read(
    spec: TileSourceSpec,
    grid: TileGrid,
    zooms: range,
    credentials: ResolvedCredentials | None,
    preferred: str,
    dimensions: tuple[str, ...],
) -> TileSource:
    root = _fetch(spec, credentials)
    layer = next(
        (
            el
            for el in root.iterfind("wmts:Contents/wmts:Layer", _NS)
            if _text(el, "ows:Identifier") == spec.layer
        ),
        None,
    )
    if layer is None:
        raise _fail(spec, "no such layer in the capabilities")
    style = spec.style or _default_style(layer)
    if style is None:
        raise _fail(spec, "the layer has no style")
    formats = [f.text.strip() for f in layer.iterfind("wmts:Format", _NS) if f.text]
    image_format = spec.format or (preferred if preferred in formats or not formats else formats[0])
    if spec.format and formats and spec.format not in formats:
        raise _fail(spec, f"format {spec.format} is not one of {', '.join(formats)}")
    linked = [
        _text(link, "wmts:TileMatrixSet") for link in layer.iterfind("wmts:TileMatrixSetLink", _NS)
    ]
    if spec.matrix_set is not None:
        if spec.matrix_set not in linked:
            raise _fail(spec, f"TileMatrixSet {spec.matrix_set} is not linked to the layer")
        linked = [spec.matrix_set]
    reasons = []
    for name in linked:
        matrix_set = next(
            (
                s
                for s in root.iterfind("wmts:Contents/wmts:TileMatrixSet", _NS)
                if _text(s, "ows:Identifier") == name
            ),
            None,
        )
        if matrix_set is None:
            reasons.append(f"{name}: not in the capabilities")
            continue
        matrices = _matrices(matrix_set, grid, zooms)
        if isinstance(matrices, str):
            reasons.append(f"{name}: {matrices}")
            continue
        template = _template(root, layer, spec, name, style, image_format, dimensions)
        return TileSource(
            template,
            grid,
            image_format,
            missing=spec.missing,
            credentials=credentials,
            matrices=matrices,
        )
    raise _fail(
        spec, "no TileMatrixSet lines up with the layer's grid (" + "; ".join(reasons) + ")"
    )


def _default_style(layer: ET.Element) -> str | None:
    styles = list(layer.iterfind("wmts:Style", _NS))
    for style in styles:
        if style.get("isDefault") == "true":
            return _text(style, "ows:Identifier")
    return _text(styles[0], "ows:Identifier") if styles else None


def _same(a: float, b: float, scale: float) -> bool:
    return abs(a - b) <= _TOLERANCE * scale


def _matrices(matrix_set: ET.Element, grid: TileGrid, zooms: range) -> tuple[str, ...] | str:
    """The TileMatrix identifier of each zoom 0..max of `zooms` ("" below the layer's
    minimum zoom), or why the set does not line up."""
    supported = _text(matrix_set, "ows:SupportedCRS")
    # "urn:ogc:def:crs:EPSG:3857" (no version field, as MapProxy writes it) is common.
    short = re.fullmatch(r"urn:ogc:def:crs:(\w+):(\d+)", supported, re.IGNORECASE)
    system = crs(f"{short[1]}:{short[2]}" if short else supported)
    if system.name != crs(grid.srs).name:
        return f"it is in {system.name}, the layer's grid in {grid.srs}"
    top_left = (grid.bbox.left, grid.bbox.top)
    span = max(grid.bbox.right - grid.bbox.left, grid.bbox.top - grid.bbox.bottom)
    found: list[tuple[float, str]] = []
    for matrix in matrix_set.iterfind("wmts:TileMatrix", _NS):
        try:
            scale = float(_text(matrix, "wmts:ScaleDenominator"))
            corner = [float(v) for v in _text(matrix, "wmts:TopLeftCorner").split()]
            size = int(_text(matrix, "wmts:TileWidth"))
        except ValueError:
            continue
        if system.lat_first:
            corner.reverse()
        if (
            size == grid.tile_size
            and len(corner) == 2
            and all(_same(a, b, span) for a, b in zip(corner, top_left, strict=True))
        ):
            found.append((scale, _text(matrix, "ows:Identifier")))
    identifiers = []
    for z in range(zooms.stop):
        wanted = scale_denominator(grid, z)
        match = next((ident for scale, ident in found if _same(scale, wanted, wanted)), None)
        if match is None and z >= zooms.start:
            hint = f" (max_zoom = {z - 1}?)" if z > zooms.start else ""
            return f"no TileMatrix of scale {wanted:.6g} and the grid's corner for zoom {z}{hint}"
        identifiers.append(match or "")
    return tuple(identifiers)


def _template(
    root: ET.Element,
    layer: ET.Element,
    spec: TileSourceSpec,
    matrix_set: str,
    style: str,
    image_format: str,
    ours: tuple[str, ...],
) -> str:
    """The tile URL with {z}, {x}, {y} left for the TileMatrix, TileCol and TileRow, and
    {<identifier>} for each of the layer's own dimensions (`ours`)."""
    theirs = _dimension_defaults(layer)
    missing = [d for d in ours if d.lower() not in {t.lower() for t in theirs}]
    if missing:
        raise _fail(spec, f"the layer's dimension {missing[0]} is not one of the WMTS layer's")
    values = {
        name: (f"{{{name}}}" if name.lower() in {d.lower() for d in ours} else default)
        for name, default in theirs.items()
    }
    resources = [
        r
        for r in layer.iterfind("wmts:ResourceURL", _NS)
        if r.get("resourceType") == "tile" and r.get("format") == image_format
    ]
    if spec.encoding != "kvp" and resources:
        template = resources[0].get("template", "")
        for name, value in (
            ("TileMatrixSet", matrix_set),
            ("Style", style),
            ("TileMatrix", "{z}"),
            ("TileCol", "{x}"),
            ("TileRow", "{y}"),
            *values.items(),
        ):
            template = _replace_ci(template, "{" + name + "}", value)
        return template
    if spec.encoding == "rest":
        raise _fail(spec, f"no REST ResourceURL for {image_format}")
    href = None
    for operation in root.iterfind("ows:OperationsMetadata/ows:Operation", _NS):
        if operation.get("name") == "GetTile":
            get = operation.find("ows:DCP/ows:HTTP/ows:Get", _NS)
            href = get.get(f"{{{_NS['xlink']}}}href") if get is not None else None
    base = href or spec.url.partition("?")[0]
    params = [
        ("SERVICE", "WMTS"),
        ("REQUEST", "GetTile"),
        ("VERSION", "1.0.0"),
        ("LAYER", spec.layer),
        ("STYLE", style),
        ("FORMAT", image_format),
        ("TILEMATRIXSET", matrix_set),
    ]
    query = "&".join(f"{k}={quote(v, safe=':/')}" for k, v in params)
    # Dimensions by their identifiers (WMTS 1.0.0 KVP); ours keep their placeholder.
    query += "".join(
        f"&{name}={value if value.startswith('{') else quote(value, safe=':/')}"
        for name, value in values.items()
    )
    joiner = "" if base.endswith(("?", "&")) else ("&" if "?" in base else "?")
    return f"{base}{joiner}{query}&TILEMATRIX={{z}}&TILEROW={{y}}&TILECOL={{x}}"


def _dimension_defaults(layer: ET.Element) -> dict[str, str]:
    """Each dimension of the WMTS layer by its identifier, with its default value."""
    return {
        _text(d, "ows:Identifier"): _text(d, "wmts:Default")
        for d in layer.iterfind("wmts:Dimension", _NS)
    }


def _replace_ci(text: str, placeholder: str, value: str) -> str:
    lower = text.lower()
    start = lower.find(placeholder.lower())
    while start != -1:
        text = text[:start] + value + text[start + len(placeholder) :]
        lower = text.lower()
        start = lower.find(placeholder.lower(), start + len(value))
    return text
