"""ArcGIS tiling schemes: the ONE reader of a cache's ``conf.xml``, and grids from
``conf.xml`` or a MapServer ``tileInfo``.

An ArcGIS Server cache describes its tiling scheme in ``conf.xml``
(``CacheInfo/TileCacheInfo``: spatial reference, tile origin, tile size, DPI and one
``LODInfo`` per level) and its extent in ``conf.cdi``. :func:`parse_conf_xml` reads
the text into an :class:`ArcgisCacheInfo`, which both the layers file (a grid) and
``s3maptiler upload`` (the MapServer JSON beside an uploaded cache) use.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import NamedTuple

from s3maptiler.tiles.grids import Bbox, GridError, InvalidGrid, TileGrid, custom_grid
from s3maptiler.tiles.srs import srs_of_wkid

__all__ = [
    "ArcgisCacheInfo",
    "ConfXmlError",
    "Lod",
    "grid_from_arcgis_conf",
    "grid_from_arcgis_tileinfo",
    "parse_conf_cdi",
    "parse_conf_xml",
]


class ConfXmlError(GridError):
    """An ArcGIS conf.xml or conf.cdi that cannot be parsed."""


class Lod(NamedTuple):
    """One ArcGIS level of detail: `resolution` in CRS units per pixel, map `scale`."""

    level: int
    resolution: float
    scale: float


@dataclass(frozen=True)
class ArcgisCacheInfo:
    """What an ArcGIS cache's ``conf.xml`` says about its tiles.

    `origin` is the top-left corner of the tiling scheme in CRS units; `wkid` and
    `latest_wkid` the spatial reference (None when only a WKT is given); `geographic`
    True for a geographic (degrees) coordinate system.
    """

    origin: tuple[float, float]
    tile_cols: int
    tile_rows: int
    dpi: int
    lods: tuple[Lod, ...]
    tile_format: str = "PNG"
    compression_quality: int = 0
    wkid: int | None = None
    latest_wkid: int | None = None
    wkt: str | None = None
    geographic: bool = False
    storage_format: str = "esriMapCacheStorageModeExploded"


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(element: ET.Element, name: str) -> ET.Element | None:
    return next((c for c in element if _local(c.tag) == name), None)


def _text(element: ET.Element | None, name: str, default: str | None = None) -> str | None:
    child = _child(element, name) if element is not None else None
    if child is None or child.text is None or not child.text.strip():
        return default
    return child.text.strip()


def _root(text: str, where: str) -> ET.Element:
    try:
        return ET.fromstring(text)
    except ET.ParseError as err:
        raise ConfXmlError(f"{where}: not XML: {err}") from None


def parse_conf_xml(text: str, where: str = "conf.xml") -> ArcgisCacheInfo:
    """Parse the text of an ArcGIS cache ``conf.xml`` (``CacheInfo`` / ``TileCacheInfo``);
    ConfXmlError names `where` and what is wrong."""
    root = _root(text, where)
    info = next((e for e in root.iter() if _local(e.tag) == "TileCacheInfo"), None)
    if info is None:
        raise ConfXmlError(f"{where}: no TileCacheInfo element")
    try:
        origin = _child(info, "TileOrigin")
        lods_el = _child(info, "LODInfos")
        lods = tuple(
            sorted(
                Lod(
                    int(_text(lod, "LevelID") or ""),
                    float(_text(lod, "Resolution") or ""),
                    float(_text(lod, "Scale") or "0"),
                )
                for lod in (lods_el if lods_el is not None else [])
                if _local(lod.tag) == "LODInfo"
            )
        )
        srs = _child(info, "SpatialReference")
        srs_type = ""
        if srs is not None:
            srs_type = next((v for k, v in srs.attrib.items() if _local(k) == "type"), "")
        image = _child(root, "TileImageInfo")
        storage = _child(root, "CacheStorageInfo")
        wkid = _text(srs, "WKID")
        latest = _text(srs, "LatestWKID")
        parsed = ArcgisCacheInfo(
            origin=(float(_text(origin, "X") or ""), float(_text(origin, "Y") or "")),
            tile_cols=int(_text(info, "TileCols", "256") or 256),
            tile_rows=int(_text(info, "TileRows", "256") or 256),
            dpi=int(float(_text(info, "DPI", "96") or 96)),
            lods=lods,
            tile_format=_text(image, "CacheTileFormat", "PNG") or "PNG",
            compression_quality=int(_text(image, "CompressionQuality", "0") or 0),
            wkid=int(wkid) if wkid else None,
            latest_wkid=int(latest) if latest else None,
            wkt=_text(srs, "WKT"),
            geographic="Geographic" in srs_type or wkid == "4326",
            storage_format=_text(storage, "StorageFormat", "esriMapCacheStorageModeExploded") or "",
        )
    except ValueError as err:
        raise ConfXmlError(f"{where}: a number in TileCacheInfo is malformed ({err})") from None
    if not parsed.lods:
        raise ConfXmlError(f"{where}: no LODInfo levels")
    return parsed


def parse_conf_cdi(text: str, where: str = "conf.cdi") -> Bbox:
    """The extent in the text of a ``conf.cdi`` (``EnvelopeN``: XMin, YMin, XMax, YMax)."""
    root = _root(text, where)
    try:
        values = [float(_text(root, name) or "") for name in ("XMin", "YMin", "XMax", "YMax")]
    except ValueError as err:
        raise ConfXmlError(f"{where}: malformed envelope ({err})") from None
    return Bbox(*values)


def _srs_from_wkid(wkid: object) -> str:
    try:
        number = int(str(wkid))
    except ValueError:
        raise InvalidGrid(f"spatial reference wkid {wkid!r} is not a number") from None
    return srs_of_wkid(number)


def grid_from_arcgis_tileinfo(name: str, tile_info: dict, extent: Bbox | None = None) -> TileGrid:
    """A grid from an ArcGIS ``tileInfo`` object (as in ``MapServer?f=json``).

    Levels must be contiguous from 0 (``lods[i].level == i``); ``extent`` (CRS units,
    e.g. the service's ``fullExtent``) bounds the matrix, else zoom 0 is one tile.
    """
    try:
        origin = (tile_info["origin"]["x"], tile_info["origin"]["y"])
        size = int(tile_info["rows"])
        lods = sorted(tile_info["lods"], key=lambda lod: int(lod["level"]))
        reference = tile_info["spatialReference"]
        wkid = reference.get("latestWkid") or reference["wkid"]
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidGrid(f"grid {name}: tileInfo lacks {exc}") from None
    if [int(lod["level"]) for lod in lods] != list(range(len(lods))):
        raise InvalidGrid(f"grid {name}: tileInfo levels must run 0, 1, 2, ... without gaps")
    if int(tile_info.get("cols", size)) != size:
        raise InvalidGrid(f"grid {name}: only square tiles are supported")
    return custom_grid(
        name, _srs_from_wkid(wkid), origin, size, [lod["resolution"] for lod in lods], extent
    )


def grid_from_arcgis_conf(name: str, conf_xml: str, extent: Bbox | None = None) -> TileGrid:
    """A grid from the text of an ArcGIS Server cache's ``conf.xml`` (``TileCacheInfo``)."""
    info = parse_conf_xml(conf_xml, f"grid {name}: conf.xml")
    wkid = info.latest_wkid or info.wkid
    if wkid is None:
        raise InvalidGrid(f"grid {name}: conf.xml SpatialReference has no WKID")
    tile_info = {
        "origin": {"x": info.origin[0], "y": info.origin[1]},
        "rows": info.tile_rows,
        "cols": info.tile_cols,
        "lods": [{"level": lod.level, "resolution": lod.resolution} for lod in info.lods],
        "spatialReference": {"wkid": wkid},
    }
    return grid_from_arcgis_tileinfo(name, tile_info, extent)
