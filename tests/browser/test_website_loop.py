"""The product's loop in a real browser: an OpenLayers map whose tiles come from the
bucket's S3 website endpoint (LocalStack), as a production map's do.

Debian's Chromium (headless, Playwright) opens a page served from a third origin: an
OpenLayers XYZ source on ``http://<bucket>.s3-website.localhost:<port>/tiles/{z}/{x}/{-y}.png``
with ``crossOrigin: 'anonymous'``, as WebGL and canvas clients load tiles.

- First load: every tile is a 307 from the bucket to the service, then a 200 image from
  the service, and the demo WMS draws each tile once (lighttpd counts). With 4x4
  metatiles it draws each metatile on screen once, and a tile whose neighbour's render
  stored it before the browser asked may already come from the bucket.
- Reload: every tile is a 200 from the bucket; no GetMap, no request at the service.
- Both on a public bucket and on one whose policy denies s3:ListBucket.
- The map's canvas stays readable (getImageData, toDataURL): CORS held on the bucket's
  200, on its 307 and on the service's answer.

Nothing is routed through Playwright (routing would turn off the browser's cache);
requests are watched as they happen. Screenshots go to var/screenshots/.
"""

from __future__ import annotations

import shutil
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from s3maptiler.http.preview import STATIC_DIR
from s3maptiler.tiles.grids import WEB_MERCATOR, Tile
from s3maptiler.tiles.metatile import metatile_for
from tests.browser.test_preview import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    LOAD_TIMEOUT_MS,
    NEW_YORK,
    SCREENSHOTS,
    VIEWPORT,
    browser_unavailable,
    ensure_viewer,
    tiles_on_screen,
)
from tests.integration.conftest import demo_wms, localstack, need  # noqa: F401 - fixtures
from tests.servers import free_port
from tests.website import Loop, new_bucket_name, setup_bucket, start_service

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.slow]

Z = 12
LAYERS = """\
wms_url = "{wms}"
wms_layers = "demo"
cache_control = "public, max-age=600"
max_zoom = 16
metatile = "{metatile}"
meta_buffer = {buffer}

[layers.demo]
prefix = "tiles/"
"""
# *.localhost is loopback to Chromium; every other name still resolves to nothing.
WEBSITE_FLAGS = [
    flag
    if not flag.startswith("--host-resolver-rules=")
    else "--host-resolver-rules=MAP *.localhost 127.0.0.1, MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
    for flag in CHROMIUM_FLAGS
]

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>tiles from the bucket</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="ol.css">
<style>html, body, #map {{ margin: 0; width: 100%; height: 100%; }}</style>
</head><body><div id="map"></div>
<script src="ol.js"></script>
<script>
  const html = document.documentElement;
  let pending = 0, loaded = 0, failed = 0;
  const source = new ol.source.XYZ({{
    url: '{website}/tiles/{{z}}/{{x}}/{{-y}}.png',
    crossOrigin: 'anonymous',
    transition: 0,
  }});
  source.on('tileloadstart', () => {{ pending += 1; html.dataset.state = 'loading'; }});
  const done = (ok) => () => {{
    pending -= 1; if (ok) loaded += 1; else failed += 1;
    html.dataset.loaded = loaded; html.dataset.failed = failed;
  }};
  source.on('tileloadend', done(true));
  source.on('tileloaderror', done(false));
  const map = new ol.Map({{
    target: 'map',
    layers: [new ol.layer.Tile({{ source: source, preload: 0 }})],
    view: new ol.View({{ center: ol.proj.fromLonLat([{lon}, {lat}]), zoom: {z} }}),
    controls: [],
  }});
  map.on('rendercomplete', () => {{
    if (pending === 0 && loaded + failed > 0) html.dataset.state = 'idle';
  }});
  // Whether a canvas client may read the pixels: a tainted canvas throws here.
  window.readCanvas = () => {{
    const canvas = document.querySelector('#map canvas');
    const context = canvas.getContext('2d');
    const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
    const colours = new Set();
    for (let i = 0; i < pixels.length; i += 4 * 97) {{
      colours.add(pixels[i] * 65536 + pixels[i + 1] * 256 + pixels[i + 2]);
    }}
    return {{ width: canvas.width, colours: colours.size, dataUrl: canvas.toDataURL().length }};
  }};
</script></body></html>
"""


class PageServer:
    """The map's page and OpenLayers, from an origin of their own on 127.0.0.1."""

    def __init__(self, root) -> None:
        handler = partial(_QuietHandler, directory=str(root))
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    need(browser_unavailable())
    need(ensure_viewer())
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM,
            headless=True,
            args=WEBSITE_FLAGS,
            viewport=VIEWPORT,
        )
        context.set_default_timeout(LOAD_TIMEOUT_MS)
        yield context
        context.close()


class Watched:
    """Every finished request of a page: (url, status, headers), each hop of a redirect."""

    def __init__(self, page) -> None:
        self.hops: list[tuple[str, int, dict[str, str]]] = []
        self.errors: list[str] = []
        page.on("requestfinished", self._finished)
        page.on("requestfailed", lambda r: self.errors.append(f"failed: {r.url} {r.failure}"))
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on(
            "console",
            lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None,
        )

    def _finished(self, request) -> None:
        chain = []
        while request is not None:
            chain.append(request)
            request = request.redirected_from
        for hop in reversed(chain):
            response = hop.response()
            if response is not None:
                entry = (hop.url, response.status, response.all_headers())
                if entry[:2] not in [h[:2] for h in self.hops]:
                    self.hops.append(entry)

    def to(self, origin: str) -> list[tuple[str, int, dict[str, str]]]:
        return [hop for hop in self.hops if hop[0].startswith(origin + "/")]

    def clear(self) -> None:
        self.hops.clear()

    def settle(self, page, quiet_ms: int = 300, timeout_ms: int = 10_000) -> None:
        """Until no request has finished for `quiet_ms`: Playwright reports a finished
        request a moment after the page itself has drawn the tile."""
        waited, seen = 0, -1
        while len(self.hops) != seen and waited < timeout_ms:
            seen = len(self.hops)
            page.wait_for_timeout(quiet_ms)
            waited += quiet_ms


def wait_idle(page) -> None:
    """Until every tile asked for has loaded or failed; then none may have failed."""
    page.wait_for_function(
        "() => document.documentElement.dataset.state === 'idle'", timeout=LOAD_TIMEOUT_MS
    )
    assert page.evaluate("() => document.documentElement.dataset.failed || '0'") == "0"


def screenshot(page, name: str) -> None:
    """var/screenshots/<name>.png, which must show a map: more than 32 colours."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    with Image.open(path) as shot:
        assert shot.convert("RGB").getcolors(maxcolors=32) is None, f"{path} shows no map"


def tile_of(url: str) -> Tile:
    """The XYZ tile of a URL ending in tiles/{z}/{x}/{y}.png (TMS y, from the bottom)."""
    z, x, y = url.rsplit("/tiles/", 1)[1].removesuffix(".png").split("/")
    z, x, y = int(z), int(x), int(y)
    return Tile(x, 2**z - 1 - y, z)


@pytest.mark.parametrize(
    "policy, metatile", [("public", "1x1"), ("deny-listing", "4x4")], ids=["public", "deny-listing"]
)
def test_first_load_goes_through_the_service_and_the_reload_comes_from_the_bucket(
    localstack,  # noqa: F811 - the imported fixture
    demo_wms,  # noqa: F811 - the imported fixture
    browser,
    tmp_path,
    policy,
    metatile,
):
    bucket = new_bucket_name()
    layers_file = tmp_path / "layers.toml"
    buffer = 0 if metatile == "1x1" else 64  # 1x1 without a buffer: the WMS's own bytes
    layers_file.write_text(LAYERS.format(wms=demo_wms.url, metatile=metatile, buffer=buffer))
    website = localstack.website_url(bucket)
    site = tmp_path / "site"
    site.mkdir()
    for name in ("ol.js", "ol.css"):
        shutil.copy(STATIC_DIR / "vendor" / "ol" / name, site / name)
    lon, lat = NEW_YORK
    (site / "index.html").write_text(PAGE.format(website=website, lon=lon, lat=lat, z=Z))
    pages = PageServer(site)
    # The public case allows every origin; the other only the map's page, as a locked
    # down deployment would: a redirected miss then arrives with "Origin: null".
    cors = "*" if policy == "public" else pages.url
    app = start_service(localstack, bucket, layers_file, CORS_ORIGINS=cors)
    try:
        # The console script's set-up, with the service on plain http at 127.0.0.1.
        setup_bucket(localstack, bucket, app.url, ("tiles/",), deny_listing=policy != "public")
        loop = Loop(localstack, app, demo_wms)

        page = browser.new_page()
        watched = Watched(page)
        answers = []  # the service's answers to redirected misses, to compare bytes
        miss_url = f"{app.url}/miss/"
        page.on("response", lambda r: answers.append(r) if r.url.startswith(miss_url) else None)
        getmaps, served = loop.getmaps(), loop.service_tile_requests()

        # --- first load: each tile a 307 from the bucket, then a 200 from the service.
        page.goto(pages.url + "/index.html")
        wait_idle(page)
        watched.settle(page)
        assert watched.errors == []
        from_bucket = watched.to(website)
        from_service = watched.to(app.url)
        tiles = {tile_of(url) for url, _, _ in from_bucket}
        assert tiles_on_screen(WEB_MERCATOR, lon, lat, Z) <= tiles
        assert len(from_bucket) == len(tiles), "a tile was asked for twice"
        redirected = [hop for hop in from_bucket if hop[1] == 307]
        stored_already = [hop for hop in from_bucket if hop[1] == 200]
        assert len(redirected) + len(stored_already) == len(tiles), from_bucket
        if metatile == "1x1":
            assert stored_already == []  # each tile its own GetMap: all of them missing
        # Only tiles of a metatile drawn in this load can be in the bucket already.
        assert len(redirected) >= len(tiles) // 16, from_bucket
        assert len(from_service) == len(redirected)
        for url, status, headers in from_service:
            assert url.startswith(f"{app.url}/miss/tiles/{Z}/")
            assert status == 200 and headers["content-type"] == "image/png", url
            # render; inflight: cut from a neighbour's metatile; cache: stored by it just
            # after the bucket said "missing".
            assert headers["x-tile-source"] in ("render", "inflight", "cache"), url
        # CORS on every hop a canvas client needs: the bucket's 307, the service's 200.
        for url, _, headers in from_bucket + from_service:
            assert headers.get("access-control-allow-origin") == "*", url
        for url, _, headers in stored_already:
            assert headers["content-type"] == "image/png", url
        # One GetMap per metatile on screen (per tile with 1x1), however many tiles it has.
        size = tuple(int(n) for n in metatile.split("x"))
        metatiles = {metatile_for(WEB_MERCATOR, t, size, 0).bbox for t in tiles}
        assert loop.getmaps() - getmaps == len(metatiles)
        assert loop.service_tile_requests() - served == len(redirected)
        canvas = page.evaluate("() => window.readCanvas()")
        assert canvas["colours"] > 32 and canvas["dataUrl"] > 10_000, canvas
        screenshot(page, f"website-{policy}-first-load")
        answered = {r.url[len(miss_url) :]: r.body() for r in answers if r.status == 200}
        assert len(answered) == len(redirected)

        # --- reload, once every tile is in the bucket: all of it from the bucket. A hard
        # reload (the browser's cache off, as Ctrl+Shift+R), so every tile is asked for
        # again and each answer is S3's own 200, not a 304 of a copy the browser kept.
        loop.wait_uploads()
        getmaps, served = loop.getmaps(), loop.service_tile_requests()
        watched.clear()
        devtools = browser.new_cdp_session(page)
        devtools.send("Network.enable")
        devtools.send("Network.setCacheDisabled", {"cacheDisabled": True})
        page.reload()
        wait_idle(page)
        watched.settle(page)
        assert watched.errors == []
        again = watched.to(website)
        assert {tile_of(url) for url, _, _ in again} == tiles
        for url, status, headers in again:
            assert (status, headers.get("content-type")) == (200, "image/png"), url
            assert "x-tile-source" not in headers, url  # S3's answer, not the service's
            assert headers.get("access-control-allow-origin") == "*", url
        assert watched.to(app.url) == []
        assert loop.getmaps() == getmaps
        assert loop.service_tile_requests() == served
        canvas = page.evaluate("() => window.readCanvas()")
        assert canvas["colours"] > 32 and canvas["dataUrl"] > 10_000, canvas
        screenshot(page, f"website-{policy}-reload")

        # The bytes from the bucket are the bytes the service answered at first.
        for key, first in answered.items():
            assert localstack.website_get(bucket, "/" + key).content == first, key
        page.close()
    finally:
        pages.stop()
        app.stop()


# --------------------------------------------------------------------------- the preview


def preview_state(page) -> dict:
    return page.evaluate(
        """() => ({
            state: document.documentElement.dataset.mapState,
            address: document.documentElement.dataset.address,
            loaded: Number(document.documentElement.dataset.tilesLoaded),
            failed: Number(document.documentElement.dataset.tilesFailed),
            redirected: Number(document.documentElement.dataset.tilesRedirected),
            counts: Object.fromEntries([...document.querySelectorAll('[data-count]')]
                .map((e) => [e.dataset.count, Number(e.textContent)])),
        })"""
    )


def wait_preview(page) -> dict:
    page.wait_for_function(
        "() => document.documentElement.dataset.mapState === 'idle'"
        " && Number(document.documentElement.dataset.tilesLoaded) > 0",
        timeout=LOAD_TIMEOUT_MS,
    )
    return preview_state(page)


def test_the_preview_draws_the_bucket_and_tells_bucket_tiles_from_redirected_ones(
    localstack,  # noqa: F811 - the imported fixture
    demo_wms,  # noqa: F811 - the imported fixture
    browser,
    tmp_path,
):
    layers_file = tmp_path / "layers.toml"
    layers_file.write_text(LAYERS.format(wms=demo_wms.url, metatile="4x4", buffer=64))
    bucket = new_bucket_name()
    website = localstack.website_url(bucket)
    app = start_service(localstack, bucket, layers_file, PUBLIC_URL=website)
    try:
        setup_bucket(localstack, bucket, app.url, ("tiles/",))
        loop = Loop(localstack, app, demo_wms)
        page = browser.new_page()
        watched = Watched(page)
        lon, lat = NEW_YORK
        served = loop.service_tile_requests()

        page.goto(f"{app.url}/preview/demo?lon={lon}&lat={lat}&z={Z}")
        first = wait_preview(page)
        assert watched.errors == []
        assert first["address"] == "bucket"  # the production path comes first
        assert page.locator("#template").inner_text() == f"{website}/tiles/{{z}}/{{x}}/{{-y}}.png"
        counts = first["counts"]
        assert first["failed"] == 0 and counts["error"] == 0
        # Every tile either straight from the bucket or through its 307 to the service.
        assert first["redirected"] > 0 and counts["render"] > 0, first
        assert counts["render"] + counts["inflight"] + counts["cache"] == first["redirected"]
        assert counts["bucket"] + first["redirected"] == first["loaded"], first
        assert loop.service_tile_requests() - served == first["redirected"]
        screenshot(page, "preview-bucket-first-load")

        loop.wait_uploads()
        getmaps, served = loop.getmaps(), loop.service_tile_requests()
        watched.clear()
        page.reload()
        again = wait_preview(page)
        assert again["counts"]["bucket"] == again["loaded"] == first["loaded"], again
        assert again["redirected"] == 0
        assert loop.getmaps() == getmaps
        assert loop.service_tile_requests() == served
        assert not [url for url, _, _ in watched.to(app.url) if "/miss/" in url or "/tiles/" in url]
        screenshot(page, "preview-bucket-reload")
        page.close()
    finally:
        app.stop()


def test_the_preview_says_in_one_line_when_the_bucket_does_not_answer(
    localstack,  # noqa: F811 - the imported fixture
    demo_wms,  # noqa: F811 - the imported fixture
    browser,
    tmp_path,
):
    layers_file = tmp_path / "layers.toml"
    layers_file.write_text(LAYERS.format(wms=demo_wms.url, metatile="4x4", buffer=64))
    nowhere = f"http://nowhere.s3-website.localhost:{free_port()}"  # nothing listens
    app = start_service(localstack, new_bucket_name(), layers_file, PUBLIC_URL=nowhere)
    try:
        page = browser.new_page()
        lon, lat = NEW_YORK
        page.goto(f"{app.url}/preview/demo?lon={lon}&lat={lat}&z={Z}")
        banner = page.locator("#bucket-problem")
        banner.wait_for(state="visible", timeout=LOAD_TIMEOUT_MS)
        text = banner.inner_text()
        assert nowhere in text and "\n" not in text.strip(), text
        # The page stays in that state, not 'loading' or 'idle', while tiles keep failing.
        page.wait_for_timeout(500)
        assert preview_state(page)["state"] == "unreachable"
        page.screenshot(path=str(SCREENSHOTS / "preview-bucket-unreachable.png"))
        # The other addresses still draw the map from the service.
        page.select_option("#address", "keys")
        state = wait_preview(page)
        assert state["failed"] == 0 and banner.is_hidden()
        page.close()
    finally:
        app.stop()
