"""Shared by the unit tests: fake AWS credentials, and moto's in-process S3."""

import os
import threading
from collections import Counter

import boto3
import pytest
from moto import mock_aws

from tests.servers import MOTO_CREDENTIALS


@pytest.fixture(autouse=True)
def aws_env(monkeypatch):
    """Fake credentials, and nothing from the developer's own AWS set-up."""
    for name, value in MOTO_CREDENTIALS.items():  # the secret carries the leak marker
        monkeypatch.setenv(name, value)
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
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
