"""The wire format of a finished render: :class:`RenderedTiles`.

Every tile of one metatile, encoded, as one blob: what a render hands to whoever
waited for it on this host (:mod:`s3maptiler.service.spool`) and in the fleet
(:mod:`s3maptiler.service.leases`). A lease's bare record is the same header line
without tiles (:func:`read_header`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from s3maptiler.render.freshness import Freshness
from s3maptiler.tiles.grids import Tile

__all__ = ["BadBundle", "RenderedTiles", "read_header"]


class BadBundle(ValueError):
    """Bytes that are not a :class:`RenderedTiles` (truncated, or another format)."""


@dataclass(frozen=True)
class RenderedTiles:
    """Every tile of one metatile, encoded: what a render hands to whoever waited for it.

    ``to_bytes`` is one JSON header line (content type, each tile's x, y, z and byte
    length, the lifetime when there is one, and any ``fields`` the caller adds), then
    the tiles' bytes back to back.
    """

    content_type: str
    tiles: dict[Tile, bytes]
    freshness: Freshness | None = None  # from the WMS's cache headers (cache_from_wms)

    def to_bytes(self, **fields: object) -> bytes:
        index = [[tile.x, tile.y, tile.z, len(data)] for tile, data in self.tiles.items()]
        header = {**fields, "content_type": self.content_type, "tiles": index}
        if self.freshness is not None:
            header["freshness"] = dataclasses.astuple(self.freshness)
        return (
            json.dumps(header, separators=(",", ":")).encode()
            + b"\n"
            + b"".join(self.tiles.values())
        )

    @classmethod
    def from_bytes(cls, blob: bytes) -> tuple[RenderedTiles, dict]:
        """The tiles and the header's other fields; raises BadBundle."""
        header, body = read_header(blob)
        try:
            tiles: dict[Tile, bytes] = {}
            offset = 0
            for x, y, z, length in header["tiles"]:
                tiles[Tile(x, y, z)] = body[offset : offset + length]
                offset += length
            content_type = header["content_type"]
            fresh = header.get("freshness")
            freshness = None if fresh is None else Freshness(*fresh)
        except (KeyError, TypeError, ValueError) as exc:
            raise BadBundle(f"bundle header incomplete: {exc}") from None
        if offset != len(body):
            raise BadBundle(f"bundle has {len(body)} bytes of tiles, header says {offset}")
        return cls(content_type, tiles, freshness), header


def read_header(blob: bytes) -> tuple[dict, bytes]:
    """The JSON header line of a bundle (or of a bare lease record) and the rest."""
    line, _, body = blob.partition(b"\n")
    try:
        header = json.loads(line)
    except ValueError:
        raise BadBundle("bundle header is not JSON") from None
    if not isinstance(header, dict):
        raise BadBundle("bundle header is not an object")
    return header, body
