"""Export: a layer's stored tiles over an area and zoom range, into one archive file
(PMTiles, MBTiles or GeoPackage: :mod:`s3maptiler.archives`).

Tiles stream from the store to the writer zoom by zoom, rows then columns, in chunks
read by a few threads (S3) or one (a local directory): memory holds one chunk, never
the list of tiles. The archive is written under a temporary name beside the target
(``.<name>.<random>.part``) and renamed over it only once complete, so a reader of
the target sees the old file or the whole new one; a killed export leaves only the
``.part`` file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from s3maptiler.archives.common import ArchiveInfo, tile_format
from s3maptiler.archives.writers import open_writer
from s3maptiler.render.runtime import LayerRuntime
from s3maptiler.seeding.coverage import Coverage, SeedError
from s3maptiler.seeding.plan import covered_tiles
from s3maptiler.storage.stores import StoredTile, TileStore
from s3maptiler.tiles.grids import Bbox, Tile
from s3maptiler.tiles.tilemath import tile_lonlat_bounds

# Tiles read ahead per chunk: bounded memory (a chunk of 256 px tiles is a few MB).
CHUNK = 256


class EmptyExport(SeedError):
    """No stored tile of the layer in the area and zooms: nothing is written."""


class ExportInterrupted(SeedError):
    """Stopped by a signal before the archive was complete: nothing is written."""


@dataclass
class ExportReport:
    """What an export did: tiles ``written``, covered tiles ``missing`` from the store,
    tiles ``ignored`` outside the layer's extent; bytes of tile data written."""

    written: int = 0
    missing: int = 0
    ignored: int = 0
    tile_bytes: int = 0
    elapsed: float = 0.0
    formats: set[str] = field(default_factory=set)
    # Per zoom: min x, min y, max x, max y of the tiles written.
    spans: dict[int, list[int]] = field(default_factory=dict)

    def saw(self, tile: Tile, data: bytes) -> None:
        self.written += 1
        self.tile_bytes += len(data)
        self.formats.add(tile_format(data))
        span = self.spans.get(tile.z)
        if span is None:
            self.spans[tile.z] = [tile.x, tile.y, tile.x, tile.y]
        else:
            span[:] = (
                min(span[0], tile.x),
                min(span[1], tile.y),
                max(span[2], tile.x),
                max(span[3], tile.y),
            )


@dataclass(frozen=True)
class ExportRequest:
    """What to export: the layer (at its dimension values), the tile extension, the
    area and zooms, and the words the archive's metadata carries."""

    runtime: LayerRuntime
    ext: str
    coverage: Coverage
    zooms: list[int]
    name: str
    description: str = ""
    attribution: str = ""


def _keys(request: ExportRequest, report: ExportReport) -> Iterator[tuple[Tile, str]]:
    runtime = request.runtime
    for z in request.zooms:
        for tile in covered_tiles(runtime, request.coverage, z):
            key = runtime.key_to_store(tile, request.ext)
            if key is None:
                report.ignored += 1
            else:
                yield tile, key


def stored_tiles(
    request: ExportRequest, store: TileStore, report: ExportReport, workers: int = 1
) -> Iterator[tuple[Tile, StoredTile | None]]:
    """Each covered tile with what the store holds for it (None: missing), in order.
    ``workers`` > 1 reads each chunk on that many threads (S3 round trips)."""
    keys = _keys(request, report)
    with contextlib.ExitStack() as stack:
        get: Callable[[Iterable[str]], Iterable[StoredTile | None]]
        if workers > 1:
            pool = stack.enter_context(ThreadPoolExecutor(workers, "export"))
            get = lambda batch: pool.map(store.get, batch)  # noqa: E731
        else:
            get = lambda batch: map(store.get, batch)  # noqa: E731
        while chunk := list(islice(keys, CHUNK)):
            yield from zip((tile for tile, _ in chunk), get([key for _, key in chunk]), strict=True)


def _info(request: ExportRequest, report: ExportReport) -> ArchiveInfo:
    grid = request.runtime.grid
    low, high = min(report.spans), max(report.spans)
    x0, y0, x1, y1 = report.spans[high]
    first, last = Tile(x0, y0, high), Tile(x1, y1, high)
    native = Bbox(
        grid.tile_bbox(first).left,
        grid.tile_bbox(last).bottom,
        grid.tile_bbox(last).right,
        grid.tile_bbox(first).top,
    )
    west, north = tile_lonlat_bounds(grid, first)[0], tile_lonlat_bounds(grid, first)[3]
    east, south = tile_lonlat_bounds(grid, last)[2], tile_lonlat_bounds(grid, last)[1]
    lonlat = Bbox(west, south, east, north)
    center = ((west + east) / 2, (south + north) / 2, (low + high) // 2)
    return ArchiveInfo(
        name=request.name,
        description=request.description,
        attribution=request.attribution,
        min_zoom=low,
        max_zoom=high,
        bounds=lonlat,
        native_bounds=native,
        center=center,
        formats=frozenset(report.formats),
    )


def export_archive(
    request: ExportRequest,
    store: TileStore,
    target: Path,
    kind: str,
    workers: int = 1,
    on_progress: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
) -> ExportReport:
    """Write the stored tiles of ``request`` to ``target`` (``kind``: an archive suffix)
    and return the summary. Raises EmptyExport when no covered tile is stored,
    ExportInterrupted when ``stop`` is set, ArchiveError when the grid does not fit
    the kind, StoreError when the store fails; in every case ``target`` is untouched
    and the temporary file removed."""
    started = time.monotonic()
    report = ExportReport()
    progress = on_progress or (lambda _n: None)
    # Created like any new file (the umask's mode, not mkstemp's 0600), never an old one.
    part = target.parent / f".{target.name}.{secrets.token_hex(4)}.part"
    os.close(os.open(part, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        writer = open_writer(part, kind, request.runtime.grid, request.name)
        try:
            for count, (tile, stored) in enumerate(stored_tiles(request, store, report, workers)):
                if stored is None:
                    report.missing += 1
                else:
                    report.saw(tile, stored.data)
                    writer.add(tile, stored.data)
                if count % CHUNK == CHUNK - 1:
                    progress(CHUNK)
                    if stop is not None and stop.is_set():
                        raise ExportInterrupted("export interrupted; nothing written")
            if not report.written:
                raise EmptyExport(
                    f"no stored tile of layer {request.runtime.layer.name} in "
                    f"{request.coverage.description} at zooms "
                    f"{request.zooms[0]}-{request.zooms[-1]} ({report.missing} missing, "
                    f"{report.ignored} outside its extent); seed them first or pass --fill"
                )
            writer.finish(_info(request, report))
        except BaseException:
            writer.close()
            raise
        with open(part, "rb") as done:
            os.fsync(done.fileno())  # the bytes are on disk before the name points at them
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
    report.elapsed = time.monotonic() - started
    return report
