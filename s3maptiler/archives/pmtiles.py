"""PMTiles version 3 through protomaps' own ``pmtiles`` package: its writer keeps each
distinct tile once (same bytes, one offset: blanks and open sea) and builds the
directories; its reader answers zooms served from an archive (service side).

https://github.com/protomaps/PMTiles/blob/main/spec/v3/spec.md
"""

from __future__ import annotations

import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pmtiles.reader import Reader
from pmtiles.tile import Compression, TileType, deserialize_header, zxy_to_tileid
from pmtiles.writer import Writer

from s3maptiler.archives.common import (
    ArchiveError,
    ArchiveInfo,
    ArchiveWriter,
    format_name,
    is_web_mercator_xyz,
)
from s3maptiler.tiles.grids import Tile, TileGrid

_TILE_TYPES = {"png": TileType.PNG, "jpg": TileType.JPEG, "webp": TileType.WEBP}


def _e7(degrees: float) -> int:
    return round(degrees * 10_000_000)


class PMTilesWriter(ArchiveWriter):
    def __init__(self, path: Path, grid: TileGrid) -> None:
        if not is_web_mercator_xyz(grid):
            raise ArchiveError(f"PMTiles holds Web Mercator tiles only; the grid is {grid.name}")
        super().__init__(path, grid)
        self._file = open(path, "wb")  # noqa: SIM115 - closed by finish or close
        # The library spools tile data to a temporary file of its own (the system's
        # temporary directory) and copies it after the directories: put it beside
        # the archive instead, on the same disk.
        self._writer = Writer(self._file)
        self._writer.tile_f.close()
        self._writer.tile_f = tempfile.TemporaryFile(dir=path.parent)  # noqa: SIM115

    def add(self, tile: Tile, data: bytes) -> None:
        self._writer.write_tile(zxy_to_tileid(tile.z, tile.x, tile.y), data)

    def finish(self, info: ArchiveInfo) -> None:
        fmt = format_name(info.formats)
        b, (lon, lat, zoom) = info.bounds, info.center
        header: dict[str, Any] = {
            "tile_type": _TILE_TYPES.get(fmt, TileType.UNKNOWN),  # mixed: UNKNOWN
            "tile_compression": Compression.NONE,  # images are compressed already
            "min_lon_e7": _e7(b.left),
            "min_lat_e7": _e7(b.bottom),
            "max_lon_e7": _e7(b.right),
            "max_lat_e7": _e7(b.top),
            "center_zoom": zoom,
            "center_lon_e7": _e7(lon),
            "center_lat_e7": _e7(lat),
        }
        metadata = {
            "name": info.name,
            "description": info.description,
            "attribution": info.attribution,
            "type": "baselayer",
            "format": fmt,
            "minzoom": info.min_zoom,
            "maxzoom": info.max_zoom,
        }
        self._writer.finalize(header, metadata)
        self._file.close()

    def close(self) -> None:
        self._writer.tile_f.close()
        self._file.close()


# The header (127 bytes) and the root directory lie in the first 16 KiB (spec, 3.2).
_HEAD_BYTES = 16_384
_LEAVES_KEPT = 64


class PMTilesReader:
    """Tiles of one archive through ``read_range(offset, length) -> bytes`` (an S3
    ranged GET, a file read): the header and root directory read once, the last
    leaf directories kept, then one range read per tile. Thread-safe."""

    def __init__(self, read_range: Callable[[int, int], bytes]) -> None:
        self._read = read_range
        self._head = read_range(0, _HEAD_BYTES)
        self.header = deserialize_header(self._head[:127])
        if self.header["tile_compression"] not in (Compression.NONE, Compression.UNKNOWN):
            raise ArchiveError("the archive's tiles are compressed; image tiles are expected")
        start = self.header["leaf_directory_offset"]
        self._leaf_area = range(start, start + self.header["leaf_directory_length"])
        self._leaves: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._reader = Reader(self._bytes)

    def _bytes(self, offset: int, length: int) -> bytes:
        if offset + length <= len(self._head):
            return self._head[offset : offset + length]
        if offset not in self._leaf_area:
            return self._read(offset, length)  # tile data: never kept
        with self._lock:
            leaf = self._leaves.get((offset, length))
            if leaf is not None:
                self._leaves.move_to_end((offset, length))
                return leaf
        leaf = self._read(offset, length)
        with self._lock:
            self._leaves[(offset, length)] = leaf
            while len(self._leaves) > _LEAVES_KEPT:
                self._leaves.popitem(last=False)
        return leaf

    @property
    def zooms(self) -> tuple[int, int]:
        return self.header["min_zoom"], self.header["max_zoom"]

    def tile(self, tile: Tile) -> bytes | None:
        """The bytes of ``tile`` (rows from the top), or None when the archive lacks it."""
        return self._reader.get(tile.z, tile.x, tile.y)
