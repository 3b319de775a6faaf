"""What a layer's upstream is, as configured: its credentials and, for a tile service,
its URL template. Parsing only; the values of secrets are read by
:mod:`s3maptiler.render.credentials`, tiles fetched by :mod:`s3maptiler.render.tilesource`.

A secret is named, never written, in configuration: ``env:NAME`` (a variable),
``file:/run/secrets/x`` (a mounted secret; one trailing newline dropped),
``secretsmanager:<id>`` or ``secretsmanager:<id>#<json field>`` (AWS Secrets Manager),
``ssm:/path/to/param`` (SSM Parameter Store, decrypted). In the layers file a value
is a literal string or ``{ secret = "<reference>" }``; in the environment
(``SOURCE_USER``, ``SOURCE_PASSWORD``, ``SOURCE_HEADERS``, ``SOURCE_PARAMS``) a value
that starts with one of the four schemes is a reference, any other a literal.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from typing import Any

from s3maptiler.config import validators
from s3maptiler.tiles.grids import GridError, TileGrid, get_grid, with_tile_size

__all__ = [
    "SECRET_SCHEMES",
    "TILE_SOURCE_KINDS",
    "Credentials",
    "SecretRef",
    "TileSourceSpec",
    "check_same_grid",
    "zoom_offset",
    "credentials_from_env",
    "parse_credentials",
    "parse_secret",
    "parse_tile_source",
]

SECRET_SCHEMES = ("env", "file", "secretsmanager", "ssm")
TILE_SOURCE_KINDS = ("xyz", "tms", "wmts")
#: Seconds between two reads of a secret that comes from outside the process.
DEFAULT_REFRESH = 300.0

# RFC 7230 token: what a header name may be.
_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_PLACEHOLDERS = ("{z}", "{x}", "{y}", "{-y}", "{quadkey}")
_PLACEHOLDER_RE = re.compile(r"\{[^}]*\}")


@dataclass(frozen=True)
class SecretRef:
    """Where a secret is read from: ``scheme`` one of SECRET_SCHEMES, ``name`` the
    variable, path, secret id or parameter name, ``field`` a JSON key (Secrets Manager).
    Its text form (``str``) names the secret and is safe to log."""

    scheme: str
    name: str
    field: str | None = None

    def __str__(self) -> str:
        return f"{self.scheme}:{self.name}" + (f"#{self.field}" if self.field else "")


#: A configured value: a literal, or a reference to a secret.
Value = str | SecretRef


@dataclass(frozen=True)
class Credentials:
    """How every request to a layer's upstream authenticates: HTTP basic (``user``,
    ``password``), extra ``headers`` and extra query ``params`` (ArcGIS ``token``)."""

    user: Value | None = None
    password: Value | None = None
    headers: tuple[tuple[str, Value], ...] = ()
    params: tuple[tuple[str, Value], ...] = ()
    refresh: float = DEFAULT_REFRESH  # seconds between reads of external secrets

    def __repr__(self) -> str:
        """Names and references only: a literal value is a secret."""

        def shown(value: Value | None) -> str:
            return "<literal>" if isinstance(value, str) else str(value)

        parts = [f"user={shown(self.user)}"] if self.user is not None else []
        parts += [f"password={shown(self.password)}"] if self.password is not None else []
        parts += [f"header {name}={shown(v)}" for name, v in self.headers]
        parts += [f"param {name}={shown(v)}" for name, v in self.params]
        return f"Credentials({', '.join(parts)})"

    def values(self) -> tuple[Value, ...]:
        """Every configured value, literals and references."""
        basic = tuple(v for v in (self.user, self.password) if v is not None)
        return basic + tuple(v for _, v in self.headers) + tuple(v for _, v in self.params)


@dataclass(frozen=True)
class TileSourceSpec:
    """A tile service on the layer's own grid: ``url`` a template with ``{z}``,
    ``{x}``, ``{y}`` (rows from the top, XYZ), ``{-y}`` (rows from the bottom, TMS) or
    ``{quadkey}``; ``format`` the media type it answers; ``grid`` the grid its tiles
    are on (checked against the layer's at start-up); ``missing`` what an upstream
    404 or 204 becomes: ``"blank"`` or ``"404"``."""

    url: str = field(repr=False)  # may carry a key in its query
    format: str = "image/png"
    grid: str = "GoogleMapsCompatible"
    missing: str = "blank"
    kind: str = "xyz"  # xyz or tms: only what {y} means when the template says neither
    # 512: the upstream's tiles are twice the pixels of the grid's 256 px tiles at the
    # same zoom (their ground): @2x tiles as they come, 256 px tiles cut from a quarter.
    tile_size: int = 256
    # WMTS: `url` is its GetCapabilities URL; the layer, and optionally its style,
    # TileMatrixSet and encoding ("rest" or "kvp"); the rest is read from it.
    layer: str = ""
    style: str | None = None
    matrix_set: str | None = None
    encoding: str | None = None


def parse_secret(text: Any) -> SecretRef:
    """A reference such as ``env:NAME``; ValueError for anything else.

    >>> str(parse_secret("secretsmanager:prod/imagery#api_key"))
    'secretsmanager:prod/imagery#api_key'
    """
    if not isinstance(text, str):
        raise ValueError("a secret reference must be a string such as 'env:NAME'")
    scheme, sep, rest = text.partition(":")
    if not sep or scheme not in SECRET_SCHEMES or not rest.strip():
        schemes = ", ".join(SECRET_SCHEMES)
        raise ValueError(f"a secret reference must start with {schemes} and a colon")
    field = None
    if scheme == "secretsmanager" and "#" in rest:
        rest, field = rest.split("#", 1)
        if not field:
            raise ValueError("secretsmanager reference ends with an empty '#field'")
    if scheme == "file" and not rest.startswith("/"):
        raise ValueError("a file: reference needs an absolute path")
    return SecretRef(scheme, rest, field)


def _value(value: Any) -> Value:
    """A layers-file value: a literal string or ``{ secret = "..." }``."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and set(value) == {"secret"}:
        return parse_secret(value["secret"])
    raise ValueError('expected a string or { secret = "env:NAME" }')


def _env_value(text: str) -> Value:
    scheme = text.partition(":")[0]
    return parse_secret(text) if scheme in SECRET_SCHEMES else text


def _pairs(value: Any, what: str, convert) -> tuple[tuple[str, Value], ...]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a table of names and values")
    pairs = []
    for name, item in value.items():
        if what == "headers" and not _HEADER_NAME_RE.match(name):
            raise ValueError(f"header name {name!r} is not a valid HTTP header name")
        if what == "params" and not name.strip():
            raise ValueError("a query parameter needs a name")
        try:
            pairs.append((name, convert(item)))
        except ValueError as exc:
            raise ValueError(f"{what} {name!r}: {exc}") from None
    return tuple(pairs)


def _refresh(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 10 <= value <= 86400:
        raise ValueError("refresh must be seconds from 10 to 86400")
    return float(value)


def parse_credentials(table: Any) -> Credentials:
    """The ``credentials`` table of a layer (keys user, password, headers, params,
    refresh); ValueError with one line naming the key."""
    if not isinstance(table, dict):
        raise ValueError("expected a table with user, password, headers, params, refresh")
    unknown = set(table) - {"user", "password", "headers", "params", "refresh"}
    if unknown:
        raise ValueError(f"key {sorted(unknown)[0]!r} is unknown")
    if ("user" in table) != ("password" in table):
        raise ValueError("user and password go together (HTTP basic)")
    try:
        user = _value(table["user"]) if "user" in table else None
        password = _value(table["password"]) if "password" in table else None
    except ValueError as exc:
        raise ValueError(f"user/password: {exc}") from None
    return Credentials(
        user=user,
        password=password,
        headers=_pairs(table.get("headers", {}), "headers", _value),
        params=_pairs(table.get("params", {}), "params", _value),
        refresh=_refresh(table.get("refresh", DEFAULT_REFRESH)),
    )


def credentials_from_env(values: dict[str, str | None]) -> Credentials | None:
    """The single layer's credentials from SOURCE_USER, SOURCE_PASSWORD, SOURCE_HEADERS
    and SOURCE_PARAMS (JSON objects of strings), SOURCE_SECRETS_REFRESH; None when
    none is set. ValueError names the variable."""
    user, password = values.get("SOURCE_USER"), values.get("SOURCE_PASSWORD")
    headers, params = values.get("SOURCE_HEADERS"), values.get("SOURCE_PARAMS")
    refresh = values.get("SOURCE_SECRETS_REFRESH")
    if not any((user, password, headers, params)):
        return None
    if bool(user) != bool(password):
        raise ValueError("SOURCE_USER: SOURCE_USER and SOURCE_PASSWORD go together")
    table: dict[str, Any] = {}
    try:
        basic = (_env_value(user), _env_value(password)) if user and password else (None, None)
    except ValueError as exc:
        raise ValueError(f"SOURCE_PASSWORD: {exc}") from None
    tables = (("SOURCE_HEADERS", headers, "headers"), ("SOURCE_PARAMS", params, "params"))
    for name, text, key in tables:
        if not text:
            continue
        try:
            loaded = json.loads(text)
            if not isinstance(loaded, dict) or not all(isinstance(v, str) for v in loaded.values()):
                raise ValueError('expected a JSON object of strings, e.g. {"X-API-Key": "env:KEY"}')
            table[key] = _pairs(loaded, key, _env_value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{name}: not JSON: {exc.msg}") from None
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    try:
        seconds = _refresh(float(refresh)) if refresh else DEFAULT_REFRESH
    except ValueError as exc:
        raise ValueError(f"SOURCE_SECRETS_REFRESH: {exc}") from None
    return Credentials(
        user=basic[0],
        password=basic[1],
        headers=table.get("headers", ()),
        params=table.get("params", ()),
        refresh=seconds,
    )


def parse_tile_source(table: Any) -> TileSourceSpec:
    """The ``source`` table of a tile layer: type, url, format, missing; for xyz and tms
    also grid and tile_size; for wmts layer, style, matrix_set, encoding."""
    if not isinstance(table, dict):
        raise ValueError("expected a table with type and url")
    wmts_keys = {"layer", "style", "matrix_set", "encoding"}
    unknown = set(table) - {"type", "url", "format", "grid", "missing", "tile_size"} - wmts_keys
    if unknown:
        raise ValueError(f"key {sorted(unknown)[0]!r} is unknown")
    kind = table.get("type")
    if kind not in TILE_SOURCE_KINDS:
        raise ValueError(f"type: expected one of {', '.join(TILE_SOURCE_KINDS)}")
    url = table.get("url")
    if not isinstance(url, str):
        raise ValueError("url: expected a URL template such as https://host/{z}/{x}/{y}.png")
    missing = table.get("missing", "blank")
    if missing not in ("blank", "404"):
        raise ValueError("missing: expected blank or 404")
    fmt = table.get("format", "image/png")
    if not isinstance(fmt, str) or not fmt.startswith("image/"):
        raise ValueError("format: expected an image media type such as image/png")
    if kind == "wmts":
        if {"grid", "tile_size"} & set(table):
            raise ValueError("grid and tile_size of a WMTS are read from its capabilities")
        return _wmts(table, url, missing)
    if wmts_keys & set(table):
        raise ValueError(f"key {sorted(wmts_keys & set(table))[0]!r} is for type wmts only")
    check_template(url)
    grid = table.get("grid", "GoogleMapsCompatible")
    if not isinstance(grid, str):
        raise ValueError("grid: expected a grid name")
    tile_size = table.get("tile_size", 256)
    if tile_size not in (256, 512) or isinstance(tile_size, bool):
        raise ValueError("tile_size: expected 256 or 512")
    return TileSourceSpec(url, fmt, grid, missing, kind, tile_size=tile_size)


def _wmts(table: dict[str, Any], url: str, missing: str) -> TileSourceSpec:
    validators.url(url)
    texts = {}
    for key in ("layer", "style", "matrix_set"):
        value = table.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ValueError(f"{key}: expected a non-empty string")
        texts[key] = value
    if texts["layer"] is None:
        raise ValueError("layer: a WMTS source needs the layer's ows:Identifier")
    encoding = table.get("encoding")
    if encoding not in (None, "rest", "kvp"):
        raise ValueError("encoding: expected rest or kvp")
    return TileSourceSpec(
        url=url,
        format=table.get("format", ""),  # "": the layer's own format if offered, else the first
        missing=missing,
        kind="wmts",
        layer=texts["layer"],
        style=texts["style"],
        matrix_set=texts["matrix_set"],
        encoding=encoding,
    )


def check_template(url: str, dimensions: tuple[str, ...] | None = None) -> str:
    """A tile URL template: http(s), and {z}/{x}/{y} or {-y}, or {quadkey}; and, once
    the layer's `dimensions` are known (their identifiers: Time, Elevation, ...), each
    of them and nothing else in braces (any case: {time} is {Time})."""
    validators.url(url.replace("{", "").replace("}", ""))
    if dimensions is not None:
        allowed = {p.lower() for p in _PLACEHOLDERS} | {f"{{{d.lower()}}}" for d in dimensions}
        found = {p.lower() for p in _PLACEHOLDER_RE.findall(url)}
        unknown = sorted(found - allowed)
        if unknown:
            known = ", ".join([*_PLACEHOLDERS, *(f"{{{d}}}" for d in dimensions)])
            raise ValueError(f"url: unknown placeholder {unknown[0]} (use {known})")
        absent = [d for d in dimensions if f"{{{d.lower()}}}" not in found]
        if absent:
            raise ValueError(f"url: the layer's dimension {absent[0]} needs {{{absent[0]}}}")
    zxy = "{z}" in url and "{x}" in url and ("{y}" in url or "{-y}" in url)
    if not zxy and "{quadkey}" not in url:
        raise ValueError("url: needs {z}, {x} and {y} (or {-y}), or {quadkey}")
    return url


# Relative difference under which two resolutions are the same (float text in configs).
_RESOLUTION_TOLERANCE = 1e-9


def zoom_offset(layer_grid: TileGrid, spec: TileSourceSpec) -> int:
    """How the upstream's tiles make the layer's: 0 when they are the same tiles, 1 when
    each upstream tile at zoom z-1 is four of the layer's at z (512 px upstream tiles,
    256 px layer tiles, the same resolution). ValueError (one line) for anything else."""
    try:
        named = get_grid(spec.grid)
    except GridError as exc:
        raise ValueError(f"tile source grid: {exc}") from None
    # An upstream tile of 512 px covers the ground of the named grid's tile (its zoom).
    theirs = with_tile_size(named, spec.tile_size)
    if spec.tile_size == 2 * layer_grid.tile_size:
        # Drop the upstream's zoom 0: its zoom z-1 has the resolution of the layer's z.
        shifted = replace(theirs, tile_size=layer_grid.tile_size, resolutions=named.resolutions[1:])
        check_same_grid(replace(layer_grid, resolutions=layer_grid.resolutions[1:]), shifted)
        return 1
    check_same_grid(layer_grid, theirs)
    return 0


def check_same_grid(layer_grid: TileGrid, upstream: str | TileGrid) -> None:
    """ValueError (one line) unless the upstream's tiles are the layer's: the same CRS,
    extent (and so origin), tile size and resolution at every zoom of the layer."""
    try:
        theirs = get_grid(upstream) if isinstance(upstream, str) else upstream
    except GridError as exc:
        raise ValueError(f"tile source grid: {exc}") from None
    ours = layer_grid
    if ours.srs != theirs.srs:
        raise ValueError(f"tile source is in {theirs.srs}, the layer's grid in {ours.srs}")
    if ours.tile_size != theirs.tile_size:
        raise ValueError(
            f"tile source has {theirs.tile_size} px tiles, the layer's grid {ours.tile_size} px"
        )
    if not all(_same(a, b) for a, b in zip(ours.bbox, theirs.bbox, strict=True)):
        raise ValueError("tile source grid has another origin or extent than the layer's grid")
    for z, ours_res in enumerate(ours.resolutions):
        if z >= len(theirs.resolutions) or not _same(ours_res, theirs.resolutions[z]):
            raise ValueError(
                f"tile source has no zoom {z} of resolution {ours_res:g} like the layer's grid"
            )


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= _RESOLUTION_TOLERANCE * max(abs(a), abs(b))
