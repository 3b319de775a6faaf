"""Export without servers: the three writers fed from a local directory store, read
back with the ``pmtiles`` package's reader and SQLite; atomic output; bad input.
(GDAL reads the MBTiles and GeoPackage files in tests/integration/test_export.py.)"""

from __future__ import annotations

import io
import os
import sqlite3
import sys
import threading
from pathlib import Path

import pytest
from PIL import Image
from pmtiles.reader import MmapSource, Reader
from pmtiles.reader import all_tiles as pmtiles_tiles
from pmtiles.tile import TileType

from s3maptiler.archives.common import ArchiveError
from s3maptiler.config import Layer
from s3maptiler.render.runtime import LayerRuntime
from s3maptiler.seeding import export as s_export
from s3maptiler.seeding.coverage import Coverage
from s3maptiler.seeding.plan import covered_tiles
from s3maptiler.storage.s3 import StoreError
from s3maptiler.storage.stores import LocalStore
from s3maptiler.tiles.grids import Tile

BBOX = (-74.02, 40.70, -73.95, 40.76)  # Manhattan


def png(colour: tuple[int, int, int], size: int = 256) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(out, "PNG")
    return out.getvalue()


def png_of(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def jpeg(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (256, 256), colour).save(out, "JPEG")
    return out.getvalue()


def fill_cache(root: Path, layer: Layer, zooms: range, bbox=BBOX, every: int = 1, tile=None):
    """Tiles of the area under the layer's keys; each ``every``-th one (others missing).
    Tiles are coloured by column (so rows repeat: dedup has work) unless ``tile`` says."""
    runtime = LayerRuntime.build(layer)
    stored: dict[Tile, bytes] = {}
    for z in zooms:
        for i, t in enumerate(covered_tiles(runtime, Coverage.from_bbox(bbox), z)):
            if i % every:
                continue
            data = tile(t) if tile else png(((t.x * 37) % 256, z * 10, 0))
            path = root / runtime.key_to_store(t, layer.extension)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            stored[t] = data
    return stored


def export(tmp_path: Path, layer: Layer, name: str, zooms=range(10, 14), bbox=BBOX, store=None):
    runtime = LayerRuntime.build(layer)
    request = s_export.ExportRequest(
        runtime,
        layer.extension,
        Coverage.from_bbox(bbox),
        list(zooms),
        layer.name,
        "a test",
        "© test",
    )
    target = tmp_path / name
    report = s_export.export_archive(
        request, store or LocalStore(tmp_path / "cache"), target, target.suffix
    )
    return target, report


def make_layer(**changes) -> Layer:
    values = dict(name="demo", wms_url="http://127.0.0.1:9/wms", wms_layers="demo")
    values.update(changes)
    return Layer(**values)


def test_pmtiles_reads_back_byte_equal_and_keeps_each_distinct_tile_once(tmp_path):
    layer = make_layer()
    stored = fill_cache(tmp_path / "cache", layer, range(10, 14))
    target, report = export(tmp_path, layer, "out.pmtiles")
    assert report.written == len(stored) and report.missing == 0
    with open(target, "rb") as f:
        source = MmapSource(f)
        reader = Reader(source)
        header = reader.header()
        assert (header["min_zoom"], header["max_zoom"]) == (10, 13)
        assert header["tile_type"] == TileType.PNG
        got = {Tile(x, y, z): data for (z, x, y), data in pmtiles_tiles(source)}
        metadata = reader.metadata()
    assert got == stored
    assert metadata["attribution"] == "© test" and metadata["format"] == "png"
    # Tiles of one column are identical: written once, so the archive is smaller
    # than the tiles' own bytes.
    assert header["tile_contents_count"] < header["addressed_tiles_count"] == len(stored)
    assert target.stat().st_size < report.tile_bytes
    west, south, east, north = (
        header[k] / 1e7 for k in ("min_lon_e7", "min_lat_e7", "max_lon_e7", "max_lat_e7")
    )
    assert west <= BBOX[0] < BBOX[2] <= east and south <= BBOX[1] < BBOX[3] <= north


def test_mbtiles_rows_are_tms_and_metadata_names_the_export(tmp_path):
    layer = make_layer()
    stored = fill_cache(tmp_path / "cache", layer, range(10, 14), every=3)
    target, report = export(tmp_path, layer, "out.mbtiles")
    assert report.written == len(stored) and report.missing > 0
    db = sqlite3.connect(target)
    rows = db.execute("SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles").fetchall()
    assert {Tile(x, 2**z - 1 - row, z): bytes(data) for z, x, row, data in rows} == stored
    metadata = dict(db.execute("SELECT name, value FROM metadata"))
    assert metadata["format"] == "png" and metadata["attribution"] == "© test"
    assert (metadata["minzoom"], metadata["maxzoom"]) == ("10", "13")
    assert metadata["name"] == "demo"


def test_mixed_tiles_say_so(tmp_path):
    layer = make_layer(format="mixed", formats=("mixed",))
    fill_cache(
        tmp_path / "cache",
        layer,
        range(12, 13),
        tile=lambda t: jpeg((0, 0, 200)) if t.x % 2 else png((0, 200, 0)),
    )
    target, report = export(tmp_path, layer, "out.pmtiles", zooms=range(12, 13))
    assert report.formats == {"png", "jpg"}
    with open(target, "rb") as f:
        reader = Reader(MmapSource(f))
        assert reader.header()["tile_type"] == TileType.UNKNOWN
        assert reader.metadata()["format"] == "mixed"


def test_geopackage_matrices_fit_an_epsg4326_grid(tmp_path):
    layer = make_layer(grid="EPSG:4326")
    stored = fill_cache(tmp_path / "cache", layer, range(9, 12))
    target, report = export(tmp_path, layer, "out.gpkg", zooms=range(9, 12))
    db = sqlite3.connect(target)
    assert db.execute("PRAGMA application_id").fetchone()[0] == 0x47504B47
    assert db.execute(
        "SELECT srs_id, min_x, min_y, max_x, max_y FROM gpkg_tile_matrix_set"
    ).fetchone() == (4326, -180.0, -90.0, 180.0, 90.0)
    matrices = db.execute(
        "SELECT zoom_level, matrix_width, matrix_height, pixel_x_size FROM gpkg_tile_matrix"
    ).fetchall()
    assert matrices == [(z, 2 ** (z + 1), 2**z, 0.703125 / 2**z) for z in range(9, 12)]
    rows = db.execute("SELECT zoom_level, tile_column, tile_row, tile_data FROM demo").fetchall()
    assert {Tile(x, y, z): bytes(d) for z, x, y, d in rows} == stored  # rows from the top
    west, south, east, north = db.execute(
        "SELECT min_x, min_y, max_x, max_y FROM gpkg_contents"
    ).fetchone()
    assert west <= BBOX[0] < BBOX[2] <= east and south <= BBOX[1] < BBOX[3] <= north


def test_mbtiles_and_pmtiles_refuse_a_grid_that_is_not_web_mercator(tmp_path):
    layer = make_layer(grid="EPSG:4326")
    fill_cache(tmp_path / "cache", layer, range(9, 10))
    for name in ("out.mbtiles", "out.pmtiles"):
        with pytest.raises(ArchiveError, match="Web Mercator"):
            export(tmp_path, layer, name, zooms=range(9, 10))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


class FailingStore(LocalStore):
    """Fails after some reads, as a bucket that goes away halfway."""

    def __init__(self, root: Path, after: int) -> None:
        super().__init__(root)
        self.left = after
        self.lock = threading.Lock()

    def get(self, key):
        with self.lock:
            self.left -= 1
            if self.left < 0:
                raise StoreError("the bucket went away")
        return super().get(key)


@pytest.mark.parametrize("name", ["out.pmtiles", "out.mbtiles", "out.gpkg"])
def test_a_failed_export_leaves_the_old_file_and_no_part(tmp_path, name):
    layer = make_layer()
    fill_cache(tmp_path / "cache", layer, range(10, 15))
    (tmp_path / name).write_bytes(b"the old archive")
    with pytest.raises(StoreError):
        export(
            tmp_path, layer, name, zooms=range(10, 15), store=FailingStore(tmp_path / "cache", 30)
        )
    assert (tmp_path / name).read_bytes() == b"the old archive"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", name]


def test_an_area_without_stored_tiles_writes_nothing(tmp_path):
    layer = make_layer()
    fill_cache(tmp_path / "cache", layer, range(10, 11))
    with pytest.raises(s_export.EmptyExport, match="no stored tile of layer demo"):
        export(tmp_path, layer, "out.gpkg", bbox=(2.2, 48.8, 2.4, 48.9))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


def test_the_file_gets_the_umask_mode_not_a_private_one(tmp_path):
    layer = make_layer()
    fill_cache(tmp_path / "cache", layer, range(10, 11))
    old = os.umask(0o022)
    try:
        target, _ = export(tmp_path, layer, "out.mbtiles", zooms=range(10, 11))
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == 0o644


# --- the command's bad input: one line, exit 2, nothing written --------------------


def run_cli(tmp_path: Path, *args: str, layers_file: Path | None = None):
    import subprocess

    env = {
        **os.environ,
        "LAYERS_FILE": str(layers_file or ""),
        "WMS_SERVER": "http://127.0.0.1:9/wms",
        "MAP_LAYERS": "demo",
        "LOCAL_CACHE_DIR": str(tmp_path / "cache"),
        "BUCKET_NAME": "",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    return subprocess.run(
        [sys.executable, "-m", "s3maptiler.cli", "export", *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bad_input_is_one_line_and_writes_nothing(tmp_path):
    layer = make_layer(name="default", prefix="tiles/")
    fill_cache(tmp_path / "cache", layer, range(10, 11))
    bbox = ",".join(map(str, BBOX))
    (tmp_path / "old.gpkg").write_bytes(b"keep me")
    cases = {
        ("nope", "out.pmtiles", "--zoom", "10"): "--layer nope: no such layer",
        ("default", "old.gpkg", "--zoom", "10", "--bbox", bbox): "old.gpkg exists; pass --force",
        ("default", "out.tif", "--zoom", "10"): "must end in one of .pmtiles, .mbtiles, .gpkg",
        ("default", "out.pmtiles", "--zoom", "10", "--bbox", "2.2,48.8,2.4,48.9"): "no stored tile",
        (
            "default",
            "out.pmtiles",
            "--zoom",
            "10",
            "--upload",
            "bucket/key",
        ): "expected s3://bucket/key",
    }
    for args, reason in cases.items():
        done = run_cli(tmp_path, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert reason in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "old.gpkg"]
    assert (tmp_path / "old.gpkg").read_bytes() == b"keep me"
    # A dry run writes nothing, so an existing output is no reason to refuse it.
    done = run_cli(tmp_path, "default", "old.gpkg", "--zoom", "10", "--bbox", bbox, "--dry-run")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "old.gpkg").read_bytes() == b"keep me"
    done = run_cli(tmp_path, "default", "old.gpkg", "--zoom", "10", "--bbox", bbox, "--force")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "old.gpkg").read_bytes().startswith(b"SQLite format 3")


# --- zooms answered from a PMTiles archive -------------------------------------------

BUCKET = "archive-tiles"


def archive_service(tmp_path: Path, store, archive: str, zooms=(10, 12)):
    from s3maptiler.config import Settings
    from s3maptiler.render.wms import WMSClient
    from s3maptiler.service.tilepath import TileService
    from s3maptiler.storage.uploads import UploadPool

    layer = make_layer(pmtiles=archive, pmtiles_zooms=zooms, prefix="tiles/")
    settings = Settings(layers=(layer,), local_cache_dir=tmp_path / "cache", log_level="WARNING")
    wms = WMSClient(retries=0)  # port 9: any GetMap fails, so a render would show
    service = TileService(settings, store, wms, UploadPool(store, workers=1))
    return service, LayerRuntime.build(layer)


def test_the_service_answers_archived_zooms_from_a_local_archive(tmp_path):
    from s3maptiler.render.errors import WMSError

    layer = make_layer()
    stored = fill_cache(tmp_path / "src", layer, range(10, 14))
    export(tmp_path, layer, "demo.pmtiles", store=LocalStore(tmp_path / "src"))
    (tmp_path / "cache").mkdir()
    service, runtime = archive_service(
        tmp_path, LocalStore(tmp_path / "cache"), str(tmp_path / "demo.pmtiles")
    )
    for tile, data in stored.items():
        if tile.z <= 12:
            result = service.get(service.addresses.resolve(runtime.key_of(tile, "png")))
            assert (result.source, result.data, result.content_type) == (
                "archive",
                data,
                "image/png",
            )
    # Another format of an archived zoom is not the archive's: drawn (the WMS fails).
    archived = next(tile for tile in stored if tile.z == 12)
    with pytest.raises(WMSError):
        service.get(service.addresses.resolve(runtime.key_of(archived, "jpg")))
    # In the archive, but not among the archived zooms: drawn as ever (and the WMS fails).
    finest = next(tile for tile in stored if tile.z == 13)
    with pytest.raises(WMSError):
        service.get(service.addresses.resolve(runtime.key_of(finest, "png")))
    assert not any((tmp_path / "cache").iterdir())  # archive tiles are not stored again


def test_archived_zooms_from_the_bucket_cost_one_ranged_get_per_tile(tmp_path, s3):
    from s3maptiler.storage.stores import S3Store
    from tests.unit.conftest import count_calls

    layer = make_layer()
    noise = lambda _t: png_of(Image.frombytes("RGB", (256, 256), os.urandom(256 * 256 * 3)))  # noqa: E731
    stored = fill_cache(tmp_path / "src", layer, range(10, 13), tile=noise)  # past 16 KiB
    target, _ = export(
        tmp_path, layer, "demo.pmtiles", zooms=range(10, 13), store=LocalStore(tmp_path / "src")
    )
    s3.upload_file(str(target), BUCKET, "archives/demo.pmtiles")
    service, runtime = archive_service(tmp_path, S3Store(BUCKET, s3), "archives/demo.pmtiles")
    calls = count_calls(s3)
    tiles = sorted(stored)
    for tile in tiles:
        result = service.get(service.addresses.resolve(runtime.key_of(tile, "png")))
        assert (result.source, result.data) == ("archive", stored[tile])
    # The header and root directory once, then one ranged GetObject per tile.
    assert calls == {"GetObject": len(tiles) + 1}


def test_the_layers_file_checks_the_archive_keys(tmp_path):
    from s3maptiler.config.layersfile import load_layers_file
    from s3maptiler.config.model import ConfigError

    def load(keys: str):
        path = tmp_path / "layers.toml"
        path.write_text(
            f'wms_url = "http://127.0.0.1:9/wms"\n[layers.demo]\nwms_layers = "a"\n{keys}\n'
        )
        return load_layers_file(path)

    layer = load('pmtiles = "archives/demo.pmtiles"\npmtiles_zooms = [14, 16]')[0]
    assert (layer.pmtiles, layer.pmtiles_zooms) == ("archives/demo.pmtiles", (14, 16))
    bad = {
        'pmtiles = "archives/demo.pmtiles"': "keys 'pmtiles' and 'pmtiles_zooms' go together",
        'pmtiles = "demo.mbtiles"\npmtiles_zooms = [1, 2]': "the name of a .pmtiles archive",
        'pmtiles = "s3://demo.pmtiles"\npmtiles_zooms = [1, 2]': "expected s3://bucket/key.pmtiles",
        'pmtiles = "a.pmtiles"\npmtiles_zooms = [5, 2]': "lowest first",
        'pmtiles = "a.pmtiles"\npmtiles_zooms = [1, 2]\ngrid = "EPSG:4326"': "GoogleMapsCompatible",
    }
    for keys, reason in bad.items():
        with pytest.raises(ConfigError, match=reason):
            load(keys)


def test_dimension_picks_the_values_keys_and_one_value_per_archive(tmp_path):
    layers = tmp_path / "layers.toml"
    layers.write_text(
        'wms_url = "http://127.0.0.1:9/wms"\n[layers.months]\nwms_layers = "a"\n'
        'prefix = "months/"\n[layers.months.dimensions.time]\n'
        'values = "2024-01-01/2024-03-01/P1M"\ndefault = "2024-03-01"\n'
    )
    layer = make_layer(name="months", prefix="months/2024-02-01/")  # that value's keys
    stored = fill_cache(tmp_path / "cache", layer, range(10, 12))
    fill_cache(
        tmp_path / "cache",
        make_layer(prefix="months/"),
        range(10, 12),
        tile=lambda t: png((1, 2, 3)),
    )
    bbox = ",".join(map(str, BBOX))
    base = ("months", "--zoom", "10-11", "--bbox", bbox)
    done = run_cli(
        tmp_path,
        *base[:1],
        "feb.pmtiles",
        *base[1:],
        "--dimension",
        "time=2024-02-01",
        layers_file=layers,
    )
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "feb.pmtiles", "rb") as f:
        got = {Tile(x, y, z): data for (z, x, y), data in pmtiles_tiles(MmapSource(f))}
    assert got == stored
    done = run_cli(
        tmp_path,
        *base[:1],
        "two.pmtiles",
        *base[1:],
        "--dimension",
        "time=2024-01-01/2024-02-01",
        layers_file=layers,
    )
    assert done.returncode == 2 and "one value of each dimension" in done.stderr


def test_archived_zooms_answer_over_http_as_the_preview_asks(tmp_path):
    from s3maptiler.http.app import create_app

    layer = make_layer()
    stored = fill_cache(tmp_path / "src", layer, range(11, 12))
    (tmp_path / "cache" / "archives").mkdir(parents=True)
    export(
        tmp_path / "cache" / "archives",
        layer,
        "demo.pmtiles",
        zooms=range(11, 12),
        store=LocalStore(tmp_path / "src"),
    )
    # A name relative to the local store, as a key in the bucket would be.
    service, runtime = archive_service(
        tmp_path, LocalStore(tmp_path / "cache"), "archives/demo.pmtiles", zooms=(11, 11)
    )
    client = create_app(service.settings, service).test_client()
    tile, data = next(iter(stored.items()))
    answer = client.get("/" + runtime.key_of(tile, "png"))
    assert answer.status_code == 200 and answer.data == data
    assert answer.headers["X-Tile-Source"] == "archive"
    assert answer.headers["Content-Type"] == "image/png"
    # A name that cannot be read is logged, and the tile drawn instead (the WMS fails).
    broken, _ = archive_service(tmp_path, LocalStore(tmp_path / "cache"), "../x.pmtiles")
    assert broken.archived.tile(broken.settings.layers[0], tile) is None


def test_upload_is_multipart_above_the_part_size_with_the_archive_content_type(
    tmp_path, s3, monkeypatch
):
    from s3maptiler.cli import context
    from s3maptiler.cli import export as cli_export
    from s3maptiler.config import load_command_settings

    monkeypatch.setattr(cli_export, "PART_SIZE", 5 * 1024 * 1024)  # S3's smallest part
    archive = tmp_path / "big.gpkg"
    archive.write_bytes(os.urandom(11 * 1024 * 1024))
    env = load_command_settings({"AWS_REGION": "us-east-1"}, dotenv_path=None)
    cli_export._upload(env, context.S3Place(None, None), archive, ".gpkg", BUCKET, "a/big.gpkg")
    head = s3.head_object(Bucket=BUCKET, Key="a/big.gpkg")
    assert head["ContentType"] == "application/geopackage+sqlite3"
    assert head["ETag"].endswith('-3"')  # three parts: S3's ETag of a multipart upload
    assert head["ContentLength"] == archive.stat().st_size


@pytest.mark.parametrize("grid", ["GoogleMapsCompatible", "EPSG:4326"])
def test_a_box_skips_the_geometry_test_inside_and_covers_the_same_tiles(grid):
    from s3maptiler.seeding.coverage import tile_touches
    from s3maptiler.tiles.tilemath import lonlat_to_tile, tile_lonlat_bounds

    runtime = LayerRuntime.build(make_layer(grid=grid))
    edge = tile_lonlat_bounds(runtime.grid, Tile(300, 380, 10))  # edges on tile edges
    boxes = [BBOX, (-74.3, 40.45, -73.65, 40.95), tuple(edge), (170.0, -1.0, 180.0, 1.0)]
    for bbox in boxes:
        coverage = Coverage.from_bbox(bbox)
        assert coverage.is_box
        for z in (3, 10, 12):
            west, south, east, north = coverage.bounds
            a, b = (
                lonlat_to_tile(runtime.grid, west, north, z),
                lonlat_to_tile(runtime.grid, east, south, z),
            )
            every = [
                Tile(x, y, z)
                for y in range(a.y, b.y + 1)
                for x in range(a.x, b.x + 1)
                if tile_touches(coverage, tile_lonlat_bounds(runtime.grid, Tile(x, y, z)))
            ]
            assert list(covered_tiles(runtime, coverage, z)) == every, (bbox, z)
    ring = ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 2.0))
    assert not Coverage(((ring,),)).is_box
