"""The tile path's side of ``cache_from_wms``: which headers a tile is answered with,
and whether a stored tile has expired.

A layer without the setting answers every tile with its fixed ``cache_control`` and
nothing else, as before; each function here returns that at once. A layer with it
gives each render the lifetime its WMS's answer allows
(:mod:`s3maptiler.render.freshness`, which also says how a tile is stored), answers
with the seconds left, and renders a stored tile again once its Expires has passed:
a miss to the service. The website endpoint serves what the bucket holds, expired or
not; ``seed --refresh-older-than`` renews those.
"""

from __future__ import annotations

import time

from s3maptiler.config import Layer
from s3maptiler.render.freshness import Freshness
from s3maptiler.storage.stores import StoredTile

__all__ = ["answer_headers", "expired", "of_expires"]


def of_expires(layer: Layer, expires: float | None) -> Freshness | None:
    """The lifetime of a tile stored or queued with an ``Expires`` (seconds since the
    epoch), when the layer honours one."""
    if expires is None or not layer.cache_from_wms:
        return None
    return Freshness(expires)


def expired(layer: Layer, stored: StoredTile) -> bool:
    """Whether a stored tile's lifetime has passed: it is then rendered again and
    overwritten, as if it were missing."""
    if not layer.cache_from_wms or stored.expires is None:
        return False
    return stored.expires <= time.time()


def answer_headers(layer: Layer, fresh: Freshness | None) -> tuple[str, float | None]:
    """``(Cache-Control, Expires)`` of an answer: the layer's fixed Cache-Control and
    no Expires, or the lifetime left (none for an answer no shared cache may keep)."""
    if fresh is None:
        return layer.cache_control, None
    return fresh.cache_control(time.time()), fresh.expires_at if fresh.shared else None
