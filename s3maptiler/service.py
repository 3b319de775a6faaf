"""The tile path: cache read, single flight (process, host, fleet), render, upload.

`TileService` knows nothing about HTTP. `resolve()` turns an S3 key into a
`TileRequest` or raises `TileNotFound`/`BadTileRequest`; `get()` returns the tile's
bytes and where they came from. The key a tile is uploaded under is the key its
request was parsed from, so the next request for that key is a hit.

A miss for a tile of a metatile goes through three rings of single flight, each
"lock, re-check, render, publish":

1. the threads of this process (:mod:`s3maptiler.singleflight`): one leads, the
   others wait for its future;
2. the workers of this host (:mod:`s3maptiler.spool`): the leader takes the
   metatile's file lock, or reads the render another worker publishes;
3. the instances of the fleet (:mod:`s3maptiler.leases`): the leader takes the
   metatile's lease in the bucket, or serves the render another instance puts there.

Only then is the WMS asked, once, through :mod:`s3maptiler.pipeline`. The requested
tile is answered as soon as it is encoded; the rest of the metatile is encoded by
the slicer, published to the other rings and queued for upload.

Every wait for someone else's render lasts at most `patience`: twice the render's
own budget (the leader may itself wait that long before it renders). A waiter
whose leader failed answers with the leader's error (502/503/504), never a 500.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass

from PIL import Image

from s3maptiler import metrics
from s3maptiler.config import Layer, Settings
from s3maptiler.guard import WMSGuard
from s3maptiler.leases import Lease, Leases
from s3maptiler.pipeline import Cut, LayerRuntime, RenderedTiles, Renderer, SharedBlanks, overlaps
from s3maptiler.render.encode import SlicedTile, uniform_tile
from s3maptiler.singleflight import RenderFailed, SingleFlight, wait_for
from s3maptiler.spool import Spool, Turn
from s3maptiler.stores import StoredTile, StoreError, TileStore
from s3maptiler.tiles.formats import etag_of
from s3maptiler.tiles.grids import GridError, Tile, TileOutOfRange
from s3maptiler.tiles.layouts import LayoutError, get_layout
from s3maptiler.tiles.metatile import MetaTile
from s3maptiler.tiles.tilemath import tile_lonlat_bounds
from s3maptiler.uploads import UploadPool
from s3maptiler.wms import WMSClient

log = logging.getLogger(__name__)

MAX_KEY_LENGTH = 512
SLICER_THREADS = 2
# Metatiles queued or encoding in the background, each holding its decoded image
# (about 5 MB for 4x4 tiles with a 64 px buffer); past this the leader encodes inline.
SLICER_BACKLOG = 8
# Seconds a request thread waits for room in a full upload queue before dropping its
# tile; background encoding waits up to the render budget.
UPLOAD_WAIT = 1.0
# Seconds a request waits for another thread's read of the same key: the S3 client's
# own budget (three attempts of a 3 s connect and a 10 s read) with some slack.
STORE_READ_PATIENCE = 45.0
# Weight of the newest render in the running average a lease tells waiters to expect.
_EXPECTED_WEIGHT = 0.2


class TileRequestError(Exception):
    """The request cannot be a tile; `status` is the HTTP status to answer."""

    status = 400


class BadTileRequest(TileRequestError):
    status = 400


class TileNotFound(TileRequestError):
    status = 404


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


class TileService:
    """Cache read, then render; each metatile drawn once by the process, host and fleet."""

    def __init__(
        self,
        settings: Settings,
        store: TileStore,
        wms: WMSClient,
        uploads: UploadPool,
        spool: Spool | None = None,
        leases: Leases | None = None,
        blanks: SharedBlanks | None = None,
    ):
        self.settings = settings
        self.store = store
        self.wms = wms
        self.uploads = uploads
        self.spool = spool
        self.leases = leases
        self.blanks = blanks or SharedBlanks()
        self.renderer = Renderer(wms)
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
        self._reads: SingleFlight[StoredTile | None] = SingleFlight()
        self._tiles: SingleFlight[bytes] = SingleFlight()
        self._metatiles: SingleFlight[RenderedTiles] = SingleFlight()
        self._slicer = _Slicer(SLICER_THREADS, SLICER_BACKLOG)
        self._expected = {runtime.layer.name: 1.0 for runtime in self.layers}

    # ------------------------------------------------------------------ addresses

    def resolve(self, key: str) -> TileRequest:
        """Parse an S3 key (no leading slash) into a tile of a configured layer."""
        check_key(key)
        runtime = self._owner(key)
        if runtime is None:
            raise TileNotFound("no layer serves this key prefix")
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
        ext = ext or runtime.layer.extension
        if ext not in runtime.sources:
            raise TileNotFound(f"format .{ext} is not served by layer {layer_name}")
        try:
            key = runtime.layer.prefix + runtime.layout.format(tile, ext, runtime.grid)
        except (LayoutError, GridError) as exc:
            # e.g. zoom 0 has no quadkey: the layer cannot store this tile.
            raise TileNotFound(f"layer {layer_name} cannot store this tile: {exc}") from None
        return self._checked(runtime, tile, ext, key)

    def _owner(self, key: str) -> LayerRuntime | None:
        """The layer whose prefix `key` starts with (the longest such prefix)."""
        return next((rt for rt in self._by_prefix if key.startswith(rt.layer.prefix)), None)

    def owns(self, key: str) -> bool:
        """Whether `key` is a configured layer's key: its prefix, then a path in its
        layout (a tile in range or not). Such a key is that layer's tile before any
        other reading of the path (e.g. `TILE_PREFIX=1.0.0/<name>/` and `/1.0.0/...`)."""
        runtime = self._owner(key) if len(key) <= MAX_KEY_LENGTH else None
        if runtime is None:
            return False
        try:
            runtime.layout.parse(key[len(runtime.layer.prefix) :], runtime.grid)
        except LayoutError:
            return False
        except GridError:
            return True  # the layer's key shape, outside its grid: the layer answers 404
        return True

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
        outside = layer.extent is not None and not overlaps(
            tile_lonlat_bounds(runtime.grid, tile), layer.extent
        )
        if outside and layer.outside_extent == "404":
            raise TileNotFound(f"tile outside the extent of layer {layer.name}")
        return TileRequest(runtime, tile, ext, key, outside)

    # ------------------------------------------------------------------ the tile path

    def get(self, request: TileRequest, known_miss: bool = False) -> TileResult:
        """The tile's bytes: from the upload queue, the store, or a render.

        `known_miss` skips the store read: S3 has just redirected this key to us.
        Concurrent requests for one key share one store read; requests for tiles of
        one metatile share its GetMap, across threads, workers and instances. Raises
        WMSError (or WMSUnavailable) when no tile can be had; nothing is stored then.
        """
        if request.outside_extent:
            return self._blank(request)
        pending = self.uploads.pending(request.key)
        if pending is not None:
            return self._result(request, pending, "inflight")
        if self.settings.cache_read and not known_miss:
            stored = self._read_once(request.key)
            if stored is not None:
                etag = stored.etag or etag_of(stored.data)
                cache_control = request.layer.layer.cache_control
                return TileResult(stored.data, stored.content_type, "cache", etag, cache_control)
        reused = self._from_layout_key(request)
        if reused is not None:
            return reused
        meta = request.layer.metatile_of(request.tile)
        if meta is None or len(meta.columns) * len(meta.rows) == 1:
            # One tile per GetMap: only this process's threads coalesce. Two workers
            # asking for the very same tile at once is rare, and the conditional PUT
            # still stores it once.
            return self._single(request, meta)
        return self._from_metatile(request, meta)

    def patience(self, runtime: LayerRuntime) -> float:
        """Seconds to wait for another's render: it may wait its budget, then render."""
        return 2 * self.renderer.budget(runtime)

    def _read_once(self, key: str) -> StoredTile | None:
        future, leader = self._reads.join(key)
        if not leader:
            metrics.SINGLE_FLIGHT_WAITS.labels("thread").inc()
            return wait_for(future, STORE_READ_PATIENCE, f"the store read of {key}")
        try:
            stored = self._read_store(key)
        except BaseException as exc:
            future.set_exception(exc)
            raise
        future.set_result(stored)
        return stored

    def _read_store(self, key: str) -> StoredTile | None:
        try:
            return self.store.get(key)
        except StoreError as exc:
            # A store that cannot be read must not take tiles down: render instead.
            log.warning("store read failed, rendering instead key=%s reason=%s", key, exc)
            return None

    def _single(self, request: TileRequest, meta: MetaTile | None) -> TileResult:
        """A tile that is its own GetMap; `meta` when it still has a buffer to cut."""
        future, leader = self._tiles.join(request.key)
        if not leader:
            metrics.SINGLE_FLIGHT_WAITS.labels("thread").inc()
            data = wait_for(future, self.patience(request.layer), request.key)
            return self._result(request, data, "inflight")
        runtime, ext = request.layer, request.ext
        try:
            started = time.perf_counter()
            if meta is None:
                piece = self.renderer.tile(runtime, ext, request.tile)
            else:
                piece = self.renderer.metatile(runtime, ext, meta).encode([request.tile])
                piece = piece[request.tile]
            wms_ms = (time.perf_counter() - started) * 1000
            upload = self._upload(runtime, ext, request.key, piece, UPLOAD_WAIT)
            self._upload_layout_key(request, piece)
        except BaseException as exc:
            future.set_exception(exc)
            raise
        future.set_result(piece.data)  # after queueing: pending() answers from now on
        return self._rendered(request, piece.data, wms_ms, upload)

    def _from_metatile(self, request: TileRequest, meta: MetaTile) -> TileResult:
        runtime = request.layer
        flight = metatile_flight(self.store.location, runtime.layer, request.ext, meta)
        future, leader = self._metatiles.join(flight)
        if not leader:
            metrics.SINGLE_FLIGHT_WAITS.labels("thread").inc()
            rendered = wait_for(future, self.patience(runtime), meta.describe())
            return self._shared(request, rendered.tiles[request.tile])
        try:
            return self._lead(request, meta, flight, future)
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc)
            raise

    def _lead(
        self, request: TileRequest, meta: MetaTile, flight: str, future: Future
    ) -> TileResult:
        """This thread leads the metatile in its process: the host and fleet next."""
        runtime, ext = request.layer, request.ext
        deadline = time.monotonic() + self.patience(runtime)
        turn = self.spool.turn(flight, deadline) if self.spool else Turn(held=True)
        if turn.found is not None:
            metrics.SINGLE_FLIGHT_WAITS.labels("worker").inc()
            future.set_result(turn.found)
            return self._shared(request, turn.found.tiles[request.tile])
        lease = None
        try:
            if self.leases is not None:
                budget = self.renderer.budget(runtime)
                expected = self._expected[runtime.layer.name]
                claim = self.leases.claim(flight, deadline, budget, expected)
                if claim.found is not None:
                    metrics.SINGLE_FLIGHT_WAITS.labels("instance").inc()
                    if claim.took is not None:
                        self._learn(runtime, claim.took)
                    self._publish_here(flight, claim.found, turn)
                    future.set_result(claim.found)
                    return self._shared(request, claim.found.tiles[request.tile])
                lease = claim.lease
            started = time.perf_counter()
            cut = self.renderer.metatile(runtime, ext, meta)
            wms_ms = (time.perf_counter() - started) * 1000
            first = cut.encode([request.tile])[request.tile]
        except BaseException as exc:
            self._failed(flight, turn, lease, exc)
            raise
        upload = self._upload(runtime, ext, request.key, first, UPLOAD_WAIT)
        self._upload_layout_key(request, first)
        finish = functools.partial(
            self._finish, request, cut, first.data, flight, future, turn, lease, started
        )
        abandon = functools.partial(
            self._failed, flight, turn, lease, RenderFailed("the service is stopping"), future
        )
        self._slicer.run(finish, abandon)
        return self._rendered(request, first.data, wms_ms, upload)

    def _finish(
        self,
        request: TileRequest,
        cut: Cut,
        first: bytes,
        flight: str,
        future: Future,
        turn: Turn,
        lease: Lease | None,
        started: float,
    ) -> None:
        """Encode the rest of the metatile, publish it to every ring, queue its uploads."""
        runtime, ext = request.layer, request.ext
        try:
            rest = cut.encode(t for t in cut.meta.tiles() if t != request.tile)
            tiles = {request.tile: first, **{tile: piece.data for tile, piece in rest.items()}}
            rendered = RenderedTiles(runtime.content_type(ext), tiles)
            self._publish_here(flight, rendered, turn)
            future.set_result(rendered)
        except BaseException as exc:
            log.exception("slicing metatile %s failed", cut.meta.describe())
            self._failed(flight, turn, lease, exc, future)
            return
        self._learn(runtime, time.perf_counter() - started)
        if lease is not None:
            self.leases.publish(lease, rendered)
        wait = self.renderer.budget(runtime)
        for tile, piece in rest.items():
            key = runtime.key_to_store(tile, ext)
            if key is not None:
                self._upload(runtime, ext, key, piece, wait)

    def _publish_here(self, flight: str, rendered: RenderedTiles, turn: Turn) -> None:
        """Hand a finished render to this host's other workers, then let them go."""
        if self.spool is not None:
            self.spool.publish(flight, rendered)
        turn.release()

    def _failed(
        self,
        flight: str,
        turn: Turn,
        lease: Lease | None,
        exc: BaseException,
        future: Future | None = None,
    ) -> None:
        """Tell every ring that waits on this render that it failed, and how."""
        if self.spool is not None:
            self.spool.publish_failure(flight, exc)
        turn.release()
        if lease is not None:
            self.leases.fail(lease, exc)
        if future is not None and not future.done():
            future.set_exception(exc)

    def _learn(self, runtime: LayerRuntime, seconds: float) -> None:
        name = runtime.layer.name
        self._expected[name] += _EXPECTED_WEIGHT * (seconds - self._expected[name])

    def _upload(
        self, runtime: LayerRuntime, ext: str, key: str, piece: SlicedTile, wait: float
    ) -> str:
        """Queue a rendered tile through the layer's blank policy: "queued" or "dropped"."""
        outcome = "queued"
        for job in self.blanks.jobs(runtime, ext, key, piece):
            if self.uploads.submit(job, wait):
                metrics.UPLOAD_QUEUE.inc()  # the pool's on_result decrements it: exact, no lock
            else:
                metrics.UPLOADS.labels("dropped").inc()
                self.blanks.settled(job, "dropped")
                outcome = "dropped"
        return outcome

    # ------------------------------------------------------------------ other keys

    def _layout_key(self, request: TileRequest) -> str | None:
        """The layer's own key of the tile when the request came by another key (an
        ArcGIS REST key through the redirect), else None. Tiles cut from a metatile
        are stored under their layout keys."""
        key = request.layer.key_to_store(request.tile, request.ext)
        return key if key != request.key else None

    def _from_layout_key(self, request: TileRequest) -> TileResult | None:
        """A tile asked by another key that is already queued or stored under the
        layer's own key (a neighbour's metatile drew it): no GetMap, and it is stored
        under the key it was asked by too, so that key's next request is a hit."""
        alias = self._layout_key(request)
        if alias is None or not self.settings.cache_read:
            return None
        data = self.uploads.pending(alias)
        if data is not None:
            return self._shared(request, data)
        stored = self._read_once(alias)
        if stored is None:
            return None
        result = self._shared(request, stored.data)
        return dataclasses.replace(result, source="cache", etag=stored.etag or result.etag)

    def _shared(self, request: TileRequest, data: bytes) -> TileResult:
        """A tile of another request's render ("inflight"): its uploads queued that
        tile under the layer's own key; a request by another key stores it there too."""
        result = self._result(request, data, "inflight")
        if self._layout_key(request) is None:
            return result
        runtime = request.layer
        uniform = runtime.layer.empty_tiles == "redirect" and uniform_tile(data)
        upload = self._upload(runtime, request.ext, request.key, SlicedTile(data, uniform), 0)
        return dataclasses.replace(result, upload=upload)

    def _upload_layout_key(self, request: TileRequest, piece: SlicedTile) -> None:
        """A tile rendered for a request by another key: under the layer's key too."""
        alias = self._layout_key(request)
        if alias is not None:
            self._upload(request.layer, request.ext, alias, piece, UPLOAD_WAIT)

    def drain(self, timeout: float) -> int:
        """Finish slicing, then the uploads, within `timeout` seconds; returns how
        many uploads were left undone (on shutdown: gunicorn's worker_exit)."""
        deadline = time.monotonic() + timeout
        self._slicer.drain(deadline)
        return self.uploads.drain(max(deadline - time.monotonic(), 0.1))

    # ------------------------------------------------------------------ answers

    def _blank(self, request: TileRequest) -> TileResult:
        """Outside the layer's extent: a blank tile, stored like any other so the S3
        redirect does not send this key back to the service forever."""
        content_type = request.layer.content_type(request.ext)
        data = blank_tile(content_type, request.layer.grid.tile_size)
        upload = self._upload(request.layer, request.ext, request.key, SlicedTile(data, False), 0)
        result = self._result(request, data, "blank")
        return dataclasses.replace(result, upload=upload)

    def _rendered(self, request: TileRequest, data: bytes, wms_ms: float, upload: str):
        result = self._result(request, data, "render")
        return dataclasses.replace(result, wms_ms=wms_ms, upload=upload)

    def _result(self, request: TileRequest, data: bytes, source: str) -> TileResult:
        content_type = request.layer.content_type(request.ext)
        return TileResult(
            data, content_type, source, etag_of(data), request.layer.layer.cache_control
        )


def check_key(key: str) -> None:
    """BadTileRequest unless `key` could be an S3 key the service writes: bounded,
    printable ASCII, no backslash, no empty, '.' or '..' segment."""
    if len(key) > MAX_KEY_LENGTH:
        raise BadTileRequest(f"key longer than {MAX_KEY_LENGTH} characters")
    if not key.isascii() or not key.isprintable() or "\\" in key:
        raise BadTileRequest("key has characters a tile key never has")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise BadTileRequest("key has an empty, '.' or '..' segment")


def metatile_flight(store_location: str, layer: Layer, ext: str, meta: MetaTile) -> str:
    """A metatile's id across processes and hosts (hex): the same store, layer,
    format and geometry give the same id, and so the same lock, spool entry and lease."""
    text = (
        f"{store_location}|{layer.name}|{layer.prefix}|{ext}|{meta.describe()}"
        f"|{layer.metatile}|{layer.meta_buffer}"
    )
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


class _Slicer:
    """Encodes the rest of each metatile after its first tile was answered.

    At most `backlog` metatiles are queued or encoding at once, each holding its
    decoded image; past that `run` encodes on the caller's thread, so memory stays
    bounded and a burst slows its own requests down instead. `drain` keeps to its
    deadline: jobs not started by then are abandoned (their waiters get a 502).
    """

    def __init__(self, threads: int, backlog: int):
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="slicer")
        self._room = threading.BoundedSemaphore(backlog)
        self._lock = threading.Lock()
        self._jobs: dict[Future, Callable[[], None]] = {}
        self._closed = False

    def run(self, work: Callable[[], None], abandon: Callable[[], None]) -> None:
        if self._closed or not self._room.acquire(blocking=False):
            work()
            return
        try:
            job = self._executor.submit(work)
        except RuntimeError:  # shut down meanwhile
            self._room.release()
            work()
            return
        with self._lock:
            self._jobs[job] = abandon
        job.add_done_callback(self._done)

    def _done(self, job: Future) -> None:
        with self._lock:
            self._jobs.pop(job, None)
        self._room.release()

    def drain(self, deadline: float) -> None:
        self._closed = True
        with self._lock:
            jobs = list(self._jobs)
        futures_wait(jobs, max(deadline - time.monotonic(), 0.0))
        with self._lock:
            left = dict(self._jobs)
        for job, abandon in left.items():
            if job.cancel():
                abandon()
        if left:
            log.error(
                "%d metatiles not finished when draining; their tiles are not stored", len(left)
            )
        self._executor.shutdown(wait=False, cancel_futures=True)


@functools.cache
def blank_tile(media_type: str, size: int) -> bytes:
    """A transparent PNG, or a white JPEG, of size x size pixels."""
    out = io.BytesIO()
    if media_type == "image/jpeg":
        Image.new("RGB", (size, size), (255, 255, 255)).save(out, "JPEG", quality=90)
    else:
        Image.new("RGBA", (size, size), (0, 0, 0, 0)).save(out, "PNG", optimize=True)
    return out.getvalue()
