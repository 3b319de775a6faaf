"""Tile formats: the ONE table of what a format is called where.

A layer's tiles have a format (``png``, ``png8``, ``jpeg``, ``webp`` or ``mixed``); each
format has a file extension in keys and URLs, a media type (the tile's Content-Type,
and what documents advertise), the FORMAT a WMS is asked for and the name ArcGIS
documents give it. Bytes are recognised by their first bytes (:func:`sniff`), never by
a name, and a tile's ETag is S3's: the quoted MD5 of its bytes. Everything here is pure.

Two formats are not what the WMS answers, so their tiles are always decoded and
encoded again (:attr:`TileFormat.reencoded`), even a 1x1 "metatile" without a buffer:

- ``webp``: the WMS is asked for PNG (lossless; few WMS servers write WebP) and each
  tile encoded by Pillow, lossy or lossless;
- ``mixed`` (MapProxy's name): each tile is JPEG where it is fully opaque and PNG
  where it has transparency. Its keys end in ``.mixed``, an extension that names no
  single image format, and each tile's Content-Type is that of its bytes
  (:func:`tile_content_type`): ``image/jpeg`` or ``image/png``, never a name the bytes
  contradict. Documents advertise ``image/vnd.jpeg-png``, MapServer's and GeoWebCache's
  name for "JPEG or PNG", and ArcGIS's ``MIXED``.

>>> TILE_FORMATS["png8"].wms_format, TILE_FORMATS["jpeg"].extension
('image/png; mode=8bit', 'jpg')
>>> sniff_content_type(b"\\x89PNG\\r\\n\\x1a\\n....")
'image/png'
>>> TILE_FORMATS["webp"].reencoded, TILE_FORMATS["png8"].reencoded
(True, False)
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
    "MIXED_MEDIA_TYPE",
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
    "tile_content_type",
]


@dataclass(frozen=True)
class TileFormat:
    """How a layer's tiles are encoded: `png` (full colour), `png8` (palette), `jpeg`,
    `webp`, or `mixed` (JPEG where opaque, PNG where transparent)."""

    name: str
    extension: str  # in keys and URLs
    media_type: str  # Content-Type of the tile (mixed: what documents advertise)
    wms_format: str  # the WMS FORMAT parameter asked for
    esri_name: str | None  # ArcGIS tileInfo.format; None: ArcGIS has no name for it

    @property
    def reencoded(self) -> bool:
        """Whether tiles are never the WMS's own bytes: the WMS is asked for another
        format (webp, mixed), so even a tile drawn alone is decoded and encoded."""
        return media_type(self.wms_format) != self.media_type


#: What documents call a ``mixed`` layer's tiles: JPEG or PNG, tile by tile.
MIXED_MEDIA_TYPE = "image/vnd.jpeg-png"

TILE_FORMATS: dict[str, TileFormat] = {
    "png": TileFormat("png", "png", "image/png", "image/png", "PNG32"),
    "png8": TileFormat("png8", "png", "image/png", "image/png; mode=8bit", "PNG8"),
    "jpeg": TileFormat("jpeg", "jpg", "image/jpeg", "image/jpeg", "JPEG"),
    # ArcGIS caches have no WebP (TileImageFormat: PNG, PNG8/24/32, JPG, MIXED, LERC).
    "webp": TileFormat("webp", "webp", "image/webp", "image/png", None),
    "mixed": TileFormat("mixed", "mixed", MIXED_MEDIA_TYPE, "image/png", "MIXED"),
}

#: Tile file extensions the service understands, and the media type of each.
EXTENSIONS: dict[str, str] = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "mixed": MIXED_MEDIA_TYPE,
}

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
    its own first: ``JPG`` for jpeg extensions, its PNG flavour for png, both for mixed;
    WebP has no Esri name and is left out."""
    png = own.esri_name if own.name.startswith("png") else TILE_FORMATS["png"].esri_name
    by_ext = {"jpg": ("JPG",), "jpeg": ("JPG",), "png": (png,), "mixed": (png, "JPG")}
    names = (name for ext in served for name in by_ext.get(ext, ()))
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


def tile_content_type(fmt: TileFormat, data: bytes) -> str:
    """The Content-Type of a tile of format `fmt`: the format's media type, except for
    ``mixed`` tiles, whose type is that of their bytes (``image/jpeg`` or ``image/png``).

    >>> tile_content_type(TILE_FORMATS["mixed"], b"\\xff\\xd8\\xff\\xe0...")
    'image/jpeg'
    """
    if fmt.media_type != MIXED_MEDIA_TYPE:
        return fmt.media_type
    return sniff_content_type(data) or "application/octet-stream"


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
