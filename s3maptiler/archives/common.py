"""What every archive writer shares: the metadata of an export, the writer interface,
which writer a file name asks for, and the media type an archive is uploaded with."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from s3maptiler.tiles.formats import sniff
from s3maptiler.tiles.grids import WEB_MERCATOR, Bbox, Tile, TileGrid

__all__ = [
    "ARCHIVE_KINDS",
    "ArchiveError",
    "ArchiveInfo",
    "ArchiveWriter",
    "archive_kind",
    "format_name",
    "is_web_mercator_xyz",
]

#: Archive kinds by file suffix, and the Content-Type an upload of one gets:
#: PMTiles as protomaps' tools upload it, the two SQLite ones as registered at IANA.
ARCHIVE_KINDS: dict[str, str] = {
    ".pmtiles": "application/vnd.pmtiles",
    ".mbtiles": "application/vnd.sqlite3",
    ".gpkg": "application/geopackage+sqlite3",
}

# An image family (tiles/formats.sniff) as archives name it.
_NAMES = {"png": "png", "jpeg": "jpg", "webp": "webp"}


class ArchiveError(ValueError):
    """A layer or tile an archive cannot hold; the message is one line."""


@dataclass(frozen=True)
class ArchiveInfo:
    """What an archive says about itself. ``bounds`` are decimal degrees (west, south,
    east, north), ``native_bounds`` the same tiles in the grid's CRS units; both are
    the extent of the tiles written at ``max_zoom``. ``center`` is (lon, lat, zoom)."""

    name: str
    description: str
    attribution: str
    min_zoom: int
    max_zoom: int
    bounds: Bbox
    native_bounds: Bbox
    center: tuple[float, float, int]
    formats: frozenset[str]  # png, jpg, webp: those of the tiles written


def format_name(formats: Iterable[str]) -> str:
    """``png``, ``jpg`` or ``webp`` for tiles of one format; ``mixed`` for several."""
    found = sorted(set(formats))
    return found[0] if len(found) == 1 else "mixed"


def tile_format(data: bytes) -> str:
    """The archive name of a tile's format from its bytes; ArchiveError for others."""
    name = _NAMES.get(sniff(data) or "")
    if name is None:
        raise ArchiveError("a tile is neither PNG, JPEG nor WebP")
    return name


def is_web_mercator_xyz(grid: TileGrid) -> bool:
    """Whether the grid is the one z/x/y pyramid MBTiles and PMTiles know: Web
    Mercator, one tile at zoom 0, levels halving."""
    return (
        grid.srs == WEB_MERCATOR.srs
        and grid.bbox == WEB_MERCATOR.bbox
        and grid.resolutions[0] * grid.tile_size == WEB_MERCATOR.resolutions[0] * 256
        and all(grid.matrix_size(z) == (2**z, 2**z) for z in range(grid.max_zoom + 1))
    )


class ArchiveWriter(ABC):
    """Writes one archive file at ``path`` (a temporary name: the caller renames it
    once :meth:`finish` returned). Tiles come one at a time, in any order."""

    def __init__(self, path: Path, grid: TileGrid) -> None:
        self.path = path
        self.grid = grid

    @abstractmethod
    def add(self, tile: Tile, data: bytes) -> None:
        """Write one tile (rows of ``tile`` count from the top)."""

    @abstractmethod
    def finish(self, info: ArchiveInfo) -> None:
        """Write the metadata and close the file."""

    @abstractmethod
    def close(self) -> None:
        """Close without finishing (an error or an interruption): the file is garbage."""


def archive_kind(path: Path) -> str:
    """The suffix of a supported archive name; ArchiveError naming the kinds otherwise."""
    suffix = path.suffix.lower()
    if suffix not in ARCHIVE_KINDS:
        kinds = ", ".join(ARCHIVE_KINDS)
        raise ArchiveError(f"{path.name}: the output must end in one of {kinds}")
    return suffix
