"""PMTiles version 3 through protomaps' own ``pmtiles`` package: its writer keeps each
distinct tile once (same bytes, one offset: blanks and open sea) and builds the
directories; its reader answers zooms served from an archive (service side).

https://github.com/protomaps/PMTiles/blob/main/spec/v3/spec.md
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from pmtiles.tile import Compression, TileType, zxy_to_tileid
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
