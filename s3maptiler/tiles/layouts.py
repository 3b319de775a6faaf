"""Tile key layouts: the part of an S3 key or URL path after a layer's prefix.

- ``tms``: ``{z}/{x}/{y}.{ext}``, y counted from the bottom (``rows - 1 - y``);
- ``xyz``: ``{z}/{x}/{y}.{ext}``, y counted from the top;
- ``wmts``: ``{TileMatrix}/{TileRow}/{TileCol}.{ext}`` with TileMatrix = z;
- ``arcgis``: ``L{z:02d}/R{row:08x}/C{col:08x}.{ext}``, level decimal, row before col;
- ``quadkey``: ``{quadkey}.{ext}``, the Bing quadkey of the top-down x, y.

Parsing is strict because the key the service writes to S3 must be the key the
miss came from: ASCII digits only, no signs, spaces or leading zeros (``0``
itself is fine), at most 10 digits per number, an extension of 1-5 ASCII letters
or digits, nothing before or after. For every layout and a canonical key ``k``,
``layout.format(*layout.parse(k, grid), grid) == k``.

Two spellings are accepted but are not canonical: upper-case extensions
(``PNG``) and upper-case ArcGIS hex (``R0000001A``). ``parse`` returns them in
lower case and ``format`` always writes lower case, so a caller that stores a
tile must store it under the path it received, not under ``format(...)``, or
the next request for the upper-case spelling misses again.

The quadkey layout has no key for zoom 0 (the quadkey would be empty, the key
``.png``); it raises :class:`LayoutError` there, in both directions.

High-DPI tiles (2x, 3x) have the key of their 1x tile with ``@2x`` (``@3x``) before
the extension, in every layout: ``12/1205/2557@2x.png``, ``L12/R00000602/C000004b5@2x.png``,
``032010110132@2x.png``. :func:`with_pixel_ratio` writes it and
:func:`split_pixel_ratio` takes it off before a layout parses the rest; ``@1x`` is
never written and not accepted.

>>> from s3maptiler.tiles.grids import WEB_MERCATOR
>>> get_layout("arcgis").parse("L05/R0000001a/C0000001b.png", WEB_MERCATOR)
TileKey(tile=Tile(x=27, y=26, z=5), ext='png')
>>> get_layout("tms").format(Tile(x=0, y=0, z=1), "png", WEB_MERCATOR)
'1/0/1.png'
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from s3maptiler.tiles.grids import Tile, TileGrid

__all__ = [
    "LAYOUTS",
    "ArcgisLayout",
    "Layout",
    "LayoutError",
    "MalformedPath",
    "QuadkeyLayout",
    "TileKey",
    "UnknownLayout",
    "WmtsLayout",
    "ZxyLayout",
    "get_layout",
    "split_pixel_ratio",
    "with_pixel_ratio",
]

# One number: "0" or 1-10 ASCII digits without a leading zero. [0-9], not \d, which
# also matches other scripts' digits.
_NUM = r"(?:0|[1-9][0-9]{0,9})"
_EXT = r"(?P<ext>[A-Za-z0-9]{1,5})"
_ZXY_RE = re.compile(rf"(?P<a>{_NUM})/(?P<b>{_NUM})/(?P<c>{_NUM})\.{_EXT}")
# ArcGIS levels are "%02d": two digits below 10, no leading zero above.
_ARCGIS_RE = re.compile(
    r"L(?P<z>0[0-9]|[1-9][0-9]{1,9})/R(?P<row>[0-9A-Fa-f]{8})/C(?P<col>[0-9A-Fa-f]{8})\." + _EXT
)
_QUADKEY_RE = re.compile(r"(?P<key>[0-3]{0,32})\." + _EXT)
_EXT_RE = re.compile(r"[a-z0-9]{1,5}")
# "<path>@<n>x.<ext>": a high-DPI tile's key; n 2..9, never 1.
_PIXEL_RATIO_RE = re.compile(r"(?P<stem>.+)@(?P<ratio>[2-9])x(?P<ext>\.[A-Za-z0-9]{1,5})")
_MAX_HEX8 = 0xFFFFFFFF
_MAX_DECIMAL = 10**10 - 1


class LayoutError(ValueError):
    """Base class for every error raised by this module; the message is one line."""


class MalformedPath(LayoutError):
    """A path or tile that the layout cannot express."""


class UnknownLayout(LayoutError):
    """A layout name that is not in :data:`LAYOUTS`."""


@dataclass(frozen=True)
class TileKey:
    """A parsed key: the tile (row counted from the top) and its extension in lower case."""

    tile: Tile
    ext: str

    def __iter__(self) -> Iterator[Tile | str]:
        # Unpacks like a tuple, so ``layout.format(*key, grid)`` reads naturally.
        return iter((self.tile, self.ext))


class Layout(Protocol):
    """Formats tiles into key paths and parses them back."""

    name: str

    def format(self, tile: Tile, ext: str, grid: TileGrid) -> str:
        """The canonical path of ``tile`` with extension ``ext``."""
        ...

    def parse(self, path: str, grid: TileGrid) -> TileKey:
        """The tile a path names; LayoutError or TileOutOfRange otherwise."""
        ...


def _show(path: object) -> str:
    """A short, one-line rendering of untrusted input for error messages."""
    text = repr(path)
    return text if len(text) <= 80 else text[:77] + "..."


def _bad(layout: str, path: object) -> MalformedPath:
    return MalformedPath(f"not a {layout} tile path: {_show(path)}")


def _match(pattern: re.Pattern[str], layout: str, path: object) -> re.Match[str]:
    if not isinstance(path, str):
        raise _bad(layout, path)
    m = pattern.fullmatch(path)
    if m is None:
        raise _bad(layout, path)
    return m


def _checked_ext(ext: str) -> str:
    if not isinstance(ext, str) or _EXT_RE.fullmatch(ext) is None:
        raise MalformedPath(f"extension {_show(ext)} is not 1-5 lower-case letters or digits")
    return ext


def _checked_decimal(tile: Tile) -> Tile:
    # parse accepts at most 10 digits, so format must not write more (giant custom grids)
    if max(tile) > _MAX_DECIMAL:
        raise MalformedPath(f"tile {tuple(tile)} has a number of more than 10 digits")
    return tile


@dataclass(frozen=True)
class ZxyLayout:
    """``{z}/{x}/{y}.{ext}``; ``flip`` counts y from the bottom (TMS) instead of the top."""

    name: str
    flip: bool

    def format(self, tile: Tile, ext: str, grid: TileGrid) -> str:
        """Key path of ``tile``; ``ext`` must already be lower case."""
        ext = _checked_ext(ext)
        grid.check(tile)
        x, y, z = _checked_decimal(tile)
        if self.flip:
            y = grid.flip_y(y, z)
        return f"{z}/{x}/{y}.{ext}"

    def parse(self, path: str, grid: TileGrid) -> TileKey:
        """The tile named by ``path``, row converted to top-down."""
        m = _match(_ZXY_RE, self.name, path)
        z, x, y = int(m["a"]), int(m["b"]), int(m["c"])
        # Check before flipping, so a bad TMS row is reported as written.
        grid.check(Tile(x, y, z))
        if self.flip:
            y = grid.flip_y(y, z)
        return TileKey(Tile(x, y, z), m["ext"].lower())


@dataclass(frozen=True)
class WmtsLayout:
    """WMTS REST order ``{TileMatrix}/{TileRow}/{TileCol}.{ext}`` with TileMatrix = z."""

    name: str = "wmts"

    def format(self, tile: Tile, ext: str, grid: TileGrid) -> str:
        """Key path of ``tile``: zoom, then row, then column."""
        ext = _checked_ext(ext)
        grid.check(tile)
        _checked_decimal(tile)
        return f"{tile.z}/{tile.y}/{tile.x}.{ext}"

    def parse(self, path: str, grid: TileGrid) -> TileKey:
        """The tile named by ``path`` (row before column)."""
        m = _match(_ZXY_RE, self.name, path)
        tile = Tile(x=int(m["c"]), y=int(m["b"]), z=int(m["a"]))
        grid.check(tile)
        return TileKey(tile, m["ext"].lower())


@dataclass(frozen=True)
class ArcgisLayout:
    """ArcGIS exploded cache ``L{z:02d}/R{row:08x}/C{col:08x}.{ext}``: level decimal,
    row and column as 8 lower-case hex digits (upper case accepted when parsing)."""

    name: str = "arcgis"

    def format(self, tile: Tile, ext: str, grid: TileGrid) -> str:
        """Key path of ``tile``, always in lower-case hex."""
        ext = _checked_ext(ext)
        grid.check(tile)
        if tile.x > _MAX_HEX8 or tile.y > _MAX_HEX8:
            raise MalformedPath(f"tile {tuple(tile)} does not fit 8 hex digits")
        return f"L{tile.z:02d}/R{tile.y:08x}/C{tile.x:08x}.{ext}"

    def parse(self, path: str, grid: TileGrid) -> TileKey:
        """The tile named by ``path``."""
        m = _match(_ARCGIS_RE, self.name, path)
        tile = Tile(x=int(m["col"], 16), y=int(m["row"], 16), z=int(m["z"]))
        grid.check(tile)
        return TileKey(tile, m["ext"].lower())


@dataclass(frozen=True)
class QuadkeyLayout:
    """Bing quadkey ``{quadkey}.{ext}`` from the top-down x, y; one digit per zoom level.

    Zoom 0 has no quadkey and is rejected. Tiles outside the ``2**z`` square (the
    right half of a 2x1 geodetic grid) cannot be written as a quadkey either.
    """

    name: str = "quadkey"

    def format(self, tile: Tile, ext: str, grid: TileGrid) -> str:
        """Key path of ``tile``."""
        ext = _checked_ext(ext)
        grid.check(tile)
        x, y, z = tile
        if z == 0:
            raise MalformedPath("the quadkey layout has no key for zoom 0")
        if x >= 1 << z or y >= 1 << z:
            raise MalformedPath(f"tile {tuple(tile)} is outside the quadtree of zoom {z}")
        digits = (str(((x >> (i - 1)) & 1) + 2 * ((y >> (i - 1)) & 1)) for i in range(z, 0, -1))
        return "".join(digits) + "." + ext

    def parse(self, path: str, grid: TileGrid) -> TileKey:
        """The tile named by ``path``."""
        m = _match(_QUADKEY_RE, self.name, path)
        key = m["key"]
        if not key:
            raise MalformedPath(f"the quadkey layout has no key for zoom 0: {_show(path)}")
        x = y = 0
        for digit in key:
            d = int(digit)
            x = (x << 1) | (d & 1)
            y = (y << 1) | (d >> 1)
        tile = Tile(x, y, len(key))
        grid.check(tile)
        return TileKey(tile, m["ext"].lower())


#: Every layout by name.
LAYOUTS: dict[str, Layout] = {
    "tms": ZxyLayout("tms", flip=True),
    "xyz": ZxyLayout("xyz", flip=False),
    "wmts": WmtsLayout(),
    "arcgis": ArcgisLayout(),
    "quadkey": QuadkeyLayout(),
}


def get_layout(name: str) -> Layout:
    """The layout called ``name`` (case-insensitive): tms, xyz, wmts, arcgis or quadkey."""
    try:
        return LAYOUTS[name.strip().lower()]
    except (KeyError, AttributeError):
        raise UnknownLayout(
            f"unknown layout {name!r}; known layouts: {', '.join(LAYOUTS)}"
        ) from None


def with_pixel_ratio(path: str, ratio: int) -> str:
    """The key path of a tile at `ratio` from its 1x key path: ``@2x`` before the
    extension (templates too: ``{TileRow}.png`` -> ``{TileRow}@2x.png``).

    >>> with_pixel_ratio("12/1205/2557.png", 2), with_pixel_ratio("12/1205/2557.png", 1)
    ('12/1205/2557@2x.png', '12/1205/2557.png')
    """
    if ratio == 1:
        return path
    stem, dot, ext = path.rpartition(".")
    if not dot:
        raise MalformedPath(f"no extension to put @{ratio}x before: {_show(path)}")
    return f"{stem}@{ratio}x.{ext}"


def split_pixel_ratio(path: str) -> tuple[str, int]:
    """``(the 1x key path, the pixel ratio)`` of a key path: 1 without an ``@<n>x``.

    >>> split_pixel_ratio("L12/R00000602/C000004b5@2x.png"), split_pixel_ratio("3/4/2.png")
    (('L12/R00000602/C000004b5.png', 2), ('3/4/2.png', 1))
    """
    m = _PIXEL_RATIO_RE.fullmatch(path)
    if m is None:
        return path, 1
    return m["stem"] + m["ext"], int(m["ratio"])
