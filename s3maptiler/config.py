"""Settings from the environment and `.env`, validated once at start-up.

The Node prototype's four variables keep their meaning and describe one layer:
`WMS_SERVER`, `BUCKET_NAME`, `TILE_PREFIX`, `MAP_LAYERS`. Every other setting is an
environment variable with one documented name; `example_env.py` lists them all with
their defaults. The real environment wins over `.env`.

A bad value stops start-up with a `ConfigError` whose message is one line that names
the setting and what is wrong with it.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dotenv import dotenv_values

from s3maptiler.tiles.formats import EXTENSIONS, TILE_FORMATS, TileFormat, own_extension
from s3maptiler.tiles.grids import TileGrid, get_grid

WMS_VERSIONS = ("1.1.1", "1.3.0")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# Who may read /metrics by default: the instance itself (a local agent scraping
# 127.0.0.1:8000); through nginx and the load balancer nobody, as the client's own
# address is in X-Forwarded-For.
DEFAULT_METRICS_ALLOW = "127.0.0.0/8,::1"
DEFAULT_LAYER_NAME = "default"

# A key prefix: path segments of safe characters, each followed by "/".
_PREFIX_RE = re.compile(r"^(?:[A-Za-z0-9_.~-]+/)*$")
# A layer name: one URL path segment in TMS, WMTS and ArcGIS addresses.
LAYER_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# The Node prototype's documented prefix mirrors a TMS URL: 1.0.0/<name>/.
_TMS_PREFIX_RE = re.compile(r"^1\.0\.0/([A-Za-z0-9_-]{1,64})/$")


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the setting."""


@dataclass(frozen=True)
class Layer:
    """One tile layer: where its tiles live in the store and which WMS draws them."""

    name: str
    wms_url: str
    wms_layers: str
    prefix: str = "tiles/"
    wms_styles: str = ""
    wms_version: str = "1.1.1"
    transparent: bool = False
    bgcolor: str | None = None
    formats: tuple[str, ...] = ("png", "jpg", "jpeg")
    cache_control: str = "public, max-age=86400"
    grid: str = "GoogleMapsCompatible"
    layout: str = "tms"
    min_zoom: int = 0
    max_zoom: int = 22
    tile_size: int = 256
    title: str = ""
    format: str = "png"  # a TILE_FORMATS name: the format documents advertise
    extent: tuple[float, float, float, float] | None = None  # lon/lat; None: the grid's
    outside_extent: str = "404"  # "404" or "blank": the answer for a tile outside `extent`
    metatile: tuple[int, int] = (4, 4)  # columns, rows of tiles per WMS GetMap
    meta_buffer: int = 64  # pixels drawn around a metatile and cut away
    png_compress_level: int = 6  # zlib level of tiles cut from metatiles (bench/encode_cost.py)
    jpeg_quality: int = 90
    empty_tiles: str = "store"  # "store", or "redirect" to one shared blank (S3 website)
    grid_def: TileGrid | None = field(default=None, compare=False, repr=False)  # custom grids

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


def check_url(name: str, url: str) -> str:
    if not re.match(r"^https?://[^/\s?#]+", url) or any(c.isspace() for c in url):
        raise ConfigError(f"{name}: expected an http:// or https:// URL, got {url!r}")
    return url


def check_prefix(name: str, prefix: str) -> str:
    if prefix.startswith("/"):
        raise ConfigError(f"{name}: must not start with '/' (S3 keys have no leading slash)")
    if prefix and not prefix.endswith("/"):
        raise ConfigError(f"{name}: must end with '/' (got {prefix!r})")
    if not _PREFIX_RE.match(prefix) or "/../" in f"/{prefix}" or "/./" in f"/{prefix}":
        raise ConfigError(f"{name}: only letters, digits and _.~- in '/'-separated parts")
    return prefix


def default_layer_name(prefix: str) -> str:
    """LAYER_NAME when unset: ``<name>`` for a prefix of the form ``1.0.0/<name>/``
    (the prototype's ``TILE_PREFIX=1.0.0/tms-mercator-naip/``), so the layer's TMS
    address is the prefix itself; ``default`` for any other prefix.

    >>> default_layer_name("1.0.0/tms-mercator-naip/"), default_layer_name("tiles/")
    ('tms-mercator-naip', 'default')
    """
    match = _TMS_PREFIX_RE.match(prefix)
    return match[1] if match else DEFAULT_LAYER_NAME


def _layer_name(read: _Reader, prefix: str) -> str:
    name = read.text("LAYER_NAME")
    if name is None:
        return default_layer_name(prefix)
    if not LAYER_NAME_RE.match(name):
        raise ConfigError(f"LAYER_NAME: {name[:80]!r} must be 1-64 letters, digits, _ or -")
    return name


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
    if bgcolor is not None and not re.fullmatch(r"0x[0-9A-Fa-f]{6}", bgcolor):
        raise ConfigError(f"WMS_BGCOLOR: expected 0xRRGGBB, got {bgcolor!r}")
    min_zoom = read.integer("MIN_ZOOM", 0, 0, 24)
    max_zoom = read.integer("MAX_ZOOM", 22, 0, 24)
    if min_zoom > max_zoom:
        raise ConfigError(f"MIN_ZOOM: {min_zoom} is above MAX_ZOOM {max_zoom}")
    metatile = _metatile(read)
    prefix = check_prefix("TILE_PREFIX", read.text("TILE_PREFIX", "tiles/") or "")
    return Layer(
        name=_layer_name(read, prefix),
        wms_url=check_url("WMS_SERVER", wms_url),
        wms_layers=read.text("MAP_LAYERS") or _missing("MAP_LAYERS", "the WMS LAYERS to draw"),
        prefix=prefix,
        wms_styles=read.values.get("WMS_STYLES", "").strip(),
        wms_version=read.choice("WMS_VERSION", "1.1.1", WMS_VERSIONS),
        transparent=read.boolean("WMS_TRANSPARENT", False),
        bgcolor=bgcolor,
        formats=formats,
        # The first extension served is the layer's own format, the one documents,
        # the ArcGIS routes and seeding use.
        format="png" if formats[0] == "png" else "jpeg",
        cache_control=read.text("CACHE_CONTROL", "public, max-age=86400") or "",
        min_zoom=min_zoom,
        max_zoom=max_zoom,
        metatile=metatile,
        meta_buffer=read.integer("META_BUFFER", default_meta_buffer(metatile), 0, 512),
        png_compress_level=read.integer("PNG_COMPRESS_LEVEL", 6, 0, 9),
        jpeg_quality=read.integer("JPEG_QUALITY", 90, 1, 100),
        empty_tiles=read.choice("EMPTY_TILES", "store", ("store", "redirect")),
    )


def default_meta_buffer(metatile: tuple[int, int]) -> int:
    """META_BUFFER when unset: 64 px around a metatile, none for 1x1, so that each
    tile is one GetMap of exactly the tile and the WMS's bytes are passed through."""
    return 0 if metatile == (1, 1) else 64


def _metatile(read: _Reader) -> tuple[int, int]:
    raw = (read.text("METATILE", "4x4") or "4x4").lower()
    match = re.fullmatch(r"([0-9]{1,2})(?:x([0-9]{1,2}))?", raw)
    columns, rows = (int(match[1]), int(match[2] or match[1])) if match else (0, 0)
    # 8 x 8 tiles plus a buffer is about 2200 px: beyond that WMS size limits bite.
    if not (1 <= columns <= 8 and 1 <= rows <= 8):
        raise ConfigError(f"METATILE: expected columns x rows such as 4x4, each 1..8, got {raw!r}")
    return columns, rows


def _cors_origins(read: _Reader) -> tuple[str, ...]:
    origins = tuple(o.strip() for o in (read.text("CORS_ORIGINS", "*") or "*").split(","))
    for origin in origins:
        if origin != "*" and not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?", origin):
            raise ConfigError(f"CORS_ORIGINS: {origin!r} is not * or an origin like https://host")
    return origins


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
    return check_url(name, url).rstrip("/") if url else None


def _missing(name: str, what: str) -> str:
    raise ConfigError(f"{name}: not set ({what})")


def load_settings(
    environ: Mapping[str, str] | None = None, dotenv_path: str | Path | None = ".env"
) -> Settings:
    """Read and validate every setting; raise ConfigError naming the first bad one.

    `environ` defaults to `os.environ`; values in the `.env` file at `dotenv_path`
    fill only what the environment leaves unset.
    """
    values: dict[str, str] = {}
    if dotenv_path is not None and Path(dotenv_path).is_file():
        values.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    values.update(os.environ if environ is None else environ)
    read = _Reader(values)

    layers_file = read.text("LAYERS_FILE")
    if layers_file is not None:
        from s3maptiler.layersfile import load_layers_file  # imports config: load it late

        layers = load_layers_file(Path(layers_file))
    else:
        layers = (_layer_from_env(read),)
    bucket = read.text("BUCKET_NAME")
    if bucket is not None and not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
        raise ConfigError(f"BUCKET_NAME: {bucket!r} is not a valid S3 bucket name")
    miss_prefix = check_prefix("MISS_PREFIX", read.text("MISS_PREFIX", "miss/") or "")
    if not miss_prefix:
        raise ConfigError("MISS_PREFIX: must not be empty (it marks redirected misses)")
    for layer in layers:
        if layer.prefix.startswith(miss_prefix):
            raise ConfigError(f"MISS_PREFIX: {miss_prefix!r} overlaps layer {layer.name}'s prefix")
    endpoint = read.text("AWS_ENDPOINT_URL_S3") or read.text("AWS_ENDPOINT_URL")
    if endpoint is not None:
        check_url("AWS_ENDPOINT_URL", endpoint)
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
        metrics_allow=_metrics_allow(read),
    )
