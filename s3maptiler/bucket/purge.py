"""Purge: delete a layer's tiles by zoom range and area.

Two phases, so the second can show an honest total:

1. :func:`find_tiles` lists the layer's prefix with ListObjectsV2 (one listing per zoom
   level where the layout puts the zoom first: ``{z}/`` for tms, xyz and wmts,
   ``L{z:02d}/`` for arcgis) and keeps the keys that parse as tiles of the layer's
   layout inside the :class:`TileSelection`. Keys that are not tiles (documents,
   another layer nested under the prefix) are never selected.
2. :func:`delete_keys` removes them with DeleteObjects, 1000 keys per call (the S3
   maximum; a throttled call is retried by the S3 client's own "standard" retries,
   keys S3 reports it could not delete are counted as failed), and counts what S3
   says it deleted.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from s3maptiler.storage.s3 import BulkReport, ListingFailed, describe_error, list_objects
from s3maptiler.tiles.grids import Bbox, GridError, TileGrid
from s3maptiler.tiles.layouts import Layout, LayoutError, split_pixel_ratio
from s3maptiler.tiles.tilemath import has_lonlat, tile_lonlat_bounds

__all__ = [
    "MAX_DELETE_BATCH",
    "DeleteReport",
    "InvalidSelection",
    "ListingFailed",
    "PurgeError",
    "TileSelection",
    "TilesFound",
    "delete_keys",
    "find_tiles",
    "listing_prefixes",
]

log = logging.getLogger(__name__)

#: DeleteObjects takes at most 1000 keys per call.
MAX_DELETE_BATCH = 1000


class PurgeError(Exception):
    """Base class for every error raised by this module; the message is one line."""


class InvalidSelection(PurgeError, ValueError):
    """A zoom range or bounding box that selects nothing sensible."""


@dataclass(frozen=True)
class TileSelection:
    """Which tiles of a layer to purge.

    `layout` and `grid` are the layer's; zooms `min_zoom`..`max_zoom` inclusive;
    `bbox` an optional area in decimal degrees (west, south, east, north): a tile is
    selected when its area overlaps the bbox by more than an edge.
    """

    layout: Layout
    grid: TileGrid
    min_zoom: int = 0
    max_zoom: int | None = None
    bbox: Bbox | None = None
    # None: the tiles at every pixel ratio (a layer's @2x tiles go with it); 2: only @2x.
    pixel_ratio: int | None = None

    def __post_init__(self) -> None:
        top = self.grid.max_zoom
        max_zoom = top if self.max_zoom is None else self.max_zoom
        if not 0 <= self.min_zoom <= max_zoom <= top:
            raise InvalidSelection(
                f"zoom range {self.min_zoom}..{max_zoom} is not inside 0..{top} "
                f"of grid {self.grid.name}"
            )
        object.__setattr__(self, "max_zoom", max_zoom)
        if self.bbox is not None:
            west, south, east, north = bbox = Bbox(*(float(v) for v in self.bbox))
            if not all(math.isfinite(v) for v in bbox):
                raise InvalidSelection(f"bbox {tuple(bbox)} is not finite")
            if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
                raise InvalidSelection(
                    f"bbox {tuple(bbox)} must be west,south,east,north in decimal degrees "
                    "with west < east and south < north"
                )
            if not has_lonlat(self.grid):  # grids in other CRSs have no transform here
                raise InvalidSelection(
                    f"a bbox cannot be used with this grid: no lon/lat transform for "
                    f"{self.grid.srs}"
                )
            object.__setattr__(self, "bbox", bbox)

    @property
    def zooms(self) -> range:
        """The selected zoom levels."""
        return range(self.min_zoom, self.max_zoom + 1)  # type: ignore[operator]

    def selects(self, path: str) -> bool | None:
        """True when the tile at `path` (relative to the layer's prefix) is selected,
        False when it is a tile outside the selection, None when it is not a tile."""
        path, ratio = split_pixel_ratio(path)
        try:
            tile, _ext = self.layout.parse(path, self.grid)
        except (LayoutError, GridError):
            return None
        if self.pixel_ratio not in (None, ratio):
            return False
        if not self.min_zoom <= tile.z <= self.max_zoom:  # type: ignore[operator]
            return False
        if self.bbox is None:
            return True
        west, south, east, north = tile_lonlat_bounds(self.grid, tile)
        b = self.bbox
        return west < b.right and east > b.left and south < b.top and north > b.bottom


def listing_prefixes(prefix: str, selection: TileSelection) -> list[str]:
    """The key prefixes to list: one per zoom level when the layout starts keys with
    the zoom, else the layer's whole prefix."""
    name = selection.layout.name
    if name in ("tms", "xyz", "wmts"):
        return [f"{prefix}{z}/" for z in selection.zooms]
    if name == "arcgis":
        return [f"{prefix}L{z:02d}/" for z in selection.zooms]
    return [prefix]


@dataclass
class TilesFound:
    """The result of :func:`find_tiles`: keys to delete, and what else was listed."""

    keys: list[str] = field(default_factory=list)
    listed: int = 0  # objects listed
    ignored: int = 0  # listed keys that are not tiles of the layout
    elapsed: float = 0.0  # seconds

    def add(self, other: TilesFound) -> None:
        """Count in the finds under another prefix (another dimension value)."""
        self.keys.extend(other.keys)
        self.listed += other.listed
        self.ignored += other.ignored
        self.elapsed += other.elapsed


def find_tiles(
    client: Any,
    bucket: str,
    prefix: str,
    selection: TileSelection,
    on_listed: Callable[[int], None] | None = None,
) -> TilesFound:
    """Keys under `prefix` of the tiles in `selection`; `on_listed(n)` after each page.

    Raises ListingFailed (:mod:`s3maptiler.storage.s3`).
    """
    found = TilesFound()
    started = time.perf_counter()

    def listed(count: int) -> None:
        found.listed += count
        if on_listed is not None:
            on_listed(count)

    for listing_prefix in listing_prefixes(prefix, selection):
        for obj in list_objects(client, bucket, listing_prefix, on_page=listed):
            key = obj["Key"]
            verdict = selection.selects(key[len(prefix) :])
            if verdict is None:
                found.ignored += 1
            elif verdict:
                found.keys.append(key)
    found.elapsed = time.perf_counter() - started
    return found


@dataclass
class DeleteReport(BulkReport):
    """Counts of :func:`delete_keys`: `requested` keys, `deleted`, and DeleteObjects
    `batches`; `failed` keys with their reasons."""

    requested: int = 0
    deleted: int = 0
    batches: int = 0


def _delete_batch(client: Any, bucket: str, keys: Sequence[str]) -> list[tuple[str, str]]:
    """Delete up to 1000 keys; the (key, reason) pairs S3 did not delete. Retries are
    the client's own (botocore "standard" mode, `make_s3_client`), no loop here."""
    request = {"Objects": [{"Key": k} for k in keys], "Quiet": True}
    try:
        answer = client.delete_objects(Bucket=bucket, Delete=request)
    except (ClientError, BotoCoreError) as err:
        reason = describe_error(err)
        log.warning("DeleteObjects failed for %d keys: %s", len(keys), reason)
        return [(k, reason) for k in keys]
    return [
        (e.get("Key", "?"), f"{e.get('Code', '?')} {e.get('Message', '')}".strip())
        for e in answer.get("Errors", [])
    ]


def delete_keys(
    client: Any,
    bucket: str,
    keys: Iterable[str],
    batch_size: int = MAX_DELETE_BATCH,
    workers: int = 4,
    on_deleted: Callable[[int], None] | None = None,
) -> DeleteReport:
    """Delete `keys` in DeleteObjects batches of `batch_size` (at most 1000), `workers`
    batches at a time; `on_deleted(n)` after each batch. Failures are counted, not raised.
    """
    if not 1 <= batch_size <= MAX_DELETE_BATCH:
        raise InvalidSelection(f"batch size {batch_size} is not in 1..{MAX_DELETE_BATCH}")
    keys = list(keys)
    batches = [keys[i : i + batch_size] for i in range(0, len(keys), batch_size)]
    report = DeleteReport(requested=len(keys), batches=len(batches))
    started = time.perf_counter()
    if batches:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            results = pool.map(
                lambda batch: (batch, _delete_batch(client, bucket, batch)),
                batches,
            )
            for batch, failures in results:
                report.deleted += len(batch) - len(failures)
                report.failed += len(failures)
                report.failures.extend(failures)
                if on_deleted is not None:
                    on_deleted(len(batch))
    report.elapsed = time.perf_counter() - started
    return report
