"""Hostile input against the Flask app: never a 5xx, never an upstream call or a write
for an invalid address, no open proxy.

The WMS is answered by a `responses` mock that records every call (any URL at all:
a call anywhere but the configured WMS fails the checks below); the store is an
in-memory recorder, and every job submitted to the upload pool is recorded too. For
each request the checks compare what happened before and after it.
"""

from __future__ import annotations

import io
import re
import tempfile
import threading
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import pytest
import responses
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from s3maptiler.config import load_settings
from s3maptiler.documents.wmts import tile_matrix_set_id
from s3maptiler.http.app import create_app
from s3maptiler.render.getmap import WMSSource, getmap_url
from s3maptiler.service.addresses import TileRequestError
from s3maptiler.service.build import build_service
from s3maptiler.storage.stores import StoredTile, TileStore
from s3maptiler.tiles.grids import WEB_MERCATOR, GridError, Tile, get_grid
from s3maptiler.tiles.layouts import LayoutError
from s3maptiler.tiles.tilemath import tile_lonlat_bounds
from tests.badrequests import BadRequest, load_corpus

WMS = "http://127.0.0.1:9/wms"  # never contacted: `responses` answers first
OTHER_WMS = "http://127.0.0.1:9/other-wms?map=qk"
STANDARD_PARAMS = {
    "SERVICE",
    "VERSION",
    "REQUEST",
    "LAYERS",
    "STYLES",
    "BBOX",
    "WIDTH",
    "HEIGHT",
    "FORMAT",
    "TRANSPARENT",
    "EXCEPTIONS",
}

LAYERS_TOML = f"""
wms_url = "{WMS}"
wms_layers = "roads"
max_zoom = 18
metatile = "1x1"
meta_buffer = 0

[layers.default]
prefix = "tiles/"

[layers.xyz]
prefix = "xyz/"
layout = "xyz"
min_zoom = 2
extent = [-74.3, 40.45, -73.65, 40.95]

[layers.blank]
prefix = "blank/"
extent = [-74.3, 40.45, -73.65, 40.95]
outside_extent = "blank"

[layers.geo]
prefix = "geo/"
grid = "WorldCRS84Quad"
layout = "wmts"
format = "jpeg"
wms_version = "1.3.0"
max_zoom = 10

[layers.esri]
prefix = "esri/"
layout = "arcgis"

[layers.qk]
prefix = "qk/"
layout = "quadkey"
metatile = "2x2"
meta_buffer = 8
wms_url = "{OTHER_WMS}"
wms_layers = "water,land"
"""


# --------------------------------------------------------------------------- harness


class RecordingStore(TileStore):
    """An in-memory store that records every key read and written."""

    location = "memory://hostile"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.objects: dict[str, StoredTile] = {}
        self.gets: list[str] = []
        self.puts: list[str] = []

    def get(self, key: str) -> StoredTile | None:
        with self.lock:
            self.gets.append(key)
            return self.objects.get(key)

    def write(self, obj) -> str:
        with self.lock:
            self.puts.append(obj.key)
            if obj.key in self.objects:
                return "exists"
            self.objects[obj.key] = StoredTile(obj.data, obj.content_type, None)
            return "stored"

    def check(self) -> None:
        return None


def image_for(query: dict[str, str]) -> tuple[str, bytes]:
    """A real image of the asked size and format, like a WMS would send."""
    size = (int(query.get("WIDTH", 256)), int(query.get("HEIGHT", 256)))
    jpeg = "jpeg" in query.get("FORMAT", "").lower()
    out = io.BytesIO()
    Image.new("RGB", size, (90, 160, 90)).save(out, "JPEG" if jpeg else "PNG")
    return ("image/jpeg" if jpeg else "image/png"), out.getvalue()


@dataclass
class Observed:
    status: int
    headers: dict[str, str]
    body: bytes
    wms_calls: list[str]
    submitted: list[str]
    store_reads: list[str]


@dataclass(repr=False)
class Harness:
    """One app with its service, store and the WMS mock's record of calls."""

    app: object
    service: object
    store: RecordingStore
    wms_calls: list[str] = field(default_factory=list)
    # (thread id, key): neighbours of a metatile are queued by a background thread,
    # so what a request queued is what its own thread submitted.
    submissions: list[tuple[int, str]] = field(default_factory=list)

    def send(self, method: str, target: str, headers: dict[str, str] | None = None) -> Observed:
        calls, jobs, reads = len(self.wms_calls), len(self.submissions), len(self.store.gets)
        answer = open_target(self.app.test_client(), method, target, headers or {})
        with self.store.lock:
            store_reads = self.store.gets[reads:]
        return Observed(
            answer.status_code,
            dict(answer.headers),
            answer.get_data(),
            self.wms_calls[calls:],
            [key for thread, key in self.submissions[jobs:] if thread == threading.get_ident()],
            store_reads,
        )


def open_target(client, method: str, target: str, headers: dict[str, str]):
    """Send `target` as the request-target. A target starting with "//" goes in the
    WSGI environ as it would from gunicorn: the test client would take it for a host."""
    if not target.startswith("//"):
        return client.open(target, method=method, headers=headers)
    path, _, query = target.partition("?")
    # WSGI carries the decoded path as latin-1 characters of its UTF-8 bytes (PEP 3333).
    path_info = unquote(path).encode("utf-8", "surrogateescape").decode("latin-1")
    return client.open(
        "/",
        method=method,
        headers=headers,
        query_string=query,
        environ_overrides={"PATH_INFO": path_info, "RAW_URI": target, "REQUEST_URI": target},
    )


def make_harness(env: dict[str, str], mock: responses.RequestsMock) -> Harness:
    # A spool of its own: renders published by an earlier test must not answer this one.
    spool = tempfile.mkdtemp(prefix="spool-")
    settings_ = load_settings(
        {"WMS_RETRIES": "0", "LOG_LEVEL": "WARNING", "SPOOL_DIR": spool, **env}, dotenv_path=None
    )
    store = RecordingStore()
    service = build_service(settings_, store=store)
    harness = Harness(create_app(settings_, service), service, store)

    submit = service.uploads.submit

    def recording_submit(job, wait=0.0):
        harness.submissions.append((threading.get_ident(), job.key))
        return submit(job, wait)

    service.uploads.submit = recording_submit  # the pool's own counters stay exact

    def answer(request):
        harness.wms_calls.append(request.url)
        query = {k.upper(): v for k, v in parse_qsl(urlsplit(request.url).query, True)}
        content_type, body = image_for(query)
        return 200, {"Content-Type": content_type}, body

    # Any URL at all: a request to anything but the configured WMS is caught below.
    mock.add_callback(responses.GET, re.compile(r".*"), callback=answer)
    return harness


@pytest.fixture(scope="module")
def wms_mock():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture(scope="module")
def single(wms_mock, tmp_path_factory):
    """One layer from the environment, as the corpus and the integration tests use."""
    tmp = tmp_path_factory.mktemp("single")
    harness = make_harness(
        {
            "WMS_SERVER": WMS,
            "MAP_LAYERS": "roads",
            "LOCAL_CACHE_DIR": str(tmp),
            "METATILE": "1x1",  # one GetMap per tile: the exact URL is known
            "META_BUFFER": "0",
        },
        wms_mock,
    )
    yield harness
    harness.service.uploads.drain(5)


@pytest.fixture(scope="module")
def many(wms_mock, tmp_path_factory):
    """Six layers: every layout, two grids, an extent, a metatile, a second WMS."""
    tmp = tmp_path_factory.mktemp("many")
    layers = tmp / "layers.toml"
    layers.write_text(LAYERS_TOML)
    harness = make_harness({"LAYERS_FILE": str(layers), "LOCAL_CACHE_DIR": str(tmp)}, wms_mock)
    yield harness
    harness.service.uploads.drain(5)


# --------------------------------------------------------------------------- checks


def canonical_key(harness: Harness, key: str) -> str:
    """The key the service must write for `key`: formatted from the parsed tile."""
    request = harness.service.addresses.resolve(key)
    runtime, tile = request.layer, request.tile
    if key.startswith("arcgis/rest/services/"):
        name = runtime.layer.name
        return f"arcgis/rest/services/{name}/MapServer/tile/{tile.z}/{tile.y}/{tile.x}"
    return runtime.layer.prefix + runtime.layout.format(tile, request.ext, runtime.grid)


def check_answer(harness: Harness, seen: Observed, what: str) -> None:
    """The properties every answer must have, valid address or not."""
    assert seen.status < 500, (what, seen.status, seen.body[:200])
    if seen.status >= 400:
        assert seen.wms_calls == [], f"{what}: a {seen.status} called the WMS"
        assert seen.submitted == [], f"{what}: a {seen.status} queued an upload"
        assert seen.store_reads == [], f"{what}: a {seen.status} read the store"
        assert b"\r" not in seen.body, what
    for name, value in seen.headers.items():
        assert "\r" not in value and "\n" not in value, (what, name)
        assert name.lower() != "set-cookie", what
    runtimes = harness.service.layers
    for url in seen.wms_calls:
        # The WMS host, path and parameters come from configuration only.
        owner = [rt for rt in runtimes if url.startswith(rt.layer.wms_url.split("?")[0])]
        assert owner, f"{what}: GetMap to an unconfigured host: {url}"
        query = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
        configured = dict(parse_qsl(urlsplit(owner[0].layer.wms_url).query))
        srs_key = "CRS" if query.get("VERSION") == "1.3.0" else "SRS"
        expected_keys = STANDARD_PARAMS | set(configured) | {srs_key}
        assert set(query) == expected_keys, (what, url)
        assert query["LAYERS"] in {rt.layer.wms_layers for rt in owner}, (what, url)
        assert query["REQUEST"] == "GetMap" and query["SERVICE"] == "WMS", (what, url)
    for key in seen.submitted:
        # S3 keys are formatted from parsed tiles: the only freedom left is the letter
        # case of the extension (and of ArcGIS hex), which the layouts accept on purpose.
        assert key.lower() == canonical_key(harness, key).lower(), (what, key)


# --------------------------------------------------------------------------- strategies

_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
NUMBERISH = st.one_of(
    st.integers(-3, 30).map(str),
    st.integers(0, 2**70).map(str),
    st.sampled_from(
        ["", "0", "00", "01", "-0", "+1", " 1", "1e3", "0x1", "1.0", "..", ".", "%2F", "%2e%2e"]
        + ["%00", "%0d%0a", "\uff11", "\u0969", "\u00b2", "1\u0660", "NaN", "9" * 11, "a"]
    ),
    _TEXT.map(lambda t: quote(t, safe="")),
)
EXTS = st.sampled_from(["png", "jpg", "jpeg", "PNG", "Jpg", "gif", "", "png.png", "png%00"])
LAYER_NAMES = st.one_of(
    st.sampled_from(["default", "xyz", "blank", "geo", "esri", "qk", "nope", "..", "%2e%2e"]),
    _TEXT.map(lambda t: quote(t, safe="")),
)
PREFIXES = st.sampled_from(
    ["tiles/", "xyz/", "blank/", "geo/", "esri/", "qk/", "miss/tiles/", "miss/", "other/", ""]
)
HEX8 = st.one_of(
    st.integers(0, 2**32 - 1).map(lambda v: f"{v:08x}"),
    st.integers(0, 2**36).map(lambda v: f"{v:X}"),
    NUMBERISH,
)
QUERY = st.one_of(
    st.just(""),
    st.dictionaries(
        st.sampled_from(["LAYERS", "BBOX", "url", "SERVICE", "x", "tile", "FORMAT", "WIDTH"]),
        st.one_of(st.sampled_from(["http://evil.example/", "../../x", "1,2,3,4", "4096"]), _TEXT),
        max_size=3,
    ).map(lambda d: "?" + urlencode(d) if d else ""),
)


@st.composite
def tile_targets(draw) -> str:
    """Near-valid and broken addresses for every tile route."""
    z, a, b = draw(NUMBERISH), draw(NUMBERISH), draw(NUMBERISH)
    ext, layer = draw(EXTS), draw(LAYER_NAMES)
    kind = draw(st.sampled_from(["key", "tms", "wmts", "kvp", "arcgis", "esri", "qk", "miss"]))
    if kind == "key":
        return f"/{draw(PREFIXES)}{z}/{a}/{b}.{ext}" + draw(QUERY)
    if kind == "tms":
        return f"/1.0.0/{layer}/{z}/{a}/{b}.{ext}" + draw(QUERY)
    if kind == "wmts":
        matrix_set = draw(st.sampled_from(["GoogleMapsCompatible", "WorldCRS84Quad", "x", ""]))
        return f"/wmts/1.0.0/{layer}/default/{matrix_set}/{z}/{a}/{b}.{ext}" + draw(QUERY)
    if kind == "kvp":
        params = {
            "SERVICE": draw(st.sampled_from(["WMTS", "wmts", "WMS", ""])),
            "REQUEST": draw(st.sampled_from(["GetTile", "gettile", "GetCapabilities", "x"])),
            "LAYER": layer,
            "STYLE": "default",
            "FORMAT": draw(st.sampled_from(["image/png", "image/jpeg", "image/gif", ""])),
            "TILEMATRIXSET": draw(st.sampled_from(["GoogleMapsCompatible", "WorldCRS84Quad"])),
            "TILEMATRIX": z,
            "TILEROW": a,
            "TILECOL": b,
        }
        dropped = draw(st.sets(st.sampled_from(sorted(params)), max_size=2))
        params = {k: v for k, v in params.items() if k not in dropped}
        return "/wmts?" + urlencode(params) + draw(QUERY).replace("?", "&")
    if kind == "arcgis":
        return f"/arcgis/rest/services/{layer}/MapServer/tile/{z}/{a}/{b}" + draw(QUERY)
    if kind == "esri":
        return f"/esri/L{z}/R{draw(HEX8)}/C{draw(HEX8)}.{ext}"
    if kind == "qk":
        digits = draw(st.text("01234", max_size=20))
        return f"/qk/{digits}.{ext}" + draw(QUERY)
    key = draw(st.one_of(st.just(f"{draw(PREFIXES)}{z}/{a}/{b}.{ext}"), _TEXT))
    return "/?" + urlencode({"tile": key}) if draw(st.booleans()) else f"/miss/{key}"


@st.composite
def document_targets(draw) -> str:
    """The capability documents, with hostile parameters."""
    layer = draw(LAYER_NAMES)
    query = urlencode(
        draw(
            st.dictionaries(
                st.sampled_from(["f", "callback", "pretty", "SERVICE", "REQUEST", "VERSION"]),
                st.one_of(st.sampled_from(["json", "pjson", "true", "alert(1)", "a.b"]), _TEXT),
                max_size=3,
            )
        )
    )
    return draw(
        st.sampled_from(
            [
                f"/arcgis/rest/services/{layer}/MapServer?{query}",
                f"/1.0.0/{layer}",
                f"/1.0.0/{layer}/?{query}",
                f"/1.0.0/?{query}",
                f"/wmts/1.0.0/WMTSCapabilities.xml?{query}",
                f"/wmts?{query}",
                f"/?{query}",
                f"/heartbeat?{query}",
            ]
        )
    )


ANY_PATH = st.one_of(
    _TEXT.map(lambda t: "/" + t),
    st.lists(st.one_of(NUMBERISH, PREFIXES, _TEXT), max_size=6).map(lambda p: "/" + "/".join(p)),
)
KEYISH = r"(tiles|xyz|geo|esri|qk|arcgis|miss)/[0-9A-Za-z./%-]{0,30}"
HYPOTHESIS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# --------------------------------------------------------------------------- properties


@HYPOTHESIS
@given(target=tile_targets(), method=st.sampled_from(["GET", "HEAD"]))
def test_tile_routes_never_fail_and_invalid_addresses_touch_nothing(many, target, method):
    seen = many.send(method, target)
    event(f"status {seen.status} wms {len(seen.wms_calls)}")
    check_answer(many, seen, f"{method} {target}")


@st.composite
def valid_tiles(draw):
    """A tile of a configured layer (zoom may fall outside the layer's range), one of
    the routes that address it, the extension's letter case, a hostile query."""
    layer = draw(st.sampled_from(["default", "xyz", "blank", "geo", "esri", "qk"]))
    z = draw(st.integers(0, 19))
    fx = draw(st.floats(0, 1, exclude_max=True))
    fy = draw(st.floats(0, 1, exclude_max=True))
    route = draw(st.sampled_from(["key", "miss", "tile", "tms", "wmts", "kvp", "arcgis"]))
    return layer, z, fx, fy, route, draw(st.booleans()), draw(QUERY)


def address(harness: Harness, layer: str, tile: Tile, route: str, upper: bool, query: str):
    """The target that asks for `tile` of `layer` by `route`, and the extension it means."""
    runtime = harness.service.addresses.runtimes[layer]
    ext = runtime.layer.tile_format.extension
    shown = ext.upper() if upper else ext
    x, y, z = tile
    if route in ("key", "miss", "tile"):
        try:
            key = runtime.layer.prefix + runtime.layout.format(tile, ext, runtime.grid)
        except LayoutError:  # e.g. zoom 0 has no quadkey
            route = "tms"
        else:
            key = key[: -len(ext)] + shown
            if route == "tile":
                return "/?" + urlencode({"tile": key}) + query.replace("?", "&"), ext
            return ("/miss/" if route == "miss" else "/") + key + query, ext
    if route == "tms":
        return f"/1.0.0/{layer}/{z}/{x}/{runtime.grid.flip_y(y, z)}.{shown}{query}", ext
    matrix_set = tile_matrix_set_id(runtime.grid)
    if route == "wmts":
        return f"/wmts/1.0.0/{layer}/default/{matrix_set}/{z}/{y}/{x}.{shown}{query}", ext
    if route == "kvp":
        params = {
            "SERVICE": "WMTS",
            "REQUEST": "GetTile",
            "LAYER": layer,
            "STYLE": "default",
            "FORMAT": runtime.layer.tile_format.media_type,
            "TILEMATRIXSET": matrix_set,
            "TILEMATRIX": z,
            "TILEROW": y,
            "TILECOL": x,
        }
        return "/wmts?" + urlencode(params) + query.replace("?", "&"), ext
    return f"/arcgis/rest/services/{layer}/MapServer/tile/{z}/{y}/{x}{query}", ext


@HYPOTHESIS
@given(case=valid_tiles(), method=st.sampled_from(["GET", "HEAD"]))
def test_valid_tiles_ask_the_wms_only_what_configuration_says(many, case, method):
    layer, z, fx, fy, route, upper, query = case
    runtime = many.service.addresses.runtimes[layer]
    z = min(z, runtime.grid.max_zoom)
    cols, rows = runtime.grid.matrix_size(z)
    tile = Tile(int(fx * cols), int(fy * rows), z)
    target, ext = address(many, layer, tile, route, upper, query)
    seen = many.send(method, target)
    event(f"{route} {seen.status} wms {len(seen.wms_calls)}")
    check_answer(many, seen, f"{method} {target}")
    assert seen.status in (200, 404), (target, seen.status, seen.body[:200])
    assert len(seen.wms_calls) <= 1
    if seen.wms_calls and runtime.metatile_of(tile, ext) is None:
        size = runtime.grid.tile_size
        expected = getmap_url(runtime.sources[ext], runtime.grid.tile_bbox(tile), size, size)
        assert seen.wms_calls == [expected], target
    if seen.submitted:
        written = runtime.layer.prefix + runtime.layout.format(tile, ext, runtime.grid)
        if route in ("key", "miss", "tile"):
            assert seen.submitted[0].lower() == written.lower(), target
        else:
            assert seen.submitted[0] == written, target


@HYPOTHESIS
@given(target=document_targets())
def test_documents_never_fail_nor_call_upstream(many, target):
    seen = many.send("GET", target)
    check_answer(many, seen, target)
    assert seen.wms_calls == [] and seen.submitted == [], target


@HYPOTHESIS
@given(target=ANY_PATH, method=st.sampled_from(["GET", "HEAD", "POST", "OPTIONS", "DELETE"]))
def test_arbitrary_paths_never_fail(many, target, method):
    seen = many.send(method, target)
    check_answer(many, seen, f"{method} {target}")
    if method not in ("GET", "HEAD"):
        assert seen.wms_calls == [] and seen.submitted == [], (method, target)


@HYPOTHESIS
@given(key=st.one_of(_TEXT, st.from_regex(KEYISH, fullmatch=True)))
def test_resolve_raises_only_tile_request_errors(many, key):
    try:
        request = many.service.addresses.resolve(key)
    except TileRequestError as exc:
        assert 400 <= exc.status < 500
        assert "\n" not in str(exc)
        return
    assert request.key.lower() == canonical_key(many, key).lower()


@settings(max_examples=500, deadline=None)
@given(
    grid=st.sampled_from(["GoogleMapsCompatible", "WorldCRS84Quad", "global-geodetic"]),
    x=st.integers(-(2**40), 2**40),
    y=st.integers(-(2**40), 2**40),
    z=st.integers(-5, 40),
)
def test_tile_math_rejects_or_gives_a_finite_box_inside_the_grid(grid, x, y, z):
    tiles = get_grid(grid)
    try:
        box = tiles.tile_bbox(Tile(x, y, z))
        lonlat = tile_lonlat_bounds(tiles, Tile(x, y, z))
    except GridError:
        return
    assert box.left < box.right and box.bottom < box.top
    assert tiles.bbox.left <= box.left and box.right <= tiles.bbox.right * (1 + 1e-12)
    assert tiles.bbox.bottom <= box.bottom and box.top <= tiles.bbox.top * (1 + 1e-12)
    assert -180 - 1e-9 <= lonlat.left < lonlat.right <= 180 + 1e-9
    assert -90 <= lonlat.bottom < lonlat.top <= 90


# --------------------------------------------------------------------------- corpus

CORPUS = load_corpus()
APP_CORPUS = [r for r in CORPUS if not r.raw_only]


def corpus_params(requests: list[BadRequest]):
    for request in requests:
        marks = []
        if request.defect:
            marks.append(pytest.mark.xfail(strict=True, reason=request.comment))
        yield pytest.param(request, id=request.id, marks=marks)


def header_dict(request: BadRequest) -> dict[str, str]:
    return dict(line.split(":", 1) for line in request.headers)


@pytest.mark.parametrize("request_", list(corpus_params(APP_CORPUS)))
def test_corpus_through_the_app(single, request_: BadRequest):
    seen = single.send(request_.method, request_.target, header_dict(request_))
    assert seen.status in request_.statuses, (request_.comment, seen.status, seen.body[:200])
    check_answer(single, seen, request_.id)
    if seen.status >= 400 or request_.method not in ("GET", "HEAD"):
        assert seen.wms_calls == [] and seen.submitted == [], request_.comment
    if request_.method == "OPTIONS":
        allowed = {m.strip() for m in seen.headers.get("Allow", "").split(",")}
        assert {"GET", "HEAD", "OPTIONS"} <= allowed, seen.headers
        assert not allowed & {"POST", "PUT", "DELETE", "PATCH"}, seen.headers
    if request_.method not in ("GET", "HEAD", "OPTIONS"):
        assert seen.status == 405


def test_every_refusal_is_one_line_of_text(single):
    multi_line = []
    for request in APP_CORPUS:
        seen = single.send(request.method, request.target, header_dict(request))
        text = seen.body.decode("utf-8", "replace")
        if seen.status >= 400 and (text.count("\n") != 1 or len(text) > 300):
            multi_line.append(f"{request.id}: {seen.status} {text[:40]!r}")
    assert multi_line == []


def test_corpus_covers_what_the_issue_lists():
    comments = " ".join(r.comment for r in CORPUS)
    methods = {r.method for r in CORPUS}
    assert {"PUT", "POST", "DELETE", "PATCH", "TRACE", "CONNECT", "OPTIONS"} <= methods
    for needle in ("dot-dot", "encoded slash", "negative zoom", "full-width", "NUL", "CR LF"):
        assert needle in comments, needle
    assert any(len(r.target) > 1024 for r in CORPUS)
    assert any(r.headers for r in CORPUS)


# --------------------------------------------------------------------------- open proxy


def expected_getmap(tile: Tile, layers: str = "roads") -> str:
    """The one GetMap URL a request for `tile` may cause: configured host and standard
    parameters only, the tile's own bbox."""
    source = WMSSource(url=WMS, layers=layers)
    return getmap_url(source, WEB_MERCATOR.tile_bbox(tile), 256, 256)


HOSTILE_QUERY = (
    "LAYERS=secret&BBOX=0,0,1,1&WIDTH=4096&SERVICE=WFS&url=http://evil.example/&map=/etc"
)


@pytest.mark.parametrize(
    ("target", "tile"),
    [
        # TMS z5 x=10 y=20 is XYZ row 2**5 - 1 - 20 = 11.
        (f"/tiles/5/10/20.png?{HOSTILE_QUERY}", Tile(10, 11, 5)),
        (f"/miss/tiles/5/10/21.png?{HOSTILE_QUERY}", Tile(10, 10, 5)),
        (f"/?tile=tiles/5/10/22.png&{HOSTILE_QUERY}", Tile(10, 9, 5)),
        (f"/1.0.0/default/5/11/20.png?{HOSTILE_QUERY}", Tile(11, 11, 5)),
        (
            f"/wmts/1.0.0/default/default/GoogleMapsCompatible/5/12/12.png?{HOSTILE_QUERY}",
            Tile(12, 12, 5),
        ),
        (
            "/wmts?SERVICE=WMTS&REQUEST=GetTile&LAYER=default&STYLE=default&FORMAT=image/png"
            f"&TILEMATRIXSET=GoogleMapsCompatible&TILEMATRIX=5&TILEROW=13&TILECOL=12&{HOSTILE_QUERY}",
            Tile(12, 13, 5),
        ),
        (f"/arcgis/rest/services/default/MapServer/tile/5/14/12?{HOSTILE_QUERY}", Tile(12, 14, 5)),
    ],
)
def test_request_parameters_never_reach_the_wms(single, target, tile):
    seen = single.send("GET", target, {"Host": "evil.example", "X-Forwarded-Host": "evil.example"})
    assert seen.status == 200, seen.body[:200]
    assert seen.wms_calls == [expected_getmap(tile)]
    check_answer(single, seen, target)


@pytest.mark.parametrize(
    ("target", "key", "tile"),
    [
        ("/?tile=tiles/2/0/3.png&x=../../evil&key=other/2/0/3.png", "tiles/2/0/3.png",
         Tile(0, 0, 2)),
        ("/?tile=tiles/2/1/3.png&tile=../evil/2/1/3.png", "tiles/2/1/3.png", Tile(1, 0, 2)),
        ("/?tile=/tiles/2/2/3.png&prefix=evil/", "tiles/2/2/3.png", Tile(2, 0, 2)),
        ("/miss/tiles/2/3/3.png?tile=evil/2/3/3.png&key=evil", "tiles/2/3/3.png", Tile(3, 0, 2)),
    ],
)  # fmt: skip
def test_the_key_written_is_the_parsed_and_formatted_key(single, target, key, tile):
    seen = single.send("GET", target)
    assert seen.status == 200, seen.body[:200]
    assert seen.wms_calls == [expected_getmap(tile)]
    assert seen.submitted == [key]
    assert canonical_key(single, key) == key


def test_uploaded_objects_are_only_canonical_keys(many, single):
    """After everything above: every key any store was asked to write is canonical."""
    for harness in (many, single):
        with harness.store.lock:
            written = list(harness.store.puts)
        for key in written:
            assert key.lower() == canonical_key(harness, key).lower(), key
