"""Mixed and 2x tiles in Debian's Chromium, from the bucket's S3 website endpoint
(LocalStack) as a production map loads them: misses go 307 -> service -> upload, and a
reload comes from the bucket alone.

- Mixed: an OpenLayers XYZ source on ``<website>/coast/{z}/{x}/{y}.mixed``. Every tile
  draws; each answer's Content-Type is that of its bytes (image/jpeg for land, image/png
  where the sea is transparent), from the service and again from the bucket, whose
  objects were stored under exactly the ``.mixed`` keys that missed.
- 2x: the same map at devicePixelRatio 2, once with 1x tiles and once with
  ``tilePixelRatio: 2`` and ``{y}@2x.png`` tiles. The 2x map asks for 512 px
  ``@2x`` tiles at the same zoom, the bucket stores them under those keys, and its
  canvas shows the tiles' own pixels one to one, where the 1x map enlarges 256 px
  tiles: the 2x screenshot is sharper (more edge energy), not only larger.

Screenshots (var/screenshots/): mixed-website-first-load.png, mixed-website-reload.png,
hidpi-chromium-1x.png, hidpi-chromium-2x.png and hidpi-chromium-1x-vs-2x.png (the
same 480 x 360 CSS px of both, side by side).
"""

from __future__ import annotations

import io
import shutil

import pytest
from PIL import Image, ImageChops, ImageFilter, ImageStat

from s3maptiler.http.preview import STATIC_DIR
from s3maptiler.tiles.formats import sniff
from s3maptiler.tiles.grids import WEB_MERCATOR, Tile
from s3maptiler.tiles.srs import crs, to_native
from tests.browser.test_preview import (
    CHROMIUM,
    LOAD_TIMEOUT_MS,
    SCREENSHOTS,
    browser_unavailable,
    ensure_viewer,
)
from tests.browser.test_website_loop import PAGE as LOOP_PAGE
from tests.browser.test_website_loop import (
    WEBSITE_FLAGS,
    PageServer,
    Watched,
    screenshot,
    wait_idle,
)
from tests.integration.conftest import demo_wms, localstack, need  # noqa: F401 - fixtures
from tests.website import Loop, new_bucket_name, setup_bucket, start_service

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.slow]

MERCATOR = crs("EPSG:3857")

LAYERS = """\
wms_url = "{wms}"
wms_layers = "demo"
cache_control = "public, max-age=600"
max_zoom = 12
layout = "xyz"

[layers.coast]
prefix = "coast/"
format = "mixed"
transparent = true

[layers.demo]
prefix = "tiles/"
pixel_ratios = [1, 2]
"""

# The website loop's OpenLayers page (its tile counters and readCanvas), with a URL
# template and tilePixelRatio of our own, its centre in metres (so tile edges fall on
# whole device pixels), and readPixels for a region of the canvas.
_URL = "url: '{website}/tiles/{{z}}/{{x}}/{{-y}}.png',"
_CENTRE = "center: ol.proj.fromLonLat([{lon}, {lat}])"
_END = "</script></body></html>"
_READ_PIXELS = """  window.readPixels = (left, top, width, height) => {{
    const canvas = document.querySelector('#map canvas');
    const data = canvas.getContext('2d').getImageData(left, top, width, height).data;
    return {{ width: canvas.width, height: canvas.height, pixels: Array.from(data) }};
  }};
"""
assert _URL in LOOP_PAGE and _CENTRE in LOOP_PAGE and _END in LOOP_PAGE
PAGE = (
    LOOP_PAGE.replace(_URL, "url: '{template}', tilePixelRatio: {ratio},")
    .replace(_CENTRE, "center: [{x}, {y}]")
    .replace(_END, _READ_PIXELS + _END)
)


def write_page(site, name: str, template: str, ratio: int, centre, z: int) -> None:
    x, y = centre
    (site / name).write_text(PAGE.format(template=template, ratio=ratio, x=x, y=y, z=z))


@pytest.fixture(scope="module")
def chromium():
    """Debian's Chromium with two contexts: a screen at devicePixelRatio 1, and one at 2
    as a phone or a laptop's retina screen has."""
    need(browser_unavailable())
    need(ensure_viewer())
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=WEBSITE_FLAGS
        )
        contexts = {
            1: browser.new_context(viewport={"width": 1024, "height": 768}),
            2: browser.new_context(viewport={"width": 800, "height": 600}, device_scale_factor=2),
        }
        for context in contexts.values():
            context.set_default_timeout(LOAD_TIMEOUT_MS)
        yield contexts
        browser.close()


@pytest.fixture(scope="module")
def loop(localstack, demo_wms, tmp_path_factory):  # noqa: F811 - the imported fixtures
    """One bucket set up by the console script, the service behind it, and the pages'
    own origin with OpenLayers."""
    need(browser_unavailable())
    need(ensure_viewer())
    tmp = tmp_path_factory.mktemp("mixed-hidpi")
    layers = tmp / "layers.toml"
    layers.write_text(LAYERS.format(wms=demo_wms.url))
    bucket = new_bucket_name()
    app = start_service(localstack, bucket, layers)
    site = tmp / "site"
    site.mkdir()
    for name in ("ol.js", "ol.css"):
        shutil.copy(STATIC_DIR / "vendor" / "ol" / name, site / name)
    pages = PageServer(site)
    try:
        setup_bucket(localstack, bucket, app.url, ("coast/", "tiles/"))
        state = Loop(localstack, app, demo_wms)
        state.bucket, state.site, state.pages = bucket, site, pages
        state.website = localstack.website_url(bucket)
        yield state
    finally:
        pages.stop()
        app.stop()


# --------------------------------------------------------------------------- mixed


def test_mixed_tiles_draw_from_the_bucket_with_the_content_type_of_their_bytes(loop, chromium):
    # Zoom 6 around New York: land (opaque), coast and open sea (transparent) tiles.
    centre = to_native(MERCATOR, -72.0, 40.0)
    template = f"{loop.website}/coast/{{z}}/{{x}}/{{y}}.mixed"
    write_page(loop.site, "mixed.html", template, 1, centre, 6)
    page = chromium[1].new_page()
    watched = Watched(page)
    answers = []
    page.on("response", lambda r: answers.append(r) if ".mixed" in r.url else None)
    page.goto(loop.pages.url + "/mixed.html")
    wait_idle(page)
    watched.settle(page)
    assert watched.errors == []
    bodies = {r.url: r.body() for r in answers if r.status == 200}
    from_service = watched.to(loop.app.url)
    assert from_service, "no tile was missing from the bucket"
    first: dict[str, str] = {}
    for url, status, headers in from_service:
        assert url.startswith(f"{loop.app.url}/miss/coast/6/") and url.endswith(".mixed"), url
        assert status == 200, url
        kind = headers["content-type"]
        assert kind == f"image/{sniff(bodies[url])}", (url, kind)
        first[url.split("/miss/", 1)[1]] = kind
    assert set(first.values()) == {"image/jpeg", "image/png"}, first
    screenshot(page, "mixed-website-first-load")

    # The reload: every tile from the bucket, stored under the .mixed key that missed,
    # with the Content-Type the service gave it.
    loop.wait_uploads()
    devtools = chromium[1].new_cdp_session(page)
    devtools.send("Network.enable")
    devtools.send("Network.setCacheDisabled", {"cacheDisabled": True})
    watched.clear()
    answers.clear()
    page.reload()
    wait_idle(page)
    watched.settle(page)
    assert watched.errors == []
    assert watched.to(loop.app.url) == []
    bodies = {r.url: r.body() for r in answers if r.status == 200}
    again = watched.to(loop.website)
    assert {url.split(loop.website + "/", 1)[1] for url, _, _ in again} >= set(first)
    for url, status, headers in again:
        key = url.split(loop.website + "/", 1)[1]
        assert status == 200, url
        assert headers["content-type"] == f"image/{sniff(bodies[url])}", url
        if key in first:
            assert headers["content-type"] == first[key], url
    screenshot(page, "mixed-website-reload")
    page.close()


# --------------------------------------------------------------------------- 2x


Z = 11
# The corner shared by four tiles over Manhattan: tile edges fall on whole pixels.
CORNER = Tile(603, 769, Z)


def sharpness(picture: Image.Image) -> float:
    """Mean edge strength of the grey image: crisp strokes score high, blurred ones low."""
    return ImageStat.Stat(picture.convert("L").filter(ImageFilter.FIND_EDGES)).mean[0]


def test_the_2x_map_loads_2x_tiles_through_the_bucket_and_shows_them_sharp(loop, chromium):
    box = WEB_MERCATOR.tile_bbox(CORNER)
    centre = (box.left, box.top)  # the top-left corner of CORNER, in metres
    write_page(loop.site, "1x.html", f"{loop.website}/tiles/{{z}}/{{x}}/{{y}}.png", 1, centre, Z)
    write_page(loop.site, "2x.html", f"{loop.website}/tiles/{{z}}/{{x}}/{{y}}@2x.png", 2, centre, Z)
    shots = {}
    for ratio in (1, 2):
        page = chromium[2].new_page()
        assert page.evaluate("() => window.devicePixelRatio") == 2
        watched = Watched(page)
        served = loop.service_tile_requests()
        page.goto(f"{loop.pages.url}/{ratio}x.html")
        wait_idle(page)
        watched.settle(page)
        assert watched.errors == []
        asked = watched.to(loop.website)
        suffix = "@2x.png" if ratio == 2 else ".png"
        assert asked and all(url.endswith(suffix) for url, _, _ in asked), asked
        assert all(f"/tiles/{Z}/" in url for url, _, _ in asked)  # the same zoom
        for url, status, headers in watched.to(loop.app.url):
            assert url.startswith(f"{loop.app.url}/miss/tiles/{Z}/") and url.endswith(suffix)
            assert status == 200 and headers["content-type"] == "image/png", url
        assert loop.service_tile_requests() > served  # the bucket was empty: misses
        canvas = page.evaluate("() => window.readPixels(0, 0, 1, 1)")
        assert (canvas["width"], canvas["height"]) == (1600, 1200)  # device pixels
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"hidpi-chromium-{ratio}x.png"
        page.screenshot(path=str(path))
        shots[ratio] = Image.open(path).convert("RGB")
        assert shots[ratio].size == (1600, 1200)
        if ratio == 2:
            # The tile south-east of the centre, as the canvas shows it: its own
            # 512 x 512 pixels, one to one.
            tile_png = loop.stack.website_get(
                loop.bucket, f"/tiles/{Z}/{CORNER.x}/{CORNER.y}@2x.png"
            )
            assert tile_png.status_code == 200
            assert tile_png.headers["Content-Type"] == "image/png"
            expected = Image.open(io.BytesIO(tile_png.content)).convert("RGB")
            assert expected.size == (512, 512)
            drawn = page.evaluate("() => window.readPixels(800, 600, 512, 512)")
            rgba = Image.frombytes("RGBA", (512, 512), bytes(drawn["pixels"]))
            diff = ImageStat.Stat(ImageChops.difference(rgba.convert("RGB"), expected)).mean
            assert max(diff) < 1.0, diff
        page.close()
    # The 2x tiles were stored under the @2x keys that missed: a reload needs no service.
    loop.wait_uploads()
    client = loop.stack.client()
    client.head_object(Bucket=loop.bucket, Key=f"tiles/{Z}/{CORNER.x}/{CORNER.y}@2x.png")
    client.head_object(Bucket=loop.bucket, Key=f"tiles/{Z}/{CORNER.x}/{CORNER.y}.png")
    # Sharper, not only larger: the 1x map is 256 px tiles enlarged to 512.
    assert sharpness(shots[2]) > 1.3 * sharpness(shots[1]), (
        sharpness(shots[1]),
        sharpness(shots[2]),
    )
    crop = (400, 300, 1360, 1020)  # 480 x 360 CSS px around the centre
    sheet = Image.new("RGB", (2 * 960 + 16, 720), "white")
    sheet.paste(shots[1].crop(crop), (0, 0))
    sheet.paste(shots[2].crop(crop), (960 + 16, 0))
    sheet.save(SCREENSHOTS / "hidpi-chromium-1x-vs-2x.png")


def test_the_preview_of_the_2x_layer_draws_its_2x_tiles(loop, chromium):
    from tests.browser.test_website_loop import wait_preview

    page = chromium[2].new_page()
    watched = Watched(page)
    page.goto(f"{loop.app.url}/preview/demo@2x?lon=-73.97&lat=40.78&z={Z}")
    state = wait_preview(page)
    watched.settle(page)
    assert watched.errors == []
    assert state["address"] == "keys" and state["failed"] == 0 and state["loaded"] > 0, state
    asked = [url for url, _, _ in watched.to(loop.app.url) if "/tiles/" in url]
    assert asked and all(url.endswith("@2x.png") for url in asked), asked
    assert all(f"/tiles/{Z}/" in url for url in asked)  # the 1x zoom, 512 px tiles
    screenshot(page, "hidpi-preview-2x")
    page.close()
