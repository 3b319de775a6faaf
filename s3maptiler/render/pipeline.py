"""The one render pipeline: GetMap → check → decode → slice → encode.

Both the tile service and seeding (the CLI and the SQS worker) draw tiles through
this module, so a layer's settings mean the same thing whoever renders:

- :class:`LayerRuntime` is a layer resolved once: grid, layout, WMS sources (or its
  tile source), credentials, encoders, guard, and where its tiles are stored;
- :class:`Renderer` sends one GetMap for a metatile (or a single tile) through the
  layer's guard and cuts the answer into encoded tiles (:class:`Cut`); for a layer
  whose source is a tile service, it fetches the one upstream tile and passes its
  bytes through (:class:`Passed`), or re-encodes them when the formats differ.

The service (:mod:`s3maptiler.service.tilepath`) answers first and uploads in the
background; seeding (:func:`s3maptiler.seeding.run.render_metatile`) writes each tile
at once. Both store through the same blank policy (:mod:`s3maptiler.storage.blanks`).

:class:`RenderedTiles` is the finished metatile as bytes: the format in which other
workers (the spool) and other instances (the bucket lease) receive a render.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from PIL import Image

from s3maptiler import metrics
from s3maptiler.config import Layer
from s3maptiler.render.credentials import resolve
from s3maptiler.render.encode import (
    Encoder,
    SlicedTile,
    blank_tile,
    decode_metatile,
    slice_prepared,
    uniform_tile,
)
from s3maptiler.render.errors import TileMissing, WMSBadImage, WMSError
from s3maptiler.render.freshness import Freshness, freshness_of, max_age_of
from s3maptiler.render.getmap import WMSSource, resolution_params
from s3maptiler.render.guard import WMSGuard
from s3maptiler.render.tilesource import Passed, TileSource, tile_url
from s3maptiler.render.wms import WMSClient
from s3maptiler.render.wmtssource import tile_source_for
from s3maptiler.tiles.dimensions import values_path, wms_params
from s3maptiler.tiles.formats import TileFormat, for_extension, tile_content_type
from s3maptiler.tiles.grids import GridError, Tile, TileGrid
from s3maptiler.tiles.layouts import Layout, LayoutError, get_layout, with_pixel_ratio
from s3maptiler.tiles.metatile import MetaTile, MetaTileError, metatile_for
from s3maptiler.tiles.tilemath import tile_lonlat_bounds


@dataclass(frozen=True)
class LayerRuntime:
    """A configured layer with its grid, layout and WMS sources resolved once."""

    layer: Layer
    grid: TileGrid
    layout: Layout
    sources: dict[str, WMSSource | TileSource]  # by tile extension
    encoders: dict[str, Encoder]  # by tile extension, for tiles cut from metatiles
    guard: WMSGuard  # cap on concurrent GetMaps and circuit breaker for the layer's WMS
    formats: dict[str, TileFormat]  # by tile extension
    # This layer at dimension values, by values (with_values).
    _variants: dict[tuple[str, ...], LayerRuntime] = field(
        default_factory=dict, repr=False, compare=False
    )

    @property
    def tile_source(self) -> bool:
        """Whether the layer's upstream is a tile service (one upstream tile per tile)."""
        return self.layer.tile_source is not None

    def passes_through(self, ext: str) -> bool:
        """Whether a tile source's bytes are the tile (same format, no re-encoding)."""
        source, fmt = self.sources[ext], self.formats[ext]
        whole = source.zoom_offset == 0  # not a quarter of a 512 px upstream tile
        return whole and not fmt.reencoded and fmt.wms_format == source.image_format

    def metatile_of(self, tile: Tile, ext: str) -> MetaTile | None:
        """The metatile drawn for `tile`; None when the tile is the WMS's own answer
        (drawn alone, without a buffer, in the format the WMS was asked for). A tile
        source's tile is its own 1x1 metatile, so that every ring of single flight
        (threads, workers, instances) asks the upstream for it once."""
        if self.tile_source:  # 1x1, or the 2x2 quarters of a 512 px upstream tile
            return metatile_for(self.grid, tile, self.layer.metatile, 0)
        alone = self.layer.metatile == (1, 1) and self.layer.meta_buffer == 0
        if alone and not self.formats[ext].reencoded:
            return None
        return metatile_for(self.grid, tile, self.layer.metatile, self.layer.meta_buffer)

    def key_to_store(self, tile: Tile, ext: str) -> str | None:
        """The key of a neighbour cut from a metatile, or None when it is not worth
        storing (outside the layer's extent, or not expressible in its layout)."""
        extent = self.layer.extent
        if extent is not None and not overlaps(tile_lonlat_bounds(self.grid, tile), extent):
            return None
        try:
            return self.key_of(tile, ext)
        except (LayoutError, GridError):
            return None

    def key_of(self, tile: Tile, ext: str) -> str:
        """The key of `tile` with extension `ext`: the layer's prefix, its layout's path
        and, for high-DPI tiles, ``@2x`` before the extension. Raises LayoutError or
        GridError for a tile the layout cannot write."""
        path = self.layout.format(tile, ext, self.grid)
        return self.layer.prefix + with_pixel_ratio(path, self.layer.pixel_ratio)

    def content_type(self, ext: str, data: bytes) -> str:
        """The Content-Type of the tile `data` with extension `ext`: the format's, or
        for a mixed layer that of the bytes (image/jpeg or image/png)."""
        return tile_content_type(self.formats[ext], data)

    def media_type(self, ext: str) -> str:
        """What documents and WMTS FORMAT call tiles with extension `ext`."""
        return self.formats[ext].media_type

    def blank_key(self, ext: str, tile: SlicedTile) -> str | None:
        """The key of the shared blank `tile` is stored as, when it is uniform and the
        layer's ``empty_tiles`` policy is "redirect" (see storage/blanks.py), else None."""
        if not tile.uniform or self.layer.empty_tiles != "redirect":
            return None
        digest = hashlib.md5(tile.data, usedforsecurity=False).hexdigest()
        return f"{self.layer.prefix}_blank/{digest}.{ext}"

    def with_values(self, values: Sequence[str]) -> LayerRuntime:
        """The layer at one value of each of its dimensions (already checked): its
        tiles under ``{prefix}{values}/``, its GetMaps with TIME=, ELEVATION=, DIM_...=.
        It shares the layer's guard. Without dimensions, the layer itself. Built once
        per combination (at most MAX_VARIANTS kept), for the service and seeding alike."""
        if not values:
            return self
        values = tuple(values)
        variant = self._variants.get(values)
        if variant is None:
            if len(self._variants) >= MAX_VARIANTS:
                self._variants.clear()
            layer = replace(self.layer, prefix=self.layer.prefix + values_path(values))
            variant = self._variants[values] = LayerRuntime.build(layer, self.guard, values)
        return variant

    @classmethod
    def build(
        cls, layer: Layer, guard: WMSGuard, values: Sequence[str] | None = None
    ) -> LayerRuntime:
        """`values`: one per dimension of the layer; None: the defaults (what the
        layer's dimension-less keys are drawn with)."""
        grid = layer.tile_grid
        formats = {ext: for_extension(layer.tile_format, ext) for ext in layer.formats}
        # Read once per process and layer (the variants share them), then refreshed.
        credentials = resolve(layer.credentials) if layer.credentials is not None else None
        # Dimension values first, then the vendor's resolution for high-DPI tiles.
        extra_params = wms_params(layer.dimensions, values) + resolution_params(
            layer.wms_vendor, layer.pixel_ratio
        )
        sources: dict[str, WMSSource | TileSource]
        if layer.tile_source is not None:
            source = tile_source_for(layer, grid, credentials)
            chosen = [v for _, v in wms_params(layer.dimensions, values)]
            named = tuple(zip((d.identifier for d in layer.dimensions), chosen, strict=True))
            sources = dict.fromkeys(layer.formats, replace(source, dimensions=named))
        else:
            sources = {
                ext: WMSSource(
                    url=layer.wms_url,
                    layers=layer.wms_layers,
                    styles=layer.wms_styles,
                    version=layer.wms_version,
                    srs=grid.srs,
                    image_format=formats[ext].wms_format,
                    transparent=layer.transparent,
                    bgcolor=layer.bgcolor,
                    extra_params=extra_params,
                    credentials=credentials,
                )
                for ext in layer.formats
            }
        encoders = {
            ext: Encoder(
                format=formats[ext].name,
                png_compress_level=layer.png_compress_level,
                jpeg_quality=layer.jpeg_quality,
                webp_quality=layer.webp_quality,
                webp_lossless=layer.webp_lossless,
            )
            for ext in layer.formats
        }
        return cls(layer, grid, get_layout(layer.layout), sources, encoders, guard, formats)


def overlaps(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Whether two (west, south, east, north) boxes share more than an edge."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


# --------------------------------------------------------------------------- rendering


class Cut:
    """A decoded metatile, ready to be sliced into encoded tiles in any order;
    ``freshness`` is how long its tiles may be cached (layers with cache_from_wms
    whose WMS said so), else None."""

    def __init__(
        self,
        image: Image.Image,
        meta: MetaTile,
        encoder: Encoder,
        freshness: Freshness | None = None,
    ):
        self.meta = meta
        self.encoder = encoder
        self.freshness = freshness
        self._work = encoder.prepare(image)  # the mode conversion, once per metatile

    def encode(self, tiles: Iterable[Tile]) -> dict[Tile, SlicedTile]:
        """Each tile's encoded bytes and whether it is uniform, in the order given."""
        try:
            return slice_prepared(self._work, self.meta, self.encoder, tiles)
        except MetaTileError as exc:
            raise WMSBadImage(f"metatile image unusable: {exc}") from None


class Renderer:
    """GetMaps through each layer's guard, counted in the metrics, and their decoding."""

    def __init__(self, wms: WMSClient):
        self.wms = wms

    def answer(
        self, runtime: LayerRuntime, ext: str, bbox, width: int, height: int
    ) -> tuple[bytes, Freshness | None]:
        """One GetMap's image, and how long it may be cached when the layer honours its
        WMS's cache headers (``cache_from_wms``) and they say; else None. Raises
        WMSError (502/504) or WMSUnavailable (503, the WMS not asked)."""
        source = runtime.sources[ext]
        return self._guarded(runtime, lambda: self.wms.get_map_answer(source, bbox, width, height))

    def _guarded(self, runtime: LayerRuntime, fetch) -> tuple[bytes, Freshness | None]:
        """`fetch()` through the layer's guard, counted, with its lifetime."""
        name = runtime.layer.name
        layer = runtime.layer
        with runtime.guard.slot():
            started = time.perf_counter()
            try:
                data, headers = fetch()
                fresh = None
                if layer.cache_from_wms:
                    fresh = freshness_of(headers, time.time(), max_age_of(layer.cache_control))
            except WMSError as exc:
                metrics.WMS_ERRORS.labels(name, exc.kind).inc()
                if exc.kind == "auth":  # name the source: the reason does not
                    exc.set_reason(f"source of layer {name}: {exc.reason}")
                # Only an unreachable WMS trips the breaker; an error answer means it is up.
                if exc.kind in ("timeout", "connection"):
                    runtime.guard.failed()
                else:
                    runtime.guard.succeeded()
                raise
            runtime.guard.succeeded()
            metrics.WMS_SECONDS.labels(name).observe(time.perf_counter() - started)
            return data, fresh

    def tile(
        self, runtime: LayerRuntime, ext: str, tile: Tile
    ) -> tuple[SlicedTile, Freshness | None]:
        """A tile drawn on its own (1x1, no buffer) in the format asked of the WMS: the
        WMS's bytes, untouched (webp and mixed tiles are cut from a 1x1 metatile), and
        their lifetime (see :meth:`answer`). Only the redirect blank policy needs to
        know whether it is uniform."""
        size = runtime.grid.tile_size
        if runtime.tile_source:
            cut = self.metatile(runtime, ext, runtime.metatile_of(tile, ext))
            return cut.encode([tile])[tile], cut.freshness
        data, fresh = self.answer(runtime, ext, runtime.grid.tile_bbox(tile), size, size)
        if runtime.layer.empty_tiles != "redirect":
            return SlicedTile(data, False), fresh
        try:
            return SlicedTile(data, uniform_tile(data)), fresh
        except MetaTileError as exc:
            raise WMSBadImage(f"tile image unusable: {exc}") from None

    def upstream_tile(
        self, runtime: LayerRuntime, ext: str, tile: Tile
    ) -> tuple[bytes, Freshness | None]:
        """A tile source's tile, as it sent it; a blank tile where it has none and the
        layer says so (``missing = "blank"``), else TileMissing (404)."""
        source = runtime.sources[ext]
        size = source.tile_size
        url = tile_url(source, tile)
        what = f"tile {source.endpoint} {tile.z}/{tile.x}/{tile.y}"
        try:
            return self._guarded(runtime, lambda: self.wms.fetch(source, url, size, size, what))
        except TileMissing:
            if source.missing == "404":
                raise
            return blank_tile(runtime.formats[ext].media_type, size), None

    def metatile(self, runtime: LayerRuntime, ext: str, meta: MetaTile) -> Cut | Passed:
        """One GetMap for the metatile, decoded: raises WMSBadImage for an image that
        cannot be decoded or has the wrong size. For a tile source (1x1 metatiles) the
        upstream tile, passed through or decoded for re-encoding."""
        if runtime.tile_source:
            first = next(iter(meta.tiles()))
            data, fresh = self.upstream_tile(
                runtime, ext, runtime.sources[ext].upstream_tile(first)
            )
            if runtime.passes_through(ext):
                return Passed(meta, data, runtime.layer.empty_tiles == "redirect", fresh)
            image, fresh = data, fresh
        else:
            image, fresh = self.answer(runtime, ext, meta.bbox, meta.width, meta.height)
        try:
            decoded = decode_metatile(image, meta)
        except MetaTileError as exc:
            raise WMSBadImage(f"metatile image unusable: {exc}") from None
        return Cut(decoded, meta, runtime.encoders[ext], fresh)

    def budget(self, runtime: LayerRuntime) -> float:
        """Seconds a render of this layer may take at most: the wait for a WMS slot,
        every GetMap attempt with its backoff, and slack for decoding and encoding.
        Whoever waits for another's render waits this long before giving up."""
        return runtime.guard.wait + self.wms.budget() + ENCODE_SLACK


ENCODE_SLACK = 5.0  # seconds: decode and encode 64 tiles on a loaded core
# Runtimes of a layer at dimension values kept at most; past it they are built anew.
MAX_VARIANTS = 4096


# --------------------------------------------------------------------------- a finished render


class BadBundle(ValueError):
    """Bytes that are not a :class:`RenderedTiles` (truncated, or another format)."""


@dataclass(frozen=True)
class RenderedTiles:
    """Every tile of one metatile, encoded: what a render hands to whoever waited for it.

    ``to_bytes`` is one JSON header line (content type, each tile's x, y, z and byte
    length, the lifetime when there is one, and any ``fields`` the caller adds), then
    the tiles' bytes back to back.
    """

    content_type: str
    tiles: dict[Tile, bytes]
    freshness: Freshness | None = None  # from the WMS's cache headers (cache_from_wms)

    def to_bytes(self, **fields: object) -> bytes:
        index = [[tile.x, tile.y, tile.z, len(data)] for tile, data in self.tiles.items()]
        header = {**fields, "content_type": self.content_type, "tiles": index}
        if self.freshness is not None:
            header["freshness"] = dataclasses.astuple(self.freshness)
        return (
            json.dumps(header, separators=(",", ":")).encode()
            + b"\n"
            + b"".join(self.tiles.values())
        )

    @classmethod
    def from_bytes(cls, blob: bytes) -> tuple[RenderedTiles, dict]:
        """The tiles and the header's other fields; raises BadBundle."""
        header, body = read_header(blob)
        try:
            tiles: dict[Tile, bytes] = {}
            offset = 0
            for x, y, z, length in header["tiles"]:
                tiles[Tile(x, y, z)] = body[offset : offset + length]
                offset += length
            content_type = header["content_type"]
            fresh = header.get("freshness")
            freshness = None if fresh is None else Freshness(*fresh)
        except (KeyError, TypeError, ValueError) as exc:
            raise BadBundle(f"bundle header incomplete: {exc}") from None
        if offset != len(body):
            raise BadBundle(f"bundle has {len(body)} bytes of tiles, header says {offset}")
        return cls(content_type, tiles, freshness), header


def read_header(blob: bytes) -> tuple[dict, bytes]:
    """The JSON header line of a bundle (or of a bare lease record) and the rest."""
    line, _, body = blob.partition(b"\n")
    try:
        header = json.loads(line)
    except ValueError:
        raise BadBundle("bundle header is not JSON") from None
    if not isinstance(header, dict):
        raise BadBundle("bundle header is not an object")
    return header, body
