"""The area to seed: a lon/lat bbox, or GeoJSON Polygon and MultiPolygon rings in
decimal degrees, and which tiles share a positive area with it.

Shapely does the geometry (holes, multipolygons, overlapping parts, self-touching
rings); seeding is its only user, so the tile path never imports it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import shapely
from shapely.geometry.base import BaseGeometry
from shapely.prepared import PreparedGeometry, prep

from s3maptiler.tiles.grids import Bbox

__all__ = ["Coverage", "CoverageError", "SeedError", "load_geojson", "tile_touches"]

# An overlap this small next to the tile's own area is an edge or a corner, not overlap:
# intersecting a polygon that shares an edge with a tile can leave rounding crumbs.
_AREA_TOLERANCE = 1e-9


class SeedError(Exception):
    """Base class for every error raised by this module; the message is one line."""


class CoverageError(SeedError, ValueError):
    """A bbox or GeoJSON document that does not describe an area."""


Ring = tuple[tuple[float, float], ...]  # closed or open; (lon, lat) in decimal degrees


@dataclass(frozen=True)
class Coverage:
    """The area to seed, in decimal degrees: a list of polygons, each an outer ring
    followed by its holes. A bbox is one rectangular polygon."""

    polygons: tuple[tuple[Ring, ...], ...]
    description: str = ""
    #: The polygons as one valid shapely geometry (overlaps merged, holes cut out).
    area: BaseGeometry = field(init=False, repr=False, compare=False)
    prepared: PreparedGeometry = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = [shapely.Polygon(outer, holes) for outer, *holes in self.polygons]
        area = shapely.unary_union([shapely.make_valid(part) for part in parts])
        object.__setattr__(self, "area", area)
        object.__setattr__(self, "prepared", prep(area))

    @classmethod
    def from_bbox(cls, bbox: Sequence[float]) -> Coverage:
        """The rectangle ``west, south, east, north`` (decimal degrees)."""
        west, south, east, north = (float(v) for v in bbox)
        if not all(math.isfinite(v) for v in (west, south, east, north)):
            raise CoverageError(f"bbox {tuple(bbox)} is not finite")
        if not (west < east and south < north):
            raise CoverageError(f"bbox {tuple(bbox)}: needs west < east and south < north")
        ring = ((west, south), (east, south), (east, north), (west, north))
        return cls(((ring,),), f"bbox {west},{south},{east},{north}")

    @property
    def bounds(self) -> Bbox:
        """Bounding box of every outer ring (west, south, east, north in degrees)."""
        points = [p for polygon in self.polygons for p in polygon[0]]
        return Bbox(
            min(p[0] for p in points),
            min(p[1] for p in points),
            max(p[0] for p in points),
            max(p[1] for p in points),
        )

    @property
    def is_box(self) -> bool:
        """Whether the area is one rectangle along meridians and parallels (a bbox)."""
        if len(self.polygons) != 1 or len(self.polygons[0]) != 1:
            return False
        ring = set(self.polygons[0][0])
        return len(ring) == 4 and len({p[0] for p in ring}) == 2 and len({p[1] for p in ring}) == 2

    def digest(self) -> str:
        """A short stable fingerprint of the area, for journals."""
        text = json.dumps(self.polygons, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _ring(coords: Any, where: str) -> Ring:
    try:
        ring = tuple((float(p[0]), float(p[1])) for p in coords)
    except (TypeError, ValueError, IndexError):
        raise CoverageError(f"{where}: positions must be [lon, lat] numbers") from None
    if len(set(ring)) < 3:
        raise CoverageError(f"{where}: a ring needs at least 3 distinct positions")
    if not all(math.isfinite(v) for p in ring for v in p):
        raise CoverageError(f"{where}: positions must be finite")
    return ring


def _polygons_of(geometry: Any, where: str) -> list[tuple[Ring, ...]]:
    if not isinstance(geometry, Mapping):
        raise CoverageError(f"{where}: not a GeoJSON object")
    kind = geometry.get("type")
    coords = geometry.get("coordinates")
    if kind == "Polygon":
        if not isinstance(coords, list) or not coords:
            raise CoverageError(f"{where}: Polygon without rings")
        return [tuple(_ring(r, where) for r in coords)]
    if kind == "MultiPolygon":
        if not isinstance(coords, list):
            raise CoverageError(f"{where}: MultiPolygon coordinates must be a list")
        return [
            p
            for part in coords
            for p in _polygons_of({"type": "Polygon", "coordinates": part}, where)
        ]
    if kind == "Feature":
        return _polygons_of(geometry.get("geometry"), where)
    if kind == "FeatureCollection":
        features = geometry.get("features") or []
        return [p for i, f in enumerate(features) for p in _polygons_of(f, f"{where} feature {i}")]
    if kind == "GeometryCollection":
        return [p for g in geometry.get("geometries") or [] for p in _polygons_of(g, where)]
    raise CoverageError(f"{where}: {kind!r} is not a Polygon or MultiPolygon")


def load_geojson(document: Any, name: str = "GeoJSON") -> Coverage:
    """The Polygon and MultiPolygon areas of a GeoJSON geometry, Feature or
    FeatureCollection (lon/lat, decimal degrees). Raises CoverageError."""
    polygons = _polygons_of(document, name)
    if not polygons:
        raise CoverageError(f"{name}: no Polygon or MultiPolygon in it")
    return Coverage(tuple(polygons), name)


def tile_touches(coverage: Coverage, bounds: Bbox) -> bool:
    """Whether a tile with lon/lat ``bounds`` (decimal degrees) shares a positive area
    with the coverage (its polygons less their holes); meeting it along an edge or at
    a corner is no overlap."""
    tile = shapely.box(*bounds)
    if not coverage.prepared.intersects(tile):
        return False
    tile_area = (bounds.right - bounds.left) * (bounds.top - bounds.bottom)
    return coverage.area.intersection(tile).area > tile_area * _AREA_TOLERANCE
