"""Tile stores: S3 (moto in-process, botocore Stubber) and local directory."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import socket
from pathlib import Path

import pytest
import urllib3
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st
from moto import mock_aws
from PIL import Image
from urllib3.exceptions import (
    ConnectTimeoutError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from s3maptiler.service.storeguard import unavailable
from s3maptiler.storage import s3 as s3_module
from s3maptiler.storage import stores
from s3maptiler.storage.objects import ObjectClient
from s3maptiler.storage.s3 import (
    InvalidKeyError,
    StoreAccessDenied,
    StoreError,
    StoreNotFound,
    StoreUnavailable,
    make_s3_client,
)
from s3maptiler.storage.stores import LocalStore, S3Store, StoredTile
from s3maptiler.tiles.formats import sniff_content_type
from tests.servers import MOTO_CREDENTIALS

BUCKET = "tiles-bucket"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


def _image(fmt: str, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (8, 8), (10, 200, 30)).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(autouse=True)
def aws_env(monkeypatch, moto_http):
    """Fake credentials, S3 at the test process's moto: nothing may reach a real AWS."""
    for name, value in MOTO_CREDENTIALS.items():  # the secret carries the leak marker
        monkeypatch.setenv(name, value)
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_http)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)


@pytest.fixture
def s3():
    with mock_aws():
        client = make_s3_client(max_pool_connections=8, region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


# --- S3Store with moto --------------------------------------------------------------


def test_s3_put_sets_headers_and_no_acl(s3):
    store = S3Store(BUCKET, s3)
    assert store.put("tiles/3/4/2.png", PNG, "image/png", "public, max-age=86400") == "stored"

    head = s3.head_object(Bucket=BUCKET, Key="tiles/3/4/2.png")
    assert head["ContentType"] == "image/png"
    assert head["CacheControl"] == "public, max-age=86400"
    grants = s3.get_object_acl(Bucket=BUCKET, Key="tiles/3/4/2.png")["Grants"]
    assert [g["Permission"] for g in grants] == ["FULL_CONTROL"]
    assert grants[0]["Grantee"]["Type"] == "CanonicalUser"


def test_s3_put_without_cache_control_sends_none(s3):
    S3Store(BUCKET, s3).put("k.png", PNG, "image/png", None)
    assert "CacheControl" not in s3.head_object(Bucket=BUCKET, Key="k.png")


def test_s3_put_configured_acl_and_metadata(s3):
    store = S3Store(BUCKET, s3, acl="public-read", metadata={"layer": "roads"})
    store.put("k.png", PNG, "image/png", None)

    grants = s3.get_object_acl(Bucket=BUCKET, Key="k.png")["Grants"]
    assert {"Type": "Group", "URI": "http://acs.amazonaws.com/groups/global/AllUsers"} in [
        g["Grantee"] for g in grants if g["Permission"] == "READ"
    ]
    assert s3.head_object(Bucket=BUCKET, Key="k.png")["Metadata"] == {"layer": "roads"}


def test_s3_conditional_second_put_is_exists_and_object_unchanged(s3):
    store = S3Store(BUCKET, s3)
    assert store.conditional
    assert store.put("k.png", PNG, "image/png", None) == "stored"
    assert store.put("k.png", b"GIF89a other bytes", "image/gif", None) == "exists"

    obj = s3.get_object(Bucket=BUCKET, Key="k.png")
    assert obj["Body"].read() == PNG
    assert obj["ContentType"] == "image/png"


def test_s3_unconditional_put_overwrites(s3):
    store = S3Store(BUCKET, s3, conditional=False)
    store.put("k.png", PNG, "image/png", None)
    assert store.put("k.png", b"GIF89a new", "image/gif", None) == "stored"
    assert s3.get_object(Bucket=BUCKET, Key="k.png")["Body"].read() == b"GIF89a new"


def test_s3_get_hit_returns_bytes_type_and_etag(s3):
    store = S3Store(BUCKET, s3)
    store.put("k.png", PNG, "image/png", None)

    tile = store.get("k.png")
    assert tile == StoredTile(PNG, "image/png", s3.head_object(Bucket=BUCKET, Key="k.png")["ETag"])
    assert tile.etag == '"' + hashlib.md5(PNG).hexdigest() + '"'


def test_s3_get_sniffs_type_of_untyped_objects(s3):
    s3.put_object(Bucket=BUCKET, Key="synced.jpg", Body=_image("JPEG"))
    assert S3Store(BUCKET, s3).get("synced.jpg").content_type == "image/jpeg"


def test_s3_get_missing_key_is_none(s3):
    assert S3Store(BUCKET, s3).get("tiles/9/9/9.png") is None


def test_s3_get_missing_bucket_is_an_error_not_a_miss(s3):
    with pytest.raises(StoreNotFound) as info:
        S3Store("no-such-bucket", s3).get("k.png")
    assert not info.value.retryable


def test_s3_check_existing_bucket(s3):
    S3Store(BUCKET, s3).check()


def test_s3_check_missing_bucket_is_not_retryable(s3):
    with pytest.raises(StoreError) as info:
        S3Store("no-such-bucket", s3).check()
    assert not info.value.retryable
    assert "no-such-bucket" in str(info.value)
    assert "\n" not in str(info.value)


def test_s3_location(s3):
    assert S3Store(BUCKET, s3).location == f"s3://{BUCKET}"


# --- S3Store with canned S3 answers (the data-path client's transport faked) ------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CannedHTTP:
    """Stands in for the data-path client's urllib3 pool: answers each request with the
    next canned (status, code) or raises the next canned exception; records requests."""

    def __init__(self, *answers) -> None:
        self.answers = list(answers)
        self.sent: list[tuple[str, str, dict]] = []

    def connection_from_url(self, base):
        return _CannedPool(self, base)

    def request(self, method, url, body=None, headers=None, redirect=True):
        self.sent.append((method, url, dict(headers or {})))
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        status, code = answer
        body = f"<Error><Code>{code}</Code><Message>m</Message></Error>".encode() if code else b""
        headers = {"ETag": '"x"'} if status == 200 else {}
        return urllib3.HTTPResponse(body=body, headers=headers, status=status)


class _CannedPool:
    """One host's pool of a CannedHTTP."""

    def __init__(self, http: CannedHTTP, base: str) -> None:
        self.http, self.base = http, base

    def urlopen(self, method, path, body=None, headers=None, redirect=True, retries=None):
        return self.http.request(method, self.base + path, body, headers, redirect)


# moto's keys for the lean client; the secret carries the leak check's marker.
MOTO_KEYS = Credentials(
    MOTO_CREDENTIALS["AWS_ACCESS_KEY_ID"], MOTO_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]
)


def canned_store(*answers, attempts: int = 3, **options) -> tuple[S3Store, CannedHTTP]:
    """An S3Store whose client sends nothing: S3's answers are `answers`, in order."""
    client = ObjectClient(
        MOTO_KEYS, "us-east-1", "http://s3.test", max_attempts=attempts,
        backoff=0.0,
    )  # fmt: skip
    client.http = CannedHTTP(*answers)
    return S3Store(BUCKET, None, objects=client, **options), client.http


def test_s3_get_403_is_a_miss_counted_and_warned_at_a_bounded_rate(caplog):
    counted = []
    store, _ = canned_store(*[(403, "AccessDenied")] * 5, on_read_denied=lambda: counted.append(1))
    clock = store._denials.clock = FakeClock()
    assert store.read_problem() is None
    with caplog.at_level(logging.WARNING, logger="s3maptiler.storage.stores"):
        assert store.get("a.png") is None  # logged: the first
        clock.now += 10
        assert store.get("b.png") is None  # not logged: within the interval
        assert store.get("c.png") is None
        clock.now += stores.DENIED_LOG_INTERVAL
        assert store.get("d.png") is None  # logged, with the count since the last line
        assert store.get("e.png") is None
    assert len(counted) == 5
    warnings = [r.getMessage() for r in caplog.records if "403" in r.getMessage()]
    assert len(warnings) == 2, warnings
    assert "denied 1 read(s)" in warnings[0] and "a.png" in warnings[0]
    assert "denied 3 read(s)" in warnings[1] and "(4 since start)" in warnings[1]
    assert all("s3:GetObject" in w and "s3:ListBucket" in w for w in warnings)

    problem = store.read_problem()
    assert problem is not None and "5 GetObject(s) answered 403" in problem
    assert "\n" not in problem
    clock.now += stores.DENIED_RECENT + 1
    assert store.read_problem() is None  # fixed roles stop being reported


def test_s3_get_is_a_single_get_object():
    store, http = canned_store((404, "NoSuchKey"))
    assert store.get("a.png") is None
    assert [(m, u) for m, u, _ in http.sent] == [("GET", f"http://s3.test/{BUCKET}/a.png")]


@pytest.mark.parametrize(
    ("code", "status", "error", "retryable"),
    [
        ("SlowDown", 503, StoreUnavailable, True),
        ("InternalError", 500, StoreUnavailable, True),
        ("InvalidAccessKeyId", 403, StoreAccessDenied, False),
        ("NoSuchBucket", 404, StoreNotFound, False),
    ],
)
def test_s3_get_errors_are_classified(code, status, error, retryable):
    store, http = canned_store(*[(status, code)] * 3)
    with pytest.raises(error) as info:
        store.get("a.png")
    assert info.value.retryable is retryable
    assert info.value.attempts == (3 if retryable else 1) == len(http.sent)


def test_s3_put_precondition_failed_is_exists():
    store, http = canned_store((412, "PreconditionFailed"))
    assert store.put("a.png", PNG, "image/png", None) == "exists"
    assert http.sent[0][2]["If-None-Match"] == "*"


def test_s3_put_conflict_is_retried_by_the_client_then_stored():
    store, http = canned_store((409, "ConditionalRequestConflict"), (200, None))
    assert store.put("a.png", PNG, "image/png", None) == "stored"
    assert len(http.sent) == 2
    assert all(h["If-None-Match"] == "*" for _, _, h in http.sent)


def test_s3_put_conflicts_past_the_budget_are_a_retryable_error():
    store, _ = canned_store(*[(409, "ConditionalRequestConflict")] * 2, attempts=2)
    with pytest.raises(StoreError) as info:
        store.put("a.png", PNG, "image/png", None)
    assert info.value.retryable
    assert info.value.attempts == 2
    # S3 answered: contention on one key is no reason to skip the whole bucket.
    assert not unavailable(info.value)


def test_s3_put_acl_refused_by_bucket_explains():
    store, _ = canned_store((400, "AccessControlListNotSupported"), acl="public-read")
    with pytest.raises(StoreAccessDenied) as info:
        store.put("a.png", PNG, "image/png", None)
    assert not info.value.retryable
    assert "ACL" in str(info.value)


def test_s3_check_forbidden_is_not_retryable():
    store, _ = canned_store((403, None))
    with pytest.raises(StoreAccessDenied) as info:
        store.check()
    assert not info.value.retryable
    assert "s3:ListBucket" in str(info.value)


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (NewConnectionError(None, "refused"), "connection refused"),
        (ConnectTimeoutError("slow"), "connect timeout"),
        (ReadTimeoutError(None, "/", "slow"), "read timeout"),
        (ProtocolError("reset"), "connection lost"),
    ],
)
def test_s3_transport_failures_are_unavailable_after_the_budget(exc, reason):
    store, http = canned_store(exc, exc, attempts=2)
    with pytest.raises(StoreUnavailable) as info:
        store.get("a.png")
    assert info.value.attempts == 2 == len(http.sent)
    assert reason in str(info.value)


def test_s3_connection_refused_is_retryable():
    with socket.socket() as sock:  # a port that nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sends = []
    client = ObjectClient(
        MOTO_KEYS, "us-east-1", f"http://127.0.0.1:{port}",
        max_attempts=2, backoff=0.0, on_request=sends.append,
    )  # fmt: skip
    store = S3Store(BUCKET, None, objects=client)
    with pytest.raises(StoreUnavailable) as info:
        store.put("a.png", PNG, "image/png", None)
    assert info.value.retryable
    assert sends == ["put_conditional"] * 2  # max_attempts counts the first try
    with pytest.raises(StoreUnavailable):
        store.check()


# --- make_s3_client -----------------------------------------------------------------


def test_make_s3_client_config(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    client = make_s3_client(
        24, region_name="eu-west-1", connect_timeout=2.0, read_timeout=7.0, max_attempts=5
    )
    config = client.meta.config
    assert config.max_pool_connections == 24
    assert config.retries == {"mode": "standard", "total_max_attempts": 5}
    assert (config.connect_timeout, config.read_timeout) == (2.0, 7.0)
    assert config.tcp_keepalive is True
    assert client.meta.region_name == "eu-west-1"
    assert "amazonaws.com" in client.meta.endpoint_url
    assert (config.s3 or {}).get("addressing_style") != "path"


def test_make_s3_client_custom_endpoint_is_path_style():
    client = make_s3_client(4, endpoint_url="http://127.0.0.1:9000", region_name="us-east-1")
    assert client.meta.endpoint_url == "http://127.0.0.1:9000"
    assert client.meta.config.s3["addressing_style"] == "path"
    assert client.meta.config.request_checksum_calculation == "when_required"


def test_make_s3_client_endpoint_from_environment(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9001")
    client = make_s3_client(4, region_name="us-east-1")
    assert client.meta.endpoint_url == "http://127.0.0.1:9001"
    assert client.meta.config.s3["addressing_style"] == "path"


def test_make_s3_client_s3_specific_endpoint_wins(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9001")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9002")
    assert make_s3_client(4).meta.endpoint_url == "http://127.0.0.1:9002"


# --- LocalStore ---------------------------------------------------------------------


def test_local_round_trip(tmp_path):
    store = LocalStore(tmp_path)
    data = _image("PNG")
    assert store.get("roads/3/4/2.png") is None
    assert store.put("roads/3/4/2.png", data, "image/png", "max-age=60") == "stored"

    assert (tmp_path / "roads" / "3" / "4" / "2.png").read_bytes() == data
    tile = store.get("roads/3/4/2.png")
    assert tile.data == data
    assert tile.content_type == "image/png"
    assert tile.etag == '"' + hashlib.md5(data).hexdigest() + '"'
    assert store.location == str(tmp_path)


def test_local_etag_is_stable_and_follows_the_bytes(tmp_path):
    store = LocalStore(tmp_path)
    store.put("a.png", PNG, "image/png", None)
    store.put("b.png", PNG + b"!", "image/png", None)
    assert store.get("a.png").etag == store.get("a.png").etag
    assert store.get("a.png").etag != store.get("b.png").etag


def test_local_second_put_is_exists_and_file_unchanged(tmp_path):
    store = LocalStore(tmp_path)
    store.put("a.png", PNG, "image/png", None)
    assert store.put("a.png", b"GIF89a other", "image/gif", None) == "exists"
    assert store.get("a.png").data == PNG


@pytest.mark.parametrize(
    ("fmt", "mode", "content_type"),
    [
        ("PNG", "RGBA", "image/png"),
        ("JPEG", "RGB", "image/jpeg"),
        ("GIF", "P", "image/gif"),
        ("WEBP", "RGB", "image/webp"),
        ("TIFF", "RGB", "image/tiff"),
    ],
)
def test_local_content_type_is_sniffed(tmp_path, fmt, mode, content_type):
    store = LocalStore(tmp_path)
    # The declared type is not kept: the bytes decide.
    store.put(f"t.{fmt.lower()}", _image(fmt, mode), "application/x-whatever", None)
    assert store.get(f"t.{fmt.lower()}").content_type == content_type


def test_local_unknown_bytes_are_octet_stream(tmp_path):
    store = LocalStore(tmp_path)
    store.put("t.bin", b"<ServiceExceptionReport/>", "image/png", None)
    assert store.get("t.bin").content_type == "application/octet-stream"


def test_local_write_is_atomic_temp_beside_target(tmp_path, monkeypatch):
    store = LocalStore(tmp_path)
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        # At rename time the whole tile is in the temp file and nothing is at the target.
        seen.append((Path(src).parent, Path(src).read_bytes(), Path(dst).exists()))
        real_replace(src, dst)

    monkeypatch.setattr(stores.os, "replace", spy)
    store.put("z/1/2.png", PNG, "image/png", None)
    assert seen == [(tmp_path / "z" / "1", PNG, False)]
    assert sorted(p.name for p in (tmp_path / "z" / "1").iterdir()) == ["2.png"]


def test_local_failed_write_leaves_nothing(tmp_path, monkeypatch):
    store = LocalStore(tmp_path)

    def failing_replace(src, dst):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(stores.os, "replace", failing_replace)
    with pytest.raises(StoreUnavailable) as info:
        store.put("z/1/2.png", PNG, "image/png", None)
    assert info.value.retryable
    assert list((tmp_path / "z" / "1").iterdir()) == []
    assert store.get("z/1/2.png") is None


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/etc/passwd",
        "../outside.png",
        "a/../../outside.png",
        "a/..",
        "a\\..\\b.png",
        "a\x00b.png",
        "a//b.png",
        "a/b/",
        "./a.png",
    ],
)
def test_local_refuses_dangerous_keys(tmp_path, key):
    store = LocalStore(tmp_path / "cache")
    for call in (lambda: store.get(key), lambda: store.put(key, PNG, "image/png", None)):
        with pytest.raises(InvalidKeyError) as info:
            call()
        assert not info.value.retryable
    assert not (tmp_path / "outside.png").exists()


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab./\\\x00"), max_size=12))
def test_local_paths_never_leave_root(key):
    root = Path("/srv/tiles")
    try:
        path = LocalStore(root).path_for(key)
    except InvalidKeyError:
        return
    assert root in path.parents
    assert ".." not in path.parts


def test_local_check_creates_root(tmp_path):
    LocalStore(tmp_path / "new" / "dir").check()
    assert (tmp_path / "new" / "dir").is_dir()
    assert list((tmp_path / "new" / "dir").iterdir()) == []


def test_local_check_unusable_root(tmp_path):
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(StoreError) as info:
        LocalStore(tmp_path / "file" / "tiles").check()
    assert not info.value.retryable
    assert "\n" not in str(info.value)


def test_local_key_under_a_file_is_a_miss(tmp_path):
    store = LocalStore(tmp_path)
    store.put("a.png", PNG, "image/png", None)
    assert store.get("a.png/b.png") is None


# --- sniffing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"\xff\xd8\xff\xe0", "image/jpeg"),
        (b"GIF87a", "image/gif"),
        (b"GIF89a", "image/gif"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", None),
        (b"II*\x00", "image/tiff"),
        (b"MM\x00*", "image/tiff"),
        (b"", None),
        (b'<?xml version="1.0"?><ServiceExceptionReport/>', None),
        (b"\x89PNG", None),  # truncated signature
    ],
)
def test_sniff_content_type(data, expected):
    assert sniff_content_type(data) == expected


# --- one retry policy -----------------------------------------------------------------


def _client_error(code: str, status: int):
    from botocore.exceptions import ClientError

    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutObject",
    )


def test_one_definition_of_a_retryable_s3_error_for_stores_and_bulk_uploads():
    from s3maptiler.bucket import upload as bulk

    # The bulk upload retries through the S3 module's one loop, which asks is_retryable.
    assert bulk.with_retries is s3_module.with_retries
    assert s3_module.is_retryable(_client_error("SlowDown", 503))
    assert s3_module.is_retryable(_client_error("Whatever", 500))
    assert s3_module.is_retryable(_client_error("TooMany", 429))
    # A retry is signed with the same wrong clock: never retryable, anywhere.
    skewed = _client_error("RequestTimeTooSkewed", 403)
    assert not s3_module.is_retryable(skewed)
    assert not s3_module.client_error(skewed, "PutObject").retryable


def test_a_store_error_tells_how_many_requests_the_client_made():
    store, _ = canned_store(*[(503, "SlowDown")] * 4, attempts=4)
    with pytest.raises(StoreUnavailable) as info:
        store.put("a.png", PNG, "image/png", None)
    assert info.value.attempts == 4


def test_the_service_reads_and_uploads_with_their_own_retry_budgets(tmp_path):
    from s3maptiler.config import load_settings
    from s3maptiler.service.build import READ_ATTEMPTS, build_service

    settings = load_settings(
        {
            "WMS_SERVER": "http://wms.test/",
            "MAP_LAYERS": "x",
            "BUCKET_NAME": BUCKET,
            "UPLOAD_RETRIES": "2",
            "UPLOAD_WORKERS": "3",
        },
        dotenv_path=None,
    )
    service = build_service(settings)
    reads, uploads = service.store.objects, service.uploads.store.objects
    assert reads.max_attempts == READ_ATTEMPTS
    assert uploads.max_attempts == 3
    # one connection per upload thread
    assert uploads.http.connection_pool_kw["maxsize"] == settings.upload_max_workers
    assert service.uploads.store.bucket == BUCKET
    # Timeouts that fit the tile's budget: a read or lease call waits S3_READ_TIMEOUT,
    # an upload's attempt S3_UPLOAD_TIMEOUT; one breaker in front of all three.
    read_timeout = reads.http.connection_pool_kw["timeout"]
    upload_timeout = uploads.http.connection_pool_kw["timeout"]
    assert (read_timeout.connect_timeout, read_timeout.read_timeout) == (2.0, 2.0)
    assert (upload_timeout.connect_timeout, upload_timeout.read_timeout) == (5.0, 5.0)
    assert service.leases.client is reads
    assert service.breaker is service.uploads.store.breaker is service.leases.breaker


def test_a_pointer_to_a_shared_blank_reads_the_blank_once_per_process(s3):
    """Every uniform tile of a redirect layer is a pointer to one blank: after the
    first, reading a pointer is one GetObject, not two."""
    store = S3Store(BUCKET, s3)
    blank = PNG
    store.put("t/_blank/abc.png", blank, "image/png", None)
    for key in ("t/1/0/0.png", "t/1/0/1.png", "t/1/1/0.png"):
        store.put(key, blank, "image/png", None, redirect_to="t/_blank/abc.png")
    gets = []
    store.objects.on_request = gets.append
    for key in ("t/1/0/0.png", "t/1/0/1.png", "t/1/1/0.png"):
        read = store.get(key)
        assert (read.data, read.content_type) == (blank, "image/png")
    assert len(gets) == 3 + 1  # each pointer, and the blank once
