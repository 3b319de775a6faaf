"""The one construction of the service and its per-process clients.

The web app (:func:`build_service`) and the CLI's seeding commands (:func:`wms_client`,
:func:`s3_store`) make their WMS client and stores here, from the same settings.
"""

from __future__ import annotations

from typing import Any

from s3maptiler import metrics
from s3maptiler.config import Settings
from s3maptiler.render.wms import WMSClient
from s3maptiler.service.leases import Leases
from s3maptiler.service.spool import Spool
from s3maptiler.service.storeguard import GuardedStore, StoreBreaker
from s3maptiler.service.tilepath import TileService
from s3maptiler.storage.blanks import SharedBlanks
from s3maptiler.storage.s3 import make_s3_client
from s3maptiler.storage.stores import LocalStore, S3Store, TileStore
from s3maptiler.storage.uploads import UploadJob, UploadPool

__all__ = ["READ_ATTEMPTS", "build_service", "s3_store", "wms_client"]


# S3 requests per tile read (GetObject) or lease call, retries included: a read is on
# the request path, and a failed one costs a render, less than botocore's backoff
# (up to seconds) before a second try; so one attempt, within S3_READ_TIMEOUT.
READ_ATTEMPTS = 1


def build_service(settings: Settings, store: TileStore | None = None) -> TileService:
    """Create the per-process clients (WMS session, S3 clients, upload pool) and the service.

    Two data-path S3 clients (storage/objects.py), one retry policy, two budgets:
    reads (and the fleet's leases) make at most READ_ATTEMPTS requests of
    S3_READ_TIMEOUT, uploads at most 1 + UPLOAD_RETRIES PutObjects of
    S3_UPLOAD_TIMEOUT. One breaker for the bucket stands in front of all three
    (service/storeguard.py). A given `store` (tests) serves both, without a breaker."""
    upload_store = store
    leases = breaker = None
    if store is None:
        if settings.bucket:
            store = _s3_store(settings, settings.threads, READ_ATTEMPTS, settings.s3_read_timeout)
            store.on_read_denied = metrics.STORE_READS_DENIED.inc
            upload_attempts = 1 + settings.upload_retries
            raw_uploads = _s3_store(
                settings, settings.upload_max_workers, upload_attempts, settings.s3_upload_timeout
            )
            breaker = StoreBreaker(
                store.location, settings.s3_breaker_failures, settings.s3_breaker_cooldown
            )
            upload_store = GuardedStore(raw_uploads, breaker, upload_attempts)
            if settings.fleet_leases:
                leases = Leases(
                    store.objects, settings.bucket, lease_seconds=settings.lease_seconds,
                    breaker=breaker,
                )  # fmt: skip
        else:
            store = upload_store = LocalStore(settings.local_cache_dir)
    wms = wms_client(settings, settings.threads)
    blanks = SharedBlanks()

    def settled(job: UploadJob, outcome: str) -> None:
        """Called once for every job the pool accepted, whatever became of it."""
        metrics.UPLOADS.labels(outcome).inc()
        metrics.UPLOAD_QUEUE.dec()
        blanks.settled(job, outcome)

    uploads = UploadPool(
        upload_store,
        workers=settings.upload_workers,
        max_workers=settings.upload_max_workers,
        max_pending=settings.upload_queue,
        on_result=settled,
    )
    spool = Spool(settings.spool_dir)
    return TileService(settings, store, wms, uploads, spool, leases, blanks, breaker)


def wms_client(settings: Settings, pool_size: int) -> WMSClient:
    """The process's WMS client, with the configured timeouts and retries."""
    return WMSClient(
        pool_size=pool_size,
        connect_timeout=settings.wms_connect_timeout,
        read_timeout=settings.wms_timeout,
        retries=settings.wms_retries,
    )


def s3_store(
    settings: Settings,
    client: Any,
    bucket: str | None = None,
    conditional: bool | None = None,
) -> S3Store:
    """The bucket (`bucket`, else BUCKET_NAME) through `client`, with the configured ACL
    and conditional writes (`conditional` None: S3_CONDITIONAL_PUT)."""
    name = bucket or settings.bucket
    assert name is not None
    if conditional is None:
        conditional = settings.s3_conditional_put
    return S3Store(name, client, acl=settings.s3_acl, conditional=conditional)


def _s3_store(settings: Settings, threads: int, attempts: int, timeout: float) -> S3Store:
    """A store whose tile reads and writes go through the data-path client (counted in
    /metrics); its boto3 client is the control plane (listing, for seeding tasks)."""
    client = make_s3_client(
        max_pool_connections=threads,
        endpoint_url=settings.aws_endpoint_url,
        region_name=settings.aws_region,
        connect_timeout=timeout,
        read_timeout=timeout,
        max_attempts=attempts,
    )
    # Listings (seeding tasks' "skip existing") go through boto3: counted as "list".
    client.meta.events.register(
        "before-send.s3.ListObjectsV2", lambda **_: metrics.count_s3_request("list")
    )
    store = s3_store(settings, client)
    # The data-path client shares the boto3 client's credentials, endpoint, region,
    # timeouts and budget (one credential chain per process); its requests are counted.
    store.objects.on_request = metrics.count_s3_request
    return store
