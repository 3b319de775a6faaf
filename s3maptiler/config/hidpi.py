"""High-DPI tiles: a layer served at 2x (or 3x) beside its own 1x tiles.

A layer with ``pixel_ratios = [1, 2]`` also serves 2x tiles: 512 px tiles of the same
grid, each covering exactly the ground of its 256 px tile, drawn with the WMS told to
render at twice its resolution, so labels and lines are twice as many pixels wide
rather than half as big (:func:`s3maptiler.render.getmap.resolution_params`). They
are those of a layer of their own, :func:`at_pixel_ratio`:

- named ``<name>@2x`` (a name no configured layer can have) in the TMS, WMTS and
  ArcGIS routes and documents: ``/1.0.0/roads@2x/``, the WMTS layer ``roads@2x``, the
  ArcGIS service ``roads@2x`` (not in OGC API - Tiles, whose collections are the
  configured layers; a published bucket's TMS leaves them out too);
- with the same prefix and layout as the 1x layer, and the keys of its tiles carry
  ``@2x`` before the extension: ``tiles/12/1205/2557@2x.png`` in every layout
  (:func:`s3maptiler.tiles.layouts.with_pixel_ratio`), the convention of Leaflet's
  ``{r}``, Mapbox and Carto;
- on the grid with twice the tile size (:func:`with_tile_size`), the same metatiles
  (twice the pixels) and twice the meta_buffer, so a 2x metatile covers the ground of
  the 1x one and labels cut by an edge at 1x are cut, or kept, at 2x too.
"""

from __future__ import annotations

# The layer model builds them (config/model.py: Settings.served_layers), so they live
# beside it; this module is their story and the WMS vendors' table.
from s3maptiler.config.model import (
    at_pixel_ratio,
    base_layer_name,
    pixel_ratio_name,
    with_pixel_ratios,
)
from s3maptiler.tiles.grids import with_tile_size

__all__ = [
    "WMS_VENDORS",
    "at_pixel_ratio",
    "base_layer_name",
    "pixel_ratio_name",
    "with_pixel_ratios",
    "with_tile_size",
]

#: WMS servers whose resolution parameter s3maptiler knows (render/getmap.py), and
#: "none" for a WMS that has none: its 2x tiles are sharp, but labels stay 1x in size.
WMS_VENDORS = ("mapserver", "geoserver", "qgis", "none")
