"""The tile path: cache read, single-flight render from the WMS, background upload.

`TileService` knows nothing about HTTP. `resolve()` turns an S3 key into a
`TileRequest` or raises `TileNotFound`/`BadTileRequest`; `get()` returns the tile's
bytes and where they came from. The key a tile is uploaded under is the key its
request was parsed from, so the next request for that key is a hit.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import logging
import re
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass
from typing import TypeVar

from PIL import Image

from . import metrics
from .config import TILE_FORMATS, Layer, Settings, TileFormat
from .grids import GridError, Tile, TileGrid, TileOutOfRange, tile_lonlat_bounds
from .guard import WMSGuard
from .layouts import Layout, LayoutError, get_layout
from .metatile import (
    Encoder,
    MetaTile,
    MetaTileError,
    decode_metatile,
    metatile_for,
    slice_image,
    uniform_tile,
)
from .stores import StoreError, TileStore
from .uploads import UploadJob, UploadPool
from .wms import WMSBadImage, WMSClient, WMSError, WMSSource

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_KEY_LENGTH = 512
RECENT_METATILES = 4096  # remembered to avoid drawing a metatile twice in quick succession
ARCGIS_TILE_KEY = re.compile(r"arcgis/rest/services/([^/]+)/MapServer/tile/([^/]+)/([^/]+)/([^/]+)")


class TileRequestError(Exception):
    """The request cannot be a tile; `status` is the HTTP status to answer."""

    status = 400


class BadTileRequest(TileRequestError):
    status = 400


class TileNotFound(TileRequestError):
    status = 404


@dataclass(frozen=True)
class LayerRuntime:
    """A configured layer with its grid, layout and WMS sources resolved once."""

    layer: Layer
    grid: TileGrid
    layout: Layout
    sources: dict[str, WMSSource]  # by tile extension
    encoders: dict[str, Encoder]  # by tile extension, for tiles cut from metatiles
    guard: WMSGuard  # cap on concurrent GetMaps and circuit breaker for the layer's WMS

    def metatile_of(self, tile: Tile) -> MetaTile | None:
        """The metatile drawn for `tile`; None when the layer draws tiles one by one."""
        if self.layer.metatile == (1, 1) and self.layer.meta_buffer == 0:
            return None
        return metatile_for(self.grid, tile, self.layer.metatile, self.layer.meta_buffer)

    def key_to_store(self, tile: Tile, ext: str) -> str | None:
        """The key of a neighbour cut from a metatile, or None when it is not worth
        storing (outside the layer's extent, or not expressible in its layout)."""
        extent = self.layer.extent
        if extent is not None and not _overlaps(tile_lonlat_bounds(self.grid, tile), extent):
            return None
        try:
            return self.layer.prefix + self.layout.format(tile, ext, self.grid)
        except (LayoutError, GridError):
            return None

    @classmethod
    def build(cls, layer: Layer, guard: WMSGuard) -> LayerRuntime:
        grid = layer.tile_grid
        sources = {
            ext: WMSSource(
                url=layer.wms_url,
                layers=layer.wms_layers,
                styles=layer.wms_styles,
                version=layer.wms_version,
                srs=grid.srs,
                image_format=format_for(layer, ext).wms_format,
                transparent=layer.transparent,
                bgcolor=layer.bgcolor,
            )
            for ext in layer.formats
        }
        encoders = {
            ext: Encoder(
                format=format_for(layer, ext).name,
                png_compress_level=layer.png_compress_level,
                jpeg_quality=layer.jpeg_quality,
            )
            for ext in layer.formats
        }
        return cls(layer, grid, get_layout(layer.layout), sources, encoders, guard)


def format_for(layer: Layer, ext: str) -> TileFormat:
    """The encoding of a layer's tiles with this extension (png8 layers keep their palette)."""
    own = layer.tile_format
    if ext == own.extension or (own.extension == "jpg" and ext == "jpeg"):
        return own
    return TILE_FORMATS["jpeg" if ext in ("jpg", "jpeg") else ext]


@dataclass(frozen=True)
class TileRequest:
    layer: LayerRuntime
    tile: Tile
    ext: str
    key: str
    outside_extent: bool = False  # answered with a blank tile (the layer's outside_extent)


@dataclass(frozen=True)
class TileResult:
    data: bytes
    content_type: str
    source: str  # "cache" | "render" | "inflight" | "blank"
    etag: str  # quoted, like S3's
    cache_control: str
    wms_ms: float | None = None
    upload: str = "-"  # "queued" | "dropped" | "-"


def etag_of(data: bytes) -> str:
    """The ETag S3 gives a single-part upload: the quoted MD5 hex of the bytes."""
    return '"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"'


class TileService:
    """Cache read, then render; one render per tile key at a time in this process."""

    def __init__(self, settings: Settings, store: TileStore, wms: WMSClient, uploads: UploadPool):
        self.settings = settings
        self.store = store
        self.wms = wms
        self.uploads = uploads
        self.layers = [
            LayerRuntime.build(
                layer,
                WMSGuard(
                    settings.wms_max_concurrent,
                    settings.wms_queue_wait,
                    settings.wms_breaker_failures,
                    settings.wms_breaker_cooldown,
                ),
            )
            for layer in settings.layers
        ]
        self.by_name = {runtime.layer.name: runtime for runtime in self.layers}
        # Longest prefix first, so a layer nested under another's prefix still wins.
        self._by_prefix = sorted(self.layers, key=lambda rt: len(rt.layer.prefix), reverse=True)
        self._inflight: dict[Hashable, Future] = {}
        self._recent: dict[Hashable, None] = {}  # metatiles drawn lately, oldest first
        self._slicing: dict[Hashable, Future] = {}  # metatiles whose other tiles are encoding
        self._blanks: set[str] = set()  # shared blank tiles this process has queued
        # Encodes the rest of a metatile after the requested tile has been answered.
        self._slicer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="slicer")
        self._inflight_lock = threading.Lock()
        # A waiter gives up on another thread's render after the WMS could have answered.
        self._wait_timeout = settings.wms_connect_timeout + settings.wms_timeout + 1.0

    def resolve(self, key: str) -> TileRequest:
        """Parse an S3 key (no leading slash) into a tile of a configured layer."""
        if len(key) > MAX_KEY_LENGTH:
            raise BadTileRequest(f"key longer than {MAX_KEY_LENGTH} characters")
        if not key.isascii() or not key.isprintable() or "\\" in key:
            raise BadTileRequest("key has characters a tile key never has")
        parts = key.split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise BadTileRequest("key has an empty, '.' or '..' segment")
        runtime = next((rt for rt in self._by_prefix if key.startswith(rt.layer.prefix)), None)
        if runtime is None:
            arcgis = ARCGIS_TILE_KEY.fullmatch(key)
            if arcgis is None:
                raise TileNotFound("no layer serves this key prefix")
            return self._arcgis_key(key, *arcgis.groups())
        layer = runtime.layer
        try:
            parsed = runtime.layout.parse(key[len(layer.prefix) :], runtime.grid)
        except TileOutOfRange as exc:
            raise TileNotFound(f"tile out of range: {exc}") from None
        except (LayoutError, GridError) as exc:
            raise BadTileRequest(str(exc)) from None
        return self._checked(runtime, parsed.tile, parsed.ext, key)

    def request_for(self, layer_name: str, tile: Tile, ext: str | None = None) -> TileRequest:
        """A tile addressed by layer name (the fixed TMS, WMTS and ArcGIS routes).

        The key is formatted in the layer's own layout, so these routes read and fill
        the same objects as requests for the key itself. `ext` None: the layer's format.
        """
        runtime = self.by_name.get(layer_name)
        if runtime is None:
            raise TileNotFound(f"no layer named {layer_name[:64]!r}")
        try:
            runtime.grid.check(tile)
        except GridError as exc:
            raise TileNotFound(f"tile out of range: {exc}") from None
        ext = ext or runtime.layer.tile_format.extension
        if ext not in runtime.sources:
            raise TileNotFound(f"format .{ext} is not served by layer {layer_name}")
        try:
            key = runtime.layer.prefix + runtime.layout.format(tile, ext, runtime.grid)
        except (LayoutError, GridError) as exc:
            # e.g. zoom 0 has no quadkey: the layer cannot store this tile.
            raise TileNotFound(f"layer {layer_name} cannot store this tile: {exc}") from None
        return self._checked(runtime, tile, ext, key)

    def _arcgis_key(self, key: str, name: str, z: str, row: str, col: str) -> TileRequest:
        """`arcgis/rest/services/<layer>/MapServer/tile/{z}/{row}/{col}`, the only tile
        URL ArcGIS clients know, as a key of its own: a bucket holding the published
        MapServer document fills these keys through the redirect, and serves them next."""
        runtime = self.by_name.get(name)
        ext = runtime.layer.tile_format.extension if runtime else "png"
        request = self.request_via(name, "wmts", f"{z}/{row}/{col}.{ext}")
        return dataclasses.replace(request, key=key)

    def request_via(self, layer_name: str, layout_name: str, path: str) -> TileRequest:
        """A tile of a named layer addressed in another layout, e.g. "tms" for
        `/1.0.0/<layer>/{z}/{x}/{y}.png` or "wmts" for `{TileMatrix}/{TileRow}/{TileCol}.png`."""
        runtime = self.by_name.get(layer_name)
        if runtime is None:
            raise TileNotFound(f"no layer named {layer_name[:64]!r}")
        try:
            parsed = get_layout(layout_name).parse(path, runtime.grid)
        except TileOutOfRange as exc:
            raise TileNotFound(f"tile out of range: {exc}") from None
        except (LayoutError, GridError) as exc:
            raise BadTileRequest(str(exc)) from None
        return self.request_for(layer_name, parsed.tile, parsed.ext)

    def _checked(self, runtime: LayerRuntime, tile: Tile, ext: str, key: str) -> TileRequest:
        layer = runtime.layer
        if ext not in runtime.sources:
            raise TileNotFound(f"format .{ext} is not served by layer {layer.name}")
        if not layer.min_zoom <= tile.z <= layer.max_zoom:
            raise TileNotFound(
                f"zoom {tile.z} outside {layer.min_zoom}..{layer.max_zoom} of layer {layer.name}"
            )
        outside = layer.extent is not None and not _overlaps(
            tile_lonlat_bounds(runtime.grid, tile), layer.extent
        )
        if outside and layer.outside_extent == "404":
            raise TileNotFound(f"tile outside the extent of layer {layer.name}")
        return TileRequest(runtime, tile, ext, key, outside)

    def get(self, request: TileRequest, known_miss: bool = False) -> TileResult:
        """The tile's bytes: from the upload queue, the store, or a render.

        `known_miss` skips the store read: S3 has just redirected this key to us.
        Concurrent requests for one key share one store read and one render; requests
        for tiles of one metatile share its GetMap. Raises WMSError when the WMS
        fails; nothing is stored then.
        """
        if request.outside_extent:
            return self._blank(request)
        pending = self.uploads.pending(request.key)
        if pending is not None:
            return self._result(request, pending, "inflight")
        result, leader = self._once(request.key, lambda: self._load(request, known_miss))
        if leader:
            return result
        return dataclasses.replace(result, source="inflight", wms_ms=None, upload="-")

    def _load(self, request: TileRequest, known_miss: bool) -> TileResult:
        """Read the store (the winner of the key's single flight only), else render."""
        if self.settings.cache_read and not known_miss:
            stored = self._read_store(request.key)
            if stored is not None:
                return TileResult(
                    stored.data,
                    stored.content_type,
                    "cache",
                    stored.etag or etag_of(stored.data),
                    request.layer.layer.cache_control,
                )
        meta = request.layer.metatile_of(request.tile)
        if meta is None:
            return self._render(request, None)[0]
        flight = (request.layer.layer.name, request.ext, meta)
        (result, tiles), leader = self._once(
            flight, lambda: self._render_metatile(request, meta, flight)
        )
        if leader:
            return result
        data = tiles.result(self._wait_timeout).get(request.tile)
        if data is not None:
            upload = self._store_alias(request, data)
            return self._result(request, data, "inflight", upload)
        return self._reuse(request) or self._render(request, meta, flight)[0]

    def _once(self, flight: Hashable, work: Callable[[], T]) -> tuple[T, bool]:
        """Run `work` unless another thread is running it for the same `flight`: then
        wait for that one (up to the WMS's own timeouts) and share its outcome.
        Returns the value and whether this thread did the work."""
        with self._inflight_lock:
            future = self._inflight.get(flight)
            leader = future is None
            if leader:
                future = self._inflight[flight] = Future()
        if not leader:
            try:
                metrics.SINGLE_FLIGHT_WAITS.inc()
                return future.result(self._wait_timeout), False
            except FutureTimeout:
                log.warning(
                    "waited %.1fs for another request, going ahead: %s", self._wait_timeout, flight
                )
                return work(), True
        try:
            value = work()
        except BaseException as exc:
            future.set_exception(exc)
            raise
        else:
            future.set_result(value)
            return value, True
        finally:
            with self._inflight_lock:
                self._inflight.pop(flight, None)

    def _read_store(self, key: str):
        try:
            return self.store.get(key)
        except StoreError as exc:
            # A store that cannot be read must not take tiles down: render instead.
            log.warning("store read failed, rendering instead key=%s reason=%s", key, exc)
            return None

    def _render_metatile(
        self, request: TileRequest, meta: MetaTile, flight: Hashable
    ) -> tuple[TileResult, Future]:
        """Draw the metatile, unless another request drew it a moment ago: a request
        that read the store just before that render finished must not draw it again."""
        slicing = self._slicing.get(flight)
        if slicing is not None:
            futures_wait([slicing], self._wait_timeout)
        if flight in self._recent:
            reused = self._reuse(request)
            if reused is not None:
                return reused, _done({request.tile: reused.data})
        return self._render(request, meta, flight)

    def _layout_key(self, request: TileRequest) -> str | None:
        """The layer's own key of the tile when the request came by another key (an
        ArcGIS REST key), else None. A metatile's tiles are stored under layout keys."""
        key = request.layer.key_to_store(request.tile, request.ext)
        return key if key != request.key else None

    def _store_alias(self, request: TileRequest, data: bytes) -> str:
        """Also store a tile cut from another request's metatile under the key this
        request came by, so the next request for that key is a hit too. Returns the
        upload outcome for the log: "queued", "dropped", or "-" (nothing to store)."""
        if self._layout_key(request) is None:
            return "-"
        runtime = request.layer
        uniform = runtime.layer.empty_tiles == "redirect" and uniform_tile(data)
        queued = self._upload_tile(runtime, request.key, request.ext, data, uniform)
        return "queued" if queued else "dropped"

    def _reuse(self, request: TileRequest) -> TileResult | None:
        """The tile from the upload queue or the store, after a recent render: under
        the request's key, or under the layer's own key (then stored under both)."""
        data = self.uploads.pending(request.key)
        if data is not None:
            return self._result(request, data, "inflight")
        stored = self._read_store(request.key)
        alias = self._layout_key(request) if stored is None else None
        if alias is not None:
            data = self.uploads.pending(alias)
            if data is not None:
                return self._result(request, data, "inflight", self._store_alias(request, data))
            stored = self._read_store(alias)
            upload = self._store_alias(request, stored.data) if stored is not None else "-"
        else:
            upload = "-"
        if stored is None:
            return None
        return TileResult(
            stored.data,
            stored.content_type,
            "cache",
            stored.etag or etag_of(stored.data),
            request.layer.layer.cache_control,
            upload=upload,
        )

    def _render(
        self, request: TileRequest, meta: MetaTile | None, flight: Hashable = None
    ) -> tuple[TileResult, Future]:
        """One GetMap for the tile (meta None) or its metatile. The requested tile is
        answered as soon as it is encoded; the other tiles of a metatile are encoded
        in the background. Returns the result and a future of every tile's bytes."""
        runtime = request.layer
        source = runtime.sources[request.ext]
        started = time.perf_counter()
        if meta is None:
            # 1x1 without a buffer: the WMS's bytes are the tile, no decode or re-encode.
            size = runtime.grid.tile_size
            bbox = runtime.grid.tile_bbox(request.tile)
            data = self._get_map(runtime, source, bbox, size, size)
            wms_ms = (time.perf_counter() - started) * 1000
            tiles = _done({request.tile: data})
            # Only the redirect option needs to know; it costs one small decode.
            uniform = runtime.layer.empty_tiles == "redirect" and uniform_tile(data)
        else:
            image = self._get_map(runtime, source, meta.bbox, meta.width, meta.height)
            wms_ms = (time.perf_counter() - started) * 1000
            encoder = runtime.encoders[request.ext]
            try:
                work = encoder.prepare(decode_metatile(image, meta))
                data, uniform = slice_image(work, meta, encoder, [request.tile])[request.tile]
            except MetaTileError as exc:
                raise WMSBadImage(f"metatile image unusable: {exc}") from None
            tiles = Future()
            with self._inflight_lock:
                self._slicing[flight] = tiles
                self._recent[flight] = None
                if len(self._recent) > RECENT_METATILES:
                    self._recent.pop(next(iter(self._recent)))
            self._slicer.submit(self._slice_rest, request, meta, work, data, tiles, flight)
        content_type = media_type(source)
        queued = self._upload_tile(runtime, request.key, request.ext, data, uniform)
        upload = "queued" if queued else "dropped"
        layout_key = self._layout_key(request)
        if layout_key is not None:  # asked by an ArcGIS REST key: the layer's key too
            self._upload_tile(runtime, layout_key, request.ext, data, uniform)
        result = TileResult(
            data, content_type, "render", etag_of(data), runtime.layer.cache_control, wms_ms, upload
        )
        return result, tiles

    def _get_map(self, runtime: LayerRuntime, source: WMSSource, bbox, width: int, height: int):
        """One GetMap through the layer's guard, counted in the metrics."""
        name = runtime.layer.name
        with runtime.guard.slot():
            started = time.perf_counter()
            try:
                data = self.wms.get_map(source, bbox, width, height)
            except WMSError as exc:
                metrics.WMS_ERRORS.labels(name, exc.kind).inc()
                # Only an unreachable WMS trips the breaker; an error answer means it is up.
                if exc.kind in ("timeout", "connection"):
                    runtime.guard.failed()
                else:
                    runtime.guard.succeeded()
                raise
            runtime.guard.succeeded()
            metrics.WMS_SECONDS.labels(name).observe(time.perf_counter() - started)
            return data

    def _upload_tile(
        self, runtime: LayerRuntime, key: str, ext: str, data: bytes, uniform: bool
    ) -> bool:
        """Queue a rendered tile. With the layer's `empty_tiles = "redirect"`, a uniform
        tile becomes a zero-byte object redirecting to one shared blank of the same
        bytes (written once per process), so an ocean costs one stored image. `ext` is
        the tile's format: ArcGIS REST keys (`.../MapServer/tile/{z}/{row}/{col}`) have none."""
        content_type = media_type(runtime.sources[ext])
        cache_control = runtime.layer.cache_control or None
        blank = None
        if uniform and runtime.layer.empty_tiles == "redirect":
            digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
            blank = f"{runtime.layer.prefix}_blank/{digest}.{ext}"
            with self._inflight_lock:
                first = blank not in self._blanks
                self._blanks.add(blank)
            if first:
                self._upload(UploadJob(blank, data, content_type, cache_control))
        return self._upload(UploadJob(key, data, content_type, cache_control, blank))

    def _upload(self, job: UploadJob) -> bool:
        queued = self.uploads.submit(job)
        if queued:
            metrics.UPLOAD_QUEUE.inc()  # the pool's on_result decrements it: exact, no lock
        else:
            metrics.UPLOADS.labels("dropped").inc()
        return queued

    def _slice_rest(
        self, request, meta: MetaTile, work, data: bytes, tiles: Future, flight: Hashable
    ) -> None:
        """Encode and queue the other tiles of a metatile (runs on the slicer thread)."""
        runtime = request.layer
        try:
            rest = [tile for tile in meta.tiles() if tile != request.tile]
            sliced = slice_image(work, meta, runtime.encoders[request.ext], rest)
            for tile, piece in sliced.items():
                key = runtime.key_to_store(tile, request.ext)
                if key is not None:
                    self._upload_tile(runtime, key, request.ext, piece.data, piece.uniform)
            tiles.set_result({request.tile: data, **{t: p.data for t, p in sliced.items()}})
        except BaseException as exc:  # waiters must hear of it, not hang
            log.exception("slicing metatile %s failed", meta.describe())
            tiles.set_exception(exc)
        finally:
            with self._inflight_lock:
                self._slicing.pop(flight, None)

    def drain(self, timeout: float) -> int:
        """Finish slicing, then the uploads, within `timeout` seconds; returns how
        many uploads were left undone (on shutdown: gunicorn's worker_exit)."""
        deadline = time.monotonic() + timeout
        self._slicer.shutdown(wait=True)
        return self.uploads.drain(max(deadline - time.monotonic(), 0.1))

    def _blank(self, request: TileRequest) -> TileResult:
        """Outside the layer's extent: a blank tile, stored like any other so the S3
        redirect does not send this key back to the service forever."""
        content_type = media_type(request.layer.sources[request.ext])
        data = blank_tile(content_type, request.layer.grid.tile_size)
        cache_control = request.layer.layer.cache_control
        queued = self._upload(UploadJob(request.key, data, content_type, cache_control))
        return TileResult(
            data,
            content_type,
            "blank",
            etag_of(data),
            cache_control,
            None,
            "queued" if queued else "dropped",
        )

    def _result(
        self, request: TileRequest, data: bytes, source: str, upload: str = "-"
    ) -> TileResult:
        content_type = media_type(request.layer.sources[request.ext])
        return TileResult(
            data,
            content_type,
            source,
            etag_of(data),
            request.layer.layer.cache_control,
            upload=upload,
        )


def _done(value) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


def _overlaps(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Whether two (west, south, east, north) boxes share more than an edge."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@functools.cache
def blank_tile(media_type: str, size: int) -> bytes:
    """A transparent PNG, or a white JPEG, of size x size pixels."""
    out = io.BytesIO()
    if media_type == "image/jpeg":
        Image.new("RGB", (size, size), (255, 255, 255)).save(out, "JPEG", quality=90)
    else:
        Image.new("RGBA", (size, size), (0, 0, 0, 0)).save(out, "PNG", optimize=True)
    return out.getvalue()


def media_type(source: WMSSource) -> str:
    """The Content-Type of a tile: the WMS FORMAT without parameters ("; mode=8bit")."""
    return source.image_format.split(";", 1)[0].strip()
