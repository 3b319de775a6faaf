"""One instance of a fleet dies holding a metatile's lease: how long until another
answers. Shared by `tests/integration/test_lease_takeover.py` and
`bench/lease_takeover.py`.

Two instances of the service (gunicorn, one worker each, spools of their own as on
two hosts) on one bucket of moto's S3 server, and a WMS (`tests/faultwms.py`) that
answers every GetMap `slow_seconds` late. Instance A is asked for a tile, takes the
metatile's lease and sends its GetMap; instance B is asked for the same tile and
waits on A's lease. Then A's worker and arbiter are killed with SIGKILL, while the
GetMap is out: nothing of A runs any more, no lease is released or renewed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.faults3 import wait_until
from tests.faultwms import FaultWMS
from tests.servers import MOTO_CREDENTIALS, GunicornApp, worker_pids

TILE = "tiles/12/1204/2590.png"


@dataclass
class Takeover:
    status: int  # of B's answer
    answered_after_kill: float  # seconds from the SIGKILL to B's answer
    getmaps_after_kill: int  # GetMaps the WMS received after the kill
    getmaps_before_kill: int


def instance(env: dict[str, str], spool: Path) -> GunicornApp:
    return GunicornApp(
        {
            **MOTO_CREDENTIALS,
            **env,
            "WEB_CONCURRENCY": "1",
            "GUNICORN_THREADS": "4",
            "MAX_REQUESTS": "100000",
            "SPOOL_DIR": str(spool),
            "LOG_LEVEL": "WARNING",
        }
    ).start()


def sigkill_holder(moto_url: str, s3, wms: FaultWMS, workdir: Path, lease_seconds: float = 6.0
                   ) -> Takeover:  # fmt: skip
    bucket = f"takeover-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    env = {
        "BUCKET_NAME": bucket,
        "AWS_ENDPOINT_URL": moto_url,
        "WMS_SERVER": wms.url,
        "MAP_LAYERS": "roads",
        "WMS_TIMEOUT": str(wms.slow_seconds + 6),
        "LEASE_SECONDS": str(lease_seconds),
    }
    wms.reset("slow")
    a = instance(env, workdir / "spool-a")
    b = instance(env, workdir / "spool-b")
    answers: dict[str, requests.Response] = {}
    try:
        holder = threading.Thread(
            target=lambda: _ask(a, answers, "a"), daemon=True, name="ask-holder"
        )
        holder.start()
        assert wait_until(lambda: wms.in_flight == 1, 20), "A never sent its GetMap"
        assert wait_until(lambda: bool(_lease_keys(s3, bucket)), 10), "A took no lease"
        waiter = threading.Thread(target=lambda: _ask(b, answers, "b"), daemon=True)
        waiter.start()
        time.sleep(1.0)  # B has read the lease and waits on it
        getmaps_before = wms.requests
        assert getmaps_before == 1, "B rendered instead of waiting on A's lease"
        arbiter = a.process.pid
        for pid in worker_pids(arbiter):
            os.kill(pid, signal.SIGKILL)
        os.kill(arbiter, signal.SIGKILL)
        killed = time.monotonic()
        a.process.wait(10)
        waiter.join(120)
        answered = time.monotonic() - killed
        status = answers["b"].status_code if "b" in answers else 0
        return Takeover(status, answered, wms.requests - getmaps_before, getmaps_before)
    finally:
        b.stop()
        a.stop()


def _ask(app: GunicornApp, answers: dict, name: str) -> None:
    with contextlib.suppress(requests.RequestException):  # A's connection dies with it
        answers[name] = requests.get(f"{app.url}/{TILE}", timeout=120)


def _lease_keys(s3, bucket: str) -> list[str]:
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="_leases/")
    return [item["Key"] for item in listed.get("Contents", [])]
