"""The index page and the preview map: every layer, seen through the service itself.

``index_page(service)`` is the HTML of ``/``: one row per layer with its grid, layout,
zoom range, key template and links to its TMS, WMTS and ArcGIS documents and to its
preview. ``blueprint`` serves ``/preview/<layer>``, a full-window OpenLayers map of one
layer, and the page's own JavaScript and CSS under ``/preview/static/``.

The map asks for tiles at the addresses a client would use: the layer's own keys
(``/<prefix><layout path>``, the S3 key), the fixed TMS route, the WMTS REST route and
the ArcGIS REST route; a switch on the page picks one. Each tile is fetched with
``fetch()`` so the page can read its ``X-Tile-Source`` header (cache, render,
inflight, blank) and outline the tile in that colour.

When the bucket has a public URL (``PUBLIC_URL``, or the S3 website endpoint of
``BUCKET_NAME`` in ``AWS_REGION``), the first address, and the one shown, is the
production path: the layer's keys under that URL. A tile the bucket has is drawn from
the bucket ("bucket"); a missing one comes through S3's 307 from the service, and is
outlined by what the service said (render, inflight, cache). When the bucket does not
answer at all, the page says so in one line instead of drawing an empty map.

OpenLayers is not copied into the repository: ``scripts/build-viewer.sh`` installs the
version pinned in ``viewer/package-lock.json`` and copies its built files to
``static/vendor/``. When they are missing the page says how to build them.

The preview draws EPSG:3857 and EPSG:4326 grids, including custom origins and
resolutions (OpenLayers knows both projections); a grid in any other CRS gets a
one-line explanation instead of a map.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from flask import Blueprint, Response, has_request_context, render_template, request

from s3maptiler.config import Layer, with_pixel_ratios
from s3maptiler.documents import arcgis, common
from s3maptiler.documents.wmts import tile_matrix_set_id
from s3maptiler.http.replies import service, text
from s3maptiler.tiles.grids import Tile, TileGrid
from s3maptiler.tiles.srs import MAX_MERCATOR_LAT, crs

__all__ = [
    "BUILD_HINT",
    "PreviewError",
    "TileAddress",
    "UnsupportedGrid",
    "VENDOR_FILES",
    "blueprint",
    "index_page",
    "missing_assets",
    "preview_config",
    "projection_of",
    "tile_addresses",
]

log = logging.getLogger(__name__)

# The page's template, script and style, and the map library built into static/vendor/.
PACKAGE_DIR = Path(__file__).resolve().parent.parent
STATIC_DIR = PACKAGE_DIR / "static"
#: Files of the map library the page loads, relative to ``static/``.
VENDOR_FILES = ("vendor/ol/ol.js", "vendor/ol/ol.css")
BUILD_HINT = "run `bash scripts/build-viewer.sh` (needs npm), then reload this page"


blueprint = Blueprint(
    "preview",
    __name__,
    template_folder=str(PACKAGE_DIR / "templates"),
    static_folder=str(STATIC_DIR),
    # Under /preview/ so no tile prefix other than "preview/" can be shadowed.
    static_url_path="/preview/static",
)


class PreviewError(ValueError):
    """A layer the preview map cannot show; the message is one line for the page."""


class UnsupportedGrid(PreviewError):
    """The layer's grid is in a CRS the map library cannot draw without proj4."""


@dataclass(frozen=True)
class TileAddress:
    """One way the map can reach a layer's tiles.

    A tile's URL is ``base`` + the ``layout`` path of (z, x, y) + ``"." + ext`` when
    ``ext`` is set. ``template`` is the same written out for people.
    """

    id: str  # "bucket", "keys", "tms", "wmts", "arcgis"
    label: str
    base: str  # URL path, ends in "/"
    layout: str  # tms, xyz, wmts, arcgis or quadkey: how (z, x, y) becomes a path
    ext: str  # "" for the ArcGIS REST route, which has no extension
    template: str
    external: bool = False  # on another origin (the bucket), not the service
    suffix: str = ""  # before the extension: "@2x" in a high-DPI layer's keys


# How each layout writes a tile, for people: y and row count from the top, -y from the bottom.
_PATH_TEMPLATES = {
    "tms": "{z}/{x}/{-y}",
    "xyz": "{z}/{x}/{y}",
    "wmts": "{z}/{row}/{col}",
    "arcgis": "L{z:02d}/R{row:08x}/C{col:08x}",
    "quadkey": "{quadkey}",
}


def _template(address_base: str, layout: str, ext: str, suffix: str = "") -> str:
    return address_base + _PATH_TEMPLATES[layout] + suffix + (f".{ext}" if ext else "")


def projection_of(grid: TileGrid) -> str:
    """``"EPSG:3857"`` or ``"EPSG:4326"``: the map projection that draws ``grid``.

    Raises :class:`UnsupportedGrid` for any other CRS.
    """
    system = crs(grid.srs)
    if system.kind == "mercator":
        return "EPSG:3857"
    if system.name in ("EPSG:4326", "CRS:84"):  # the geographic CRS OpenLayers knows
        return "EPSG:4326"
    raise UnsupportedGrid(
        f"grid {grid.name} is in {grid.srs}; the preview draws EPSG:3857 and EPSG:4326 grids only"
    )


def _tile_ext(layer: Layer) -> str:
    """The extension the map asks for: the layer's advertised format, if it serves it."""
    return layer.extension


def tile_addresses(
    layer: Layer, grid: TileGrid, root: str = "", bucket_url: str | None = None
) -> list[TileAddress]:
    """Every address of ``layer``'s tiles: the bucket's first when ``bucket_url`` (its
    public URL) is known, then those the service answers, its own keys first.

    ``root`` is the URL path the service is mounted under ("" at the host's root).
    """
    ext = _tile_ext(layer)
    # A high-DPI layer's keys are its 1x layer's with "@2x" before the extension; its
    # routes (/1.0.0/roads@2x/...) carry the ratio in the layer's name.
    suffix = "" if layer.pixel_ratio == 1 else f"@{layer.pixel_ratio}x"
    bucket = []
    if bucket_url:
        base = f"{bucket_url.rstrip('/')}/{layer.prefix}"
        bucket.append(
            TileAddress(
                "bucket",
                "the bucket (S3 website)",
                base,
                layer.layout,
                ext,
                _template(base, layer.layout, ext, suffix),
                external=True,
                suffix=suffix,
            )
        )
    name = quote(layer.name, safe="")
    keys = f"{root}/{layer.prefix}"
    tms = f"{root}/1.0.0/{name}/"
    wmts = f"{root}/wmts/1.0.0/{name}/default/{tile_matrix_set_id(grid)}/"
    arcgis = f"{root}/{common.arcgis_service_path(layer)}/tile/"
    return bucket + [
        TileAddress(
            "keys",
            f"S3 keys ({layer.layout})",
            keys,
            layer.layout,
            ext,
            _template(keys, layer.layout, ext, suffix),
            suffix=suffix,
        ),
        TileAddress("tms", "TMS route", tms, "tms", ext, _template(tms, "tms", ext)),
        TileAddress("wmts", "WMTS REST route", wmts, "wmts", ext, _template(wmts, "wmts", ext)),
        TileAddress("arcgis", "ArcGIS REST route", arcgis, "wmts", "", arcgis + "{z}/{row}/{col}"),
    ]


def _max_zoom(layer: Layer, grid: TileGrid) -> int:
    return min(layer.max_zoom, grid.max_zoom)


def _data_extent(layer: Layer, projection: str) -> list[float] | None:
    """The layer's lon/lat extent, clipped to what the projection can draw."""
    if layer.extent is None:
        return None
    west, south, east, north = layer.extent
    if projection == "EPSG:3857":
        south, north = max(south, -MAX_MERCATOR_LAT), min(north, MAX_MERCATOR_LAT)
    return [west, south, east, north]


def preview_config(
    layer: Layer, grid: TileGrid, root: str = "", bucket_url: str | None = None
) -> dict[str, Any]:
    """What the page's script needs to draw ``layer``: a JSON-able dict.

    Per zoom level from 0 to the layer's last: ``resolutions`` (CRS units per pixel),
    ``origins`` (top-left corner of tile (0, 0), CRS units) and ``sizes`` (columns,
    rows). Tiles are addressed as in :mod:`s3maptiler.tiles.grids`, row counted from the top,
    which is also how OpenLayers counts them. ``extent`` is the grid's bbox in CRS
    units; ``dataExtent`` the layer's extent in decimal degrees (or None);
    ``bucketUrl`` the bucket's public URL (or None), whose address comes first;
    ``archiveZooms`` the [lowest, highest] zoom answered from a PMTiles archive, or None.
    Raises :class:`UnsupportedGrid` when the map cannot draw the grid.
    """
    projection = projection_of(grid)
    zooms = range(0, _max_zoom(layer, grid) + 1)
    ratio = layer.pixel_ratio  # 2: the 512 px tiles are drawn on the 1x grid's 256 CSS px
    origins = []
    for z in zooms:
        box = grid.tile_bbox(Tile(0, 0, z))
        origins.append([box.left, box.top])
    return {
        "layer": layer.name,
        "title": layer.title or layer.name,
        "projection": projection,
        "extent": list(grid.bbox),
        "dataExtent": _data_extent(layer, projection),
        "tileSize": grid.tile_size // ratio,
        "tilePixelRatio": ratio,
        "resolutions": [grid.resolution(z) * ratio for z in zooms],
        "origins": origins,
        "sizes": [list(grid.matrix_size(z)) for z in zooms],
        "minZoom": min(layer.min_zoom, zooms.stop - 1),
        "maxZoom": zooms.stop - 1,
        "addresses": [asdict(a) for a in tile_addresses(layer, grid, root, bucket_url)],
        "bucketUrl": bucket_url.rstrip("/") if bucket_url else None,
        # Zooms the service answers from the layer's PMTiles archive (service/archived.py).
        "archiveZooms": list(layer.pmtiles_zooms)
        if layer.pmtiles_zooms and layer.pixel_ratio == 1
        else None,
    }


def missing_assets() -> list[str]:
    """The map library files that are not built yet (paths under ``static/``)."""
    return [name for name in VENDOR_FILES if not (STATIC_DIR / name).is_file()]


def _root() -> str:
    return request.script_root if has_request_context() else ""


def _document_links(layer: Layer, root: str) -> dict[str, Any]:
    """Links to the documents that describe ``layer``, or why there is none."""
    links: dict[str, Any] = {}
    skipped = {
        doc: {s.layer: s.reason for s in common.skipped_layers([layer], doc, "service")}
        for doc in ("tms", "wmts")
    }
    tms_reason = skipped["tms"].get(layer.name)
    links["tms"] = (
        (None, tms_reason) if tms_reason else (f"{root}/{common.tile_map_path(layer)}", None)
    )
    wmts_reason = skipped["wmts"].get(layer.name)
    links["wmts"] = (
        (None, wmts_reason) if wmts_reason else (f"{root}/{common.WMTS_CAPABILITIES_PATH}", None)
    )
    try:
        arcgis.arcgis_mapserver(layer)
    except common.DocumentError as exc:
        links["arcgis"] = (None, str(exc))
    else:
        links["arcgis"] = (f"{root}/{common.arcgis_service_path(layer)}?f=pjson", None)
    return links


def index_page(tiles: Any) -> str:
    """The HTML of ``/``: every layer of ``tiles`` (a TileService) with its grid,
    layout, zoom range, key template and links to its documents and preview.

    Call it while handling a request (links respect the app's mount point).
    """
    root = _root()
    rows = []
    for layer in with_pixel_ratios(tiles.settings.layers):  # and "roads@2x" after roads
        grid = layer.tile_grid
        keys = tile_addresses(layer, grid, root)[0]
        try:
            projection_of(grid)
            preview_problem = None
        except PreviewError as exc:
            preview_problem = str(exc)
        rows.append(
            {
                "layer": layer,
                "grid": grid,
                "matrix_set": tile_matrix_set_id(grid),
                "max_zoom": _max_zoom(layer, grid),
                "key_template": keys.template,
                "docs": _document_links(layer, root),
                "preview": f"{root}/preview/{quote(layer.name, safe='')}",
                "preview_problem": preview_problem,
            }
        )
    return render_template(
        "index.html",
        rows=rows,
        store=tiles.settings.store_location,
        bucket_url=tiles.settings.bucket_url,
        root=root,
        tms_service=f"{root}/{common.tms_service_path()}",
        wmts_capabilities=f"{root}/{common.WMTS_CAPABILITIES_PATH}",
    )


@blueprint.get("/preview/<layer>")
def preview(layer: str) -> Response:
    """A full-window map of one layer, or a one-line reason it cannot be drawn."""
    tiles = service()
    found = tiles.layer(layer)
    if found is None:
        names = ", ".join(named.name for named in tiles.settings.layers)
        return text(404, f"no layer named {layer[:64]!r}; layers: {names}")
    problem = None
    config = None
    missing = missing_assets()
    if missing:
        problem = f"The map library is not built ({', '.join(missing)} missing): {BUILD_HINT}."
    else:
        try:
            config = preview_config(found, found.tile_grid, _root(), tiles.settings.bucket_url)
        except PreviewError as exc:
            problem = f"This layer cannot be previewed: {exc}."
    if problem:
        log.warning("preview of layer %s: %s", layer, problem)
    html = render_template(
        "preview.html", layer=found, config=config, problem=problem, root=_root()
    )
    response = Response(html, mimetype="text/html")
    # The page embeds the configuration, which changes with a restart.
    response.headers["Cache-Control"] = "no-cache"
    return response
