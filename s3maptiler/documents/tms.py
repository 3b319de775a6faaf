"""TMS 1.0.0 documents: the root, the TileMapService and each layer's TileMap.

>>> from s3maptiler.config import Layer
>>> layer = Layer("roads", "http://wms.example/", "roads", max_zoom=3)
>>> "units-per-pixel=\\"156543.03392804097\\" order=\\"0\\"" in tile_map(layer, "https://t.example")
True
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence

from s3maptiler.config import Layer
from s3maptiler.documents.errors import CannotDescribe
from s3maptiler.documents.paths import base_of, check_mode, segment, tile_map_path, tms_service_path
from s3maptiler.documents.standard_grids import standard_grid
from s3maptiler.documents.views import corner_of, tms_levels, tms_problem, usable, view_of
from s3maptiler.documents.xmltext import num, sub, to_xml
from s3maptiler.tiles.grids import TileGrid

_TMS_VERSION = "1.0.0"


def _tms_profile(grid: TileGrid) -> str:
    standard = standard_grid(grid)
    return "none" if standard is None else standard.tms_profile


def tile_map_service(
    layers: Sequence[Layer], base_url: str, mode: str = "service", title: str = "s3maptiler"
) -> str:
    """The TMS TileMapService document: one TileMap entry per layer TMS can express."""
    check_mode(mode)
    base = base_of(base_url)
    root = ET.Element("TileMapService", {"version": _TMS_VERSION, "services": f"{base}/"})
    sub(root, "Title", title)
    sub(root, "Abstract", "")
    maps = sub(root, "TileMaps")
    for view in usable(layers, "tms", mode):
        sub(
            maps,
            "TileMap",
            title=view.title,
            srs=view.crs.name,
            profile=_tms_profile(view.grid),
            href=f"{base}/{tile_map_path(view.layer, mode)}",
        )
    return to_xml(root)


def tile_map(layer: Layer, base_url: str, mode: str = "service") -> str:
    """The TMS TileMap document of one layer.

    TileSets run from zoom 0 (not ``min_zoom``) to ``max_zoom``: GDAL refuses a
    TileMap whose first TileSet is not ``order="0"`` and takes the tile URL from it;
    tiles below ``min_zoom`` answer 404, which clients draw as empty. ``units-per-pixel``
    is the resolution in CRS units (meters or degrees); Origin is the bottom-left
    corner. BoundingBox is the whole tiled area, not the layer's extent: GDAL numbers
    tiles from the BoundingBox's corners, so a smaller box would fetch the wrong tiles.
    Raises :class:`CannotDescribe` for a layer TMS cannot express in ``mode``.
    """
    check_mode(mode)
    problem = tms_problem(layer, mode)
    if problem is not None:
        raise CannotDescribe(f"layer {layer.name}: {problem}")
    view = view_of(layer)
    grid = view.grid
    base = base_of(base_url)
    levels = tms_levels(layer, grid)
    origin = corner_of(grid, levels, "bottom-left")
    if origin is None:  # already ruled out by tms_problem; keeps the type checker informed
        raise CannotDescribe(f"layer {layer.name}: grid {grid.name} has no bottom-left origin")
    fmt = layer.tile_format

    root = ET.Element(
        "TileMap",
        {"version": _TMS_VERSION, "tilemapservice": f"{base}/{tms_service_path(mode)}"},
    )
    sub(root, "Title", view.title)
    sub(root, "Abstract", _defaults_note(layer))
    sub(root, "SRS", view.crs.name)
    sub(
        root,
        "BoundingBox",
        minx=num(origin[0]),
        miny=num(origin[1]),
        maxx=num(grid.bbox.right),
        maxy=num(grid.bbox.top),
    )
    sub(root, "Origin", x=num(origin[0]), y=num(origin[1]))
    sub(
        root,
        "TileFormat",
        width=str(grid.tile_size),
        height=str(grid.tile_size),
        **{"mime-type": fmt.media_type},
        extension=layer.extension,
    )
    tile_sets = sub(root, "TileSets", profile=_tms_profile(grid))
    if mode == "service":
        tiles = f"{base}/1.0.0/{segment(layer.name)}"
    else:
        tiles = f"{base}/{layer.prefix}".rstrip("/")
    for z in levels:
        sub(
            tile_sets,
            "TileSet",
            href=f"{tiles}/{z}",
            **{"units-per-pixel": num(grid.resolution(z))},
            order=str(z),
        )
    return to_xml(root)


def _defaults_note(layer: Layer) -> str:
    """TMS has no dimensions: a layer's TileMap is its dimension-less keys, drawn at
    the default of each dimension (one TileMap per value would list every value of an
    interval as a layer of its own). The WMTS capabilities name the other values."""
    if not layer.dimensions:
        return ""
    defaults = ", ".join(f"{d.wms_param}={d.default}" for d in layer.dimensions)
    return f"Tiles at {defaults}; the WMTS capabilities list every value."
