"""A layer with ``cache_from_wms``: the WMS's own cache headers (answered by
`responses`) give each tile its lifetime in S3 (moto) and in the answer; an expired
tile is drawn again and replaced though writes are conditional; a no-store answer is
never stored; seeding stores lifetimes and ``--refresh-older-than`` draws old tiles."""

from __future__ import annotations

import io
import json
import os
import threading
import time
from email.utils import parsedate_to_datetime

import boto3
import pytest
import responses
from moto import mock_aws
from PIL import Image

from s3maptiler.cli.errors import ConfigProblem
from s3maptiler.cli.seed import refresh_cutoff
from s3maptiler.config import Layer
from s3maptiler.render.runtime import LayerRuntime
from s3maptiler.render.wms import WMSAnswer, WMSClient
from s3maptiler.seeding import coverage as s_coverage
from s3maptiler.seeding import plan as s_plan
from s3maptiler.seeding import run as s_run
from s3maptiler.seeding import sqs as s_sqs
from s3maptiler.storage.stores import LocalStore, S3Store
from tests.unit.test_tilepath import WMS, make_app, png, wait_all_uploaded, wait_uploaded

BUCKET = "tiles-lifetimes"
KEY = "tiles/3/4/5.png"
RED, BLUE = (200, 30, 30), (30, 30, 200)


@pytest.fixture
def world():
    """moto's S3 with BUCKET, and the WMS answered by `responses` (moto's own patch
    must sit under the WMS mock)."""
    with mock_aws(), responses.RequestsMock(assert_all_requests_are_fired=False) as wms:
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        yield s3, wms


def answers(wms, colour=RED, size=256, **headers: str) -> None:
    """Every GetMap from now on: a PNG of `colour` with these headers."""
    names = header_names(headers)
    wms.upsert(responses.GET, WMS, body=png(colour, size), content_type="image/png", headers=names)


def header_names(headers: dict[str, str]) -> dict[str, str]:
    """Keyword arguments as header names: Cache_Control is Cache-Control."""
    return {name.replace("_", "-"): value for name, value in headers.items()}


def getmaps(wms) -> int:
    return len([call for call in wms.calls if call.request.url.startswith(WMS)])


def seconds_until(http_date: str) -> float:
    return parsedate_to_datetime(http_date).timestamp() - time.time()


def service_on(s3, tmp_path, **env):
    store = S3Store(BUCKET, s3)  # conditional: If-None-Match on every write it may send
    assert store.conditional
    return make_app(tmp_path, store=store, CACHE_FROM_WMS="true", **env)


def test_the_wms_lifetime_goes_into_s3_and_into_the_answer(world, tmp_path):
    s3, wms = world
    answers(wms, Cache_Control="public, max-age=600")
    app, service = service_on(s3, tmp_path)
    client = app.test_client()
    first = client.get("/" + KEY)
    assert first.headers["X-Tile-Source"] == "render"
    assert first.headers["Cache-Control"] in ("public, max-age=600", "public, max-age=599")
    assert 598 <= seconds_until(first.headers["Expires"]) <= 600
    wait_uploaded(service, KEY)
    head = s3.head_object(Bucket=BUCKET, Key=KEY)
    # S3 cannot count a max-age down: "public" and the absolute Expires.
    assert head["CacheControl"] == "public"
    assert head["ExpiresString"] == first.headers["Expires"]
    hit = client.get("/" + KEY)
    assert hit.headers["X-Tile-Source"] == "cache"
    assert hit.headers["Expires"] == first.headers["Expires"]
    assert 597 <= int(hit.headers["Cache-Control"].rsplit("=", 1)[1]) <= 600
    assert getmaps(wms) == 1


def test_an_expired_tile_is_drawn_again_and_replaced_despite_conditional_puts(world, tmp_path):
    s3, wms = world
    answers(wms, RED, Cache_Control="max-age=0")
    app, service = service_on(s3, tmp_path)
    client = app.test_client()
    client.get("/" + KEY)
    wait_uploaded(service, KEY)
    old = s3.get_object(Bucket=BUCKET, Key=KEY)
    answers(wms, BLUE, Cache_Control="max-age=3600")
    again = client.get("/" + KEY)
    assert again.headers["X-Tile-Source"] == "render"  # the stored tile had expired
    wait_uploaded(service, KEY)
    new = s3.get_object(Bucket=BUCKET, Key=KEY)
    assert new["ETag"] != old["ETag"] and new["Body"].read() == again.data
    assert Image.open(io.BytesIO(again.data)).convert("RGB").getpixel((0, 0)) == BLUE
    assert 3590 < new["Expires"].timestamp() - time.time() <= 3600
    assert client.get("/" + KEY).headers["X-Tile-Source"] == "cache"
    assert getmaps(wms) == 2


@pytest.mark.parametrize("directive", ["no-store", "private, max-age=600"])
def test_an_answer_no_shared_cache_may_keep_is_never_stored(world, tmp_path, directive):
    s3, wms = world
    answers(wms, Cache_Control=directive)
    app, service = service_on(s3, tmp_path)
    client = app.test_client()
    first = client.get("/" + KEY)
    assert first.status_code == 200
    assert first.headers["Cache-Control"] == directive and "Expires" not in first.headers
    service.drain(5)
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0
    assert client.get("/" + KEY).headers["X-Tile-Source"] == "render"
    assert getmaps(wms) == 2


def test_a_layer_without_the_setting_keeps_its_fixed_cache_control(world, tmp_path):
    s3, wms = world
    answers(wms, Cache_Control="max-age=5", Expires="Thu, 01 Jan 1970 00:00:00 GMT")
    app, service = make_app(tmp_path, store=S3Store(BUCKET, s3))
    first = app.test_client().get("/" + KEY)
    assert first.headers["Cache-Control"] == "public, max-age=86400"
    assert "Expires" not in first.headers
    wait_uploaded(service, KEY)
    head = s3.head_object(Bucket=BUCKET, Key=KEY)
    assert head["CacheControl"] == "public, max-age=86400" and "Expires" not in head


def test_every_tile_of_a_metatile_carries_the_renders_lifetime(world, tmp_path):
    s3, wms = world
    answers(wms, size=512, Cache_Control="s-maxage=120, max-age=900")
    app, service = service_on(s3, tmp_path, METATILE="2x2", META_BUFFER="0")
    first = app.test_client().get("/" + KEY)
    wait_all_uploaded(service, 4)
    listed = s3.list_objects_v2(Bucket=BUCKET)["Contents"]
    assert len(listed) == 4
    for entry in listed:
        head = s3.head_object(Bucket=BUCKET, Key=entry["Key"])
        assert head["ExpiresString"] == first.headers["Expires"], entry["Key"]
    assert 118 <= seconds_until(first.headers["Expires"]) <= 120


# --- seeding ----------------------------------------------------------------------------


class HeaderWMS(WMSClient):
    """Answers every GetMap with a PNG of `colour` and the `headers` of a WMS."""

    def __init__(self, colour=RED, **headers: str) -> None:
        super().__init__(pool_size=1, retries=0)
        self.colour, self.headers, self.calls = colour, header_names(headers), 0
        self.lock = threading.Lock()

    @property
    def requests_sent(self) -> int:
        return self.calls

    def get_map_answer(self, source, bbox, width, height) -> WMSAnswer:
        with self.lock:
            self.calls += 1
        return WMSAnswer(png(self.colour, width), dict(self.headers))


def seed(store, wms, cache_from_wms=False, **options):
    """Seed zooms 11-12 over Manhattan, 2x2 metatiles, with these SeedOptions."""
    layer = Layer("demo", WMS, "roads", prefix="tiles/", metatile=(2, 2), meta_buffer=0,
                  formats=("png",), cache_from_wms=cache_from_wms)  # fmt: skip
    runtime = LayerRuntime.build(layer)
    coverage = s_coverage.Coverage.from_bbox((-74.02, 40.70, -73.95, 40.76))
    jobs = list(s_plan.plan_jobs(runtime, coverage, [11, 12]))
    report = s_run.run_seed({"demo": runtime}, jobs, wms, store, s_run.SeedOptions(2, **options))
    return report, len(jobs)


def test_seeding_stores_the_lifetime_the_wms_gives(world):
    s3, _ = world
    report, metatiles = seed(S3Store(BUCKET, s3), HeaderWMS(Cache_Control="max-age=300"),
                             cache_from_wms=True)  # fmt: skip
    assert report.done and not report.failed and report.wms_requests == metatiles
    for entry in s3.list_objects_v2(Bucket=BUCKET)["Contents"]:
        head = s3.head_object(Bucket=BUCKET, Key=entry["Key"])
        assert head["CacheControl"] == "public"
        assert 295 < head["Expires"].timestamp() - time.time() <= 300
    refused, _ = seed(S3Store(BUCKET, s3), HeaderWMS(Cache_Control="no-store"),
                      cache_from_wms=True)  # fmt: skip
    assert refused.done == 0 and refused.ignored == report.done


def test_refresh_older_than_draws_only_tiles_stored_before_the_cutoff_in_s3(world):
    s3, _ = world
    first, metatiles = seed(S3Store(BUCKET, s3, conditional=False), HeaderWMS(RED))
    before = {o["Key"]: o["ETag"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    # Every tile is younger than an hour: all are left alone, no GetMap.
    young = HeaderWMS(BLUE)
    kept, _ = seed(S3Store(BUCKET, s3), young, refresh_before=time.time() - 3600)
    assert (kept.done, kept.skipped, young.calls) == (0, first.done, 0)
    # Every tile is older than a moment from now: all drawn again and replaced, though
    # this store writes with If-None-Match.
    time.sleep(1.1)  # S3 keeps LastModified in whole seconds
    old = HeaderWMS(BLUE)
    redrawn, _ = seed(S3Store(BUCKET, s3), old, refresh_before=time.time())
    assert (redrawn.done, redrawn.skipped, old.calls) == (first.done, 0, metatiles)
    after = {o["Key"]: o["ETag"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert after.keys() == before.keys() and all(after[k] != before[k] for k in before)


def test_refresh_older_than_on_a_local_directory_reads_file_times(tmp_path):
    store = LocalStore(tmp_path / "tiles")
    first, _ = seed(store, HeaderWMS(RED))
    files = sorted((tmp_path / "tiles").rglob("*.png"))
    stale = [path for path in files if "/12/" in path.as_posix()]
    for path in stale:
        os.utime(path, (time.time() - 7200, time.time() - 7200))
    refresh = HeaderWMS(BLUE)
    report, _ = seed(store, refresh, refresh_before=time.time() - 3600)
    assert report.done == len(stale) and report.skipped == first.done - len(stale)
    for path in files:
        colour = Image.open(path).convert("RGB").getpixel((0, 0))
        assert colour == (BLUE if path in stale else RED), path


def test_refresh_cutoffs_and_the_sqs_message_that_carries_one():
    assert refresh_cutoff("7d", 1_000_000.0) == 1_000_000.0 - 7 * 86400
    assert refresh_cutoff("2025-05-01", 2e9) == 1746057600.0  # midnight UTC
    assert refresh_cutoff("2025-05-01T02:00:00+02:00", 2e9) == 1746057600.0
    for bad in ("soon", "7 days", "2099-01-01"):
        with pytest.raises(ConfigProblem, match="--refresh-older-than"):
            refresh_cutoff(bad, 2e9)
    job = s_plan.MetaJob("demo", "png", 12, 1204, 1536)
    (body,) = s_sqs.encode_messages([job], refresh_before=1746057600.0)
    assert json.loads(body)["refresh_before"] == 1746057600.0
    assert s_sqs.decode_message(body).refresh_before == 1746057600.0
    (plain,) = s_sqs.encode_messages([job])
    assert "refresh_before" not in plain and s_sqs.decode_message(plain).refresh_before is None
    with pytest.raises(s_sqs.BadMessage, match="refresh_before"):
        s_sqs.decode_message({**json.loads(body), "refresh_before": "yesterday"})
