"""Bulk upload: directory walk, key conversion, skip-if-same, retries (moto in-process)."""

from __future__ import annotations

import base64
import hashlib
import io
import threading
from collections import Counter
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from PIL import Image

from s3maptiler.bucket import source
from s3maptiler.bucket import upload as bulk
from s3maptiler.documents.arcgis import cache_mapserver
from s3maptiler.storage.s3 import ListingFailed
from s3maptiler.tiles.grids import WEB_MERCATOR
from s3maptiler.tiles.layouts import get_layout
from tests.unit.conftest import count_calls

BUCKET = "tile-cache"
ARCGIS = get_layout("arcgis")
TMS = get_layout("tms")
XYZ = get_layout("xyz")

CONF_XML = """<?xml version="1.0" encoding="utf-8"?>
<CacheInfo xsi:type='typens:CacheInfo' xmlns:xsi='http://www.w3.org/2001/XMLSchema-instance'
    xmlns:xs='http://www.w3.org/2001/XMLSchema' xmlns:typens='http://www.esri.com/schemas/ArcGIS/10.1'>
  <TileCacheInfo xsi:type='typens:TileCacheInfo'>
    <SpatialReference xsi:type='typens:ProjectedCoordinateSystem'>
      <WKT>PROJCS["WGS_1984_Web_Mercator_Auxiliary_Sphere"]</WKT>
      <WKID>102100</WKID><LatestWKID>3857</LatestWKID>
    </SpatialReference>
    <TileOrigin xsi:type='typens:PointN'><X>-20037508.342787</X><Y>20037508.342787</Y></TileOrigin>
    <TileCols>256</TileCols><TileRows>256</TileRows><DPI>96</DPI>
    <LODInfos xsi:type='typens:ArrayOfLODInfo'>
      <LODInfo xsi:type='typens:LODInfo'><LevelID>1</LevelID>
        <Scale>295828763.795777</Scale><Resolution>78271.516963999937</Resolution></LODInfo>
      <LODInfo xsi:type='typens:LODInfo'><LevelID>0</LevelID>
        <Scale>591657527.591555</Scale><Resolution>156543.03392800014</Resolution></LODInfo>
    </LODInfos>
  </TileCacheInfo>
  <TileImageInfo xsi:type='typens:TileImageInfo'>
    <CacheTileFormat>JPEG</CacheTileFormat><CompressionQuality>75</CompressionQuality>
  </TileImageInfo>
  <CacheStorageInfo xsi:type='typens:CacheStorageInfo'>
    <StorageFormat>{storage}</StorageFormat><PacketSize>128</PacketSize>
  </CacheStorageInfo>
</CacheInfo>
"""


def image(fmt: str, color=(10, 120, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format=fmt)
    return buf.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def arcgis_cache(tmp_path) -> Path:
    """An ArcGIS exploded cache: roads/Layers/{conf.xml,_alllayers/Lzz/Rrrrrrrrr/Ccccccccc.png}."""
    service = tmp_path / "roads"
    layers = service / "Layers"
    (layers / "conf.xml").parent.mkdir(parents=True)
    (layers / "conf.xml").write_text(CONF_XML.format(storage="esriMapCacheStorageModeExploded"))
    root = layers / "_alllayers"
    for x, y, z, color in [(0, 0, 0, (1, 2, 3)), (1, 0, 1, (4, 5, 6)), (5, 2, 3, (7, 8, 9))]:
        write(root / f"L{z:02d}" / f"R{y:08x}" / f"C{x:08x}.png", image("PNG", color))
    write(root / "Thumbs.db", b"not a tile")
    write(root / "L03" / ".DS_Store", b"hidden")
    return service


def keys_of(walk: source.TileWalk) -> list[str]:
    return sorted(t.key for t in walk.tiles)


# --- source tree and keys ---------------------------------------------------------------


@pytest.mark.parametrize("sub", ["", "..", "Layers", "Layers/_alllayers"])
def test_find_source_accepts_any_level_of_an_arcgis_cache(arcgis_cache, sub):
    tree = source.find_source(arcgis_cache / sub)
    assert tree.tile_root.resolve() == arcgis_cache / "Layers" / "_alllayers"
    assert tree.conf_xml.resolve() == arcgis_cache / "Layers" / "conf.xml"
    assert tree.name == "roads"
    assert source.detect_layout(tree.tile_root) == "arcgis"


def test_find_source_of_a_zxy_tree(tmp_path):
    write(tmp_path / "tree" / "3" / "5" / "2.png", image("PNG"))
    tree = source.find_source(tmp_path / "tree")
    assert tree.tile_root == tmp_path / "tree" and tree.conf_xml is None
    assert source.detect_layout(tree.tile_root) is None


def test_find_source_refuses_a_missing_directory(tmp_path):
    with pytest.raises(source.SourceError):
        source.find_source(tmp_path / "nope")


def test_arcgis_keys_kept_as_they_are(arcgis_cache):
    walk = source.walk_tiles(arcgis_cache / "Layers" / "_alllayers", ARCGIS, WEB_MERCATOR, "t/")
    assert keys_of(walk) == [
        "t/L00/R00000000/C00000000.png",
        "t/L01/R00000000/C00000001.png",
        "t/L03/R00000002/C00000005.png",
    ]
    assert walk.ignored == ("Thumbs.db",)


def test_arcgis_hex_rows_convert_to_tms(arcgis_cache):
    walk = source.walk_tiles(
        arcgis_cache / "Layers" / "_alllayers", ARCGIS, WEB_MERCATOR, "tiles/", TMS
    )
    # ArcGIS rows count from the top like mercantile's y; TMS rows from the bottom.
    expected = [
        f"tiles/{z}/{x}/{2**z - 1 - y}.png" for x, y, z in [(0, 0, 0), (1, 0, 1), (5, 2, 3)]
    ]
    assert (
        keys_of(walk)
        == sorted(expected)
        == ["tiles/0/0/0.png", "tiles/1/1/1.png", "tiles/3/5/5.png"]
    )


def test_upper_case_hex_stays_upper_case_without_conversion(tmp_path):
    write(tmp_path / "L05" / "R0000001A" / "C0000001B.png", image("PNG"))
    walk = source.walk_tiles(tmp_path, ARCGIS, WEB_MERCATOR, "")
    assert keys_of(walk) == ["L05/R0000001A/C0000001B.png"]
    converted = source.walk_tiles(tmp_path, ARCGIS, WEB_MERCATOR, "", XYZ)
    assert keys_of(converted) == ["5/27/26.png"]


def test_xyz_tree_to_tms_flips_rows(tmp_path):
    write(tmp_path / "2" / "1" / "0.png", image("PNG"))
    write(tmp_path / "leaflet.html", b"<html>")
    write(tmp_path / "2" / "9" / "0.png", image("PNG"))  # column 9 does not exist at zoom 2
    walk = source.walk_tiles(tmp_path, XYZ, WEB_MERCATOR, "tiles/", TMS)
    assert keys_of(walk) == ["tiles/2/1/3.png"]
    assert sorted(walk.ignored) == ["2/9/0.png", "leaflet.html"]


def test_two_files_for_one_key_is_an_error(tmp_path):
    write(tmp_path / "L01" / "R00000000" / "C00000001.png", image("PNG"))
    write(tmp_path / "L01" / "R00000000" / "C00000001.PNG", image("PNG"))
    with pytest.raises(source.SourceError, match="both"):
        source.walk_tiles(tmp_path, ARCGIS, WEB_MERCATOR, "", TMS)


def test_content_type_from_the_bytes_not_the_name():
    assert bulk.content_type_for(image("JPEG"), "a.png") == "image/jpeg"
    assert bulk.content_type_for(image("PNG"), "a.jpg") == "image/png"
    assert bulk.content_type_for(b"{}", "a.json") == "application/json"
    assert bulk.content_type_for(b"\x00\x01", "a.pbf") == "application/octet-stream"


def test_multipart_etag_never_counts_as_the_same():
    data = b"abc"
    md5 = hashlib.md5(data).hexdigest()
    assert bulk.RemoteObject(3, f'"{md5}"').same_as(3, md5)
    assert not bulk.RemoteObject(4, f'"{md5}"').same_as(3, md5)
    assert not bulk.RemoteObject(3, f'"{md5}-2"').same_as(3, md5)


# --- upload against moto ---------------------------------------------------------------------


def plan(cache: Path, prefix: str = "tiles/"):
    walk = source.walk_tiles(cache / "Layers" / "_alllayers", ARCGIS, WEB_MERCATOR, prefix, TMS)
    return walk.tiles


def run(s3, tiles, **options):
    existing = bulk.list_existing(s3, BUCKET, "tiles/")
    values = {"cache_control": "public, max-age=600", "workers": 4, "backoff": 0.0}
    values.update(options)
    return bulk.upload_tiles(s3, BUCKET, tiles, existing, bulk.UploadOptions(**values))


def test_upload_sets_content_type_from_bytes_cache_control_and_no_acl(s3, tmp_path):
    jpeg = image("JPEG")
    write(tmp_path / "1" / "0" / "0.png", jpeg)  # JPEG bytes behind a .png name
    tiles = source.walk_tiles(tmp_path, TMS, WEB_MERCATOR, "tiles/").tiles
    report = run(s3, tiles)
    assert (report.uploaded, report.skipped, report.failed) == (1, 0, 0)
    obj = s3.get_object(Bucket=BUCKET, Key="tiles/1/0/0.png")
    assert obj["Body"].read() == jpeg
    assert obj["ContentType"] == "image/jpeg"
    assert obj["CacheControl"] == "public, max-age=600"
    grants = s3.get_object_acl(Bucket=BUCKET, Key="tiles/1/0/0.png")["Grants"]
    assert [g["Permission"] for g in grants] == ["FULL_CONTROL"]  # owner only


@pytest.mark.parametrize("mode", ["when_supported", "when_required"])
def test_every_upload_carries_exactly_one_integrity_check(s3, tmp_path, mode):
    client = boto3.client(
        "s3", region_name="us-east-1", config=Config(request_checksum_calculation=mode)
    )
    sent = []
    client.meta.events.register(
        "before-send.s3.PutObject", lambda request, **_: sent.append(request.headers)
    )
    data = image("PNG")
    write(tmp_path / "0" / "0" / "0.png", data)
    report = run(client, source.walk_tiles(tmp_path, TMS, WEB_MERCATOR, "tiles/").tiles)
    assert report.uploaded == 1
    (headers,) = sent
    names = {name.lower() for name in headers}
    assert "expect" not in names  # a tile goes in one round trip, no "100 Continue" wait
    if mode == "when_required":  # no SDK checksum: the MD5 is ours
        expected = base64.b64encode(hashlib.md5(data).digest()).decode()
        md5 = headers["Content-MD5"]
        assert (md5.decode() if isinstance(md5, bytes) else md5) == expected
        assert not any(name.startswith("x-amz-checksum-") for name in names)
    else:  # the SDK's CRC already covers the bytes
        assert "content-md5" not in names
        assert any(name.startswith("x-amz-checksum-") for name in names) or (
            "x-amz-trailer" in names
        )


def test_acl_only_when_asked(s3, arcgis_cache):
    run(s3, plan(arcgis_cache)[:1], acl="public-read")
    key = plan(arcgis_cache)[0].key
    grants = s3.get_object_acl(Bucket=BUCKET, Key=key)["Grants"]
    assert any(
        g["Grantee"].get("URI", "").endswith("/AllUsers") and g["Permission"] == "READ"
        for g in grants
    )


def test_second_run_skips_everything_with_one_listing_and_no_heads(s3, arcgis_cache):
    tiles = plan(arcgis_cache)
    first = run(s3, tiles)
    assert (first.uploaded, first.failed) == (3, 0)
    assert first.bytes_uploaded == sum(t.path.stat().st_size for t in tiles)

    calls = count_calls(s3)
    second = run(s3, tiles)
    assert (second.uploaded, second.skipped, second.failed) == (0, 3, 0)
    assert calls == Counter({"ListObjectsV2": 1})


def test_changed_file_of_the_same_size_is_uploaded_again(s3, arcgis_cache):
    tiles = plan(arcgis_cache)
    run(s3, tiles)
    victim = tiles[1]
    data = bytearray(victim.path.read_bytes())
    data[-20] ^= 0xFF  # same size, different bytes
    victim.path.write_bytes(bytes(data))
    report = run(s3, tiles)
    assert (report.uploaded, report.skipped) == (1, 2)
    assert s3.get_object(Bucket=BUCKET, Key=victim.key)["Body"].read() == bytes(data)


def test_dry_run_counts_but_writes_nothing(s3, arcgis_cache):
    calls = count_calls(s3)
    report = run(s3, plan(arcgis_cache), dry_run=True)
    assert (report.uploaded, report.dry_run) == (3, True)
    assert calls["PutObject"] == 0
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET)


class Flaky:
    """A client whose first `failures` PutObject calls fail with `code` / `status`."""

    def __init__(self, client, failures: int, code: str = "SlowDown", status: int = 503):
        self.client = client
        self.failures = failures
        self.code = code
        self.status = status
        self.puts = 0
        self.lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self.client, name)

    def put_object(self, **params):
        with self.lock:
            self.puts += 1
            fail = self.failures > 0
            self.failures -= 1
        if fail:
            raise ClientError(
                {
                    "Error": {"Code": self.code, "Message": "try later"},
                    "ResponseMetadata": {"HTTPStatusCode": self.status},
                },
                "PutObject",
            )
        return self.client.put_object(**params)


def test_throttled_uploads_are_retried(s3, arcgis_cache):
    flaky = Flaky(s3, failures=3)
    report = run(flaky, plan(arcgis_cache), retries=4)
    assert (report.uploaded, report.failed) == (3, 0)
    assert flaky.puts == 6
    assert len(s3.list_objects_v2(Bucket=BUCKET)["Contents"]) == 3


def test_retries_give_up_and_count_failures(s3, arcgis_cache):
    flaky = Flaky(s3, failures=100)
    report = run(flaky, plan(arcgis_cache), retries=2)
    assert (report.uploaded, report.failed) == (0, 3)
    assert flaky.puts == 9  # 3 tiles x (1 + 2 retries)
    assert all("SlowDown" in reason for _, reason in report.failures)


def test_access_denied_is_not_retried(s3, arcgis_cache):
    flaky = Flaky(s3, failures=100, code="AccessDenied", status=403)
    report = run(flaky, plan(arcgis_cache), retries=4)
    assert report.failed == 3 and flaky.puts == 3


def test_unreadable_file_is_a_failure_not_a_crash(s3, arcgis_cache):
    tiles = plan(arcgis_cache)
    tiles[0].path.unlink()
    report = run(s3, tiles)
    assert (report.uploaded, report.failed) == (2, 1)
    assert report.failures[0][0] == tiles[0].key


def test_listing_a_missing_bucket_fails_with_one_line(s3):
    with pytest.raises(ListingFailed, match="NoSuchBucket"):
        bulk.list_existing(s3, "no-such-bucket", "tiles/")


# --- ArcGIS conf.xml ----------------------------------------------------------------------


def test_conf_xml_becomes_mapserver_json(arcgis_cache):
    info = source.read_conf_xml(arcgis_cache / "Layers" / "conf.xml")
    assert info.origin == (-20037508.342787, 20037508.342787)
    assert [lod.level for lod in info.lods] == [0, 1]
    doc = cache_mapserver(info, "roads")
    assert doc["mapName"] == "roads"
    assert doc["spatialReference"] == {"wkid": 102100, "latestWkid": 3857}
    assert doc["tileInfo"]["lods"][0] == {
        "level": 0,
        "resolution": 156543.03392800014,
        "scale": 591657527.591555,
    }
    assert doc["tileInfo"]["format"] == "JPEG"
    assert doc["tileInfo"]["compressionQuality"] == 75
    assert doc["tileInfo"]["origin"] == {"x": -20037508.342787, "y": 20037508.342787}
    assert "tilemap" not in doc["capabilities"].lower()
    assert doc["minScale"] == 591657527.591555 and doc["maxScale"] == 295828763.795777
    assert doc["fullExtent"]["xmax"] == pytest.approx(20037508.342789244)


def test_conf_cdi_extent_is_used(tmp_path):
    cdi = tmp_path / "conf.cdi"
    cdi.write_text(
        "<EnvelopeN xsi:type='typens:EnvelopeN' "
        "xmlns:xsi='http://www.w3.org/2001/XMLSchema-instance' "
        "xmlns:typens='http://www.esri.com/schemas/ArcGIS/10.1'>"
        "<XMin>-1</XMin><YMin>-2</YMin><XMax>3</XMax><YMax>4</YMax></EnvelopeN>"
    )
    assert source.read_conf_cdi(cdi) == (-1.0, -2.0, 3.0, 4.0)
    assert source.read_conf_cdi(tmp_path / "missing.cdi") is None


def test_compact_cache_is_refused(tmp_path):
    conf = tmp_path / "conf.xml"
    conf.write_text(CONF_XML.format(storage="esriMapCacheStorageModeCompact"))
    with pytest.raises(source.ConfXmlError, match="not an exploded cache"):
        source.read_conf_xml(conf)


def test_broken_conf_xml_is_one_error(tmp_path):
    conf = tmp_path / "conf.xml"
    conf.write_text("<CacheInfo><TileCacheInfo>")
    with pytest.raises(source.ConfXmlError):
        source.read_conf_xml(conf)


def test_listing_reads_keys_sizes_and_etags_without_timestamps(s3):
    s3.put_object(Bucket=BUCKET, Key="tiles/0/0/0.png", Body=b"abc")
    found = bulk.list_existing(s3, BUCKET, "tiles/")
    assert found == {
        "tiles/0/0/0.png": bulk.RemoteObject(3, f'"{hashlib.md5(b"abc").hexdigest()}"')
    }
    # The client now skips parsing LastModified, the costliest part of a big listing.
    (obj,) = s3.list_objects_v2(Bucket=BUCKET)["Contents"]
    assert "LastModified" not in obj and obj["Size"] == 3
