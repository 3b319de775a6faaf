"""Shared blank tiles: the ``empty_tiles = "redirect"`` policy's bookkeeping.

A uniform tile (one colour, or fully transparent) of such a layer is stored as a
zero-byte object that redirects to one shared copy, ``<prefix>_blank/<md5>.<ext>``
(the key is the layer's, :meth:`s3maptiler.render.runtime.LayerRuntime.blank_key`).
This module decides which uploads store a tile, so the service and seeding write
blanks the same way.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict

from s3maptiler.storage.uploads import UploadJob

__all__ = ["BLANKS_REMEMBERED", "SharedBlanks"]

# Blank keys remembered as stored; more are forgotten oldest first (and re-uploaded once).
BLANKS_REMEMBERED = 1024


class SharedBlanks:
    """The ``empty_tiles = "redirect"`` policy of every layer, for one process.

    A uniform tile is stored as a zero-byte object redirecting to
    ``<prefix>_blank/<md5>.<ext>``, one shared copy of the same bytes. A pointer is
    only ever written once that blank is known to be stored (its own upload reported
    "stored" or "exists"); until then uniform tiles are stored in full, so a lost
    or dropped blank upload never leaves pointers to a missing object.
    """

    def __init__(self, remembered: int = BLANKS_REMEMBERED):
        self._lock = threading.Lock()
        self._stored: OrderedDict[str, None] = OrderedDict()
        self._uploading: set[str] = set()
        self._remembered = remembered

    def jobs(self, own: UploadJob, blank: str | None) -> list[UploadJob]:
        """The uploads that store `own`: itself, or, when its bytes are the shared
        blank at key `blank`, a pointer to that blank once it is known to be stored,
        and until then itself (after the blank's own upload, the first time)."""
        if blank is None:
            return [own]
        with self._lock:
            if blank in self._stored:
                self._stored.move_to_end(blank)
                return [dataclasses.replace(own, redirect_to=blank)]
            first = blank not in self._uploading
            self._uploading.add(blank)
        if not first:
            return [own]
        # The shared blank is the same bytes whatever the tile's lifetime: it never
        # expires (the tiles that point to it do).
        return [dataclasses.replace(own, key=blank, expires=None), own]

    def settled(self, job: UploadJob, outcome: str) -> None:
        """An upload ended (the upload pool's on_result): remember blanks that are stored."""
        with self._lock:
            if job.key not in self._uploading:
                return
            self._uploading.discard(job.key)
            if outcome in ("stored", "exists"):
                self._stored[job.key] = None
                while len(self._stored) > self._remembered:
                    self._stored.popitem(last=False)
