"""Real GIS clients open the service's documents and read real tiles through it.

GDAL (Debian's gdal-bin) opens the WMTS capabilities, the ArcGIS MapServer JSON and a
TMS GDAL_WMS description; OWSLib reads the WMTS capabilities and gets a tile. The
same geographic tile fetched through every layout has the same pixels. The documents
published into a bucket (moto server) open from the bucket's URL.
"""

import io
import json
import subprocess
import sys

import mercantile
import pytest
import requests
from PIL import Image

from s3maptiler.bucket.spec import public_read_policy
from tests.integration.conftest import AWS_ENV
from tests.integration.test_website_gdal import gdal  # GDAL with its WMS cache off
from tests.servers import GunicornApp

pytestmark = pytest.mark.integration

Z = 12
NYC = mercantile.tile(-73.98, 40.75, Z)  # XYZ numbering: x, y from the top
TMS_Y = 2**Z - 1 - NYC.y


def quadkey(x: int, y: int, z: int) -> str:
    return mercantile.quadkey(x, y, z)


LAYERS = """
wms_url = "{wms}"
wms_layers = "demo"
max_zoom = 16
[layers.tms]
prefix = "tms/"
[layers.xyz]
prefix = "xyz/"
layout = "xyz"
[layers.wmts]
prefix = "wmts/1.0.0/wmts/default/GoogleMapsCompatible/"
layout = "wmts"
[layers.arcgis]
prefix = "arcgis/Layers/_alllayers/"
layout = "arcgis"
[layers.quadkey]
prefix = "quadkey/"
layout = "quadkey"
[layers.geo]
prefix = "geo/"
grid = "WorldCRS84Quad"
wms_version = "1.3.0"
layout = "wmts"
max_zoom = 10
"""


@pytest.fixture(scope="module")
def app(demo_wms, moto_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clients")
    (tmp / "layers.toml").write_text(LAYERS.format(wms=demo_wms.url))
    env = {
        **AWS_ENV,
        "LAYERS_FILE": str(tmp / "layers.toml"),
        "LOCAL_CACHE_DIR": str(tmp / "tiles"),
        "LOG_LEVEL": "WARNING",
    }
    service = GunicornApp(env).start()
    yield service
    service.stop()


def pixels(data: bytes) -> bytes:
    return Image.open(io.BytesIO(data)).convert("RGBA").tobytes()


def test_every_layout_serves_the_same_pixels(app):
    x, y = NYC.x, NYC.y
    urls = {
        "tms": f"/tms/{Z}/{x}/{TMS_Y}.png",
        "xyz": f"/xyz/{Z}/{x}/{y}.png",
        "wmts": f"/wmts/1.0.0/wmts/default/GoogleMapsCompatible/{Z}/{y}/{x}.png",
        "arcgis": f"/arcgis/Layers/_alllayers/L{Z:02d}/R{y:08x}/C{x:08x}.png",
        "quadkey": f"/quadkey/{quadkey(x, y, Z)}.png",
        "tms route": f"/1.0.0/xyz/{Z}/{x}/{TMS_Y}.png",
        "wmts route": f"/wmts/1.0.0/arcgis/default/GoogleMapsCompatible/{Z}/{y}/{x}.png",
        "arcgis route": f"/arcgis/rest/services/quadkey/MapServer/tile/{Z}/{y}/{x}",
    }
    images = {}
    for name, path in urls.items():
        answer = requests.get(app.url + path, timeout=60)
        assert answer.status_code == 200, (name, answer.text)
        images[name] = pixels(answer.content)
    reference = images.pop("tms")
    assert all(image == reference for image in images.values()), [
        n for n, i in images.items() if i != reference
    ]


def test_gdal_opens_the_wmts_capabilities_and_reads_tiles(app, tmp_path):
    url = f"WMTS:{app.url}/wmts/1.0.0/WMTSCapabilities.xml,layer=tms"
    info = gdal("gdalinfo", "-oo", f"ZOOM_LEVEL={Z}", url, cwd=tmp_path)
    assert f"Size is {256 * 2**Z}, {256 * 2**Z}" in info
    out = tmp_path / "wmts.png"
    # A 512 x 512 px window over Manhattan at zoom 12: four tiles, read through the service.
    gdal(
        "gdal_translate",
        "-q",
        "-oo",
        f"ZOOM_LEVEL={Z}",
        "-of",
        "PNG",
        "-srcwin",
        str(NYC.x * 256 - 128),
        str(NYC.y * 256 - 128),
        "512",
        "512",
        url,
        str(out),
        cwd=tmp_path,
    )
    assert len(Image.open(out).convert("RGBA").getcolors(1 << 20)) > 50


def test_gdal_opens_the_arcgis_mapserver_json(app, tmp_path):
    url = f"{app.url}/arcgis/rest/services/arcgis/MapServer?f=json"
    info = gdal("gdalinfo", url, cwd=tmp_path)
    assert "Size is" in info and "3857" in info
    out = tmp_path / "arcgis.tif"
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
        url,
        str(out),
        cwd=tmp_path,
    )
    assert len(Image.open(out).convert("RGBA").getcolors(1 << 20)) > 50


def test_gdal_reads_tms_through_a_gdal_wms_description(app, tmp_path):
    description = tmp_path / "tms.xml"
    description.write_text(f"""<GDAL_WMS>
  <Service name="TMS"><ServerUrl>{app.url}/1.0.0/tms/${{z}}/${{x}}/${{y}}.png</ServerUrl></Service>
  <DataWindow><UpperLeftX>-20037508.34</UpperLeftX><UpperLeftY>20037508.34</UpperLeftY>
    <LowerRightX>20037508.34</LowerRightX><LowerRightY>-20037508.34</LowerRightY>
    <TileLevel>{Z}</TileLevel><TileCountX>1</TileCountX><TileCountY>1</TileCountY>
    <YOrigin>bottom</YOrigin></DataWindow>
  <Projection>EPSG:3857</Projection><BlockSizeX>256</BlockSizeX><BlockSizeY>256</BlockSizeY>
  <BandsCount>4</BandsCount></GDAL_WMS>""")
    out = tmp_path / "tms.png"
    gdal(
        "gdal_translate",
        "-q",
        "-of",
        "PNG",
        "-srcwin",
        str(NYC.x * 256),
        str(NYC.y * 256),
        "256",
        "256",
        str(description),
        str(out),
        cwd=tmp_path,
    )
    served = requests.get(f"{app.url}/tms/{Z}/{NYC.x}/{TMS_Y}.png", timeout=60).content
    assert Image.open(out).convert("RGBA").tobytes() == pixels(served)


def test_owslib_reads_the_capabilities_and_gets_a_tile(app):
    from owslib.wmts import WebMapTileService

    wmts = WebMapTileService(f"{app.url}/wmts/1.0.0/WMTSCapabilities.xml")
    assert {"tms", "xyz", "wmts", "arcgis", "quadkey", "geo"} <= set(wmts.contents)
    assert "WorldCRS84Quad" in wmts.tilematrixsets
    tile = wmts.gettile(
        layer="xyz",
        tilematrixset="GoogleMapsCompatible",
        tilematrix=str(Z),
        row=NYC.y,
        column=NYC.x,
        format="image/png",
    )
    served = requests.get(f"{app.url}/xyz/{Z}/{NYC.x}/{NYC.y}.png", timeout=60).content
    assert pixels(tile.read()) == pixels(served)
    # EPSG:4326, WMS 1.3.0 (lat/lon BBOX): zoom 3 over New York is row 1, column 5.
    geo = wmts.gettile(
        layer="geo",
        tilematrixset="WorldCRS84Quad",
        tilematrix="3",
        row=1,
        column=5,
        format="image/png",
    )
    assert len(Image.open(io.BytesIO(geo.read())).convert("RGBA").getcolors(1 << 20)) > 10


def test_published_documents_open_from_the_bucket(app, moto_server, s3, bucket, tmp_path):
    base = f"{moto_server.url}/{bucket}"
    env = {
        **AWS_ENV,
        "LAYERS_FILE": str(tmp_path / "layers.toml"),
        "AWS_ENDPOINT_URL": moto_server.url,
        "BUCKET_NAME": bucket,
    }
    (tmp_path / "layers.toml").write_text(LAYERS.format(wms="http://127.0.0.1:9/wms"))
    command = [sys.executable, "-m", "s3maptiler.cli", "publish", "--base-url", base]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    types = {
        key: s3.head_object(Bucket=bucket, Key=key)["ContentType"]
        for key in (
            "1.0.0/tilemapservice.xml",
            "tms/tilemapresource.xml",
            "wmts/1.0.0/WMTSCapabilities.xml",
            "arcgis/rest/services/arcgis/MapServer",
        )
    }
    assert types["wmts/1.0.0/WMTSCapabilities.xml"].startswith("application/xml")
    assert types["tms/tilemapresource.xml"].startswith("text/xml")
    assert types["arcgis/rest/services/arcgis/MapServer"] == "application/json"
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert "0 written" in again.stdout, "unchanged documents are not written again"

    # The bucket alone: copy one rendered tile under its key, then read it as OWSLib would.
    tile = requests.get(f"{app.url}/xyz/{Z}/{NYC.x}/{NYC.y}.png", timeout=60).content
    s3.put_object(
        Bucket=bucket, Key=f"xyz/{Z}/{NYC.x}/{NYC.y}.png", Body=tile, ContentType="image/png"
    )
    # Public read through a bucket policy, as `s3maptiler bucket setup` grants it.
    policy = public_read_policy(bucket, [""])
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    from owslib.wmts import WebMapTileService

    # moto's REST endpoint, unlike an S3 website, rejects OWSLib's GetCapabilities query:
    # hand OWSLib the object's bytes; tiles then come from the ResourceURL templates.
    capabilities = requests.get(f"{base}/wmts/1.0.0/WMTSCapabilities.xml", timeout=30)
    assert capabilities.status_code == 200
    wmts = WebMapTileService(base, xml=capabilities.content)
    assert "xyz" in wmts.contents and "tms" not in wmts.contents  # TMS keys: y up
    got = wmts.gettile(
        layer="xyz",
        tilematrixset="GoogleMapsCompatible",
        tilematrix=str(Z),
        row=NYC.y,
        column=NYC.x,
        format="image/png",
    )
    assert got.read() == tile
    arcgis = json.loads(
        s3.get_object(Bucket=bucket, Key="arcgis/rest/services/arcgis/MapServer")["Body"].read()
    )
    assert arcgis["tileInfo"]["lods"][Z]["level"] == Z
