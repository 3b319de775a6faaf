"""Purge: key selection by zoom and lon/lat box, batched DeleteObjects (moto in-process)."""

from __future__ import annotations

import mercantile
import pytest

from s3maptiler.bucket import purge
from s3maptiler.bucket.purge import TileSelection
from s3maptiler.tiles.grids import GLOBAL_GEODETIC, WEB_MERCATOR, Bbox
from s3maptiler.tiles.layouts import get_layout
from tests.unit.conftest import count_calls

BUCKET = "tile-cache"
TMS = get_layout("tms")
ARCGIS = get_layout("arcgis")
QUADKEY = get_layout("quadkey")


def tms_key(x: int, y: int, z: int, prefix: str = "tiles/") -> str:
    """TMS key of the tile (x, y counted from the top, as mercantile does)."""
    return f"{prefix}{z}/{x}/{2**z - 1 - y}.png"


def put(s3, keys) -> None:
    for key in keys:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")


def remaining(s3) -> set[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


# --- selection (pure) -------------------------------------------------------------------


def test_zoom_range_selects_only_those_levels():
    sel = TileSelection(TMS, WEB_MERCATOR, min_zoom=2, max_zoom=3)
    assert sel.selects("2/0/0.png") is True
    assert sel.selects("3/7/7.png") is True
    assert sel.selects("1/0/0.png") is False
    assert sel.selects("4/0/0.png") is False


def test_non_tiles_are_not_selected():
    sel = TileSelection(TMS, WEB_MERCATOR)
    assert sel.selects("tilemapresource.xml") is None
    assert sel.selects("roads/3/1/1.png") is None
    assert sel.selects("3/9/1.png") is None  # column 9 is outside zoom 3


def test_bbox_selects_tiles_that_overlap_it():
    nyc = Bbox(-74.05, 40.68, -73.90, 40.88)
    sel = TileSelection(TMS, WEB_MERCATOR, 10, 12, nyc)
    expected = {tms_key(t.x, t.y, t.z, "") for t in mercantile.tiles(*nyc, zooms=[10, 11, 12])}
    ring = set()
    for z in (10, 11, 12):
        ul = mercantile.tile(nyc.left, nyc.top, z)
        lr = mercantile.tile(nyc.right, nyc.bottom, z)
        for x in range(ul.x - 1, lr.x + 2):
            for y in range(ul.y - 1, lr.y + 2):
                ring.add(tms_key(x, y, z, ""))
    chosen = {key for key in ring if sel.selects(key)}
    assert chosen == expected
    assert len(ring - chosen) > 0


def test_tile_touching_the_bbox_edge_is_not_selected():
    # The zoom-1 tile west of lon 0 only touches a box that starts at lon 0.
    sel = TileSelection(TMS, WEB_MERCATOR, 1, 1, Bbox(0.0, 10.0, 10.0, 20.0))
    assert sel.selects(tms_key(1, 0, 1, "")) is True
    assert sel.selects(tms_key(0, 0, 1, "")) is False


def test_bbox_on_a_geodetic_grid():
    sel = TileSelection(TMS, GLOBAL_GEODETIC, 0, 0, Bbox(10, 10, 20, 20))
    assert sel.selects("0/1/0.png") is True  # eastern half
    assert sel.selects("0/0/0.png") is False


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_zoom": 5, "max_zoom": 4},
        {"max_zoom": 30},
        {"bbox": Bbox(10, 0, 5, 1)},
        {"bbox": Bbox(0, 0, 1, 95)},
        {"bbox": Bbox(0, 0, 0, 1)},
    ],
)
def test_bad_selections_are_refused(kwargs):
    with pytest.raises(purge.InvalidSelection):
        TileSelection(TMS, WEB_MERCATOR, **kwargs)


def test_listing_prefixes_per_zoom_where_the_layout_allows():
    assert purge.listing_prefixes("t/", TileSelection(TMS, WEB_MERCATOR, 3, 4)) == ["t/3/", "t/4/"]
    assert purge.listing_prefixes("t/", TileSelection(ARCGIS, WEB_MERCATOR, 9, 10)) == [
        "t/L09/",
        "t/L10/",
    ]
    assert purge.listing_prefixes("t/", TileSelection(QUADKEY, WEB_MERCATOR, 3, 4)) == ["t/"]


# --- against moto -------------------------------------------------------------------------


def test_purge_a_zoom_range_in_batches_of_1000(s3):
    z5 = [tms_key(x, y, 5) for x in range(32) for y in range(32)]  # 1024 tiles
    z6 = [tms_key(x, y, 6) for x in range(40) for y in range(40)]  # 1600 tiles
    keep = [tms_key(0, 0, 4), "tiles/tilemapresource.xml", "other/5/0/0.png"]
    put(s3, z5 + z6 + keep)

    sel = TileSelection(TMS, WEB_MERCATOR, 5, 6)
    found = purge.find_tiles(s3, BUCKET, "tiles/", sel)
    assert sorted(found.keys) == sorted(z5 + z6)
    calls = count_calls(s3)
    report = purge.delete_keys(s3, BUCKET, found.keys)
    assert (report.requested, report.deleted, report.failed) == (2624, 2624, 0)
    assert calls["DeleteObjects"] == 3  # 1000 + 1000 + 624
    assert remaining(s3) == set(keep)


def test_purge_by_bbox_keeps_the_rest(s3):
    inside = [tms_key(t.x, t.y, t.z) for t in mercantile.tiles(-74.0, 40.7, -73.95, 40.75, [12])]
    outside = [tms_key(t.x, t.y, t.z) for t in mercantile.tiles(2.3, 48.85, 2.35, 48.87, [12])]
    put(s3, inside + outside)
    sel = TileSelection(TMS, WEB_MERCATOR, 12, 12, Bbox(-74.0, 40.7, -73.95, 40.75))
    found = purge.find_tiles(s3, BUCKET, "tiles/", sel)
    purge.delete_keys(s3, BUCKET, found.keys)
    assert remaining(s3) == set(outside)
    assert found.listed == len(inside) + len(outside)


def test_find_lists_only_the_selected_zoom_prefixes(s3):
    put(s3, [tms_key(0, 0, z) for z in range(8)])
    calls = count_calls(s3)
    found = purge.find_tiles(s3, BUCKET, "tiles/", TileSelection(TMS, WEB_MERCATOR, 2, 3))
    assert calls["ListObjectsV2"] == 2
    assert found.listed == 2 and len(found.keys) == 2


def test_arcgis_layer_purge(s3):
    keys = ["arc/L03/R00000002/C00000005.png", "arc/L04/R00000002/C00000005.png"]
    put(s3, keys)
    found = purge.find_tiles(s3, BUCKET, "arc/", TileSelection(ARCGIS, WEB_MERCATOR, 3, 3))
    assert found.keys == keys[:1]


def test_partial_errors_are_counted(s3):
    put(s3, ["tiles/0/0/0.png", "tiles/1/0/0.png"])

    class Partial:
        def __getattr__(self, name):
            return getattr(s3, name)

        def delete_objects(self, Bucket, Delete):  # noqa: N803 - boto3's names
            first, *rest = Delete["Objects"]
            s3.delete_objects(Bucket=Bucket, Delete={"Objects": rest, "Quiet": True})
            return {"Errors": [{"Key": first["Key"], "Code": "AccessDenied", "Message": "no"}]}

    report = purge.delete_keys(Partial(), BUCKET, ["tiles/0/0/0.png", "tiles/1/0/0.png"])
    assert (report.deleted, report.failed) == (1, 1)
    assert report.failures == [("tiles/0/0/0.png", "AccessDenied no")]


def test_batch_size_above_1000_is_refused(s3):
    with pytest.raises(purge.InvalidSelection):
        purge.delete_keys(s3, BUCKET, ["a"], batch_size=1001)


def test_listing_a_missing_bucket_fails(s3):
    with pytest.raises(purge.ListingFailed, match="NoSuchBucket"):
        purge.find_tiles(s3, "no-such-bucket", "tiles/", TileSelection(TMS, WEB_MERCATOR, 0, 0))
