"""The ``s3maptiler`` console script: one click group, a subcommand per tool.

Commands stay thin: they turn options into calls of :mod:`s3maptiler.bulk`,
:mod:`s3maptiler.bucket` and :mod:`s3maptiler.purge` and print the outcome. Options
default to the service's own environment (``.env`` and the real environment:
``BUCKET_NAME``, ``TILE_PREFIX``, ``AWS_ENDPOINT_URL``, ``MISS_PREFIX``,
``CACHE_CONTROL``, ``LAYERS_FILE``), so a user with a working ``.env`` types nothing
extra.

Every long command shows a progress bar with rate and ETA on stderr when stderr is a
terminal, always prints a one-line summary, and has ``--dry-run``. Exit codes: 0 all
good, 1 something failed, 2 usage or configuration error (one line on stderr).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click
from botocore.exceptions import BotoCoreError, ClientError
from dotenv import dotenv_values
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from s3maptiler.bucket import publish as publish_docs
from s3maptiler.bucket import purge
from s3maptiler.bucket import spec as bucket_docs
from s3maptiler.bucket import upload as bulk
from s3maptiler.config import ConfigError, Layer, Settings, default_layer_name, load_settings
from s3maptiler.documents.arcgis import json_document
from s3maptiler.documents.common import ARCGIS_SERVICES_PREFIX, arcgis_service_path
from s3maptiler.storage.s3 import make_s3_client
from s3maptiler.tiles.grids import Bbox, GridError, TileGrid, get_grid
from s3maptiler.tiles.layouts import LAYOUTS, LayoutError, get_layout

__all__ = ["main"]

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

DEFAULT_CACHE_CONTROL = "public, max-age=86400"
# Failures listed one per line after a summary; the rest are only counted.
_SHOWN_FAILURES = 20


# --- errors and the group -----------------------------------------------------------


class Failed(click.ClickException):
    """Something went wrong at run time (S3 refused, a file could not be read): exit 1."""

    exit_code = EXIT_FAILED


class _Group(click.Group):
    """A click group whose errors are one line on stderr: usage errors exit 2."""

    def main(  # type: ignore[override]
        self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra
    ):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as err:
            where = err.ctx.command_path if err.ctx is not None else "s3maptiler"
            hint = "" if isinstance(err, ConfigProblem) else f" (see {where} --help)"
            click.echo(f"{where}: error: {err.format_message()}{hint}", err=True)
            sys.exit(EXIT_USAGE)
        except click.ClickException as err:
            click.echo(f"s3maptiler: error: {err.format_message()}", err=True)
            sys.exit(err.exit_code)
        except click.Abort:
            click.echo("s3maptiler: aborted", err=True)
            sys.exit(EXIT_FAILED)
        sys.exit(code if isinstance(code, int) else EXIT_OK)


class ConfigProblem(click.UsageError):
    """A bad setting or option value: exit 2, one line."""

    exit_code = EXIT_USAGE


# --- the environment ----------------------------------------------------------------


@dataclass(frozen=True)
class Environment:
    """What the service would read: ``.env`` values under the real environment, and the
    validated settings when they load (they need WMS settings a CLI user may lack)."""

    values: Mapping[str, str]
    settings: Settings | None
    settings_error: str | None

    def get(self, name: str) -> str | None:
        value = self.values.get(name)
        return value.strip() if value and value.strip() else None

    @property
    def endpoint_url(self) -> str | None:
        return self.get("AWS_ENDPOINT_URL_S3") or self.get("AWS_ENDPOINT_URL")

    @property
    def region(self) -> str | None:
        return self.get("AWS_REGION") or self.get("AWS_DEFAULT_REGION")

    def layer(self, name: str | None) -> Layer:
        """The layer called `name`, the only configured layer, or one built from the
        single-layer variables (``TILE_PREFIX``, ``CACHE_CONTROL``) when the service's
        settings do not load."""
        if self.settings is None and self.get("LAYERS_FILE"):
            # A broken layers file must not silently fall back to TILE_PREFIX.
            raise ConfigProblem(str(self.settings_error))
        layers = self.settings.layers if self.settings else ()
        if name is not None:
            if not layers:
                raise ConfigProblem(f"--layer {name}: no layers configured ({self.settings_error})")
            for layer in layers:
                if layer.name == name:
                    return layer
            known = ", ".join(layer.name for layer in layers)
            raise ConfigProblem(f"--layer {name}: no such layer; configured: {known}")
        if len(layers) == 1:
            return layers[0]
        if len(layers) > 1:
            known = ", ".join(layer.name for layer in layers)
            raise ConfigProblem(f"several layers are configured ({known}); pick one with --layer")
        # As the service reads them: TILE_PREFIX unset or empty means tiles/.
        prefix = self.get("TILE_PREFIX") or "tiles/"
        return Layer(
            name=self.get("LAYER_NAME") or default_layer_name(prefix),
            wms_url="",
            wms_layers="",
            prefix=prefix,
            cache_control=self.get("CACHE_CONTROL") or DEFAULT_CACHE_CONTROL,
        )

    def prefixes(self) -> tuple[str, ...]:
        """Every configured tile prefix (all layers), else ``TILE_PREFIX``; then the
        ArcGIS REST prefix, whose ``.../MapServer/tile/{z}/{row}/{col}`` keys are the
        tile URLs of the MapServer documents ``publish`` writes: a miss there goes to
        the service like any other, and fills that key."""
        if self.settings is None and self.get("LAYERS_FILE"):
            raise ConfigProblem(str(self.settings_error))
        if self.settings:
            layers = tuple(layer.prefix for layer in self.settings.layers)
        else:
            layers = (self.layer(None).prefix,)
        return tuple(dict.fromkeys((*layers, ARCGIS_SERVICES_PREFIX)))


def load_environment(dotenv_path: str | Path = ".env") -> Environment:
    """Read ``.env`` and the environment the way the service does."""
    values: dict[str, str] = {}
    if Path(dotenv_path).is_file():
        values.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    values.update(os.environ)
    try:
        settings, error = load_settings(dotenv_path=dotenv_path), None
    except ConfigError as err:
        settings, error = None, str(err)
    return Environment(values, settings, error)


def _env(ctx: click.Context) -> Environment:
    root = ctx.find_root()
    if root.obj is None:
        root.obj = load_environment()
    return root.obj


def _client(env: Environment, endpoint_url: str | None, pool: int, attempts: int = 3) -> Any:
    endpoint = endpoint_url or env.endpoint_url
    if endpoint is not None and not endpoint.startswith(("http://", "https://")):
        raise ConfigProblem(f"endpoint {endpoint!r} must be an http:// or https:// URL")
    return make_s3_client(
        max_pool_connections=pool,
        endpoint_url=endpoint,
        region_name=env.region,
        read_timeout=60.0,
        max_attempts=attempts,
    )


def _bucket(env: Environment, value: str | None) -> str:
    name = value or env.get("BUCKET_NAME")
    if not name:
        raise ConfigProblem("no bucket: pass --bucket or set BUCKET_NAME")
    return name


def _prefix(value: str, what: str = "--prefix") -> str:
    try:
        return bucket_docs.check_prefix(value, what)
    except bucket_docs.InvalidSpec as err:
        raise ConfigProblem(str(err)) from None


def _grid(name: str | None, layer: Layer) -> TileGrid:
    try:
        return get_grid(name) if name else layer.tile_grid
    except GridError as err:
        raise ConfigProblem(f"--grid: {err}") from None


# --- output -------------------------------------------------------------------------


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record arrives, not when the handler
    was made: click's test runner swaps stderr per invocation."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


_LOG_HANDLER = _StderrHandler()
_LOG_HANDLER.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
_PACKAGE_LOG = logging.getLogger("s3maptiler")


def _configure_logging(verbose: int) -> None:
    """Our messages on stderr: warnings, or info (-v) and debug (-vv). Only the
    package's logger is touched, never the root logger of a host program."""
    level = logging.WARNING - 10 * min(verbose, 2)
    _LOG_HANDLER.setLevel(level)
    if _LOG_HANDLER not in _PACKAGE_LOG.handlers:
        _PACKAGE_LOG.addHandler(_LOG_HANDLER)
    if verbose:
        _PACKAGE_LOG.setLevel(level)


def _bar(total: int | None, desc: str, unit: str = "tile") -> tqdm:
    """A progress bar (rate, ETA) on stderr, shown only when stderr is a terminal."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        disable=not sys.stderr.isatty(),
        dynamic_ncols=True,
        mininterval=0.2,
    )


@contextmanager
def _progress(total: int | None, desc: str, unit: str = "tile") -> Iterator[tqdm]:
    # Log lines go through tqdm.write while the bar is up, so they do not tear it.
    with logging_redirect_tqdm(loggers=[_PACKAGE_LOG]), _bar(total, desc, unit) as bar:
        yield bar


def _rate(count: int, seconds: float) -> str:
    return f"{count / seconds:.1f}" if seconds > 0 else "-"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # unreachable


def _show_failures(failures: list[tuple[str, str]]) -> None:
    for key, reason in failures[:_SHOWN_FAILURES]:
        click.echo(f"failed: {key}: {reason}", err=True)
    if len(failures) > _SHOWN_FAILURES:
        click.echo(f"failed: ... and {len(failures) - _SHOWN_FAILURES} more", err=True)


def _json(document: Any) -> str:
    return json.dumps(document, indent=2, sort_keys=False)


# --- the group ----------------------------------------------------------------------


@click.group("s3maptiler", cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Tools for an s3maptiler tile cache in S3."""
    _configure_logging(verbose)


def s3_options(command: Callable) -> Callable:
    """The options every S3 command shares; each defaults to the service's environment."""
    command = click.option(
        "--endpoint-url",
        metavar="URL",
        help="S3-compatible endpoint (default: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL).",
    )(command)
    command = click.option("--bucket", metavar="NAME", help="Bucket (default: BUCKET_NAME).")(
        command
    )
    return command


# --- upload -------------------------------------------------------------------------


@main.command()
@click.argument("source", type=click.Path(file_okay=False, path_type=Path))
@s3_options
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
    bucket: str | None,
    endpoint_url: str | None,
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
    env = _env(ctx)
    layer = env.layer(layer_name)
    name = _bucket(env, bucket)
    key_prefix = _prefix(layer.prefix if prefix is None else prefix)
    grid = _grid(grid_name, layer)
    try:
        tree = bulk.find_source(source)
        source_layout = get_layout(
            layout_from or bulk.detect_layout(tree.tile_root) or layer.layout
        )
        target_layout = get_layout(layout_to or layer.layout)
        walk = bulk.walk_tiles(tree.tile_root, source_layout, grid, key_prefix, target_layout)
    except (bulk.SourceError, LayoutError) as err:
        raise ConfigProblem(str(err)) from None
    if not walk.tiles:
        raise ConfigProblem(
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

    client = _client(env, endpoint_url, pool=workers, attempts=1)
    try:
        existing = bulk.list_existing(client, name, key_prefix)
    except bulk.ListingFailed as err:
        raise Failed(str(err)) from None
    options = bulk.UploadOptions(
        cache_control=layer.cache_control if cache_control is None else cache_control or None,
        acl=acl,
        workers=workers,
        retries=retries,
        dry_run=dry_run,
    )
    with _progress(len(walk.tiles), "upload") as bar:
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
        f"{report.uploaded} {verb} ({_size(report.bytes_uploaded)}), "
        f"{report.skipped} skipped (unchanged), {report.failed} failed, "
        f"{report.ignored} ignored (not tiles), {published}"
        f"in {report.elapsed:.2f} s ({_rate(report.uploaded + report.skipped, report.elapsed)} "
        "tiles/s)"
    )
    _show_failures(report.failures)
    if report.failed or not publish_ok:
        ctx.exit(EXIT_FAILED)


def _publish_mapserver(
    client: Any,
    bucket: str,
    tree: bulk.SourceTree,
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
        info = bulk.read_conf_xml(tree.conf_xml)
        extent = bulk.read_conf_cdi(tree.conf_xml.with_name("conf.cdi"))
    except bulk.ConfXmlError as err:
        log.warning("%s", err)
        return "MapServer JSON failed (bad conf.xml), ", False
    # Where capabilities.py puts a layer's MapServer document, named after the
    # layer asked for, else after the cache folder.
    service = replace(layer, name=layer_name or tree.name)
    key = arcgis_service_path(service)
    body, _content_type = json_document(bulk.mapserver_json(info, service.name, extent))
    if options.dry_run:
        return f"MapServer JSON to publish at {key}, ", True
    try:
        bulk.publish_json(client, bucket, key, body.decode("ascii"), options.cache_control)
    except (ClientError, BotoCoreError) as err:
        log.warning("MapServer JSON not published at %s: %s", key, bulk.describe_error(err))
        return "MapServer JSON failed, ", False
    return f"MapServer JSON at {key}, ", True


# --- bucket -------------------------------------------------------------------------


@main.group("bucket")
def bucket_group() -> None:
    """Set up or check a bucket: website redirects, CORS, lifecycle, public read."""


def bucket_spec_options(command: Callable) -> Callable:
    """Options describing the wanted bucket, shared by setup and check."""
    for decorator in reversed(
        [
            s3_options,
            click.option(
                "--prefix",
                "prefixes",
                multiple=True,
                metavar="PREFIX",
                help="Tile prefix (repeatable; default: every configured layer's, TILE_PREFIX, "
                "and arcgis/rest/services/ for ArcGIS REST tile URLs).",
            ),
            click.option(
                "--miss-prefix",
                metavar="PREFIX",
                help="Path prefix of redirected misses (default: MISS_PREFIX, miss/).",
            ),
            click.option(
                "--expire-days",
                type=click.IntRange(1),
                help="Lifecycle: tiles expire this many days after their last write.",
            ),
            click.option(
                "--cors-origin",
                "cors_origins",
                multiple=True,
                metavar="ORIGIN",
                help="Origin allowed to GET/HEAD (repeatable; default: *).",
            ),
            click.option(
                "--public-read/--no-public-read",
                default=True,
                show_default=True,
                help="Grant public s3:GetObject on the prefixes through the bucket policy.",
            ),
        ]
    ):
        command = decorator(command)
    return command


def _tiler(tiler_host: str | None, tiler_url: str | None) -> tuple[str, str | None]:
    """(protocol, host[:port]) from --tiler-host or --tiler-url (at most one)."""
    if tiler_host and tiler_url:
        raise ConfigProblem("give --tiler-host or --tiler-url, not both")
    if tiler_url is None:
        return "https", tiler_host
    try:
        protocol, host = bucket_docs.parse_tiler_url(tiler_url)
    except bucket_docs.InvalidSpec as err:
        raise ConfigProblem(str(err)) from None
    if protocol == "http" and host.split(":")[0] not in _LOCAL_HOSTS:
        click.echo(
            f"warning: misses will be redirected over plain http to {host}; plain http is "
            "meant for a tiler on this machine, use https (--tiler-host) elsewhere",
            err=True,
        )
    return protocol, host


# Hosts for which a plain-http tiler is expected (a service on this machine).
_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

TILER_URL_HELP = (
    "The service's URL instead of --tiler-host: plain http and a port for local use, "
    "e.g. http://127.0.0.1:8000 (the default is https to --tiler-host)."
)


def _spec(
    env: Environment,
    bucket: str | None,
    tiler: tuple[str, str | None],
    prefixes: tuple[str, ...],
    miss_prefix: str | None,
    expire_days: int | None,
    cors_origins: tuple[str, ...],
    public_read: bool,
    relax: bool = False,
) -> bucket_docs.BucketSpec:
    protocol, tiler_host = tiler
    try:
        return bucket_docs.BucketSpec(
            bucket=_bucket(env, bucket),
            tiler_host=tiler_host,
            tiler_protocol=protocol,
            prefixes=prefixes or env.prefixes(),
            miss_prefix=miss_prefix or env.get("MISS_PREFIX") or "miss/",
            expire_days=expire_days,
            cors_origins=cors_origins or ("*",),
            public_read=public_read,
            relax_public_access_block=relax,
            # The service documents `publish` writes outside the tile prefixes.
            public_keys=publish_docs.SERVICE_DOCUMENT_KEYS,
        )
    except bucket_docs.InvalidSpec as err:
        raise ConfigProblem(str(err)) from None


@bucket_group.command("setup")
@click.option("--tiler-host", metavar="HOST", help="The service's host name (https).")
@click.option("--tiler-url", metavar="URL", help=TILER_URL_HELP)
@bucket_spec_options
@click.option(
    "--relax-public-access-block",
    is_flag=True,
    help="Allow turning off BlockPublicPolicy and RestrictPublicBuckets for public read.",
)
@click.option("--dry-run", is_flag=True, help="Print every JSON document; send nothing.")
@click.pass_context
def bucket_setup(
    ctx: click.Context,
    tiler_host: str | None,
    tiler_url: str | None,
    bucket: str | None,
    endpoint_url: str | None,
    prefixes: tuple[str, ...],
    miss_prefix: str | None,
    expire_days: int | None,
    cors_origins: tuple[str, ...],
    public_read: bool,
    relax_public_access_block: bool,
    dry_run: bool,
) -> None:
    """Make a bucket send tile misses to the tiler (307, https) and serve tiles.

    Routing rules for 404 and 403 misses under each prefix, CORS, optional lifecycle
    expiry and a public-read bucket policy (never ACLs). Settings of the bucket that
    are not s3maptiler's are kept. Prints the IAM policy for the service's role.
    """
    env = _env(ctx)
    if not tiler_host and not tiler_url:
        raise ConfigProblem("where do misses go? pass --tiler-host HOST or --tiler-url URL")
    spec = _spec(
        env,
        bucket,
        _tiler(tiler_host, tiler_url),
        prefixes,
        miss_prefix,
        expire_days,
        cors_origins,
        public_read,
        relax_public_access_block,
    )
    client = _client(env, endpoint_url, pool=2)
    try:
        steps = bucket_docs.setup_bucket(client, spec, dry_run=dry_run)
    except bucket_docs.InvalidSpec as err:
        raise ConfigProblem(str(err)) from None
    except bucket_docs.BucketError as err:
        raise Failed(str(err)) from None
    for step in steps:
        if dry_run:
            click.echo(f"# would send {step.operation} (s3://{spec.bucket}): {step.summary}")
            click.echo(_json(step.document))
        else:
            click.echo(f"{step.name}: {step.summary}")
        if step.name == "public-access-block":
            click.echo(
                f"warning: Block Public Access on {spec.bucket} "
                f"{'would be' if dry_run else 'was'} relaxed "
                "(BlockPublicPolicy=false, RestrictPublicBuckets=false)",
                err=True,
            )
    acl = bool(env.get("S3_ACL"))
    click.echo("# IAM policy for the service's instance role (least privilege):")
    click.echo(_json(bucket_docs.instance_role_policy(spec.bucket, spec.prefixes, acl=acl)))
    click.echo(
        f"bucket setup{' (dry run)' if dry_run else ''} s3://{spec.bucket}: "
        f"{len(steps)} documents {'to send' if dry_run else 'sent'}"
    )


@bucket_group.command("check")
@click.option("--tiler-host", metavar="HOST", help="The host redirects must go to.")
@click.option("--tiler-url", metavar="URL", help=TILER_URL_HELP)
@bucket_spec_options
@click.pass_context
def bucket_check(
    ctx: click.Context,
    tiler_host: str | None,
    tiler_url: str | None,
    bucket: str | None,
    endpoint_url: str | None,
    prefixes: tuple[str, ...],
    miss_prefix: str | None,
    expire_days: int | None,
    cors_origins: tuple[str, ...],
    public_read: bool,
) -> None:
    """Report what is missing or wrong on a bucket, one finding per line; exit 1 if any."""
    env = _env(ctx)
    spec = _spec(
        env,
        bucket,
        _tiler(tiler_host, tiler_url),
        prefixes,
        miss_prefix,
        expire_days,
        cors_origins,
        public_read,
    )
    findings = bucket_docs.check_bucket(_client(env, endpoint_url, pool=2), spec)
    for finding in findings:
        click.echo(str(finding))
    if findings:
        click.echo(f"bucket check s3://{spec.bucket}: {len(findings)} problems")
        ctx.exit(EXIT_FAILED)
    click.echo(f"bucket check s3://{spec.bucket}: ok")


@bucket_group.command("iam-policy")
@click.option("--bucket", metavar="NAME", help="Bucket (default: BUCKET_NAME).")
@click.option("--prefix", "prefixes", multiple=True, metavar="PREFIX", help="Tile prefix.")
@click.pass_context
def bucket_iam_policy(ctx: click.Context, bucket: str | None, prefixes: tuple[str, ...]) -> None:
    """Print the least-privilege IAM policy for the service's instance role."""
    env = _env(ctx)
    chosen = tuple(_prefix(p) for p in prefixes) or env.prefixes()
    acl = bool(env.get("S3_ACL"))
    click.echo(_json(bucket_docs.instance_role_policy(_bucket(env, bucket), chosen, acl=acl)))


# --- purge --------------------------------------------------------------------------


def _parse_bbox(value: str | None) -> Bbox | None:
    if value is None:
        return None
    try:
        numbers = [float(part) for part in value.split(",")]
    except ValueError:
        numbers = []
    if len(numbers) != 4:
        raise ConfigProblem(f"--bbox {value!r}: expected west,south,east,north in degrees")
    return Bbox(*numbers)


@main.command("purge")
@s3_options
@click.option("--prefix", metavar="PREFIX", help="Key prefix (default: the layer's, TILE_PREFIX).")
@click.option("--layer", "layer_name", metavar="NAME", help="A configured layer to purge.")
@click.option("--layout", "layout_name", type=click.Choice(sorted(LAYOUTS)), help="Key layout.")
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
    bucket: str | None,
    endpoint_url: str | None,
    prefix: str | None,
    layer_name: str | None,
    layout_name: str | None,
    grid_name: str | None,
    min_zoom: int,
    max_zoom: int | None,
    bbox: str | None,
    workers: int,
    dry_run: bool,
    yes: bool,
) -> None:
    """Delete a layer's tiles by zoom range and area (DeleteObjects, 1000 keys a call)."""
    env = _env(ctx)
    layer = env.layer(layer_name)
    name = _bucket(env, bucket)
    key_prefix = _prefix(layer.prefix if prefix is None else prefix)
    try:
        selection = purge.TileSelection(
            layout=get_layout(layout_name or layer.layout),
            grid=_grid(grid_name, layer),
            min_zoom=min_zoom,
            max_zoom=max_zoom,
            bbox=_parse_bbox(bbox),
        )
    except (purge.InvalidSelection, LayoutError) as err:
        raise ConfigProblem(str(err)) from None
    client = _client(env, endpoint_url, pool=workers + 1, attempts=5)
    with _progress(None, "list", unit="key") as bar:
        try:
            found = purge.find_tiles(client, name, key_prefix, selection, on_listed=bar.update)
        except purge.ListingFailed as err:
            raise Failed(str(err)) from None
    where = f"s3://{name}/{key_prefix} zoom {selection.min_zoom}-{selection.max_zoom}" + (
        f" bbox {','.join(f'{v:g}' for v in selection.bbox)}" if selection.bbox else ""
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
            raise ConfigProblem(f"refusing to delete {len(found.keys)} tiles without --yes")
        click.confirm(f"Delete {len(found.keys)} tiles from {where}?", abort=True)
    with _progress(len(found.keys), "delete") as bar:
        report = purge.delete_keys(client, name, found.keys, workers=workers, on_deleted=bar.update)
    click.echo(
        f"purge {where}: {report.deleted} deleted, {report.failed} failed, {tail}, "
        f"in {report.elapsed:.2f} s ({_rate(report.deleted, report.elapsed)} tiles/s, "
        f"{report.batches} batches)"
    )
    _show_failures(report.failures)
    if report.failed:
        ctx.exit(EXIT_FAILED)


# --- publish ------------------------------------------------------------------------


@main.command("publish")
@s3_options
@click.option(
    "--base-url",
    metavar="URL",
    help="Public URL of the bucket's tiles: website endpoint or CloudFront (default: PUBLIC_URL).",
)
@click.option("--dry-run", is_flag=True, help="Print what would be written, write nothing.")
@click.pass_context
def publish_command(
    ctx: click.Context,
    endpoint_url: str | None,
    bucket: str | None,
    base_url: str | None,
    dry_run: bool,
) -> None:
    """Write TMS, WMTS and ArcGIS documents for every layer into the bucket."""
    env = _env(ctx)
    if env.settings is None:
        raise ConfigProblem(str(env.settings_error))
    base = base_url or env.get("PUBLIC_URL")
    if not base or not base.startswith(("http://", "https://")):
        raise ConfigProblem("no public URL: pass --base-url https://... or set PUBLIC_URL")
    name = _bucket(env, bucket)
    docs, skipped = publish_docs.documents(env.settings.layers, base)
    for item in skipped:
        click.echo(f"skipped: layer {item.layer}: {item.reason}", err=True)
    try:
        outcome = publish_docs.publish(_client(env, endpoint_url, 4), name, docs, dry_run)
    except (BotoCoreError, ClientError) as err:
        raise Failed(f"publishing to {name}: {err}") from None
    for doc in docs:
        click.echo(f"{outcome[doc.key]}: s3://{name}/{doc.key} ({doc.content_type})")
        if dry_run and outcome[doc.key] == "would write":
            click.echo(doc.body.decode())
    written = sum(1 for v in outcome.values() if v == "written")
    click.echo(
        f"publish: {written} written, {len(docs) - written} unchanged or dry run, "
        f"{len(skipped)} skipped"
    )


# The seeding commands live in their own module and register themselves on `main`.
from s3maptiler import cli_seed  # noqa: E402, F401

if __name__ == "__main__":
    # Run the package's `main` (the one cli_seed added commands to), not __main__'s copy.
    from s3maptiler.cli import main as package_main

    package_main(prog_name="s3maptiler")
