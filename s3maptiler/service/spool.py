"""Single flight among the workers of one host: a lock per metatile and a spool.

gunicorn's workers are separate processes. Before a worker renders a metatile it
takes that metatile's lock; a worker that finds it taken waits, and reads the
finished render from the spool directory as soon as the leader publishes it, as
MapProxy's workers share renders through file locks. In short, per metatile:
lock, re-check the spool, render, publish, unlock.

- The locks are POSIX record locks (``lockf``) on one byte each of ONE lock file,
  at an offset taken from the metatile's id: nothing to create or clean up per
  metatile, no false sharing, and the kernel releases a dead worker's locks.
  Record locks belong to a process, so two threads of one process must never lead
  the same metatile: the service's in-process single flight sees to that.
- The spool holds each finished render (:class:`~s3maptiler.service.bundle.RenderedTiles`)
  as one file, replaced atomically, valid for ``ttl`` seconds: long enough for the
  uploads to land, so a worker whose store read raced them finds the render here.
- A leader that fails leaves a failure record: workers that were already waiting
  answer with the same error instead of asking a failing WMS again; later
  requests ignore it and try afresh.

The directory must be local to the host and shared by its workers (the default is
under ``/dev/shm`` where it exists). Separate hosts share renders through
:mod:`s3maptiler.service.leases`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from s3maptiler.service.bundle import BadBundle, RenderedTiles, read_header
from s3maptiler.service.singleflight import WaitTimeout, failure_record, from_record

log = logging.getLogger(__name__)

DEFAULT_TTL = 30.0  # seconds a published render is served from the spool
_FIRST_POLL = 0.002  # seconds; the wait between polls doubles up to _LAST_POLL
_LAST_POLL = 0.05


@dataclass
class Turn:
    """The outcome of asking for a metatile's turn: the render another worker
    published (`found`), or the lock (`held`), which must then be released."""

    found: RenderedTiles | None = None
    held: bool = False
    _release: object = None

    def release(self) -> None:
        if self.held and self._release is not None:
            self._release()
            self.held = False


class Spool:
    """Locks and finished renders shared by the processes of one host."""

    def __init__(self, directory: Path, ttl: float = DEFAULT_TTL):
        self.directory = Path(directory)
        self.ttl = ttl
        self._fd: int | None = None
        self._pid = 0
        self._fd_lock = threading.Lock()
        self._last_sweep = 0.0
        self._broken = False

    # --------------------------------------------------------------- the lock

    def _lock_fd(self) -> int:
        # One descriptor per process for its whole life: closing any descriptor of the
        # lock file would drop every record lock this process holds on it.
        pid = os.getpid()
        with self._fd_lock:
            if self._fd is None or self._pid != pid:
                self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._fd = os.open(self.directory / "locks", os.O_RDWR | os.O_CREAT, 0o600)
                self._pid = pid
            return self._fd

    @staticmethod
    def _offset(flight: str) -> int:
        return int(flight[:12], 16)  # 48 bits of the id's hash: collisions are negligible

    def _try_lock(self, flight: str) -> bool:
        try:
            fcntl.lockf(self._lock_fd(), fcntl.LOCK_EX | fcntl.LOCK_NB, 1, self._offset(flight))
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                return False
            raise
        return True

    def _unlock(self, flight: str) -> None:
        with contextlib.suppress(OSError):
            fcntl.lockf(self._lock_fd(), fcntl.LOCK_UN, 1, self._offset(flight))

    def turn(self, flight: str, deadline: float, since: float | None = None) -> Turn:
        """Wait (until the monotonic `deadline`) for the metatile `flight` (a hex id):
        its render if another worker publishes one, else its lock.

        Raises the failure of a leader that failed after `since` (wall clock; default
        now: when the caller began to wait), or WaitTimeout.
        A spool that cannot be used (unwritable directory) is logged once and every
        caller leads: the host then draws a metatile once per worker at worst.
        """
        if self._broken:
            return Turn(held=True)
        waiting_since = time.time() if since is None else since
        pause = _FIRST_POLL
        try:
            while True:
                if self._try_lock(flight):
                    found = self._read(flight, failures_since=None)
                    if isinstance(found, RenderedTiles):
                        self._unlock(flight)  # re-check: published while we polled
                        return Turn(found=found)
                    return Turn(held=True, _release=lambda: self._unlock(flight))
                found = self._read(flight, failures_since=waiting_since)
                if isinstance(found, RenderedTiles):
                    return Turn(found=found)
                if found is not None:
                    raise found
                if time.monotonic() >= deadline:
                    raise WaitTimeout("waited too long for another worker's render")
                time.sleep(pause)
                pause = min(pause * 2, _LAST_POLL)
        except OSError as exc:
            self._broken = True
            log.warning("spool %s unusable, workers render alone: %s", self.directory, exc)
            return Turn(held=True)

    def peek(self, flight: str) -> RenderedTiles | None:
        """A fresh render of `flight` published on this host, else None (no lock taken)."""
        found = self._read(flight, None)
        return found if isinstance(found, RenderedTiles) else None

    # --------------------------------------------------------------- the spool

    def _path(self, flight: str) -> Path:
        return self.directory / flight[:2] / flight

    def _read(self, flight: str, failures_since: float | None) -> RenderedTiles | Exception | None:
        """A fresh render, a failure recorded after `failures_since` (wall clock), or None."""
        path = self._path(flight)
        try:
            with path.open("rb") as spooled:
                written = os.fstat(spooled.fileno()).st_mtime
                blob = spooled.read()
        except FileNotFoundError:
            return None
        try:
            header, _ = read_header(blob)
            if header.get("state") == "failed":
                if failures_since is None or written < failures_since:
                    return None
                return from_record(header.get("failure") or {})
            if time.time() - written > self.ttl:
                return None
            return RenderedTiles.from_bytes(blob)[0]
        except BadBundle as exc:
            log.warning("spool entry %s unreadable, ignored: %s", path, exc)
            return None

    def publish(self, flight: str, rendered: RenderedTiles) -> None:
        """Make a finished render visible to the host's other workers."""
        self._write(flight, rendered.to_bytes(state="done"))

    def publish_failure(self, flight: str, exc: BaseException) -> None:
        """Tell the workers waiting on this render that it failed, and how."""
        record = RenderedTiles("", {}).to_bytes(state="failed", failure=failure_record(exc))
        self._write(flight, record)

    def _write(self, flight: str, blob: bytes) -> None:
        if self._broken:
            return
        path = self._path(flight)
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as out:
                out.write(blob)
            os.replace(tmp, path)  # readers see the old file or the new one, whole
        except OSError as exc:
            log.warning("spool write failed for %s: %s", path, exc)
            return
        self._sweep()

    def _sweep(self) -> None:
        """Remove renders older than the TTL, at most once per TTL per process."""
        now = time.time()
        if now - self._last_sweep < self.ttl:
            return
        self._last_sweep = now
        for bucket in self.directory.iterdir():
            if not bucket.is_dir():
                continue
            for entry in os.scandir(bucket):
                with contextlib.suppress(OSError):
                    if now - entry.stat().st_mtime > self.ttl:
                        os.unlink(entry.path)
