"""The preview map in Debian's Chromium (headless, driven by Playwright) against the
demo MapServer, and the pages' server side through Flask's test client.

The browser tests open `/preview/<layer>` over New York on the service run with the
Procfile command, wait until OpenLayers reports every tile loaded, and check every
tile the page fetched: status 200, an image of the grid's tile size, more than one
colour over New York, at the addresses of the tiles on screen. They switch the address
once (the layer's own keys, then the ArcGIS REST route) and check again, and save
screenshots to var/screenshots/ for a person to look at.
"""

from __future__ import annotations

import io
import math
import shutil
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from s3maptiler.config import Layer, load_settings
from s3maptiler.config.layersfile import load_layers_file
from s3maptiler.http import preview
from s3maptiler.http.app import create_app
from s3maptiler.service.build import build_service
from s3maptiler.tiles.formats import TILE_FORMATS, TileFormat
from s3maptiler.tiles.grids import GLOBAL_GEODETIC, WEB_MERCATOR, Bbox, Tile, TileGrid, custom_grid
from s3maptiler.tiles.layouts import get_layout
from s3maptiler.tiles.srs import EARTH_RADIUS, MERCATOR_EXTENT
from s3maptiler.tiles.tilemath import lonlat_to_tile, tile_lonlat_bounds
from tests.integration.conftest import demo_wms, need  # noqa: F401 - demo_wms is a fixture
from tests.servers import ROOT, GunicornApp

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = ROOT / "var" / "screenshots"
VIEWPORT = {"width": 1024, "height": 768}
# No first-run work, no background traffic, no GPU, a fresh profile. Everything the
# page loads comes from the service on 127.0.0.1; other hosts do not even resolve.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
# Between Manhattan and Brooklyn, and a point inside each borough; decimal degrees. A
# tile holding a borough point shows its polygon, outline or label: more than one colour.
NEW_YORK = (-73.96, 40.72)
BOROUGHS = {
    "Manhattan": (-73.97, 40.78),
    "Brooklyn": (-73.95, 40.65),
    "Queens": (-73.80, 40.72),
    "Bronx": (-73.87, 40.85),
    "Staten Island": (-74.15, 40.58),
}
LOAD_TIMEOUT_MS = 60_000
# X-Tile-Source values of a first visit to a fresh cache.
FIRST_VISIT = {"render", "inflight", "cache"}

ESRI_RESOLUTIONS = [156543.03392800014 / 2**z for z in range(17)]
LAYERS_TOML = """\
wms_url = "{wms}"
wms_layers = "{layers}"
cache_control = "public, max-age=600"

[layers.demo]
title = "Demo, TMS keys"
prefix = "tiles/"

[layers.nyc]
title = "New York, XYZ keys, extent"
prefix = "nyc/"
layout = "xyz"
extent = [-74.3, 40.45, -73.65, 40.95]
min_zoom = 8

[layers.world4326]
title = "EPSG:4326, WMTS keys, JPEG"
prefix = "world4326/"
grid = "WorldCRS84Quad"
layout = "wmts"
format = "jpeg"
wms_version = "1.3.0"
max_zoom = 12

[layers.esri]
title = "ArcGIS exploded cache on a custom grid"
prefix = "esri/Layers/_alllayers/"
grid = "esri-webmercator"
layout = "arcgis"
max_zoom = 16

[layers.quad]
title = "Bing quadkeys"
prefix = "quad/"
layout = "quadkey"
min_zoom = 1

[grids.esri-webmercator]
srs = "EPSG:3857"
origin = [-20037508.342787, 20037508.342787]
tile_size = 256
resolutions = [{resolutions}]
"""


# --------------------------------------------------------------------------- helpers


def browser_unavailable() -> str | None:
    """None when a headless Chromium can be driven here, else why not (one line)."""
    if not Path(CHROMIUM).exists():
        return "Debian's Chromium is not installed (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -r requirements-dev.txt)"
    return None


def ensure_viewer() -> str | None:
    """Build the map library when it is missing; None when it is there."""
    if not preview.missing_assets():
        return None
    build = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-viewer.sh")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if build.returncode != 0 or preview.missing_assets():
        return f"the map library could not be built: {(build.stderr or build.stdout).strip()}"
    return None


def native(grid: TileGrid, lon: float, lat: float) -> tuple[float, float]:
    """A point in the grid's CRS units (meters or decimal degrees)."""
    if grid.srs == "EPSG:4326":
        return lon, lat
    y = EARTH_RADIUS * math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))
    return lon * MERCATOR_EXTENT / 180.0, y


def tiles_on_screen(grid: TileGrid, lon: float, lat: float, z: int) -> set[Tile]:
    """The tiles a VIEWPORT centred on (lon, lat) at zoom z must show (1 px inset)."""
    x, y = native(grid, lon, lat)
    res = grid.resolution(z)
    half_w, half_h = (VIEWPORT["width"] / 2 - 1) * res, (VIEWPORT["height"] / 2 - 1) * res
    cols, rows = grid.tiles_in(Bbox(x - half_w, y - half_h, x + half_w, y + half_h), z)
    return {Tile(c, r, z) for c in cols for r in rows}


def over_new_york(bounds: Bbox) -> bool:
    """Whether a tile's lon/lat bounds hold a point of a borough."""
    return any(
        bounds.left <= lon < bounds.right and bounds.bottom <= lat < bounds.top
        for lon, lat in BOROUGHS.values()
    )


def tile_of_url(url: str, address: dict, fmt: TileFormat, grid: TileGrid) -> Tile:
    """The tile a URL the page fetched names, parsed by the service's own layouts."""
    path = url.split("://", 1)[1].split("/", 1)[1]
    base = address["base"].lstrip("/")
    assert path.startswith(base), f"{url} is not under {address['base']}"
    rest = path[len(base) :] + ("" if address["ext"] else "." + fmt.extension)
    return get_layout(address["layout"]).parse(rest, grid).tile


@dataclass(frozen=True)
class Fetched:
    """A tile as the page received it."""

    url: str
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes


class PreviewPage:
    """One Chromium page on the preview, recording what it loaded.

    Chromium keeps no body for a fetch() the page reads as a blob, so tile requests
    are routed: Playwright fetches each from the service, records the answer and hands
    the same answer to the page. Requests for any other host are aborted and reported.
    """

    def __init__(self, context, base_url: str):
        self.page = context.new_page()
        self.base_url = base_url
        self.tiles: list[Fetched] = []  # answers to the page's fetch(): the tiles
        self.others: list = []  # responses: the page, its scripts and stylesheets
        self.errors: list[str] = []
        self.page.route("**/*", self._route)
        self.page.on("response", self._response)
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        self.page.on("console", self._console)
        self.page.on("requestfailed", lambda req: self.errors.append(f"failed: {req.url}"))

    def _route(self, route) -> None:
        request = route.request
        if not request.url.startswith(self.base_url + "/"):
            self.errors.append(f"request to another host: {request.url}")
            route.abort()
        elif request.resource_type == "fetch":
            answer = route.fetch()
            headers = {k.lower(): v for k, v in answer.headers.items()}
            self.tiles.append(Fetched(request.url, answer.status, headers, answer.body()))
            route.fulfill(response=answer)
        else:
            route.continue_()

    def _console(self, message) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text} ({message.location.get('url')})")

    def _response(self, response) -> None:
        if response.request.resource_type != "fetch" and not response.url.startswith("blob:"):
            self.others.append(response)

    def open(self, path: str) -> None:
        self.page.goto(self.base_url + path)
        self.wait_idle()

    def wait_idle(self) -> None:
        """Until OpenLayers' loadend: every tile on screen has loaded or failed."""
        self.page.wait_for_function(
            "() => document.documentElement.dataset.mapState === 'idle'"
            " && Number(document.documentElement.dataset.tilesLoaded) > 0",
            timeout=LOAD_TIMEOUT_MS,
        )

    def state(self) -> dict:
        return self.page.evaluate(
            """() => ({
                loaded: Number(document.documentElement.dataset.tilesLoaded),
                failed: Number(document.documentElement.dataset.tilesFailed),
                counts: Object.fromEntries([...document.querySelectorAll('[data-count]')]
                    .map((e) => [e.dataset.count, Number(e.textContent)])),
                config: JSON.parse(document.getElementById('preview-config').textContent),
                select: document.getElementById('address').value,
            })"""
        )

    def switch(self, address_id: str) -> None:
        self.tiles.clear()
        self.page.select_option("#address", address_id)
        self.wait_idle()

    def screenshot(self, name: str) -> None:
        """Save var/screenshots/<name>.png and check the map on it is a picture: the
        left half of the window (clear of the panel) has more than 32 colours."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path))
        with Image.open(path) as shot:
            left = shot.convert("RGB").crop((0, 0, shot.width // 2, shot.height))
            assert left.getcolors(maxcolors=32) is None, f"{path} shows an empty map"

    def tile_under_mouse(self, x: float, y: float) -> str:
        self.page.mouse.move(x, y)
        return self.page.locator("#tile-address").inner_text()


def check_tiles(page: PreviewPage, fmt: TileFormat, grid: TileGrid, z: int) -> dict[str, int]:
    """Every tile the page fetched: 200, an image of the tile size, more than one colour
    over New York, and together the tiles on screen. Returns the X-Tile-Source counts."""
    state = page.state()
    address = next(a for a in state["config"]["addresses"] if a["id"] == state["select"])
    assert page.errors == []
    assert state["failed"] == 0
    assert page.tiles, "the map fetched no tile"
    for other in page.others:
        assert other.status == 200, other.url
        assert other.url.startswith(page.base_url), other.url

    sources: dict[str, int] = {}
    coloured = 0
    requested = set()
    for fetched in page.tiles:
        assert fetched.status == 200, f"{fetched.url}: {fetched.status}"
        assert fetched.headers["content-type"] == fmt.media_type, fetched.url
        source = fetched.headers["x-tile-source"]
        sources[source] = sources.get(source, 0) + 1
        tile = tile_of_url(fetched.url, address, fmt, grid)
        requested.add(tile)
        image = Image.open(io.BytesIO(fetched.body))
        image.load()
        assert image.size == (grid.tile_size, grid.tile_size), fetched.url
        if over_new_york(tile_lonlat_bounds(grid, tile)):
            colours = image.convert("RGB").getcolors(maxcolors=2)
            assert colours is None, f"blank tile over New York: {fetched.url} {colours}"
            coloured += 1

    assert coloured > 0, "no tile over New York was checked"
    on_screen = tiles_on_screen(grid, *NEW_YORK, z)
    assert on_screen <= requested, f"tiles on screen never fetched: {on_screen - requested}"
    assert len(page.tiles) == len(requested), "a tile was fetched twice"
    # The panel counts what the headers said, tile by tile.
    assert state["loaded"] == len(page.tiles)
    for name, count in state["counts"].items():
        assert count == sources.get(name, 0), (name, state["counts"], sources)
    return sources


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def layers_file(tmp_path_factory, demo_wms):  # noqa: F811 - the imported fixture
    path = tmp_path_factory.mktemp("layers") / "layers.toml"
    resolutions = ", ".join(repr(r) for r in ESRI_RESOLUTIONS)
    path.write_text(
        LAYERS_TOML.format(wms=demo_wms.url, layers=demo_wms.layers, resolutions=resolutions)
    )
    return path


@pytest.fixture(scope="module")
def app(tmp_path_factory, layers_file):
    need(ensure_viewer())
    env = {
        "LAYERS_FILE": str(layers_file),
        "LOCAL_CACHE_DIR": str(tmp_path_factory.mktemp("tiles")),
        "WEB_CONCURRENCY": "1",
        "GUNICORN_THREADS": "8",
        "LOG_LEVEL": "WARNING",
    }
    service = GunicornApp(env).start()
    yield service
    service.stop()


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory):
    need(browser_unavailable())
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),  # a fresh --user-data-dir
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport=VIEWPORT,
        )
        context.set_default_timeout(LOAD_TIMEOUT_MS)
        yield context
        context.close()


# --------------------------------------------------------------------------- browser


@pytest.mark.browser
@pytest.mark.integration
def test_demo_map_loads_every_tile_then_switches_to_the_arcgis_route(app, browser_context):
    z = 11
    page = PreviewPage(browser_context, app.url)
    page.open(f"/preview/demo?lon={NEW_YORK[0]}&lat={NEW_YORK[1]}&z={z}")
    assert page.state()["select"] == "keys"
    assert all(t.url.startswith(app.url + "/tiles/") for t in page.tiles)

    first = check_tiles(page, TILE_FORMATS["png"], WEB_MERCATOR, z)
    # A fresh cache: tiles are drawn now, by their own GetMap or as part of a metatile
    # drawn for a neighbour (then "inflight" while its upload waits, "cache" after).
    assert set(first) <= FIRST_VISIT and first.get("render", 0) > 0, first
    centre = lonlat_to_tile(WEB_MERCATOR, *NEW_YORK, z)
    shown = page.tile_under_mouse(VIEWPORT["width"] / 2, VIEWPORT["height"] / 2)
    assert shown == f"{centre.z}/{centre.x}/{centre.y}"
    tms_y = 2**z - 1 - centre.y
    assert page.page.locator("#tile-url").inner_text() == f"/tiles/{z}/{centre.x}/{tms_y}.png"
    page.screenshot("preview")

    page.switch("arcgis")
    # The panel now gives the tile under the mouse at its ArcGIS REST address.
    assert page.page.locator("#tile-url").inner_text() == (
        f"/arcgis/rest/services/demo/MapServer/tile/{centre.z}/{centre.y}/{centre.x}"
    )
    assert all(
        t.url.startswith(app.url + "/arcgis/rest/services/demo/MapServer/tile/") for t in page.tiles
    )
    second = check_tiles(page, TILE_FORMATS["png"], WEB_MERCATOR, z)
    # The same keys behind another address: nothing is drawn again.
    assert "render" not in second, second
    assert "layout=arcgis" in page.page.url
    page.screenshot("preview-arcgis-route")
    page.page.close()


# Layers of LAYERS_TOML beyond "demo", with the zoom level to look at New York.
OTHER_LAYERS = [("nyc", 11), ("world4326", 10), ("esri", 11), ("quad", 11)]


@pytest.mark.browser
@pytest.mark.integration
@pytest.mark.parametrize("name, z", OTHER_LAYERS, ids=[o[0] for o in OTHER_LAYERS])
def test_every_layout_and_grid_draws_new_york(app, browser_context, layers_file, name, z):
    layer = next(layer for layer in load_layers_file(layers_file) if layer.name == name)
    grid = layer.tile_grid
    page = PreviewPage(browser_context, app.url)
    page.open(f"/preview/{name}?lon={NEW_YORK[0]}&lat={NEW_YORK[1]}&z={z}")
    config = page.state()["config"]
    keys = next(a for a in config["addresses"] if a["id"] == "keys")
    assert all(t.url.startswith(app.url + keys["base"]) for t in page.tiles)
    sources = check_tiles(page, layer.tile_format, grid, z)
    assert set(sources) <= FIRST_VISIT and sources.get("render", 0) > 0, sources
    centre = lonlat_to_tile(grid, *NEW_YORK, z)
    shown = page.tile_under_mouse(VIEWPORT["width"] / 2, VIEWPORT["height"] / 2)
    assert shown == f"{centre.z}/{centre.x}/{centre.y}"
    page.screenshot(f"preview-{name}")
    page.page.close()


# --------------------------------------------------------------------------- server side


def flask_app(tmp_path, **env):
    settings = load_settings(
        {
            "WMS_SERVER": "http://wms.test/mapserv",
            "MAP_LAYERS": "roads",
            "LOCAL_CACHE_DIR": str(tmp_path / "tiles"),
            **env,
        },
        dotenv_path=None,
    )
    service = build_service(settings)
    app = create_app(settings, service)
    assert "preview" in app.blueprints  # the app's own, not one a test adds
    return app, service


def test_preview_page_embeds_the_layer_and_its_addresses(tmp_path):
    app, _ = flask_app(tmp_path, TILE_PREFIX="roads/", MIN_ZOOM="3", MAX_ZOOM="12")
    answer = app.test_client().get("/preview/default")
    assert answer.status_code == 200
    page = answer.get_data(as_text=True)
    assert "/preview/static/vendor/ol/ol.js" in page
    assert "/preview/static/preview.js" in page
    for template in (
        "/roads/{z}/{x}/{-y}.png",
        "/1.0.0/default/{z}/{x}/{-y}.png",
        "/wmts/1.0.0/default/default/GoogleMapsCompatible/{z}/{row}/{col}.png",
        "/arcgis/rest/services/default/MapServer/tile/{z}/{row}/{col}",
    ):
        assert template in page
    assert app.test_client().get("/preview/static/preview.js").status_code == 200


def test_preview_of_an_unknown_layer_is_404_naming_the_layers(tmp_path):
    app, _ = flask_app(tmp_path)
    answer = app.test_client().get("/preview/roads")
    assert answer.status_code == 404
    assert answer.get_data(as_text=True) == "no layer named 'roads'; layers: default\n"


def test_without_the_built_library_the_page_says_how_to_build_it(tmp_path, monkeypatch):
    monkeypatch.setattr(preview, "STATIC_DIR", tmp_path / "static")
    app, _ = flask_app(tmp_path)
    answer = app.test_client().get("/preview/default")
    page = answer.get_data(as_text=True)
    assert answer.status_code == 200
    assert "bash scripts/build-viewer.sh" in page
    assert "<script" not in page


def test_config_draws_geodetic_grids_and_refuses_other_crs():
    layer = Layer("w", "http://wms.test/", "w", grid="global-geodetic", max_zoom=3)
    config = preview.preview_config(layer, GLOBAL_GEODETIC)
    assert config["projection"] == "EPSG:4326"
    assert config["sizes"] == [[2, 1], [4, 2], [8, 4], [16, 8]]
    assert config["origins"] == [[-180.0, 90.0]] * 4
    assert config["resolutions"][0] == 0.703125
    swiss = custom_grid("lv95", "EPSG:2056", (2420000, 1350000), 256, [4000, 2000])
    with pytest.raises(preview.UnsupportedGrid, match="EPSG:2056"):
        preview.preview_config(layer, swiss)


def test_addresses_of_an_arcgis_cache_layer():
    layer = Layer("esri", "http://wms.test/", "w", prefix="esri/_alllayers/", layout="arcgis")
    addresses = {a.id: a for a in preview.tile_addresses(layer, WEB_MERCATOR, "/tiles-api")}
    assert (
        addresses["keys"].template
        == "/tiles-api/esri/_alllayers/L{z:02d}/R{row:08x}/C{col:08x}.png"
    )
    assert addresses["keys"].layout == "arcgis"
    assert addresses["arcgis"].base == "/tiles-api/arcgis/rest/services/esri/MapServer/tile/"
    assert addresses["arcgis"].ext == ""


def test_index_lists_every_layer_with_its_documents_and_preview(tmp_path):
    layers = tmp_path / "layers.toml"
    layers.write_text(
        textwrap.dedent(
            """\
            wms_url = "http://wms.test/mapserv"
            [layers.roads]
            wms_layers = "roads"
            prefix = "roads/"
            max_zoom = 14
            [layers.keys4326]
            wms_layers = "relief"
            grid = "WorldCRS84Quad"
            layout = "quadkey"
            prefix = "relief/"
            """
        )
    )
    app, service = flask_app(tmp_path, LAYERS_FILE=str(layers))
    with app.test_request_context("/"):
        page = preview.index_page(service)
    assert 'href="/1.0.0/roads"' in page
    assert 'href="/arcgis/rest/services/roads/MapServer?f=pjson"' in page
    assert 'href="/preview/roads"' in page
    assert 'href="/preview/keys4326"' in page
    assert "/roads/{z}/{x}/{-y}.png" in page
    assert "0–14" in page
    assert "WorldCRS84Quad" in page
    assert page.count('href="/wmts/1.0.0/WMTSCapabilities.xml"') >= 2


def path_without_npm(tmp_path: Path) -> str:
    """A PATH holding only the tools scripts/build-viewer.sh needs besides npm."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "sha256sum", "cut", "cat", "dirname", "basename"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    return str(bin_dir)


@pytest.mark.integration
def test_build_viewer_does_nothing_when_up_to_date(tmp_path):
    need(ensure_viewer())  # may run npm ci once
    again = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-viewer.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": path_without_npm(tmp_path)},
    )
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")


def test_build_viewer_says_in_one_line_that_npm_is_missing(tmp_path):
    # A copy of the script and lock file with no vendor folder, and no npm on PATH.
    (tmp_path / "scripts").mkdir()
    (tmp_path / "viewer").mkdir()
    shutil.copy(ROOT / "scripts" / "build-viewer.sh", tmp_path / "scripts")
    shutil.copy(ROOT / "viewer" / "package-lock.json", tmp_path / "viewer")
    answer = subprocess.run(
        ["bash", str(tmp_path / "scripts" / "build-viewer.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": path_without_npm(tmp_path)},
    )
    assert answer.returncode == 1
    assert answer.stderr.count("\n") == 1
    assert "npm is not installed" in answer.stderr


def test_with_a_bucket_url_the_bucket_is_the_first_address(tmp_path):
    app, _ = flask_app(
        tmp_path, TILE_PREFIX="roads/", PUBLIC_URL="http://tiles.s3-website.localhost:4566"
    )
    page = app.test_client().get("/preview/default").get_data(as_text=True)
    assert '<option value="bucket">the bucket (S3 website)</option>' in page
    assert "http://tiles.s3-website.localhost:4566/roads/{z}/{x}/{-y}.png" in page
    assert 'id="bucket-problem"' in page
    layer = Layer("w", "http://wms.test/", "w", prefix="w/", layout="xyz")
    config = preview.preview_config(layer, WEB_MERCATOR, "", "https://d123.cloudfront.net/")
    first = config["addresses"][0]
    assert (first["id"], first["base"], first["external"]) == (
        "bucket",
        "https://d123.cloudfront.net/w/",
        True,
    )
    assert config["bucketUrl"] == "https://d123.cloudfront.net"
    assert [a["id"] for a in preview.preview_config(layer, WEB_MERCATOR)["addresses"]] == [
        "keys",
        "tms",
        "wmts",
        "arcgis",
    ]
