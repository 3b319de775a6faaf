"""The source of an upload: a local tile cache directory (an ArcGIS exploded cache or a
``z/x/y`` tree), where its tiles start, which S3 key each file goes to, and the ArcGIS
``conf.xml``/``conf.cdi`` beside them."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from s3maptiler.tiles.arcgis_cache import (
    ArcgisCacheInfo,
    ConfXmlError,
    parse_conf_cdi,
    parse_conf_xml,
)
from s3maptiler.tiles.grids import Bbox, GridError, TileGrid
from s3maptiler.tiles.layouts import Layout, LayoutError

_LEVEL_DIR_RE = re.compile(r"L[0-9]{2,}")


class BulkError(Exception):
    """Base class for every error raised by this module; the message is one line."""


class SourceError(BulkError):
    """The source directory is missing, holds no tiles, or is a cache we cannot read."""


@dataclass(frozen=True)
class SourceTree:
    """A local tile cache: `tile_root` is the folder the layout's paths start in (for
    ArcGIS the ``_alllayers`` folder); `conf_xml` is the ArcGIS cache description
    beside it, if any; `name` is a service name for documents (the cache folder's)."""

    tile_root: Path
    conf_xml: Path | None
    name: str


def find_source(root: str | os.PathLike) -> SourceTree:
    """Where the tiles under `root` start.

    `root` may be an ArcGIS cache root holding one service, the service's cache
    folder (``<Service>/Layers/_alllayers``), its ``Layers`` folder, the
    ``_alllayers`` folder itself, or the top of a ``z/x/y`` tree. Raises SourceError
    when `root` is not a directory or holds several caches.
    """
    path = Path(root)
    if not path.is_dir():
        raise SourceError(f"{path} is not a directory")
    for candidate in (path / "Layers" / "_alllayers", path / "_alllayers"):
        if candidate.is_dir():
            tile_root = candidate
            break
    else:
        # An ArcGIS cache root (arcgiscache/) holding one service's cache.
        services = sorted(path.glob("*/Layers/_alllayers"))
        if len(services) > 1:
            names = ", ".join(p.parent.parent.name for p in services)
            raise SourceError(f"{path} holds several ArcGIS caches ({names}); pick one")
        tile_root = services[0] if services else path
    conf = tile_root.parent / "conf.xml" if tile_root.name == "_alllayers" else None
    if conf is not None and not conf.is_file():
        conf = None
    name_dir = tile_root.parent if tile_root.name == "_alllayers" else tile_root
    if name_dir.name == "Layers":
        name_dir = name_dir.parent
    return SourceTree(tile_root, conf, name_dir.resolve().name or "tiles")


def detect_layout(tile_root: Path) -> str | None:
    """ "arcgis" when `tile_root` holds ArcGIS level folders (``L00``, ``L01``, ...),
    else None: TMS and XYZ trees look alike, only the user knows which one it is."""
    try:
        with os.scandir(tile_root) as entries:
            for entry in entries:
                if entry.is_dir() and _LEVEL_DIR_RE.fullmatch(entry.name):
                    return "arcgis"
    except OSError as err:
        raise SourceError(f"cannot read {tile_root}: {err.strerror or err}") from err
    return None


def _relative_files(root: Path) -> Iterator[str]:
    """Paths of the regular files under `root`, '/'-separated, sorted per folder.

    Hidden entries (``.DS_Store``, ``.git``) are left out; symbolic links to
    folders are not followed, so a link loop cannot trap the walk.
    """
    stack = [("", root)]
    while stack:
        rel, folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as err:
            raise SourceError(f"cannot read {folder}: {err.strerror or err}") from err
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                subfolders.append((f"{rel}{entry.name}/", Path(entry.path)))
            elif entry.is_file():
                yield rel + entry.name
        stack.extend(reversed(subfolders))


def convert_key(path: str, source: Layout, target: Layout | None, grid: TileGrid) -> str:
    """The key path of the tile file at `path` (relative, in the `source` layout).

    With `target` None or the same layout the path is kept exactly as it is (an
    upper-case ArcGIS ``R0000001A`` stays so, which is the spelling clients ask
    for); otherwise the tile is parsed and formatted in `target`. Raises
    LayoutError or GridError when `path` is not a tile of `grid`.

    >>> from s3maptiler.tiles.grids import WEB_MERCATOR
    >>> from s3maptiler.tiles.layouts import get_layout
    >>> convert_key("L03/R00000002/C00000005.png", get_layout("arcgis"),
    ...             get_layout("tms"), WEB_MERCATOR)
    '3/5/5.png'
    """
    tile, ext = source.parse(path, grid)
    if target is None or target.name == source.name:
        return path
    return target.format(tile, ext, grid)


@dataclass(frozen=True)
class LocalTile:
    """One file to upload: its local `path` and the full S3 `key` it goes to."""

    path: Path
    key: str


@dataclass(frozen=True)
class TileWalk:
    """The result of :func:`walk_tiles`: the tiles, and the files that are not tiles."""

    tiles: tuple[LocalTile, ...]
    ignored: tuple[str, ...]


def walk_tiles(
    tile_root: Path,
    source: Layout,
    grid: TileGrid,
    prefix: str,
    target: Layout | None = None,
) -> TileWalk:
    """Every tile file under `tile_root` with its key: `prefix` + :func:`convert_key`.

    Files that are not tiles of `grid` in the `source` layout (``conf.xml``,
    ``Thumbs.db``, a gdal2tiles ``leaflet.html``, ...) are returned as ignored,
    never uploaded. Two files that convert to one key are an error.
    """
    tiles: list[LocalTile] = []
    ignored: list[str] = []
    seen: dict[str, str] = {}
    for rel in _relative_files(tile_root):
        try:
            key = prefix + convert_key(rel, source, target, grid)
        except (LayoutError, GridError):
            ignored.append(rel)
            continue
        if key in seen:
            raise SourceError(f"{seen[key]} and {rel} would both be uploaded as {key}")
        seen[key] = rel
        tiles.append(LocalTile(tile_root / rel, key))
    return TileWalk(tuple(tiles), tuple(ignored))


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfXmlError(f"cannot read {path}: {err}") from err


def read_conf_xml(path: str | os.PathLike) -> ArcgisCacheInfo:
    """Parse an ArcGIS exploded cache's ``conf.xml`` (``CacheInfo`` / ``TileCacheInfo``)."""
    path = Path(path)
    parsed = parse_conf_xml(_read(path), str(path))
    if "Exploded" not in parsed.storage_format:
        raise ConfXmlError(
            f"{path}: {parsed.storage_format} is not an exploded cache "
            "(compact .bundle files are not uploaded tile by tile)"
        )
    return parsed


def read_conf_cdi(path: str | os.PathLike) -> Bbox | None:
    """The extent in a ``conf.cdi`` (``EnvelopeN``: XMin, YMin, XMax, YMax), or None."""
    path = Path(path)
    if not path.is_file():
        return None
    return parse_conf_cdi(_read(path), str(path))
