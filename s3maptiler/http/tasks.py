"""``POST /tasks/seed``: a seed message delivered by an Elastic Beanstalk worker
environment's daemon (sqsd), which POSTs each SQS message body to the instance.

The body is one message of :mod:`s3maptiler.seeding.sqs`. Answers: 200 when every metatile
is stored (sqsd then deletes the message), 400 for a body that can never succeed
(sqsd retries it until its MaxRetries and the dead-letter queue), 502 when the WMS
failed and 500 when the store failed (sqsd retries after ErrorVisibilityTimeout).
The app's own :class:`~s3maptiler.service.tilepath.TileService` draws it
(:meth:`~s3maptiler.service.tilepath.TileService.seed`) with its layers, WMS session
and store, so the worker draws exactly what the tile routes would.
"""

from __future__ import annotations

import json
import logging
import time

from flask import Blueprint, Response, request

from s3maptiler.http.replies import service
from s3maptiler.seeding.sqs import BadMessage, JobFailed

log = logging.getLogger(__name__)

blueprint = Blueprint("tasks", __name__)


def _answer(status: int, document: dict) -> Response:
    return Response(
        json.dumps(document, separators=(",", ":")) + "\n",
        status=status,
        mimetype="application/json",
    )


@blueprint.post("/tasks/seed")
def seed_task() -> Response:
    """Draw and store the metatiles of one seed message."""
    tiles = service()
    message_id = request.headers.get("X-Aws-Sqsd-Msgid", "-")
    started = time.perf_counter()
    try:
        counts = tiles.seed(request.get_data())
    except BadMessage as exc:
        log.warning("task seed msgid=%s status=400 reason=%s", message_id, exc)
        return _answer(400, {"error": str(exc)})
    except JobFailed as exc:
        log.warning("task seed msgid=%s status=%d reason=%s", message_id, exc.status, exc)
        return _answer(exc.status, {"error": str(exc)})
    elapsed = time.perf_counter() - started
    log.info(
        "task seed msgid=%s status=200 stored=%d existing=%d getmaps=%d ms=%.0f",
        message_id, counts.stored, counts.existing, counts.getmaps, elapsed * 1000,
    )  # fmt: skip
    return _answer(
        200,
        {
            "stored": counts.stored,
            "existing": counts.existing,
            "ignored": counts.ignored,
            "getmaps": counts.getmaps,
        },
    )
