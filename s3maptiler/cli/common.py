"""What every ``s3maptiler`` command shares: the environment, errors and exit codes,
the S3 client, progress bars and summaries.

Options
default to the service's own environment (``.env`` and the real environment:
``BUCKET_NAME``, ``TILE_PREFIX``, ``AWS_ENDPOINT_URL``, ``MISS_PREFIX``,
``CACHE_CONTROL``, ``LAYERS_FILE``), so a user with a working ``.env`` types nothing
extra.

Every long command shows a progress bar with rate and ETA on stderr when stderr is a
terminal, always prints a one-line summary, and has ``--dry-run``. Exit codes: 0 all
good, 1 something failed, 2 usage or configuration error (one line on stderr).

About 410 lines in one module on purpose: these are the conventions every command
follows, and a command reads them in one place rather than in five small modules.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import click
from botocore.config import Config
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from s3maptiler.bucket import spec as bucket_docs
from s3maptiler.config import (
    DEFAULT_CACHE_CONTROL,
    ConfigError,
    Layer,
    Settings,
    default_layer_name,
    environment_values,
    load_settings,
)
from s3maptiler.config.hidpi import with_pixel_ratios
from s3maptiler.documents.common import ARCGIS_SERVICES_PREFIX
from s3maptiler.documents.ogcapi import PREFIX as OGCAPI_PREFIX
from s3maptiler.service.build import s3_store
from s3maptiler.storage.s3 import make_s3_client
from s3maptiler.storage.stores import LocalStore, TileStore
from s3maptiler.tiles.grids import Bbox, GridError, TileGrid, get_grid

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

# Failures listed one per line after a summary; the rest are only counted.
_SHOWN_FAILURES = 20


# --- errors and the group -----------------------------------------------------------


class Failed(click.ClickException):
    """Something went wrong at run time (S3 refused, a file could not be read): exit 1."""

    exit_code = EXIT_FAILED


class Group(click.Group):
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
            for layer in with_pixel_ratios(layers):  # "roads@2x": roads's 2x tiles
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
        the service like any other, and fills that key; and the OGC API prefix, for
        the same reason (the tile URLs of layers whose keys no template can spell)."""
        if self.settings is None and self.get("LAYERS_FILE"):
            raise ConfigProblem(str(self.settings_error))
        if self.settings:
            layers = tuple(layer.prefix for layer in self.settings.layers)
        else:
            layers = (self.layer(None).prefix,)
        return tuple(dict.fromkeys((*layers, ARCGIS_SERVICES_PREFIX, OGCAPI_PREFIX)))


def load_environment(dotenv_path: str | Path = ".env") -> Environment:
    """Read ``.env`` and the environment the way the service does."""
    values = environment_values(dotenv_path=dotenv_path)
    try:
        settings, error = load_settings(values, dotenv_path=None), None
    except ConfigError as err:
        settings, error = None, str(err)
    return Environment(values, settings, error)


def environment(ctx: click.Context) -> Environment:
    root = ctx.find_root()
    if root.obj is None:
        root.obj = load_environment()
    return root.obj


@dataclass(frozen=True)
class LayerTarget:
    """Where a command works on one layer's tiles: the environment, the layer, the
    bucket and the key prefix (``--prefix``, else the layer's)."""

    env: Environment
    layer: Layer
    bucket: str
    prefix: str


def layer_target(
    ctx: click.Context, s3: S3Place, layer_name: str | None, prefix: str | None
) -> LayerTarget:
    """The layer of ``--layer``, the bucket of ``--bucket`` and the prefix of ``--prefix``,
    each defaulting to the service's environment."""
    env = environment(ctx)
    layer = env.layer(layer_name)
    chosen = checked_prefix(layer.prefix if prefix is None else prefix)
    return LayerTarget(env, layer, bucket_name(env, s3.bucket), chosen)


def s3_client(env: Environment, endpoint_url: str | None, pool: int, attempts: int = 3) -> Any:
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


def bucket_name(env: Environment, value: str | None) -> str:
    name = value or env.get("BUCKET_NAME")
    if not name:
        raise ConfigProblem("no bucket: pass --bucket or set BUCKET_NAME")
    return name


def checked_prefix(value: str, what: str = "--prefix") -> str:
    try:
        return bucket_docs.check_prefix(value, what)
    except bucket_docs.InvalidSpec as err:
        raise ConfigProblem(str(err)) from None


def grid_for(name: str | None, layer: Layer) -> TileGrid:
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


def configure_logging(verbose: int) -> None:
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
def progress_bar(total: int | None, desc: str, unit: str = "tile") -> Iterator[tqdm]:
    # Log lines go through tqdm.write while the bar is up, so they do not tear it.
    with logging_redirect_tqdm(loggers=[_PACKAGE_LOG]), _bar(total, desc, unit) as bar:
        yield bar


def parse_bbox(value: str) -> Bbox:
    """``--bbox west,south,east,north`` in degrees; ConfigProblem with the reason."""
    try:
        numbers = [float(part) for part in value.split(",")]
    except ValueError:
        numbers = []
    if len(numbers) != 4:
        raise ConfigProblem(f"--bbox {value!r}: expected west,south,east,north in degrees")
    return Bbox(*numbers)


def per_second(count: int, seconds: float) -> str:
    return f"{count / seconds:.1f}" if seconds > 0 else "-"


def size_text(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # unreachable


def show_failures(failures: list[tuple[str, str]]) -> None:
    for key, reason in failures[:_SHOWN_FAILURES]:
        click.echo(f"failed: {key}: {reason}", err=True)
    if len(failures) > _SHOWN_FAILURES:
        click.echo(f"failed: ... and {len(failures) - _SHOWN_FAILURES} more", err=True)


def json_text(document: Any) -> str:
    return json.dumps(document, indent=2, sort_keys=False)


# --- the group ----------------------------------------------------------------------


@dataclass(frozen=True)
class S3Place:
    """Where an S3 command works: ``--bucket`` and ``--endpoint-url`` (None: the
    environment's BUCKET_NAME and AWS_ENDPOINT_URL)."""

    bucket: str | None
    endpoint_url: str | None


def s3_options(command: Callable) -> Callable:
    """The options every S3 command shares, handed to it as one ``s3`` argument
    (:class:`S3Place`); each defaults to the service's environment."""

    @functools.wraps(command)
    def run(*args: Any, bucket: str | None, endpoint_url: str | None, **options: Any) -> Any:
        return command(*args, s3=S3Place(bucket, endpoint_url), **options)

    run = click.option(
        "--endpoint-url",
        metavar="URL",
        help="S3-compatible endpoint (default: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL).",
    )(run)
    return click.option("--bucket", metavar="NAME", help="Bucket (default: BUCKET_NAME).")(run)


def settings_of(env: Environment) -> Settings:
    if env.settings is None:
        raise ConfigProblem(f"seeding needs the service's settings: {env.settings_error}")
    return env.settings


def tile_store(
    env: Environment, settings: Settings, s3: S3Place, pool: int, conditional: bool
) -> TileStore:
    """The bucket of --bucket / BUCKET_NAME, else the service's local directory."""
    name = s3.bucket or env.get("BUCKET_NAME")
    if not name:
        return LocalStore(settings.local_cache_dir)
    return s3_store(settings, s3_client(env, s3.endpoint_url, pool=pool), name, conditional)


def sqs_client(env: Environment, endpoint_url: str | None, read_timeout: float = 30.0) -> Any:
    """An SQS client; the endpoint as for S3: option, AWS_ENDPOINT_URL_SQS, AWS_ENDPOINT_URL."""
    endpoint = endpoint_url or env.get("AWS_ENDPOINT_URL_SQS") or env.get("AWS_ENDPOINT_URL")
    if endpoint is not None and not endpoint.startswith(("http://", "https://")):
        raise ConfigProblem(f"endpoint {endpoint!r} must be an http:// or https:// URL")
    config = Config(
        connect_timeout=3.0,
        read_timeout=read_timeout,
        retries={"mode": "standard", "total_max_attempts": 3},
    )
    session = boto3.session.Session()
    return session.client(
        "sqs", endpoint_url=endpoint, region_name=env.region or "us-east-1", config=config
    )


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM (main thread only): running metatiles finish,
    no new one starts, and the summary is still printed."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, _frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt  # a second signal: stop now
        log.warning("signal %d: finishing running metatiles, then stopping", signum)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
