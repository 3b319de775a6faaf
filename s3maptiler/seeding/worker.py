"""The SQS worker: long polling, visibility extended while a message is drawn,
DeleteMessage on success, failures left for the queue's redrive policy."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from s3maptiler.seeding.run import RenderCounts
from s3maptiler.seeding.sqs import MAX_BATCH, BadMessage, JobFailed, sqs_call

log = logging.getLogger(__name__)


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
    answer = sqs_call(
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
        answer = sqs_call(
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
    sqs_call(
        f"DeleteMessage {queue_url}",
        lambda: sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=receipt),
    )
    report.done += 1
    report.tiles += counts.stored + counts.existing
    if on_message:
        on_message(message_id, counts)
