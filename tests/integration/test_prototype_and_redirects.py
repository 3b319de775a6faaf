"""The Node prototype's own configuration, GIS clients opening its layer by name, and
redirected misses for every layout and every fixed route.

Real components only: the demo MapServer (WMS calls counted by lighttpd), moto's S3
server (objects read back from it), the service under gunicorn with the Procfile
command, GDAL (gdal-bin) and OWSLib.
"""

from __future__ import annotations

import io
import time
import uuid
from dataclasses import dataclass
from urllib.parse import quote, urlencode, urlsplit

import mercantile
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.faults3 import wait_until
from tests.integration.conftest import AWS_ENV
from tests.integration.test_website_gdal import gdal  # GDAL with its WMS cache off
from tests.servers import GunicornApp

pytestmark = pytest.mark.integration

# The prototype's documented example prefix.
NAME = "tms-mercator-naip"
PREFIX = f"1.0.0/{NAME}/"
Z = 12


def wait_for_object(s3, bucket: str, key: str, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return s3.get_object(Bucket=bucket, Key=key)
        except s3.exceptions.NoSuchKey:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def new_bucket(s3) -> str:
    name = f"proto-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def heartbeat(app: GunicornApp) -> str:
    return requests.get(f"{app.url}/heartbeat", timeout=10).text


def colours(data: bytes) -> int:
    return len(Image.open(io.BytesIO(data)).convert("RGBA").getcolors(1 << 20) or [])


# --------------------------------------------------------------------------- the prototype


@pytest.fixture(scope="module")
def prototype(demo_wms, moto_server, s3):
    """Started from the prototype's four documented variables and nothing else of ours
    (AWS_ENDPOINT_URL points boto3 at moto; AWS credentials are fake)."""
    bucket = new_bucket(s3)
    env = {
        **AWS_ENV,
        "WMS_SERVER": demo_wms.url,
        "BUCKET_NAME": bucket,
        "TILE_PREFIX": PREFIX,
        "MAP_LAYERS": demo_wms.layers,
        "AWS_ENDPOINT_URL": moto_server.url,
    }
    app = GunicornApp(env).start()
    app.bucket = bucket
    yield app
    app.stop()


def tms_key(lon: float, lat: float, z: int) -> str:
    t = mercantile.tile(lon, lat, z)
    return f"{PREFIX}{z}/{t.x}/{2**z - 1 - t.y}.png"


# Midtown Manhattan at a zoom of its own per form: no two share a metatile.
@pytest.mark.parametrize(("form", "z"), [("path", 12), ("tile-query", 13), ("miss-prefix", 14)])
def test_the_prototype_configuration_renders_stores_and_serves_its_keys(
    prototype, demo_wms, s3, form, z
):
    key = tms_key(-73.98, 40.75, z)
    url = {
        "path": f"{prototype.url}/{key}",
        "tile-query": f"{prototype.url}/?tile={key}",
        "miss-prefix": f"{prototype.url}/miss/{key}",
    }[form]
    before = demo_wms.request_count()
    first = requests.get(url, timeout=60)
    assert first.status_code == 200, first.text
    assert first.headers["X-Tile-Source"] == "render"
    assert first.headers["Content-Type"] == "image/png"
    assert colours(first.content) > 10, "a tile over New York is not blank"
    assert demo_wms.request_count() - before == 1

    stored = wait_for_object(s3, prototype.bucket, key)
    assert stored["ContentType"] == "image/png"
    assert stored["Body"].read() == first.content
    # Until its PutObject has returned, the tile is served from the upload queue.
    assert wait_until(lambda: "uploads_pending=0" in heartbeat(prototype), 30)

    hit = requests.get(f"{prototype.url}/{key}", timeout=60)
    assert hit.status_code == 200
    # From the store, or (no store read) from this host's render of its metatile while
    # that is fresh in the spool: the same bytes either way.
    assert hit.headers["X-Tile-Source"] in ("cache", "inflight")
    assert hit.content == first.content
    assert demo_wms.request_count() - before == 1, "a hit must not call the WMS"


NYC = mercantile.tile(-73.98, 40.75, Z)


def window_pixels(path) -> bytes:
    return Image.open(path).convert("RGBA").tobytes()


def test_gdal_opens_the_layer_by_name_from_the_tms_wmts_and_arcgis_documents(prototype, tmp_path):
    url = prototype.url
    listing = gdal("gdalinfo", f"{url}/1.0.0/", cwd=tmp_path)
    assert f"SUBDATASET_1_NAME={url}/1.0.0/{NAME}\n" in listing
    assert f"SUBDATASET_1_DESC={NAME}\n" in listing
    sources = {
        "tms": f"{url}/1.0.0/{NAME}",
        "wmts": f"WMTS:{url}/wmts/1.0.0/WMTSCapabilities.xml,layer={NAME}",
        "arcgis": f"{url}/arcgis/rest/services/{NAME}/MapServer?f=json",
    }
    windows = {}
    for name, source in sources.items():
        info = gdal("gdalinfo", source, cwd=tmp_path)
        assert "3857" in info, (name, info[:500])
        out = tmp_path / f"{name}.tif"
        # Manhattan at about zoom 12, through tiles the service serves for the layer.
        gdal(
            "gdal_translate",
            "-q",
            "-projwin",
            "-8240000",
            "4980000",
            "-8226000",
            "4966000",
            "-outsize",
            "256",
            "256",
            source,
            str(out),
            cwd=tmp_path,
        )
        windows[name] = window_pixels(out)
        assert colours_of(out) > 50, name
    assert windows["tms"] == windows["wmts"] == windows["arcgis"]


def colours_of(path) -> int:
    return len(Image.open(path).convert("RGBA").getcolors(1 << 20) or [])


def test_owslib_opens_the_layer_by_name_from_the_tms_and_wmts_documents(prototype):
    from owslib.tms import TileMapService
    from owslib.wmts import WebMapTileService

    tms = TileMapService(f"{prototype.url}/1.0.0/")
    [tile_map] = [m for m in tms.contents.values() if m.title == NAME]
    assert urlsplit(tile_map.id).path == f"/1.0.0/{NAME}"
    by_tms = tms.gettile(NYC.x, 2**Z - 1 - NYC.y, Z, id=tile_map.id, mimetype="image/png")
    assert by_tms.geturl() == f"{prototype.url}/{PREFIX}{Z}/{NYC.x}/{2**Z - 1 - NYC.y}.png"

    wmts = WebMapTileService(f"{prototype.url}/wmts/1.0.0/WMTSCapabilities.xml")
    assert list(wmts.contents) == [NAME]
    by_wmts = wmts.gettile(
        layer=NAME,
        tilematrixset="GoogleMapsCompatible",
        tilematrix=str(Z),
        row=NYC.y,
        column=NYC.x,
        format="image/png",
    )
    assert by_wmts.read() == by_tms.read()
    arcgis = requests.get(f"{prototype.url}/arcgis/rest/services/{NAME}/MapServer", timeout=30)
    assert arcgis.json()["mapName"] == NAME  # OWSLib has no ArcGIS REST client


# --------------------------------------------------------------------------- the matrix

LAYOUTS = {
    # layout: key prefix (none of them shaped like a fixed route)
    "tms": "tms/",
    "xyz": "xyz/",
    "wmts": "wmtskeys/",
    "arcgis": "esri/",
    "quadkey": "qk/",
}
ROUTES = ("key", "tms-route", "wmts-rest", "wmts-kvp", "arcgis-rest")
FORMS = ("tile-query", "miss-prefix")


@pytest.fixture(scope="module")
def many(demo_wms, moto_server, s3, tmp_path_factory):
    """A layer per layout, 4x4 metatiles with a 64 px buffer (the defaults)."""
    layers = tmp_path_factory.mktemp("matrix") / "layers.toml"
    text = f'wms_url = "{demo_wms.url}"\nwms_layers = "{demo_wms.layers}"\nmax_zoom = 16\n'
    for layout, prefix in LAYOUTS.items():
        text += f'[layers.{layout}]\nprefix = "{prefix}"\nlayout = "{layout}"\n'
    layers.write_text(text)
    bucket = new_bucket(s3)
    env = {
        **AWS_ENV,
        "LAYERS_FILE": str(layers),
        "BUCKET_NAME": bucket,
        "AWS_ENDPOINT_URL": moto_server.url,
        "LOG_LEVEL": "WARNING",
    }
    app = GunicornApp(env).start()
    app.bucket = bucket
    yield app
    app.stop()


@dataclass(frozen=True)
class Address:
    path: str  # what a client asks the service (leading "/"), query included
    key: str  # the S3 key the tile is stored under after a redirected miss


def layer_key(layout: str, x: int, y: int, z: int) -> str:
    prefix = LAYOUTS[layout]
    if layout == "tms":
        return f"{prefix}{z}/{x}/{2**z - 1 - y}.png"
    if layout == "xyz":
        return f"{prefix}{z}/{x}/{y}.png"
    if layout == "wmts":
        return f"{prefix}{z}/{y}/{x}.png"
    if layout == "arcgis":
        return f"{prefix}L{z:02d}/R{y:08x}/C{x:08x}.png"
    return f"{prefix}{mercantile.quadkey(x, y, z)}.png"


def address(layout: str, route: str, x: int, y: int, z: int) -> Address:
    """Tile (x, y, z), row from the top, of the layer named `layout`, by `route`."""
    own = layer_key(layout, x, y, z)
    if route == "key":
        return Address(f"/{own}", own)
    if route == "tms-route":
        key = f"1.0.0/{layout}/{z}/{x}/{2**z - 1 - y}.png"
    elif route == "wmts-rest":
        key = f"wmts/1.0.0/{layout}/default/GoogleMapsCompatible/{z}/{y}/{x}.png"
    elif route == "arcgis-rest":
        key = f"arcgis/rest/services/{layout}/MapServer/tile/{z}/{y}/{x}"
    else:
        query = urlencode(
            {
                "SERVICE": "WMTS",
                "REQUEST": "GetTile",
                "LAYER": layout,
                "STYLE": "default",
                "FORMAT": "image/png",
                "TILEMATRIXSET": "GoogleMapsCompatible",
                "TILEMATRIX": z,
                "TILEROW": y,
                "TILECOL": x,
            }
        )
        # No S3 key can hold a query: it is stored under the layer's own key.
        return Address(f"/wmts?{query}", own)
    return Address(f"/{key}", key)


def redirected(base: str, path: str, form: str) -> str:
    """What S3 sends a client to for a miss on `path`: the prototype's `?tile=<key>`,
    or the routing rule's `ReplaceKeyPrefixWith` (the miss prefix before the key)."""
    if form == "tile-query":
        return f"{base}/?tile={quote(path[1:], safe='/')}"
    return f"{base}/miss{path}"


CASES = [(layout, route, form) for layout in LAYOUTS for route in ROUTES for form in FORMS]


@pytest.mark.parametrize(("layout", "route", "form"), CASES)
def test_a_redirected_miss_renders_once_and_is_stored_under_the_key_that_missed(
    many, demo_wms, s3, layout, route, form
):
    # A metatile of its own per case (4x4 tiles at zoom 12), so no case sees another's.
    n = CASES.index((layout, route, form))
    x, y = 4 * (n % 64) + 1, 4 * (n // 64) + 1400 + 2
    target = address(layout, route, x, y, Z)
    before = demo_wms.request_count()
    answer = requests.get(redirected(many.url, target.path, form), timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "image/png"
    assert answer.headers["X-Tile-Source"] == "render"
    assert demo_wms.request_count() - before == 1, "one GetMap for the metatile"
    stored = wait_for_object(s3, many.bucket, target.key)
    assert stored["ContentType"] == "image/png"
    assert stored["Body"].read() == answer.content


# --------------------------------------------------------------------------- a property


@st.composite
def direct_paths(draw) -> str:
    layout = draw(st.sampled_from(sorted(LAYOUTS)))
    route = draw(st.sampled_from(ROUTES))
    z = draw(st.integers(1, 14))
    x = draw(st.integers(0, 2**z - 1))
    y = draw(st.integers(0, 2**z - 1))
    return address(layout, route, x, y, z).path


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(path=direct_paths())
def test_what_answers_directly_answers_the_same_through_both_redirect_forms(many, path):
    direct = requests.get(many.url + path, timeout=60)
    assert direct.status_code == 200, (path, direct.text)
    for form in FORMS:
        answer = requests.get(redirected(many.url, path, form), timeout=60)
        assert answer.status_code == 200, (form, path, answer.text)
        assert answer.headers["Content-Type"] == direct.headers["Content-Type"]
        assert answer.content == direct.content, (form, path)
