"""The layers file: many layers in one TOML file, named by `LAYERS_FILE`.

Top-level keys are defaults for every layer; each `[layers.<name>]` table describes
one layer and may override any of them; `[grids.<name>]` tables define custom grids
that layers name in `grid`. Every key is documented in `layers.example.toml`.
Any unknown key or bad value raises ConfigError naming the file, the layer and the key.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from s3maptiler.config import validators
from s3maptiler.config.hidpi import WMS_VENDORS, with_tile_size
from s3maptiler.config.model import WMS_VERSIONS, ConfigError, Layer, checked, default_meta_buffer
from s3maptiler.config.sources import (
    TileSourceSpec,
    check_template,
    parse_credentials,
    parse_tile_source,
    zoom_offset,
)
from s3maptiler.tiles.arcgis import grid_from_arcgis_conf, grid_from_arcgis_tileinfo
from s3maptiler.tiles.dimensions import parse_dimensions
from s3maptiler.tiles.formats import TILE_FORMATS
from s3maptiler.tiles.grids import Bbox, GridError, TileGrid, custom_grid, get_grid
from s3maptiler.tiles.layouts import LAYOUTS
from s3maptiler.tiles.tilemath import has_lonlat

GRID_KEYS = {"srs", "origin", "tile_size", "resolutions", "bbox", "arcgis_tileinfo", "arcgis_conf"}


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def _zoom(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 30:
        raise ValueError("expected a whole number from 0 to 30")
    return value


def _choice(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value

    return check


def _extent(value: Any) -> tuple[float, float, float, float]:
    if (
        not isinstance(value, list)
        or len(value) != 4
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        raise ValueError("expected [min_lon, min_lat, max_lon, max_lat]")
    west, south, east, north = (float(v) for v in value)
    if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
        raise ValueError("expected min_lon < max_lon within ±180, min_lat < max_lat within ±90")
    return west, south, east, north


def _pixels(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 512:
        raise ValueError("expected pixels from 0 to 512")
    return value


def _tile_size(value: Any) -> int:
    if value not in (256, 512):
        raise ValueError("expected 256 or 512")
    return value


def _bounded(low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ValueError(f"expected a whole number from {low} to {high}")
        return value

    return check


def _pmtiles(value: Any) -> str:
    """A PMTiles archive: ``s3://bucket/key.pmtiles``, a key in the service's bucket,
    or (without a bucket) a path under LOCAL_CACHE_DIR or an absolute one."""
    if not isinstance(value, str) or not value.endswith(".pmtiles"):
        raise ValueError("expected the name of a .pmtiles archive")
    if value.startswith("s3://"):
        bucket, _, key = value[5:].partition("/")
        if not bucket or not key:
            raise ValueError("expected s3://bucket/key.pmtiles")
    return value


def _zoom_range(value: Any) -> tuple[int, int]:
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError("expected [lowest, highest] zoom")
    low, high = (_zoom(v) for v in value)
    if low > high:
        raise ValueError("expected [lowest, highest] zoom, lowest first")
    return low, high


# layers-file key -> (Layer field, checker)
LAYER_KEYS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "title": ("title", _text),
    "wms_url": ("wms_url", _text),
    "wms_layers": ("wms_layers", _text),
    "wms_styles": ("wms_styles", _text),
    "wms_version": ("wms_version", _choice(*WMS_VERSIONS)),
    "format": ("format", _choice(*TILE_FORMATS)),
    "transparent": ("transparent", _boolean),
    "bgcolor": ("bgcolor", validators.bgcolor),
    "grid": ("grid", _text),
    "layout": ("layout", _choice(*LAYOUTS)),
    "prefix": ("prefix", _text),
    "min_zoom": ("min_zoom", _zoom),
    "max_zoom": ("max_zoom", _zoom),
    "extent": ("extent", _extent),
    "outside_extent": ("outside_extent", _choice("404", "blank")),
    "cache_control": ("cache_control", _text),
    "cache_from_wms": ("cache_from_wms", _boolean),
    "metatile": ("metatile", validators.metatile),
    "meta_buffer": ("meta_buffer", _pixels),
    "tile_size": ("tile_size", _tile_size),
    "png_compress_level": ("png_compress_level", _bounded(0, 9)),
    "jpeg_quality": ("jpeg_quality", _bounded(1, 100)),
    "webp_quality": ("webp_quality", _bounded(0, 100)),
    "webp_lossless": ("webp_lossless", _boolean),
    "pixel_ratios": ("pixel_ratios", validators.pixel_ratios),
    "wms_vendor": ("wms_vendor", _choice(*WMS_VENDORS)),
    "empty_tiles": ("empty_tiles", _choice("store", "redirect")),
    "dimensions": ("dimensions", parse_dimensions),
    "credentials": ("credentials", parse_credentials),
    "source": ("tile_source", parse_tile_source),
    "pmtiles": ("pmtiles", _pmtiles),
    "pmtiles_zooms": ("pmtiles_zooms", _zoom_range),
}


def load_layers_file(path: Path, wms_server: str | None = None) -> tuple[Layer, ...]:
    """Read and check every layer of a layers file. `wms_server` (``WMS_SERVER``) is
    the ``wms_url`` of a layer the file gives none, so one file runs against the demo
    WMS of ``make run`` and, unchanged, against yours."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"LAYERS_FILE: cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None

    grid_tables = document.pop("grids", {})
    layer_tables = document.pop("layers", None)
    if not isinstance(layer_tables, dict) or not layer_tables:
        raise ConfigError(f"{path}: no [layers.<name>] table")
    grids = {name: _grid(path, name, table) for name, table in _tables(path, "grids", grid_tables)}
    defaults = _fields(path, "top level", document)

    layers = []
    for name, table in _tables(path, "layers", layer_tables):
        where = f"{path}: layer {name}"
        fields = {**defaults, **_fields(path, f"layer {name}", table)}
        tile_source = fields.get("tile_source")
        if tile_source is not None:
            # One upstream tile per tile: no WMS, no metatile, no buffer.
            for key in ("wms_url", "wms_layers"):
                if key in table:
                    raise ConfigError(f"{where}: key {key!r} does not go with a tile source")
            fields.update(wms_url="", wms_layers="", metatile=(1, 1), meta_buffer=0)
        elif wms_server is not None:
            fields.setdefault("wms_url", wms_server)
        for required in ("wms_url", "wms_layers"):
            if required not in fields:
                raise ConfigError(f"{where}: key {required!r} is missing")
        fields.setdefault("prefix", f"{name}/")
        fields.setdefault("meta_buffer", default_meta_buffer(fields.get("metatile", (4, 4))))
        fields.setdefault("title", name)
        try:
            if tile_source is None:
                checked("wms_url", validators.url, fields["wms_url"])
            checked("prefix", validators.key_prefix, fields["prefix"])
            grid = grids.get(fields.get("grid", "GoogleMapsCompatible")) or get_grid(
                fields.get("grid", "GoogleMapsCompatible")
            )
        except (ConfigError, GridError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
        grid = with_tile_size(grid, fields.pop("tile_size", grid.tile_size))
        if tile_source is not None:
            _tile_source_fields(where, grid, tile_source, fields)
        tile_format = TILE_FORMATS[fields.get("format", "png")]
        extensions = ("jpg", "jpeg") if tile_format.extension == "jpg" else (tile_format.extension,)
        layer = Layer(name=name, formats=extensions, **fields)
        layer = replace(
            layer,
            grid=grid.name,
            grid_def=grid,
            tile_size=grid.tile_size,
            max_zoom=min(layer.max_zoom, grid.max_zoom),
        )
        if layer.extent is not None and not has_lonlat(grid):
            raise ConfigError(f"{where}: key 'extent' needs a grid in EPSG:3857 or EPSG:4326")
        if layer.min_zoom > layer.max_zoom:
            raise ConfigError(f"{where}: key 'min_zoom' is above max_zoom {layer.max_zoom}")
        _check_pmtiles(where, layer, grid)
        layers.append(layer)
    _check_prefixes(path, layers)
    return tuple(layers)


def _tile_source_fields(where: str, grid: TileGrid, spec: TileSourceSpec, fields: dict) -> None:
    """Check a tile source against the layer's grid (a WMTS's is read at start-up) and
    set the metatile: one upstream tile, 1x1, or 2x2 layer tiles cut from a 512 px one."""
    offset = 0
    try:
        if spec.kind != "wmts":  # a WMTS's grid and dimensions are read at start-up
            offset = zoom_offset(grid, spec)
            check_template(spec.url, tuple(d.identifier for d in fields.get("dimensions", ())))
    except ValueError as exc:
        raise ConfigError(f"{where}: key 'source': {exc}") from None
    if 2 in fields.get("pixel_ratios", (1,)) and spec.tile_size != 2 * grid.tile_size:
        raise ConfigError(
            f"{where}: key 'pixel_ratios': @2x tiles need a tile source with tile_size = 512"
        )
    if offset:
        fields["metatile"] = (2, 2)
        if fields.setdefault("min_zoom", 1) < 1:
            raise ConfigError(
                f"{where}: key 'min_zoom': 256 px tiles cut from 512 px ones start at zoom 1"
            )


def _check_pmtiles(where: str, layer: Layer, grid: TileGrid) -> None:
    """An archive serves zooms of a z/x/y Web Mercator layer, without dimensions."""
    if (layer.pmtiles is None) != (layer.pmtiles_zooms is None):
        raise ConfigError(f"{where}: keys 'pmtiles' and 'pmtiles_zooms' go together")
    if layer.pmtiles is None:
        return
    if grid.srs != "EPSG:3857" or grid.matrix_size(0) != (1, 1):
        raise ConfigError(f"{where}: key 'pmtiles' needs the GoogleMapsCompatible grid")
    if layer.dimensions:
        raise ConfigError(f"{where}: key 'pmtiles' cannot serve a layer with dimensions")


def _tables(path: Path, section: str, tables: Any):
    if not isinstance(tables, dict):
        raise ConfigError(f"{path}: [{section}] must hold tables")
    for name, table in tables.items():
        if not validators.LAYER_NAME_RE.match(name):
            raise ConfigError(f"{path}: {section} name {name!r} must be letters, digits, _ or -")
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {section}.{name} must be a table")
        yield name, table


def _fields(path: Path, where: str, table: dict[str, Any]) -> dict[str, Any]:
    fields = {}
    for key, value in table.items():
        if key not in LAYER_KEYS:
            raise ConfigError(f"{path}: {where}: key {key!r} is unknown")
        field, check = LAYER_KEYS[key]
        try:
            fields[field] = check(value)
        except ValueError as exc:
            raise ConfigError(f"{path}: {where}: key {key!r}: {exc}") from None
    return fields


def _grid(path: Path, name: str, table: dict[str, Any]) -> TileGrid:
    where = f"{path}: grid {name}"
    unknown = set(table) - GRID_KEYS
    if unknown:
        raise ConfigError(f"{where}: key {sorted(unknown)[0]!r} is unknown")
    bbox = Bbox(*table["bbox"]) if "bbox" in table else None
    try:
        if "arcgis_conf" in table:
            conf = (path.parent / table["arcgis_conf"]).read_text(encoding="utf-8")
            return grid_from_arcgis_conf(name, conf, bbox)
        if "arcgis_tileinfo" in table:
            info = json.loads((path.parent / table["arcgis_tileinfo"]).read_text("utf-8"))
            return grid_from_arcgis_tileinfo(name, info.get("tileInfo", info), bbox)
        missing = {"srs", "origin", "resolutions"} - set(table)
        if missing:
            raise ConfigError(f"{where}: key {sorted(missing)[0]!r} is missing")
        return custom_grid(
            name,
            table["srs"],
            tuple(table["origin"]),
            int(table.get("tile_size", 256)),
            table["resolutions"],
            bbox,
        )
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {exc.filename}: {exc.strerror}") from None
    except (GridError, ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _check_prefixes(path: Path, layers: list[Layer]) -> None:
    seen: dict[str, str] = {}
    for layer in layers:
        if layer.prefix in seen:
            raise ConfigError(
                f"{path}: layer {layer.name}: key 'prefix' {layer.prefix!r} is already "
                f"layer {seen[layer.prefix]}'s"
            )
        seen[layer.prefix] = layer.name
