"""The one render pipeline: GetMap → check → decode → slice → encode.

Both the tile service and seeding (the CLI and the SQS worker) draw tiles through
this module, for a layer resolved once (:class:`~s3maptiler.render.runtime.LayerRuntime`):

- :class:`Renderer` sends one GetMap for a metatile (or a single tile) through the
  layer's guard and cuts the answer into encoded tiles (:class:`Cut`); for a layer
  whose source is a tile service, it fetches the one upstream tile and passes its
  bytes through (:class:`Passed`), or re-encodes them when the formats differ.

What a rendered tile becomes in the store is :mod:`s3maptiler.render.tilewrites`'s one
recipe, for the service (which answers first and uploads in the background,
:mod:`s3maptiler.service.tilepath`) and seeding (which writes each tile at once,
:func:`s3maptiler.seeding.run.render_metatile`) alike.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from PIL import Image

from s3maptiler import metrics
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
from s3maptiler.render.runtime import LayerRuntime
from s3maptiler.render.tilesource import Passed, tile_url
from s3maptiler.render.wms import WMSClient
from s3maptiler.tiles.grids import Tile
from s3maptiler.tiles.metatile import MetaTile, MetaTileError

__all__ = ["ENCODE_SLACK", "Cut", "Renderer"]


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
