"""Coordinate reference systems: the ONE table of the CRSs the project knows, and the
projection formulas between decimal degrees and Web Mercator meters.

Every module that must know what a CRS is (its units, its axis order, its names in
WMS, WMTS, TMS and ArcGIS documents) asks :func:`crs`; nothing else keeps a list of
EPSG codes. Three kinds:

- ``mercator``: Web Mercator (EPSG:3857 and its aliases 900913, 3785, Esri's 102100
  and 102113), in meters, easting first;
- ``geographic``: WGS 84 (EPSG:4326), CRS:84 and the other well-known geographic 2D
  CRSs (ETRS89, NAD83, NAD27, GDA94, ...), in decimal degrees. EPSG defines their
  axis order as latitude, longitude, which WMS 1.3.0 BBOX and WMTS corners obey;
  CRS:84 is longitude, latitude by definition;
- ``projected``: any other code, taken to be in meters with easting first (there is
  no projection library at run time; ``tests/unit/test_srs.py`` checks the table
  against the EPSG database through pyproj).

Coordinates inside the project are always (x, y) = (easting or longitude, northing or
latitude); only the documents and the WMS BBOX swap them where a CRS says so.

>>> crs("urn:ogc:def:crs:EPSG::4258").units, crs("EPSG:4258").lat_first
('degrees', True)
>>> to_native(crs("EPSG:3857"), 180.0, 85.0511287798066)[0]
20037508.342789244
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

__all__ = [
    "EARTH_RADIUS",
    "MAX_MERCATOR_LAT",
    "MERCATOR_EXTENT",
    "METERS_PER_DEGREE",
    "CRS",
    "crs",
    "srs_of_wkid",
    "to_lonlat",
    "to_native",
]

#: WGS84 semi-major axis, the sphere radius of Web Mercator, in meters.
EARTH_RADIUS = 6378137.0
#: Half the width of the Web Mercator world (pi * R), in meters.
MERCATOR_EXTENT = math.pi * EARTH_RADIUS
#: Latitude of the Web Mercator square's top edge, atan(sinh(pi)), in decimal degrees.
MAX_MERCATOR_LAT = 85.0511287798066
#: Meters per degree on the Web Mercator sphere (2 pi R / 360), as WMTS uses for degrees.
METERS_PER_DEGREE = 2 * math.pi * EARTH_RADIUS / 360

# Web Mercator under its EPSG code, its deprecated aliases and Esri's well-known ids.
_MERCATOR_CODES = frozenset({3857, 900913, 3785, 102100, 102113})
# Esri wkids that are not EPSG codes: they name Web Mercator.
_ESRI_MERCATOR_WKIDS = frozenset({102100, 102113, 900913})
# Geographic 2D CRSs in degrees, latitude first: WGS 84, ETRS89, NAD83, NAD27, GDA94,
# GDA2020, NZGD2000, ED50, DHDN, Pulkovo 1942, SIRGAS 2000, JGD2000, JGD2011, CGCS2000,
# RGF93.
_GEOGRAPHIC_CODES = frozenset(
    {4326, 4258, 4269, 4267, 4283, 7844, 4167, 4230, 4314, 4284, 4674, 4612, 6668, 4490, 4171}
)
_CRS84 = frozenset({"CRS:84", "OGC:CRS84"})
_IDENTIFIER_PATTERNS = (
    re.compile(r"(?P<auth>EPSG|ESRI|CRS|OGC):(?P<code>\w+)"),
    re.compile(r"URN:OGC:DEF:CRS:(?P<auth>\w+):[\d.]*:(?P<code>\w+)"),
    re.compile(r"HTTPS?://WWW\.OPENGIS\.NET/DEF/CRS/(?P<auth>\w+)/[^/]+/(?P<code>\w+)"),
)


@dataclass(frozen=True)
class CRS:
    """One coordinate reference system as the project uses it.

    ``name`` is the canonical spelling (``EPSG:3857`` for every Web Mercator alias,
    ``CRS:84``, ``EPSG:<code>``, or the text as given when it names no EPSG code);
    ``kind`` is ``mercator``, ``geographic`` or ``projected``; ``code`` the EPSG code
    (None for CRS:84 and other authorities); ``lat_first`` whether the CRS's own axis
    order puts latitude (northing) first.
    """

    name: str
    kind: str
    code: int | None
    lat_first: bool = False

    @property
    def units(self) -> str:
        """``"degrees"`` for geographic CRSs, else ``"meters"``."""
        return "degrees" if self.kind == "geographic" else "meters"

    @property
    def meters_per_unit(self) -> float:
        """Meters per CRS unit: 111319.49079327358 for degrees (2 pi R / 360), else 1.0."""
        return METERS_PER_DEGREE if self.kind == "geographic" else 1.0

    @property
    def urn(self) -> str:
        """The OGC URN (WMTS SupportedCRS and BoundingBox ``crs``)."""
        if self.name == "CRS:84":
            return "urn:ogc:def:crs:OGC:1.3:CRS84"
        return f"urn:ogc:def:crs:EPSG::{self.code}" if self.code is not None else self.name

    @property
    def uri(self) -> str:
        """The OGC http URI (OGC API and TileMatrixSet 2.0 ``crs``), e.g.
        ``http://www.opengis.net/def/crs/EPSG/0/3857``; the name as given for a CRS
        with no EPSG code."""
        if self.name == "CRS:84":
            return "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
        if self.code is None:
            return self.name
        return f"http://www.opengis.net/def/crs/EPSG/0/{self.code}"

    @property
    def wkid(self) -> int | None:
        """ArcGIS ``wkid``: 102100 for Web Mercator, 4326 for CRS:84, else the EPSG code."""
        if self.kind == "mercator":
            return 102100
        return 4326 if self.name == "CRS:84" else self.code

    @property
    def latest_wkid(self) -> int | None:
        """ArcGIS ``latestWkid``: the EPSG code (3857 for Web Mercator)."""
        return 4326 if self.name == "CRS:84" else self.code

    @property
    def lonlat(self) -> bool:
        """Whether decimal degrees can be moved into this CRS here (not projected)."""
        return self.kind != "projected"


@functools.lru_cache(maxsize=256)
def crs(text: str) -> CRS:
    """The CRS an identifier names: ``EPSG:4326``, ``urn:ogc:def:crs:EPSG::4326``,
    ``http://www.opengis.net/def/crs/EPSG/0/4326``, ``CRS:84``, ``ESRI:102100``, ...
    (case-insensitive). Unknown identifiers are projected CRSs named as given."""
    stripped = text.strip()
    upper = stripped.upper()
    for pattern in _IDENTIFIER_PATTERNS:
        match = pattern.fullmatch(upper)
        if match is not None:
            auth, code = match["auth"], match["code"]
            break
    else:
        return CRS(stripped, "projected", None)
    if f"{auth}:{code}" in _CRS84 or (auth == "OGC" and code == "CRS84"):
        return CRS("CRS:84", "geographic", None)
    if auth not in ("EPSG", "ESRI") or not code.isdigit():
        return CRS(stripped, "projected", None)
    number = int(code)
    if number in _MERCATOR_CODES:
        return CRS("EPSG:3857", "mercator", 3857)
    if auth == "EPSG" and number in _GEOGRAPHIC_CODES:
        return CRS(f"EPSG:{number}", "geographic", number, lat_first=True)
    if auth == "EPSG":
        return CRS(f"EPSG:{number}", "projected", number)
    return CRS(stripped, "projected", None)


def srs_of_wkid(wkid: int) -> str:
    """The SRS to ask a WMS for, of an ArcGIS spatial reference ``wkid``: EPSG:3857
    for Esri's Web Mercator ids (102100, 102113, 900913), else ``EPSG:<wkid>``."""
    return "EPSG:3857" if wkid in _ESRI_MERCATOR_WKIDS else f"EPSG:{wkid}"


def to_native(system: CRS, lon: float, lat: float) -> tuple[float, float]:
    """A point in decimal degrees in ``system``'s units: Web Mercator meters (latitude
    clamped to +-85.0511287798066) or degrees as they are. ValueError for a projected CRS."""
    if system.kind == "mercator":
        lat = max(-MAX_MERCATOR_LAT, min(MAX_MERCATOR_LAT, lat))
        x = lon * MERCATOR_EXTENT / 180.0
        y = EARTH_RADIUS * math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))
        return x, y
    if system.kind == "geographic":
        return lon, lat
    raise ValueError(f"no lon/lat transform for {system.name}")


def to_lonlat(system: CRS, x: float, y: float) -> tuple[float, float]:
    """A point in ``system``'s units in decimal degrees. ValueError for a projected CRS."""
    if system.kind == "mercator":
        lon = x * 180.0 / MERCATOR_EXTENT
        lat = math.degrees(2 * math.atan(math.exp(y / EARTH_RADIUS)) - math.pi / 2)
        return lon, lat
    if system.kind == "geographic":
        return x, y
    raise ValueError(f"no lon/lat transform for {system.name}")
