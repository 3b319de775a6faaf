"""The one recipe from a rendered tile to its store writes, for the service and seeding.

A rendered tile becomes the objects that store it: its ``Cache-Control`` and
``Expires`` (the layer's fixed Cache-Control, or the lifetime its WMS gave it:
:mod:`s3maptiler.render.freshness`; nothing at all when the WMS forbade shared
caches to keep it), its Content-Type, whether it replaces what is stored, and under
the layer's ``empty_tiles = "redirect"`` policy a pointer to the shared blank
(:mod:`s3maptiler.storage.blanks`). Only the writing differs: the service queues each
object on its upload pool (``"queued"``, settled by the pool when it is written),
seeding writes it at once (``"stored"``, ``"exists"``). A new step after the render
goes here, once.
"""

from __future__ import annotations

from collections.abc import Callable

from s3maptiler.render.encode import SlicedTile
from s3maptiler.render.freshness import Freshness, stored_headers
from s3maptiler.render.runtime import LayerRuntime
from s3maptiler.storage.blanks import SharedBlanks
from s3maptiler.storage.stores import TileObject

__all__ = ["QUEUED", "UNCACHED", "TileWrites"]

#: What a write that will happen later says: its blank bookkeeping is settled by the
#: upload pool's ``on_result`` when the object is written.
QUEUED = "queued"
#: The outcome of a tile its WMS forbade shared caches to keep (no-store, private).
UNCACHED = "uncached"


class TileWrites:
    """The store writes of one render's tiles: one layer, one format, one lifetime.

    `replace`: write over what is stored (a refresh). A layer with ``cache_from_wms``
    always does: each render carries a new lifetime, and ``If-None-Match`` would refuse
    to replace an expired tile.
    """

    __slots__ = ("_blanks", "_headers", "_replace", "ext", "runtime")

    def __init__(
        self,
        runtime: LayerRuntime,
        ext: str,
        fresh: Freshness | None,
        blanks: SharedBlanks,
        replace: bool = False,
    ):
        self.runtime = runtime
        self.ext = ext
        self._blanks = blanks
        self._headers = stored_headers(runtime.layer.cache_control, fresh)
        self._replace = replace or runtime.layer.cache_from_wms

    @property
    def storable(self) -> bool:
        """False when the WMS forbade shared caches to keep these tiles."""
        return self._headers is not None

    def write(self, key: str, piece: SlicedTile, write: Callable[[TileObject], str]) -> str:
        """Store `piece` under `key` through `write` (one object in, its outcome out),
        with the shared blank first when the tile is one; returns the outcome of the
        tile's own object, or "uncached" when nothing may be stored."""
        if self._headers is None:
            return UNCACHED
        cache_control, expires = self._headers
        runtime, ext = self.runtime, self.ext
        own = TileObject(
            key,
            piece.data,
            runtime.content_type(ext, piece.data),
            cache_control,
            expires=expires,
            overwrite=self._replace,
        )
        outcome = UNCACHED
        for obj in self._blanks.jobs(own, runtime.blank_key(ext, piece)):
            result = write(obj)
            if result != QUEUED:
                self._blanks.settled(obj, result)
            if obj.key == key:
                outcome = result
        return outcome
