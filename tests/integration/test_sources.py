"""Sources with real components: the demo MapServer behind Debian's nginx requiring HTTP
basic auth (the password in a secrets file), and MapProxy from PyPI serving that
MapServer as TMS, XYZ, WMTS REST and WMTS KVP behind nginx requiring an API-key
header. The service runs under gunicorn (Procfile) with its tiles in moto's S3 server.

Every credential contains MARKER; the suite's leak check (tests/leakcheck.py) greps the
service's whole log (at DEBUG), every answer and every object (and its metadata) in the
bucket for it."""

from __future__ import annotations

import hashlib
import io
import random
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
import requests
from PIL import Image

from devtools.demowms import WMS_PATH
from s3maptiler.documents.paths import WMTS_CAPABILITIES_PATH
from tests import mapproxy, nginx
from tests.integration.conftest import AWS_ENV, need
from tests.leakcheck import MARKER
from tests.servers import GunicornApp, tile_keys

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PASSWORD = "pw-" + MARKER
API_KEY = "key-" + MARKER
# Tiles over New York (the demo map's detail): (z, x, row from the top).
TILES = [(12, 1205, 1539), (12, 1206, 1539), (13, 2411, 3079), (11, 602, 769)]
KINDS = [kind for kind in mapproxy.TEMPLATES if kind != "xyz512"]


@pytest.fixture(scope="module")
def upstream(demo_wms):
    need(nginx.unavailable_reason())
    need(mapproxy.unavailable_reason())
    wms_origin = f"http://{urlsplit(demo_wms.url).netloc}"
    tiles = mapproxy.MapProxyUpstream(demo_wms.url, demo_wms.layers).start()
    guarded_wms = nginx.Nginx(protect=wms_origin, basic=("alice", PASSWORD)).start()
    guarded_tiles = nginx.Nginx(protect=tiles.url, header=("X-API-Key", API_KEY)).start()
    yield tiles, guarded_wms, guarded_tiles
    guarded_tiles.stop()
    guarded_wms.stop()
    tiles.stop()


@pytest.fixture(scope="module")
def service(upstream, demo_wms, moto_server, s3, tmp_path_factory):
    tiles, guarded_wms, guarded_tiles = upstream
    work = tmp_path_factory.mktemp("sources")
    (work / "wms_password").write_text(PASSWORD + "\n")
    layers = f"""
[layers.secured]
wms_url = "{guarded_wms.protected_url}{WMS_PATH}"
wms_layers = "{demo_wms.layers}"
metatile = [1, 1]
[layers.secured.credentials]
user = "alice"
password = {{ secret = "file:{work / "wms_password"}" }}

[layers.refused]
wms_url = "{guarded_wms.protected_url}{WMS_PATH}"
wms_layers = "{demo_wms.layers}"
credentials = {{ user = "alice", password = "wrong-{MARKER}" }}
"""
    for kind in KINDS:
        source_type, url = tiles.template(kind, guarded_tiles.protected_url)
        layers += f"""
[layers.{kind}]
[layers.{kind}.source]
type = "{source_type}"
url = "{url}"
[layers.{kind}.credentials]
headers = {{ "X-API-Key" = {{ secret = "env:IMAGERY_KEY" }} }}
params = {{ token = "tok-{MARKER}" }}  # in every URL; urllib3 logs URLs at DEBUG
"""
    source_type, url = tiles.template("xyz512", guarded_tiles.protected_url)
    layers += f"""
[layers.xyz512]
min_zoom = 1
pixel_ratios = [1, 2]
[layers.xyz512.source]
type = "{source_type}"
url = "{url}"
tile_size = 512
[layers.xyz512.credentials]
headers = {{ "X-API-Key" = {{ secret = "env:IMAGERY_KEY" }} }}
"""
    for encoding, path in mapproxy.CAPABILITIES.items():
        layers += f"""
[layers.wmts-caps-{encoding}]
max_zoom = 19  # MapProxy's GLOBAL_WEBMERCATOR has 20 levels
[layers.wmts-caps-{encoding}.source]
type = "wmts"
url = "{guarded_tiles.protected_url}{path}"
layer = "{mapproxy.LAYER}"
encoding = "{encoding}"
[layers.wmts-caps-{encoding}.credentials]
headers = {{ "X-API-Key" = {{ secret = "env:IMAGERY_KEY" }} }}
"""
    (work / "layers.toml").write_text(layers)
    bucket = "sources-" + hashlib.md5(str(work).encode()).hexdigest()[:10]
    s3.create_bucket(Bucket=bucket)
    app = GunicornApp(
        {
            **AWS_ENV,
            "LAYERS_FILE": str(work / "layers.toml"),
            "BUCKET_NAME": bucket,
            "AWS_ENDPOINT_URL": moto_server.url,
            "IMAGERY_KEY": API_KEY,
            "WMS_RETRIES": "1",
            "LOG_LEVEL": "DEBUG",  # the leak check reads every line there is
            "SPOOL_DIR": str(work / "spool"),
        }
    ).start()
    yield app, bucket
    app.stop()


def get(service, path: str, **kwargs) -> requests.Response:
    app, _ = service
    return requests.get(app.url + path, timeout=60, **kwargs)


def tms_row(z: int, row: int) -> int:
    return 2**z - 1 - row


def test_a_wms_behind_basic_auth_is_drawn_with_the_password_from_a_secrets_file(
    service, demo_wms, upstream
):
    _, guarded_wms, _ = upstream
    z, x, row = TILES[0]
    answer = get(service, f"/secured/{z}/{x}/{tms_row(z, row)}.png")
    assert answer.status_code == 200 and answer.content.startswith(b"\x89PNG")
    assert 200 in guarded_wms.protected_requests()


def test_refused_credentials_are_a_502_naming_the_layer_and_never_stored(service, upstream, s3):
    _, guarded_wms, _ = upstream
    _, bucket = service
    before = len(guarded_wms.protected_requests())
    z, x, row = TILES[0]
    answer = get(service, f"/refused/{z}/{x}/{tms_row(z, row)}.png")
    assert answer.status_code == 502
    assert (
        "source of layer refused" in answer.text
        and "refused the credentials (HTTP 401)" in answer.text
    )
    assert guarded_wms.protected_requests()[before:] == [401]  # asked once, not retried
    again = get(service, f"/refused/{z}/{x}/{tms_row(z, row)}.png")
    assert again.status_code == 502  # not cached: asked again
    assert not [k for k in tile_keys(s3, bucket) if k.startswith("refused/")]


@pytest.mark.parametrize("kind", KINDS)
def test_a_same_grid_tile_is_byte_equal_to_mapproxys(service, upstream, kind):
    tiles, _, _ = upstream
    source_type, template = tiles.template(kind)
    for z, x, row in TILES[:2]:
        y = tms_row(z, row) if source_type == "tms" else row
        direct = requests.get(
            template.replace("{z}", str(z)).replace("{x}", str(x)).replace("{y}", str(y)),
            timeout=60,
        )
        assert direct.status_code == 200
        ours = get(service, f"/{kind}/{z}/{x}/{tms_row(z, row)}.png")
        assert ours.status_code == 200
        assert ours.content == direct.content, f"{kind} {z}/{x}/{row}"


def test_512_px_upstream_tiles_are_the_2x_tiles_and_cut_into_quarters(service, upstream):
    tiles, _, _ = upstream
    _, template = tiles.template("xyz512")
    z, x, row = TILES[2]  # zoom 13; its upstream tile is at zoom 12

    def theirs(z: int, x: int, y: int) -> bytes:
        url = template.replace("{z}", str(z)).replace("{x}", str(x)).replace("{y}", str(y))
        answer = requests.get(url, timeout=60)
        assert answer.status_code == 200
        return answer.content

    hidpi = get(service, f"/xyz512/{z}/{x}/{tms_row(z, row)}@2x.png")
    assert hidpi.status_code == 200 and hidpi.content == theirs(z, x, row)
    whole = Image.open(io.BytesIO(theirs(z - 1, x // 2, row // 2))).convert("RGBA")
    left, top = x % 2 * 256, row % 2 * 256
    quarter = whole.crop((left, top, left + 256, top + 256))
    ours = get(service, f"/xyz512/{z}/{x}/{tms_row(z, row)}.png")
    assert ours.status_code == 200, ours.text
    assert Image.open(io.BytesIO(ours.content)).convert("RGBA").tobytes() == quarter.tobytes()


@pytest.mark.parametrize("encoding", list(mapproxy.CAPABILITIES))
def test_a_wmts_read_from_its_capabilities_serves_mapproxys_tiles(service, upstream, encoding):
    tiles, _, guarded_tiles = upstream
    _, template = tiles.template("xyz")
    before = len(guarded_tiles.protected_requests())
    for z, x, row in TILES[:2]:
        direct = requests.get(
            template.replace("{z}", str(z)).replace("{x}", str(x)).replace("{y}", str(row)),
            timeout=60,
        )
        ours = get(service, f"/wmts-caps-{encoding}/{z}/{x}/{tms_row(z, row)}.png")
        assert ours.status_code == 200, ours.text
        assert ours.content == direct.content
    # Through the guard, with the key: each tile once (or served from the bucket).
    assert set(guarded_tiles.protected_requests()[before:]) <= {200}


def test_each_upstream_tile_is_asked_once_across_threads_and_workers(service, upstream):
    _, _, guarded_tiles = upstream
    z, x, row = TILES[3]
    paths = [f"/xyz/{z}/{x + dx}/{tms_row(z, row)}.png" for dx in range(4)] * 8
    before = len(guarded_tiles.protected_requests())
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda p: get(service, p).status_code, paths))
    assert statuses == [200] * len(paths)
    assert len(guarded_tiles.protected_requests()) - before == 4


def test_documents_heartbeat_and_metrics_hold_no_credential(service):
    for path in ("/heartbeat?deep=1", "/" + WMTS_CAPABILITIES_PATH, "/1.0.0/xyz", "/metrics"):
        answer = get(service, path)
        assert answer.status_code in (200, 503), path
    health = get(service, "/heartbeat?deep=1").json()["checks"]
    assert health["tiles:xyz"] == "ok" and health["wms:secured"] == "ok"
    assert health["wms:refused"].startswith("failing: credentials refused")


def test_each_upstream_tile_is_asked_once_across_three_instances_of_two_workers(
    upstream, moto_server, s3, tmp_path
):
    tiles, _, _ = upstream
    # A guard of its own, so its log counts this test's upstream requests only.
    guarded = nginx.Nginx(protect=tiles.url, header=("X-API-Key", API_KEY)).start()
    source_type, url = tiles.template("tms", guarded.protected_url)
    (tmp_path / "layers.toml").write_text(
        f'[layers.tms]\n[layers.tms.source]\ntype = "{source_type}"\nurl = "{url}"\n'
        '[layers.tms.credentials]\nheaders = { "X-API-Key" = { secret = "env:IMAGERY_KEY" } }\n'
    )
    bucket = "fleet-" + hashlib.md5(str(tmp_path).encode()).hexdigest()[:10]
    s3.create_bucket(Bucket=bucket)
    apps = [
        GunicornApp(
            {
                **AWS_ENV,
                "LAYERS_FILE": str(tmp_path / "layers.toml"),
                "BUCKET_NAME": bucket,
                "AWS_ENDPOINT_URL": moto_server.url,
                "IMAGERY_KEY": API_KEY,
                "WEB_CONCURRENCY": "2",
                "GUNICORN_THREADS": "8",
                "SPOOL_DIR": str(tmp_path / f"spool-{n}"),  # separate hosts
                "LOG_LEVEL": "WARNING",
            }
        )
        for n in range(3)
    ]
    balancer = nginx.Nginx(instances=[app.url for app in apps])
    try:
        for app in apps:
            app.start()
        balancer.start()
        z, x0, row0 = TILES[1]
        block = [(x0 + dx, row0 + dy) for dx in range(3) for dy in range(3)]
        paths = [f"/miss/tms/{z}/{x}/{tms_row(z, row)}.png" for x, row in block] * 6
        random.Random(19).shuffle(paths)
        before = len(guarded.protected_requests())
        with ThreadPoolExecutor(24) as pool:
            answers = list(
                pool.map(lambda p: requests.get(balancer.balancer_url + p, timeout=60), paths)
            )
        assert [a.status_code for a in answers] == [200] * len(paths)
        asked = guarded.protected_requests()[before:]
        assert asked == [200] * len(block), f"{len(asked)} upstream requests for {len(block)} tiles"
    finally:
        balancer.stop()
        for app in apps:
            app.stop()
        guarded.stop()
