"""A PMTiles archive made by ``s3maptiler export`` read in Debian's Chromium by
OpenLayers and protomaps' ``pmtiles`` library (both from npm, scripts/build-viewer.sh),
over HTTP range requests to moto's S3 server: the page, its scripts and the archive
all sit in one bucket. The demo MapServer draws the tiles (``export --fill``); every
tile on screen comes from the archive, byte-sized as in the cache, and every read of
the archive is a 206 range answer. A screenshot goes to var/screenshots/.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from s3maptiler.http.preview import STATIC_DIR
from s3maptiler.tiles.formats import TILE_FORMATS
from s3maptiler.tiles.grids import WEB_MERCATOR
from tests.browser.test_preview import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    NEW_YORK,
    SCREENSHOTS,
    VIEWPORT,
    PreviewPage,
    browser_context,  # noqa: F401 - a fixture
    browser_unavailable,
    check_tiles,
    ensure_viewer,
    tiles_on_screen,
)
from tests.integration.conftest import bucket, demo_wms, moto_server, need, s3  # noqa: F401
from tests.servers import ROOT, GunicornApp

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.slow]

PAGE = Path(__file__).parent / "pages" / "pmtiles.html"
AREA = "-74.10,40.62,-73.85,40.85"
CENTRE = (-73.975, 40.735)
Z = 13


def test_openlayers_reads_an_exported_archive_from_the_bucket_with_range_requests(
    tmp_path,
    demo_wms,  # noqa: F811 - imported fixtures
    moto_server,  # noqa: F811
    s3,  # noqa: F811
    bucket,  # noqa: F811
):
    need(browser_unavailable())
    need(ensure_viewer())
    from playwright.sync_api import sync_playwright

    cache = tmp_path / "cache"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "LAYERS_FILE": "",
        "BUCKET_NAME": "",
        "WMS_SERVER": demo_wms.url,
        "MAP_LAYERS": demo_wms.layers,
        "LOCAL_CACHE_DIR": str(cache),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "s3maptiler.cli",
            "export",
            "default",
            "nyc.pmtiles",
            "--zoom",
            f"10-{Z}",
            "--bbox",
            AREA,
            "--fill",
            "--concurrency",
            "2",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    vendor = STATIC_DIR / "vendor"
    files = {
        "index.html": (PAGE, "text/html"),
        "ol.js": (vendor / "ol" / "ol.js", "text/javascript"),
        "ol.css": (vendor / "ol" / "ol.css", "text/css"),
        "pmtiles.js": (vendor / "pmtiles" / "pmtiles.js", "text/javascript"),
        "nyc.pmtiles": (tmp_path / "nyc.pmtiles", "application/vnd.pmtiles"),
    }
    for name, (path, content_type) in files.items():
        s3.upload_file(str(path), bucket, f"map/{name}", ExtraArgs={"ContentType": content_type})
    # Public reads, as `bucket setup` makes them: the page reads anonymously.
    statement = {
        "Effect": "Allow",
        "Principal": "*",
        "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{bucket}/*",
    }
    policy = {"Version": "2012-10-17", "Statement": [statement]}
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    base = f"{moto_server.url}/{bucket}/map"

    reads, errors = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
        )
        page = browser.new_page(viewport=VIEWPORT)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on(
            "response",
            lambda r: (
                reads.append((r.status, r.request.headers.get("range")))
                if r.url.startswith(f"{base}/nyc.pmtiles")
                else None
            ),
        )
        page.goto(
            f"{base}/index.html#archive={base}/nyc.pmtiles&lon={CENTRE[0]}&lat={CENTRE[1]}&z={Z}"
        )
        page.wait_for_function("window.state && window.state.done", timeout=60_000)
        state = page.evaluate("window.state")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "export-pmtiles-openlayers.png"))
        browser.close()

    assert not errors and not state["errors"], (errors, state["errors"])
    on_screen = tiles_on_screen(WEB_MERCATOR, *CENTRE, Z)
    shown = {tuple(int(v) for v in key.split("/")) for key in state["sizes"]}
    assert shown == {(t.z, t.x, t.y) for t in on_screen} and state["empty"] == 0
    for key, size in state["sizes"].items():  # the cache's own tiles, byte for byte in size
        z, x, y = (int(v) for v in key.split("/"))
        tms = 2**z - 1 - y
        assert size == (cache / "tiles" / str(z) / str(x) / f"{tms}.png").stat().st_size
    # Every read of the archive is a range answer: the header and directories, then
    # tile data (pmtiles.js may read neighbouring tiles in one range).
    assert reads and all(status == 206 and rng for status, rng in reads), reads
    assert len(reads) <= len(on_screen) + 2


PREVIEW_LAYERS = """\
wms_url = "{wms}"
wms_layers = "{layers}"

[layers.demo]
prefix = "tiles/"
pmtiles = "archives/nyc.pmtiles"
pmtiles_zooms = [10, 12]
"""


def test_the_preview_shows_zooms_answered_from_the_archive(
    tmp_path,
    demo_wms,  # noqa: F811 - imported fixtures
    browser_context,  # noqa: F811
):
    """The service's own preview over New York at an archived zoom: every tile on
    screen is answered from the archive (X-Tile-Source: archive, counted in the
    panel), and the WMS draws nothing."""
    need(ensure_viewer())
    source_cache, served = tmp_path / "drawn", tmp_path / "served"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "LAYERS_FILE": "",
        "BUCKET_NAME": "",
        "WMS_SERVER": demo_wms.url,
        "MAP_LAYERS": demo_wms.layers,
        "LOCAL_CACHE_DIR": str(source_cache),
    }
    (served / "archives").mkdir(parents=True)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "s3maptiler.cli",
            "export",
            "default",
            str(served / "archives" / "nyc.pmtiles"),
            "--zoom",
            "10-12",
            "--bbox",
            "-74.30,40.45,-73.60,41.00",
            "--fill",
            "--concurrency",
            "2",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    layers = tmp_path / "layers.toml"
    layers.write_text(PREVIEW_LAYERS.format(wms=demo_wms.url, layers=demo_wms.layers))
    app = GunicornApp(
        {
            "LAYERS_FILE": str(layers),
            "LOCAL_CACHE_DIR": str(served),
            "WEB_CONCURRENCY": "1",
            "GUNICORN_THREADS": "8",
            "LOG_LEVEL": "WARNING",
        }
    ).start()
    try:
        before = demo_wms.request_count()
        page = PreviewPage(browser_context, app.url)
        page.open(f"/preview/demo?lon={NEW_YORK[0]}&lat={NEW_YORK[1]}&z=12")
        sources = check_tiles(page, TILE_FORMATS["png"], WEB_MERCATOR, 12)
        assert set(sources) == {"archive"}, sources
        assert page.state()["counts"]["archive"] == sources["archive"]
        assert demo_wms.request_count() == before
        page.screenshot("preview-archive-zooms")
    finally:
        app.stop()
