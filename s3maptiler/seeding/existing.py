"""Which tiles a store already holds, from one ListObjectsV2 listing per key
"directory", shared by every metatile of a run (``--skip-existing``), or holds since
a moment (``--refresh-older-than``: older tiles are drawn again)."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path

from s3maptiler.storage.s3 import list_objects
from s3maptiler.storage.stores import LocalStore, S3Store, TileStore


def _listing_prefix(keys: Sequence[str], layer_prefix: str) -> str:
    """The prefix to list for these keys: their common "directory" when they share one
    below the layer's prefix, else their longest common prefix (quadkeys)."""
    directories = {key.rsplit("/", 1)[0] + "/" for key in keys if "/" in key}
    if len(directories) == 1 and len(keys) == len([k for k in keys if "/" in k]):
        directory = directories.pop()
        if len(directory) > len(layer_prefix):
            return directory
    return os.path.commonprefix(list(keys))


class ListingCache:
    """Which keys exist in a store, from one listing per prefix, shared by threads.

    S3 stores are listed with ListObjectsV2 (each prefix once per cache); a local
    directory is asked per file (a stat, no network); any other store per tile.
    With ``stored_since`` (seconds since the epoch) only keys written at or after it
    count: S3's LastModified, a file's modification time (another store cannot tell
    and counts every key it holds).
    """

    def __init__(self, store: TileStore, stored_since: float | None = None) -> None:
        self.store = store
        self.stored_since = stored_since
        self.listings = 0  # ListObjectsV2 pages requested
        self._lock = threading.Lock()
        self._prefixes: dict[str, Future] = {}

    def existing(self, keys: Sequence[str], layer_prefix: str) -> set[str]:
        """The subset of ``keys`` already stored. Raises StoreError."""
        if not keys:
            return set()
        if isinstance(self.store, LocalStore):
            return {k for k in keys if self._young_file(self.store.path_for(k))}
        if not isinstance(self.store, S3Store):
            return {k for k in keys if self.store.get(k) is not None}
        groups: dict[str, list[str]] = {}
        for key in keys:
            directory = key.rsplit("/", 1)[0] + "/" if "/" in key else ""
            groups.setdefault(directory, []).append(key)
        found: set[str] = set()
        for group in groups.values():
            listed = self._listed(_listing_prefix(group, layer_prefix))
            found.update(k for k in group if k in listed)
        return found

    def _listed(self, prefix: str) -> frozenset[str]:
        with self._lock:
            future = self._prefixes.get(prefix)
            owner = future is None
            if owner:
                future = self._prefixes[prefix] = Future()
        if not owner:
            return future.result()
        try:
            keys = self._list(prefix)
        except BaseException as exc:
            with self._lock:
                self._prefixes.pop(prefix, None)  # a later metatile may try again
            future.set_exception(exc)
            raise
        future.set_result(keys)
        return keys

    def _count_page(self, _count: int) -> None:
        with self._lock:
            self.listings += 1

    def _young_file(self, path: Path) -> bool:
        try:
            modified = path.stat().st_mtime
        except OSError:
            return False
        return path.is_file() and (self.stored_since is None or modified >= self.stored_since)

    def _list(self, prefix: str) -> frozenset[str]:
        store = self.store
        assert isinstance(store, S3Store)
        since = self.stored_since
        listing = list_objects(
            store.client, store.bucket, prefix, self._count_page, timestamps=since is not None
        )
        if since is None:
            return frozenset(obj["Key"] for obj in listing)
        return frozenset(o["Key"] for o in listing if o["LastModified"].timestamp() >= since)
