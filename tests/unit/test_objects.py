"""The data-path S3 client (storage/objects.py): signatures, addresses, credentials,
and its calls against moto (the test process's moto over HTTP, see conftest)."""

from __future__ import annotations

import datetime as dt
import threading
from email.utils import parsedate_to_datetime

import boto3
import pytest
import urllib3
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from moto import mock_aws

from s3maptiler.storage import objects
from s3maptiler.storage.objects import ObjectClient, from_boto, sigv4_headers
from s3maptiler.storage.stores import S3Store
from tests.unit.test_stores import CannedHTTP

BUCKET = "objects-bucket"
NOW = dt.datetime(2026, 12, 7, 2, 30, 5, tzinfo=dt.UTC)


@pytest.mark.parametrize("token", [None, "session-token/+="])
@pytest.mark.parametrize(
    ("method", "key", "headers", "body"),
    [
        ("GET", "tiles/3/4/2.png", {}, b""),
        ("HEAD", "", {}, b""),
        (
            "PUT",
            "a b/ü~+=&;,$@!'()*/k.png",
            {
                "Content-Type": "image/png",
                "Cache-Control": "public,  max-age=60",
                "Expires": "Mon, 07 Dec 2026 03:00:00 GMT",
                "If-None-Match": "*",
                "x-amz-website-redirect-location": "/t/_blank/abc.png",
                "x-amz-acl": "public-read",
                "x-amz-meta-layer": "roads",
            },
            b"\x89PNG" * 100,
        ),
        ("PUT", "_leases/ab/abcdef", {"If-Match": '"0123"'}, b"{}\n"),
    ],
)
def test_signature_is_botocores(method, key, headers, body, token, monkeypatch):
    """Our SigV4 signs exactly as botocore's S3 signer does for the same request."""
    credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    frozen = credentials.get_frozen_credentials()
    host = "127.0.0.1:9000"
    path = objects.quote(f"/{BUCKET}/{key}", safe="/~")
    ours = sigv4_headers(method, host, path, headers, body, frozen, "eu-west-1", NOW)

    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda *a, **k: NOW)
    request = AWSRequest(method=method, url=f"http://{host}{path}", data=body, headers=headers)
    request.context["payload_signing_enabled"] = True
    S3SigV4Auth(credentials, "s3", "eu-west-1").add_auth(request)
    assert ours["Authorization"] == request.headers["Authorization"]
    assert ours["X-Amz-Content-Sha256"] == request.headers["X-Amz-Content-Sha256"]


def test_addresses_aws_virtual_hosted_else_path_style():
    creds = Credentials("a", "b")
    aws = ObjectClient(creds, "eu-central-1")
    assert aws._address("tiles", "a/b c.png", "eu-central-1") == (
        "https://tiles.s3.eu-central-1.amazonaws.com",
        "tiles.s3.eu-central-1.amazonaws.com",
        "/a/b%20c.png",
    )
    # TLS wildcards do not cover dots: such buckets are path-style on AWS too.
    assert aws._address("tiles.example.com", "k", "eu-central-1") == (
        "https://s3.eu-central-1.amazonaws.com",
        "s3.eu-central-1.amazonaws.com",
        "/tiles.example.com/k",
    )
    minio = ObjectClient(creds, "us-east-1", "http://127.0.0.1:9000/")
    assert minio._address("tiles", "k", "us-east-1") == (
        "http://127.0.0.1:9000",
        "127.0.0.1:9000",
        "/tiles/k",
    )


@pytest.mark.parametrize("attempts", [1, 3])
def test_a_bucket_in_another_region_is_asked_there_from_then_on(attempts):
    """S3's 301 names the bucket's region: the request is signed and sent there, and
    so is every later one (as botocore's region redirector does), even with the
    one-attempt budget of tile reads and leases."""
    sent: list[str] = []

    class Answers(CannedHTTP):
        def request(self, method, url, body=None, headers=None, redirect=True):
            sent.append(url)
            if ".s3.us-east-1." in url:
                return urllib3.HTTPResponse(
                    body=b"<Error><Code>PermanentRedirect</Code></Error>",
                    headers={"x-amz-bucket-region": "eu-west-1"},
                    status=301,
                )
            assert "/eu-west-1/s3/aws4_request" in headers["Authorization"]
            return urllib3.HTTPResponse(body=b"tile", headers={"ETag": '"e"'}, status=200)

    client = ObjectClient(Credentials("a", "b"), "us-east-1", max_attempts=attempts)
    client.http = Answers()
    assert client.get("tiles", "k.png").body == b"tile"
    assert client.get("tiles", "k2.png").status == 200
    assert sent == [
        "https://tiles.s3.us-east-1.amazonaws.com/k.png",
        "https://tiles.s3.eu-west-1.amazonaws.com/k.png",
        "https://tiles.s3.eu-west-1.amazonaws.com/k2.png",
    ]


def test_no_credentials_is_access_denied_without_a_request(monkeypatch):
    sent = []
    client = ObjectClient(None, "us-east-1", "http://127.0.0.1:9", on_request=sent.append)
    with pytest.raises(objects.StoreAccessDenied, match="no usable AWS credentials"):
        client.get(BUCKET, "k")
    assert sent == []


@pytest.fixture
def bucket():
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        yield s3


def test_from_boto_keeps_endpoint_region_budget(bucket, moto_http):
    client = from_boto(bucket)
    assert (client.endpoint_url, client.region) == (moto_http, "us-east-1")
    assert client.max_attempts == 3  # botocore's legacy default: 1 + 2 retries


def test_expires_redirect_acl_and_metadata_are_stored(bucket):
    """What a tile object carries beyond its bytes, written by the lean client."""
    store = S3Store(BUCKET, bucket, acl="public-read", metadata={"layer": "roads"})
    expires = 1_900_000_000.0
    store.put("t/_blank/abc.png", b"\x89PNG", "image/png", "max-age=60", expires=expires)
    store.put("t/1/0/0.png", b"\x89PNG", "image/png", None, redirect_to="t/_blank/abc.png")

    head = bucket.head_object(Bucket=BUCKET, Key="t/_blank/abc.png")
    assert head["ContentType"] == "image/png"
    assert head["CacheControl"] == "max-age=60"
    assert (
        parsedate_to_datetime(head["ResponseMetadata"]["HTTPHeaders"]["expires"]).timestamp()
        == expires
    )
    assert head["Metadata"] == {"layer": "roads"}
    grants = bucket.get_object_acl(Bucket=BUCKET, Key="t/_blank/abc.png")["Grants"]
    assert any(g["Permission"] == "READ" for g in grants)
    pointer = bucket.get_object(Bucket=BUCKET, Key="t/1/0/0.png")
    assert pointer["WebsiteRedirectLocation"] == "/t/_blank/abc.png"
    assert pointer["Body"].read() == b""

    read = store.get("t/1/0/0.png")  # the blank's bytes (and lifetime) through the pointer
    assert (read.data, read.expires) == (b"\x89PNG", expires)
    assert store.get("t/_blank/abc.png").expires == expires


def test_exactly_one_of_many_concurrent_if_none_match_writes_wins(bucket):
    store = S3Store(BUCKET, bucket)
    outcomes: list[str] = []
    start = threading.Barrier(8)

    def write(n: int) -> None:
        start.wait()
        outcomes.append(store.put("race.png", b"writer %d" % n, "image/png", None))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["exists"] * 7 + ["stored"]


def test_if_match_with_a_stale_etag_is_refused(bucket):
    client = from_boto(bucket)
    first = client.put(BUCKET, "lease", b"one", {"If-None-Match": "*"})
    assert first.status == 200
    second = client.put(BUCKET, "lease", b"two", {"If-Match": first.headers["ETag"]})
    assert second.status == 200
    stale = client.put(BUCKET, "lease", b"three", {"If-Match": first.headers["ETag"]})
    assert (stale.status, stale.code) == (412, "PreconditionFailed")
    assert client.get(BUCKET, "lease").body == b"two"


def test_every_request_is_counted_by_kind(bucket):
    kinds: list[str] = []
    store = S3Store(BUCKET, bucket)
    store.objects.on_request = kinds.append
    store.get("none.png")
    store.put("a.png", b"x", "image/png", None)
    store.put("a.png", b"x", "image/png", None, overwrite=True)
    store.check()
    assert kinds == ["get", "put_conditional", "put", "head"]
