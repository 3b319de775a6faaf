"""**The** table of standard grids: what each document (WMTS, OGC API, TMS) calls a
grid that is a registered tile matrix set, matched by geometry whatever the
configuration names it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from s3maptiler.tiles import srs
from s3maptiler.tiles.grids import GLOBAL_GEODETIC, WEB_MERCATOR, TileGrid


def geometry(grid: TileGrid) -> tuple[Any, ...]:
    return (srs.crs(grid.srs).urn, grid.bbox, grid.tile_size, grid.resolutions, grid.origin)


@dataclass(frozen=True)
class StandardGrid:
    """What each document calls a grid that is a registered tile matrix set: matched
    by its geometry, whatever the configuration names it."""

    grid: TileGrid
    wmts_id: str  # WMTS 1.0.0 TileMatrixSet identifier
    ogc_id: str  # OGC TileMatrixSet 2.0 id (OGC API - Tiles)
    ogc_crs: str | None  # the CRS as the OGC set defines it (None: the grid's)
    scale_set: str  # the well-known scale set (OGC WMTS Annex E)
    tms_profile: str  # OSGeo TMS TileSets profile


STANDARD_GRIDS = (
    StandardGrid(WEB_MERCATOR, "GoogleMapsCompatible", "WebMercatorQuad", None,
                 "GoogleMapsCompatible", "global-mercator"),
    StandardGrid(GLOBAL_GEODETIC, "WorldCRS84Quad", "WorldCRS84Quad", "CRS:84",
                 "GoogleCRS84Quad", "global-geodetic"),
)  # fmt: skip


def standard_grid(grid: TileGrid) -> StandardGrid | None:
    """The registered set `grid` is, by geometry; None for a grid of its own."""
    shape = geometry(grid)
    return next((s for s in STANDARD_GRIDS if geometry(s.grid) == shape), None)
