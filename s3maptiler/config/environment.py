"""Settings from the environment and `.env`, validated once at start-up.

A `LAYERS_FILE` replaces the single-layer variables (:mod:`~s3maptiler.config.layersfile`);
both are checked by the one set of validators (:mod:`~s3maptiler.config.validators`).

The Node prototype's four variables keep their meaning and describe one layer:
`WMS_SERVER`, `BUCKET_NAME`, `TILE_PREFIX`, `MAP_LAYERS`. Every other setting is an
environment variable with one documented name; `example_env.py` lists them all with
their defaults. The real environment wins over `.env`.

A bad value stops start-up with a `ConfigError` whose message is one line that names
the setting and what is wrong with it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values

from s3maptiler.config import validators
from s3maptiler.config.hidpi import WMS_VENDORS
from s3maptiler.config.layersfile import load_layers_file
from s3maptiler.config.model import (
    DEFAULT_CACHE_CONTROL,
    DEFAULT_METRICS_ALLOW,
    WMS_VERSIONS,
    ConfigError,
    IPNetwork,
    Layer,
    Settings,
    checked,
    default_layer_name,
    default_meta_buffer,
    default_spool_dir,
)
from s3maptiler.config.sources import Credentials, credentials_from_env
from s3maptiler.tiles.dimensions import Dimension, parse_dimensions
from s3maptiler.tiles.formats import EXTENSIONS


class _Reader:
    """Reads typed values from a mapping of strings; errors name the variable."""

    def __init__(self, values: Mapping[str, str]):
        self.values = values

    def text(self, name: str, default: str | None = None) -> str | None:
        value = self.values.get(name)
        if value is None or value.strip() == "":
            return default
        return value.strip()

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        raw = self.text(name)
        if raw is None:
            return default
        if not re.fullmatch(r"[0-9]+", raw):
            raise ConfigError(f"{name}: expected a whole number, got {raw!r}")
        value = int(raw)
        if not low <= value <= high:
            raise ConfigError(f"{name}: {value} is outside {low}..{high}")
        return value

    def number(self, name: str, default: float, low: float, high: float) -> float:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name}: expected a number of seconds, got {raw!r}") from None
        if not low <= value <= high:
            raise ConfigError(f"{name}: {value} is outside {low}..{high}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        raw = self.text(name)
        if raw is None:
            return default
        lowered = raw.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}: expected true or false, got {raw!r}")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        raw = self.text(name, default)
        if raw not in choices:
            raise ConfigError(f"{name}: {raw!r} is not one of {', '.join(choices)}")
        return raw


def _layer_name(read: _Reader, prefix: str) -> str:
    name = read.text("LAYER_NAME")
    if name is None:
        return default_layer_name(prefix)
    return checked("LAYER_NAME", validators.layer_name, name)


def _layer_from_env(read: _Reader) -> Layer:
    wms_url = read.text("WMS_SERVER")
    if wms_url is None:
        raise ConfigError(
            "WMS_SERVER: not set (the WMS GetMap endpoint; `python application.py` "
            "starts the bundled demo WMS when it is unset)"
        )
    formats_text = read.text("TILE_FORMATS", "png,jpg,jpeg") or ""
    formats = tuple(dict.fromkeys(f.strip().lower() for f in formats_text.split(",")))
    for ext in formats:
        if ext not in EXTENSIONS:
            raise ConfigError(f"TILE_FORMATS: {ext!r} is not one of {', '.join(EXTENSIONS)}")
    bgcolor = read.text("WMS_BGCOLOR")
    if bgcolor is not None:
        checked("WMS_BGCOLOR", validators.bgcolor, bgcolor)
    min_zoom = read.integer("MIN_ZOOM", 0, 0, 24)
    max_zoom = read.integer("MAX_ZOOM", 22, 0, 24)
    if min_zoom > max_zoom:
        raise ConfigError(f"MIN_ZOOM: {min_zoom} is above MAX_ZOOM {max_zoom}")
    metatile = checked("METATILE", validators.metatile, read.text("METATILE", "4x4") or "4x4")
    prefix = checked("TILE_PREFIX", validators.key_prefix, read.text("TILE_PREFIX", "tiles/") or "")
    return Layer(
        name=_layer_name(read, prefix),
        wms_url=checked("WMS_SERVER", validators.url, wms_url),
        wms_layers=read.text("MAP_LAYERS") or _missing("MAP_LAYERS", "the WMS LAYERS to draw"),
        prefix=prefix,
        wms_styles=read.values.get("WMS_STYLES", "").strip(),
        wms_version=read.choice("WMS_VERSION", "1.1.1", WMS_VERSIONS),
        transparent=read.boolean("WMS_TRANSPARENT", False),
        bgcolor=bgcolor,
        formats=formats,
        # The first extension served is the layer's own format, the one documents,
        # the ArcGIS routes and seeding use.
        format="jpeg" if formats[0] in ("jpg", "jpeg") else formats[0],
        cache_control=read.text("CACHE_CONTROL", DEFAULT_CACHE_CONTROL) or "",
        cache_from_wms=read.boolean("CACHE_FROM_WMS", False),
        min_zoom=min_zoom,
        max_zoom=max_zoom,
        metatile=metatile,
        meta_buffer=read.integer("META_BUFFER", default_meta_buffer(metatile), 0, 512),
        png_compress_level=read.integer("PNG_COMPRESS_LEVEL", 6, 0, 9),
        jpeg_quality=read.integer("JPEG_QUALITY", 90, 1, 100),
        webp_quality=read.integer("WEBP_QUALITY", 80, 0, 100),
        webp_lossless=read.boolean("WEBP_LOSSLESS", False),
        pixel_ratios=checked(
            "PIXEL_RATIOS", validators.pixel_ratios, read.text("PIXEL_RATIOS", "1") or "1"
        ),
        wms_vendor=read.choice("WMS_VENDOR", "mapserver", WMS_VENDORS),
        empty_tiles=read.choice("EMPTY_TILES", "store", ("store", "redirect")),
        dimensions=_dimensions(read),
        credentials=_credentials(read),
    )


def _credentials(read: _Reader) -> Credentials | None:
    """SOURCE_USER, SOURCE_PASSWORD, SOURCE_HEADERS, SOURCE_PARAMS (config/sources.py)."""
    names = ("SOURCE_USER", "SOURCE_PASSWORD", "SOURCE_HEADERS", "SOURCE_PARAMS")
    values = {name: read.text(name) for name in (*names, "SOURCE_SECRETS_REFRESH")}
    try:
        return credentials_from_env(values)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _dimensions(read: _Reader) -> tuple[Dimension, ...]:
    """DIMENSIONS: the layers file's dimensions table as JSON, e.g.
    ``{"time": {"values": "2024-01-01/2024-12-01/P1M", "default": "2024-12-01"}}``."""
    raw = read.text("DIMENSIONS")
    if raw is None:
        return ()
    try:
        return parse_dimensions(json.loads(raw))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"DIMENSIONS: not JSON: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"DIMENSIONS: {exc}") from None


def _cors_origins(read: _Reader) -> tuple[str, ...]:
    origins = tuple(o.strip() for o in (read.text("CORS_ORIGINS", "*") or "*").split(","))
    return tuple(checked("CORS_ORIGINS", validators.cors_origin, origin) for origin in origins)


def _metrics_allow(read: _Reader) -> tuple[IPNetwork, ...] | None:
    raw = read.text("METRICS_ALLOW", DEFAULT_METRICS_ALLOW) or DEFAULT_METRICS_ALLOW
    if raw.lower() == "off":
        return None
    networks = []
    for item in (part.strip() for part in raw.split(",")):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(
                f"METRICS_ALLOW: {item[:60]!r} is not an IP network such as 10.0.0.0/16 "
                "(or set off)"
            ) from None
    return tuple(networks)


def _service_url(read: _Reader, name: str = "SERVICE_URL") -> str | None:
    url = read.text(name)
    return checked(name, validators.url, url).rstrip("/") if url else None


def _missing(name: str, what: str) -> str:
    raise ConfigError(f"{name}: not set ({what})")


def environment_values(
    environ: Mapping[str, str] | None = None, dotenv_path: str | Path | None = ".env"
) -> dict[str, str]:
    """`environ` (default `os.environ`) over the `.env` file at `dotenv_path`."""
    values: dict[str, str] = {}
    if dotenv_path is not None and Path(dotenv_path).is_file():
        values.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    values.update(os.environ if environ is None else environ)
    return values


def load_settings(
    environ: Mapping[str, str] | None = None, dotenv_path: str | Path | None = ".env"
) -> Settings:
    """Read and validate every setting; raise ConfigError naming the first bad one.

    `environ` defaults to `os.environ`; values in the `.env` file at `dotenv_path`
    fill only what the environment leaves unset.
    """
    read = _Reader(environment_values(environ, dotenv_path))

    layers_file = read.text("LAYERS_FILE")
    if layers_file is not None:
        layers = load_layers_file(Path(layers_file), read.text("WMS_SERVER"))
    else:
        layers = (_layer_from_env(read),)
    bucket = read.text("BUCKET_NAME")
    if bucket is not None and not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
        raise ConfigError(f"BUCKET_NAME: {bucket!r} is not a valid S3 bucket name")
    miss_prefix = checked(
        "MISS_PREFIX", validators.key_prefix, read.text("MISS_PREFIX", "miss/") or ""
    )
    if not miss_prefix:
        raise ConfigError("MISS_PREFIX: must not be empty (it marks redirected misses)")
    for layer in layers:
        if layer.prefix.startswith(miss_prefix):
            raise ConfigError(f"MISS_PREFIX: {miss_prefix!r} overlaps layer {layer.name}'s prefix")
    endpoint = read.text("AWS_ENDPOINT_URL_S3") or read.text("AWS_ENDPOINT_URL")
    if endpoint is not None:
        checked("AWS_ENDPOINT_URL", validators.url, endpoint)
    upload_workers = read.integer("UPLOAD_WORKERS", 4, 1, 256)
    upload_max_workers = read.integer("UPLOAD_MAX_WORKERS", max(32, upload_workers), 1, 1024)
    if upload_max_workers < upload_workers:
        raise ConfigError(
            f"UPLOAD_MAX_WORKERS: {upload_max_workers} is below UPLOAD_WORKERS {upload_workers}"
        )
    spool_dir = read.text("SPOOL_DIR")
    log_level = (read.text("LOG_LEVEL", "INFO") or "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"LOG_LEVEL: {log_level!r} is not a logging level")

    return Settings(
        layers=layers,
        bucket=bucket,
        local_cache_dir=Path(read.text("LOCAL_CACHE_DIR", "var/tiles") or "var/tiles"),
        miss_prefix=miss_prefix,
        cache_read=read.boolean("CACHE_READ", True),
        wms_connect_timeout=read.number("WMS_CONNECT_TIMEOUT", 3.05, 0.1, 60),
        wms_timeout=read.number("WMS_TIMEOUT", 30.0, 0.1, 600),
        wms_retries=read.integer("WMS_RETRIES", 2, 0, 10),
        # Half the threads by default: a hanging WMS never holds all of them, so
        # cached tiles and the health check still answer.
        wms_max_concurrent=read.integer(
            "WMS_MAX_CONCURRENT",
            max(read.integer("GUNICORN_THREADS", 32, 1, 1024) // 2, 1),
            1,
            1024,
        ),
        wms_queue_wait=read.number("WMS_QUEUE_WAIT", 1.0, 0.0, 600),
        wms_breaker_failures=read.integer("WMS_BREAKER_FAILURES", 5, 1, 1000),
        wms_breaker_cooldown=read.number("WMS_BREAKER_COOLDOWN", 10.0, 0.1, 3600),
        cors_origins=_cors_origins(read),
        tasks_enabled=read.boolean("TASKS_ENABLED", False),
        upload_workers=upload_workers,
        upload_max_workers=upload_max_workers,
        upload_queue=read.integer("UPLOAD_QUEUE", 2000, 1, 1_000_000),
        upload_retries=read.integer("UPLOAD_RETRIES", 3, 0, 20),
        s3_read_timeout=read.number("S3_READ_TIMEOUT", 2.0, 0.05, 60),
        s3_upload_timeout=read.number("S3_UPLOAD_TIMEOUT", 5.0, 0.1, 300),
        s3_breaker_failures=read.integer("S3_BREAKER_FAILURES", 3, 1, 1000),
        s3_breaker_cooldown=read.number("S3_BREAKER_COOLDOWN", 5.0, 0.1, 3600),
        s3_acl=read.text("S3_ACL"),
        s3_conditional_put=read.boolean("S3_CONDITIONAL_PUT", True),
        aws_endpoint_url=endpoint,
        aws_region=read.text("AWS_REGION") or read.text("AWS_DEFAULT_REGION"),
        public_url=_service_url(read, "PUBLIC_URL"),
        threads=read.integer("GUNICORN_THREADS", 32, 1, 1024),
        host=read.text("HOST", "127.0.0.1") or "127.0.0.1",
        port=read.integer("PORT", 8000, 1, 65535),
        log_level=log_level,
        service_url=_service_url(read),
        spool_dir=Path(spool_dir) if spool_dir else default_spool_dir(),
        fleet_leases=read.boolean("FLEET_LEASES", True),
        lease_seconds=read.number("LEASE_SECONDS", 6.0, 1.0, 600),
        metrics_allow=_metrics_allow(read),
    )
