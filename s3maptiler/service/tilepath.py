"""The tile path: cache read, single flight (process, host, fleet), render, upload.

`TileService` knows nothing about HTTP. `resolve()` turns an S3 key into a
`TileRequest` or raises `TileNotFound`/`BadTileRequest`; `get()` returns the tile's
bytes and where they came from. The key a tile is uploaded under is the key its
request was parsed from, so the next request for that key is a hit.

A miss for a tile of a metatile goes through three rings of single flight, each
"lock, re-check, render, publish":

1. the threads of this process (:mod:`s3maptiler.service.singleflight`): one leads, the
   others wait for its future;
2. the workers of this host (:mod:`s3maptiler.service.spool`): the leader takes the
   metatile's file lock, or reads the render another worker publishes;
3. the instances of the fleet (:mod:`s3maptiler.service.leases`): the leader takes the
   metatile's lease in the bucket, or serves the render another instance puts there.

Only then is the WMS asked, once, through :mod:`s3maptiler.render.pipeline`. The requested
tile is answered as soon as it is encoded; the rest of the metatile is encoded in
the background pool (:mod:`s3maptiler.service.background`), published to the other
rings and queued for upload. Every tile goes to the store by the one recipe of
:mod:`s3maptiler.render.tilewrites`, which seeding uses too.

Every wait for someone else's render lasts at most `patience`: twice the render's
own budget (the leader may itself wait that long before it renders). A waiter
whose leader failed answers with the leader's error (502/503/504), never a 500.

One module of about 550 lines on purpose: the tile path is one flow (read, the three
rings, render, publish, upload), and splitting it would scatter the order of its
steps; addresses, the rings and the background pool already live beside it. The face
the routes use besides `get` (`seed`, `upload_stats`) is a few lines after `__init__`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from s3maptiler import metrics
from s3maptiler.config import Layer, Settings, base_layer_name
from s3maptiler.render import freshness
from s3maptiler.render.encode import SlicedTile, blank_tile, uniform_tile
from s3maptiler.render.freshness import Freshness
from s3maptiler.render.guard import WMSGuard
from s3maptiler.render.pipeline import Cut, Renderer
from s3maptiler.render.runtime import LayerRuntime
from s3maptiler.render.tilesource import tile_url
from s3maptiler.render.tilewrites import QUEUED, TileWrites
from s3maptiler.render.wms import WMSClient
from s3maptiler.service.addresses import Addresses, TileRequest
from s3maptiler.service.archived import ArchivedZooms
from s3maptiler.service.background import BoundedPool
from s3maptiler.service.bundle import RenderedTiles
from s3maptiler.service.leases import Lease, Leases
from s3maptiler.service.singleflight import RenderFailed, SingleFlight, wait_for
from s3maptiler.service.spool import Spool, Turn
from s3maptiler.service.storeguard import StoreBreaker
from s3maptiler.storage.blanks import SharedBlanks
from s3maptiler.storage.s3 import StoreError, StoreSkipped
from s3maptiler.storage.stores import StoredTile, TileObject, TileStore
from s3maptiler.storage.uploads import UploadPool
from s3maptiler.tiles.formats import etag_of
from s3maptiler.tiles.grids import Tile
from s3maptiler.tiles.metatile import MetaTile

if TYPE_CHECKING:
    from s3maptiler.seeding.run import RenderCounts

log = logging.getLogger(__name__)

BACKGROUND_THREADS = 2
# Metatiles queued or encoding in the background, each holding its decoded image
# (about 5 MB for 4x4 tiles with a 64 px buffer); past this the leader encodes inline.
BACKGROUND_BACKLOG = 8
# Seconds a request thread waits for room in a full upload queue before dropping its
# tile; background encoding waits up to the render budget.
UPLOAD_WAIT = 1.0
# Seconds a request waits for another thread's read of the same key beyond the read
# client's own budget (one attempt: an S3_READ_TIMEOUT connect, then as long a read).
STORE_READ_SLACK = 3.0
# Weight of the newest render in the running average a lease tells waiters to expect;
# until a layer's first render is seen, waiters are told this many seconds.
_EXPECTED_WEIGHT = 0.2
_EXPECTED_FIRST = 1.0


@dataclass(frozen=True)
class TileResult:
    data: bytes
    content_type: str
    source: str  # "cache" | "render" | "inflight" | "blank" | "archive"
    etag: str  # quoted, like S3's
    cache_control: str
    wms_ms: float | None = None
    upload: str = "-"  # "queued" | "dropped" | "uncached" | "-"
    expires: float | None = None  # seconds since the epoch: the Expires header, if any


@dataclass(eq=False)
class TileService:
    """Cache read, then render; each metatile drawn once by the process, host and fleet.

    The one face the routes use: `addresses` (which tile a key or a route names, and
    why not: :class:`~s3maptiler.service.addresses.Addresses`), :meth:`get` (a tile),
    :meth:`seed` (a seed message), :meth:`upload_stats`, :meth:`health_checks` and
    `settings` (its `served_layers`). `spool` and `leases` are the host's and the
    fleet's rings of single flight (None: that ring is off). `breaker`: the store's
    circuit breaker, shared with the uploads and the leases (None: the store is
    always asked).
    """

    settings: Settings
    store: TileStore
    wms: WMSClient
    uploads: UploadPool
    spool: Spool | None = None
    leases: Leases | None = None
    blanks: SharedBlanks = field(default_factory=SharedBlanks)
    breaker: StoreBreaker | None = None

    def __post_init__(self) -> None:
        settings = self.settings
        self.renderer = Renderer(self.wms)
        # One guard per configured layer: its high-DPI tiles ("roads@2x") share its
        # WMS, so its guard too.
        guards = {
            layer.name: WMSGuard(
                settings.wms_max_concurrent,
                settings.wms_queue_wait,
                settings.wms_breaker_failures,
                settings.wms_breaker_cooldown,
            )
            for layer in settings.layers
        }
        self.layers = [
            LayerRuntime.build(layer, guards[base_layer_name(layer.name)])
            for layer in settings.served_layers
        ]
        self.addresses = Addresses(self.layers)
        self._reads: SingleFlight[StoredTile | None] = SingleFlight()
        self._tiles: SingleFlight[tuple[bytes, Freshness | None]] = SingleFlight()
        self._metatiles: SingleFlight[RenderedTiles] = SingleFlight()
        self._background = BoundedPool(BACKGROUND_THREADS, BACKGROUND_BACKLOG)
        self._expected: dict[str, float] = {}  # by layer: seconds a metatile render takes
        self.archived = ArchivedZooms(self.store)  # zooms answered from PMTiles archives

    # ------------------------------------------------------- what the routes use besides

    def seed(self, message: bytes) -> RenderCounts:
        """Draw and store the metatiles of one seed message (``POST /tasks/seed``) with
        this service's layers, WMS session and store, as the tile routes would."""
        # Imported here: only a worker tier seeds, and seeding's area code (shapely,
        # numpy) would add about 17 MB to every web worker.
        from s3maptiler.seeding.sqs import handle_message

        return handle_message(message, self.addresses.runtimes, self.wms, self.store, self.blanks)

    def upload_stats(self) -> dict[str, int]:
        """The upload pool's counters (pending, stored, failed, ...), for the heartbeat."""
        return self.uploads.stats()

    # ------------------------------------------------------------------ the tile path

    def get(self, request: TileRequest, known_miss: bool = False) -> TileResult:
        """The tile's bytes: from the upload queue, the store, or a render.

        `known_miss` skips the store read: S3 has just redirected this key to us, and
        so does a tile whose metatile this host is rendering or has just rendered.
        Concurrent requests for one key share one store read; requests for tiles of
        one metatile share its GetMap, across threads, workers and instances. Raises
        WMSError (or WMSUnavailable) when no tile can be had; nothing is stored then.
        """
        if request.outside_extent:
            return self._blank(request)
        layer = request.layer.layer
        # The archive holds the layer's own format: a .jpg of a png layer is drawn.
        if request.ext == layer.extension and self.archived.serves(layer, request.tile):
            data = self.archived.tile(layer, request.tile)
            if data is not None:
                return self._result(request, data, "archive")
        pending = self.uploads.pending_job(request.key)
        if pending is not None:
            fresh = freshness.of_expires(layer, pending.expires)
            return self._result(request, pending.data, "inflight", fresh)
        if self.settings.cache_read and not known_miss:
            here = self._rendered_here(request)
            if here is not None:
                return here
            stored = self._read_once(request.key)
            if stored is not None and not freshness.expired(layer, stored.expires):
                etag = stored.etag or etag_of(stored.data)
                fresh = freshness.of_expires(layer, stored.expires)
                cache_control, expires = freshness.answer_headers(layer, fresh)
                return TileResult(
                    stored.data, stored.content_type, "cache", etag, cache_control, expires=expires
                )
        reused = self._from_layout_key(request)
        if reused is not None:
            return reused
        meta = request.layer.metatile_of(request.tile, request.ext)
        # A tile source's tile is a 1x1 metatile that goes through all three rings: each
        # upstream tile is asked for once across the fleet.
        alone = meta is None or len(meta.columns) * len(meta.rows) == 1
        if alone and not request.layer.tile_source:
            # One tile per GetMap: only this process's threads coalesce. Two workers
            # asking for the very same tile at once is rare, and the conditional PUT
            # still stores it once.
            return self._single(request, meta)
        return self._from_metatile(request, meta)

    def _rendered_here(self, request: TileRequest) -> TileResult | None:
        """A tile whose metatile this process is rendering, or this host rendered in the
        spool's last `ttl` seconds: served from that render without a store read, which
        would answer 404 (its uploads are not in yet) or the same bytes. Not for a key
        other than the layer's own (ArcGIS REST): the render did not store that one.
        Only for a remote store: a local file is cheaper to read than a spooled bundle."""
        if not self.store.remote:
            return None
        runtime = request.layer
        meta = runtime.metatile_of(request.tile, request.ext)
        if meta is None or len(meta.columns) * len(meta.rows) == 1:
            return None
        if self._layout_key(request) is not None:
            return None
        flight = metatile_flight(self.store.location, runtime.layer, request.ext, meta)
        future = self._metatiles.follow(flight)
        if future is not None:
            metrics.SINGLE_FLIGHT_WAITS.labels("thread").inc()
            rendered = wait_for(future, self.patience(runtime), meta.describe())
        else:
            rendered = self.spool.peek(flight) if self.spool is not None else None
            if rendered is None:
                return None
            metrics.SINGLE_FLIGHT_WAITS.labels("worker").inc()
        return self._shared(request, rendered.tiles[request.tile], rendered.freshness)

    def patience(self, runtime: LayerRuntime) -> float:
        """Seconds to wait for another's render: it may wait its budget, then render."""
        return 2 * self.renderer.budget(runtime)

    def _read_once(self, key: str) -> StoredTile | None:
        future, leader = self._reads.join(key)
        if not leader:
            metrics.SINGLE_FLIGHT_WAITS.labels("thread").inc()
            patience = 2 * self.settings.s3_read_timeout + STORE_READ_SLACK
            return wait_for(future, patience, f"the store read of {key}")
        try:
            stored = self._read_store(key)
        except BaseException as exc:
            future.set_exception(exc)
            raise
        future.set_result(stored)
        return stored

    def _read_store(self, key: str) -> StoredTile | None:
        try:
            if self.breaker is None:
                return self.store.get(key)
            return self.breaker.run(lambda: self.store.get(key), "read")
        except StoreSkipped:
            return None  # the store is failing: a miss, rendered at WMS speed
        except StoreError as exc:
            # A store that cannot be read must not take tiles down: render instead.
            log.warning("store read failed, rendering instead key=%s reason=%s", key, exc)
            return None

    def _single(self, request: TileRequest, meta: MetaTile | None) -> TileResult:
        """A tile that is its own GetMap; `meta` when it still has a buffer to cut."""
        future, leader = self._tiles.join(request.key)
        if not leader:
            metrics.SINGLE_FLIGHT_WAITS.labels("thread").inc()
            data, fresh = wait_for(future, self.patience(request.layer), request.key)
            return self._result(request, data, "inflight", fresh)
        runtime, ext = request.layer, request.ext
        try:
            started = time.perf_counter()
            if meta is None:
                piece, fresh = self.renderer.tile(runtime, ext, request.tile)
            else:
                cut = self.renderer.metatile(runtime, ext, meta)
                piece, fresh = cut.encode([request.tile])[request.tile], cut.freshness
            wms_ms = (time.perf_counter() - started) * 1000
            upload = self._upload(runtime, ext, request.key, piece, UPLOAD_WAIT, fresh)
            self._upload_layout_key(request, piece, fresh)
        except BaseException as exc:
            future.set_exception(exc)
            raise
        future.set_result((piece.data, fresh))  # after queueing: pending() answers from now on
        return self._rendered(request, piece.data, wms_ms, upload, fresh)

    def _from_metatile(self, request: TileRequest, meta: MetaTile) -> TileResult:
        runtime = request.layer
        flight = metatile_flight(self.store.location, runtime.layer, request.ext, meta)
        future, leader = self._metatiles.join(flight)
        if not leader:
            metrics.SINGLE_FLIGHT_WAITS.labels("thread").inc()
            rendered = wait_for(future, self.patience(runtime), meta.describe())
            return self._shared(request, rendered.tiles[request.tile], rendered.freshness)
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
            return self._shared(request, turn.found.tiles[request.tile], turn.found.freshness)
        lease = None
        try:
            if self.leases is not None:
                budget = self.renderer.budget(runtime)
                expected = self._expected.get(runtime.layer.name, _EXPECTED_FIRST)
                claim = self.leases.claim(flight, deadline, budget, expected)
                if claim.found is not None:
                    metrics.SINGLE_FLIGHT_WAITS.labels("instance").inc()
                    if claim.took is not None:
                        self._learn(runtime, claim.took)
                    self._publish_here(flight, claim.found, turn)
                    future.set_result(claim.found)
                    found = claim.found
                    return self._shared(request, found.tiles[request.tile], found.freshness)
                lease = claim.lease
            started = time.perf_counter()
            cut = self.renderer.metatile(runtime, ext, meta)
            wms_ms = (time.perf_counter() - started) * 1000
            first = cut.encode([request.tile])[request.tile]
        except BaseException as exc:
            self._failed(flight, turn, lease, exc)
            raise
        upload = self._upload(runtime, ext, request.key, first, UPLOAD_WAIT, cut.freshness)
        self._upload_layout_key(request, first, cut.freshness)
        finish = functools.partial(
            self._finish, request, cut, first.data, flight, future, turn, lease, started
        )
        abandon = functools.partial(
            self._failed, flight, turn, lease, RenderFailed("the service is stopping"), future
        )
        self._background.run(finish, abandon)
        return self._rendered(request, first.data, wms_ms, upload, cut.freshness)

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
            rendered = RenderedTiles(runtime.media_type(ext), tiles, cut.freshness)
            self._publish_here(flight, rendered, turn)
            future.set_result(rendered)
        except BaseException as exc:
            log.exception("slicing metatile %s failed", cut.meta.describe())
            self._failed(flight, turn, lease, exc, future)
            return
        self._learn(runtime, time.perf_counter() - started)
        if lease is not None:
            self.leases.publish(lease, rendered)
        writes = TileWrites(runtime, ext, cut.freshness, self.blanks)
        submit = functools.partial(self._submit, wait=self.renderer.budget(runtime))
        for tile, piece in rest.items():
            key = runtime.key_to_store(tile, ext)
            if key is not None:
                writes.write(key, piece, submit)

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
        """A render seen to take `seconds` (ours, or another instance's in its lease):
        the first replaces the guess, later ones move the running average."""
        name = runtime.layer.name
        known = self._expected.get(name)
        self._expected[name] = (
            seconds if known is None else known + _EXPECTED_WEIGHT * (seconds - known)
        )

    def _upload(self, runtime: LayerRuntime, ext: str, key: str, piece: SlicedTile, wait: float,
                fresh: Freshness | None = None) -> str:  # fmt: skip
        """Queue a rendered tile by the one recipe (render/tilewrites.py): "queued" or
        "dropped"; "uncached" when its WMS forbade shared caches to keep it."""
        writes = TileWrites(runtime, ext, fresh, self.blanks)
        return writes.write(key, piece, functools.partial(self._submit, wait=wait))

    def _submit(self, obj: TileObject, wait: float) -> str:
        """One object onto the upload pool: "queued", or "dropped" when it is full."""
        if self.uploads.submit(obj, wait):
            metrics.UPLOAD_QUEUE.inc()  # the pool's on_result decrements it: exact, no lock
            return QUEUED
        metrics.UPLOADS.labels("dropped").inc()
        return "dropped"

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
        layer = request.layer.layer
        job = self.uploads.pending_job(alias)
        if job is not None:
            return self._shared(request, job.data, freshness.of_expires(layer, job.expires))
        stored = self._read_once(alias)
        if stored is None or freshness.expired(layer, stored.expires):
            return None
        result = self._shared(request, stored.data, freshness.of_expires(layer, stored.expires))
        return dataclasses.replace(result, source="cache", etag=stored.etag or result.etag)

    def _shared(self, request: TileRequest, data: bytes, fresh: Freshness | None) -> TileResult:
        """A tile of another request's render ("inflight"): its uploads queued that
        tile under the layer's own key; a request by another key stores it there too."""
        result = self._result(request, data, "inflight", fresh)
        if self._layout_key(request) is None:
            return result
        runtime = request.layer
        uniform = runtime.layer.empty_tiles == "redirect" and uniform_tile(data)
        piece = SlicedTile(data, uniform)
        upload = self._upload(runtime, request.ext, request.key, piece, 0, fresh)
        return dataclasses.replace(result, upload=upload)

    def _upload_layout_key(self, request: TileRequest, piece: SlicedTile, fresh) -> None:
        """A tile rendered for a request by another key: under the layer's key too."""
        alias = self._layout_key(request)
        if alias is not None:
            self._upload(request.layer, request.ext, alias, piece, UPLOAD_WAIT, fresh)

    def health_checks(self) -> dict[str, str]:
        """The deep health check: the store, its recent reads and writes and every
        layer's WMS (GetCapabilities within 3 s), each "ok" or "failing: <one line>".
        While the store's breaker is open the store is not probed (it would wait out
        its timeout): the breaker's reason is the answer; past its cooldown the probe
        is the trial."""
        if self.breaker is None:
            checks = {"store": _probe(self.store.check)}
        else:  # the probe may be the breaker's trial, and close it
            probed = _probe(lambda: self.breaker.run(self.store.check, "read"))
            failing = self.breaker.problem()
            checks = {"store": probed if failing is None else f"failing: {failing}"}
        denied = self.store.read_problem()
        if denied is not None:
            checks["store_reads"] = f"failing: {denied}"
        else:  # a store that cannot be reached cannot be read either
            checks["store_reads"] = checks["store"]
        unstored = self.uploads.unstored_problem()
        checks["store_writes"] = "ok" if unstored is None else f"failing: {unstored}"
        for runtime in self.layers:
            if runtime.layer.pixel_ratio != 1:
                continue  # the WMS of its 1x layer
            source = next(iter(runtime.sources.values()))
            if runtime.tile_source:
                first = Tile(0, 0, runtime.layer.min_zoom)
                url = tile_url(source, source.upstream_tile(first))
                checks[f"tiles:{runtime.layer.name}"] = _probe(
                    lambda s=source, u=url: self.wms.check_tile_url(s, u, timeout=3.0)
                )
                continue
            checks[f"wms:{runtime.layer.name}"] = _probe(
                lambda s=source: self.wms.check_capabilities(s, timeout=3.0)
            )
        return checks

    def drain(self, timeout: float) -> int:
        """Finish slicing, then the uploads, within `timeout` seconds; returns how
        many uploads were left undone (on shutdown: gunicorn's worker_exit)."""
        deadline = time.monotonic() + timeout
        self._background.drain(deadline)
        return self.uploads.drain(max(deadline - time.monotonic(), 0.1))

    # ------------------------------------------------------------------ answers

    def _blank(self, request: TileRequest) -> TileResult:
        """Outside the layer's extent: a blank tile, stored like any other so the S3
        redirect does not send this key back to the service forever."""
        data = blank_tile(request.layer.media_type(request.ext), request.layer.grid.tile_size)
        upload = self._upload(request.layer, request.ext, request.key, SlicedTile(data, False), 0)
        result = self._result(request, data, "blank")
        return dataclasses.replace(result, upload=upload)

    def _rendered(self, request: TileRequest, data: bytes, wms_ms: float, upload: str, fresh):
        result = self._result(request, data, "render", fresh)
        return dataclasses.replace(result, wms_ms=wms_ms, upload=upload)

    def _result(self, request: TileRequest, data: bytes, source: str, fresh=None) -> TileResult:
        """A tile's answer: the layer's Cache-Control, or the lifetime its WMS gave it."""
        content_type = request.layer.content_type(request.ext, data)
        cache_control, expires = freshness.answer_headers(request.layer.layer, fresh)
        return TileResult(data, content_type, source, etag_of(data), cache_control, expires=expires)


def metatile_flight(store_location: str, layer: Layer, ext: str, meta: MetaTile) -> str:
    """A metatile's id across processes and hosts (hex): the same store, layer,
    format and geometry give the same id, and so the same lock, spool entry and lease."""
    text = (
        f"{store_location}|{layer.name}|{layer.prefix}|{ext}|{meta.describe()}"
        f"|{layer.metatile}|{layer.meta_buffer}"
    )
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


def _probe(check: Callable[[], object]) -> str:
    try:
        check()
    except Exception as exc:  # every failure is reported, none is raised
        return f"failing: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}"
    return "ok"
