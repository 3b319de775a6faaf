"""A layer resolved once: :class:`LayerRuntime`.

Grid, layout, WMS sources (or its tile source), credentials, encoders, the WMS guard,
formats, and where its tiles are stored (keys, blank keys). The tile service, seeding
and export all resolve a layer through :meth:`LayerRuntime.build`, so a layer's
settings mean the same thing whoever renders; the render pipeline
(:mod:`s3maptiler.render.pipeline`) draws with it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from s3maptiler.config import Layer
from s3maptiler.render.credentials import resolve
from s3maptiler.render.encode import Encoder, SlicedTile
from s3maptiler.render.getmap import WMSSource, resolution_params
from s3maptiler.render.guard import WMSGuard
from s3maptiler.render.tilesource import TileSource
from s3maptiler.render.wmtssource import tile_source_for
from s3maptiler.tiles.dimensions import values_path, wms_params
from s3maptiler.tiles.formats import TileFormat, for_extension, tile_content_type
from s3maptiler.tiles.grids import GridError, Tile, TileGrid
from s3maptiler.tiles.layouts import Layout, LayoutError, get_layout, with_pixel_ratio
from s3maptiler.tiles.metatile import MetaTile, metatile_for
from s3maptiler.tiles.tilemath import extent_excludes

__all__ = ["MAX_VARIANTS", "LayerRuntime"]

# Runtimes of a layer at dimension values kept at most; past it they are built anew.
MAX_VARIANTS = 4096


@dataclass(frozen=True)
class LayerRuntime:
    """A configured layer with its grid, layout and WMS sources resolved once."""

    layer: Layer
    grid: TileGrid
    layout: Layout
    sources: dict[str, WMSSource | TileSource]  # by tile extension
    encoders: dict[str, Encoder]  # by tile extension, for tiles cut from metatiles
    guard: WMSGuard  # cap on concurrent GetMaps and circuit breaker for the layer's WMS
    formats: dict[str, TileFormat]  # by tile extension
    # This layer at dimension values, by values (with_values).
    _variants: dict[tuple[str, ...], LayerRuntime] = field(
        default_factory=dict, repr=False, compare=False
    )

    @property
    def tile_source(self) -> bool:
        """Whether the layer's upstream is a tile service (one upstream tile per tile)."""
        return self.layer.tile_source is not None

    def passes_through(self, ext: str) -> bool:
        """Whether a tile source's bytes are the tile (same format, no re-encoding)."""
        source, fmt = self.sources[ext], self.formats[ext]
        whole = source.zoom_offset == 0  # not a quarter of a 512 px upstream tile
        return whole and not fmt.reencoded and fmt.wms_format == source.image_format

    def metatile_of(self, tile: Tile, ext: str) -> MetaTile | None:
        """The metatile drawn for `tile`; None when the tile is the WMS's own answer
        (drawn alone, without a buffer, in the format the WMS was asked for). A tile
        source's tile is its own 1x1 metatile, so that every ring of single flight
        (threads, workers, instances) asks the upstream for it once."""
        if self.tile_source:  # 1x1, or the 2x2 quarters of a 512 px upstream tile
            return metatile_for(self.grid, tile, self.layer.metatile, 0)
        alone = self.layer.metatile == (1, 1) and self.layer.meta_buffer == 0
        if alone and not self.formats[ext].reencoded:
            return None
        return metatile_for(self.grid, tile, self.layer.metatile, self.layer.meta_buffer)

    def key_to_store(self, tile: Tile, ext: str) -> str | None:
        """The key of a neighbour cut from a metatile, or None when it is not worth
        storing (outside the layer's extent, or not expressible in its layout)."""
        if extent_excludes(self.grid, tile, self.layer.extent):
            return None
        try:
            return self.key_of(tile, ext)
        except (LayoutError, GridError):
            return None

    def key_of(self, tile: Tile, ext: str) -> str:
        """The key of `tile` with extension `ext`: the layer's prefix, its layout's path
        and, for high-DPI tiles, ``@2x`` before the extension. Raises LayoutError or
        GridError for a tile the layout cannot write."""
        path = self.layout.format(tile, ext, self.grid)
        return self.layer.prefix + with_pixel_ratio(path, self.layer.pixel_ratio)

    def content_type(self, ext: str, data: bytes) -> str:
        """The Content-Type of the tile `data` with extension `ext`: the format's, or
        for a mixed layer that of the bytes (image/jpeg or image/png)."""
        return tile_content_type(self.formats[ext], data)

    def media_type(self, ext: str) -> str:
        """What documents and WMTS FORMAT call tiles with extension `ext`."""
        return self.formats[ext].media_type

    def blank_key(self, ext: str, tile: SlicedTile) -> str | None:
        """The key of the shared blank `tile` is stored as, when it is uniform and the
        layer's ``empty_tiles`` policy is "redirect" (see storage/blanks.py), else None."""
        if not tile.uniform or self.layer.empty_tiles != "redirect":
            return None
        digest = hashlib.md5(tile.data, usedforsecurity=False).hexdigest()
        return f"{self.layer.prefix}_blank/{digest}.{ext}"

    def with_values(self, values: Sequence[str]) -> LayerRuntime:
        """The layer at one value of each of its dimensions (already checked): its
        tiles under ``{prefix}{values}/``, its GetMaps with TIME=, ELEVATION=, DIM_...=.
        It shares the layer's guard. Without dimensions, the layer itself. Built once
        per combination (at most MAX_VARIANTS kept), for the service and seeding alike."""
        if not values:
            return self
        values = tuple(values)
        variant = self._variants.get(values)
        if variant is None:
            if len(self._variants) >= MAX_VARIANTS:
                self._variants.clear()
            layer = replace(self.layer, prefix=self.layer.prefix + values_path(values))
            variant = self._variants[values] = LayerRuntime.build(layer, self.guard, values)
        return variant

    @classmethod
    def build(
        cls, layer: Layer, guard: WMSGuard | None = None, values: Sequence[str] | None = None
    ) -> LayerRuntime:
        """The one way to resolve a layer. `guard`: the WMS cap and breaker the
        service's request path shares between a layer and its ``@2x`` variant; None
        for seeding (the CLI and its worker), which paces the WMS itself (threads and
        the GetMap rate cap), so a guard that never refuses nor trips. `values`: one
        per dimension of the layer; None: the defaults (what the layer's
        dimension-less keys are drawn with)."""
        if guard is None:
            guard = WMSGuard(1_000_000, 60.0, 1_000_000, 0.0)
        grid = layer.tile_grid
        formats = {ext: for_extension(layer.tile_format, ext) for ext in layer.formats}
        # Read once per process and layer (the variants share them), then refreshed.
        credentials = resolve(layer.credentials) if layer.credentials is not None else None
        # Dimension values first, then the vendor's resolution for high-DPI tiles.
        extra_params = wms_params(layer.dimensions, values) + resolution_params(
            layer.wms_vendor, layer.pixel_ratio
        )
        sources: dict[str, WMSSource | TileSource]
        if layer.tile_source is not None:
            source = tile_source_for(layer, grid, credentials)
            chosen = [v for _, v in wms_params(layer.dimensions, values)]
            named = tuple(zip((d.identifier for d in layer.dimensions), chosen, strict=True))
            sources = dict.fromkeys(layer.formats, replace(source, dimensions=named))
        else:
            sources = {
                ext: WMSSource(
                    url=layer.wms_url,
                    layers=layer.wms_layers,
                    styles=layer.wms_styles,
                    version=layer.wms_version,
                    srs=grid.srs,
                    image_format=formats[ext].wms_format,
                    transparent=layer.transparent,
                    bgcolor=layer.bgcolor,
                    extra_params=extra_params,
                    credentials=credentials,
                )
                for ext in layer.formats
            }
        encoders = {
            ext: Encoder(
                format=formats[ext].name,
                png_compress_level=layer.png_compress_level,
                jpeg_quality=layer.jpeg_quality,
                webp_quality=layer.webp_quality,
                webp_lossless=layer.webp_lossless,
            )
            for ext in layer.formats
        }
        return cls(layer, grid, get_layout(layer.layout), sources, encoders, guard, formats)
