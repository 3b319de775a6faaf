"""Where a command works: the service's environment as config reads it
(:class:`~s3maptiler.config.CommandSettings`: ``.env`` and the real environment), the
layer, bucket, prefix and grid its options choose, and its S3 and SQS clients.

Options default to the service's own environment (``BUCKET_NAME``, ``TILE_PREFIX``,
``AWS_ENDPOINT_URL``, ``MISS_PREFIX``, ``CACHE_CONTROL``, ``LAYERS_FILE``), so a user with
a working ``.env`` types nothing extra. Only config reads the environment.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import click
from botocore.config import Config

from s3maptiler.cli.errors import ConfigProblem
from s3maptiler.config import (
    CommandSettings,
    ConfigError,
    Layer,
    Settings,
    checked_prefix,
    load_command_settings,
)
from s3maptiler.documents.ogcapi import PREFIX as OGCAPI_PREFIX
from s3maptiler.documents.paths import ARCGIS_SERVICES_PREFIX
from s3maptiler.service.build import s3_store
from s3maptiler.storage.s3 import make_s3_client
from s3maptiler.storage.stores import LocalStore, TileStore
from s3maptiler.tiles.grids import Bbox, GridError, TileGrid, get_grid

# What a command reads of the service's environment (one reader: config).
Environment = CommandSettings


def load_environment(dotenv_path: str | Path = ".env") -> Environment:
    """Read ``.env`` and the environment the way the service does."""
    try:
        return load_command_settings(dotenv_path=dotenv_path)
    except ConfigError as err:
        raise ConfigProblem(str(err)) from None


def environment(ctx: click.Context) -> Environment:
    root = ctx.find_root()
    if root.obj is None:
        root.obj = load_environment()
    return root.obj


def layer_of(env: Environment, name: str | None) -> Layer:
    """The layer called `name` (``roads@2x``: roads's 2x tiles), the only configured
    layer, or the single layer of ``TILE_PREFIX`` when the service's settings do not
    load."""
    if env.settings is None and env.layers_file:
        # A broken layers file must not silently fall back to TILE_PREFIX.
        raise ConfigProblem(str(env.settings_error))
    layers = env.settings.layers if env.settings else ()
    if name is not None:
        if not layers:
            raise ConfigProblem(f"--layer {name}: no layers configured ({env.settings_error})")
        assert env.settings is not None
        for layer in env.settings.served_layers:
            if layer.name == name:
                return layer
        known = ", ".join(layer.name for layer in layers)
        raise ConfigProblem(f"--layer {name}: no such layer; configured: {known}")
    if len(layers) > 1:
        known = ", ".join(layer.name for layer in layers)
        raise ConfigProblem(f"several layers are configured ({known}); pick one with --layer")
    assert env.single_layer is not None  # no LAYERS_FILE
    return env.single_layer


def prefixes_of(env: Environment) -> tuple[str, ...]:
    """Every configured tile prefix (all layers), else ``TILE_PREFIX``; then the
    ArcGIS REST prefix, whose ``.../MapServer/tile/{z}/{row}/{col}`` keys are the
    tile URLs of the MapServer documents ``publish`` writes: a miss there goes to
    the service like any other, and fills that key; and the OGC API prefix, for
    the same reason (the tile URLs of layers whose keys no template can spell)."""
    if env.settings is None and env.layers_file:
        raise ConfigProblem(str(env.settings_error))
    if env.settings:
        layers = tuple(layer.prefix for layer in env.settings.layers)
    else:
        layers = (layer_of(env, None).prefix,)
    return tuple(dict.fromkeys((*layers, ARCGIS_SERVICES_PREFIX, OGCAPI_PREFIX)))


def settings_of(env: Environment) -> Settings:
    if env.settings is None:
        raise ConfigProblem(f"seeding needs the service's settings: {env.settings_error}")
    return env.settings


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
    layer = layer_of(env, layer_name)
    chosen = checked_prefix("--prefix", layer.prefix if prefix is None else prefix, ConfigProblem)
    return LayerTarget(env, layer, bucket_name(env, s3.bucket), chosen)


def bucket_name(env: Environment, value: str | None) -> str:
    name = value or env.bucket
    if not name:
        raise ConfigProblem("no bucket: pass --bucket or set BUCKET_NAME")
    return name


def _endpoint(option: str | None, configured: str | None) -> str | None:
    """``--endpoint-url`` (checked here), else the configured endpoint (checked by config)."""
    if option is not None and not option.startswith(("http://", "https://")):
        raise ConfigProblem(f"endpoint {option!r} must be an http:// or https:// URL")
    return option or configured


def s3_client(env: Environment, endpoint_url: str | None, pool: int, attempts: int = 3) -> Any:
    return make_s3_client(
        max_pool_connections=pool,
        endpoint_url=_endpoint(endpoint_url, env.s3_endpoint_url),
        region_name=env.region,
        read_timeout=60.0,
        max_attempts=attempts,
    )


def sqs_client(env: Environment, endpoint_url: str | None, read_timeout: float = 30.0) -> Any:
    """An SQS client; the endpoint as for S3: option, AWS_ENDPOINT_URL_SQS, AWS_ENDPOINT_URL."""
    config = Config(
        connect_timeout=3.0,
        read_timeout=read_timeout,
        retries={"mode": "standard", "total_max_attempts": 3},
    )
    session = boto3.session.Session()
    return session.client(
        "sqs",
        endpoint_url=_endpoint(endpoint_url, env.sqs_endpoint_url),
        region_name=env.region or "us-east-1",
        config=config,
    )


def tile_store(
    env: Environment, settings: Settings, s3: S3Place, pool: int, conditional: bool
) -> TileStore:
    """The bucket of --bucket / BUCKET_NAME, else the service's local directory."""
    name = s3.bucket or env.bucket
    if not name:
        return LocalStore(settings.local_cache_dir)
    return s3_store(settings, s3_client(env, s3.endpoint_url, pool=pool), name, conditional)


def grid_for(name: str | None, layer: Layer) -> TileGrid:
    try:
        return get_grid(name) if name else layer.tile_grid
    except GridError as err:
        raise ConfigProblem(f"--grid: {err}") from None


def parse_bbox(value: str) -> Bbox:
    """``--bbox west,south,east,north`` in degrees; ConfigProblem with the reason."""
    try:
        numbers = [float(part) for part in value.split(",")]
    except ValueError:
        numbers = []
    if len(numbers) != 4:
        raise ConfigProblem(f"--bbox {value!r}: expected west,south,east,north in degrees")
    return Bbox(*numbers)
