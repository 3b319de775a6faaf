"""Prometheus metrics, safe with several gunicorn workers.

With `PROMETHEUS_MULTIPROC_DIR` set (gunicorn.conf.py sets it to a fresh directory
when it is unset), every worker writes its samples to files there and `/metrics`
sums them; without it (tests, `python application.py`) the process's own registry
is used.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

TILE_REQUESTS = Counter(
    "s3maptiler_tile_requests_total",
    "Tile requests answered, by layer, where the tile came from and HTTP status.",
    ["layer", "source", "status"],
)
WMS_SECONDS = Histogram(
    "s3maptiler_wms_request_seconds",
    "Time for a WMS GetMap that returned an image (retries included).",
    ["layer"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
WMS_ERRORS = Counter(
    "s3maptiler_wms_errors_total",
    "WMS GetMaps that gave no tile, by layer and kind (timeout, exception_report, ...).",
    ["layer", "kind"],
)
UPLOADS = Counter(
    "s3maptiler_uploads_total",
    "Tiles handed to the upload queue, by outcome (stored, exists; and unstored: failed,"
    " skipped while the store's breaker was open, dropped).",
    ["outcome"],
)
UPLOAD_QUEUE = Gauge(
    "s3maptiler_upload_queue_depth",
    "Tiles waiting for or in upload.",
    multiprocess_mode="livesum",
)
STORE_READS_DENIED = Counter(
    "s3maptiler_store_reads_denied_total",
    "Tile reads the store refused with 403 (no s3:GetObject, or a missing key without "
    "s3:ListBucket); each is rendered as a miss.",
)
STORE_CALLS_SKIPPED = Counter(
    "s3maptiler_store_calls_skipped_total",
    "S3 calls not made because the store's circuit breaker was open, by call (read: the"
    " tile was rendered; lease: rendered without one; write: the tile is unstored).",
    ["call"],
)
STORE_BREAKER_OPENED = Counter(
    "s3maptiler_store_breaker_opened_total",
    "Times the store's circuit breaker opened (consecutive refused, timed-out or"
    " throttled S3 calls).",
)
S3_REQUESTS = Counter(
    "s3maptiler_s3_requests_total",
    "S3 requests the data-path client sent, retries included, by kind: get (tile reads),"
    " put and put_conditional (tile writes), lease_put and lease_get (the fleet's"
    " leases), head (HeadBucket), list (ListObjectsV2 of seeding tasks); for checking"
    " cost estimates against the bill.",
    ["kind"],
)
SINGLE_FLIGHT_WAITS = Counter(
    "s3maptiler_single_flight_waits_total",
    "Requests served by another's store read or render, by where that ran: another"
    " thread of the worker, another worker of the host, or another instance.",
    ["ring"],
)


def count_s3_request(kind: str) -> None:
    """One S3 request of `kind` sent (the data-path client's on_request)."""
    S3_REQUESTS.labels(kind).inc()


def exposition() -> tuple[bytes, str]:
    """The text of /metrics and its Content-Type."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
