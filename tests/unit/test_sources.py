"""Upstream credentials (config/sources.py, render/credentials.py) and XYZ/TMS tile
sources (render/tilesource.py), with the upstream answered by `responses`, AWS's
Secrets Manager and SSM by moto's in-process mock. Every secret here contains MARKER,
and no answer, log line or stored tile may."""

from __future__ import annotations

import base64
import io
import logging
import re
import threading
from pathlib import Path

import boto3
import pytest
import responses
from moto import mock_aws
from PIL import Image

from s3maptiler.config import ConfigError, load_settings
from s3maptiler.config.sources import (
    SecretRef,
    TileSourceSpec,
    credentials_from_env,
    parse_credentials,
    parse_secret,
    parse_tile_source,
)
from s3maptiler.documents.paths import WMTS_CAPABILITIES_PATH
from s3maptiler.http.app import create_app
from s3maptiler.render.credentials import (
    REDACTED,
    ResolvedCredentials,
    SecretError,
    SecretReader,
    redact,
)
from s3maptiler.render.runtime import LayerRuntime
from s3maptiler.render.tilesource import TileSource, tile_url
from s3maptiler.service.build import build_service
from s3maptiler.tiles.grids import WEB_MERCATOR, Tile
from tests.leakcheck import MARKER, handing_over

WMS = "http://wms.test/mapserv"
TILES = "http://tiles.test"


def png(colour=(200, 30, 30), size=256, **options) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(out, "PNG", **options)
    return out.getvalue()


@pytest.fixture(autouse=True)
def fresh_process_caches():
    """Each test as a new process: no WMTS capabilities or secrets read before."""
    from s3maptiler.render import credentials, wmtssource

    wmtssource._SOURCES.clear()
    credentials._RESOLVED.clear()


# --------------------------------------------------------------------------- parsing


def test_secret_references_parse_and_name_themselves():
    assert parse_secret("env:KEY") == SecretRef("env", "KEY")
    assert parse_secret("secretsmanager:prod/img#api") == SecretRef(
        "secretsmanager", "prod/img", "api"
    )
    assert str(parse_secret("ssm:/a/b")) == "ssm:/a/b"
    for bad in ("vault:x", "env:", "file:relative", "secretsmanager:x#", 3):
        with pytest.raises(ValueError):
            parse_secret(bad)


def test_credentials_table_checks_each_key():
    creds = parse_credentials(
        {
            "user": "alice",
            "password": {"secret": "file:/run/secrets/pw"},
            "headers": {"X-API-Key": {"secret": "env:KEY"}},
            "params": {"token": "literal-" + MARKER},
            "refresh": 60,
        }
    )
    assert creds.password == SecretRef("file", "/run/secrets/pw")
    assert creds.headers == (("X-API-Key", SecretRef("env", "KEY")),)
    assert creds.refresh == 60.0
    for bad, says in (
        ({"user": "a"}, "go together"),
        ({"headers": {"Bad Name": "x"}}, "header name"),
        ({"token": "x"}, "unknown"),
        ({"params": {"token": {"secret": "nope:x"}}}, "params 'token'"),
        ({"refresh": 1}, "refresh"),
    ):
        with pytest.raises(ValueError, match=says):
            parse_credentials(bad)


def test_environment_credentials_are_literals_or_references():
    creds = credentials_from_env(
        {
            "SOURCE_USER": "alice",
            "SOURCE_PASSWORD": "env:WMS_PW",
            "SOURCE_HEADERS": f'{{"Authorization": "Bearer abc-{MARKER}"}}',
            "SOURCE_PARAMS": None,
        }
    )
    assert creds.user == "alice" and creds.password == SecretRef("env", "WMS_PW")
    assert creds.headers == (("Authorization", "Bearer abc-" + MARKER),)
    assert credentials_from_env({}) is None
    with pytest.raises(ValueError, match="^SOURCE_HEADERS: not JSON"):
        credentials_from_env({"SOURCE_HEADERS": "{"})
    with pytest.raises(ConfigError, match="^SOURCE_USER:"):
        load_settings({"WMS_SERVER": WMS, "MAP_LAYERS": "r", "SOURCE_USER": "a"}, dotenv_path=None)


# --------------------------------------------------------------------------- reading secrets


def test_secrets_are_read_from_env_file_secretsmanager_and_ssm(tmp_path, monkeypatch):
    monkeypatch.setenv("THE_KEY", MARKER + "env")
    secret_file = tmp_path / "pw"
    secret_file.write_text(MARKER + "file\n")
    with mock_aws():
        with handing_over():
            boto3.client("secretsmanager").create_secret(
                Name="imagery", SecretString='{"api_key": "%s"}' % (MARKER + "sm")
            )
            boto3.client("ssm").put_parameter(
                Name="/arcgis/token", Value=MARKER + "ssm", Type="SecureString"
            )
        reader = SecretReader()
        assert reader.read(SecretRef("env", "THE_KEY")) == MARKER + "env"
        assert reader.read(SecretRef("file", str(secret_file))) == MARKER + "file"
        assert reader.read(SecretRef("secretsmanager", "imagery", "api_key")) == MARKER + "sm"
        assert reader.read(SecretRef("ssm", "/arcgis/token")) == MARKER + "ssm"
        for missing in (
            SecretRef("env", "NOT_SET_ANYWHERE"),
            SecretRef("file", str(tmp_path / "absent")),
            SecretRef("secretsmanager", "imagery", "other"),
            SecretRef("ssm", "/absent"),
        ):
            with pytest.raises(SecretError, match=f"^secret {missing}") as info:
                reader.read(missing)
            assert MARKER not in str(info.value)


def test_secrets_are_refreshed_on_schedule_and_a_failed_read_keeps_the_last(tmp_path, caplog):
    secret_file = tmp_path / "token"
    secret_file.write_text("first-" + MARKER)
    now = [0.0]
    spec = parse_credentials(
        {"headers": {"X-API-Key": {"secret": f"file:{secret_file}"}}, "refresh": 60}
    )
    creds = ResolvedCredentials(spec, clock=lambda: now[0])
    secret_file.write_text("second-" + MARKER)
    now[0] = 59.0
    assert creds.headers() == {"X-API-Key": "first-" + MARKER}
    now[0] = 60.0
    assert creds.headers() == {"X-API-Key": "second-" + MARKER}
    secret_file.unlink()
    now[0] = 200.0
    assert creds.headers() == {"X-API-Key": "second-" + MARKER}
    assert "keeping the last value" in caplog.text and MARKER not in caplog.text
    with pytest.raises(SecretError):
        ResolvedCredentials(spec)  # the first read failing stops start-up


def test_redact_removes_plain_and_url_encoded_secrets():
    text = f"bad key {MARKER}+/ in url ?key={MARKER}%2B%2F and token={MARKER}%2B/"
    assert MARKER not in redact(text, [MARKER + "+/"])
    assert redact("ab", ["ab"]) == "ab"  # too short to scrub safely
    assert REDACTED in redact(MARKER, [MARKER])


# --------------------------------------------------------------------------- the app


def layers_file(tmp_path: Path, body: str) -> str:
    path = tmp_path / "layers.toml"
    path.write_text(body)
    return str(path)


def make_app(tmp_path, layers: str, **env):
    settings = load_settings(
        {
            "LAYERS_FILE": layers_file(tmp_path, layers),
            "LOCAL_CACHE_DIR": str(tmp_path / "tiles"),
            "SPOOL_DIR": str(tmp_path / "spool"),
            "WMS_RETRIES": "1",
            **env,
        },
        dotenv_path=None,
    )
    service = build_service(settings)
    service.wms._sleep = lambda seconds: None
    return create_app(settings, service), service


@pytest.fixture
def upstream():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def stored_bytes(tmp_path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (tmp_path / "tiles").rglob("*") if p.is_file())


def credentials_layer(tmp_path: Path) -> str:
    (tmp_path / "pw").write_text("pw-" + MARKER + "\n")
    return f"""
[layers.roads]
wms_url = "{WMS}?map=roads"
wms_layers = "roads"
metatile = [1, 1]
[layers.roads.credentials]
user = "alice"
password = {{ secret = "file:{tmp_path / "pw"}" }}
headers = {{ "X-API-Key" = {{ secret = "env:IMAGERY_KEY" }} }}
params = {{ token = "tok-{MARKER}" }}
"""


def test_wms_requests_carry_basic_auth_headers_and_params(tmp_path, upstream, monkeypatch):
    monkeypatch.setenv("IMAGERY_KEY", "key-" + MARKER)
    app, service = make_app(tmp_path, credentials_layer(tmp_path))
    upstream.get(WMS, body=png(), content_type="image/png")
    answer = app.test_client().get("/roads/3/4/5.png")
    assert answer.status_code == 200
    sent = upstream.calls[0].request
    expected = base64.b64encode(f"alice:pw-{MARKER}".encode()).decode()
    assert sent.headers["Authorization"] == f"Basic {expected}"
    assert sent.headers["X-API-Key"] == "key-" + MARKER
    assert sent.url.endswith(f"&token=tok-{MARKER}")
    assert "map=roads" in sent.url and "REQUEST=GetMap" in sent.url


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_are_a_502_naming_the_source_never_retried_nor_stored(
    tmp_path, upstream, monkeypatch, caplog, status
):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("IMAGERY_KEY", "key-" + MARKER)
    app, service = make_app(tmp_path, credentials_layer(tmp_path))
    # An upstream that echoes what it was sent, as some do in their error pages.
    echo = f"bad credentials: key-{MARKER} token=tok-{MARKER} pw-{MARKER}"
    upstream.get(WMS, status=status, body=echo, content_type="text/plain")
    client = app.test_client()
    answer = client.get("/roads/3/4/5.png")
    assert answer.status_code == 502
    text = answer.get_data(as_text=True)
    assert "layer roads" in text and "refused the credentials" in text and f"HTTP {status}" in text
    assert len(upstream.calls) == 1  # no retry with the same credentials
    service.drain(5)
    assert not (tmp_path / "tiles").exists() or not any((tmp_path / "tiles").rglob("*.png"))
    # The leak check: answers, logs, metrics, the deep heartbeat, documents.
    seen = [text, caplog.text]
    paths = ("/metrics", "/heartbeat?deep=1", "/preview/roads", "/")
    for path in (*paths, "/" + WMTS_CAPABILITIES_PATH, "/1.0.0/roads"):
        seen.append(client.get(path).get_data(as_text=True))
    assert "roads" in seen[-2] and "roads" in seen[-1]  # the documents were written
    assert not any(MARKER in s for s in seen)


def test_a_secret_that_cannot_be_read_stops_start_up_with_one_line(tmp_path):
    body = f"""
[layers.roads]
wms_url = "{WMS}"
wms_layers = "roads"
credentials = {{ headers = {{ "X-API-Key" = {{ secret = "file:{tmp_path / "absent"}" }} }} }}
"""
    with pytest.raises(SecretError, match=r"^secret file:\S+absent: No such file"):
        make_app(tmp_path, body)


# --------------------------------------------------------------------------- tile sources


def tile_layer(url: str, extra: str = "", layer: str = "") -> str:
    return f"""
[layers.imagery]
{layer}
[layers.imagery.source]
type = "xyz"
url = "{url}"
{extra}
"""


def test_tile_urls_for_xyz_tms_and_quadkey():
    tile = Tile(3, 1, 2)  # x 3, row 1 from the top, zoom 2: TMS row 2
    assert (
        tile_url(TileSource("http://h/{z}/{x}/{y}.png", WEB_MERCATOR), tile) == "http://h/2/3/1.png"
    )
    assert (
        tile_url(TileSource("http://h/{z}/{x}/{-y}.png", WEB_MERCATOR), tile)
        == "http://h/2/3/2.png"
    )
    assert (
        tile_url(TileSource("http://h/{z}/{x}/{y}", WEB_MERCATOR, tms=True), tile)
        == "http://h/2/3/2"
    )
    assert tile_url(TileSource("http://h/{quadkey}", WEB_MERCATOR), tile) == "http://h/13"


def test_tile_source_table_checks():
    assert parse_tile_source({"type": "tms", "url": "http://h/{z}/{x}/{y}.png"}).kind == "tms"
    for bad, says in (
        ({"type": "wms", "url": "http://h/{z}/{x}/{y}"}, "type"),
        ({"type": "wmts", "url": "http://h/wmts"}, "layer"),
        ({"type": "wmts", "url": "http://h/wmts", "layer": "a", "grid": "x"}, "read from its"),
        ({"type": "xyz", "url": "http://h/{z}/{x}/{y}", "layer": "a"}, "for type wmts only"),
        ({"type": "xyz", "url": "http://h/{z}/{x}"}, "needs"),
        ({"type": "xyz", "url": "ftp://h/{z}/{x}/{y}"}, "http"),
        ({"type": "xyz", "url": "http://h/{z}/{x}/{y}", "missing": "x"}, "missing"),
    ):
        with pytest.raises(ValueError, match=says):
            parse_tile_source(bad)


@pytest.mark.parametrize(
    ("layer", "says"),
    [
        ('grid = "EPSG:4326"', "tile source is in EPSG:3857, the layer's grid in EPSG:4326"),
        ("tile_size = 512", "tile source has 256 px tiles, the layer's grid 512 px"),
        ('wms_url = "http://w/"', "key 'wms_url' does not go with a tile source"),
        ("pixel_ratios = [1, 2]", "@2x tiles need a tile source with tile_size = 512"),
        ("dimensions = { elevation = { values = [0, 1], default = 0 } }", "{Elevation}"),
    ],
)
def test_a_grid_that_does_not_line_up_is_refused_at_start_up(tmp_path, layer, says):
    with pytest.raises(ConfigError) as info:
        make_app(tmp_path, tile_layer(TILES + "/{z}/{x}/{y}.png", layer=layer))
    assert says in str(info.value) and "\n" not in str(info.value)


def test_a_same_grid_tile_is_the_upstream_bytes_untouched(tmp_path, upstream):
    # Stored without compression: bytes the service's own encoder would never write.
    body = png((1, 2, 3), compress_level=0)
    upstream.get(TILES + "/5/9/12.png", body=body, content_type="image/png")
    app, service = make_app(tmp_path, tile_layer(TILES + "/{z}/{x}/{y}.png"))
    answer = app.test_client().get("/imagery/5/9/19.png")  # TMS key: row 31 - 12 = 19
    assert answer.status_code == 200 and answer.data == body
    service.drain(5)
    assert (tmp_path / "tiles/imagery/5/9/19.png").read_bytes() == body


def test_a_layer_in_another_format_re_encodes_the_upstream_tile(tmp_path, upstream):
    upstream.get(TILES + "/2/1/1.png", body=png((0, 90, 0)), content_type="image/png")
    app, _ = make_app(tmp_path, tile_layer(TILES + "/{z}/{x}/{y}.png", layer='format = "jpeg"'))
    answer = app.test_client().get("/imagery/2/1/2.jpg")
    assert answer.status_code == 200 and answer.mimetype == "image/jpeg"
    assert Image.open(io.BytesIO(answer.data)).getpixel((5, 5))[1] > 80


@pytest.mark.parametrize(("missing", "status"), [("blank", 200), ("404", 404)])
@pytest.mark.parametrize("upstream_status", [404, 204])
def test_no_upstream_tile_is_a_blank_tile_or_a_404(
    tmp_path, upstream, missing, status, upstream_status
):
    upstream.get(TILES + "/4/1/1.png", status=upstream_status, body=b"")
    app, _ = make_app(tmp_path, tile_layer(TILES + "/{z}/{x}/{y}.png", f'missing = "{missing}"'))
    answer = app.test_client().get("/imagery/4/1/14.png")
    assert answer.status_code == status
    assert len(upstream.calls) == 1  # a 404 is an answer, not a fault: never retried
    if status == 200:
        assert Image.open(io.BytesIO(answer.data)).getextrema()[3] == (0, 0)  # transparent


def test_upstream_faults_of_a_tile_source_are_retried_and_never_stored(tmp_path, upstream):
    upstream.get(TILES + "/1/0/0.png", status=500, body=b"boom")
    app, service = make_app(tmp_path, tile_layer(TILES + "/{z}/{x}/{y}.png"))
    answer = app.test_client().get("/imagery/1/0/1.png")
    assert answer.status_code == 502
    assert len(upstream.calls) == 2  # WMS_RETRIES=1, as for a WMS
    service.drain(5)
    assert stored_bytes(tmp_path) == b""


def test_threads_asking_one_tile_ask_the_upstream_once(tmp_path, upstream):
    gate = threading.Event()

    def slow(request):
        gate.wait(5)
        return 200, {"Content-Type": "image/png"}, png()

    upstream.add_callback(responses.GET, TILES + "/6/10/20.png", callback=slow)
    app, _ = make_app(tmp_path, tile_layer(TILES + "/{z}/{x}/{y}.png"))
    statuses = []

    def ask():
        statuses.append(app.test_client().get("/imagery/6/10/43.png").status_code)

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for thread in threads:
        thread.start()
    threading.Timer(0.5, gate.set).start()
    for thread in threads:
        thread.join(10)
    assert statuses == [200] * 6
    assert len(upstream.calls) == 1


def test_tile_source_credentials_and_health_check(tmp_path, upstream, monkeypatch):
    monkeypatch.setenv("IMAGERY_KEY", "key-" + MARKER)
    upstream.get(TILES + "/0/0/0.png", body=png(), content_type="image/png")
    extra = (
        '[layers.imagery.credentials]\nheaders = { "X-API-Key" = { secret = "env:IMAGERY_KEY" } }'
    )
    app, _ = make_app(tmp_path, tile_layer(TILES + "/{z}/{x}/{y}.png") + extra)
    client = app.test_client()
    assert client.get("/imagery/0/0/0.png").status_code == 200
    health = client.get("/heartbeat?deep=1")
    assert health.get_json()["checks"]["tiles:imagery"] == "ok", health.get_data(as_text=True)
    assert MARKER not in health.get_data(as_text=True)
    assert all(call.request.headers["X-API-Key"] == "key-" + MARKER for call in upstream.calls)


def test_an_upstream_message_echoing_the_credentials_is_redacted(tmp_path, upstream, monkeypatch):
    monkeypatch.setenv("IMAGERY_KEY", "key-" + MARKER)
    app, _ = make_app(tmp_path, credentials_layer(tmp_path))
    report = (
        '<?xml version="1.0"?><ServiceExceptionReport version="1.1.1"><ServiceException>'
        f"unknown parameter token=tok-{MARKER} for key-{MARKER}</ServiceException>"
        "</ServiceExceptionReport>"
    )
    upstream.get(WMS, body=report, content_type="application/vnd.ogc.se_xml")
    answer = app.test_client().get("/roads/3/4/5.png")
    text = answer.get_data(as_text=True)
    assert answer.status_code == 502 and "unknown parameter token=" in text
    assert MARKER not in text and REDACTED in text



def test_a_key_written_into_a_tile_template_is_redacted_too(tmp_path, upstream):
    """A provider's key is often pasted into the template itself (?key=...), not the
    credentials table: an upstream echoing it is redacted like any credential."""
    template = TILES + "/{z}/{x}/{y}.png?key=tpl-" + MARKER
    upstream.get(TILES + "/0/0/0.png", status=500, body=f"bad key=tpl-{MARKER} for /0/0/0.png")
    app, _ = make_app(tmp_path, tile_layer(template))
    answer = app.test_client().get("/imagery/0/0/0.png")
    text = answer.get_data(as_text=True)
    assert answer.status_code == 502 and "bad key=" in text
    assert MARKER not in text


def test_credentials_and_templates_print_no_literal_secret():
    """repr() of what config holds (in a traceback, a debugger, a log of the layer)
    names references and header names, never a literal value."""
    creds = parse_credentials(
        {"user": "bob", "password": "pw-" + MARKER, "params": {"token": "tok-" + MARKER}}
    )
    assert MARKER not in repr(creds) and "token" in repr(creds)
    spec = TileSourceSpec(url=TILES + "/{z}/{x}/{y}.png?key=" + MARKER)
    assert MARKER not in repr(spec)

def test_the_commented_source_examples_of_layers_example_toml_load(tmp_path):
    from s3maptiler.config.layersfile import load_layers_file

    text = Path("layers.example.toml").read_text()
    block = text[text.index("# [layers.secured]") : text.index("# A layer with dimensions")]
    lines = [line[2:] for line in block.splitlines() if re.match(r"^# (\[|[A-Za-z_]+ = )", line)]
    path = tmp_path / "sources.toml"
    path.write_text("\n".join(lines))
    layers = {layer.name: layer for layer in load_layers_file(path)}
    assert layers["secured"].credentials.params[0][0] == "token"
    assert layers["imagery"].tile_source.kind == "xyz"
    assert layers["relief-tms"].tile_source.kind == "tms"
    assert layers["ortho"].tile_source.layer == "ortho"
    assert layers["imagery"].metatile == (1, 1)


def test_seeding_a_tile_source_stores_each_upstream_tile_as_it_came(tmp_path, upstream):
    from s3maptiler.config import Layer
    from s3maptiler.config.sources import TileSourceSpec
    from s3maptiler.render.wms import WMSClient
    from s3maptiler.seeding import coverage, plan, run
    from s3maptiler.storage.stores import LocalStore

    def answer(request):
        z, x, y = (int(v) for v in request.path_url.rstrip(".png").split("/")[-3:])
        return 200, {"Content-Type": "image/png"}, png((x % 256, y % 256, z), compress_level=1)

    upstream.add_callback(responses.GET, re.compile(TILES + r"/\d+/\d+/\d+\.png"), callback=answer)
    layer = Layer(
        name="imagery",
        wms_url="",
        wms_layers="",
        prefix="imagery/",
        metatile=(1, 1),
        meta_buffer=0,
        formats=("png",),
        tile_source=TileSourceSpec(url=TILES + "/{z}/{x}/{y}.png"),
    )
    runtime = LayerRuntime.build(layer)
    jobs = list(
        plan.plan_jobs(
            runtime, coverage.Coverage.from_bbox((-74.05, 40.68, -73.9, 40.82)), range(9, 12)
        )
    )
    store = LocalStore(tmp_path / "tiles")
    report = run.run_seed(
        {"imagery": runtime}, jobs, WMSClient(retries=0), store, run.SeedOptions(2)
    )
    assert report.failed == 0 and report.done == len(jobs) == len(upstream.calls)
    for call in upstream.calls:
        z, x, y = (int(v) for v in call.request.path_url.rstrip(".png").split("/")[-3:])
        key = f"imagery/{z}/{x}/{2**z - 1 - y}.png"
        assert (tmp_path / "tiles" / key).read_bytes() == answer(call.request)[2]


# --------------------------------------------------------------------------- WMTS sources

CAPS = TILES + "/wmts/1.0.0/WMTSCapabilities.xml"


def capabilities(max_zoom: int = 6) -> str:
    from s3maptiler.tiles.grids import GLOBAL_GEODETIC
    from s3maptiler.tiles.tilemath import scale_denominator

    def matrices(grid, name, corner):
        return "".join(
            f"<TileMatrix><ows:Identifier>{name}:{z}</ows:Identifier>"
            f"<ScaleDenominator>{scale_denominator(grid, z):.10g}</ScaleDenominator>"
            f"<TopLeftCorner>{corner}</TopLeftCorner><TileWidth>256</TileWidth>"
            f"<TileHeight>256</TileHeight><MatrixWidth>{2**z}</MatrixWidth>"
            f"<MatrixHeight>{2**z}</MatrixHeight></TileMatrix>"
            for z in range(max_zoom + 1)
        )

    return f"""<?xml version="1.0"?>
<Capabilities xmlns="http://www.opengis.net/wmts/1.0" xmlns:ows="http://www.opengis.net/ows/1.1"
  xmlns:xlink="http://www.w3.org/1999/xlink" version="1.0.0">
 <ows:OperationsMetadata><ows:Operation name="GetTile"><ows:DCP><ows:HTTP>
  <ows:Get xlink:href="{TILES}/kvp?"/></ows:HTTP></ows:DCP></ows:Operation></ows:OperationsMetadata>
 <Contents>
  <Layer><ows:Identifier>roads</ows:Identifier>
   <Style><ows:Identifier>night</ows:Identifier></Style>
   <Style isDefault="true"><ows:Identifier>day</ows:Identifier></Style>
   <Format>image/jpeg</Format><Format>image/png</Format>
   <Dimension><ows:Identifier>Time</ows:Identifier><Default>2024-05-01</Default>
    <Value>2024-04-01</Value><Value>2024-05-01</Value></Dimension>
   <TileMatrixSetLink><TileMatrixSet>WGS84</TileMatrixSet></TileMatrixSetLink>
   <TileMatrixSetLink><TileMatrixSet>GoogleMapsCompatible</TileMatrixSet></TileMatrixSetLink>
   <ResourceURL format="image/png" resourceType="tile"
    template="{TILES}/rest/roads/{{Style}}/{{Time}}/{{TileMatrixSet}}/{{TileMatrix}}/{{TileRow}}/{{TileCol}}.png"/>
  </Layer>
  <TileMatrixSet><ows:Identifier>WGS84</ows:Identifier>
   <ows:SupportedCRS>urn:ogc:def:crs:EPSG::4326</ows:SupportedCRS>
   {matrices(GLOBAL_GEODETIC, "WGS84", "90 -180")}</TileMatrixSet>
  <TileMatrixSet><ows:Identifier>GoogleMapsCompatible</ows:Identifier>
   <ows:SupportedCRS>urn:ogc:def:crs:EPSG::3857</ows:SupportedCRS>
   {matrices(WEB_MERCATOR, "GMC", "-20037508.3427892 20037508.3427892")}</TileMatrixSet>
 </Contents></Capabilities>"""


def wmts_layer(extra: str = "", layer: str = "max_zoom = 6") -> str:
    return f"""
[layers.roads]
{layer}
[layers.roads.source]
type = "wmts"
url = "{CAPS}"
layer = "roads"
{extra}
"""


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("", TILES + "/rest/roads/day/2024-05-01/GoogleMapsCompatible/GMC:3/2/5.png"),
        (
            'encoding = "kvp"\nstyle = "night"',
            TILES + "/kvp?SERVICE=WMTS&REQUEST=GetTile&VERSION=1.0.0&LAYER=roads&STYLE=night"
            "&FORMAT=image/png&TILEMATRIXSET=GoogleMapsCompatible&Time=2024-05-01"
            "&TILEMATRIX=GMC:3&TILEROW=2&TILECOL=5",
        ),
    ],
)
def test_a_wmts_source_is_read_from_its_capabilities(tmp_path, upstream, extra, expected):
    upstream.get(CAPS, body=capabilities(), content_type="application/xml")
    body = png((4, 5, 6), compress_level=0)
    upstream.get(expected, body=body, content_type="image/png")
    app, _ = make_app(tmp_path, wmts_layer(extra))
    answer = app.test_client().get("/roads/3/5/5.png")  # TMS row 5 at zoom 3: WMTS row 2
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.data == body
    assert upstream.calls[-1].request.url == expected


@pytest.mark.parametrize(
    ("extra", "layer", "says"),
    [
        (
            'matrix_set = "WGS84"',
            "max_zoom = 6",
            "WGS84: it is in EPSG:4326, the layer's grid in EPSG:3857",
        ),
        ("", "max_zoom = 8", "no TileMatrix of scale"),
        ('style = "x"\nformat = "image/webp"', "", "format image/webp is not one of"),
    ],
)
def test_a_wmts_that_does_not_line_up_is_refused_at_start_up(
    tmp_path, upstream, extra, layer, says
):
    from s3maptiler.render.errors import WMSUsageError

    upstream.get(CAPS, body=capabilities(), content_type="application/xml")
    with pytest.raises(WMSUsageError) as info:
        make_app(tmp_path, wmts_layer(extra, layer))
    assert says in str(info.value) and "\n" not in str(info.value)
    assert str(info.value).startswith(
        f"WMTS source {TILES}/wmts/1.0.0/WMTSCapabilities.xml layer 'roads'"
    )


# --------------------------------------------------------------------------- 512 px upstream


def quadrants(size: int = 512) -> bytes:
    """A PNG of four colours, one per quarter: which quarter a cut took is visible."""
    image = Image.new("RGB", (size, size))
    half = size // 2
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]):
        image.paste(colour, (i % 2 * half, i // 2 * half, (i % 2 + 1) * half, (i // 2 + 1) * half))
    image.putpixel((half + 3, half + 5), (1, 2, 3))  # one odd pixel in the fourth quarter
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def test_a_512_px_upstream_tile_is_cut_into_four_256_px_tiles_asked_once(tmp_path, upstream):
    body = quadrants()
    upstream.get(TILES + "/2/1/1.png", body=body, content_type="image/png")
    app, service = make_app(tmp_path, tile_layer(TILES + "/{z}/{x}/{y}.png", "tile_size = 512"))
    client = app.test_client()
    # Zoom 3, XYZ columns 2-3 and rows 2-3: TMS rows 5 and 4. Top-left, top-right, ...
    upstream_image = Image.open(io.BytesIO(body)).convert("RGB")
    for (x, row), box in zip(
        [(2, 2), (3, 2), (2, 3), (3, 3)],
        [(0, 0, 256, 256), (256, 0, 512, 256), (0, 256, 256, 512), (256, 256, 512, 512)],
        strict=True,
    ):
        answer = client.get(f"/imagery/3/{x}/{7 - row}.png")
        assert answer.status_code == 200
        ours = Image.open(io.BytesIO(answer.data)).convert("RGB")
        assert ours.tobytes() == upstream_image.crop(box).tobytes(), (x, row)
    assert len(upstream.calls) == 1


def test_a_512_px_upstream_serves_2x_tiles_as_they_come_and_1x_from_zoom_1(tmp_path, upstream):
    body = quadrants()
    upstream.get(TILES + "/3/2/2.png", body=body, content_type="image/png")
    layer = "pixel_ratios = [1, 2]"
    app, _ = make_app(tmp_path, tile_layer(TILES + "/{z}/{x}/{y}.png", "tile_size = 512", layer))
    answer = app.test_client().get("/imagery/3/2/5@2x.png")
    assert answer.status_code == 200 and answer.data == body
    upstream.get(TILES + "/0/0/0.png", body=quadrants(), content_type="image/png")
    health = app.test_client().get("/heartbeat?deep=1").get_json()["checks"]
    assert health["tiles:imagery"] == "ok"  # its zoom 1 is the upstream's zoom 0
    with pytest.raises(ConfigError, match="key 'min_zoom': 256 px tiles cut from 512 px ones"):
        make_app(
            tmp_path, tile_layer(TILES + "/{z}/{x}/{y}.png", "tile_size = 512", "min_zoom = 0")
        )


def test_a_tile_source_tile_lives_as_long_as_its_upstream_says(tmp_path, upstream):
    headers = {"Cache-Control": "public, max-age=120"}
    upstream.get(TILES + "/3/1/1.png", body=png(), content_type="image/png", headers=headers)
    app, service = make_app(
        tmp_path, tile_layer(TILES + "/{z}/{x}/{y}.png", layer="cache_from_wms = true")
    )
    answer = app.test_client().get("/imagery/3/1/6.png")
    assert answer.status_code == 200
    assert answer.headers["Cache-Control"] in ("public, max-age=120", "public, max-age=119")
    assert "Expires" in answer.headers


def test_the_preview_and_documents_of_a_tile_source_layer(tmp_path, upstream):
    app, _ = make_app(tmp_path, tile_layer(TILES + "/{z}/{x}/{y}.png"))
    client = app.test_client()
    assert client.get("/preview/imagery").status_code == 200
    assert "<ows:Identifier>imagery</ows:Identifier>" in client.get(
        "/" + WMTS_CAPABILITIES_PATH
    ).get_data(as_text=True)
    assert not upstream.calls  # documents never ask the upstream


def test_the_environment_layer_takes_source_credentials(tmp_path, upstream, monkeypatch):
    (tmp_path / "pw").write_text("pw-" + MARKER)
    monkeypatch.setenv("IMAGERY_KEY", "key-" + MARKER)
    settings = load_settings(
        {
            "WMS_SERVER": WMS,
            "MAP_LAYERS": "roads",
            "METATILE": "1x1",
            "LOCAL_CACHE_DIR": str(tmp_path / "tiles"),
            "SPOOL_DIR": str(tmp_path / "spool"),
            "SOURCE_USER": "alice",
            "SOURCE_PASSWORD": f"file:{tmp_path / 'pw'}",
            "SOURCE_HEADERS": '{"X-API-Key": "env:IMAGERY_KEY"}',
            "SOURCE_PARAMS": f'{{"token": "literal-{MARKER}"}}',
        },
        dotenv_path=None,
    )
    app = create_app(settings, build_service(settings))
    upstream.get(WMS, body=png(), content_type="image/png")
    assert app.test_client().get("/tiles/2/1/1.png").status_code == 200
    sent = upstream.calls[0].request
    assert sent.headers["Authorization"].startswith("Basic ")
    assert base64.b64decode(sent.headers["Authorization"][6:]).decode() == f"alice:pw-{MARKER}"
    assert sent.headers["X-API-Key"] == "key-" + MARKER
    assert sent.url.endswith("&token=literal-" + MARKER)


# --------------------------------------------------------------------------- dimensions

TIME = 'dimensions = { time = { values = ["2024-04-01", "2024-05-01"], default = "2024-05-01" } }'


def test_a_template_gets_each_keys_dimension_value(tmp_path, upstream):
    april_body, may_body = png((1, 1, 1)), png((2, 2, 2))
    upstream.get(TILES + "/2024-04-01/3/1/1.png", body=april_body, content_type="image/png")
    upstream.get(TILES + "/2024-05-01/3/1/1.png", body=may_body, content_type="image/png")
    app, _ = make_app(tmp_path, tile_layer(TILES + "/{Time}/{z}/{x}/{y}.png", layer=TIME))
    client = app.test_client()
    april = client.get("/imagery/2024-04-01/3/1/6.png")
    default = client.get("/imagery/3/1/6.png")
    assert april.status_code == default.status_code == 200
    assert april.data == april_body and default.data == may_body


def test_a_wmts_time_dimension_is_the_layers(tmp_path, upstream):
    upstream.get(CAPS, body=capabilities(), content_type="application/xml")
    url = TILES + "/rest/roads/day/2024-04-01/GoogleMapsCompatible/GMC:3/2/5.png"
    upstream.get(url, body=png(), content_type="image/png")
    app, _ = make_app(tmp_path, wmts_layer(layer="max_zoom = 6\n" + TIME))
    assert app.test_client().get("/roads/2024-04-01/3/5/5.png").status_code == 200
    assert upstream.calls[-1].request.url == url


def test_a_layer_dimension_the_wmts_has_not_is_refused(tmp_path, upstream):
    from s3maptiler.render.errors import WMSUsageError

    upstream.get(CAPS, body=capabilities(), content_type="application/xml")
    elevation = "dimensions = { elevation = { values = [0, 1], default = 0 } }"
    with pytest.raises(WMSUsageError, match="the layer's dimension Elevation is not one of"):
        make_app(tmp_path, wmts_layer(layer="max_zoom = 6\n" + elevation))


def test_an_unknown_placeholder_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown placeholder \{s\}"):
        make_app(tmp_path, tile_layer(TILES + "/{z}/{x}/{y}/{s}.png"))


def test_sqs_seeding_of_a_512_px_tile_source_asks_once_per_four_tiles(tmp_path):
    from s3maptiler.config.layersfile import load_layers_file
    from s3maptiler.render.wms import WMSClient
    from s3maptiler.seeding import coverage, plan, sqs, worker
    from s3maptiler.storage.stores import LocalStore

    path = tmp_path / "layers.toml"
    path.write_text(tile_layer(TILES + "/{z}/{x}/{y}.png", "tile_size = 512"))
    runtime = LayerRuntime.build(load_layers_file(path)[0])
    area = coverage.Coverage.from_bbox((-74.05, 40.68, -73.9, 40.82))
    jobs = list(plan.plan_jobs(runtime, area, range(9, 12)))
    tiles = {t for job in jobs for t in plan.job_tiles(runtime, job)[1]}
    store = LocalStore(tmp_path / "tiles")
    # moto's mock first: its own patch of requests must not shadow the upstream's.
    with mock_aws(), responses.RequestsMock() as upstream:
        upstream.add_callback(
            responses.GET,
            re.compile(TILES + r"/\d+/\d+/\d+\.png"),
            callback=lambda request: (200, {"Content-Type": "image/png"}, quadrants()),
        )
        client = boto3.client("sqs", region_name="us-east-1")
        url = client.create_queue(QueueName="seed")["QueueUrl"]
        sqs.enqueue(client, url, list(sqs.encode_messages(jobs)))
        worked = worker.run_worker(
            client,
            url,
            lambda body: sqs.handle_message(body, {"imagery": runtime}, WMSClient(), store),
            threading.Event(),
            wait_seconds=0,
            max_messages=10,
            idle_exit=0.5,
        )
        assert len(upstream.calls) == len(jobs) < len(tiles)  # one upstream tile per job
    assert worked.done == len(jobs) and worked.failed == 0
    assert len(list((tmp_path / "tiles").rglob("*.png"))) == len(tiles)


def test_reading_aws_secrets_at_debug_level_logs_no_value(caplog):
    caplog.set_level(logging.DEBUG)
    with mock_aws():
        with handing_over():
            boto3.client("secretsmanager").create_secret(Name="k", SecretString="sm-" + MARKER)
            boto3.client("ssm").put_parameter(Name="/k", Value="ssm-" + MARKER, Type="SecureString")
        spec = parse_credentials(
            {"headers": {"A": {"secret": "secretsmanager:k"}, "B": {"secret": "ssm:/k"}}}
        )
        caplog.clear()  # the set-up's own requests carried the values
        assert ResolvedCredentials(spec).headers() == {"A": "sm-" + MARKER, "B": "ssm-" + MARKER}
    assert "GetSecretValue" in caplog.text  # botocore did log, at DEBUG
    assert MARKER not in caplog.text


def test_a_source_that_cannot_start_is_one_line_of_configuration_error(tmp_path, upstream):
    upstream.get(CAPS, status=404)
    with pytest.raises(ConfigError, match=r"^WMTS source \S+ layer 'roads': capabilities answered"):
        make_app(tmp_path, wmts_layer())
    body = f"""
[layers.roads]
wms_url = "{WMS}"
wms_layers = "roads"
credentials = {{ headers = {{ "X-Key" = {{ secret = "env:NOT_SET_ANYWHERE" }} }} }}
"""
    with pytest.raises(
        ConfigError, match=r"^secret env:NOT_SET_ANYWHERE: the variable is not set$"
    ):
        make_app(tmp_path, body)
