"""The whole loop on this machine: LocalStack's S3 website endpoint in front of the
service (gunicorn, Procfile command) in front of the demo WMS.

A bucket is made a tile cache by the console script as a user would run it (``bucket
setup --tiler-url http://127.0.0.1:<port>``); the service uploads to the same
LocalStack. Counters tell what reached whom: the demo WMS's lighttpd counts GetMaps,
the service's /metrics counts tile requests.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import requests

from devtools.localwebsite import CREDENTIALS, LocalStack
from tests import leakcheck
from tests.leakcheck import MARKER
from tests.servers import GunicornApp

# LocalStack's keys, the secret carrying the leak check's marker (LocalStack checks none).
TEST_CREDENTIALS = {**CREDENTIALS, "aws_secret_access_key": "test-" + MARKER}
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": TEST_CREDENTIALS["aws_access_key_id"],
    "AWS_SECRET_ACCESS_KEY": TEST_CREDENTIALS["aws_secret_access_key"],
    "AWS_DEFAULT_REGION": TEST_CREDENTIALS["region_name"],
}

_TILE_REQUESTS = re.compile(r"^s3maptiler_tile_requests_total\{[^}]*\} ([0-9.e+]+)$", re.M)


def cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 120
):
    """`python -m s3maptiler.cli ARGS` in a clean environment (no .env, no AWS set-up)
    plus `env`; its output goes through the secret leak check."""
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **AWS_ENV}
    done = subprocess.run(
        [sys.executable, "-m", "s3maptiler.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or tempfile.gettempdir(),
        env={**base, **(env or {})},
    )
    leakcheck.scan(f"output of s3maptiler {' '.join(args)}", done.stdout + done.stderr)
    return done


def new_bucket_name(stem: str = "tiles") -> str:
    return f"{stem}-{uuid.uuid4().hex[:10]}"


def deny_listing_policy(bucket: str) -> dict:
    """A bucket policy that denies s3:ListBucket to everyone: real S3 then answers a
    missing key with 403, not 404."""
    return {
        "Sid": "DenyListing",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:ListBucket",
        "Resource": f"arn:aws:s3:::{bucket}",
    }


def setup_bucket(
    stack: LocalStack,
    bucket: str,
    tiler_url: str,
    prefixes: tuple[str, ...],
    deny_listing: bool = False,
) -> subprocess.CompletedProcess:
    """Create `bucket` and run `s3maptiler bucket setup` on it; with `deny_listing`, add
    a statement denying s3:ListBucket to the policy setup wrote."""
    client = stack.client()
    client.create_bucket(Bucket=bucket)
    args = ["bucket", "setup", "--bucket", bucket, "--endpoint-url", stack.url]
    # LocalStack, like S3 since April 2023, creates buckets with Block Public Access
    # on, which refuses the public-read policy: relax it, as a user must.
    args += ["--tiler-url", tiler_url, "--relax-public-access-block"]
    for prefix in prefixes:
        args += ["--prefix", prefix]
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    if deny_listing:
        policy = json.loads(client.get_bucket_policy(Bucket=bucket)["Policy"])
        policy["Statement"].append(deny_listing_policy(bucket))
        client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    return done


@dataclass
class Loop:
    """LocalStack, the service and the demo WMS, with counters for what reached whom."""

    stack: LocalStack
    app: GunicornApp
    wms: object  # devtools.demowms.DemoWMS

    def getmaps(self) -> int:
        return self.wms.request_count()

    def service_tile_requests(self) -> int:
        """Tile requests the service has answered (any status), from /metrics."""
        text = requests.get(self.app.url + "/metrics", timeout=10).text
        return int(sum(float(v) for v in _TILE_REQUESTS.findall(text)))

    def wait_uploads(self, timeout: float = 30.0) -> None:
        """Until the service's upload queue has been empty twice, half a second apart
        (the rest of a metatile is cut and queued just after the answer)."""
        deadline = time.monotonic() + timeout
        empty = 0
        while time.monotonic() < deadline:
            body = requests.get(self.app.url + "/heartbeat", timeout=10).text
            empty = empty + 1 if "uploads_pending=0 " in body else 0
            if empty == 2:
                return
            time.sleep(0.5)
        raise AssertionError(f"uploads still pending after {timeout} s: {body}")

    def wait_stored(self, bucket: str, key: str, timeout: float = 30.0) -> None:
        """Until `key` is in the bucket."""
        client = self.stack.client()
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.head_object(Bucket=bucket, Key=key)
                return
            except client.exceptions.ClientError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{key} not in {bucket} after {timeout} s") from None
                time.sleep(0.1)


def start_service(stack: LocalStack, bucket: str, layers_file: Path, **env: str) -> GunicornApp:
    """The service under gunicorn, storing tiles in `bucket` on LocalStack."""
    return GunicornApp(
        {
            **AWS_ENV,
            "LAYERS_FILE": str(layers_file),
            "BUCKET_NAME": bucket,
            "AWS_ENDPOINT_URL": stack.url,
            "WEB_CONCURRENCY": "1",
            "GUNICORN_THREADS": "8",
            "LOG_LEVEL": "WARNING",
            **env,
        }
    ).start()
