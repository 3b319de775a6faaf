"""The files of a seed run: the journal of metatiles done (an interrupted run resumes
from it) and the failures file of metatiles that failed (replayable)."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

from s3maptiler.seeding.coverage import SeedError
from s3maptiler.seeding.plan import BadJob, MetaJob


class JournalMismatch(SeedError):
    """A journal written by another seed (layer, format, zooms or area differ)."""


def plan_signature(layer: str, ext: str, zooms: Sequence[int], coverage_digest: str) -> str:
    """Identity of a seed, written at the top of its journal."""
    zoom_text = ",".join(str(z) for z in zooms)
    return f"{layer}|{ext}|{zoom_text}|{coverage_digest}"


class Journal:
    """Metatiles done, one JSON line each after a header line naming the seed.

    Lines are flushed as they are written: a killed run loses at most the metatiles
    being drawn at that moment. A truncated last line is ignored on reading.
    """

    def __init__(self, path: Path, signature: str) -> None:
        self.path = Path(path)
        self.signature = signature
        self._lock = threading.Lock()
        self._file = None

    def done(self) -> set[tuple]:
        """Keys (layer, ext, z, x, y) of the metatiles an earlier run finished.
        Raises JournalMismatch when the file belongs to another seed."""
        if not self.path.exists():
            return set()
        done: set[tuple] = set()
        with self.path.open(encoding="utf-8") as lines:
            header = _json_line(lines.readline())
            if header is None:
                return set()
            if header.get("seed") != self.signature:
                raise JournalMismatch(
                    f"journal {self.path} belongs to another seed ({header.get('seed')!r}); "
                    "remove it or pass another --journal"
                )
            for line in lines:
                doc = _json_line(line)
                if doc is not None:
                    try:
                        done.add(MetaJob.from_dict(doc).key)
                    except BadJob:
                        continue
        return done

    def record(self, job: MetaJob) -> None:
        """Append one finished metatile."""
        line = json.dumps(job._replace(tiles=()).to_dict(), separators=(",", ":"))
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fresh = not self.path.exists() or self.path.stat().st_size == 0
                self._file = self.path.open("a", encoding="utf-8")
                if fresh:
                    self._file.write(json.dumps({"seed": self.signature}) + "\n")
            self._file.write(line + "\n")
            self._file.flush()

    def close(self, remove: bool = False) -> None:
        """Close the file; ``remove`` deletes it (the seed is complete)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
        if remove:
            self.path.unlink(missing_ok=True)


def _json_line(line: str) -> dict | None:
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def read_failures(path: Path) -> list[MetaJob]:
    """The jobs of a failures file (one JSON job per line, with an ``error``).
    Raises SeedError for a file that cannot be read or has no job in it."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SeedError(f"cannot read {path}: {exc.strerror}") from None
    jobs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        doc = _json_line(line)
        try:
            jobs.append(MetaJob.from_dict(doc))
        except BadJob as exc:
            raise SeedError(f"{path}:{number}: {exc}") from None
    return list(dict.fromkeys(jobs))


class FailureLog:
    """Failed metatiles, one JSON line each (the job and its ``error``), replayable
    with :func:`read_failures`. The file is created on the first failure only."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file = None

    def record(self, job: MetaJob, error: str) -> None:
        if self.path is None:
            return
        line = json.dumps({**job.to_dict(), "error": error}, separators=(",", ":"))
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("w", encoding="utf-8")
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
