"""Encoding tiles cut from a decoded metatile image, with Pillow.

Encoding keeps a ``png`` layer full colour (RGB/RGBA, never quantised); ``png8``
quantises to a palette only when asked; ``jpeg`` composites transparency on a
background colour; ``webp`` keeps transparency, lossy or lossless; ``mixed`` writes
each tile as JPEG when it is fully opaque and as full-colour PNG when it is not.
Uniform tiles (one colour, or fully transparent) are found with
Pillow's per-band extrema, not a Python pixel loop. Where each tile sits in the
metatile image is :mod:`s3maptiler.tiles.metatile`'s geometry.
"""

from __future__ import annotations

import functools
import io
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from PIL import Image, UnidentifiedImageError

from s3maptiler.tiles.formats import TILE_FORMATS
from s3maptiler.tiles.grids import Tile
from s3maptiler.tiles.metatile import MetaTile, MetaTileError

__all__ = [
    "Encoder",
    "ImageSizeMismatch",
    "InvalidEncoder",
    "SlicedTile",
    "UndecodableImage",
    "decode_metatile",
    "is_uniform",
    "slice_image",
    "slice_prepared",
    "slice_metatile",
    "uniform_tile",
]

log = logging.getLogger(__name__)

_PNG8_METHODS = {
    "fastoctree": Image.Quantize.FASTOCTREE,
    "mediancut": Image.Quantize.MEDIANCUT,
    "maxcoverage": Image.Quantize.MAXCOVERAGE,
}
# Modes a PNG stores as they are, without any loss.
_PNG_MODES = frozenset({"1", "L", "LA", "RGB", "RGBA"})
# libwebp's speed/size trade-off ("method", 0 fast .. 6) for lossy tiles, and method
# and effort (0..100, Pillow's "quality") for lossless ones; see Encoder.
WEBP_METHOD = 4
WEBP_LOSSLESS_METHOD = 2
WEBP_LOSSLESS_EFFORT = 40


class UndecodableImage(MetaTileError):
    """Bytes that Pillow cannot decode as a complete image."""


class ImageSizeMismatch(MetaTileError):
    """A metatile image whose pixel size is not the size that was asked of the WMS."""


class InvalidEncoder(MetaTileError, ValueError):
    """Encoding settings outside their range, or an unknown format."""


def _has_alpha(image: Image.Image) -> bool:
    return image.has_transparency_data


def _drop_opaque_alpha(image: Image.Image) -> Image.Image:
    """RGB (or L) for an RGBA (or LA) image whose alpha is 255 everywhere.

    Lossless: every pixel looks the same. A WMS whose output format is RGBA answers
    RGBA for opaque maps too; without the constant band a tile is ~10 % smaller and
    ~20 % faster to deflate, for one extrema pass over the alpha band.
    """
    if image.mode in ("RGBA", "LA") and image.getchannel("A").getextrema()[0] == 255:
        return image.convert(image.mode[:-1])
    return image


@dataclass(frozen=True)
class Encoder:
    """How tiles of one layer are encoded.

    ``format`` is ``png`` (full colour, lossless), ``png8`` (palette of at most
    ``png8_colors`` colours, quantised with ``png8_method``) or ``jpeg`` (quality
    ``jpeg_quality``, transparency composited on ``jpeg_background``, an RGB triple).
    ``png_compress_level`` is the zlib level 0..9 for png and png8. ``webp`` is lossy
    at ``webp_quality`` (0..100, transparency kept losslessly) or lossless with
    ``webp_lossless``. ``mixed`` uses ``jpeg_quality`` for its opaque tiles and
    ``png_compress_level`` for the others.

    Level 6 is the default (``python bench/encode_cost.py``, 272 demo-WMS tiles from
    4x4 metatiles, decode included): 1.6 ms CPU per tile (2.1 ms for tiles with
    content) and 4.4 KB mean, against 1.2 ms (1.5) and 5.6 KB for level 3 and 7.8 ms
    (10.7) and 4.0 KB for level 9. Bytes are paid every month they are stored and
    every time they are served, CPU once: level 6's extra 0.4 ms per tile costs about
    a tenth of what one month of storing level 3's 21 % more bytes costs, and a tile
    with content stays under the 5 ms target with the S3 PUT (~1.4 ms) included;
    level 9 does not.

    WebP (same bench): lossy at quality 80, libwebp's method 4, is 0.18 of level-6 PNG's
    bytes and 0.28 of JPEG 90's, for 2.2 ms CPU per tile (2.8 with content); method 2
    would save 1.4 ms for 5 % more bytes, which the rule above says to keep. Lossless
    at effort 40 and method 2 is 0.49 of PNG's bytes for 2.9 ms (3.9); effort 80 and
    method 4, Pillow's defaults, saves another 1.4 % for 6 ms more per tile.
    """

    format: str = "png"
    png_compress_level: int = 6
    jpeg_quality: int = 90
    png8_colors: int = 256
    png8_method: str = "fastoctree"
    jpeg_background: tuple[int, int, int] = (255, 255, 255)
    webp_quality: int = 80
    webp_lossless: bool = False

    def __post_init__(self) -> None:
        if self.format not in TILE_FORMATS:
            names = ", ".join(TILE_FORMATS)
            raise InvalidEncoder(f"format {self.format!r} is not one of {names}")
        checks = (
            ("png_compress_level", self.png_compress_level, 0, 9),
            ("jpeg_quality", self.jpeg_quality, 1, 100),
            ("png8_colors", self.png8_colors, 2, 256),
            ("webp_quality", self.webp_quality, 0, 100),
        )
        for name, value, low, high in checks:
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise InvalidEncoder(f"{name} must be a whole number {low}..{high}, got {value!r}")
        if self.png8_method not in _PNG8_METHODS:
            raise InvalidEncoder(
                f"png8_method {self.png8_method!r} is not one of {', '.join(_PNG8_METHODS)}"
            )
        background = tuple(self.jpeg_background)
        if len(background) != 3 or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in background
        ):
            raise InvalidEncoder(f"jpeg_background must be three values 0..255, got {background!r}")
        object.__setattr__(self, "jpeg_background", background)
        if not isinstance(self.webp_lossless, bool):
            raise InvalidEncoder(f"webp_lossless must be true or false, got {self.webp_lossless!r}")

    def prepare(self, image: Image.Image) -> Image.Image:
        """The image in the mode this format encodes, converted without loss where the
        format allows: palette images become RGB(A) for png and keep their palette for
        png8, an alpha band that is opaque everywhere is dropped (so a mixed tile
        without one is opaque), and jpeg loses transparency on the background colour;
        webp and mixed work in RGB or RGBA."""
        mode = image.mode
        if self.format == "jpeg":
            if _has_alpha(image):
                background = Image.new("RGBA", image.size, (*self.jpeg_background, 255))
                return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
            return image if mode in ("RGB", "L") else image.convert("RGB")
        if mode == "P" and self.format == "png8":
            return image  # already a palette: re-quantising would only lose colours
        if mode not in ("RGB", "RGBA") and not (self.format == "png" and mode in _PNG_MODES):
            image = image.convert("RGBA" if _has_alpha(image) else "RGB")
        return _drop_opaque_alpha(image)

    def encode(self, image: Image.Image) -> bytes:
        """The image encoded in this format, as the bytes of a file."""
        image = self.prepare(image)
        out = io.BytesIO()
        # prepare() dropped the alpha band of an opaque tile: a mixed tile without one
        # is JPEG, one with transparency is PNG (below).
        if self.format == "jpeg" or (self.format == "mixed" and image.mode == "RGB"):
            image.save(out, "JPEG", quality=self.jpeg_quality)
            return out.getvalue()
        if self.format == "webp":
            if self.webp_lossless:
                options = {
                    "lossless": True,
                    "quality": WEBP_LOSSLESS_EFFORT,
                    "method": WEBP_LOSSLESS_METHOD,
                }
            else:
                options = {"quality": self.webp_quality, "method": WEBP_METHOD}
            image.save(out, "WEBP", **options)
            return out.getvalue()
        if self.format == "png8" and image.mode != "P":
            # Only FASTOCTREE (and libimagequant) handle an alpha band.
            method = _PNG8_METHODS[self.png8_method]
            if image.mode == "RGBA":
                method = Image.Quantize.FASTOCTREE
            image = image.quantize(self.png8_colors, method=method)
        image.save(out, "PNG", compress_level=self.png_compress_level)
        return out.getvalue()


# --------------------------------------------------------------------------- uniform tiles


def _differs_visibly(image: Image.Image, has_alpha: bool) -> bool:
    """True when five sampled pixels already prove the image is not uniform.

    Two different pixels rule out one colour; a sampled alpha above 0 rules out
    full transparency. Most tiles with content are decided here, without a full
    extrema pass (which costs about as much as a sixth of a PNG encode).
    """
    right, bottom = image.width - 1, image.height - 1
    points = ((0, 0), (right, 0), (right // 2, bottom // 2), (0, bottom), (right, bottom))
    samples = [image.getpixel(p) for p in points]
    if all(s == samples[0] for s in samples):
        return False
    return not has_alpha or any(s[-1] > 0 for s in samples)


def _uniform_pixel(image: Image.Image) -> tuple[str, object] | None:
    """``(mode, pixel)`` that rebuilds a uniform image exactly, or None.

    A fully transparent image gives ``pixel = 0`` (all bands zero): whatever colour
    sits under alpha 0 is invisible, and one canonical blank lets equal tiles share bytes.
    """
    if image.mode in ("P", "PA"):
        # Palette indices may differ yet name the same colour; compare colours.
        image = image.convert("RGBA" if _has_alpha(image) else "RGB")
    bands = image.getbands()
    has_alpha = bands[-1] in ("A", "a")
    if _differs_visibly(image, has_alpha):
        return None
    if has_alpha:
        low, high = image.getchannel(len(bands) - 1).getextrema()
        if high == 0:
            return image.mode, 0
    extrema = image.getextrema()
    if len(bands) == 1:
        extrema = (extrema,)
    if all(low == high for low, high in extrema):
        return image.mode, image.getpixel((0, 0))
    return None


def is_uniform(image: Image.Image) -> bool:
    """True if every pixel has the same colour, or every pixel is fully transparent.

    Cheap: five sampled pixels decide most tiles with content; the rest take one
    pass of Pillow's C extrema per band, never a Python loop over pixels.
    """
    return _uniform_pixel(image) is not None


def uniform_tile(data: bytes) -> bool:
    """:func:`is_uniform` of an encoded image (decodes it; raises UndecodableImage)."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UndecodableImage(f"cannot decode image ({len(data)} bytes): {exc}") from exc
    return is_uniform(image)


@functools.lru_cache(maxsize=128)
def _encode_uniform(encoder: Encoder, mode: str, size: tuple[int, int], pixel: object) -> bytes:
    # Sea and out-of-data tiles repeat by the thousand: encode each blank once.
    return encoder.encode(Image.new(mode, size, pixel))


# --------------------------------------------------------------------------- slicing


class SlicedTile(NamedTuple):
    """One tile cut from a metatile: its encoded bytes, and whether it is uniform
    (one colour or fully transparent), found on the pixels already decoded."""

    data: bytes
    uniform: bool


def _check_size(size: tuple[int, int], meta: MetaTile) -> None:
    if tuple(size) != (meta.width, meta.height):
        raise ImageSizeMismatch(
            f"metatile {meta.describe()}: image is {size[0]}x{size[1]} px,"
            f" expected {meta.width}x{meta.height}"
        )


def decode_metatile(data: bytes, meta: MetaTile) -> Image.Image:
    """The decoded GetMap answer for ``meta``.

    Raises UndecodableImage for bytes Pillow cannot decode completely and
    ImageSizeMismatch for an image that is not ``meta.width`` x ``meta.height`` pixels
    (checked from the header, before paying for the decode).
    """
    try:
        image = Image.open(io.BytesIO(data))
        _check_size(image.size, meta)
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UndecodableImage(f"cannot decode image ({len(data)} bytes): {exc}") from exc
    return image


def slice_image(
    image: Image.Image,
    meta: MetaTile,
    encoder: Encoder,
    tiles: Iterable[Tile] | None = None,
) -> dict[Tile, SlicedTile]:
    """Cut ``tiles`` (default: every tile of ``meta``, row by row) out of a decoded
    metatile image and encode each, in the order given.

    Uniform tiles are encoded from a canonical image of their colour (fully
    transparent ones as all-zero pixels), once per colour and process, so every blank
    tile of a layer has the same bytes. Raises ImageSizeMismatch for an image of the
    wrong size, TileNotInMetaTile for a tile of another metatile. To answer one tile
    before encoding the others, prepare the image once and call
    :func:`slice_prepared` twice.
    """
    return slice_prepared(encoder.prepare(image), meta, encoder, tiles)


def slice_prepared(
    work: Image.Image,
    meta: MetaTile,
    encoder: Encoder,
    tiles: Iterable[Tile] | None = None,
) -> dict[Tile, SlicedTile]:
    """:func:`slice_image` of an image already through ``encoder.prepare``."""
    _check_size(work.size, meta)
    sliced: dict[Tile, SlicedTile] = {}
    for tile in meta.tiles() if tiles is None else tiles:
        crop = work.crop(meta.crop_box(tile))
        found = _uniform_pixel(crop)
        if found is None:
            sliced[tile] = SlicedTile(encoder.encode(crop), False)
        else:
            mode, pixel = found
            sliced[tile] = SlicedTile(_encode_uniform(encoder, mode, crop.size, pixel), True)
    return sliced


def slice_metatile(data: bytes, meta: MetaTile, encoder: Encoder) -> dict[Tile, SlicedTile]:
    """Decode a GetMap answer for ``meta`` once and return every tile, encoded.

    Each value is a :class:`SlicedTile` ``(data, uniform)``. Raises UndecodableImage
    for bytes Pillow cannot decode and ImageSizeMismatch for an image of another size.
    """
    tiles = slice_image(decode_metatile(data, meta), meta, encoder)
    log.debug(
        "sliced metatile %s into %d tiles (%d uniform)",
        meta.describe(),
        len(tiles),
        sum(t.uniform for t in tiles.values()),
    )
    return tiles


@functools.cache
def blank_tile(media_type: str, size: int) -> bytes:
    """A transparent PNG (also for mixed layers) or WebP, or a white JPEG, of size x
    size pixels."""
    out = io.BytesIO()
    if media_type == "image/jpeg":
        Image.new("RGB", (size, size), (255, 255, 255)).save(out, "JPEG", quality=90)
    elif media_type == "image/webp":
        Image.new("RGBA", (size, size), (0, 0, 0, 0)).save(out, "WEBP", lossless=True)
    else:
        Image.new("RGBA", (size, size), (0, 0, 0, 0)).save(out, "PNG", optimize=True)
    return out.getvalue()
