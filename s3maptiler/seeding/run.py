"""Seeding: fill a layer's cache for zoom levels over an area, one GetMap per metatile.

The plan is pure: a :class:`Coverage` (a lon/lat bbox, or GeoJSON Polygon and
MultiPolygon rings in decimal degrees) and a zoom range become :class:`MetaJob`\\ s,
one per metatile that has at least one tile overlapping the coverage, each naming
the covered tiles it must store. A tile "touches" the coverage when they share a
positive area: a tile that only meets the coverage along an edge or at a corner is
left out, as :meth:`~s3maptiler.tiles.grids.TileGrid.tiles_in` leaves it out for a bbox.

:func:`render_metatile` does the work of one job through the service's own render
pipeline (:mod:`s3maptiler.render.pipeline`): ONE GetMap, sliced with the layer's
encoder, each covered tile written by the service's own recipe
(:mod:`s3maptiler.render.tilewrites`: lifetime, blank policy) straight to the store
(seeding is itself the background job, so no upload queue).
:func:`run_seed` runs jobs on a bounded thread pool behind a :class:`TokenBucket`
that caps GetMaps per second, writes every finished metatile to a :class:`Journal`
(JSON lines) so an interrupted run resumes where it stopped, and every failed
metatile to a failures file that can be replayed.

``skip_existing`` never sends a HEAD per tile: keys are listed with ListObjectsV2, one
listing per key "directory" (``prefix/z/x/`` for TMS and XYZ, ``prefix/z/row/`` for
WMTS, ``prefix/Lzz/Rrrrrrrrr/`` for ArcGIS; the common prefix of a metatile's keys for
quadkeys), each listed once per run and shared by every metatile in it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import NamedTuple

from s3maptiler.render.errors import WMSError
from s3maptiler.render.pipeline import Renderer
from s3maptiler.render.runtime import LayerRuntime
from s3maptiler.render.tilewrites import TileWrites
from s3maptiler.render.wms import WMSClient
from s3maptiler.seeding.coverage import SeedError
from s3maptiler.seeding.existing import ListingCache
from s3maptiler.seeding.journal import FailureLog, Journal
from s3maptiler.seeding.plan import BadJob, MetaJob, job_runtime, job_tiles, tile_count
from s3maptiler.storage.blanks import SharedBlanks
from s3maptiler.storage.s3 import StoreError
from s3maptiler.storage.stores import TileStore
from s3maptiler.tiles.grids import Tile

__all__ = [
    "Estimate",
    "Interrupted",
    "RenderCounts",
    "SeedOptions",
    "SeedReport",
    "TokenBucket",
    "estimate",
    "render_metatile",
    "run_seed",
]

log = logging.getLogger(__name__)


class Interrupted(SeedError):
    """The run was asked to stop before this job sent its GetMap."""


# --------------------------------------------------------------------------- rate cap


class TokenBucket:
    """At most ``rate`` acquisitions per second on average, bursts of ``burst``.

    ``rate`` None or 0 means no cap. Thread-safe; :meth:`acquire` sleeps outside the
    lock. ``clock`` and ``sleep`` are replaceable so tests need no real time.
    """

    def __init__(
        self,
        rate: float | None,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate is not None and rate < 0:
            raise ValueError("rate must be >= 0 per second")
        self.rate = rate or None
        self.burst = max(1, burst)
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(self.burst)
        self._stamp = clock()
        self._lock = threading.Lock()

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Take one token, waiting as long as needed; False if ``stop`` was set meanwhile."""
        if self.rate is None:
            return True
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                # A hair of slack: refills are float products that may fall just short of 1.
                if self._tokens >= 1 - 1e-9:
                    self._tokens = max(0.0, self._tokens - 1)
                    return True
                wait_for = (1 - self._tokens) / self.rate
            if stop is not None and stop.is_set():
                return False
            self._sleep(wait_for)
            if stop is not None and stop.is_set():
                return False


# --------------------------------------------------------------------------- one metatile


@dataclass
class RenderCounts:
    """What one job did: tiles written, tiles already there, tiles not worth storing
    (outside the layer's extent or layout), and GetMaps sent."""

    stored: int = 0
    existing: int = 0
    ignored: int = 0
    getmaps: int = 0

    def add(self, other: RenderCounts) -> None:
        self.stored += other.stored
        self.existing += other.existing
        self.ignored += other.ignored
        self.getmaps += other.getmaps


@dataclass
class Drawing:
    """What drawing seed metatiles needs besides the jobs: the WMS client, the store,
    the shared blanks known to be in that store (one registry per store, kept across
    jobs), and optionally the listing of stored tiles to skip, the GetMap rate cap and
    the event that stops the run."""

    wms: WMSClient
    store: TileStore
    blanks: SharedBlanks = field(default_factory=SharedBlanks)
    existing: ListingCache | None = None
    limiter: TokenBucket | None = None
    stop: threading.Event | None = None
    overwrite: bool = False  # replace stored tiles (a refresh) even through If-None-Match


def render_metatile(runtime: LayerRuntime, job: MetaJob, drawing: Drawing) -> RenderCounts:
    """Draw one metatile with ONE GetMap and write each of the job's tiles straight to
    the store, through the layer's blank policy (seeding is itself the background
    job: no upload queue).

    Keys already in the store are skipped when ``drawing.existing`` lists them, and no
    GetMap is sent when all of them are. A layer with ``cache_from_wms`` stores the
    lifetime its WMS gives (replacing what is there), or nothing when the WMS forbids
    shared caches to keep its images (those tiles count as ignored). Raises BadJob,
    Interrupted, WMSError (including an unusable image) or StoreError; tiles stored
    before a StoreError stay stored.
    """
    runtime = job_runtime(runtime, job)
    meta, tiles = job_tiles(runtime, job)
    counts = RenderCounts()
    keys: dict[Tile, str] = {}
    for tile in tiles:
        key = runtime.key_to_store(tile, job.ext)
        if key is None:
            counts.ignored += 1
        else:
            keys[tile] = key
    if drawing.existing is not None and keys:
        found = drawing.existing.existing(list(keys.values()), runtime.layer.prefix)
        counts.existing = len(found)
        keys = {t: k for t, k in keys.items() if k not in found}
    if not keys:
        return counts
    if drawing.limiter is not None and not drawing.limiter.acquire(drawing.stop):
        raise Interrupted("stopped before the GetMap")
    counts.getmaps = 1
    cut = Renderer(drawing.wms).metatile(runtime, job.ext, meta)
    writes = TileWrites(runtime, job.ext, cut.freshness, drawing.blanks, drawing.overwrite)
    if not writes.storable:
        log.warning("%s: the WMS forbids caching its image; nothing stored", job.describe())
        counts.ignored += len(keys)
        return counts
    sliced = cut.encode(keys)
    for tile, key in keys.items():
        if writes.write(key, sliced[tile], drawing.store.write) == "exists":
            counts.existing += 1
        else:
            counts.stored += 1
    return counts


# --------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class SeedOptions:
    """How to run: threads, GetMaps per second (None: no cap), skip stored tiles, or
    skip only tiles stored since ``refresh_before`` (seconds since the epoch) and
    draw the older ones again, replacing them."""

    concurrency: int = 4
    wms_rate: float | None = None
    skip_existing: bool = False
    refresh_before: float | None = None


@dataclass
class SeedReport:
    """The honest end summary. Tiles: ``done`` written, ``skipped`` already stored
    (listing, journal, or a conditional write that found one), ``failed`` in failed
    metatiles; ``elapsed`` in seconds."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    ignored: int = 0
    metatiles_done: int = 0
    metatiles_skipped: int = 0  # finished by an earlier run (journal)
    metatiles_failed: int = 0
    metatiles_left: int = 0  # not started because the run was stopped
    wms_requests: int = 0
    elapsed: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def interrupted(self) -> bool:
        return self.metatiles_left > 0


def run_seed(
    layers: Mapping[str, LayerRuntime],
    jobs: Iterable[MetaJob],
    wms: WMSClient,
    store: TileStore,
    options: SeedOptions,
    journal: Journal | None = None,
    failures: FailureLog | None = None,
    stop: threading.Event | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> SeedReport:
    """Render ``jobs`` on ``options.concurrency`` threads and return the summary.

    Metatiles in the journal are skipped; each finished one is journaled, each failed
    one written to ``failures``. Setting ``stop`` lets running metatiles finish and
    starts no more (they count as ``metatiles_left``). ``on_progress`` gets the number
    of tiles each finished job accounts for.
    """
    stop = stop or threading.Event()
    report = SeedReport()
    done_before = journal.done() if journal is not None else set()
    refresh = options.refresh_before is not None
    existing = (
        ListingCache(store, options.refresh_before) if options.skip_existing or refresh else None
    )
    limiter = TokenBucket(options.wms_rate)
    drawing = Drawing(wms, store, SharedBlanks(), existing, limiter, stop, overwrite=refresh)
    progress = on_progress or (lambda _n: None)
    lock = threading.Lock()
    started = time.monotonic()
    sent_before = wms.requests_sent

    def work(job: MetaJob) -> None:
        runtime = layers.get(job.layer)
        try:
            if runtime is None:
                raise BadJob(f"{job.describe()}: no layer named {job.layer!r}")
            counts = render_metatile(runtime, job, drawing)
        except Interrupted:
            with lock:
                report.metatiles_left += 1
            return
        except (SeedError, WMSError, StoreError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            log.warning("metatile %s failed: %s", job.describe(), reason)
            tiles = tile_count(runtime, job) if runtime else len(job.tiles) or 1
            with lock:
                report.metatiles_failed += 1
                report.failed += tiles
                report.failures.append((job.describe(), reason))
            if failures is not None:
                failures.record(job, reason)
            progress(tiles)
            return
        if journal is not None:
            journal.record(job)
        with lock:
            report.metatiles_done += 1
            report.done += counts.stored
            report.skipped += counts.existing
            report.ignored += counts.ignored
        progress(counts.stored + counts.existing + counts.ignored)

    in_flight: set[Future] = set()
    limit = max(1, options.concurrency) * 2  # a few queued, never the whole plan
    with ThreadPoolExecutor(max(1, options.concurrency), thread_name_prefix="seed") as pool:
        for job in jobs:
            if stop.is_set():
                report.metatiles_left += 1
                continue
            if job.key in done_before:
                tiles = tile_count(layers[job.layer], job) if job.layer in layers else 0
                report.metatiles_skipped += 1
                report.skipped += tiles
                progress(tiles)
                continue
            if len(in_flight) >= limit:
                finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in finished:
                    future.result()  # work() catches what it expects; anything else is a bug
            in_flight.add(pool.submit(work, job))
        for future in in_flight:
            future.result()
    report.elapsed = time.monotonic() - started
    # Every HTTP request to the WMS, retries included: what the WMS's operator sees.
    report.wms_requests = wms.requests_sent - sent_before
    return report


# --------------------------------------------------------------------------- estimate


class Estimate(NamedTuple):
    """A dry run's guess: metatiles sampled, seconds per metatile (GetMap, decode and
    encode, no store), and the whole seed's seconds at the given concurrency and cap."""

    sampled: int
    seconds_per_metatile: float
    total_seconds: float


def estimate(
    layers: Mapping[str, LayerRuntime],
    jobs: Sequence[MetaJob],
    wms: WMSClient,
    options: SeedOptions,
    sample: int = 4,
    budget: float = 10.0,
) -> Estimate:
    """Time up to ``sample`` metatiles spread over ``jobs`` (within ``budget`` seconds),
    storing nothing, and extrapolate. Raises WMSError when the sample cannot be drawn."""
    if not jobs:
        return Estimate(0, 0.0, 0.0)
    step = max(1, len(jobs) // sample)
    picked = list(jobs[::step])[:sample]
    took: list[float] = []
    deadline = time.monotonic() + budget
    renderer = Renderer(wms)
    for job in picked:
        runtime = job_runtime(layers[job.layer], job)
        meta, tiles = job_tiles(runtime, job)
        started = time.monotonic()
        renderer.metatile(runtime, job.ext, meta).encode(tiles)
        took.append(time.monotonic() - started)
        if time.monotonic() > deadline:
            break
    per = sum(took) / len(took)
    total = len(jobs) * per / max(1, options.concurrency)
    if options.wms_rate:
        total = max(total, len(jobs) / options.wms_rate)
    return Estimate(len(took), per, total)
