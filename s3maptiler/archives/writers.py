"""Which writer a file name asks for."""

from __future__ import annotations

from pathlib import Path

from s3maptiler.archives.common import ArchiveWriter
from s3maptiler.archives.geopackage import GeoPackageWriter
from s3maptiler.archives.mbtiles import MBTilesWriter
from s3maptiler.archives.pmtiles import PMTilesWriter
from s3maptiler.tiles.grids import TileGrid


def open_writer(path: Path, kind: str, grid: TileGrid, table: str) -> ArchiveWriter:
    """A writer of ``kind`` (an ``ARCHIVE_KINDS`` suffix) at ``path``; ``table`` names
    the GeoPackage tile table. ArchiveError when the grid does not fit the kind."""
    if kind == ".pmtiles":
        return PMTilesWriter(path, grid)
    if kind == ".mbtiles":
        return MBTilesWriter(path, grid)
    return GeoPackageWriter(path, grid, table)
