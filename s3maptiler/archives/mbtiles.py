"""MBTiles 1.3 (SQLite): a ``tiles`` table of z/x/y with TMS rows (counted from the
bottom) and a ``metadata`` table of name/value pairs. Web Mercator only, as the
specification says: https://github.com/mapbox/mbtiles-spec/blob/master/1.3/spec.md
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from s3maptiler.archives.common import (
    ArchiveError,
    ArchiveInfo,
    ArchiveWriter,
    format_name,
    is_web_mercator_xyz,
)
from s3maptiler.tiles.grids import Tile, TileGrid

# Rows per INSERT batch: a few MB of tiles at most in memory.
BATCH = 500

_SCHEMA = """
CREATE TABLE metadata (name TEXT, value TEXT);
CREATE TABLE tiles (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER, tile_data BLOB);
"""


class MBTilesWriter(ArchiveWriter):
    def __init__(self, path: Path, grid: TileGrid) -> None:
        if not is_web_mercator_xyz(grid):
            raise ArchiveError(f"MBTiles holds Web Mercator tiles only; the grid is {grid.name}")
        super().__init__(path, grid)
        self._db = sqlite3.connect(path)
        # A temporary file renamed when finished: no journal needed for a crash.
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.executescript(_SCHEMA)
        self._rows: list[tuple[int, int, int, bytes]] = []

    def add(self, tile: Tile, data: bytes) -> None:
        self._rows.append((tile.z, tile.x, self.grid.flip_y(tile.y, tile.z), data))
        if len(self._rows) >= BATCH:
            self._flush()

    def _flush(self) -> None:
        self._db.executemany("INSERT INTO tiles VALUES (?, ?, ?, ?)", self._rows)
        self._rows.clear()

    def finish(self, info: ArchiveInfo) -> None:
        self._flush()
        b, (lon, lat, zoom) = info.bounds, info.center
        fmt = format_name(info.formats)
        metadata = {
            "name": info.name,
            "format": "png" if fmt == "mixed" else fmt,  # the spec has no "mixed"
            "bounds": f"{b.left:.7f},{b.bottom:.7f},{b.right:.7f},{b.top:.7f}",
            "center": f"{lon:.7f},{lat:.7f},{zoom}",
            "minzoom": str(info.min_zoom),
            "maxzoom": str(info.max_zoom),
            "type": "baselayer",
            "version": "1.3",
            "description": info.description,
        }
        if fmt == "mixed":
            metadata["s3maptiler:formats"] = ",".join(sorted(info.formats))
        if info.attribution:
            metadata["attribution"] = info.attribution
        self._db.executemany("INSERT INTO metadata VALUES (?, ?)", metadata.items())
        # The index readers look tiles up by, built once at the end (faster than per row).
        self._db.execute(
            "CREATE UNIQUE INDEX tile_index ON tiles (zoom_level, tile_column, tile_row)"
        )
        self._db.commit()
        self._db.close()

    def close(self) -> None:
        self._db.close()
