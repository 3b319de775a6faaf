"""Distributed seeding through Amazon SQS: the message format, the sender, the worker.

A message is a small JSON object with tile coordinates only (SQS takes at most
256 KiB; images never travel through the queue)::

    {"v": 1, "layer": "demo", "ext": "png", "skip_existing": false,
     "metatiles": [{"z": 12, "x": 1204, "y": 1536}, {"z": 12, "x": 1208, "y": 1536,
                    "tiles": [[1208, 1536], [1209, 1536]]}]}

``x``, ``y`` are the top-left tile of a metatile (rows from the top); ``tiles``
lists the tiles to store when the coverage holds only some of them. An optional
``refresh_before`` (seconds since the epoch) draws again the tiles stored before it
and skips the younger ones (``seed --refresh-older-than``). A message for a
layer with dimensions names one value of each, for all its metatiles, and is
version 2, so that a worker that predates dimensions refuses it rather than drawing
the defaults::

    {"v": 2, "layer": "rain", "ext": "png", "dimensions": {"time": "2024-03-01"},
     "skip_existing": false, "metatiles": [{"z": 5, "x": 8, "y": 8}]}

The same body is handled by ``s3maptiler worker`` (:func:`run_worker`: long polling,
visibility extended while rendering, DeleteMessage on success, failures left for the
queue's redrive policy) and by ``POST /tasks/seed`` when an Elastic Beanstalk worker
environment's sqsd delivers it (200 = delete). A job delivered twice does no harm:
it is drawn again, or skipped when its tiles are stored and ``skip_existing`` is set,
and conditional writes keep the first copy.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from botocore.exceptions import BotoCoreError, ClientError

from s3maptiler.render.errors import WMSError
from s3maptiler.render.runtime import LayerRuntime
from s3maptiler.render.wms import WMSClient
from s3maptiler.seeding.existing import ListingCache
from s3maptiler.seeding.plan import BadJob, MetaJob
from s3maptiler.seeding.run import Drawing, RenderCounts, render_metatile
from s3maptiler.storage.blanks import SharedBlanks
from s3maptiler.storage.s3 import StoreError
from s3maptiler.storage.stores import TileStore

__all__ = [
    "MAX_BATCH",
    "MAX_MESSAGE_BYTES",
    "BadMessage",
    "EnqueueReport",
    "JobError",
    "JobFailed",
    "Message",
    "QueueError",
    "QueueStatus",
    "decode_message",
    "encode_messages",
    "enqueue",
    "handle_message",
    "queue_status",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DIMENSIONS_VERSION = 2  # messages with dimension values
MAX_BATCH = 10  # SendMessageBatch and ReceiveMessage take at most 10
MAX_MESSAGE_BYTES = 256 * 1024  # SQS's limit for one message, and for one batch
MAX_METATILES_PER_MESSAGE = 100  # keeps a message far below the limit and one job short


class JobError(Exception):
    """Base class for every error raised by this module; the message is one line."""


class BadMessage(JobError, ValueError):
    """A body that is not a seed message (HTTP 400; never succeeds on retry)."""


class JobFailed(JobError):
    """A metatile of the message could not be drawn or stored (the queue retries it).
    ``status`` is the HTTP status for sqsd: 502 for the WMS, 500 for the store."""

    def __init__(self, reason: str, status: int = 502) -> None:
        super().__init__(reason)
        self.status = status


class QueueError(JobError):
    """An SQS call failed (the queue does not exist, credentials, the network)."""


class Message(NamedTuple):
    """One seed message: metatiles of one layer and format."""

    layer: str
    ext: str
    metatiles: tuple[MetaJob, ...]
    skip_existing: bool = False
    refresh_before: float | None = None  # seconds since the epoch: redraw older tiles


def encode_messages(
    jobs: Iterable[MetaJob],
    per_message: int = 1,
    skip_existing: bool = False,
    refresh_before: float | None = None,
) -> Iterator[str]:
    """Message bodies (JSON text) of ``per_message`` metatiles each; jobs of another
    layer, format or dimension values start a new message. ``refresh_before`` (``seed
    --refresh-older-than``) is sent only when set."""
    if not 1 <= per_message <= MAX_METATILES_PER_MESSAGE:
        raise ValueError(f"per_message must be 1..{MAX_METATILES_PER_MESSAGE}")
    batch: list[MetaJob] = []

    def body() -> str:
        first = batch[0]
        doc: dict[str, Any] = {"v": FORMAT_VERSION, "layer": first.layer, "ext": first.ext}
        if first.dimensions:
            doc.update(v=DIMENSIONS_VERSION, dimensions=dict(first.dimensions))
        doc.update(skip_existing=skip_existing, metatiles=[_coordinates(job) for job in batch])
        if refresh_before is not None:
            doc["refresh_before"] = refresh_before
        return json.dumps(doc, separators=(",", ":"))

    def same(job: MetaJob) -> tuple:
        return (job.layer, job.ext, job.dimensions)

    for job in jobs:
        if batch and (len(batch) == per_message or same(job) != same(batch[0])):
            yield body()
            batch = []
        batch.append(job)
    if batch:
        yield body()


def _coordinates(job: MetaJob) -> dict[str, Any]:
    doc = job.to_dict()
    del doc["layer"], doc["ext"]
    doc.pop("dimensions", None)
    return doc


def decode_message(body: str | bytes | Mapping[str, Any]) -> Message:
    """Parse a message body; raises BadMessage with a one-line reason."""
    if isinstance(body, Mapping):
        doc: Any = body
    else:
        if len(body) > MAX_MESSAGE_BYTES:
            raise BadMessage(f"message larger than {MAX_MESSAGE_BYTES} bytes")
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise BadMessage("message body is not JSON") from None
    if not isinstance(doc, Mapping):
        raise BadMessage("message body must be a JSON object")
    if doc.get("v", FORMAT_VERSION) not in (FORMAT_VERSION, DIMENSIONS_VERSION):
        raise BadMessage(f"message version {doc.get('v')!r} is not {FORMAT_VERSION} or 2")
    layer, ext, metatiles = doc.get("layer"), doc.get("ext"), doc.get("metatiles")
    if not isinstance(layer, str) or not isinstance(ext, str):
        raise BadMessage("message needs text fields layer and ext")
    if not isinstance(metatiles, list) or not metatiles:
        raise BadMessage("message needs a non-empty list metatiles")
    if len(metatiles) > MAX_METATILES_PER_MESSAGE:
        raise BadMessage(f"more than {MAX_METATILES_PER_MESSAGE} metatiles in one message")
    skip = doc.get("skip_existing", False)
    if not isinstance(skip, bool):
        raise BadMessage("skip_existing must be true or false")
    refresh = doc.get("refresh_before")
    if refresh is not None and (
        isinstance(refresh, bool) or not isinstance(refresh, int | float) or not refresh >= 0
    ):
        raise BadMessage("refresh_before must be seconds since the epoch")
    shared = {"layer": layer, "ext": ext, "dimensions": doc.get("dimensions")}
    try:
        jobs = tuple(
            MetaJob.from_dict({**m, **shared} if isinstance(m, Mapping) else m) for m in metatiles
        )
    except BadJob as exc:
        raise BadMessage(str(exc)) from None
    return Message(layer, ext, jobs, skip, refresh)


def handle_message(
    body: str | bytes | Mapping[str, Any],
    layers: Mapping[str, LayerRuntime],
    wms: WMSClient,
    store: TileStore,
    blanks: SharedBlanks | None = None,
) -> RenderCounts:
    """Draw and store every metatile of one message; the work of the worker and of
    ``POST /tasks/seed``. ``blanks``: the shared blanks known to be in ``store``,
    kept by the caller across messages. Raises BadMessage (malformed, unknown layer or
    metatile) or JobFailed after trying every metatile, when any of them failed."""
    message = decode_message(body)
    runtime = layers.get(message.layer)
    if runtime is None:
        raise BadMessage(f"no layer named {message.layer[:64]!r}")
    refresh = message.refresh_before is not None
    listing = message.skip_existing or refresh
    existing = ListingCache(store, message.refresh_before) if listing else None
    drawing = Drawing(wms, store, blanks or SharedBlanks(), existing, overwrite=refresh)
    total = RenderCounts()
    failed: list[tuple[MetaJob, JobFailed]] = []
    for job in message.metatiles:
        try:
            total.add(render_metatile(runtime, job, drawing))
        except BadJob as exc:
            raise BadMessage(str(exc)) from None
        except WMSError as exc:
            failed.append((job, JobFailed(f"{job.describe()}: {exc.kind}: {exc}", 502)))
        except StoreError as exc:
            failed.append((job, JobFailed(f"{job.describe()}: store: {exc}", 500)))
    if failed:
        first = failed[0][1]
        more = f" (and {len(failed) - 1} more metatiles)" if len(failed) > 1 else ""
        raise JobFailed(f"{first}{more}", first.status)
    return total


# --------------------------------------------------------------------------- sending


@dataclass
class EnqueueReport:
    """Messages sent and messages SQS refused (after retries), with the reasons."""

    sent: int = 0
    failed: int = 0
    reasons: list[str] | None = None


def sqs_call(what: str, call: Callable[[], Any]) -> Any:
    try:
        return call()
    except (ClientError, BotoCoreError) as exc:
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            reason = f"{error.get('Code', '?')} {error.get('Message') or ''}".strip()
        else:
            reason = str(exc)
        raise QueueError(f"{what}: {reason}") from exc


def enqueue(
    sqs: Any,
    queue_url: str,
    bodies: Iterable[str],
    retries: int = 3,
    on_sent: Callable[[int], None] | None = None,
) -> EnqueueReport:
    """Send message bodies with SendMessageBatch, ten per call (and at most 256 KiB);
    entries SQS refuses are sent again up to ``retries`` times. Raises QueueError
    when a call fails as a whole."""
    report = EnqueueReport(reasons=[])
    for batch in _batches(bodies):
        pending = {str(i): body for i, body in enumerate(batch)}
        for attempt in range(retries + 1):
            entries = [{"Id": i, "MessageBody": b} for i, b in pending.items()]
            answer = sqs_call(
                f"SendMessageBatch {queue_url}",
                lambda entries=entries: sqs.send_message_batch(QueueUrl=queue_url, Entries=entries),
            )
            for ok in answer.get("Successful", []):
                pending.pop(ok["Id"], None)
                report.sent += 1
                if on_sent:
                    on_sent(1)
            refused = answer.get("Failed", [])
            if not pending:
                break
            if attempt == retries or all(f.get("SenderFault") for f in refused):
                report.failed += len(pending)
                report.reasons.extend(f"{f.get('Code')}: {f.get('Message', '')}" for f in refused)
                break
            time.sleep(0.2 * 2**attempt)
    return report


def _batches(bodies: Iterable[str]) -> Iterator[list[str]]:
    batch: list[str] = []
    size = 0
    for body in bodies:
        length = len(body.encode())
        if batch and (len(batch) == MAX_BATCH or size + length > MAX_MESSAGE_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(body)
        size += length
    if batch:
        yield batch


# --------------------------------------------------------------------------- status


class QueueStatus(NamedTuple):
    """ApproximateNumberOfMessages (waiting), ...NotVisible (being worked on) and
    ...Delayed. SQS's counts are approximate and lag by up to a minute on AWS."""

    waiting: int
    in_flight: int
    delayed: int

    @property
    def drained(self) -> bool:
        return self.waiting == 0 and self.in_flight == 0 and self.delayed == 0


def queue_status(sqs: Any, queue_url: str) -> QueueStatus:
    """The queue's message counts (GetQueueAttributes). Raises QueueError."""
    answer = sqs_call(
        f"GetQueueAttributes {queue_url}",
        lambda: sqs.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        ),
    )
    attrs = answer.get("Attributes", {})
    return QueueStatus(
        int(attrs.get("ApproximateNumberOfMessages", 0)),
        int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
        int(attrs.get("ApproximateNumberOfMessagesDelayed", 0)),
    )
