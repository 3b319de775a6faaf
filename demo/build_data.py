"""Build the demo WMS data into ``demo/build/`` (git-ignored).

The vector layers come from a registry package rather than a website: the
``geopandas==0.14.4`` wheel ships Natural Earth 110m countries and populated
places (public domain) and the NYC borough boundaries. Newer geopandas releases
dropped them, hence the pin. The wheel is fetched with ``pip download`` and
opened as a zip; only ``geopandas/datasets/`` is read.

A "months" layer is generated here too: twelve bands of 30 degrees of longitude, one
per month of 2024, each with its ``date``, so that the WMS's TIME parameter picks one
(demo.map's ``wms_timeitem``); it gives the tests a time dimension to draw.

A small shaded "relief" raster is generated here (pure Python writes an ASCII
grid, GDAL's command-line tools georeference, mask and colour it) so that tests
have raster pixels to compare. It is fake terrain: a smooth function of
longitude and latitude, masked to land by the countries polygons.

Outputs, all in EPSG:4326 (decimal degrees):

- ``countries.shp``, ``cities.shp``, ``nybb.shp``, ``months.shp`` with ``.qix``
  spatial indexes
- ``relief.tif``: RGBA GeoTIFF, alpha 0 over the sea

Usage: ``python demo/build_data.py [--force]`` or ``ensure_demo_data()``.
Idempotent: a ``MANIFEST.json`` written last marks a complete build; a file lock
keeps concurrent callers (parallel test workers) from building twice.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger("demo.build_data")

DEMO_DIR = Path(__file__).resolve().parent
BUILD_DIR = DEMO_DIR / "build"

GEOPANDAS_REQUIREMENT = "geopandas==0.14.4"
#: A local copy of that wheel, for machines without access to the package index.
WHEEL_ENV = "DEMO_GEOPANDAS_WHEEL"

#: Bump when the outputs change so that old builds are rebuilt.
DATA_VERSION = 2
MANIFEST = "MANIFEST.json"

SHAPE_SUFFIXES = (".shp", ".shx", ".dbf", ".prj", ".cpg", ".qix")
VECTOR_LAYERS = ("countries", "cities", "nybb", "months")
RELIEF_FILE = "relief.tif"


class Extent(NamedTuple):
    """A bounding box in decimal degrees."""

    west: float
    south: float
    east: float
    north: float


#: The relief raster covers the whole world at 0.25 degrees per pixel (1440 x 720).
RELIEF_EXTENT = Extent(-180.0, -90.0, 180.0, 90.0)

#: The year of the "months" layer: one feature dated the first of each of its months.
MONTHS_YEAR = 2024
RELIEF_RESOLUTION = 0.25

#: Height (metres) to colour (R, G, B); gdaldem interpolates linearly between rows.
#: ``nv`` (no value: the sea) becomes fully transparent.
RELIEF_RAMP = (
    (1, (84, 150, 84)),
    (600, (160, 196, 104)),
    (1400, (222, 206, 136)),
    (2300, (184, 132, 86)),
    (3200, (140, 110, 96)),
    (4000, (246, 246, 246)),
)


class DemoDataError(Exception):
    """Base class for failures while building the demo data."""


class ToolMissingError(DemoDataError):
    """A required command-line tool (GDAL, MapServer utilities) is not installed."""


class DownloadError(DemoDataError):
    """The geopandas wheel could not be fetched or does not hold the datasets."""


class ConversionError(DemoDataError):
    """A GDAL/MapServer command failed."""


def expected_files() -> list[str]:
    """File names (relative to the build directory) that a complete build holds."""
    names = [layer + suffix for layer in VECTOR_LAYERS for suffix in SHAPE_SUFFIXES]
    return sorted([*names, RELIEF_FILE])


def is_complete(build_dir: Path = BUILD_DIR) -> bool:
    """True when ``build_dir`` holds a finished build of the current DATA_VERSION."""
    try:
        manifest = json.loads((build_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("version") != DATA_VERSION:
        return False
    sizes = manifest.get("files", {})
    if sorted(sizes) != expected_files():
        return False
    for name, size in sizes.items():
        try:
            if (build_dir / name).stat().st_size != size:
                return False
        except OSError:
            return False
    return True


def ensure_demo_data(build_dir: Path = BUILD_DIR, force: bool = False) -> Path:
    """Build the demo data unless a complete build exists; return ``build_dir``.

    Safe to call from several processes at once: one builds, the others wait on
    a lock and then find the build complete.
    """
    build_dir = Path(build_dir)
    if not force and is_complete(build_dir):
        return build_dir
    build_dir.mkdir(parents=True, exist_ok=True)
    with _locked(build_dir / ".lock"):
        if force or not is_complete(build_dir):
            _build(build_dir)
    return build_dir


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build(build_dir: Path) -> None:
    _check_tools()
    log.info("building demo data in %s", build_dir)
    # A stale manifest must not vouch for a half-replaced set of files.
    (build_dir / MANIFEST).unlink(missing_ok=True)
    # Work inside build_dir so that the final os.replace() never crosses filesystems.
    with tempfile.TemporaryDirectory(dir=build_dir, prefix=".tmp-") as tmp:
        work = Path(tmp)
        out = work / "out"
        out.mkdir()
        datasets = extract_datasets(fetch_geopandas_wheel(work), work / "src")
        convert_vectors(datasets, out)
        build_months(out, work)
        build_relief(out, out / "countries.shp", work)
        sizes = {}
        for name in expected_files():
            sizes[name] = (out / name).stat().st_size
            os.replace(out / name, build_dir / name)
        manifest = {"version": DATA_VERSION, "source": GEOPANDAS_REQUIREMENT, "files": sizes}
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        os.replace(work / MANIFEST, build_dir / MANIFEST)
    log.info("demo data complete: %d files", len(sizes))


def _check_tools() -> None:
    tools = ("ogr2ogr", "gdal_translate", "gdal_rasterize", "gdaldem", "shptree")
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise ToolMissingError(
            f"missing {', '.join(missing)}: run scripts/install-system-packages.sh "
            "(Debian packages gdal-bin, mapserver-bin)"
        )


def _run(cmd: Sequence[str | os.PathLike[str]]) -> None:
    """Run a tool; raise ConversionError with its stderr when it fails."""
    args = [str(arg) for arg in cmd]
    log.debug("running %s", " ".join(args))
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise ConversionError(f"{args[0]} exited {proc.returncode}: {detail}")


def fetch_geopandas_wheel(work: Path) -> Path:
    """Download the pinned geopandas wheel into ``work``; return its path.

    Honours ``DEMO_GEOPANDAS_WHEEL`` (a local wheel) before asking pip.
    """
    local = os.environ.get(WHEEL_ENV)
    if local:
        path = Path(local)
        if not path.is_file():
            raise DownloadError(f"{WHEEL_ENV}={local} is not a file")
        return path
    dest = work / "wheel"
    dest.mkdir()
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
        # Override any PIP_NO_BINARY setting: we want the wheel, never an sdist.
        "--no-binary", ":none:", "--only-binary", ":all:",
        "--dest", str(dest), GEOPANDAS_REQUIREMENT,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = sorted(dest.glob("geopandas-*.whl"))
    if proc.returncode != 0 or not wheels:
        detail = (proc.stderr or proc.stdout).strip()
        raise DownloadError(f"pip download {GEOPANDAS_REQUIREMENT} failed: {detail}")
    return wheels[0]


class Datasets(NamedTuple):
    """Paths (OGR data source names) of the source datasets after extraction."""

    countries: str
    cities: str
    nybb: str


def extract_datasets(wheel: Path, dest: Path) -> Datasets:
    """Extract Natural Earth countries/cities and the NYC boroughs from the wheel."""
    prefix = "geopandas/datasets/"
    wanted = (prefix + "naturalearth_lowres/", prefix + "naturalearth_cities/", prefix + "nybb")
    try:
        with zipfile.ZipFile(wheel) as zf:
            members = [n for n in zf.namelist() if n.startswith(wanted) and not n.endswith("/")]
            for name in members:
                target = dest / Path(name).relative_to(prefix)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(name))
    except (OSError, zipfile.BadZipFile) as exc:
        raise DownloadError(f"cannot read {wheel}: {exc}") from exc
    countries = dest / "naturalearth_lowres" / "naturalearth_lowres.shp"
    cities = dest / "naturalearth_cities" / "naturalearth_cities.shp"
    nybb_zips = sorted(dest.glob("nybb*.zip"))
    if not (countries.is_file() and cities.is_file() and nybb_zips):
        raise DownloadError(f"{wheel.name} does not contain the expected datasets")
    with zipfile.ZipFile(nybb_zips[0]) as zf:
        shp = [n for n in zf.namelist() if n.endswith(".shp")]
    if not shp:
        raise DownloadError(f"{nybb_zips[0].name} holds no shapefile")
    # GDAL reads the shapefile straight out of the zip.
    return Datasets(str(countries), str(cities), f"/vsizip/{nybb_zips[0]}/{shp[0]}")


def convert_vectors(datasets: Datasets, out: Path) -> None:
    """Write EPSG:4326 shapefiles (UTF-8, few fields) and their .qix indexes into ``out``."""
    jobs = (
        ("countries", datasets.countries, "name,iso_a3,continent,pop_est"),
        ("cities", datasets.cities, "name"),
        ("nybb", datasets.nybb, "BoroCode,BoroName"),
    )
    for layer, source, fields in jobs:
        target = out / f"{layer}.shp"
        _run(
            ["ogr2ogr", "-f", "ESRI Shapefile", "-t_srs", "EPSG:4326", "-nln", layer]
            + ["-select", fields, "-lco", "ENCODING=UTF-8", target, source]
        )
        _run(["shptree", target])


def build_months(out: Path, work: Path) -> Path:
    """Write ``months.shp``: for month m of MONTHS_YEAR, the band of longitudes
    -180 + 30 (m - 1) to -150 + 30 (m - 1) between 60 S and 60 N (decimal degrees),
    with a ``date`` field (``2024-03-01``) and a ``month`` field."""
    features = []
    for month in range(1, 13):
        west = -180 + 30 * (month - 1)
        ring = [[west, -60], [west + 30, -60], [west + 30, 60], [west, 60], [west, -60]]
        features.append(
            {
                "type": "Feature",
                "properties": {"date": f"{MONTHS_YEAR}-{month:02d}-01", "month": month},
                "geometry": {"type": "Polygon", "coordinates": [ring]},
            }
        )
    source = work / "months.geojson"
    source.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    target = out / "months.shp"
    _run(
        ["ogr2ogr", "-f", "ESRI Shapefile", "-nln", "months", "-lco", "ENCODING=UTF-8"]
        + [target, source]
    )
    _run(["shptree", target])
    return target


def relief_height(lon: float, lat: float) -> float:
    """Fake terrain height in metres at (lon, lat) in decimal degrees.

    Smooth by construction (a few low-frequency waves plus snowy poles) so that
    neighbouring pixels differ little and bilinear resampling is well behaved.
    Always within 1..4000.
    """
    x, y = math.radians(lon), math.radians(lat)
    h = 900.0
    h += 700.0 * math.sin(2.0 * x + 0.7) * math.cos(3.0 * y - 0.4)
    h += 450.0 * math.sin(5.0 * x - 3.0 * y + 1.1)
    h += 250.0 * math.cos(9.0 * x + 7.0 * y)
    h += 2600.0 * (abs(lat) / 90.0) ** 4
    return min(4000.0, max(1.0, h))


def write_relief_grid(path: Path, extent: Extent, resolution: float) -> tuple[int, int]:
    """Write an ESRI ASCII grid of relief_height(); return (columns, rows) in pixels.

    ``resolution`` is in decimal degrees per pixel; heights are whole metres;
    0 is reserved for "no data" (the sea, burnt in later).
    """
    cols = round((extent.east - extent.west) / resolution)
    rows = round((extent.north - extent.south) / resolution)
    with open(path, "w") as fh:
        fh.write(f"ncols {cols}\nnrows {rows}\n")
        fh.write(f"xllcorner {extent.west:.10f}\nyllcorner {extent.south:.10f}\n")
        fh.write(f"cellsize {resolution:.10f}\nNODATA_value 0\n")
        for row in range(rows):
            # Rows run north to south; sample at pixel centres.
            lat = extent.north - (row + 0.5) * resolution
            values = (
                str(round(relief_height(extent.west + (col + 0.5) * resolution, lat)))
                for col in range(cols)
            )
            fh.write(" ".join(values) + "\n")
    return cols, rows


def build_relief(out: Path, land: Path, work: Path) -> Path:
    """Generate ``relief.tif`` (RGBA, EPSG:4326, sea transparent) in ``out``.

    ``land`` is a polygon shapefile whose outside is masked as no data.
    """
    grid = work / "relief.asc"
    heights = work / "heights.tif"
    ramp = work / "ramp.txt"
    write_relief_grid(grid, RELIEF_EXTENT, RELIEF_RESOLUTION)
    _run(
        ["gdal_translate", "-q", "-of", "GTiff", "-ot", "Int16", "-a_srs", "EPSG:4326"]
        + ["-a_nodata", "0", grid, heights]
    )
    # -i burns "no data" into everything that is NOT inside a country polygon.
    _run(["gdal_rasterize", "-q", "-i", "-burn", "0", "-l", land.stem, land, heights])
    lines = [f"{h} {r} {g} {b} 255" for h, (r, g, b) in RELIEF_RAMP] + ["nv 0 0 0 0"]
    ramp.write_text("\n".join(lines) + "\n")
    target = out / RELIEF_FILE
    _run(
        ["gdaldem", "color-relief", "-q", "-alpha", heights, ramp, target]
        + ["-co", "COMPRESS=DEFLATE", "-co", "PREDICTOR=2", "-co", "TILED=YES"]
    )
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if complete")
    parser.add_argument("--build-dir", type=Path, default=BUILD_DIR, help="output directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        path = ensure_demo_data(args.build_dir, force=args.force)
    except DemoDataError as exc:
        log.error("%s", exc)
        return 1
    log.info("demo data ready in %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
