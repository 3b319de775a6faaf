"""``s3maptiler seed``: fill a layer's cache ahead of time.

``seed`` draws the metatiles of an area and zoom range on this machine
(:mod:`s3maptiler.seeding.run`), or with ``--queue`` sends them to an SQS queue that
``s3maptiler worker`` (:mod:`s3maptiler.cli.worker`) or an Elastic Beanstalk worker
environment (``POST /tasks/seed``) consumes (:mod:`s3maptiler.seeding.sqs`).

Files under ``var/seed/`` unless named: the journal (metatiles done; a rerun of the
same command resumes from it, and it is removed once a run completes without
failures) and the failures file (failed metatiles of the last run; replay them with
``--retry-failed FILE``).

About 420 lines in one module on purpose: it is the one command with many options
(area, zooms, layers, pixel ratios, dimensions, refresh age, queue), and each option's
checking sits beside the option, as in the other commands.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from s3maptiler.cli import console, context, costs, errors
from s3maptiler.cli import dimensions as dimension_option
from s3maptiler.cli.costs import print_costs
from s3maptiler.config import Settings
from s3maptiler.render.errors import WMSError
from s3maptiler.render.runtime import LayerRuntime
from s3maptiler.seeding import sqs as sqs_jobs
from s3maptiler.seeding.cost import Prices, SizeSampler, plan_costs
from s3maptiler.seeding.coverage import Coverage, CoverageError, SeedError, load_geojson
from s3maptiler.seeding.journal import (
    FailureLog,
    Journal,
    JournalMismatch,
    plan_signature,
    read_failures,
)
from s3maptiler.seeding.plan import MetaJob, plan_jobs, tile_count
from s3maptiler.seeding.run import SeedOptions, estimate, run_seed
from s3maptiler.service.build import wms_client

log = logging.getLogger(__name__)

SEED_DIR = Path("var/seed")


# --- shared helpers -----------------------------------------------------------------


def _runtime(env: context.Environment, layer_name: str | None) -> LayerRuntime:
    context.settings_of(env)  # a layer needs settings: a clear error without them
    return LayerRuntime.build(context.layer_of(env, layer_name))


def zoom_levels(value: str, runtime: LayerRuntime) -> list[int]:
    low, _, high = value.partition("-")
    try:
        first, last = int(low), int(high or low)
    except ValueError:
        raise errors.ConfigProblem(
            f"--zoom {value!r}: expected a level (12) or a range (0-14)"
        ) from None
    layer = runtime.layer
    lowest, highest = layer.min_zoom, min(layer.max_zoom, runtime.grid.max_zoom)
    if not lowest <= first <= last <= highest:
        raise errors.ConfigProblem(
            f"--zoom {value}: layer {layer.name} has levels {lowest}..{highest} (low-high)"
        )
    return list(range(first, last + 1))


def area_of(bbox: str | None, geojson: Path | None) -> Coverage:
    if (bbox is None) == (geojson is None):
        raise errors.ConfigProblem("give the area with exactly one of --bbox or --geojson")
    try:
        if bbox is not None:
            return Coverage.from_bbox(context.parse_bbox(bbox))
        try:
            document = json.loads(Path(geojson).read_text(encoding="utf-8"))
        except OSError as err:
            raise errors.ConfigProblem(f"--geojson {geojson}: {err.strerror}") from None
        except ValueError as err:
            raise errors.ConfigProblem(f"--geojson {geojson}: not JSON ({err})") from None
        return load_geojson(document, f"--geojson {geojson}")
    except CoverageError as err:
        raise errors.ConfigProblem(str(err)) from None


_AGE_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhdw])")
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def refresh_cutoff(value: str, now: float) -> float:
    """Seconds since the epoch before which stored tiles are drawn again: ``now`` less
    an age (``90s``, ``30m``, ``12h``, ``7d``, ``2w``), or an ISO 8601 date or time
    (UTC unless it names another offset). ConfigProblem for anything else, or a
    moment in the future.

    >>> refresh_cutoff("2h", 10_000.0), refresh_cutoff("1970-01-01T01:00:00Z", 10_000.0)
    (2800.0, 3600.0)
    """
    text = value.strip()
    match = _AGE_RE.fullmatch(text.lower())
    if match is not None:
        return now - float(match[1]) * _AGE_UNITS[match[2]]
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise errors.ConfigProblem(
            f"--refresh-older-than {value[:40]!r}: expected an age (30m, 12h, 7d, 2w) "
            "or a date (2025-05-01T12:00:00Z)"
        ) from None
    cutoff = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    if cutoff > now:
        raise errors.ConfigProblem(f"--refresh-older-than {value[:40]!r} is in the future")
    return cutoff


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@click.command("seed")
@context.s3_options
@click.option("--layer", "layer_name", metavar="NAME", help="A configured layer to seed.")
@click.option("--format", "ext", metavar="EXT", help="Tile extension (default: the layer's).")
@dimension_option.option
@click.option("--zoom", metavar="Z|LOW-HIGH", help="Zoom level or range, e.g. 12 or 0-14.")
@click.option("--bbox", metavar="W,S,E,N", help="Area in decimal degrees (lon/lat).")
@click.option(
    "--geojson",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Area: a GeoJSON (Multi)Polygon, Feature or FeatureCollection in lon/lat.",
)
@click.option("--concurrency", default=4, show_default=True, type=click.IntRange(1, 256))
@click.option(
    "--wms-rate", type=click.FloatRange(0, min_open=True), help="Cap on GetMaps per second."
)
@click.option(
    "--skip-existing", is_flag=True, help="Leave stored tiles alone (one listing per folder)."
)
@click.option(
    "--refresh-older-than",
    "refresh_age",
    metavar="AGE|DATE",
    help="Draw again (replace) tiles stored before this: an age (30m, 12h, 7d, 2w) or a "
    "date (2025-05-01, 2025-05-01T12:00:00Z; UTC unless it says); leave younger ones.",
)
@click.option(
    "--failed-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Failed metatiles.",
)
@click.option(
    "--retry-failed",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Draw only the metatiles of this failures file.",
)
@click.option(
    "--journal", type=click.Path(dir_okay=False, path_type=Path), help="Progress journal file."
)
@click.option("--queue", metavar="URL", help="Send the metatiles to this SQS queue instead.")
@click.option("--per-message", default=1, show_default=True, type=click.IntRange(1, 100))
@click.option("--status", is_flag=True, help="Print the counts of the --queue and exit.")
@click.option(
    "--dry-run", is_flag=True, help="Counts and costs per zoom, a time estimate; store nothing."
)
@costs.price_options
@click.pass_context
def seed_command(
    ctx: click.Context,
    s3: context.S3Place,
    layer_name: str | None,
    ext: str | None,
    dimensions: tuple[str, ...],
    zoom: str | None,
    bbox: str | None,
    geojson: Path | None,
    concurrency: int,
    wms_rate: float | None,
    skip_existing: bool,
    refresh_age: str | None,
    failed_file: Path | None,
    retry_failed: Path | None,
    journal: Path | None,
    queue: str | None,
    per_message: int,
    status: bool,
    dry_run: bool,
    prices: Prices,
) -> None:
    """Fill a layer's cache for zoom levels over an area, one GetMap per metatile.

    Only tiles sharing area with the --bbox or --geojson coverage are stored. An
    interrupted run (Ctrl-C, SIGTERM) resumes when the same command is run again.
    Exit 1 when any metatile failed or the run was interrupted.
    """
    env = context.environment(ctx)
    if status:
        if not queue:
            raise errors.ConfigProblem("--status needs --queue URL")
        _print_status(context.sqs_client(env, s3.endpoint_url), queue)
        return
    settings = context.settings_of(env)
    refresh_before = None
    if refresh_age is not None:
        if skip_existing:
            raise errors.ConfigProblem("give --skip-existing or --refresh-older-than, not both")
        refresh_before = refresh_cutoff(refresh_age, time.time())
    if retry_failed is not None:
        try:
            jobs = read_failures(retry_failed)
        except SeedError as err:
            raise errors.ConfigProblem(str(err)) from None
        wanted = {job.layer for job in jobs}
        layers = {
            layer.name: LayerRuntime.build(layer)
            for layer in settings.served_layers
            if layer.name in wanted
        }
        unknown = wanted - set(layers)
        if unknown:
            raise errors.ConfigProblem(
                f"--retry-failed: layers not configured: {', '.join(unknown)}"
            )
        what = f"{len(jobs)} failed metatiles of {retry_failed}"
        signature = "retry|" + _digest("\n".join(json.dumps(j.to_dict()) for j in jobs))
        name = f"retry-{_digest(signature)}"
    else:
        runtime = _runtime(env, layer_name)
        if zoom is None:
            raise errors.ConfigProblem("--zoom is required (e.g. --zoom 0-14)")
        zooms = zoom_levels(zoom, runtime)
        coverage = area_of(bbox, geojson)
        ext = (ext or runtime.layer.extension).lower()
        if ext not in runtime.sources:
            raise errors.ConfigProblem(
                f"--format {ext}: layer {runtime.layer.name} serves {runtime.layer.formats}"
            )
        combinations = dimension_option.chosen(runtime.layer, dimensions)
        layers = {runtime.layer.name: runtime}
        if dry_run:
            store = context.tile_store(env, settings, s3, 4, conditional=False)
            sampler = SizeSampler(runtime, ext, coverage, store)
            plan = plan_costs(
                runtime,
                ext,
                coverage,
                zooms,
                sampler,
                seed=True,
                read=False,
                repeat=len(combinations),
            )
            print_costs(plan, prices, _cost_note(skip_existing, refresh_age, runtime))
        # The area's metatiles are the same for every value: planned once.
        area = list(plan_jobs(runtime, coverage, zooms, ext))
        jobs = [job._replace(dimensions=values) for values in combinations for job in area]
        values_text = dimension_option.describe(combinations)
        what = (
            f"{runtime.layer.name}{values_text} .{ext} z{zooms[0]}-{zooms[-1]}"
            f" over {coverage.description}"
        )
        signature = plan_signature(runtime.layer.name, ext, zooms, coverage.digest())
        if values_text:  # each selection of values is a seed of its own
            signature += "|" + _digest(json.dumps(combinations))
        name = f"{runtime.layer.name}-{ext}-{_digest(signature)}"
    total_tiles = sum(tile_count(layers[job.layer], job) for job in jobs)
    options = SeedOptions(concurrency, wms_rate, skip_existing, refresh_before)

    if queue:
        if not _enqueue(env, s3.endpoint_url, queue, jobs, what, per_message, options, dry_run):
            ctx.exit(errors.EXIT_FAILED)
        return
    if dry_run:
        _print_estimate(settings, layers, jobs, options)
        return

    store = context.tile_store(env, settings, s3, concurrency + 2, conditional=skip_existing)
    journal_path = journal or SEED_DIR / f"{name}.journal.jsonl"
    failed_path = failed_file or SEED_DIR / f"{name}.failed.jsonl"
    the_journal = Journal(journal_path, signature)
    try:
        the_journal.done()
    except JournalMismatch as err:
        raise errors.ConfigProblem(str(err)) from None
    # The failures file holds the failures of the last run only.
    failed_path.unlink(missing_ok=True)
    failures = FailureLog(failed_path)
    click.echo(
        f"seed {what}: {len(jobs)} metatiles, {total_tiles} tiles to {store.location}", err=True
    )
    wms = wms_client(settings, concurrency)
    try:
        with console.stop_on_signals() as stop, console.progress_bar(total_tiles, "seed") as bar:
            report = run_seed(
                layers, jobs, wms, store, options, the_journal, failures, stop, bar.update
            )
    finally:
        failures.close()
        wms.close()
    complete = not report.failed and not report.interrupted
    the_journal.close(remove=complete)
    kept = "already stored" if refresh_before is None else f"stored since {_iso(refresh_before)}"
    click.echo(
        f"seed {what}: {report.done} done, {report.skipped} skipped ({kept}), "
        f"{report.failed} failed, {report.ignored} ignored (outside extent); "
        f"{report.metatiles_done} metatiles done, {report.metatiles_skipped} resumed, "
        f"{report.metatiles_failed} failed, {report.wms_requests} WMS requests; "
        f"{report.elapsed:.2f} s ({console.per_second(report.done, report.elapsed)} tiles/s)"
    )
    console.show_failures(report.failures)
    if report.metatiles_failed:
        click.echo(
            f"failed metatiles written to {failed_path}; replay with --retry-failed {failed_path}",
            err=True,
        )
    if report.interrupted:
        click.echo(
            f"interrupted: {report.metatiles_left} metatiles left; run the same command "
            f"again to resume (journal {journal_path})",
            err=True,
        )
    if not complete:
        ctx.exit(errors.EXIT_FAILED)


def _cost_note(skip_existing: bool, refresh_age: str | None, runtime: LayerRuntime) -> str:
    """What the table's counts do not know."""
    notes = []
    if skip_existing or refresh_age:
        notes.append(
            "tiles already stored (and young enough) are skipped: GetMaps and PUTs are at "
            "most these, plus one LIST per folder"
        )
    if runtime.layer.empty_tiles == "redirect":
        notes.append("plus one PUT per distinct shared blank")
    cols, rows = runtime.layer.metatile
    notes.append(f"metatiles of {cols}x{rows} tiles, buffer {runtime.layer.meta_buffer} px")
    return "; ".join(notes)


def _print_estimate(
    settings: Settings,
    layers: dict[str, LayerRuntime],
    jobs: list[MetaJob],
    options: SeedOptions,
) -> None:
    wms = wms_client(settings, 2)
    try:
        guess = estimate(layers, jobs, wms, options)
    except (WMSError, SeedError) as err:
        raise errors.Failed(f"could not draw a sample metatile: {err}") from None
    finally:
        wms.close()
    rate = f"at most {options.wms_rate:g} GetMaps/s, " if options.wms_rate else ""
    click.echo(
        f"dry run: {len(jobs)} metatiles; sample of {guess.sampled}: "
        f"{guess.seconds_per_metatile:.2f} s per metatile; estimate {guess.total_seconds:.0f} s "
        f"with {rate}{options.concurrency} threads (nothing stored)"
    )


def _enqueue(
    env: context.Environment,
    endpoint_url: str | None,
    queue: str,
    jobs: list[MetaJob],
    what: str,
    per_message: int,
    options: SeedOptions,
    dry_run: bool,
) -> bool:
    """Send the jobs to the queue; False when SQS refused some messages."""
    bodies = list(
        sqs_jobs.encode_messages(jobs, per_message, options.skip_existing, options.refresh_before)
    )
    if dry_run:
        click.echo(f"dry run: {len(jobs)} metatiles in {len(bodies)} messages for {queue}")
        if bodies:
            click.echo(f"  first message: {bodies[0]}")
        return True
    sqs = context.sqs_client(env, endpoint_url)
    try:
        with console.progress_bar(len(bodies), "enqueue", unit="msg") as bar:
            report = sqs_jobs.enqueue(sqs, queue, bodies, on_sent=bar.update)
    except sqs_jobs.QueueError as err:
        raise errors.Failed(str(err)) from None
    click.echo(
        f"seed {what}: {len(jobs)} metatiles queued in {report.sent} messages to {queue}, "
        f"{report.failed} messages refused; progress: s3maptiler seed --status --queue {queue}"
    )
    for reason in (report.reasons or [])[:20]:
        click.echo(f"failed: {reason}", err=True)
    return not report.failed


def _print_status(sqs: Any, queue: str) -> None:
    try:
        status = sqs_jobs.queue_status(sqs, queue)
    except sqs_jobs.QueueError as err:
        raise errors.Failed(str(err)) from None
    click.echo(
        f"queue {queue}: {status.waiting} waiting, {status.in_flight} in flight, "
        f"{status.delayed} delayed{' (drained)' if status.drained else ''}"
    )
