"""``s3maptiler upload``: a tile cache directory (ArcGIS exploded cache, TMS/XYZ tree)
into the bucket, with the MapServer JSON of an ArcGIS cache beside it."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
from botocore.exceptions import BotoCoreError, ClientError

from s3maptiler.bucket import source as sources
from s3maptiler.bucket import upload as bulk
from s3maptiler.bucket.publish import Document, publish
from s3maptiler.cli import console, context, errors
from s3maptiler.config import Layer
from s3maptiler.documents.arcgis import cache_mapserver, json_document
from s3maptiler.documents.paths import arcgis_service_path
from s3maptiler.storage.s3 import ListingFailed
from s3maptiler.tiles.layouts import LAYOUTS, LayoutError, get_layout

log = logging.getLogger(__name__)


@click.command()
@click.argument("source", type=click.Path(file_okay=False, path_type=Path))
@context.s3_options
@click.option("--prefix", metavar="PREFIX", help="Key prefix (default: the layer's, TILE_PREFIX).")
@click.option("--layer", "layer_name", metavar="NAME", help="A configured layer to upload to.")
@click.option(
    "--layout-from",
    type=click.Choice(sorted(LAYOUTS)),
    help="Layout of the directory (default: arcgis when L00.. folders exist, else the layer's).",
)
@click.option(
    "--layout-to",
    type=click.Choice(sorted(LAYOUTS)),
    help="Layout of the keys (default: the layer's, tms unless configured).",
)
@click.option("--grid", "grid_name", metavar="NAME", help="Tile grid (default: the layer's).")
@click.option("--cache-control", metavar="VALUE", help="Cache-Control of every object.")
@click.option("--acl", metavar="CANNED", help="Canned ACL, e.g. public-read (default: none).")
@click.option("--workers", default=32, show_default=True, type=click.IntRange(1, 512))
@click.option("--retries", default=4, show_default=True, type=click.IntRange(0, 20))
@click.option("--dry-run", is_flag=True, help="List and compare, upload nothing.")
@click.pass_context
def upload(
    ctx: click.Context,
    source: Path,
    s3: context.S3Place,
    prefix: str | None,
    layer_name: str | None,
    layout_from: str | None,
    layout_to: str | None,
    grid_name: str | None,
    cache_control: str | None,
    acl: str | None,
    workers: int,
    retries: int,
    dry_run: bool,
) -> None:
    """Upload a tile cache directory (ArcGIS exploded cache, TMS/XYZ z/x/y tree) to S3.

    Objects already in the bucket with the same size and MD5 are skipped. With an
    ArcGIS conf.xml beside the tiles and ArcGIS keys, the matching MapServer JSON is
    published at arcgis/rest/services/<name>/MapServer.
    """
    target = context.layer_target(ctx, s3, layer_name, prefix)
    env, layer, name, key_prefix = target.env, target.layer, target.bucket, target.prefix
    grid = context.grid_for(grid_name, layer)
    try:
        tree = sources.find_source(source)
        source_layout = get_layout(
            layout_from or sources.detect_layout(tree.tile_root) or layer.layout
        )
        target_layout = get_layout(layout_to or layer.layout)
        walk = sources.walk_tiles(tree.tile_root, source_layout, grid, key_prefix, target_layout)
    except (sources.SourceError, LayoutError) as err:
        raise errors.ConfigProblem(str(err)) from None
    if not walk.tiles:
        raise errors.ConfigProblem(
            f"no {source_layout.name} tiles of grid {grid.name} under {tree.tile_root} "
            f"({len(walk.ignored)} other files)"
        )
    headline = (
        f"{'dry run: ' if dry_run else ''}{len(walk.tiles)} tiles "
        f"({source_layout.name} -> {target_layout.name}) from {tree.tile_root} "
        f"to s3://{name}/{key_prefix}"
    )
    click.echo(headline, err=True)
    if dry_run:
        for tile in walk.tiles[:3]:
            click.echo(f"  {tile.path.relative_to(tree.tile_root)} -> {tile.key}", err=True)

    client = context.s3_client(env, s3.endpoint_url, pool=workers, attempts=1)
    try:
        existing = bulk.list_existing(client, name, key_prefix)
    except ListingFailed as err:
        raise errors.Failed(str(err)) from None
    options = bulk.UploadOptions(
        cache_control=layer.cache_control if cache_control is None else cache_control or None,
        acl=acl,
        workers=workers,
        retries=retries,
        dry_run=dry_run,
    )
    with console.progress_bar(len(walk.tiles), "upload") as bar:
        report = bulk.upload_tiles(
            client, name, walk.tiles, existing, options, on_progress=lambda _: bar.update()
        )
    report.ignored = len(walk.ignored)

    published, publish_ok = _publish_mapserver(
        client, name, tree, layer, layer_name, target_layout, options
    )
    verb = "to upload" if dry_run else "uploaded"
    click.echo(
        f"upload{' (dry run)' if dry_run else ''} s3://{name}/{key_prefix}: "
        f"{report.uploaded} {verb} ({console.size_text(report.bytes_uploaded)}), "
        f"{report.skipped} skipped (unchanged), {report.failed} failed, "
        f"{report.ignored} ignored (not tiles), {published}"
        f"in {report.elapsed:.2f} s "
        f"({console.per_second(report.uploaded + report.skipped, report.elapsed)} tiles/s)"
    )
    console.show_failures(report.failures)
    if report.failed or not publish_ok:
        ctx.exit(errors.EXIT_FAILED)


def _publish_mapserver(
    client: Any,
    bucket: str,
    tree: sources.SourceTree,
    layer: Layer,
    layer_name: str | None,
    target: Any,
    options: bulk.UploadOptions,
) -> tuple[str, bool]:
    """Publish the MapServer JSON of an ArcGIS cache: (summary fragment, succeeded)."""
    if tree.conf_xml is None:
        return "", True
    if target.name != "arcgis":
        log.warning("conf.xml found, but keys are %s: no MapServer JSON published", target.name)
        return "", True
    try:
        info = sources.read_conf_xml(tree.conf_xml)
        extent = sources.read_conf_cdi(tree.conf_xml.with_name("conf.cdi"))
    except sources.ConfXmlError as err:
        log.warning("%s", err)
        return "MapServer JSON failed (bad conf.xml), ", False
    # Where `s3maptiler publish` puts a layer's MapServer document, named after
    # the layer asked for, else after the cache folder.
    service = replace(layer, name=layer_name or tree.name)
    key = arcgis_service_path(service)
    body, content_type = json_document(cache_mapserver(info, service.name, extent))
    if options.dry_run:
        return f"MapServer JSON to publish at {key}, ", True
    try:  # as `s3maptiler publish` writes every document: skipped when unchanged
        publish(client, bucket, [Document(key, body, content_type)])
    except (ClientError, BotoCoreError) as err:
        log.warning("MapServer JSON not published at %s: %s", key, bulk.describe_error(err))
        return "MapServer JSON failed, ", False
    return f"MapServer JSON at {key}, ", True
