"""``s3maptiler export``: a layer's cache as one file, ``.pmtiles``, ``.mbtiles`` or
``.gpkg`` (:mod:`s3maptiler.seeding.export`, :mod:`s3maptiler.archives`).

The tiles are read from the layer's own store (``--bucket`` / BUCKET_NAME, else the
service's local directory); ``--fill`` first draws the missing ones as ``seed
--skip-existing`` would. The file appears under its name only when complete;
``--upload s3://bucket/key`` then sends it (multipart for large files).
"""

from __future__ import annotations

import math
from pathlib import Path

import click
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from s3maptiler.archives.common import ARCHIVE_KINDS, ArchiveError, archive_kind
from s3maptiler.cli import console, context, costs, errors
from s3maptiler.cli import dimensions as dimension_option
from s3maptiler.cli.costs import print_costs
from s3maptiler.cli.seed import area_of, zoom_levels
from s3maptiler.config import Settings
from s3maptiler.render.runtime import LayerRuntime
from s3maptiler.seeding.cost import Prices, SizeSampler, plan_costs
from s3maptiler.seeding.coverage import Coverage
from s3maptiler.seeding.export import (
    EmptyExport,
    ExportInterrupted,
    ExportRequest,
    export_archive,
)
from s3maptiler.seeding.plan import (
    MetaJob,
    candidate_count,
    job_runtime,
    plan_jobs,
    tile_count,
)
from s3maptiler.seeding.run import SeedOptions, run_seed
from s3maptiler.service.build import wms_client
from s3maptiler.storage.s3 import StoreError
from s3maptiler.storage.stores import TileStore
from s3maptiler.tiles.grids import Tile
from s3maptiler.tiles.tilemath import tile_lonlat_bounds

# Parts of a multipart upload: 16 MiB (S3 allows 10,000 parts: archives up to 160 GB).
PART_SIZE = 16 * 1024 * 1024


def _area(runtime: LayerRuntime, bbox: str | None, geojson: Path | None) -> Coverage:
    """The --bbox or --geojson area; without either, the layer's extent (else its grid's)."""
    if bbox is not None or geojson is not None:
        return area_of(bbox, geojson)
    extent = runtime.layer.extent
    if extent is None:
        grid = runtime.grid
        cols, rows = grid.matrix_size(0)
        first = tile_lonlat_bounds(grid, Tile(0, 0, 0))
        last = tile_lonlat_bounds(grid, Tile(cols - 1, rows - 1, 0))
        extent = (first.left, last.bottom, last.right, first.top)
    coverage = Coverage.from_bbox(extent)
    return Coverage(coverage.polygons, f"the extent of layer {runtime.layer.name}")


def _upload_target(value: str) -> tuple[str, str]:
    bucket, _, key = value.removeprefix("s3://").partition("/")
    if not value.startswith("s3://") or not bucket or not key or key.endswith("/"):
        raise errors.ConfigProblem(f"--upload {value!r}: expected s3://bucket/key")
    return bucket, key


@click.command("export")
@context.s3_options
@click.argument("layer_name", metavar="LAYER")
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--zoom", required=True, metavar="Z|LOW-HIGH", help="Zoom level or range.")
@click.option("--bbox", metavar="W,S,E,N", help="Area in decimal degrees (default: the layer's).")
@click.option(
    "--geojson",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Area: a GeoJSON (Multi)Polygon, Feature or FeatureCollection in lon/lat.",
)
@click.option("--format", "ext", metavar="EXT", help="Tile extension (default: the layer's).")
@dimension_option.option
@click.option("--fill", is_flag=True, help="Draw the missing tiles first (as seed does).")
@click.option("--concurrency", default=4, show_default=True, type=click.IntRange(1, 64))
@click.option("--attribution", default="", help="Attribution text in the archive's metadata.")
@click.option("--upload", metavar="s3://BUCKET/KEY", help="Then upload the file there.")
@click.option("--force", is_flag=True, help="Replace an existing OUTPUT.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Counts and costs per zoom; write nothing (reads a few tiles to size them).",
)
@costs.price_options
@click.pass_context
def export_command(
    ctx: click.Context,
    s3: context.S3Place,
    layer_name: str,
    output: Path,
    zoom: str,
    bbox: str | None,
    geojson: Path | None,
    ext: str | None,
    dimensions: tuple[str, ...],
    fill: bool,
    concurrency: int,
    attribution: str,
    upload: str | None,
    force: bool,
    dry_run: bool,
    prices: Prices,
) -> None:
    """Write the stored tiles of LAYER over an area and zoom range to OUTPUT, a
    .pmtiles, .mbtiles or .gpkg file. Missing tiles are left out (or drawn first
    with --fill); exit 2 when no tile is stored there."""
    env = context.environment(ctx)
    settings = context.settings_of(env)
    try:
        kind = archive_kind(output)
    except ArchiveError as err:
        raise errors.ConfigProblem(str(err)) from None
    base = LayerRuntime.build(context.layer_of(env, layer_name))
    zooms = zoom_levels(zoom, base)
    coverage = _area(base, bbox, geojson)
    ext = (ext or base.layer.extension).lower()
    if ext not in base.sources:
        raise errors.ConfigProblem(
            f"--format {ext}: layer {base.layer.name} serves {base.layer.formats}"
        )
    combinations = dimension_option.chosen(base.layer, dimensions)
    if len(combinations) != 1:
        raise errors.ConfigProblem("--dimension: an archive holds one value of each dimension")
    values = combinations[0]
    runtime = job_runtime(base, MetaJob(base.layer.name, ext, zooms[0], 0, 0, (), values))
    if output.exists() and not force and not dry_run:  # a dry run writes nothing
        raise errors.ConfigProblem(f"{output} exists; pass --force to replace it")
    if not output.parent.is_dir():
        raise errors.ConfigProblem(f"{output}: no directory {output.parent}")
    target = _upload_target(upload) if upload else None
    store = context.tile_store(env, settings, s3, concurrency + 2, conditional=fill)
    if dry_run:
        _print_costs(runtime, ext, coverage, zooms, store, fill, upload, prices)
        return
    if fill:
        _fill(settings, base, coverage, zooms, ext, values, store, concurrency)
    what = dimension_option.describe(combinations)
    request = ExportRequest(
        runtime,
        ext,
        coverage,
        zooms,
        name=base.layer.name,
        description=f"{base.layer.title or base.layer.name}{what}, z{zooms[0]}-{zooms[-1]}, "
        f"{coverage.description}",
        attribution=attribution,
    )
    total = sum(candidate_count(runtime, coverage, z) for z in zooms)
    workers = concurrency if store.location.startswith("s3://") else 1
    try:
        with console.stop_on_signals() as stop, console.progress_bar(total, "export") as bar:
            report = export_archive(request, store, output, kind, workers, bar.update, stop)
    except (ArchiveError, EmptyExport) as err:
        raise errors.ConfigProblem(str(err)) from None
    except ExportInterrupted as err:
        raise errors.Failed(str(err)) from None
    except StoreError as err:
        raise errors.Failed(f"reading {store.location}: {err}") from None
    size = output.stat().st_size
    click.echo(
        f"export {base.layer.name}{what} .{ext} z{zooms[0]}-{zooms[-1]} to {output}: "
        f"{report.written} tiles ({console.size_text(report.tile_bytes)} of tiles, "
        f"{console.size_text(size)} file), {report.missing} missing, {report.ignored} outside "
        f"the extent; {report.elapsed:.2f} s "
        f"({console.per_second(report.written, report.elapsed)} tiles/s)"
    )
    if target is not None:
        _upload(env, s3, output, kind, *target)


def _print_costs(
    runtime: LayerRuntime,
    ext: str,
    coverage: Coverage,
    zooms: list[int],
    store: TileStore,
    fill: bool,
    upload: str | None,
    prices: Prices,
) -> None:
    sampler = SizeSampler(runtime, ext, coverage, store)
    plan = plan_costs(runtime, ext, coverage, zooms, sampler, seed=fill, read=True)
    notes = ["a GET per covered tile, stored or not; tiles written once each"]
    if fill:
        notes.append("--fill draws only missing tiles: GetMaps and PUTs are at most these")
    size = plan.expected_bytes
    if upload and size is not None:
        parts = math.ceil(size / PART_SIZE)
        plan.extra_puts = 1 if parts <= 1 else parts + 2  # create, parts, complete
    elif upload:
        notes.append("the upload's PUTs are unknown (no size)")
    print_costs(plan, prices, "; ".join(notes))


def _fill(
    settings: Settings,
    base: LayerRuntime,
    coverage: Coverage,
    zooms: list[int],
    ext: str,
    values: tuple[tuple[str, str], ...],
    store: TileStore,
    concurrency: int,
) -> None:
    """Draw the covered tiles the store lacks, through the seed's render pipeline."""
    jobs = list(plan_jobs(base, coverage, zooms, ext, values))
    options = SeedOptions(concurrency, None, skip_existing=True)
    wms = wms_client(settings, concurrency)
    try:
        total = sum(tile_count(base, job) for job in jobs)
        with console.stop_on_signals() as stop, console.progress_bar(total, "fill") as bar:
            report = run_seed(
                {base.layer.name: base}, jobs, wms, store, options, None, None, stop, bar.update
            )
    finally:
        wms.close()
    click.echo(
        f"fill: {report.done} tiles drawn, {report.skipped} already stored, {report.failed} "
        f"failed; {report.wms_requests} WMS requests",
        err=True,
    )
    console.show_failures(report.failures)
    if report.failed or report.interrupted:
        raise errors.Failed("--fill did not draw every missing tile; nothing exported")


def _upload(
    env: context.Environment, s3: context.S3Place, path: Path, kind: str, bucket: str, key: str
) -> None:
    client = context.s3_client(env, s3.endpoint_url, pool=8)
    config = TransferConfig(multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE)
    content_type = ARCHIVE_KINDS[kind]
    try:
        client.upload_file(
            str(path), bucket, key, ExtraArgs={"ContentType": content_type}, Config=config
        )
    except (ClientError, BotoCoreError) as err:
        raise errors.Failed(f"upload to s3://{bucket}/{key}: {err}") from None
    click.echo(f"uploaded {path} to s3://{bucket}/{key} ({content_type})")
