"""The one recipe from a rendered tile to its store writes (render/tilewrites.py): what
the service's upload queue and seeding both write, held here once for both."""

from __future__ import annotations

from s3maptiler.config import Layer
from s3maptiler.render.encode import SlicedTile
from s3maptiler.render.freshness import Freshness
from s3maptiler.render.runtime import LayerRuntime
from s3maptiler.render.tilewrites import QUEUED, UNCACHED, TileWrites
from s3maptiler.storage.blanks import SharedBlanks
from s3maptiler.storage.stores import TileObject
from s3maptiler.tiles.grids import Tile
from s3maptiler.tiles.tilemath import extent_excludes, overlaps

PNG = b"\x89PNG\r\n\x1a\n" + b"tile"
KEY = "tiles/3/1/2.png"


def runtime(**changes) -> LayerRuntime:
    values = dict(
        name="demo",
        wms_url="http://127.0.0.1:9/wms",
        wms_layers="demo",
        formats=("png",),
        cache_control="public, max-age=60",
    )
    return LayerRuntime.build(Layer(**{**values, **changes}))


class Sink:
    """A write function that answers `outcome` and keeps what it was given."""

    def __init__(self, outcome: str) -> None:
        self.outcome = outcome
        self.objects: list[TileObject] = []

    def __call__(self, obj: TileObject) -> str:
        self.objects.append(obj)
        return self.outcome


def test_a_tile_is_written_with_the_layers_headers_and_its_content_type():
    sink = Sink("stored")
    writes = TileWrites(runtime(), "png", None, SharedBlanks())
    assert writes.write(KEY, SlicedTile(PNG, False), sink) == "stored"
    (obj,) = sink.objects
    assert (obj.key, obj.data, obj.content_type) == (KEY, PNG, "image/png")
    assert (obj.cache_control, obj.expires, obj.redirect_to, obj.overwrite) == (
        "public, max-age=60",
        None,
        None,
        False,
    )


def test_a_lifetime_from_the_wms_is_stored_as_expires_and_replaces_what_is_there():
    sink = Sink(QUEUED)
    writes = TileWrites(runtime(cache_from_wms=True), "png", Freshness(2e9), SharedBlanks())
    writes.write(KEY, SlicedTile(PNG, False), sink)
    (obj,) = sink.objects
    assert (obj.cache_control, obj.expires, obj.overwrite) == ("public", 2e9, True)


def test_a_refresh_replaces_tiles_of_a_layer_without_lifetimes():
    sink = Sink("stored")
    TileWrites(runtime(), "png", None, SharedBlanks(), replace=True).write(
        KEY, SlicedTile(PNG, False), sink
    )
    assert sink.objects[0].overwrite is True


def test_nothing_is_written_when_the_wms_forbids_shared_caches():
    sink = Sink("stored")
    private = Freshness(0.0, shared=False, directive="private")
    writes = TileWrites(runtime(cache_from_wms=True), "png", private, SharedBlanks())
    assert not writes.storable
    assert writes.write(KEY, SlicedTile(PNG, True), sink) == UNCACHED
    assert sink.objects == []


def test_uniform_tiles_point_to_one_shared_blank_once_it_is_stored():
    blanks = SharedBlanks()
    writes = TileWrites(runtime(empty_tiles="redirect"), "png", None, blanks)
    first, second = Sink("stored"), Sink("stored")
    assert writes.write(KEY, SlicedTile(PNG, True), first) == "stored"
    blank, own = first.objects
    assert blank.key.startswith("tiles/_blank/") and own.key == KEY and own.redirect_to is None
    # Written at once (seeding): the blank is settled as stored, the next is a pointer.
    assert writes.write("tiles/3/1/3.png", SlicedTile(PNG, True), second) == "stored"
    (pointer,) = second.objects
    assert pointer.redirect_to == blank.key


def test_a_queued_blank_is_left_to_the_upload_pool_to_settle():
    blanks = SharedBlanks()
    writes = TileWrites(runtime(empty_tiles="redirect"), "png", None, blanks)
    queued, later = Sink(QUEUED), Sink(QUEUED)
    writes.write(KEY, SlicedTile(PNG, True), queued)
    writes.write("tiles/3/1/3.png", SlicedTile(PNG, True), later)
    # Not known stored yet: the second tile is stored whole, not as a pointer.
    assert [obj.redirect_to for obj in later.objects] == [None]
    blanks.settled(queued.objects[0], "stored")  # the pool's on_result
    pointed = Sink(QUEUED)
    writes.write("tiles/3/1/4.png", SlicedTile(PNG, True), pointed)
    assert pointed.objects[0].redirect_to == queued.objects[0].key


def test_a_dropped_blank_is_settled_so_it_is_tried_again():
    blanks = SharedBlanks()
    writes = TileWrites(runtime(empty_tiles="redirect"), "png", None, blanks)
    assert writes.write(KEY, SlicedTile(PNG, True), Sink("dropped")) == "dropped"
    retry = Sink(QUEUED)
    writes.write("tiles/3/1/3.png", SlicedTile(PNG, True), retry)
    assert [obj.key for obj in retry.objects][0].startswith("tiles/_blank/")


def test_box_tests_share_more_than_an_edge():
    assert overlaps((0, 0, 10, 10), (5, 5, 15, 15))
    assert not overlaps((0, 0, 10, 10), (10, 0, 20, 10))  # an edge only
    grid = runtime().grid
    assert not extent_excludes(grid, Tile(0, 0, 1), None)
    assert extent_excludes(grid, Tile(1, 0, 1), (-180.0, -85.0, 0.0, 85.0))  # touches at 0
    assert not extent_excludes(grid, Tile(0, 0, 1), (-180.0, -85.0, 0.0, 85.0))
