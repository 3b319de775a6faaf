"""Fixtures that start real components: the demo MapServer WMS, moto's S3 server and
LocalStack's S3 (for a real website endpoint with routing rules)."""

import os
import uuid
from pathlib import Path

import pytest

from devtools import localwebsite
from devtools.demowms import DemoWMS, unavailable_reason
from tests import leakcheck
from tests.servers import MOTO_CREDENTIALS, MotoServer
from tests.website import TEST_CREDENTIALS

AWS_ENV = MOTO_CREDENTIALS



def cli_env(demo_wms, endpoint_url: str, bucket: str, **settings: str) -> dict[str, str]:
    """The environment of an `s3maptiler` command run against the demo WMS and `bucket`
    at `endpoint_url` (moto, or a proxy in front of it): 4x4 metatiles, 64 px buffer,
    no layers file; `settings` on top."""
    return {
        **os.environ,
        **AWS_ENV,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "WMS_SERVER": demo_wms.url,
        "MAP_LAYERS": demo_wms.layers,
        "METATILE": "4x4",
        "META_BUFFER": "64",
        "BUCKET_NAME": bucket,
        "AWS_ENDPOINT_URL": endpoint_url,
        "LAYERS_FILE": "",
        **settings,
    }

def need(reason: str | None) -> None:
    """Skip when a real component is missing, except in CI, where it must be there."""
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def demo_wms():
    need(unavailable_reason())
    wms = DemoWMS().start()
    yield wms
    wms.stop()


@pytest.fixture(scope="session")
def moto_server():
    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3(moto_server):
    """moto itself, never through a proxy: what is really in the buckets."""
    return moto_server.client()


@pytest.fixture
def bucket(s3):
    name = f"tiles-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def localstack():
    """LocalStack's S3 in host mode (installed by scripts/install-localstack.sh)."""
    need(localwebsite.unavailable_reason())
    stack = localwebsite.LocalStack().start()
    stack.credentials = dict(TEST_CREDENTIALS)
    yield stack
    leakcheck.scan_buckets(stack.client(), "LocalStack")
    stack.stop()
