"""`s3maptiler export` against real components: the demo MapServer WMS draws the tiles
(``--fill``) into moto's S3 server, the CLI runs as a subprocess, and real readers read
the files: GDAL (``gdalinfo``, ``gdal_translate``) opens the MBTiles and the
GeoPackage, protomaps' ``pmtiles`` reader the PMTiles archive. A SIGKILL halfway
through an export leaves nothing under the output name."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from pmtiles.reader import MmapSource, Reader
from pmtiles.reader import all_tiles as pmtiles_tiles

from s3maptiler.config import Layer
from s3maptiler.render.runtime import LayerRuntime
from s3maptiler.seeding.coverage import Coverage
from s3maptiler.seeding.plan import covered_tiles, plan_jobs
from s3maptiler.tiles.grids import WEB_MERCATOR, Tile
from tests import website
from tests.integration.conftest import cli_env, need

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SMALL = "-74.02,40.70,-73.95,40.76"  # Manhattan: the detailed part of the demo map
ZOOMS = range(11, 15)


def runtime():
    """The layer the CLI builds from the environment below."""
    return LayerRuntime.build(
        Layer(name="default", wms_url="http://unused", wms_layers="demo", prefix="tiles/")
    )


@pytest.fixture
def env(demo_wms, moto_server, bucket):
    return cli_env(demo_wms, moto_server.url, bucket)


def cli(env, cwd, *args, timeout=120) -> subprocess.CompletedProcess:
    return website.cli(*args, env=env, cwd=cwd, timeout=timeout)


def gdal(*args: str) -> str:
    need(None if shutil.which("gdal_translate") else "GDAL (gdal-bin) is not installed")
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def rgba(data: bytes) -> bytes:
    return Image.open(io.BytesIO(data)).convert("RGBA").tobytes()


def test_export_fills_then_three_readers_read_the_cache(env, tmp_path, s3, bucket, demo_wms):
    rt = runtime()
    coverage = Coverage.from_bbox([float(v) for v in SMALL.split(",")])
    metatiles = len(list(plan_jobs(rt, coverage, ZOOMS)))
    zoom = f"{ZOOMS[0]}-{ZOOMS[-1]}"
    before = demo_wms.request_count()
    done = cli(
        env,
        tmp_path,
        "export",
        "default",
        "out.gpkg",
        "--zoom",
        zoom,
        "--bbox",
        SMALL,
        "--fill",
        "--concurrency",
        "2",
        "--attribution",
        "demo data",
    )
    assert done.returncode == 0, done.stderr
    assert demo_wms.request_count() - before == metatiles  # one GetMap per metatile
    tiles = {t: rt.key_to_store(t, "png") for z in ZOOMS for t in covered_tiles(rt, coverage, z)}
    cached = {t: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for t, k in tiles.items()}
    assert f"{len(cached)} tiles" in done.stdout and "0 missing" in done.stdout

    # A second export draws nothing: the tiles are in the bucket now.
    for name in ("out.mbtiles", "out.pmtiles"):
        done = cli(
            env,
            tmp_path,
            "export",
            "default",
            name,
            "--zoom",
            zoom,
            "--bbox",
            SMALL,
            "--fill",
            "--upload",
            f"s3://{bucket}/archives/{name}",
            "--attribution",
            "demo data",
        )
        assert done.returncode == 0, done.stderr
    assert demo_wms.request_count() - before == metatiles

    # PMTiles: the package's reader gives back every tile byte for byte.
    with open(tmp_path / "out.pmtiles", "rb") as f:
        source = MmapSource(f)
        archive = {Tile(x, y, z): data for (z, x, y), data in pmtiles_tiles(source)}
        header = Reader(source).header()
    assert archive == cached
    assert header["tile_contents_count"] <= len(cached)
    head = s3.head_object(Bucket=bucket, Key="archives/out.pmtiles")
    assert head["ContentType"] == "application/vnd.pmtiles"
    assert head["ContentLength"] == (tmp_path / "out.pmtiles").stat().st_size

    # GDAL: the extent of the tiles at the highest zoom, that zoom, its overviews.
    high = ZOOMS[-1]
    xs = [t.x for t in cached if t.z == high]
    ys = [t.y for t in cached if t.z == high]
    top_left = WEB_MERCATOR.tile_bbox(Tile(min(xs), min(ys), high))
    bottom_right = WEB_MERCATOR.tile_bbox(Tile(max(xs), max(ys), high))
    for name in ("out.mbtiles", "out.gpkg"):
        info = json.loads(gdal("gdalinfo", "-json", str(tmp_path / name)))
        corners = info["cornerCoordinates"]
        assert corners["upperLeft"] == pytest.approx([top_left.left, top_left.top], abs=0.01)
        assert corners["lowerRight"] == pytest.approx(
            [bottom_right.right, bottom_right.bottom], abs=0.01
        )
        assert info["size"] == [256 * (max(xs) - min(xs) + 1), 256 * (max(ys) - min(ys) + 1)]
        assert info["metadata"][""]["ZOOM_LEVEL"] == str(high)
        assert 'EPSG",3857' in info["coordinateSystem"]["wkt"].replace(" ", "")
        # Pixels through GDAL equal the cached tile, at every zoom: the part of a tile
        # inside the file's extent (the highest zoom's tiles; edges on pixel edges).
        for z in ZOOMS:
            tile = sorted(t for t in cached if t.z == z)[len([t for t in cached if t.z == z]) // 2]
            box = WEB_MERCATOR.tile_bbox(tile)
            left, top = max(box.left, top_left.left), min(box.top, top_left.top)
            right = min(box.right, bottom_right.right)
            bottom = max(box.bottom, bottom_right.bottom)
            out = tmp_path / f"{name}-{z}.png"
            gdal(
                "gdal_translate",
                "-q",
                "-of",
                "PNG",
                "-oo",
                f"ZOOM_LEVEL={z}",
                "-projwin",
                *(str(v) for v in (left, top, right, bottom)),
                str(tmp_path / name),
                str(out),
            )
            res = WEB_MERCATOR.resolution(z)
            window = tuple(
                round(v / res)
                for v in (left - box.left, box.top - top, right - box.left, box.top - bottom)
            )
            assert window[2] - window[0] >= 32, window
            expected = Image.open(io.BytesIO(cached[tile])).convert("RGBA").crop(window)
            assert rgba(out.read_bytes()) == expected.tobytes(), (name, tile)
    info = json.loads(gdal("gdalinfo", "-json", str(tmp_path / "out.mbtiles")))
    assert info["metadata"][""]["attribution"] == "demo data"
    assert info["metadata"][""]["minzoom"] == str(ZOOMS[0])


def test_sigkill_halfway_leaves_no_file_under_the_output_name_and_sigint_cleans_up(tmp_path):
    """A local cache of about 40,000 tiles (hard links of one PNG), killed a second
    after the temporary file appeared; the temporary file stays, the name stays free."""
    rt = runtime()
    one = io.BytesIO()
    Image.new("RGB", (256, 256), (10, 120, 200)).save(one, "PNG")
    blob = tmp_path / "tile.png"
    blob.write_bytes(one.getvalue())
    bbox = "-74.30,40.50,-73.70,40.90"
    coverage = Coverage.from_bbox([float(v) for v in bbox.split(",")])
    count = 0
    for z in (16, 17):
        for t in covered_tiles(rt, coverage, z):
            path = tmp_path / "cache" / rt.key_to_store(t, "png")
            path.parent.mkdir(parents=True, exist_ok=True)
            os.link(blob, path)
            count += 1
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "LAYERS_FILE": "",
        "BUCKET_NAME": "",
        "WMS_SERVER": "http://127.0.0.1:9/wms",
        "MAP_LAYERS": "demo",
        "LOCAL_CACHE_DIR": str(tmp_path / "cache"),
    }
    for name in ("out.mbtiles", "out.pmtiles", "out.gpkg"):
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "s3maptiler.cli",
                "export",
                "default",
                name,
                "--zoom",
                "16-17",
                "--bbox",
                bbox,
            ],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        parts: list[Path] = []
        while not parts and time.monotonic() < deadline and process.poll() is None:
            parts = list(tmp_path.glob(f".{name}.*.part"))
            time.sleep(0.02)
        time.sleep(1.0)  # halfway: tiles are being written (PMTiles: to its spool file)
        assert parts and process.poll() is None, f"{name}: the export ended before the kill"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        assert not (tmp_path / name).exists()
        for part in parts:
            part.unlink()
    assert count > 30_000
    # Ctrl-C (SIGINT) stops at the next chunk: exit 1, and the .part file is removed too.
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "s3maptiler.cli",
            "export",
            "default",
            "out.mbtiles",
            "--zoom",
            "16-17",
            "--bbox",
            bbox,
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".out.mbtiles.*.part")) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 1 and "export interrupted; nothing written" in stderr, stderr
    assert not (tmp_path / "out.mbtiles").exists()
    assert not list(tmp_path.glob(".*.part"))


def test_gdal_reads_a_geopackage_of_an_epsg4326_grid(tmp_path):
    """Two tiles at zoom 0: the tile matrices come from the layer's grid, not from a
    Web Mercator assumption."""
    from s3maptiler.tiles.grids import GLOBAL_GEODETIC

    layers = tmp_path / "layers.toml"
    layers.write_text(
        'wms_url = "http://127.0.0.1:9/wms"\n[layers.geo]\nwms_layers = "a"\n'
        'prefix = "geo/"\ngrid = "EPSG:4326"\n'
    )
    rt = LayerRuntime.build(
        Layer(name="geo", wms_url="http://x", wms_layers="a", prefix="geo/", grid="EPSG:4326")
    )
    coverage = Coverage.from_bbox([float(v) for v in SMALL.split(",")])
    cached = {}
    for z in range(8, 12):
        for t in covered_tiles(rt, coverage, z):
            out = io.BytesIO()
            Image.new("RGB", (256, 256), ((t.x * 41) % 256, (t.y * 17) % 256, z * 20)).save(
                out, "PNG"
            )
            path = tmp_path / "cache" / rt.key_to_store(t, "png")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(out.getvalue())
            cached[t] = out.getvalue()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "LAYERS_FILE": str(layers),
        "BUCKET_NAME": "",
        "LOCAL_CACHE_DIR": str(tmp_path / "cache"),
    }
    done = cli(env, tmp_path, "export", "geo", "geo.gpkg", "--zoom", "8-11", "--bbox", SMALL)
    assert done.returncode == 0, done.stderr
    info = json.loads(gdal("gdalinfo", "-json", str(tmp_path / "geo.gpkg")))
    assert 'ID["EPSG",4326]' in info["coordinateSystem"]["wkt"].replace("\n", "").replace(" ", "")
    xs = [t.x for t in cached if t.z == 11]
    ys = [t.y for t in cached if t.z == 11]
    top_left = GLOBAL_GEODETIC.tile_bbox(Tile(min(xs), min(ys), 11))
    bottom_right = GLOBAL_GEODETIC.tile_bbox(Tile(max(xs), max(ys), 11))
    corners = info["cornerCoordinates"]
    assert corners["upperLeft"] == pytest.approx([top_left.left, top_left.top], abs=1e-6)
    assert corners["lowerRight"] == pytest.approx(
        [bottom_right.right, bottom_right.bottom], abs=1e-6
    )
    assert info["geoTransform"][1] == pytest.approx(GLOBAL_GEODETIC.resolution(11))
    tile = sorted(t for t in cached if t.z == 11)[0]
    box = GLOBAL_GEODETIC.tile_bbox(tile)
    out = tmp_path / "geo.png"
    gdal(
        "gdal_translate",
        "-q",
        "-of",
        "PNG",
        "-projwin",
        *(str(v) for v in (box.left, box.top, box.right, box.bottom)),
        str(tmp_path / "geo.gpkg"),
        str(out),
    )
    assert rgba(out.read_bytes()) == rgba(cached[tile])
