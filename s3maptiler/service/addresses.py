"""Addresses: which tile of which layer a key or a route names, or why none (400/404).

The one file for "why did this tile come back 404": a key outside every layer's
prefix, a path that is not the layer's layout, a tile outside the grid, a zoom
outside the layer's range, a format or a pixel ratio (``@2x``) the layer does not
serve, or a tile outside its extent (unless the layer answers those with a blank).
And for "why 400": a dimension value the layer does not declare, or one spelt
otherwise than in its keys.

A layer with dimensions (:mod:`s3maptiler.tiles.dimensions`) keeps the tiles of each
value under ``{prefix}{value}/{layout path}``; a key without the value segments is its
dimension-less key, drawn with the defaults. The tile of a key with values is drawn
by the layer's runtime at those values (:meth:`LayerRuntime.with_values`, built once
per combination).

A layer's high-DPI tiles are a layer of their own (``roads@2x``, see
:mod:`s3maptiler.config.hidpi`) with the same prefix: a key ending in ``@2x.png`` is
that layer's (with dimensions: ``{prefix}{value}/{layout path}@2x.png``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from s3maptiler.config import Layer, pixel_ratio_name
from s3maptiler.render.runtime import LayerRuntime
from s3maptiler.tiles.dimensions import DimensionError, split_values
from s3maptiler.tiles.grids import GridError, Tile, TileOutOfRange
from s3maptiler.tiles.layouts import (
    LayoutError,
    MalformedPath,
    TileKey,
    get_layout,
    split_pixel_ratio,
)
from s3maptiler.tiles.tilemath import extent_excludes

__all__ = [
    "MAX_KEY_LENGTH",
    "Addresses",
    "BadTileRequest",
    "TileNotFound",
    "TileRequest",
    "TileRequestError",
    "check_key",
]

MAX_KEY_LENGTH = 512


class TileRequestError(Exception):
    """The request cannot be a tile; `status` is the HTTP status to answer."""

    status = 400


class BadTileRequest(TileRequestError):
    status = 400


class TileNotFound(TileRequestError):
    status = 404


class _NotLayerKey(TileRequestError):
    """`resolve`: the key is no configured layer's key at all (outside every prefix,
    not a key, or not a path of the layer's layout); `owned` answers None for it."""


class _NoLayerPrefix(_NotLayerKey, TileNotFound):
    pass


class _NotLayerPath(_NotLayerKey, BadTileRequest):
    pass


@dataclass(frozen=True)
class TileRequest:
    layer: LayerRuntime
    tile: Tile
    ext: str
    key: str
    outside_extent: bool = False  # answered with a blank tile (the layer's outside_extent)


def check_key(key: str) -> None:
    """BadTileRequest unless `key` could be an S3 key the service writes: bounded,
    printable ASCII, no backslash, no empty, '.' or '..' segment."""
    if len(key) > MAX_KEY_LENGTH:
        raise BadTileRequest(f"key longer than {MAX_KEY_LENGTH} characters")
    if not key.isascii() or not key.isprintable() or "\\" in key:
        raise BadTileRequest("key has characters a tile key never has")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise BadTileRequest("key has an empty, '.' or '..' segment")


class Addresses:
    """The configured layers by name and by key prefix, and the tile each address names.

    ``resolve`` (a key), ``request_for`` and ``request_via`` (a named layer's tile, in
    its own layout or another) answer a :class:`TileRequest` or raise
    :class:`TileNotFound` (404) or :class:`BadTileRequest` (400) with a one-line reason.
    """

    def __init__(self, layers: Sequence[LayerRuntime]):
        self.runtimes: Mapping[str, LayerRuntime] = MappingProxyType(
            {runtime.layer.name: runtime for runtime in layers}
        )
        # Longest prefix first, so a layer nested under another's prefix still wins;
        # 1x layers only: a high-DPI layer shares its prefix (see _at_ratio).
        self._by_prefix = sorted(
            (rt for rt in layers if rt.layer.pixel_ratio == 1),
            key=lambda rt: len(rt.layer.prefix),
            reverse=True,
        )

    def layer(self, name: str) -> Layer | None:
        """The configured layer called `name`, or None."""
        runtime = self.runtimes.get(name)
        return None if runtime is None else runtime.layer

    def extension_for(self, name: str, media_type: str) -> str | None:
        """The extension of layer `name`'s tiles of `media_type` (its own first), or None."""
        runtime = self.runtimes.get(name)
        if runtime is None:
            return None
        served = sorted(runtime.sources, key=lambda e: e != runtime.layer.extension)
        return next((e for e in served if runtime.media_type(e) == media_type), None)

    def resolve(self, key: str) -> TileRequest:
        """Parse an S3 key (no leading slash) into a tile of a configured layer."""
        try:
            check_key(key)
        except BadTileRequest as exc:
            raise _NotLayerPath(str(exc)) from None
        runtime = self._owner(key)
        if runtime is None:
            raise _NoLayerPrefix("no layer serves this key prefix")
        path, ratio = split_pixel_ratio(key[len(runtime.layer.prefix) :])
        runtime = self._at_ratio(runtime, ratio)
        try:
            values, parsed = _parse(runtime, path)
            if values is not None:
                runtime = runtime.with_values(tuple(d.key_value(v) for d, v in values))
        except TileOutOfRange as exc:
            raise TileNotFound(f"tile out of range: {exc}") from None
        except LayoutError as exc:
            raise _NotLayerPath(str(exc)) from None
        except (GridError, DimensionError) as exc:
            raise BadTileRequest(str(exc)) from None
        return self._checked(runtime, parsed.tile, parsed.ext, key)

    def owned(self, key: str) -> TileRequest | None:
        """The tile of `key` when it is a configured layer's key (its prefix, then a
        path in its layout), else None. Such a key is that layer's tile before any
        other reading of the path (e.g. `TILE_PREFIX=1.0.0/<name>/` and `/1.0.0/...`),
        so a key of the layer's shape that it cannot serve (outside its grid, zooms or
        extent, a value it does not declare) raises that 404 or 400 here."""
        try:
            return self.resolve(key)
        except _NotLayerKey:
            return None

    def _at_ratio(self, runtime: LayerRuntime, ratio: int) -> LayerRuntime:
        """The layer of `runtime`'s tiles at pixel ratio `ratio` (``@2x`` in a key)."""
        if ratio == 1:
            return runtime
        found = None
        if runtime.layer.pixel_ratio == 1:
            found = self.runtimes.get(pixel_ratio_name(runtime.layer.name, ratio))
        if found is None:
            raise TileNotFound(f"layer {runtime.layer.name} serves no @{ratio}x tiles")
        return found

    def request_for(
        self,
        layer_name: str,
        tile: Tile,
        ext: str | None = None,
        dimensions: Mapping[str, str] | None = None,
    ) -> TileRequest:
        """A tile addressed by layer name (the fixed TMS, WMTS and ArcGIS routes).

        The key is formatted in the layer's own layout, so these routes read and fill
        the same objects as requests for the key itself. `ext` None: the layer's format.
        `dimensions`: values by upper-case name (``{"TIME": ...}``), any spelling; none
        of the layer's named: its dimension-less key; some: the others at their default.
        """
        runtime = self.runtimes.get(layer_name)
        if runtime is None:
            raise TileNotFound(f"no layer named {layer_name[:64]!r}")
        if dimensions and runtime.layer.dimensions:
            runtime = self._named(runtime, dimensions)
        try:
            runtime.grid.check(tile)
        except GridError as exc:
            raise TileNotFound(f"tile out of range: {exc}") from None
        ext = ext or runtime.layer.extension
        if ext not in runtime.sources:
            raise TileNotFound(f"format .{ext} is not served by layer {layer_name}")
        try:
            key = runtime.key_of(tile, ext)
        except (LayoutError, GridError) as exc:
            # e.g. zoom 0 has no quadkey: the layer cannot store this tile.
            raise TileNotFound(f"layer {layer_name} cannot store this tile: {exc}") from None
        return self._checked(runtime, tile, ext, key)

    def _named(self, runtime: LayerRuntime, given: Mapping[str, str]) -> LayerRuntime:
        """The layer at the dimension values a route names, in any spelling."""
        dims = runtime.layer.dimensions
        if not any(d.name.upper() in given for d in dims):
            return runtime
        try:
            values = tuple(d.canonical(given.get(d.name.upper(), d.default)) for d in dims)
        except DimensionError as exc:
            raise BadTileRequest(str(exc)) from None
        return runtime.with_values(values)

    def _owner(self, key: str) -> LayerRuntime | None:
        """The layer whose prefix `key` starts with (the longest such prefix)."""
        return next((rt for rt in self._by_prefix if key.startswith(rt.layer.prefix)), None)

    def request_via(
        self,
        layer_name: str,
        layout_name: str,
        path: str,
        dimensions: Mapping[str, str] | None = None,
    ) -> TileRequest:
        """A tile of a named layer addressed in another layout, e.g. "tms" for
        `/1.0.0/<layer>/{z}/{x}/{y}.png` or "wmts" for `{TileMatrix}/{TileRow}/{TileCol}.png`
        (with ``@2x`` before the extension: the layer's 2x tile); `dimensions` as
        :meth:`request_for` takes them."""
        runtime = self.runtimes.get(layer_name)
        if runtime is None:
            raise TileNotFound(f"no layer named {layer_name[:64]!r}")
        path, ratio = split_pixel_ratio(path)
        runtime = self._at_ratio(runtime, ratio)
        try:
            parsed = get_layout(layout_name).parse(path, runtime.grid)
        except TileOutOfRange as exc:
            raise TileNotFound(f"tile out of range: {exc}") from None
        except (LayoutError, GridError) as exc:
            raise BadTileRequest(str(exc)) from None
        return self.request_for(runtime.layer.name, parsed.tile, parsed.ext, dimensions)

    def _checked(self, runtime: LayerRuntime, tile: Tile, ext: str, key: str) -> TileRequest:
        layer = runtime.layer
        if ext not in runtime.sources:
            raise TileNotFound(f"format .{ext} is not served by layer {layer.name}")
        if not layer.min_zoom <= tile.z <= layer.max_zoom:
            raise TileNotFound(
                f"zoom {tile.z} outside {layer.min_zoom}..{layer.max_zoom} of layer {layer.name}"
            )
        outside = extent_excludes(runtime.grid, tile, layer.extent)
        if outside and layer.outside_extent == "404":
            raise TileNotFound(f"tile outside the extent of layer {layer.name}")
        return TileRequest(runtime, tile, ext, key, outside)


def _parse(runtime: LayerRuntime, path: str) -> tuple[list | None, TileKey]:
    """The tile a key path (after the prefix) names in the layer's layout, and for a
    layer with dimensions the (dimension, value) pairs of its first segments, None for
    its dimension-less key. Values are not checked here."""
    dims = runtime.layer.dimensions
    if dims:
        values, rest = split_values(path, len(dims))
        if values is not None:
            try:
                parsed = runtime.layout.parse(rest, runtime.grid)
            except MalformedPath:
                pass  # fewer segments: the dimension-less key (or no key at all)
            else:
                return list(zip(dims, values, strict=True)), parsed
    return None, runtime.layout.parse(path, runtime.grid)
