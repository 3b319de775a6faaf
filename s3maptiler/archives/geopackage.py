"""GeoPackage 1.3 tiles (OGC 12-128r18, section 2.2 and Annex P for WebP): the tile
pyramid table, ``gpkg_tile_matrix_set`` (one top-left corner for every zoom) and a
``gpkg_tile_matrix`` row per zoom written straight from the layer's grid, so any of
its grids fits: Web Mercator, EPSG:4326 (two tiles at zoom 0) and custom ones.
"""

from __future__ import annotations

import math
import re
import sqlite3
from pathlib import Path

from s3maptiler.archives.common import ArchiveError, ArchiveInfo, ArchiveWriter
from s3maptiler.tiles.grids import Tile, TileGrid
from s3maptiler.tiles.srs import crs

BATCH = 500
APPLICATION_ID = 0x47504B47  # "GPKG"
USER_VERSION = 10300  # 1.3.0

# The definitions GDAL writes; other EPSG codes are "undefined" and readers look the
# code up in their own EPSG database (PROJ), as the specification allows.
_WGS84 = (
    'GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563,'
    'AUTHORITY["EPSG","7030"]],AUTHORITY["EPSG","6326"]],PRIMEM["Greenwich",0,'
    'AUTHORITY["EPSG","8901"]],UNIT["degree",0.0174532925199433,AUTHORITY["EPSG","9122"]],'
    'AUTHORITY["EPSG","4326"]]'
)
_PSEUDO_MERCATOR = (
    'PROJCS["WGS 84 / Pseudo-Mercator",' + _WGS84 + ',PROJECTION["Mercator_1SP"],'
    'PARAMETER["central_meridian",0],PARAMETER["scale_factor",1],'
    'PARAMETER["false_easting",0],PARAMETER["false_northing",0],'
    'UNIT["metre",1,AUTHORITY["EPSG","9001"]],AXIS["Easting",EAST],AXIS["Northing",NORTH],'
    'AUTHORITY["EPSG","3857"]]'
)
_DEFINITIONS = {
    4326: ("WGS 84 geodetic", _WGS84),
    3857: ("WGS 84 / Pseudo-Mercator", _PSEUDO_MERCATOR),
}

_SCHEMA = """
CREATE TABLE gpkg_spatial_ref_sys (
  srs_name TEXT NOT NULL, srs_id INTEGER PRIMARY KEY, organization TEXT NOT NULL,
  organization_coordsys_id INTEGER NOT NULL, definition TEXT NOT NULL, description TEXT);
CREATE TABLE gpkg_contents (
  table_name TEXT NOT NULL PRIMARY KEY, data_type TEXT NOT NULL, identifier TEXT UNIQUE,
  description TEXT DEFAULT '',
  last_change DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
  min_x DOUBLE, min_y DOUBLE, max_x DOUBLE, max_y DOUBLE,
  srs_id INTEGER REFERENCES gpkg_spatial_ref_sys(srs_id));
CREATE TABLE gpkg_tile_matrix_set (
  table_name TEXT NOT NULL PRIMARY KEY REFERENCES gpkg_contents(table_name),
  srs_id INTEGER NOT NULL REFERENCES gpkg_spatial_ref_sys(srs_id),
  min_x DOUBLE NOT NULL, min_y DOUBLE NOT NULL, max_x DOUBLE NOT NULL, max_y DOUBLE NOT NULL);
CREATE TABLE gpkg_tile_matrix (
  table_name TEXT NOT NULL REFERENCES gpkg_contents(table_name),
  zoom_level INTEGER NOT NULL, matrix_width INTEGER NOT NULL, matrix_height INTEGER NOT NULL,
  tile_width INTEGER NOT NULL, tile_height INTEGER NOT NULL,
  pixel_x_size DOUBLE NOT NULL, pixel_y_size DOUBLE NOT NULL,
  CONSTRAINT pk_ttm PRIMARY KEY (table_name, zoom_level));
CREATE TABLE gpkg_extensions (
  table_name TEXT, column_name TEXT, extension_name TEXT NOT NULL,
  definition TEXT NOT NULL, scope TEXT NOT NULL,
  CONSTRAINT ge_tce UNIQUE (table_name, column_name, extension_name));
"""

_REQUIRED_SRS = [
    (
        "Undefined cartesian SRS",
        -1,
        "NONE",
        -1,
        "undefined",
        "undefined cartesian coordinate reference system",
    ),
    (
        "Undefined geographic SRS",
        0,
        "NONE",
        0,
        "undefined",
        "undefined geographic coordinate reference system",
    ),
    (
        "WGS 84 geodetic",
        4326,
        "EPSG",
        4326,
        _WGS84,
        "longitude/latitude coordinates in decimal degrees on the WGS 84 spheroid",
    ),
]


def table_name(name: str) -> str:
    """A tile table name from a layer name: letters, digits and underscores, not
    starting with a digit or the reserved ``gpkg_``."""
    text = re.sub(r"[^A-Za-z0-9_]", "_", name) or "tiles"
    if text[0].isdigit() or text.lower().startswith("gpkg_"):
        text = "t_" + text
    return text


def _srs_id(grid: TileGrid) -> int:
    system = crs(grid.srs)
    if system.code is not None:
        return system.code
    if system.name == "CRS:84":  # lon/lat like every GeoPackage geometry: EPSG:4326
        return 4326
    raise ArchiveError(f"GeoPackage needs an EPSG code; the grid {grid.name} is in {grid.srs}")


class GeoPackageWriter(ArchiveWriter):
    def __init__(self, path: Path, grid: TileGrid, table: str) -> None:
        super().__init__(path, grid)
        self.srs_id = _srs_id(grid)
        self.table = table_name(table)
        self._db = sqlite3.connect(path)
        self._db.execute(f"PRAGMA application_id={APPLICATION_ID}")
        self._db.execute(f"PRAGMA user_version={USER_VERSION}")
        self._db.execute("PRAGMA journal_mode=OFF")  # a temporary file, renamed when done
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.executescript(_SCHEMA)
        self._db.execute(
            f'CREATE TABLE "{self.table}" (id INTEGER PRIMARY KEY AUTOINCREMENT, '
            "zoom_level INTEGER NOT NULL, tile_column INTEGER NOT NULL, "
            "tile_row INTEGER NOT NULL, tile_data BLOB NOT NULL, "
            "UNIQUE (zoom_level, tile_column, tile_row))"
        )
        self._rows: list[tuple[int, int, int, bytes]] = []

    def add(self, tile: Tile, data: bytes) -> None:
        self._rows.append((tile.z, tile.x, tile.y, data))  # rows from the top, as ours
        if len(self._rows) >= BATCH:
            self._flush()

    def _flush(self) -> None:
        self._db.executemany(
            f'INSERT INTO "{self.table}" (zoom_level, tile_column, tile_row, tile_data) '
            "VALUES (?, ?, ?, ?)",
            self._rows,
        )
        self._rows.clear()

    def _matrix_set(self, zooms: range) -> tuple[float, float, float, float]:
        """min_x, min_y, max_x, max_y: the top-left corner shared by every zoom (the
        specification's one origin) and the far corner of the largest matrix."""
        grid = self.grid
        corners = {
            (grid.tile_bbox(Tile(0, 0, z)).left, grid.tile_bbox(Tile(0, 0, z)).top) for z in zooms
        }
        left, top = corners.pop()
        if any(not (math.isclose(x, left) and math.isclose(y, top)) for x, y in corners):
            raise ArchiveError(
                f"GeoPackage needs one top-left corner for zooms {zooms[0]}-{zooms[-1]}; "
                f"the grid {grid.name} has several"
            )
        right, bottom = left, top
        for z in zooms:
            cols, rows = grid.matrix_size(z)
            span = grid.resolution(z) * grid.tile_size
            right, bottom = max(right, left + cols * span), min(bottom, top - rows * span)
        return left, bottom, right, top

    def finish(self, info: ArchiveInfo) -> None:
        self._flush()
        db, grid = self._db, self.grid
        zooms = range(info.min_zoom, info.max_zoom + 1)
        db.executemany("INSERT INTO gpkg_spatial_ref_sys VALUES (?, ?, ?, ?, ?, ?)", _REQUIRED_SRS)
        if self.srs_id != 4326:
            name, definition = _DEFINITIONS.get(self.srs_id, (grid.srs, "undefined"))
            db.execute(
                "INSERT INTO gpkg_spatial_ref_sys VALUES (?, ?, 'EPSG', ?, ?, ?)",
                (name, self.srs_id, self.srs_id, definition, grid.srs),
            )
        description = info.description
        if info.attribution:
            description += f" Attribution: {info.attribution}"
        b = info.native_bounds
        db.execute(
            "INSERT INTO gpkg_contents (table_name, data_type, identifier, description, "
            "min_x, min_y, max_x, max_y, srs_id) VALUES (?, 'tiles', ?, ?, ?, ?, ?, ?, ?)",
            (self.table, info.name, description, b.left, b.bottom, b.right, b.top, self.srs_id),
        )
        db.execute(
            "INSERT INTO gpkg_tile_matrix_set VALUES (?, ?, ?, ?, ?, ?)",
            (self.table, self.srs_id, *self._matrix_set(zooms)),
        )
        db.executemany(
            "INSERT INTO gpkg_tile_matrix VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    self.table,
                    z,
                    *grid.matrix_size(z),
                    grid.tile_size,
                    grid.tile_size,
                    grid.resolution(z),
                    grid.resolution(z),
                )
                for z in zooms
            ],
        )
        if "webp" in info.formats:
            db.execute(
                "INSERT INTO gpkg_extensions VALUES (?, 'tile_data', 'gpkg_webp', "
                "'GeoPackage 1.0 Specification Annex P', 'read-write')",
                (self.table,),
            )
        db.commit()
        db.close()

    def close(self) -> None:
        self._db.close()
