"""A tile service as a layer's source: XYZ or TMS URL templates on the layer's own grid.

One upstream tile is one tile of the layer, so a tile source has no metatiles and no
resampling: a grid that does not line up with the layer's (CRS, origin, tile size or
resolutions) is refused at start-up (``config.sources.check_same_grid``). Tiles are
fetched through the same client as GetMaps (:class:`~s3maptiler.render.wms.WMSClient`:
timeouts, retries, answer checks, credentials, redaction), so a tile source fails
with the same statuses as a WMS. An upstream 404 or 204 ("no tile here", as tile
services answer outside their data) is :class:`TileMissing`; the pipeline turns it
into a blank tile or a 404, as the layer says.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, urlsplit

from s3maptiler.config.sources import TileSourceSpec, zoom_offset
from s3maptiler.render.credentials import ResolvedCredentials, protect
from s3maptiler.render.encode import SlicedTile, uniform_tile
from s3maptiler.render.errors import TileMissing, WMSBadImage, WMSUsageError
from s3maptiler.render.getmap import _loggable
from s3maptiler.tiles.grids import Tile, TileGrid
from s3maptiler.tiles.metatile import MetaTile, MetaTileError

__all__ = ["Passed", "TileMissing", "TileSource", "tile_url"]


@dataclass(frozen=True)
class TileSource:
    """One layer's upstream tile service, built at start-up (see TileSourceSpec).

    ``url``, ``image_format`` and ``endpoint`` are what the client reads of any source;
    ``_base`` is the template without its query, scrubbed from echoed messages."""

    url: str = field(repr=False)  # may carry a key in its query
    grid: TileGrid  # the layer's grid (checked to be the upstream's)
    image_format: str = "image/png"
    tms: bool = False  # {y} counts rows from the bottom
    missing: str = "blank"
    credentials: ResolvedCredentials | None = field(default=None, compare=False, repr=False)
    # A WMTS's TileMatrix identifier of each zoom (render/wmtssource.py): {z} is that.
    matrices: tuple[str, ...] | None = None
    # 1: each upstream tile (twice the pixels) is the 2x2 layer tiles of the next zoom.
    zoom_offset: int = 0
    # The layer's dimension values, by identifier ({Time}, {Elevation}): this variant's.
    dimensions: tuple[tuple[str, str], ...] = ()
    missing_ok: bool = field(default=True, init=False, repr=False)

    @property
    def _base(self) -> str:
        return self.url.partition("?")[0]

    @property
    def endpoint(self) -> str:
        """Scheme, host and path of the template: safe to log."""
        return _loggable(self.url)

    @classmethod
    def build(
        cls, spec: TileSourceSpec, grid: TileGrid, credentials: ResolvedCredentials | None = None
    ) -> TileSource:
        try:
            offset = zoom_offset(grid, spec)
        except ValueError as exc:
            raise WMSUsageError(str(exc)) from None
        tms = spec.kind == "tms"
        protect(value for _, value in parse_qsl(urlsplit(spec.url).query) if "{" not in value)
        return cls(spec.url, grid, spec.format, tms, spec.missing, credentials, None, offset)

    @property
    def tile_size(self) -> int:
        """Pixels of an upstream tile."""
        return self.grid.tile_size * 2**self.zoom_offset

    def upstream_tile(self, first: Tile) -> Tile:
        """The upstream tile that holds the layer tile `first` (a metatile's top-left)."""
        if self.zoom_offset:
            return Tile(first.x // 2, first.y // 2, first.z - 1)
        return first


def tile_url(source: TileSource, tile: Tile) -> str:
    """The upstream URL of `tile` (x, y counted from the top, as :class:`Tile`).

    >>> from s3maptiler.tiles.grids import WEB_MERCATOR
    >>> src = TileSource("http://h/{z}/{x}/{-y}.png?q={quadkey}", WEB_MERCATOR)
    >>> tile_url(src, Tile(1, 0, 2))
    'http://h/2/1/3.png?q=01'
    """
    x, y, z = tile
    # Rows of the upstream's zoom: its matrix is the grid's at that zoom (512 px or not).
    flipped = source.grid.flip_y(y, z)
    quadkey = "".join(str(((x >> (i - 1)) & 1) + 2 * ((y >> (i - 1)) & 1)) for i in range(z, 0, -1))
    url = source.url
    for identifier, value in source.dimensions:
        url = re.sub(re.escape(f"{{{identifier}}}"), quote(value, safe=":"), url, flags=re.I)
    return (
        url.replace("{z}", str(z) if source.matrices is None else source.matrices[z])
        .replace("{x}", str(x))
        .replace("{-y}", str(flipped))
        .replace("{y}", str(flipped if source.tms else y))
        .replace("{quadkey}", quadkey)
    )


class Passed:
    """A tile source's tile as it came: a 1x1 metatile that is never decoded (only for
    the redirect blank policy, to know whether it is uniform)."""

    def __init__(self, meta: MetaTile, data: bytes, judge_uniform: bool, freshness=None):
        self.meta = meta
        self.freshness = freshness
        self._data = data
        self._judge_uniform = judge_uniform

    def encode(self, tiles: Iterable[Tile]) -> dict[Tile, SlicedTile]:
        try:
            uniform = self._judge_uniform and uniform_tile(self._data)
        except MetaTileError as exc:
            raise WMSBadImage(f"tile image unusable: {exc}") from None
        return {tile: SlicedTile(self._data, uniform) for tile in tiles}
