"""The seed plan: the metatiles of a coverage and zoom range, each a :class:`MetaJob`
that names the tiles it must store. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

from s3maptiler.render.runtime import LayerRuntime
from s3maptiler.seeding.coverage import Coverage, SeedError, tile_touches
from s3maptiler.tiles.dimensions import DimensionError
from s3maptiler.tiles.grids import GridError, Tile, TileGrid
from s3maptiler.tiles.metatile import MetaTile, metatile_for
from s3maptiler.tiles.tilemath import lonlat_to_tile, tile_lonlat_bounds


class BadJob(SeedError, ValueError):
    """A metatile job that names no metatile of the layer (bad coordinates or zoom)."""


class MetaJob(NamedTuple):
    """One metatile to render: layer, tile extension, zoom and the column/row of its
    top-left tile (rows from the top). ``tiles`` are the (x, y) of the tiles to
    store, in the metatile; empty means every tile of the metatile. ``dimensions``
    are (name, value) pairs, one per dimension of the layer, in its order; empty means
    the layer's dimension-less keys (drawn at the defaults)."""

    layer: str
    ext: str
    z: int
    x: int
    y: int
    tiles: tuple[tuple[int, int], ...] = ()
    dimensions: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The job as JSON-ready data: coordinates (and dimension values) only."""
        doc: dict[str, Any] = {"layer": self.layer, "ext": self.ext, "z": self.z}
        doc.update(x=self.x, y=self.y)
        if self.tiles:
            doc["tiles"] = [list(t) for t in self.tiles]
        if self.dimensions:
            doc["dimensions"] = dict(self.dimensions)
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
        dimensions = doc.get("dimensions") or {}
        if not isinstance(dimensions, Mapping) or not all(
            isinstance(v, str) for v in dimensions.values()
        ):
            raise BadJob("job: dimensions must be an object of text values")
        return cls(layer, ext, z, x, y, tiles, tuple(dimensions.items()))

    @property
    def key(self) -> tuple:
        """Identity of the metatile, for journals."""
        return (self.layer, self.ext, self.z, self.x, self.y, *self.dimensions)

    def describe(self) -> str:
        values = "".join(f" {name}={value}" for name, value in self.dimensions)
        return f"{self.layer}{values} {self.z}/{self.x}/{self.y}.{self.ext}"


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


def covered_tiles(runtime: LayerRuntime, coverage: Coverage, z: int) -> Iterator[Tile]:
    """Tiles of zoom ``z`` sharing area with ``coverage``, rows then columns, one at a
    time (an export streams them; nothing is kept)."""
    grid = runtime.grid
    west, south, east, north = coverage.bounds
    first = lonlat_to_tile(grid, west, north, z)
    last = lonlat_to_tile(grid, east, south, z)
    box = coverage.is_box
    for tile in _candidate_tiles(grid, coverage, z):
        # A box covers every candidate off its border whole: no geometry to test (the
        # test costs more than reading a tile from a local directory).
        inside = box and first.x < tile.x < last.x and first.y < tile.y < last.y
        if inside or tile_touches(coverage, tile_lonlat_bounds(grid, tile)):
            yield tile


def candidate_count(runtime: LayerRuntime, coverage: Coverage, z: int) -> int:
    """Tiles of the coverage's bounds at zoom ``z``: an upper bound of
    :func:`covered_tiles`, without looking at each tile (a progress bar's total)."""
    west, south, east, north = coverage.bounds
    top_left = lonlat_to_tile(runtime.grid, west, north, z)
    bottom_right = lonlat_to_tile(runtime.grid, east, south, z)
    return (bottom_right.x - top_left.x + 1) * (bottom_right.y - top_left.y + 1)


def _covered(runtime: LayerRuntime, coverage: Coverage, z: int) -> dict[Tile, list[Tile]]:
    """Covered tiles of zoom ``z`` grouped by the top-left tile of their metatile."""
    cols, rows = runtime.layer.metatile
    groups: dict[Tile, list[Tile]] = {}
    for tile in covered_tiles(runtime, coverage, z):
        origin = Tile(tile.x // cols * cols, tile.y // rows * rows, z)
        groups.setdefault(origin, []).append(tile)
    return groups


def plan_jobs(
    runtime: LayerRuntime,
    coverage: Coverage,
    zooms: Iterable[int],
    ext: str | None = None,
    dimensions: tuple[tuple[str, str], ...] = (),
) -> Iterator[MetaJob]:
    """Every metatile of ``zooms`` with at least one tile touching ``coverage``, zoom by
    zoom, top-left first. A job lists its tiles only when not all of them are covered.
    ``dimensions``: the (name, value) pairs every job draws (none: the defaults)."""
    ext = ext or runtime.layer.extension
    cols, rows = runtime.layer.metatile
    for z in zooms:
        matrix_cols, matrix_rows = runtime.grid.matrix_size(z)
        for origin, tiles in sorted(_covered(runtime, coverage, z).items(), key=_row_major):
            full = min(cols, matrix_cols - origin.x) * min(rows, matrix_rows - origin.y)
            listed = () if len(tiles) == full else tuple((t.x, t.y) for t in tiles)
            yield MetaJob(runtime.layer.name, ext, z, origin.x, origin.y, listed, dimensions)


def _row_major(item: tuple[Tile, list[Tile]]) -> tuple[int, int]:
    return (item[0].y, item[0].x)


def zoom_plan(runtime: LayerRuntime, coverage: Coverage, zooms: Iterable[int]) -> list[ZoomPlan]:
    """Tile and metatile counts per zoom level, for ``--dry-run``."""
    plans = []
    for z in zooms:
        groups = _covered(runtime, coverage, z)
        plans.append(ZoomPlan(z, sum(len(t) for t in groups.values()), len(groups)))
    return plans


def job_runtime(runtime: LayerRuntime, job: MetaJob) -> LayerRuntime:
    """The layer at the job's dimension values: every dimension of the layer named,
    each value in the spelling of its keys; raises BadJob otherwise."""
    if not job.dimensions:
        return runtime
    dims = runtime.layer.dimensions
    given = dict(job.dimensions)
    if len(given) != len(job.dimensions) or set(given) != {d.name for d in dims}:
        expected = ", ".join(d.name for d in dims) or "none"
        raise BadJob(f"{job.describe()}: layer {job.layer} has the dimensions {expected}")
    try:
        return runtime.with_values(tuple(d.key_value(given[d.name]) for d in dims))
    except DimensionError as exc:
        raise BadJob(f"{job.describe()}: {exc}") from None


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


def tile_count(runtime: LayerRuntime, job: MetaJob) -> int:
    """Tiles a job accounts for (those it stores; 1 for a job that names no metatile)."""
    try:
        return len(job_tiles(runtime, job)[1])
    except BadJob:
        return len(job.tiles) or 1
