"""Every setting s3maptiler reads, with its default and one line each.

Set them in the environment (Elastic Beanstalk: `eb setenv`, or `.ebextensions`), or
in a `.env` file beside application.py; the real environment wins over `.env`.
`python example_env.py > .env` writes a commented template to start from.
"""

# (name, default or None when unset, what it means)
SETTINGS: list[tuple[str, str | None, str]] = [
    # The Node prototype's four variables: they describe one layer.
    (
        "WMS_SERVER",
        None,
        "WMS GetMap endpoint URL; unset: `python application.py` starts the demo WMS",
    ),
    ("BUCKET_NAME", None, "S3 bucket for tiles; unset: tiles go to LOCAL_CACHE_DIR"),
    (
        "TILE_PREFIX",
        "tiles/",
        "key prefix of the tiles in the bucket, ending in '/' (may be empty)",
    ),
    ("MAP_LAYERS", None, "the WMS LAYERS parameter (comma-separated WMS layer names)"),
    (
        "LAYER_NAME",
        None,
        "the layer's name in TMS, WMTS and ArcGIS addresses; unset: <name> when TILE_PREFIX "
        "is 1.0.0/<name>/, else default",
    ),
    # WMS requests.
    (
        "WMS_VERSION",
        "1.1.1",
        "WMS version: 1.1.1 or 1.3.0 (1.3.0 with EPSG:4326 swaps the axis order)",
    ),
    ("WMS_STYLES", "", "the WMS STYLES parameter; always sent, empty means default styles"),
    ("WMS_TRANSPARENT", "false", "ask the WMS for a transparent background (PNG only)"),
    ("WMS_BGCOLOR", None, "the WMS BGCOLOR parameter, 0xRRGGBB"),
    (
        "DIMENSIONS",
        None,
        'the layer\'s dimensions as JSON, e.g. {"time": {"values": "2024-01-01/2024-12-01/P1M", "default": "2024-12-01"}}: TIME=, ELEVATION=, DIM_<name>= in GetMaps, each value\'s tiles under TILE_PREFIX<value>/',
    ),
    ("WMS_CONNECT_TIMEOUT", "3.05", "seconds to wait for a connection to the WMS"),
    ("WMS_TIMEOUT", "30", "seconds to wait for the WMS to answer; past it the tile is a 504"),
    ("WMS_RETRIES", "2", "retries on WMS connection errors and 5xx answers (never on timeouts)"),
    (
        "WMS_MAX_CONCURRENT",
        "GUNICORN_THREADS/2",
        "GetMaps in flight per layer; more wait WMS_QUEUE_WAIT, then get 503",
    ),
    ("WMS_QUEUE_WAIT", "1", "seconds a request waits for a free WMS slot before a 503"),
    (
        "WMS_BREAKER_FAILURES",
        "5",
        "consecutive WMS timeouts/connection errors that open the circuit breaker",
    ),
    ("WMS_BREAKER_COOLDOWN", "10", "seconds the open breaker answers 503 without asking the WMS"),
    ("CORS_ORIGINS", "*", "origins allowed to read tiles and documents (comma-separated, or *)"),
    (
        "TILE_FORMATS",
        "png,jpg,jpeg",
        "tile extensions served (png, jpg, jpeg, webp, mixed), each asks the WMS for its format (PNG for webp and mixed); the first is what documents, ArcGIS routes and seeding use",
    ),
    (
        "METATILE",
        "4x4",
        "tiles per WMS GetMap, columns x rows (1x1: each tile its own GetMap, bytes untouched)",
    ),
    (
        "META_BUFFER",
        None,
        "pixels drawn around a metatile and cut away, so edge labels are whole; unset: 64, or 0 with METATILE=1x1",
    ),
    (
        "PNG_COMPRESS_LEVEL",
        "6",
        "zlib level 0-9 of PNG tiles cut from metatiles (3: 0.4 ms/tile faster, 27% larger)",
    ),
    ("JPEG_QUALITY", "90", "quality 1-100 of JPEG tiles cut from metatiles"),
    (
        "WEBP_QUALITY",
        "80",
        "quality 0-100 of lossy WebP tiles (TILE_FORMATS with webp; the WMS is asked for PNG)",
    ),
    (
        "WEBP_LOSSLESS",
        "false",
        "WebP tiles without loss instead (about half the bytes of PNG, 2.7x those of lossy quality 80)",
    ),
    (
        "PIXEL_RATIOS",
        "1",
        "1,2 also serves 2x tiles: 512 px, the same ground, keys {z}/{x}/{y}@2x.png, the layer <name>@2x in documents (3 for @3x)",
    ),
    (
        "WMS_VENDOR",
        "mapserver",
        "the WMS's resolution parameter for 2x tiles: mapserver (MAP_RESOLUTION), geoserver (FORMAT_OPTIONS=dpi:), qgis (DPI) or none",
    ),
    # Credentials of the upstream (see README "Sources"): literal values, or references
    # env:NAME, file:/path, secretsmanager:<id>[#field], ssm:/param read at start-up.
    ("SOURCE_USER", None, "HTTP basic user name for the WMS (with SOURCE_PASSWORD)"),
    ("SOURCE_PASSWORD", None, "HTTP basic password, e.g. file:/run/secrets/wms_password"),
    (
        "SOURCE_HEADERS",
        None,
        'request headers as JSON, e.g. {"X-API-Key": "secretsmanager:imagery#key"}',
    ),
    ("SOURCE_PARAMS", None, 'query parameters as JSON, e.g. {"token": "ssm:/arcgis/token"}'),
    ("SOURCE_SECRETS_REFRESH", "300", "seconds between reads of referenced secrets (10-86400)"),
    (
        "EMPTY_TILES",
        "store",
        "uniform tiles: store each, or 'redirect' each to one shared blank object",
    ),
    (
        "LAYERS_FILE",
        None,
        "a TOML file of many layers (see layers.example.toml); replaces the layer above",
    ),
    ("MIN_ZOOM", "0", "lowest zoom level served; others are 404"),
    ("MAX_ZOOM", "22", "highest zoom level served; others are 404"),
    # Cache and uploads.
    ("CACHE_CONTROL", "public, max-age=86400", "Cache-Control of tile responses and S3 objects"),
    (
        "CACHE_FROM_WMS",
        "false",
        "true: tiles live as long as the WMS's own Cache-Control/Expires/Last-Modified say, "
        "instead of CACHE_CONTROL; expired tiles are drawn again on the next read",
    ),
    ("CACHE_READ", "true", "read the store before rendering (false: every request renders)"),
    (
        "MISS_PREFIX",
        "miss/",
        "path prefix the S3 redirect rule adds (ReplaceKeyPrefixWith): a known miss",
    ),
    ("LOCAL_CACHE_DIR", "var/tiles", "directory store used when BUCKET_NAME is unset"),
    (
        "UPLOAD_WORKERS",
        "4",
        "upload threads per process while idle; more start while uploads queue up",
    ),
    (
        "UPLOAD_MAX_WORKERS",
        "32",
        "upload threads per process at most (each holds one S3 connection)",
    ),
    ("UPLOAD_QUEUE", "2000", "tiles waiting for upload per process; more are dropped and counted"),
    (
        "UPLOAD_RETRIES",
        "3",
        "retries of a PutObject by the S3 client (botocore standard mode): at most 1+UPLOAD_RETRIES PutObjects per tile",
    ),
    (
        "S3_READ_TIMEOUT",
        "2",
        "seconds a tile read or lease call waits for S3 (connect, then answer), made once: past it the tile is rendered",
    ),
    (
        "S3_UPLOAD_TIMEOUT",
        "5",
        "seconds an upload's PutObject waits for S3 (connect, then answer), per attempt",
    ),
    (
        "S3_BREAKER_FAILURES",
        "3",
        "consecutive refused, timed-out or throttled S3 calls that open the store's breaker",
    ),
    (
        "S3_BREAKER_COOLDOWN",
        "5",
        "seconds the open breaker skips S3 (reads are misses, no leases, uploads counted skipped)",
    ),
    ("S3_ACL", None, "canned ACL for uploads (e.g. public-read); unset: none, use a bucket policy"),
    ("S3_CONDITIONAL_PUT", "true", "upload with If-None-Match: * so a tile is written once"),
    ("AWS_ENDPOINT_URL", None, "S3-compatible endpoint (MinIO, moto); AWS_ENDPOINT_URL_S3 wins"),
    ("AWS_REGION", None, "AWS region of the bucket (AWS_DEFAULT_REGION also works)"),
    # The whole loop on this machine (`make run-website`).
    (
        "LOCAL_WEBSITE",
        "false",
        "`python application.py` also starts LocalStack's S3 and makes BUCKET_NAME (default s3maptiler-demo) there a tile cache whose website endpoint redirects misses here",
    ),
    (
        "LOCAL_WEBSITE_PORT",
        "4566",
        "port of that LocalStack; the bucket's website is http://<bucket>.s3-website.localhost:<port>/",
    ),
    # Process.
    (
        "PUBLIC_URL",
        None,
        "public URL of the bucket (website or CloudFront): `s3maptiler publish`, the preview's bucket address; unset: the S3 website endpoint of BUCKET_NAME in AWS_REGION",
    ),
    (
        "SERVICE_URL",
        None,
        "the service's public URL, for URLs in its documents; unset: the request's host",
    ),
    (
        "METRICS_ALLOW",
        "127.0.0.0/8,::1",
        "networks (CIDRs) that may read /metrics: the peer and every X-Forwarded-For hop must be in them; off: no /metrics",
    ),
    (
        "TASKS_ENABLED",
        "false",
        "serve POST /tasks/seed (an Elastic Beanstalk worker tier's SQS daemon)",
    ),
    ("HOST", "127.0.0.1", "address to listen on"),
    ("PORT", "8000", "port to listen on (Elastic Beanstalk's nginx forwards to 8000)"),
    (
        "WEB_CONCURRENCY",
        "cores",
        "gunicorn worker processes; default one per CPU core (workers share renders)",
    ),
    (
        "SPOOL_DIR",
        "/dev/shm/s3maptiler-spool-<uid>",
        "where a host's workers share metatile locks and finished renders (local disk or memory)",
    ),
    (
        "FLEET_LEASES",
        "true",
        "with BUCKET_NAME: instances share metatile renders through lease objects under _leases/",
    ),
    (
        "LEASE_SECONDS",
        "6",
        "seconds a metatile lease lasts unless its holder renews it (every third of it): a dead holder's metatile is taken over after this",
    ),
    ("GUNICORN_THREADS", "32", "threads per gunicorn worker; also sizes the WMS and S3 pools"),
    ("GRACEFUL_TIMEOUT", "45", "seconds gunicorn gives a stopping worker to drain uploads"),
    (
        "MALLOC_ARENA_MAX",
        "2",
        "glibc malloc arenas per worker (fewer: less memory with many threads)",
    ),
    (
        "MAX_REQUESTS",
        "0",
        "gunicorn recycles a worker after this many requests (0: never; uploads drain first)",
    ),
    (
        "PROMETHEUS_MULTIPROC_DIR",
        None,
        "where workers keep /metrics samples; unset: gunicorn.conf.py makes a temp dir",
    ),
    ("LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR"),
    (
        "DEMO_DIR",
        None,
        "the demo WMS's folder (demo.map), when WMS_SERVER is unset; unset: demo/ beside the package, then in the working directory",
    ),
]


def template() -> str:
    """The `.env` template: every setting commented out at its default, so the file
    changes nothing until a line is uncommented (some defaults, such as "cores" or
    "GUNICORN_THREADS/2", say how the value is worked out and are not values)."""
    lines = []
    for name, default, meaning in SETTINGS:
        lines += [f"# {meaning}", f"# {name}={default if default is not None else ''}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(template(), end="")
