"""The suite's secret leak check (tests/leakcheck.py) can fail: a tiny test file that
leaks the marker through a log record, an answer, an object in moto's in-process S3 and
one in moto's server, run by pytest in a subprocess with the check on, fails each of
those tests by name (the server's bucket, read as it stops, at the end of the session)
and passes the clean one."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.servers import MOTO_CREDENTIALS, ROOT

LEAKY = """
import logging

import boto3
import flask
import pytest
from moto import mock_aws

from tests.leakcheck import MARKER, handing_over
from tests.servers import MotoServer


@pytest.fixture(scope="session")
def moto_server():
    server = MotoServer().start()
    yield server
    server.stop()


def test_logs_the_marker():
    logging.getLogger("s3maptiler.somewhere").debug("sending key %s", MARKER)


def test_answers_the_marker():
    app = flask.Flask(__name__)
    app.get("/")(lambda: {"token": MARKER})
    assert app.test_client().get("/").status_code == 200


def test_stores_the_marker_in_metadata():
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="leaky")
        logging.disable(logging.DEBUG)  # only the object leaks, not botocore's log of it
        try:
            s3.put_object(Bucket="leaky", Key="t.png", Body=b"x", Metadata={"k": MARKER})
        finally:
            logging.disable(logging.NOTSET)


def test_publishes_the_marker(moto_server):
    s3 = moto_server.client()
    s3.create_bucket(Bucket="published")
    with handing_over():  # only the object leaks, not botocore's log of it
        s3.put_object(Bucket="published", Key="1.0.0/WMTSCapabilities.xml", Body=MARKER)


def test_keeps_the_secret():
    logging.getLogger("s3maptiler.somewhere").debug("sending key %s", "*****")
"""


@pytest.mark.slow  # a pytest run with a moto server: about 6 s
def test_a_leak_fails_the_session_naming_the_test(tmp_path):
    (tmp_path / "test_leaky.py").write_text(LEAKY)
    # moto's keys, and no endpoint of this process's moto: the run keeps its own S3.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    clean.update(MOTO_CREDENTIALS)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.leakcheck", "-p", "no:cacheprovider"]
        + ["-q", "-ra", "test_leaky.py"],
        cwd=tmp_path,
        env={**clean, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    for name, where in (
        ("test_logs_the_marker", "log record of s3maptiler.somewhere"),
        ("test_answers_the_marker", "answer to http://localhost/"),
        ("test_stores_the_marker_in_metadata", "moto s3://leaky/t.png (metadata)"),
    ):
        assert f"FAILED test_leaky.py::{name}" in out, out
        assert f"test_leaky.py::{name}: {where}" in out, out
    # Found as the server stopped, after the last test: the session fails, naming the
    # test that created the bucket.
    assert (
        "test_leaky.py::test_publishes_the_marker: moto server "
        "s3://published/1.0.0/WMTSCapabilities.xml" in out
    ), out
    assert "3 failed, 2 passed" in out, out
