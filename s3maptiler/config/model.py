"""The configuration's data: a :class:`Layer` per tile layer and the :class:`Settings`
of the service, with the defaults every reader of settings shares."""

from __future__ import annotations

import ipaddress
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from s3maptiler.config.sources import Credentials, TileSourceSpec
from s3maptiler.tiles.dimensions import Dimension
from s3maptiler.tiles.formats import TILE_FORMATS, TileFormat, own_extension
from s3maptiler.tiles.grids import TileGrid, get_grid

T = TypeVar("T")

WMS_VERSIONS = ("1.1.1", "1.3.0")


# Who may read /metrics by default: the instance itself (a local agent scraping
# 127.0.0.1:8000); through nginx and the load balancer nobody, as the client's own
# address is in X-Forwarded-For.
DEFAULT_METRICS_ALLOW = "127.0.0.0/8,::1"


DEFAULT_LAYER_NAME = "default"

# What a tile is answered and stored with when its layer says nothing (CACHE_CONTROL).
DEFAULT_CACHE_CONTROL = "public, max-age=86400"


# The Node prototype's documented prefix mirrors a TMS URL: 1.0.0/<name>/.
_TMS_PREFIX_RE = re.compile(r"^1\.0\.0/([A-Za-z0-9_-]{1,64})/$")


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the setting."""


def checked(name: str, check: Callable[[Any], T], value: Any) -> T:
    """`check(value)`; its ValueError as a ConfigError naming the setting."""
    try:
        return check(value)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


@dataclass(frozen=True)
class Layer:
    """One tile layer: where its tiles live in the store and which WMS (or tile
    service, `tile_source`) draws them."""

    name: str
    wms_url: str
    wms_layers: str
    prefix: str = "tiles/"
    wms_styles: str = ""
    wms_version: str = "1.1.1"
    transparent: bool = False
    bgcolor: str | None = None
    formats: tuple[str, ...] = ("png", "jpg", "jpeg")
    cache_control: str = DEFAULT_CACHE_CONTROL
    # Tiles carry the lifetime the WMS's own Cache-Control/Expires/Last-Modified give
    # them instead of cache_control (render/freshness.py), and are rendered again once
    # it has passed.
    cache_from_wms: bool = False
    grid: str = "GoogleMapsCompatible"
    layout: str = "tms"
    min_zoom: int = 0
    max_zoom: int = 22
    tile_size: int = 256
    title: str = ""
    format: str = "png"  # png, png8, jpeg, webp or mixed: the format documents advertise
    extent: tuple[float, float, float, float] | None = None  # lon/lat; None: the grid's
    outside_extent: str = "404"  # "404" or "blank": the answer for a tile outside `extent`
    metatile: tuple[int, int] = (4, 4)  # columns, rows of tiles per WMS GetMap
    meta_buffer: int = 64  # pixels drawn around a metatile and cut away
    png_compress_level: int = 6  # zlib level of tiles cut from metatiles (bench/encode_cost.py)
    jpeg_quality: int = 90
    webp_quality: int = 80  # lossy WebP quality 0-100 (bench/encode_cost.py)
    webp_lossless: bool = False  # WebP without loss instead
    pixel_ratios: tuple[int, ...] = (1,)  # 2: also @2x keys of 2x tiles (config/hidpi.py)
    wms_vendor: str = "mapserver"  # which resolution parameter the WMS reads (hidpi.py)
    pixel_ratio: int = 1  # this layer's tiles: 2 for the layer "<name>@2x" of 2x tiles
    empty_tiles: str = "store"  # "store", or "redirect" to one shared blank (S3 website)
    grid_def: TileGrid | None = field(default=None, compare=False, repr=False)  # custom grids
    # TIME, ELEVATION, DIM_<name>: each value's tiles under {prefix}{value}/ (tiles/dimensions.py)
    dimensions: tuple[Dimension, ...] = ()
    # How requests to the upstream authenticate (config/sources.py); None: they do not.
    credentials: Credentials | None = field(default=None, repr=False)
    # A tile service instead of the WMS: one upstream tile per tile (config/sources.py).
    tile_source: TileSourceSpec | None = None
    # A PMTiles archive (s3://bucket/key, a key in the bucket, or a local path) that
    # answers the zooms pmtiles_zooms (lowest, highest) instead of the WMS.
    pmtiles: str | None = None
    pmtiles_zooms: tuple[int, int] | None = None

    @property
    def tile_format(self) -> TileFormat:
        return TILE_FORMATS[self.format]

    @property
    def extension(self) -> str:
        """The extension of the layer's own format in keys and URLs, one it serves:
        documents, the ArcGIS routes and seeding use it (TILE_FORMATS=jpeg,png: jpeg)."""
        return own_extension(self.tile_format, self.formats)

    @property
    def tile_grid(self) -> TileGrid:
        """The layer's grid object: a custom one from the layers file, else a named one."""
        return self.grid_def or get_grid(self.grid)


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from its environment."""

    layers: tuple[Layer, ...]
    bucket: str | None = None
    local_cache_dir: Path = Path("var/tiles")
    miss_prefix: str = "miss/"
    cache_read: bool = True
    wms_connect_timeout: float = 3.05
    wms_timeout: float = 30.0
    wms_retries: int = 2
    wms_max_concurrent: int = 16  # per layer; default half the threads
    wms_queue_wait: float = 1.0  # seconds to wait for a WMS slot before answering 503
    wms_breaker_failures: int = 5
    wms_breaker_cooldown: float = 10.0
    cors_origins: tuple[str, ...] = ("*",)
    tasks_enabled: bool = False
    upload_workers: int = 4
    upload_max_workers: int = 32  # the pool grows to this many threads while a backlog lasts
    upload_queue: int = 2000
    upload_retries: int = 3
    s3_read_timeout: float = 2.0  # seconds: a tile read or lease call, one attempt
    s3_upload_timeout: float = 5.0  # seconds per PutObject attempt of an upload
    s3_breaker_failures: int = 3
    s3_breaker_cooldown: float = 5.0
    s3_acl: str | None = None
    s3_conditional_put: bool = True
    aws_endpoint_url: str | None = None
    aws_region: str | None = None
    public_url: str | None = None  # the bucket's public URL (website endpoint, CloudFront)
    threads: int = 32
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    service_url: str | None = None  # public URL of the service, for URLs in documents
    spool_dir: Path = field(default_factory=lambda: default_spool_dir())
    fleet_leases: bool = True  # share metatile renders between instances through the bucket
    lease_seconds: float = 6.0  # a lease's life unless renewed (every third of it)
    # Networks that may read /metrics (every hop of a request must be in one); None: off.
    metrics_allow: tuple[IPNetwork, ...] | None = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1"),
    )

    @property
    def bucket_url(self) -> str | None:
        """Where browsers get the bucket's tiles: PUBLIC_URL, else the bucket's S3 website
        endpoint on AWS (bucket and region known, no custom AWS_ENDPOINT_URL), else None."""
        if self.public_url:
            return self.public_url
        if self.bucket and self.aws_region and not self.aws_endpoint_url:
            return website_endpoint(self.bucket, self.aws_region)
        return None

    @property
    def store_location(self) -> str:
        """Where tiles are written, for logs and the index page."""
        return f"s3://{self.bucket}" if self.bucket else str(self.local_cache_dir)


# Regions whose website endpoints are s3-website-<region> (a dash); every other region's
# is s3-website.<region> (a dot). From the AWS list of website endpoints.
_DASH_WEBSITE_REGIONS = frozenset(
    {
        "us-east-1",
        "us-west-1",
        "us-west-2",
        "ap-southeast-1",
        "ap-southeast-2",
        "ap-northeast-1",
        "eu-west-1",
        "sa-east-1",
        "us-gov-west-1",
    }
)


def website_endpoint(bucket: str, region: str) -> str:
    """The S3 static website endpoint of a bucket on AWS (HTTP only).

    >>> website_endpoint("my-tiles", "us-east-1")
    'http://my-tiles.s3-website-us-east-1.amazonaws.com'
    >>> website_endpoint("my-tiles", "eu-central-1")
    'http://my-tiles.s3-website.eu-central-1.amazonaws.com'
    """
    separator = "-" if region in _DASH_WEBSITE_REGIONS else "."
    return f"http://{bucket}.s3-website{separator}{region}.amazonaws.com"


def default_spool_dir() -> Path:
    """Where the workers of a host share renders: memory-backed where the host has it."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
    return Path(base) / f"s3maptiler-spool-{os.getuid()}"


def default_layer_name(prefix: str) -> str:
    """LAYER_NAME when unset: ``<name>`` for a prefix of the form ``1.0.0/<name>/``
    (the prototype's ``TILE_PREFIX=1.0.0/tms-mercator-naip/``), so the layer's TMS
    address is the prefix itself; ``default`` for any other prefix.

    >>> default_layer_name("1.0.0/tms-mercator-naip/"), default_layer_name("tiles/")
    ('tms-mercator-naip', 'default')
    """
    match = _TMS_PREFIX_RE.match(prefix)
    return match[1] if match else DEFAULT_LAYER_NAME


def default_meta_buffer(metatile: tuple[int, int]) -> int:
    """META_BUFFER when unset: 64 px around a metatile, none for 1x1, so that each
    tile is one GetMap of exactly the tile and the WMS's bytes are passed through."""
    return 0 if metatile == (1, 1) else 64


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
