"""The S3 website endpoint for real: LocalStack's S3 runs the routing rules that
`s3maptiler bucket setup` writes, and the loop bucket -> 307 -> service -> upload ->
bucket goes round once per tile.

moto stores a website configuration but serves no website endpoint; these tests use
LocalStack (see devtools/localwebsite.py), with the demo MapServer behind the service.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests
from PIL import Image

from devtools import localwebsite
from devtools.demowms import unavailable_reason
from tests.integration.conftest import need
from tests.servers import ROOT, free_port, wait_http
from tests.website import Loop, cli, new_bucket_name, setup_bucket, start_service

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LAYERS = """\
wms_url = "{wms}"
wms_layers = "demo"
cache_control = "public, max-age=600"
max_zoom = 16

[layers.demo]
prefix = "tiles/"
"""
# Manhattan at zoom 12, TMS numbering (y from the bottom), as the layer's keys are.
TILE = "tiles/12/1205/2556.png"


@pytest.fixture(scope="module")
def loop(localstack, demo_wms, tmp_path_factory):
    layers = tmp_path_factory.mktemp("website") / "layers.toml"
    layers.write_text(LAYERS.format(wms=demo_wms.url))
    bucket = new_bucket_name()
    app = start_service(localstack, bucket, layers)
    setup_bucket(localstack, bucket, app.url, ("tiles/",))
    yield Loop(localstack, app, demo_wms), bucket
    app.stop()


def test_bucket_setup_with_a_local_tiler_url_then_check_reports_clean(localstack):
    bucket = new_bucket_name()
    localstack.client().create_bucket(Bucket=bucket)
    where = ["--bucket", bucket, "--endpoint-url", localstack.url, "--prefix", "tiles/"]
    tiler = "http://127.0.0.1:8123"

    # A new bucket has Block Public Access on (LocalStack as S3 since April 2023; moto
    # leaves it off): the public-read policy is refused until the user allows relaxing it.
    refused = cli("bucket", "setup", *where, "--tiler-url", tiler)
    assert refused.returncode == 1 and "--relax-public-access-block" in refused.stderr
    setup = cli("bucket", "setup", *where, "--tiler-url", tiler, "--relax-public-access-block")
    assert setup.returncode == 0, setup.stderr
    assert f"-> 307 {tiler}/miss/" in setup.stdout
    # Only the relaxing is warned about: a loopback tiler over http is no cause for one.
    assert setup.stderr.splitlines() == [
        f"warning: Block Public Access on {bucket} was relaxed "
        "(BlockPublicPolicy=false, RestrictPublicBuckets=false)"
    ]
    check = cli("bucket", "check", *where, "--tiler-url", tiler)
    assert (check.returncode, check.stdout.splitlines()[-1]) == (
        0,
        f"bucket check s3://{bucket}: ok",
    )

    # The rules as LocalStack runs them: a missing tile is a 307 to the tiler, with CORS.
    miss = localstack.website_get(bucket, "/tiles/3/4/2.png", {"Origin": "http://map.test"})
    assert miss.status_code == 307
    assert miss.headers["Location"] == f"{tiler}/miss/tiles/3/4/2.png"
    assert miss.headers["Access-Control-Allow-Origin"] == "*"
    # Not a tile prefix: S3's own 404, no redirect.
    assert localstack.website_get(bucket, "/elsewhere/3/4/2.png").status_code == 404
    # LocalStack's own name for the endpoint (the issue's) is the same endpoint.
    documented = f"{bucket}.s3-website.localhost.localstack.cloud:{localstack.port}"
    same = requests.get(
        localstack.url + "/tiles/3/4/2.png", headers={"Host": documented}, allow_redirects=False
    )
    assert (same.status_code, same.headers["Location"]) == (307, miss.headers["Location"])

    # Checked against the production default (https to a host name), the same bucket
    # is wrong in exactly the Protocol and HostName of each rule.
    strict = cli("bucket", "check", *where, "--tiler-host", "tiles-api.example.com")
    assert strict.returncode == 1
    problems = strict.stdout.splitlines()[:-1]
    assert len(problems) == 2 * 2, strict.stdout  # 404 and 403 rule x Protocol, HostName
    assert all("Protocol is 'http'" in p or "HostName is" in p for p in problems)


def test_bucket_setup_defaults_to_https_and_covers_arcgis_rest_tiles(localstack):
    bucket = new_bucket_name()
    localstack.client().create_bucket(Bucket=bucket)
    where = ["--bucket", bucket, "--endpoint-url", localstack.url]
    setup = cli(
        "bucket",
        "setup",
        *where,
        "--tiler-host",
        "tiles-api.example.com",
        "--prefix",
        "tiles/",
        "--prefix",
        "arcgis/rest/services/",
        "--no-public-read",
    )
    assert setup.returncode == 0, setup.stderr
    miss = localstack.website_get(bucket, "/tiles/3/4/2.png")
    assert (miss.status_code, miss.headers["Location"]) == (
        307,
        "https://tiles-api.example.com/miss/tiles/3/4/2.png",
    )
    arcgis = localstack.website_get(bucket, "/arcgis/rest/services/demo/MapServer/tile/3/2/4")
    assert arcgis.headers["Location"] == (
        "https://tiles-api.example.com/miss/arcgis/rest/services/demo/MapServer/tile/3/2/4"
    )


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8123/api", "ftp://127.0.0.1", "http://user@host", "http://host:99999"],
)
def test_a_bad_tiler_url_is_one_line_and_writes_nothing(localstack, url):
    bucket = new_bucket_name()
    client = localstack.client()
    client.create_bucket(Bucket=bucket)
    done = cli(
        "bucket", "setup", "--bucket", bucket, "--endpoint-url", localstack.url, "--tiler-url", url
    )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    with pytest.raises(client.exceptions.ClientError, match="NoSuchWebsiteConfiguration"):
        client.get_bucket_website(Bucket=bucket)


def test_a_plain_http_tiler_elsewhere_gets_a_warning(localstack):
    bucket = new_bucket_name()
    localstack.client().create_bucket(Bucket=bucket)
    done = cli(
        "bucket",
        "setup",
        "--bucket",
        bucket,
        "--endpoint-url",
        localstack.url,
        "--tiler-url",
        "http://tiles-api.example.com",
        "--no-public-read",
        "--dry-run",
    )
    assert done.returncode == 0, done.stderr
    assert "warning: misses will be redirected over plain http" in done.stderr


def test_a_missing_tile_goes_round_the_loop_once(loop):
    loop, bucket = loop
    stack = loop.stack
    getmaps, served = loop.getmaps(), loop.service_tile_requests()

    miss = stack.website_get(bucket, "/" + TILE)
    assert miss.status_code == 307
    assert miss.headers["Location"] == f"{loop.app.url}/miss/{TILE}"
    rendered = requests.get(miss.headers["Location"], timeout=60)
    assert rendered.status_code == 200, rendered.text
    assert rendered.headers["X-Tile-Source"] == "render"
    assert rendered.headers["Content-Type"] == "image/png"
    assert loop.getmaps() == getmaps + 1  # one GetMap: the tile's metatile
    loop.wait_uploads()

    hit = stack.website_get(bucket, "/" + TILE)
    assert hit.status_code == 200
    assert hit.headers["Content-Type"] == "image/png"
    assert hit.content == rendered.content  # the bytes the service answered
    assert hit.headers["ETag"] == rendered.headers["ETag"]
    image = Image.open(io.BytesIO(hit.content))
    assert image.size == (256, 256) and len(image.convert("RGB").getcolors(1 << 16)) > 10
    # The neighbours of the metatile were stored too: the bucket serves them, no GetMap.
    loop.wait_stored(bucket, "tiles/12/1204/2556.png")
    neighbour = stack.website_get(bucket, "/tiles/12/1204/2556.png")
    assert neighbour.status_code == 200
    assert loop.getmaps() == getmaps + 1
    assert loop.service_tile_requests() == served + 1


def test_local_website_true_runs_the_whole_loop_from_application_py(tmp_path):
    """`make run-website`: LOCAL_WEBSITE=true python application.py starts the demo WMS,
    LocalStack and the service, and sets the bucket up; SIGTERM stops all three."""
    need(unavailable_reason())
    need(localwebsite.unavailable_reason())
    port, website_port = free_port(), free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LOCAL_WEBSITE": "true",
        "PORT": str(port),
        "LOCAL_WEBSITE_PORT": str(website_port),
        "LOCAL_CACHE_DIR": str(tmp_path / "unused"),
        # A spool of its own: another test's fresh render of this metatile in the
        # host's default spool would answer it ("inflight"), not a render.
        "SPOOL_DIR": str(tmp_path / "spool"),
    }
    log = open(tmp_path / "run.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "application.py")],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/heartbeat", timeout=90, process=process)
        stack = localwebsite.LocalStack(website_port)  # the one application.py started
        miss = stack.website_get("s3maptiler-demo", "/" + TILE)
        assert miss.status_code == 307, (tmp_path / "run.log").read_text()
        assert miss.headers["Location"] == f"http://127.0.0.1:{port}/miss/{TILE}"
        rendered = requests.get(miss.headers["Location"], timeout=60)
        assert rendered.headers["X-Tile-Source"] == "render"
        deadline = time.monotonic() + 30
        while (hit := stack.website_get("s3maptiler-demo", "/" + TILE)).status_code != 200:
            assert time.monotonic() < deadline, "the tile never reached the bucket"
            time.sleep(0.2)
        assert hit.content == rendered.content
        # The published documents come with it, and the pages name the bucket's URL.
        capabilities = stack.website_get("s3maptiler-demo", "/1.0.0/tilemapservice.xml")
        assert capabilities.status_code == 200
        index = requests.get(f"http://127.0.0.1:{port}/", timeout=30).text
        assert f"http://s3maptiler-demo.s3-website.localhost:{website_port}</code>" in index
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
        log.close()
    with pytest.raises(requests.ConnectionError):  # LocalStack stopped with it
        requests.get(f"http://127.0.0.1:{website_port}/_localstack/health", timeout=5)


@pytest.mark.parametrize("port", ["abc", "busy"])
def test_local_website_with_a_bad_or_busy_port_is_one_line_and_exit_2(port, tmp_path):
    need(localwebsite.unavailable_reason())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        value = str(taken.getsockname()[1]) if port == "busy" else port
        done = subprocess.run(
            [sys.executable, str(ROOT / "application.py")],
            cwd=tmp_path,
            env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "LOCAL_WEBSITE": "true",
                "LOCAL_WEBSITE_PORT": value,
                "PORT": str(free_port()),
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert "LOCAL_WEBSITE_PORT" in done.stderr


MONTHS = """\
wms_url = "{wms}"
[layers.months]
wms_layers = "months"
prefix = "months/"
transparent = true
pixel_ratios = [1, 2]
[layers.months.dimensions.time]
values = "2024-01-01/2024-12-01/P1M"
default = "2024-12-01"
"""


@pytest.fixture(scope="module")
def months_loop(localstack, demo_wms, tmp_path_factory):
    """A layer with a TIME dimension and @2x tiles, as users run the service: two
    gunicorn workers (the default on two cores), behind the bucket's website endpoint."""
    layers = tmp_path_factory.mktemp("website-months") / "layers.toml"
    layers.write_text(MONTHS.format(wms=demo_wms.url))
    bucket = new_bucket_name()
    app = start_service(localstack, bucket, layers, WEB_CONCURRENCY="2")
    setup_bucket(localstack, bucket, app.url, ("months/",))
    yield Loop(localstack, app, demo_wms), bucket
    app.stop()


def test_a_dated_2x_tile_goes_round_the_loop_and_a_bad_date_writes_nothing(months_loop):
    loop, bucket = months_loop
    stack = loop.stack
    tiles = {}
    for month in ("2024-03-01", "2024-06-01"):
        key = f"months/{month}/3/1/4@2x.png"  # TMS z3: 135-90 W, the March band
        getmaps = loop.getmaps()
        miss = stack.website_get(bucket, "/" + key)
        assert (miss.status_code, miss.headers["Location"]) == (307, f"{loop.app.url}/miss/{key}")
        rendered = requests.get(miss.headers["Location"], timeout=60)
        assert rendered.status_code == 200, rendered.text
        assert loop.getmaps() == getmaps + 1
        assert Image.open(io.BytesIO(rendered.content)).size == (512, 512)
        loop.wait_stored(bucket, key)
        hit = stack.website_get(bucket, "/" + key)
        assert (hit.status_code, hit.content) == (200, rendered.content)
        assert loop.getmaps() == getmaps + 1
        tiles[month] = hit.content
    assert tiles["2024-03-01"] != tiles["2024-06-01"]  # each month a cache of its own

    getmaps = loop.getmaps()
    bad = "months/2025-03-01/3/1/4@2x.png"  # not a declared month
    miss = stack.website_get(bucket, "/" + bad)
    refused = requests.get(miss.headers["Location"], timeout=60)
    assert refused.status_code == 400 and "2025-03-01" in refused.text
    assert loop.getmaps() == getmaps
    time.sleep(1.0)  # an upload would have been queued at once
    assert stack.website_get(bucket, "/" + bad).status_code == 307  # still not stored
