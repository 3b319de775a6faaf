"""Tile formats: the ONE table of what a format is called where.

A layer's tiles have a format (``png``, ``png8`` or ``jpeg``); each format has a file
extension in keys and URLs, a media type (the tile's Content-Type), the FORMAT a WMS
is asked for and the name ArcGIS documents give it. Bytes are recognised by their
first bytes (:func:`sniff`), never by a name, and a tile's ETag is S3's: the quoted
MD5 of its bytes. Everything here is pure.

>>> TILE_FORMATS["png8"].wms_format, TILE_FORMATS["jpeg"].extension
('image/png; mode=8bit', 'jpg')
>>> sniff_content_type(b"\\x89PNG\\r\\n\\x1a\\n....")
'image/png'
"""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "EXTENSIONS",
    "GENERIC_CONTENT_TYPES",
    "JPEG_QUALITY",
    "TILE_FORMATS",
    "TileFormat",
    "content_type_for",
    "esri_formats",
    "etag_of",
    "families_of",
    "family_label",
    "for_extension",
    "media_type",
    "own_extension",
    "sniff",
    "sniff_content_type",
]


@dataclass(frozen=True)
class TileFormat:
    """How a layer's tiles are encoded: `png` (full colour), `png8` (palette), `jpeg`."""

    name: str
    extension: str  # in keys and URLs
    media_type: str  # Content-Type of the tile
    wms_format: str  # the WMS FORMAT parameter asked for
    esri_name: str  # ArcGIS tileInfo.format and supportedImageFormatTypes


TILE_FORMATS: dict[str, TileFormat] = {
    "png": TileFormat("png", "png", "image/png", "image/png", "PNG32"),
    "png8": TileFormat("png8", "png", "image/png", "image/png; mode=8bit", "PNG8"),
    "jpeg": TileFormat("jpeg", "jpg", "image/jpeg", "image/jpeg", "JPEG"),
}

#: Tile file extensions the service understands, and the media type of each.
EXTENSIONS: dict[str, str] = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg"}

#: The JPEG quality tiles are encoded with by default; ArcGIS documents report it.
JPEG_QUALITY = 90

#: Content types that say nothing about the bytes; a reader sniffs them instead.
GENERIC_CONTENT_TYPES = frozenset({"", "binary/octet-stream", "application/octet-stream"})

# Image families by their first bytes, and their media types and names.
_MEDIA_BY_FAMILY = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "tiff": "image/tiff",
}
_LABELS = {"png": "PNG", "jpeg": "JPEG", "gif": "GIF", "webp": "WebP", "tiff": "TIFF"}
# The families a WMS FORMAT may answer with.
_FAMILIES_BY_MIME = {
    "image/png": ("png",),
    "image/png8": ("png",),
    "image/png24": ("png",),
    "image/png32": ("png",),
    "image/x-png": ("png",),
    "image/jpeg": ("jpeg",),
    "image/jpg": ("jpeg",),
    "image/pjpeg": ("jpeg",),
    # MapServer/MapProxy "mixed" formats: JPEG where opaque, PNG where transparent.
    "image/vnd.jpeg-png": ("jpeg", "png"),
    "image/vnd.jpeg-png8": ("jpeg", "png"),
    "image/gif": ("gif",),
    "image/webp": ("webp",),
    "image/tiff": ("tiff",),
    "image/geotiff": ("tiff",),
}


def for_extension(own: TileFormat, ext: str) -> TileFormat:
    """The encoding of a layer's tiles with extension ``ext``, when the layer's own
    format is ``own`` (png8 layers keep their palette for ``.png``)."""
    if ext == own.extension or (own.extension == "jpg" and ext == "jpeg"):
        return own
    return TILE_FORMATS["jpeg" if ext in ("jpg", "jpeg") else ext]


def own_extension(own: TileFormat, served: Iterable[str]) -> str:
    """The extension of format ``own`` among the ``served`` extensions (``jpeg`` when a
    jpeg layer serves ``jpeg`` but not ``jpg``), else the format's own."""
    served = tuple(served)
    if own.extension in served:
        return own.extension
    same = (ext for ext in served if EXTENSIONS.get(ext) == own.media_type)
    return next(same, own.extension)


def media_type(wms_format: str) -> str:
    """The Content-Type of a tile asked as this WMS FORMAT: without parameters.

    >>> media_type("image/png; mode=8bit")
    'image/png'
    """
    return wms_format.split(";", 1)[0].strip()


def esri_formats(own: TileFormat, served: Iterable[str]) -> str:
    """Esri's names of the image formats a layer serves (``supportedImageFormatTypes``),
    its own first: ``JPG`` for jpeg extensions, else its PNG flavour."""
    png = own.esri_name if own.name.startswith("png") else TILE_FORMATS["png"].esri_name
    names = ("JPG" if ext in ("jpg", "jpeg") else png for ext in served)
    return ",".join(dict.fromkeys(names))


def sniff(data: bytes) -> str | None:
    """The image family (png, jpeg, gif, webp, tiff) from the first bytes, or None.

    Recognises PNG, JPEG, GIF, WebP and TIFF (classic and BigTIFF, both byte orders).
    """
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    return None


def sniff_content_type(data: bytes) -> str | None:
    """The image media type announced by the first bytes of ``data``, or None.

    >>> sniff_content_type(b"<ServiceExceptionReport>") is None
    True
    """
    family = sniff(data)
    return None if family is None else _MEDIA_BY_FAMILY[family]


def content_type_for(data: bytes, name: str) -> str:
    """The Content-Type of a tile file: sniffed from the bytes (PNG, JPEG, GIF, WebP,
    TIFF), else guessed from the file name, else ``application/octet-stream``."""
    return sniff_content_type(data) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def families_of(image_format: str) -> tuple[str, ...]:
    """The image families a WMS FORMAT (``image/png; mode=8bit``) may answer with;
    every family for a FORMAT this table does not know."""
    return _FAMILIES_BY_MIME.get(media_type(image_format).lower(), tuple(_LABELS))


def family_label(family: str) -> str:
    """How people write a family: ``PNG``, ``JPEG``, ``GIF``, ``WebP``, ``TIFF``."""
    return _LABELS[family]


def etag_of(data: bytes) -> str:
    """The ETag S3 gives a single-part upload: the quoted MD5 hex of the bytes."""
    return '"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"'
