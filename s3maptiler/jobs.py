"""Distributed seeding through Amazon SQS: the message format, the sender, the worker.

A message is a small JSON object with tile coordinates only (SQS takes at most
256 KiB; images never travel through the queue)::

    {"v": 1, "layer": "demo", "ext": "png", "skip_existing": false,
     "metatiles": [{"z": 12, "x": 1204, "y": 1536}, {"z": 12, "x": 1208, "y": 1536,
                    "tiles": [[1208, 1536], [1209, 1536]]}]}

``x``, ``y`` are the top-left tile of a metatile (rows from the top); ``tiles``
lists the tiles to store when the coverage holds only some of them.

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
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from botocore.exceptions import BotoCoreError, ClientError

from s3maptiler.render.errors import WMSError
from s3maptiler.render.pipeline import LayerRuntime
from s3maptiler.render.wms import WMSClient
from s3maptiler.seed import BadJob, ListingCache, MetaJob, RenderCounts, render_metatile
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
    "WorkerReport",
    "decode_message",
    "encode_messages",
    "enqueue",
    "handle_message",
    "queue_status",
    "run_worker",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
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


def encode_messages(
    jobs: Iterable[MetaJob], per_message: int = 1, skip_existing: bool = False
) -> Iterator[str]:
    """Message bodies (JSON text) of ``per_message`` metatiles each; jobs of another
    layer or format start a new message."""
    if not 1 <= per_message <= MAX_METATILES_PER_MESSAGE:
        raise ValueError(f"per_message must be 1..{MAX_METATILES_PER_MESSAGE}")
    batch: list[MetaJob] = []

    def body() -> str:
        doc = {
            "v": FORMAT_VERSION,
            "layer": batch[0].layer,
            "ext": batch[0].ext,
            "skip_existing": skip_existing,
            "metatiles": [_coordinates(job) for job in batch],
        }
        return json.dumps(doc, separators=(",", ":"))

    for job in jobs:
        if batch and (len(batch) == per_message or job[:2] != batch[0][:2]):
            yield body()
            batch = []
        batch.append(job)
    if batch:
        yield body()


def _coordinates(job: MetaJob) -> dict[str, Any]:
    doc = job.to_dict()
    del doc["layer"], doc["ext"]
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
    if doc.get("v", FORMAT_VERSION) != FORMAT_VERSION:
        raise BadMessage(f"message version {doc.get('v')!r} is not {FORMAT_VERSION}")
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
    try:
        jobs = tuple(
            MetaJob.from_dict({**m, "layer": layer, "ext": ext} if isinstance(m, Mapping) else m)
            for m in metatiles
        )
    except BadJob as exc:
        raise BadMessage(str(exc)) from None
    return Message(layer, ext, jobs, skip)


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
    existing = ListingCache(store) if message.skip_existing else None
    blanks = blanks or SharedBlanks()
    total = RenderCounts()
    failed: list[tuple[MetaJob, JobFailed]] = []
    for job in message.metatiles:
        try:
            total.add(render_metatile(runtime, job, wms, store, existing, blanks=blanks))
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


def _sqs_call(what: str, call: Callable[[], Any]) -> Any:
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
            answer = _sqs_call(
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
    answer = _sqs_call(
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


# --------------------------------------------------------------------------- worker


@dataclass
class WorkerReport:
    """Messages handled by one worker: done (deleted), failed (left for the redrive
    policy), malformed (also left), and the tiles the done ones stored."""

    done: int = 0
    failed: int = 0
    malformed: int = 0
    tiles: int = 0
    elapsed: float = 0.0


class _VisibilityKeeper:
    """Extends a message's visibility every ``every`` seconds while it is being drawn,
    so a long job is not handed to another worker in the meantime."""

    def __init__(self, sqs: Any, queue_url: str, receipt: str, timeout: int, every: float):
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(sqs, queue_url, receipt, timeout, every), daemon=True
        )

    def __enter__(self) -> _VisibilityKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self, sqs: Any, queue_url: str, receipt: str, timeout: int, every: float) -> None:
        while not self._stop.wait(every):
            try:
                sqs.change_message_visibility(
                    QueueUrl=queue_url, ReceiptHandle=receipt, VisibilityTimeout=timeout
                )
            except (ClientError, BotoCoreError) as exc:
                log.warning("could not extend visibility of a message: %s", exc)


def visibility_timeout(sqs: Any, queue_url: str) -> int:
    """The queue's VisibilityTimeout in seconds. Raises QueueError."""
    answer = _sqs_call(
        f"GetQueueAttributes {queue_url}",
        lambda: sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["VisibilityTimeout"]),
    )
    return int(answer.get("Attributes", {}).get("VisibilityTimeout", 30))


def run_worker(
    sqs: Any,
    queue_url: str,
    handler: Callable[[str], RenderCounts],
    stop_event: threading.Event,
    wait_seconds: int = 20,
    max_messages: int = 1,
    idle_exit: float | None = None,
    on_message: Callable[[str, RenderCounts | None], None] | None = None,
) -> WorkerReport:
    """Receive and handle messages until ``stop_event`` is set, or until the queue has
    been empty for ``idle_exit`` seconds.

    Long polling with ``wait_seconds`` (0..20). While ``handler`` runs, the message's
    visibility is extended to the queue's VisibilityTimeout every half of it. A message
    is deleted when ``handler`` returns; when it raises, the message is left to come
    back after its visibility timeout and, after the queue's maxReceiveCount, to go to
    the dead-letter queue. Raises QueueError when SQS cannot be reached at all.
    """
    wait_seconds = max(0, min(20, int(wait_seconds)))
    max_messages = max(1, min(MAX_BATCH, max_messages))
    timeout = visibility_timeout(sqs, queue_url)
    report = WorkerReport()
    started = time.monotonic()
    idle_since = time.monotonic()
    while not stop_event.is_set():
        if idle_exit is not None and time.monotonic() - idle_since >= idle_exit:
            log.info("queue empty for %.0f s: worker exits", idle_exit)
            break
        wait = wait_seconds
        if idle_exit is not None:
            left = idle_exit - (time.monotonic() - idle_since)
            wait = max(0, min(wait, int(left + 0.999)))
        answer = _sqs_call(
            f"ReceiveMessage {queue_url}",
            lambda wait=wait: sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=max_messages,
                WaitTimeSeconds=wait,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            ),
        )
        messages = answer.get("Messages", [])
        if not messages:
            continue
        for message in messages:
            _handle_one(sqs, queue_url, message, handler, timeout, report, on_message)
        idle_since = time.monotonic()
    report.elapsed = time.monotonic() - started
    return report


def _handle_one(
    sqs: Any,
    queue_url: str,
    message: Mapping[str, Any],
    handler: Callable[[str], RenderCounts],
    timeout: int,
    report: WorkerReport,
    on_message: Callable[[str, RenderCounts | None], None] | None,
) -> None:
    receipt = message["ReceiptHandle"]
    message_id = message.get("MessageId", "?")
    received = message.get("Attributes", {}).get("ApproximateReceiveCount", "?")
    try:
        with _VisibilityKeeper(sqs, queue_url, receipt, timeout, max(1.0, timeout / 2)):
            counts = handler(message.get("Body", ""))
    except BadMessage as exc:
        report.malformed += 1
        log.error("message %s is not a seed job, left for redrive: %s", message_id, exc)
        if on_message:
            on_message(message_id, None)
        return
    except JobFailed as exc:
        report.failed += 1
        log.warning("message %s failed (receive %s), left for retry: %s", message_id, received, exc)
        if on_message:
            on_message(message_id, None)
        return
    _sqs_call(
        f"DeleteMessage {queue_url}",
        lambda: sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=receipt),
    )
    report.done += 1
    report.tiles += counts.stored + counts.existing
    if on_message:
        on_message(message_id, counts)
