"""Seeding: fill a layer's cache for zoom levels over an area, one GetMap per metatile.

The plan is pure: a :class:`Coverage` (a lon/lat bbox, or GeoJSON Polygon and
MultiPolygon rings in decimal degrees) and a zoom range become :class:`MetaJob`\\ s,
one per metatile that has at least one tile overlapping the coverage, each naming
the covered tiles it must store. A tile "touches" the coverage when they share a
positive area: a tile that only meets the coverage along an edge or at a corner is
left out, as :meth:`~s3maptiler.tiles.grids.TileGrid.tiles_in` leaves it out for a bbox.

:func:`render_metatile` does the work of one job through the service's own render
pipeline (:mod:`s3maptiler.render.pipeline`): ONE GetMap, sliced with the layer's encoder,
blank tiles treated by the layer's ``empty_tiles`` policy, each covered tile written
straight to the store (seeding is itself the background job, so no upload queue).
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

import hashlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from s3maptiler.config import Layer
from s3maptiler.render.errors import WMSError
from s3maptiler.render.guard import WMSGuard
from s3maptiler.render.pipeline import LayerRuntime, Renderer
from s3maptiler.render.wms import WMSClient
from s3maptiler.storage.blanks import SharedBlanks
from s3maptiler.storage.s3 import StoreError, list_objects
from s3maptiler.storage.stores import LocalStore, S3Store, TileStore
from s3maptiler.storage.uploads import UploadJob
from s3maptiler.tiles.grids import Bbox, GridError, Tile, TileGrid
from s3maptiler.tiles.metatile import MetaTile, metatile_for
from s3maptiler.tiles.tilemath import lonlat_to_tile, tile_lonlat_bounds

__all__ = [
    "Coverage",
    "CoverageError",
    "BadJob",
    "Estimate",
    "FailureLog",
    "Interrupted",
    "Journal",
    "JournalMismatch",
    "ListingCache",
    "MetaJob",
    "RenderCounts",
    "SeedError",
    "SeedOptions",
    "SeedReport",
    "TokenBucket",
    "ZoomPlan",
    "estimate",
    "job_tiles",
    "layer_runtime",
    "load_geojson",
    "plan_signature",
    "plan_jobs",
    "read_failures",
    "render_metatile",
    "run_seed",
    "tile_count",
    "tile_touches",
    "zoom_plan",
]

log = logging.getLogger(__name__)

# A clipped area this small next to the tile's own is an edge or a corner, not overlap:
# clipping a polygon that shares an edge with a tile leaves rounding crumbs.
_AREA_TOLERANCE = 1e-9


class SeedError(Exception):
    """Base class for every error raised by this module; the message is one line."""


class CoverageError(SeedError, ValueError):
    """A bbox or GeoJSON document that does not describe an area."""


class JournalMismatch(SeedError):
    """A journal written by another seed (layer, format, zooms or area differ)."""


class BadJob(SeedError, ValueError):
    """A metatile job that names no metatile of the layer (bad coordinates or zoom)."""


class Interrupted(SeedError):
    """The run was asked to stop before this job sent its GetMap."""


# --------------------------------------------------------------------------- coverage


Ring = tuple[tuple[float, float], ...]  # closed or open; (lon, lat) in decimal degrees


@dataclass(frozen=True)
class Coverage:
    """The area to seed, in decimal degrees: a list of polygons, each an outer ring
    followed by its holes. A bbox is one rectangular polygon."""

    polygons: tuple[tuple[Ring, ...], ...]
    description: str = ""

    @classmethod
    def from_bbox(cls, bbox: Sequence[float]) -> Coverage:
        """The rectangle ``west, south, east, north`` (decimal degrees)."""
        west, south, east, north = (float(v) for v in bbox)
        if not all(math.isfinite(v) for v in (west, south, east, north)):
            raise CoverageError(f"bbox {tuple(bbox)} is not finite")
        if not (west < east and south < north):
            raise CoverageError(f"bbox {tuple(bbox)}: needs west < east and south < north")
        ring = ((west, south), (east, south), (east, north), (west, north))
        return cls(((ring,),), f"bbox {west},{south},{east},{north}")

    @property
    def bounds(self) -> Bbox:
        """Bounding box of every outer ring (west, south, east, north in degrees)."""
        points = [p for polygon in self.polygons for p in polygon[0]]
        return Bbox(
            min(p[0] for p in points),
            min(p[1] for p in points),
            max(p[0] for p in points),
            max(p[1] for p in points),
        )

    def digest(self) -> str:
        """A short stable fingerprint of the area, for journals."""
        text = json.dumps(self.polygons, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _ring(coords: Any, where: str) -> Ring:
    try:
        ring = tuple((float(p[0]), float(p[1])) for p in coords)
    except (TypeError, ValueError, IndexError):
        raise CoverageError(f"{where}: positions must be [lon, lat] numbers") from None
    if len(set(ring)) < 3:
        raise CoverageError(f"{where}: a ring needs at least 3 distinct positions")
    if not all(math.isfinite(v) for p in ring for v in p):
        raise CoverageError(f"{where}: positions must be finite")
    return ring


def _polygons_of(geometry: Any, where: str) -> list[tuple[Ring, ...]]:
    if not isinstance(geometry, Mapping):
        raise CoverageError(f"{where}: not a GeoJSON object")
    kind = geometry.get("type")
    coords = geometry.get("coordinates")
    if kind == "Polygon":
        if not isinstance(coords, list) or not coords:
            raise CoverageError(f"{where}: Polygon without rings")
        return [tuple(_ring(r, where) for r in coords)]
    if kind == "MultiPolygon":
        if not isinstance(coords, list):
            raise CoverageError(f"{where}: MultiPolygon coordinates must be a list")
        return [
            p
            for part in coords
            for p in _polygons_of({"type": "Polygon", "coordinates": part}, where)
        ]
    if kind == "Feature":
        return _polygons_of(geometry.get("geometry"), where)
    if kind == "FeatureCollection":
        features = geometry.get("features") or []
        return [p for i, f in enumerate(features) for p in _polygons_of(f, f"{where} feature {i}")]
    if kind == "GeometryCollection":
        return [p for g in geometry.get("geometries") or [] for p in _polygons_of(g, where)]
    raise CoverageError(f"{where}: {kind!r} is not a Polygon or MultiPolygon")


def load_geojson(document: Any, name: str = "GeoJSON") -> Coverage:
    """The Polygon and MultiPolygon areas of a GeoJSON geometry, Feature or
    FeatureCollection (lon/lat, decimal degrees). Raises CoverageError."""
    polygons = _polygons_of(document, name)
    if not polygons:
        raise CoverageError(f"{name}: no Polygon or MultiPolygon in it")
    return Coverage(tuple(polygons), name)


def _clip(ring: Ring, box: Bbox) -> list[tuple[float, float]]:
    """Sutherland-Hodgman clip of a ring to a rectangle. The result may contain zero
    width bridges for concave rings, which add no area, so its area is exact."""
    points = list(ring)
    edges = (
        (lambda p: p[0] >= box.left, lambda a, b: _cross_x(a, b, box.left)),
        (lambda p: p[0] <= box.right, lambda a, b: _cross_x(a, b, box.right)),
        (lambda p: p[1] >= box.bottom, lambda a, b: _cross_y(a, b, box.bottom)),
        (lambda p: p[1] <= box.top, lambda a, b: _cross_y(a, b, box.top)),
    )
    for inside, cross in edges:
        if not points:
            break
        out = []
        previous = points[-1]
        for point in points:
            if inside(point):
                if not inside(previous):
                    out.append(cross(previous, point))
                out.append(point)
            elif inside(previous):
                out.append(cross(previous, point))
            previous = point
        points = out
    return points


def _cross_x(a, b, x: float) -> tuple[float, float]:
    t = (x - a[0]) / (b[0] - a[0])
    return (x, a[1] + t * (b[1] - a[1]))


def _cross_y(a, b, y: float) -> tuple[float, float]:
    t = (y - a[1]) / (b[1] - a[1])
    return (a[0] + t * (b[0] - a[0]), y)


def _area(points: Sequence[tuple[float, float]]) -> float:
    """Unsigned shoelace area (square degrees)."""
    n = len(points)
    if n < 3:
        return 0.0
    twice = sum(
        points[i][0] * points[(i + 1) % n][1] - points[(i + 1) % n][0] * points[i][1]
        for i in range(n)
    )
    return abs(twice) / 2


def _boxes_overlap(a: Bbox, b: Bbox) -> bool:
    return a.left < b.right and b.left < a.right and a.bottom < b.top and b.bottom < a.top


def tile_touches(coverage: Coverage, bounds: Bbox) -> bool:
    """Whether a tile with lon/lat ``bounds`` (decimal degrees) shares a positive area
    with the coverage: clipped outer ring minus clipped holes, for any polygon."""
    tile_area = (bounds.right - bounds.left) * (bounds.top - bounds.bottom)
    for outer, *holes in coverage.polygons:
        area = _area(_clip(outer, bounds))
        if area <= tile_area * _AREA_TOLERANCE:
            continue
        area -= sum(_area(_clip(hole, bounds)) for hole in holes)
        if area > tile_area * _AREA_TOLERANCE:
            return True
    return False


# --------------------------------------------------------------------------- plan


def layer_runtime(layer: Layer) -> LayerRuntime:
    """A layer resolved for seeding outside the service (the CLI and its worker).

    Seeding paces the WMS itself (threads and the GetMap rate cap), so the guard of
    the service's request path never refuses or trips here.
    """
    return LayerRuntime.build(layer, WMSGuard(1_000_000, 60.0, 1_000_000, 0.0))


class MetaJob(NamedTuple):
    """One metatile to render: layer, tile extension, zoom and the column/row of its
    top-left tile (rows from the top). ``tiles`` are the (x, y) of the tiles to
    store, in the metatile; empty means every tile of the metatile."""

    layer: str
    ext: str
    z: int
    x: int
    y: int
    tiles: tuple[tuple[int, int], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The job as JSON-ready data: coordinates only."""
        doc: dict[str, Any] = {"layer": self.layer, "ext": self.ext, "z": self.z}
        doc.update(x=self.x, y=self.y)
        if self.tiles:
            doc["tiles"] = [list(t) for t in self.tiles]
        return doc

    @classmethod
    def from_dict(cls, doc: Any) -> MetaJob:
        """Parse :meth:`to_dict`'s output; raises BadJob."""
        if not isinstance(doc, Mapping):
            raise BadJob("a job must be a JSON object")
        try:
            layer, ext = doc["layer"], doc["ext"]
            z, x, y = (doc[k] for k in ("z", "x", "y"))
            tiles = tuple((t[0], t[1]) for t in doc.get("tiles") or ())
        except (KeyError, TypeError, IndexError) as exc:
            raise BadJob(f"job needs layer, ext, z, x, y: missing {exc}") from None
        numbers = [z, x, y, *(v for t in tiles for v in t)]
        if not (isinstance(layer, str) and isinstance(ext, str)) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in numbers
        ):
            raise BadJob("job: layer and ext must be text, z, x, y and tiles whole numbers >= 0")
        return cls(layer, ext, z, x, y, tiles)

    @property
    def key(self) -> tuple[str, str, int, int, int]:
        """Identity of the metatile, for journals."""
        return (self.layer, self.ext, self.z, self.x, self.y)

    def describe(self) -> str:
        return f"{self.layer} {self.z}/{self.x}/{self.y}.{self.ext}"


class ZoomPlan(NamedTuple):
    """Counts of one zoom level: tiles to store and metatiles (GetMaps) to draw."""

    z: int
    tiles: int
    metatiles: int


def _candidate_tiles(grid: TileGrid, coverage: Coverage, z: int) -> Iterator[Tile]:
    """Tiles of the coverage's bounds at zoom ``z``, in rows then columns."""
    west, south, east, north = coverage.bounds
    top_left = lonlat_to_tile(grid, west, north, z)
    bottom_right = lonlat_to_tile(grid, east, south, z)
    for y in range(top_left.y, bottom_right.y + 1):
        for x in range(top_left.x, bottom_right.x + 1):
            yield Tile(x, y, z)


def _covered(runtime: LayerRuntime, coverage: Coverage, z: int) -> dict[Tile, list[Tile]]:
    """Covered tiles of zoom ``z`` grouped by the top-left tile of their metatile."""
    cols, rows = runtime.layer.metatile
    grid = runtime.grid
    groups: dict[Tile, list[Tile]] = {}
    for tile in _candidate_tiles(grid, coverage, z):
        if tile_touches(coverage, tile_lonlat_bounds(grid, tile)):
            origin = Tile(tile.x // cols * cols, tile.y // rows * rows, z)
            groups.setdefault(origin, []).append(tile)
    return groups


def plan_jobs(
    runtime: LayerRuntime, coverage: Coverage, zooms: Iterable[int], ext: str | None = None
) -> Iterator[MetaJob]:
    """Every metatile of ``zooms`` with at least one tile touching ``coverage``, zoom by
    zoom, top-left first. A job lists its tiles only when not all of them are covered."""
    ext = ext or runtime.layer.extension
    cols, rows = runtime.layer.metatile
    for z in zooms:
        matrix_cols, matrix_rows = runtime.grid.matrix_size(z)
        for origin, tiles in sorted(_covered(runtime, coverage, z).items(), key=_row_major):
            full = min(cols, matrix_cols - origin.x) * min(rows, matrix_rows - origin.y)
            listed = () if len(tiles) == full else tuple((t.x, t.y) for t in tiles)
            yield MetaJob(runtime.layer.name, ext, z, origin.x, origin.y, listed)


def _row_major(item: tuple[Tile, list[Tile]]) -> tuple[int, int]:
    return (item[0].y, item[0].x)


def zoom_plan(runtime: LayerRuntime, coverage: Coverage, zooms: Iterable[int]) -> list[ZoomPlan]:
    """Tile and metatile counts per zoom level, for ``--dry-run``."""
    plans = []
    for z in zooms:
        groups = _covered(runtime, coverage, z)
        plans.append(ZoomPlan(z, sum(len(t) for t in groups.values()), len(groups)))
    return plans


def job_tiles(runtime: LayerRuntime, job: MetaJob) -> tuple[MetaTile, list[Tile]]:
    """The metatile of a job and the tiles to store (all of it when the job lists none).
    Raises BadJob when the coordinates are not a metatile origin of the layer's grid."""
    layer = runtime.layer
    if not layer.min_zoom <= job.z <= layer.max_zoom:
        raise BadJob(f"{job.describe()}: zoom outside {layer.min_zoom}..{layer.max_zoom}")
    if job.ext not in runtime.sources:
        raise BadJob(f"{job.describe()}: format .{job.ext} is not served by layer {layer.name}")
    try:
        meta = metatile_for(
            runtime.grid, Tile(job.x, job.y, job.z), layer.metatile, layer.meta_buffer
        )
    except GridError as exc:
        raise BadJob(f"{job.describe()}: {exc}") from None
    if (job.x, job.y) != (meta.columns.start, meta.rows.start):
        raise BadJob(f"{job.describe()}: not the top-left tile of a metatile")
    if not job.tiles:
        return meta, meta.tiles()
    tiles = [Tile(x, y, job.z) for x, y in job.tiles]
    outside = [t for t in tiles if t not in meta]
    if outside:
        raise BadJob(f"{job.describe()}: tile {tuple(outside[0])} is not in the metatile")
    return meta, tiles


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


# --------------------------------------------------------------------------- existing tiles


def _listing_prefix(keys: Sequence[str], layer_prefix: str) -> str:
    """The prefix to list for these keys: their common "directory" when they share one
    below the layer's prefix, else their longest common prefix (quadkeys)."""
    directories = {key.rsplit("/", 1)[0] + "/" for key in keys if "/" in key}
    if len(directories) == 1 and len(keys) == len([k for k in keys if "/" in k]):
        directory = directories.pop()
        if len(directory) > len(layer_prefix):
            return directory
    return os.path.commonprefix(list(keys))


class ListingCache:
    """Which keys exist in a store, from one listing per prefix, shared by threads.

    S3 stores are listed with ListObjectsV2 (each prefix once per cache); a local
    directory is asked per file (a stat, no network); any other store per tile.
    """

    def __init__(self, store: TileStore) -> None:
        self.store = store
        self.listings = 0  # ListObjectsV2 pages requested
        self._lock = threading.Lock()
        self._prefixes: dict[str, Future] = {}

    def existing(self, keys: Sequence[str], layer_prefix: str) -> set[str]:
        """The subset of ``keys`` already stored. Raises StoreError."""
        if not keys:
            return set()
        if isinstance(self.store, LocalStore):
            return {k for k in keys if self.store.path_for(k).is_file()}
        if not isinstance(self.store, S3Store):
            return {k for k in keys if self.store.get(k) is not None}
        groups: dict[str, list[str]] = {}
        for key in keys:
            directory = key.rsplit("/", 1)[0] + "/" if "/" in key else ""
            groups.setdefault(directory, []).append(key)
        found: set[str] = set()
        for group in groups.values():
            listed = self._listed(_listing_prefix(group, layer_prefix))
            found.update(k for k in group if k in listed)
        return found

    def _listed(self, prefix: str) -> frozenset[str]:
        with self._lock:
            future = self._prefixes.get(prefix)
            owner = future is None
            if owner:
                future = self._prefixes[prefix] = Future()
        if not owner:
            return future.result()
        try:
            keys = self._list(prefix)
        except BaseException as exc:
            with self._lock:
                self._prefixes.pop(prefix, None)  # a later metatile may try again
            future.set_exception(exc)
            raise
        future.set_result(keys)
        return keys

    def _count_page(self, _count: int) -> None:
        with self._lock:
            self.listings += 1

    def _list(self, prefix: str) -> frozenset[str]:
        store = self.store
        assert isinstance(store, S3Store)
        listing = list_objects(store.client, store.bucket, prefix, self._count_page)
        return frozenset(obj["Key"] for obj in listing)


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


def render_metatile(
    runtime: LayerRuntime,
    job: MetaJob,
    wms: WMSClient,
    store: TileStore,
    existing: ListingCache | None = None,
    limiter: TokenBucket | None = None,
    stop: threading.Event | None = None,
    blanks: SharedBlanks | None = None,
) -> RenderCounts:
    """Draw one metatile with ONE GetMap and store each of the job's tiles.

    With ``existing`` the keys already in the store are skipped, and no GetMap is sent
    when all of them are. ``blanks``: the shared blanks known to be in ``store``
    (one registry per store, kept across jobs; None: this job's own). Raises BadJob,
    WMSError (including an unusable image) or StoreError; tiles stored before a
    StoreError stay stored.
    """
    meta, tiles = job_tiles(runtime, job)
    counts = RenderCounts()
    keys: dict[Tile, str] = {}
    for tile in tiles:
        key = runtime.key_to_store(tile, job.ext)
        if key is None:
            counts.ignored += 1
        else:
            keys[tile] = key
    if existing is not None and keys:
        found = existing.existing(list(keys.values()), runtime.layer.prefix)
        counts.existing = len(found)
        keys = {t: k for t, k in keys.items() if k not in found}
    if not keys:
        return counts
    if limiter is not None and not limiter.acquire(stop):
        raise Interrupted("stopped before the GetMap")
    blanks = blanks or SharedBlanks()
    seeded = seed_metatile(Renderer(wms), runtime, job.ext, meta, keys, store, blanks)
    counts.getmaps = seeded.getmaps
    counts.stored = seeded.stored
    counts.existing += seeded.existing
    return counts


# --------------------------------------------------------------------------- journal


def plan_signature(layer: str, ext: str, zooms: Sequence[int], coverage_digest: str) -> str:
    """Identity of a seed, written at the top of its journal."""
    zoom_text = ",".join(str(z) for z in zooms)
    return f"{layer}|{ext}|{zoom_text}|{coverage_digest}"


class Journal:
    """Metatiles done, one JSON line each after a header line naming the seed.

    Lines are flushed as they are written: a killed run loses at most the metatiles
    being drawn at that moment. A truncated last line is ignored on reading.
    """

    def __init__(self, path: Path, signature: str) -> None:
        self.path = Path(path)
        self.signature = signature
        self._lock = threading.Lock()
        self._file = None

    def done(self) -> set[tuple]:
        """Keys (layer, ext, z, x, y) of the metatiles an earlier run finished.
        Raises JournalMismatch when the file belongs to another seed."""
        if not self.path.exists():
            return set()
        done: set[tuple] = set()
        with self.path.open(encoding="utf-8") as lines:
            header = _json_line(lines.readline())
            if header is None:
                return set()
            if header.get("seed") != self.signature:
                raise JournalMismatch(
                    f"journal {self.path} belongs to another seed ({header.get('seed')!r}); "
                    "remove it or pass another --journal"
                )
            for line in lines:
                doc = _json_line(line)
                if doc is not None:
                    try:
                        done.add(MetaJob.from_dict(doc).key)
                    except BadJob:
                        continue
        return done

    def record(self, job: MetaJob) -> None:
        """Append one finished metatile."""
        line = json.dumps(job._replace(tiles=()).to_dict(), separators=(",", ":"))
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fresh = not self.path.exists() or self.path.stat().st_size == 0
                self._file = self.path.open("a", encoding="utf-8")
                if fresh:
                    self._file.write(json.dumps({"seed": self.signature}) + "\n")
            self._file.write(line + "\n")
            self._file.flush()

    def close(self, remove: bool = False) -> None:
        """Close the file; ``remove`` deletes it (the seed is complete)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
        if remove:
            self.path.unlink(missing_ok=True)


def _json_line(line: str) -> dict | None:
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def read_failures(path: Path) -> list[MetaJob]:
    """The jobs of a failures file (one JSON job per line, with an ``error``).
    Raises SeedError for a file that cannot be read or has no job in it."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SeedError(f"cannot read {path}: {exc.strerror}") from None
    jobs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        doc = _json_line(line)
        try:
            jobs.append(MetaJob.from_dict(doc))
        except BadJob as exc:
            raise SeedError(f"{path}:{number}: {exc}") from None
    return list(dict.fromkeys(jobs))


class FailureLog:
    """Failed metatiles, one JSON line each (the job and its ``error``), replayable
    with :func:`read_failures`. The file is created on the first failure only."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file = None

    def record(self, job: MetaJob, error: str) -> None:
        if self.path is None:
            return
        line = json.dumps({**job.to_dict(), "error": error}, separators=(",", ":"))
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("w", encoding="utf-8")
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


# --------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class SeedOptions:
    """How to run: threads, GetMaps per second (None: no cap), skip stored tiles."""

    concurrency: int = 4
    wms_rate: float | None = None
    skip_existing: bool = False


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
    def tiles_per_second(self) -> float:
        """Tiles written per second of the run."""
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def interrupted(self) -> bool:
        return self.metatiles_left > 0


def tile_count(runtime: LayerRuntime, job: MetaJob) -> int:
    """Tiles a job accounts for (those it stores; 1 for a job that names no metatile)."""
    try:
        return len(job_tiles(runtime, job)[1])
    except BadJob:
        return len(job.tiles) or 1


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
    limiter = TokenBucket(options.wms_rate)
    existing = ListingCache(store) if options.skip_existing else None
    blanks = SharedBlanks()
    progress = on_progress or (lambda _n: None)
    lock = threading.Lock()
    started = time.monotonic()
    sent_before = wms.requests_sent

    def work(job: MetaJob) -> None:
        runtime = layers.get(job.layer)
        try:
            if runtime is None:
                raise BadJob(f"{job.describe()}: no layer named {job.layer!r}")
            counts = render_metatile(runtime, job, wms, store, existing, limiter, stop, blanks)
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
        runtime = layers[job.layer]
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


@dataclass
class SeedCounts:
    """What one seeded metatile did: tiles written, tiles already there, GetMaps."""

    stored: int = 0
    existing: int = 0
    getmaps: int = 0


def seed_metatile(
    renderer: Renderer,
    runtime: LayerRuntime,
    ext: str,
    meta: MetaTile,
    keys: dict[Tile, str],
    store: TileStore,
    blanks: SharedBlanks,
) -> SeedCounts:
    """Draw `meta` with ONE GetMap and write each tile of `keys` straight to `store`,
    through the layer's blank policy. Raises WMSError or StoreError; tiles written
    before a StoreError stay written."""
    counts = SeedCounts(getmaps=1)
    sliced = renderer.metatile(runtime, ext, meta).encode(keys)
    for tile, key in keys.items():
        piece = sliced[tile]
        own = UploadJob(
            key, piece.data, runtime.content_type(ext), runtime.layer.cache_control or None
        )
        for job in blanks.jobs(own, runtime.blank_key(ext, piece)):
            outcome = _put(store, job)
            blanks.settled(job, outcome)
            if job.key == key:
                if outcome == "exists":
                    counts.existing += 1
                else:
                    counts.stored += 1
    return counts


def _put(store: TileStore, job: UploadJob) -> str:
    extra = {"redirect_to": job.redirect_to} if job.redirect_to else {}
    return store.put(job.key, job.data, job.content_type, job.cache_control, **extra)
