"""Zooms answered from a PMTiles archive: a layer's ``pmtiles`` (a key in the bucket,
``s3://bucket/key``, or a local path) and ``pmtiles_zooms``.

A finished, cold zoom range lives as one archive (``s3maptiler export``) instead of
millions of objects; the service reads its tiles with ranged GETs (the header and
directories once, then one range per tile) and answers them without a GetMap and
without storing them again. A tile the archive lacks, or an archive that cannot be
read, takes the usual path (store, render): the archive is a shortcut, never an outage.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from s3maptiler.archives.common import ArchiveError
from s3maptiler.archives.pmtiles import PMTilesReader
from s3maptiler.config import Layer
from s3maptiler.storage.s3 import StoreError
from s3maptiler.storage.stores import LocalStore, S3Store, TileStore
from s3maptiler.tiles.grids import Tile

log = logging.getLogger(__name__)

# Seconds before an archive that could not be opened is tried again.
RETRY_AFTER = 30.0


def _s3_range(client: Any, bucket: str, key: str) -> Callable[[int, int], bytes]:
    def read(offset: int, length: int) -> bytes:
        answer = client.get_object(
            Bucket=bucket, Key=key, Range=f"bytes={offset}-{offset + length - 1}"
        )
        return answer["Body"].read()

    return read


def _file_range(path: Path) -> Callable[[int, int], bytes]:
    def read(offset: int, length: int) -> bytes:
        with open(path, "rb") as f:
            return os.pread(f.fileno(), length, offset)

    return read


class ArchivedZooms:
    """The PMTiles readers of the layers that name an archive, opened on first use."""

    def __init__(self, store: TileStore, s3_client: Any = None) -> None:
        self.store = store
        self.s3_client = s3_client if s3_client is not None else getattr(store, "client", None)
        self._readers: dict[str, PMTilesReader] = {}
        self._failed: dict[str, float] = {}
        self._lock = threading.Lock()

    def serves(self, layer: Layer, tile: Tile) -> bool:
        """Whether the layer's archive answers this tile's zoom (1x tiles only)."""
        zooms = layer.pmtiles_zooms
        return zooms is not None and layer.pixel_ratio == 1 and zooms[0] <= tile.z <= zooms[1]

    def tile(self, layer: Layer, tile: Tile) -> bytes | None:
        """The tile from the layer's archive; None when it lacks it or cannot be read."""
        reader = self._reader(layer.pmtiles or "")
        if reader is None:
            return None
        try:
            return reader.tile(tile)
        except (ClientError, BotoCoreError, OSError, ValueError) as exc:
            log.warning(
                "archive read failed, drawing instead archive=%s reason=%s", layer.pmtiles, exc
            )
            return None

    def _reader(self, name: str) -> PMTilesReader | None:
        with self._lock:
            reader = self._readers.get(name)
            if reader is not None:
                return reader
            failed = self._failed.get(name)
        if failed is not None and time.monotonic() - failed < RETRY_AFTER:
            return None
        try:
            reader = PMTilesReader(self._range_reader(name))
        except (ClientError, BotoCoreError, OSError, ValueError, ArchiveError, StoreError) as exc:
            log.warning("cannot open archive=%s reason=%s; drawing its zooms instead", name, exc)
            with self._lock:
                self._failed[name] = time.monotonic()
            return None
        with self._lock:
            self._readers.setdefault(name, reader)
            return self._readers[name]

    def _range_reader(self, name: str) -> Callable[[int, int], bytes]:
        if name.startswith("s3://"):
            bucket, _, key = name[5:].partition("/")
            if self.s3_client is None:
                raise ValueError(f"{name}: no S3 client (BUCKET_NAME is unset)")
            return _s3_range(self.s3_client, bucket, key)
        if isinstance(self.store, S3Store):
            return _s3_range(self.store.client, self.store.bucket, name)
        path = Path(name)
        if not path.is_absolute() and isinstance(self.store, LocalStore):
            path = self.store.path_for(name)
        return _file_range(path)
