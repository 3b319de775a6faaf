"""``s3maptiler purge``: delete a layer's tiles by zoom range and area."""

from __future__ import annotations

import sys

import click

from s3maptiler.bucket import purge
from s3maptiler.cli import console, context, errors
from s3maptiler.cli import dimensions as dimension_option
from s3maptiler.tiles.dimensions import values_path
from s3maptiler.tiles.layouts import LAYOUTS, LayoutError, get_layout


@click.command("purge")
@context.s3_options
@click.option("--prefix", metavar="PREFIX", help="Key prefix (default: the layer's, TILE_PREFIX).")
@click.option("--layer", "layer_name", metavar="NAME", help="A configured layer to purge.")
@click.option("--layout", "layout_name", type=click.Choice(sorted(LAYOUTS)), help="Key layout.")
@dimension_option.option
@click.option("--grid", "grid_name", metavar="NAME", help="Tile grid (default: the layer's).")
@click.option("--min-zoom", type=click.IntRange(0), default=0, show_default=True)
@click.option("--max-zoom", type=click.IntRange(0), help="Default: the grid's last level.")
@click.option("--bbox", metavar="W,S,E,N", help="Only tiles overlapping this lon/lat box.")
@click.option("--workers", default=4, show_default=True, type=click.IntRange(1, 64))
@click.option("--dry-run", is_flag=True, help="Count the tiles; delete nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before deleting.")
@click.pass_context
def purge_command(
    ctx: click.Context,
    s3: context.S3Place,
    prefix: str | None,
    layer_name: str | None,
    layout_name: str | None,
    dimensions: tuple[str, ...],
    grid_name: str | None,
    min_zoom: int,
    max_zoom: int | None,
    bbox: str | None,
    workers: int,
    dry_run: bool,
    yes: bool,
) -> None:
    """Delete a layer's tiles by zoom range and area (DeleteObjects, 1000 keys a call).

    With --dimension, the tiles of those values (under PREFIX<value>/); without, a
    layer with dimensions keeps every value's tiles and loses its dimension-less ones.
    """
    target = context.layer_target(ctx, s3, layer_name, prefix)
    env, layer, name, key_prefix = target.env, target.layer, target.bucket, target.prefix
    combinations = dimension_option.chosen(layer, dimensions)
    try:
        selection = purge.TileSelection(
            layout=get_layout(layout_name or layer.layout),
            grid=context.grid_for(grid_name, layer),
            min_zoom=min_zoom,
            max_zoom=max_zoom,
            bbox=None if bbox is None else context.parse_bbox(bbox),
            pixel_ratio=layer.pixel_ratio if layer.pixel_ratio != 1 else None,
        )
    except (purge.InvalidSelection, LayoutError) as err:
        raise errors.ConfigProblem(str(err)) from None
    client = context.s3_client(env, s3.endpoint_url, pool=workers + 1, attempts=5)
    found = purge.TilesFound()
    with console.progress_bar(None, "list", unit="key") as bar:
        for values in combinations:
            value_prefix = key_prefix + values_path([value for _, value in values])
            try:
                found.add(
                    purge.find_tiles(client, name, value_prefix, selection, on_listed=bar.update)
                )
            except purge.ListingFailed as err:
                raise errors.Failed(str(err)) from None
    where = (
        f"s3://{name}/{key_prefix}{dimension_option.describe(combinations)}"
        f" zoom {selection.min_zoom}-{selection.max_zoom}"
        + (f" bbox {','.join(f'{v:g}' for v in selection.bbox)}" if selection.bbox else "")
    )
    outside = found.listed - found.ignored - len(found.keys)
    tail = f"{outside} outside the selection, {found.ignored} not tiles (kept)"
    if dry_run:
        click.echo(
            f"purge (dry run) {where}: {len(found.keys)} tiles to delete, {tail}; "
            f"listed {found.listed} in {found.elapsed:.2f} s"
        )
        return
    if found.keys and not yes:
        if not sys.stdin.isatty():
            raise errors.ConfigProblem(f"refusing to delete {len(found.keys)} tiles without --yes")
        click.confirm(f"Delete {len(found.keys)} tiles from {where}?", abort=True)
    with console.progress_bar(len(found.keys), "delete") as bar:
        report = purge.delete_keys(client, name, found.keys, workers=workers, on_deleted=bar.update)
    click.echo(
        f"purge {where}: {report.deleted} deleted, {report.failed} failed, {tail}, "
        f"in {report.elapsed:.2f} s ({console.per_second(report.deleted, report.elapsed)} tiles/s, "
        f"{report.batches} batches)"
    )
    console.show_failures(report.failures)
    if report.failed:
        ctx.exit(errors.EXIT_FAILED)
