"""What a seed or an export will cost, before it runs: per zoom the tiles, metatiles
(GetMaps), S3 PUTs and GETs and the expected bytes, and the request and storage cost
at list prices.

Counts come from the same plan a run follows (:func:`~s3maptiler.seeding.plan.covered_tiles`,
the layer's extent and metatile size), so a dry run's GetMaps and PUTs are those the
seed then sends into an empty cache. Bytes come from tiles already stored: the mean
size of a few tiles spread over the area at the nearest zoom that has some.

List prices (S3 Standard, US East (N. Virginia), https://aws.amazon.com/s3/pricing/,
checked for this release): PUT, COPY, POST, LIST $0.005 per 1,000 requests; GET,
SELECT $0.0004 per 1,000; storage $0.023 per GB-month (first 50 TB).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from s3maptiler.render.runtime import LayerRuntime
from s3maptiler.seeding.coverage import Coverage
from s3maptiler.seeding.plan import covered_tiles
from s3maptiler.storage.s3 import StoreError
from s3maptiler.storage.stores import TileStore
from s3maptiler.tiles.grids import Tile
from s3maptiler.tiles.tilemath import lonlat_to_tile

# Tiles read per zoom to sample sizes: a lattice of SAMPLE_SIDE x SAMPLE_SIDE points.
SAMPLE_SIDE = 4
GB = 1_000_000_000  # S3 bills decimal gigabytes


@dataclass(frozen=True)
class Prices:
    """US dollars: per 1,000 PUT-class requests, per 1,000 GETs, per GB-month stored."""

    put_per_1000: float = 0.005
    get_per_1000: float = 0.0004
    storage_gb_month: float = 0.023


@dataclass
class ZoomCost:
    """One zoom level of a plan. ``tile_bytes`` is the expected size of one tile
    (sampled at ``sampled_zoom``), None when no tile of the layer is stored nearby."""

    z: int
    tiles: int = 0
    metatiles: int = 0
    getmaps: int = 0
    puts: int = 0
    gets: int = 0
    tile_bytes: float | None = None
    sampled_zoom: int | None = None

    @property
    def expected_bytes(self) -> float | None:
        return None if self.tile_bytes is None else self.tile_bytes * self.tiles


@dataclass
class Plan:
    """Per zoom costs and the totals."""

    zooms: list[ZoomCost] = field(default_factory=list)
    extra_puts: int = 0  # not per zoom: an archive's upload

    def total(self, name: str) -> int:
        return sum(getattr(z, name) for z in self.zooms)

    @property
    def expected_bytes(self) -> float | None:
        sizes = [z.expected_bytes for z in self.zooms]
        return None if any(s is None for s in sizes) else sum(sizes)  # type: ignore[misc]

    def request_cost(self, prices: Prices) -> tuple[float, float]:
        """Dollars for the PUTs and for the GETs."""
        puts = (self.total("puts") + self.extra_puts) * prices.put_per_1000 / 1000
        return puts, self.total("gets") * prices.get_per_1000 / 1000


class SizeSampler:
    """Mean stored tile size at a zoom over an area, read once per zoom."""

    def __init__(self, runtime: LayerRuntime, ext: str, coverage: Coverage, store: TileStore):
        self.runtime, self.ext, self.coverage, self.store = runtime, ext, coverage, store
        self._means: dict[int, float | None] = {}

    def mean(self, z: int) -> float | None:
        if z not in self._means:
            self._means[z] = self._sample(z)
        return self._means[z]

    def _sample(self, z: int) -> float | None:
        west, south, east, north = self.coverage.bounds
        tiles: set[Tile] = set()
        for i in range(SAMPLE_SIDE):
            for j in range(SAMPLE_SIDE):
                lon = west + (i + 0.5) / SAMPLE_SIDE * (east - west)
                lat = south + (j + 0.5) / SAMPLE_SIDE * (north - south)
                tiles.add(lonlat_to_tile(self.runtime.grid, lon, lat, z))
        sizes = []
        for tile in sorted(tiles):
            key = self.runtime.key_to_store(tile, self.ext)
            try:
                stored = self.store.get(key) if key is not None else None
            except StoreError:
                stored = None  # a dry run guesses; it does not fail on a refused read
            if stored is not None:
                sizes.append(len(stored.data))
        return sum(sizes) / len(sizes) if sizes else None

    def nearest(self, z: int) -> tuple[int | None, float | None]:
        """The nearest zoom with stored tiles (this one first, then one finer, one
        coarser, ...) within the layer's levels, and their mean size."""
        layer = self.runtime.layer
        low, high = layer.min_zoom, min(layer.max_zoom, self.runtime.grid.max_zoom)
        for step in range(high - low + 1):
            for candidate in (z - step, z + step) if step else (z,):
                if low <= candidate <= high:
                    mean = self.mean(candidate)
                    if mean is not None:
                        return candidate, mean
        return None, None


def plan_costs(
    runtime: LayerRuntime,
    ext: str,
    coverage: Coverage,
    zooms: list[int],
    sampler: SizeSampler | None,
    *,
    seed: bool,
    read: bool,
    repeat: int = 1,
) -> Plan:
    """The costs of a plan. ``seed``: tiles drawn and written (one GetMap per metatile
    with a tile worth storing, one PUT per such tile); ``read``: each tile read once
    (an export: a GET per tile, missing ones too). ``repeat``: dimension values."""
    plan = Plan()
    cols, rows = runtime.layer.metatile
    for z in zooms:
        line = ZoomCost(z)
        origins: set[tuple[int, int]] = set()
        for tile in covered_tiles(runtime, coverage, z):
            if runtime.key_to_store(tile, ext) is None:
                continue  # outside the layer's extent: neither drawn, stored nor read
            line.tiles += 1
            origins.add((tile.x // cols, tile.y // rows))
        line.metatiles = len(origins)
        line.tiles *= repeat
        line.metatiles *= repeat
        line.getmaps = line.metatiles if seed else 0
        line.puts = line.tiles if seed else 0
        line.gets = line.tiles if read else 0
        if sampler is not None:
            line.sampled_zoom, line.tile_bytes = sampler.nearest(z)
        plan.zooms.append(line)
    return plan
