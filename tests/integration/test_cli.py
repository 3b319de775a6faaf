"""The console script against moto's S3 server on 127.0.0.1: upload, bucket setup/check, purge.

Commands run through click's CliRunner, and once as a real subprocess
(``python -m s3maptiler.cli``). Uploaded ArcGIS tiles are read back through the
service (its Flask app on the same bucket), so the keys are the ones it looks for.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from s3maptiler.cli import main
from s3maptiler.config import Layer, Settings
from s3maptiler.http.app import create_app
from tests.integration.conftest import AWS_ENV

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HOST = "tiles-api.example.com"
CONF_XML = """<?xml version="1.0" encoding="utf-8"?>
<CacheInfo xsi:type='typens:CacheInfo' xmlns:xsi='http://www.w3.org/2001/XMLSchema-instance'
    xmlns:typens='http://www.esri.com/schemas/ArcGIS/10.1'>
  <TileCacheInfo xsi:type='typens:TileCacheInfo'>
    <SpatialReference xsi:type='typens:ProjectedCoordinateSystem'>
      <WKID>102100</WKID><LatestWKID>3857</LatestWKID></SpatialReference>
    <TileOrigin xsi:type='typens:PointN'><X>-20037508.342787</X><Y>20037508.342787</Y></TileOrigin>
    <TileCols>256</TileCols><TileRows>256</TileRows><DPI>96</DPI>
    <LODInfos xsi:type='typens:ArrayOfLODInfo'>{lods}</LODInfos>
  </TileCacheInfo>
  <TileImageInfo xsi:type='typens:TileImageInfo'><CacheTileFormat>PNG</CacheTileFormat>
  </TileImageInfo>
  <CacheStorageInfo xsi:type='typens:CacheStorageInfo'>
    <StorageFormat>esriMapCacheStorageModeExploded</StorageFormat></CacheStorageInfo>
</CacheInfo>
"""
# Tiles of the generated cache: (x, y counted from the top, z).
TILES = [(x, y, z) for z in (3, 4) for x in range(2, 2 + z) for y in range(1, 4)]


def png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (256, 256), color).save(buf, format="PNG")
    return buf.getvalue()


def make_arcgis_cache(root: Path) -> dict[tuple[int, int, int], bytes]:
    """A cache root/roads/Layers/{conf.xml, _alllayers/Lzz/Rrrrrrrrr/Ccccccccc.png}."""
    layers = root / "roads" / "Layers"
    lods = "".join(
        f"<LODInfo xsi:type='typens:LODInfo'><LevelID>{z}</LevelID>"
        f"<Scale>{591657527.591555 / 2**z}</Scale>"
        f"<Resolution>{156543.03392800014 / 2**z}</Resolution></LODInfo>"
        for z in range(5)
    )
    layers.mkdir(parents=True)
    (layers / "conf.xml").write_text(CONF_XML.format(lods=lods))
    written = {}
    for x, y, z in TILES:
        path = layers / "_alllayers" / f"L{z:02d}" / f"R{y:08x}" / f"C{x:08x}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        written[(x, y, z)] = png((x * 40 % 256, y * 60 % 256, z * 50))
        path.write_bytes(written[(x, y, z)])
    return written


@pytest.fixture
def cli_env(monkeypatch, tmp_path, moto_server):
    """Credentials and the moto endpoint in the environment; no .env of the checkout."""
    monkeypatch.chdir(tmp_path)
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.url)
    for name in ("BUCKET_NAME", "TILE_PREFIX", "LAYERS_FILE", "WMS_SERVER", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)


def run(*args: str):
    result = CliRunner().invoke(main, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def keys(s3, bucket: str, prefix: str = "") -> set[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def arcgis_app(bucket: str, endpoint: str):
    layer = Layer(
        name="roads",
        wms_url="http://127.0.0.1:9/unused",  # every tile must come from the cache
        wms_layers="unused",
        prefix="arcgis/",
        layout="arcgis",
        cache_control="public, max-age=600",
    )
    settings = Settings(layers=(layer,), bucket=bucket, aws_endpoint_url=endpoint)
    return create_app(settings).test_client()


# --- upload -------------------------------------------------------------------------------


def test_upload_arcgis_cache_and_read_it_back_through_the_service(
    cli_env, tmp_path, moto_server, s3, bucket
):
    written = make_arcgis_cache(tmp_path / "cache")
    result = run(
        "upload",
        str(tmp_path / "cache" / "roads"),
        "--bucket",
        bucket,
        "--prefix",
        "arcgis/",
        "--layout-to",
        "arcgis",
        "--cache-control",
        "public, max-age=600",
    )
    assert result.exit_code == 0, result.output + result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    assert f"{len(TILES)} uploaded" in summary and "0 failed" in summary, summary

    obj = s3.get_object(Bucket=bucket, Key="arcgis/L03/R00000002/C00000004.png")
    assert obj["ContentType"] == "image/png"
    assert obj["CacheControl"] == "public, max-age=600"

    app = arcgis_app(bucket, moto_server.url)
    for (x, y, z), data in written.items():
        by_key = app.get(f"/arcgis/L{z:02d}/R{y:08x}/C{x:08x}.png")
        assert by_key.status_code == 200, by_key.get_data(as_text=True)
        assert by_key.headers["X-Tile-Source"] == "cache"
        assert by_key.data == data
        by_rest = app.get(f"/arcgis/rest/services/roads/MapServer/tile/{z}/{y}/{x}")
        assert by_rest.status_code == 200 and by_rest.data == data

    service = s3.get_object(Bucket=bucket, Key="arcgis/rest/services/roads/MapServer")
    assert service["ContentType"] == "application/json"
    doc = json.loads(service["Body"].read())
    assert doc["tileInfo"]["origin"] == {"x": -20037508.342787, "y": 20037508.342787}
    assert [lod["level"] for lod in doc["tileInfo"]["lods"]] == [0, 1, 2, 3, 4]

    again = run("upload", str(tmp_path / "cache" / "roads"), "--bucket", bucket,
                "--prefix", "arcgis/", "--layout-to", "arcgis")  # fmt: skip
    assert again.exit_code == 0
    assert f"0 uploaded (0 B), {len(TILES)} skipped" in again.stdout


def test_upload_dry_run_writes_nothing(cli_env, tmp_path, s3, bucket):
    make_arcgis_cache(tmp_path / "cache")
    result = run("upload", str(tmp_path / "cache"), "--bucket", bucket, "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert f"{len(TILES)} to upload" in result.stdout
    assert keys(s3, bucket) == set()


def test_upload_as_a_subprocess_from_the_environment(tmp_path, moto_server, s3, bucket):
    """`python -m s3maptiler.cli` with settings only in the environment: ArcGIS -> TMS."""
    make_arcgis_cache(tmp_path / "cache")
    env = {
        **os.environ,
        **AWS_ENV,
        "AWS_ENDPOINT_URL": moto_server.url,
        "BUCKET_NAME": bucket,
        "TILE_PREFIX": "tiles/",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("LAYERS_FILE", None)
    done = subprocess.run(
        [sys.executable, "-m", "s3maptiler.cli", "upload", str(tmp_path / "cache")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    expected = {f"tiles/{z}/{x}/{2**z - 1 - y}.png" for x, y, z in TILES}
    assert keys(s3, bucket) == expected
    assert done.stdout.count("\n") == 1  # just the summary
    assert "\r" not in done.stderr  # no progress bar when stderr is not a terminal


def test_upload_to_a_missing_bucket_exits_1(cli_env, tmp_path):
    make_arcgis_cache(tmp_path / "cache")
    result = run("upload", str(tmp_path / "cache"), "--bucket", "no-such-bucket-here")
    assert result.exit_code == 1
    assert "NoSuchBucket" in result.stderr.strip().splitlines()[-1]


def test_usage_errors_exit_2_with_one_line(cli_env, tmp_path):
    result = run("upload", str(tmp_path / "nowhere"), "--bucket", "b-bucket")
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    result = run("upload", str(tmp_path))  # no bucket anywhere
    assert result.exit_code == 2 and "BUCKET_NAME" in result.stderr


# --- bucket setup / check -------------------------------------------------------------------


def test_bucket_setup_stores_the_documents_and_check_passes(cli_env, s3, bucket):
    result = run(
        "bucket", "setup", "--bucket", bucket, "--tiler-host", HOST,
        "--prefix", "tiles/", "--prefix", "roads/", "--expire-days", "30",
        "--cors-origin", "https://map.example.com",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr

    website = s3.get_bucket_website(Bucket=bucket)
    assert website["IndexDocument"] == {"Suffix": "index.html"}
    rules = website["RoutingRules"]
    assert len(rules) == 4
    assert {r["Condition"]["HttpErrorCodeReturnedEquals"] for r in rules} == {"403", "404"}
    assert all(
        r["Redirect"]
        == {
            "Protocol": "https",
            "HostName": HOST,
            "ReplaceKeyPrefixWith": "miss/" + r["Condition"]["KeyPrefixEquals"],
            "HttpRedirectCode": "307",
        }
        for r in rules
    )
    cors = s3.get_bucket_cors(Bucket=bucket)["CORSRules"]
    assert cors[0]["AllowedOrigins"] == ["https://map.example.com"]
    lifecycle = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert {(r["Filter"]["Prefix"], r["Expiration"]["Days"]) for r in lifecycle} == {
        ("_leases/", 1),
        ("tiles/", 30),
        ("roads/", 30),
    }
    policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    assert policy["Statement"][0]["Resource"] == [
        f"arn:aws:s3:::{bucket}/tiles/*",
        f"arn:aws:s3:::{bucket}/roads/*",
        # The documents `publish` writes outside the tile prefixes are public too.
        f"arn:aws:s3:::{bucket}/1.0.0/tilemapservice.xml",
        f"arn:aws:s3:::{bucket}/wmts/1.0.0/WMTSCapabilities.xml",
        f"arn:aws:s3:::{bucket}/ogcapi",
    ]
    # The IAM policy for the instance role is printed as JSON.
    iam_text = result.stdout.split("(least privilege):\n", 1)[1].rsplit("\nbucket setup", 1)[0]
    iam = json.loads(iam_text)
    sids = {s["Sid"] for s in iam["Statement"]}
    assert sids == {"ReadWriteTiles", "MetatileLeases", "MissingTilesAnswer404"}

    check = run(
        "bucket", "check", "--bucket", bucket, "--tiler-host", HOST, "--prefix", "tiles/",
        "--prefix", "roads/", "--expire-days", "30", "--cors-origin", "https://map.example.com",
    )  # fmt: skip
    assert check.exit_code == 0, check.stdout
    assert check.stdout.strip().endswith(": ok")


def test_bucket_check_lists_findings_and_exits_1(cli_env, bucket):
    result = run("bucket", "check", "--bucket", bucket, "--tiler-host", HOST)
    assert result.exit_code == 1
    lines = result.stdout.strip().splitlines()
    assert lines[-1].endswith("problems")
    assert any(
        line.startswith("website: static website hosting is not configured") for line in lines
    )
    assert any(line.startswith("policy: ") for line in lines)


def test_bucket_setup_dry_run_prints_every_document_and_sends_none(cli_env, s3, bucket):
    result = run("bucket", "setup", "--bucket", bucket, "--tiler-host", HOST,
                 "--expire-days", "7", "--dry-run")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    blocks = result.stdout.split("# would send ")[1:]
    operations = [block.split(" ", 1)[0] for block in blocks]
    assert operations == [
        "put_bucket_website",
        "put_bucket_cors",
        "put_bucket_lifecycle_configuration",
        "put_bucket_policy",
    ]
    website = json.loads(blocks[0].split("\n", 1)[1])
    assert website["RoutingRules"][1]["Redirect"]["HttpRedirectCode"] == "307"
    with pytest.raises(s3.exceptions.ClientError):
        s3.get_bucket_website(Bucket=bucket)


def test_bucket_setup_with_block_public_access_needs_the_flag(cli_env, s3, bucket):
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    refused = run("bucket", "setup", "--bucket", bucket, "--tiler-host", HOST)
    assert refused.exit_code == 1
    assert "--relax-public-access-block" in refused.stderr
    relaxed = run("bucket", "setup", "--bucket", bucket, "--tiler-host", HOST,
                  "--relax-public-access-block")  # fmt: skip
    assert relaxed.exit_code == 0, relaxed.stderr
    assert "relaxed" in relaxed.stderr
    bpa = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert bpa["BlockPublicPolicy"] is False and bpa["BlockPublicAcls"] is True


def test_bucket_setup_refuses_a_url_as_tiler_host(cli_env, bucket):
    result = run("bucket", "setup", "--bucket", bucket, "--tiler-host", f"https://{HOST}/")
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1


# --- purge --------------------------------------------------------------------------------------


def test_purge_a_zoom_level(cli_env, tmp_path, s3, bucket):
    make_arcgis_cache(tmp_path / "cache")
    assert run("upload", str(tmp_path / "cache"), "--bucket", bucket).exit_code == 0
    s3.put_object(Bucket=bucket, Key="tiles/tilemapresource.xml", Body=b"<TileMap/>")
    z4 = {f"tiles/4/{x}/{15 - y}.png" for x, y, z in TILES if z == 4}

    counted = run("purge", "--bucket", bucket, "--min-zoom", "4", "--max-zoom", "4", "--dry-run")
    assert counted.exit_code == 0
    assert f"{len(z4)} tiles to delete" in counted.stdout
    assert z4 <= keys(s3, bucket)

    refused = run("purge", "--bucket", bucket, "--min-zoom", "4", "--max-zoom", "4")
    assert refused.exit_code == 2 and "--yes" in refused.stderr

    done = run("purge", "--bucket", bucket, "--min-zoom", "4", "--max-zoom", "4", "--yes")
    assert done.exit_code == 0, done.stderr
    assert f"{len(z4)} deleted, 0 failed" in done.stdout
    left = keys(s3, bucket)
    assert not (z4 & left)
    assert "tiles/tilemapresource.xml" in left
    assert len(left) == len(TILES) - len(z4) + 1


# --- settings from a layers file ----------------------------------------------------------------

LAYERS_TOML = """
wms_url = "http://127.0.0.1:9/unused"
[layers.roads]
wms_layers = "roads"
prefix = "arcgis/"
layout = "arcgis"
cache_control = "public, max-age=123"
[layers.plain]
wms_layers = "plain"
prefix = "plain/"
"""


def test_a_layers_file_gives_prefix_layout_and_every_prefix(
    cli_env, monkeypatch, tmp_path, s3, bucket
):
    (tmp_path / "layers.toml").write_text(LAYERS_TOML)
    monkeypatch.setenv("LAYERS_FILE", str(tmp_path / "layers.toml"))
    monkeypatch.setenv("BUCKET_NAME", bucket)
    make_arcgis_cache(tmp_path / "cache")

    ambiguous = run("upload", str(tmp_path / "cache"))
    assert ambiguous.exit_code == 2 and "--layer" in ambiguous.stderr

    result = run("upload", str(tmp_path / "cache"), "--layer", "roads")
    assert result.exit_code == 0, result.stderr
    uploaded = keys(s3, bucket, "arcgis/L")
    assert uploaded == {f"arcgis/L{z:02d}/R{y:08x}/C{x:08x}.png" for x, y, z in TILES}
    head = s3.head_object(Bucket=bucket, Key=sorted(uploaded)[0])
    assert head["CacheControl"] == "public, max-age=123"

    setup = run("bucket", "setup", "--tiler-host", HOST)
    assert setup.exit_code == 0, setup.stderr
    rules = s3.get_bucket_website(Bucket=bucket)["RoutingRules"]
    assert sorted({r["Condition"]["KeyPrefixEquals"] for r in rules}) == [
        "arcgis/",
        "arcgis/rest/services/",  # the ArcGIS REST tile URLs of published documents
        "ogcapi/",  # the OGC API tile URLs of published documents
        "plain/",
    ]

    monkeypatch.setenv("LAYERS_FILE", str(tmp_path / "missing.toml"))
    broken = run("purge", "--layer", "roads", "--dry-run")
    assert broken.exit_code == 2 and "missing.toml" in broken.stderr
