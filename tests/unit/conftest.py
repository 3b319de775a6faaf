"""Shared by the unit tests: fake AWS credentials, and moto's in-process S3."""

import os
import threading
from collections import Counter

import boto3
import pytest
from moto import mock_aws
from moto.server import ThreadedMotoServer

from tests.servers import MOTO_CREDENTIALS, free_port


@pytest.fixture(scope="session")
def moto_http():
    """moto's S3 over HTTP in a thread of the test process, for the data-path client
    (urllib3, which moto's in-process mock does not see). It shares moto's in-process
    state: a bucket made under ``mock_aws`` is there, and ``mock_aws`` resets both."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(autouse=True)
def aws_env(monkeypatch, moto_http):
    """Fake credentials, S3 at the test process's own moto, and nothing from the
    developer's own AWS set-up: nothing may reach a real AWS."""
    for name, value in MOTO_CREDENTIALS.items():  # the secret carries the leak marker
        monkeypatch.setenv(name, value)
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_http)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)


@pytest.fixture
def s3(request):
    """A moto S3 client with the test module's BUCKET created."""
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=request.module.BUCKET)
        yield client


def count_calls(client) -> Counter:
    """Count the S3 operations `client` makes from now on."""
    calls: Counter = Counter()
    lock = threading.Lock()

    def seen(model, **_):
        with lock:
            calls[model.name] += 1

    client.meta.events.register("before-call.s3", seen)
    return calls
