"""Metatile geometry, slicing, encoding and uniform-tile detection (no network)."""

import doctest
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from s3maptiler.render.encode import (
    Encoder,
    ImageSizeMismatch,
    InvalidEncoder,
    SlicedTile,
    UndecodableImage,
    decode_metatile,
    is_uniform,
    slice_image,
    slice_metatile,
    uniform_tile,
)
from s3maptiler.tiles import metatile
from s3maptiler.tiles.grids import (
    GLOBAL_GEODETIC,
    WEB_MERCATOR,
    Bbox,
    Tile,
    TileOutOfRange,
    custom_grid,
)
from s3maptiler.tiles.metatile import InvalidMetaTile, MetaTile, TileNotInMetaTile, metatile_for

BUFFER_RED = (255, 0, 0)


def test_doctests():
    assert doctest.testmod(metatile).failed == 0


def png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# --------------------------------------------------------------------------- geometry


def test_blocks_are_aligned_on_multiples_of_the_size():
    meta = metatile_for(WEB_MERCATOR, Tile(5, 6, 3), (4, 4), 0)
    assert (meta.columns, meta.rows) == (range(4, 8), range(4, 8))
    assert meta.tiles()[0] == Tile(4, 4, 3) and meta.tiles()[-1] == Tile(7, 7, 3)
    assert len(meta.tiles()) == 16
    wide = metatile_for(WEB_MERCATOR, Tile(13, 2, 5), (8, 2), 0)
    assert (wide.columns, wide.rows) == (range(8, 16), range(2, 4))
    assert (wide.width, wide.height) == (8 * 256, 2 * 256)


@settings(max_examples=200, deadline=None)
@given(
    z=st.integers(0, 12),
    data=st.data(),
    cols=st.integers(1, 8),
    rows=st.integers(1, 8),
    buffer=st.integers(0, 300),
)
def test_every_tile_of_a_metatile_maps_to_that_metatile(z, data, cols, rows, buffer):
    n = 2**z
    tile = Tile(data.draw(st.integers(0, n - 1)), data.draw(st.integers(0, n - 1)), z)
    meta = metatile_for(WEB_MERCATOR, tile, (cols, rows), buffer)
    assert tile in meta
    assert len(meta.columns) == min(cols, n - meta.columns.start)
    assert len(meta.rows) == min(rows, n - meta.rows.start)
    for other in meta.tiles():
        assert metatile_for(WEB_MERCATOR, other, (cols, rows), buffer) == meta
    # The buffered bbox never leaves the grid's extent.
    g = WEB_MERCATOR.bbox
    assert g.left <= meta.bbox.left and meta.bbox.right <= g.right
    assert g.bottom <= meta.bbox.bottom and meta.bbox.top <= g.top


def test_zoom_0_and_1_clip_a_4x4_metatile_to_the_matrix():
    z0 = metatile_for(WEB_MERCATOR, Tile(0, 0, 0), (4, 4), 64)
    assert (z0.columns, z0.rows) == (range(0, 1), range(0, 1))
    assert (z0.width, z0.height, z0.buffer) == (256, 256, (0, 0, 0, 0))
    assert z0.bbox == WEB_MERCATOR.bbox
    z1 = metatile_for(WEB_MERCATOR, Tile(1, 0, 1), (4, 4), 64)
    assert (z1.columns, z1.rows) == (range(0, 2), range(0, 2))
    assert (z1.width, z1.height, z1.buffer) == (512, 512, (0, 0, 0, 0))
    assert z1.bbox == WEB_MERCATOR.bbox
    assert len(z1.tiles()) == 4


def test_buffer_is_added_inside_the_grid_and_clipped_at_its_edges():
    res = WEB_MERCATOR.resolution(3)
    inner = metatile_for(WEB_MERCATOR, Tile(3, 3, 3), (2, 2), 64)
    assert inner.buffer == (64, 64, 64, 64)
    assert (inner.width, inner.height) == (512 + 128, 512 + 128)
    core_tl = WEB_MERCATOR.tile_bbox(Tile(2, 2, 3))
    core_br = WEB_MERCATOR.tile_bbox(Tile(3, 3, 3))
    assert inner.bbox == Bbox(
        core_tl.left - 64 * res,
        core_br.bottom - 64 * res,
        core_br.right + 64 * res,
        core_tl.top + 64 * res,
    )
    # Top-left corner of the world: no buffer on the left and top, full on the others.
    corner = metatile_for(WEB_MERCATOR, Tile(0, 0, 3), (2, 2), 64)
    assert corner.buffer == (0, 64, 64, 0)
    assert corner.bbox.left == WEB_MERCATOR.bbox.left
    assert corner.bbox.top == WEB_MERCATOR.bbox.top
    assert (corner.width, corner.height) == (576, 576)
    # Bottom-right corner.
    far = metatile_for(WEB_MERCATOR, Tile(7, 7, 3), (2, 2), 64)
    assert far.buffer == (64, 0, 0, 64)
    assert far.bbox.right == WEB_MERCATOR.bbox.right
    assert far.bbox.bottom == WEB_MERCATOR.bbox.bottom
    # A buffer that reaches exactly to the grid's edge stops there, not a rounding past it.
    reach = metatile_for(WEB_MERCATOR, Tile(0, 0, 3), (7, 1), 256)
    assert reach.buffer == (0, 256, 256, 0)
    assert reach.bbox.right == WEB_MERCATOR.bbox.right


@settings(max_examples=300, deadline=None)
@given(z=st.integers(0, 22), data=st.data())
def test_1x1_without_buffer_is_exactly_the_tile(z, data):
    n = 2**z
    tile = Tile(data.draw(st.integers(0, n - 1)), data.draw(st.integers(0, n - 1)), z)
    meta = metatile_for(WEB_MERCATOR, tile, (1, 1), 0)
    assert meta.bbox == WEB_MERCATOR.tile_bbox(tile)  # bit-identical floats
    assert (meta.width, meta.height, meta.buffer) == (256, 256, (0, 0, 0, 0))
    assert meta.tiles() == [tile]
    assert meta.crop_box(tile) == (0, 0, 256, 256)


def test_neighbouring_metatiles_share_bit_identical_edges():
    a = metatile_for(WEB_MERCATOR, Tile(4100, 2700, 13), (4, 4), 0)
    right = metatile_for(WEB_MERCATOR, Tile(4104, 2700, 13), (4, 4), 0)
    below = metatile_for(WEB_MERCATOR, Tile(4100, 2704, 13), (4, 4), 0)
    assert a.bbox.right == right.bbox.left
    assert a.bbox.bottom == below.bbox.top
    assert a.bbox.left == WEB_MERCATOR.tile_bbox(Tile(4100, 2700, 13)).left


@pytest.mark.parametrize(
    ("tile", "size", "buffer"),
    [
        (Tile(5, 6, 3), (4, 4), 64),
        (Tile(0, 0, 3), (3, 2), 17),
        (Tile(7, 7, 3), (3, 3), 256),
        (Tile(300, 200, 9), (8, 8), 100),
        (Tile(1, 0, 1), (4, 4), 64),
    ],
)
def test_crop_boxes_partition_the_metatile_minus_its_buffer(tile, size, buffer):
    meta = metatile_for(WEB_MERCATOR, tile, size, buffer)
    left, bottom, right, top = meta.buffer
    covered = Image.new("L", (meta.width, meta.height), 0)
    for t in meta.tiles():
        box = meta.crop_box(t)
        assert box[2] - box[0] == 256 and box[3] - box[1] == 256
        region = covered.crop(box)
        assert region.getextrema() == (0, 0), f"{t} overlaps another tile"
        covered.paste(1, box)
    inside = covered.crop((left, top, meta.width - right, meta.height - bottom))
    assert inside.getextrema() == (1, 1)  # every pixel inside the buffer is some tile's
    assert covered.histogram()[1] == len(meta.tiles()) * 256 * 256  # nothing in the buffer


def test_geodetic_2x1_grid():
    z0 = metatile_for(GLOBAL_GEODETIC, Tile(1, 0, 0), (4, 4), 32)
    assert (z0.columns, z0.rows) == (range(0, 2), range(0, 1))
    assert (z0.width, z0.height, z0.buffer) == (512, 256, (0, 0, 0, 0))
    assert z0.bbox == Bbox(-180.0, -90.0, 180.0, 90.0)
    # z2 is 8x4 tiles; the 4x4 block on the east half has a buffer on its west side only.
    east = metatile_for(GLOBAL_GEODETIC, Tile(6, 2, 2), (4, 4), 32)
    assert (east.columns, east.rows) == (range(4, 8), range(0, 4))
    assert east.buffer == (32, 0, 0, 0)
    assert east.bbox == Bbox(-32 * GLOBAL_GEODETIC.resolution(2), -90.0, 180.0, 90.0)
    assert (east.width, east.height) == (1024 + 32, 1024)
    assert east.crop_box(Tile(6, 2, 2)) == (32 + 512, 512, 32 + 768, 768)


def test_custom_grid_clips_the_buffer_to_its_extent():
    # Top-left origin, 10 m/px at z0: tiles of 2560 m; the extent is 2.5 tiles wide and
    # 1.25 tiles high, so the matrix is 3x2 and its last column reaches past the extent.
    grid = custom_grid(
        "local",
        "EPSG:25832",
        (500000.0, 6000000.0),
        256,
        [10.0, 5.0],
        bbox=Bbox(500000.0, 6000000.0 - 3200.0, 500000.0 + 6400.0, 6000000.0),
    )
    assert grid.matrix_size(0) == (3, 2)
    meta = metatile_for(grid, Tile(1, 1, 0), (2, 2), 200)
    assert (meta.columns, meta.rows) == (range(0, 2), range(0, 2))
    # Right: 0.5 tile = 128 px to the extent's edge, so 128 of the 200 asked.
    # Bottom: the second row already reaches past the extent, so none.
    assert meta.buffer == (0, 0, 128, 0)
    assert meta.bbox == Bbox(500000.0, 6000000.0 - 5120.0, 500000.0 + 5120.0 + 1280.0, 6000000.0)
    assert (meta.width, meta.height) == (512 + 128, 512)
    last = metatile_for(grid, Tile(2, 0, 0), (2, 2), 200)
    assert (last.columns, last.rows) == (range(2, 3), range(0, 2))
    assert last.buffer == (200, 0, 0, 0)
    assert last.bbox.right == grid.tile_bbox(Tile(2, 0, 0)).right


@pytest.mark.parametrize(
    ("size", "buffer"), [((0, 4), 0), ((4, -1), 0), ((4, 4), -5), ((2.0, 2), 0), ((2, 2), True)]
)
def test_bad_sizes_and_buffers_are_refused(size, buffer):
    with pytest.raises(InvalidMetaTile):
        metatile_for(WEB_MERCATOR, Tile(0, 0, 2), size, buffer)


def test_tiles_outside_the_grid_or_the_metatile():
    with pytest.raises(TileOutOfRange):
        metatile_for(WEB_MERCATOR, Tile(4, 0, 2), (2, 2), 0)
    meta = metatile_for(WEB_MERCATOR, Tile(0, 0, 2), (2, 2), 0)
    for foreign in (Tile(2, 0, 2), Tile(0, 2, 2), Tile(0, 0, 3)):
        assert foreign not in meta
        with pytest.raises(TileNotInMetaTile):
            meta.crop_box(foreign)


# --------------------------------------------------------------------------- slicing


def tile_colour(t: Tile) -> tuple[int, int, int]:
    return (20 + 30 * (t.x % 8), 20 + 30 * (t.y % 8), 100 + t.x % 3 * 50)


def painted_metatile(meta: MetaTile, framed: set[Tile]) -> Image.Image:
    """Buffer red; each tile filled with its own colour; framed tiles get a black
    1 px frame, so a crop one pixel off shows red, black or a neighbour's colour."""
    image = Image.new("RGB", (meta.width, meta.height), BUFFER_RED)
    draw = ImageDraw.Draw(image)
    for t in meta.tiles():
        left, upper, right, lower = meta.crop_box(t)
        draw.rectangle((left, upper, right - 1, lower - 1), fill=tile_colour(t))
        if t in framed:
            draw.rectangle((left, upper, right - 1, lower - 1), outline=(0, 0, 0))
    return image


@pytest.mark.parametrize("fmt", ["png", "png8"])
def test_every_tile_gets_its_own_pixels_back(fmt):
    meta = metatile_for(WEB_MERCATOR, Tile(5, 5, 4), (4, 4), 32)
    assert meta.buffer == (32, 32, 32, 32)
    framed = {t for t in meta.tiles() if (t.x + t.y) % 2}
    image = painted_metatile(meta, framed)
    tiles = slice_metatile(png_bytes(image), meta, Encoder(fmt))
    assert set(tiles) == set(meta.tiles())
    for t, sliced in tiles.items():
        assert isinstance(sliced, SlicedTile)
        got = decode(sliced.data).convert("RGB")
        assert got.size == (256, 256)
        assert got.tobytes() == image.crop(meta.crop_box(t)).tobytes(), t
        assert got.getpixel((128, 128)) == tile_colour(t)
        assert sliced.uniform == (t not in framed)
        if t in framed:
            assert got.getpixel((0, 0)) == got.getpixel((255, 255)) == (0, 0, 0)


def test_the_requested_tile_can_be_encoded_before_the_others():
    meta = metatile_for(WEB_MERCATOR, Tile(5, 5, 4), (4, 4), 32)
    image = painted_metatile(meta, framed=set(meta.tiles()))
    everything = slice_metatile(png_bytes(image), meta, Encoder())
    work = Encoder().prepare(decode_metatile(png_bytes(image), meta))
    first = slice_image(work, meta, Encoder(), [Tile(6, 7, 4)])
    assert list(first) == [Tile(6, 7, 4)]
    rest = slice_image(work, meta, Encoder(), [t for t in meta.tiles() if t != Tile(6, 7, 4)])
    assert len(rest) == 15 and Tile(6, 7, 4) not in rest
    assert {**first, **rest} == everything
    with pytest.raises(TileNotInMetaTile):
        slice_image(work, meta, Encoder(), [Tile(8, 7, 4)])


def test_png_stays_full_colour_rgb():
    meta = metatile_for(WEB_MERCATOR, Tile(1, 1, 2), (1, 1), 0)
    gradient = Image.merge(
        "RGB",
        (
            Image.linear_gradient("L").rotate(90),
            Image.linear_gradient("L"),
            Image.radial_gradient("L").resize((256, 256)),
        ),
    )
    assert len(gradient.getcolors(1 << 20)) > 10_000
    got = decode(slice_metatile(png_bytes(gradient), meta, Encoder("png"))[Tile(1, 1, 2)].data)
    assert got.mode == "RGB"
    assert got.tobytes() == gradient.tobytes()


def test_png_keeps_alpha_and_a_palette_image_becomes_rgba_without_loss():
    meta = metatile_for(WEB_MERCATOR, Tile(0, 0, 1), (2, 1), 0)
    rgba = Image.new("RGBA", (512, 256), (9, 80, 200, 0))
    rgba.putalpha(Image.linear_gradient("L").resize((512, 256)))  # 256 levels of alpha
    for t, sliced in slice_metatile(png_bytes(rgba), meta, Encoder("png")).items():
        got = decode(sliced.data)
        assert got.mode == "RGBA"
        assert got.tobytes() == rgba.crop(meta.crop_box(t)).tobytes()
    # A palette image with a transparent index, as a WMS in 8-bit mode returns.
    palette = Image.new("P", (512, 256), 0)
    palette.putpalette([0, 0, 0, 250, 10, 10, 10, 250, 10] + [0] * 759)
    ImageDraw.Draw(palette).rectangle((100, 50, 400, 200), fill=1)
    ImageDraw.Draw(palette).line((0, 0, 511, 255), fill=2, width=5)
    palette.info["transparency"] = 0
    expected = palette.convert("RGBA")
    for t, sliced in slice_metatile(png_bytes(palette), meta, Encoder("png")).items():
        got = decode(sliced.data)
        assert got.mode == "RGBA"
        assert got.tobytes() == expected.crop(meta.crop_box(t)).tobytes()


def test_an_alpha_band_opaque_everywhere_is_dropped_without_changing_a_pixel():
    # MapServer answers RGBA for opaque maps too; the constant band only costs bytes.
    meta = metatile_for(WEB_MERCATOR, Tile(0, 0, 1), (2, 1), 0)
    image = Image.effect_mandelbrot((512, 256), (-2, -1.5, 1, 1.5), 60).convert("RGBA")
    for t, sliced in slice_metatile(png_bytes(image), meta, Encoder("png")).items():
        got = decode(sliced.data)
        assert got.mode == "RGB"
        assert got.convert("RGBA").tobytes() == image.crop(meta.crop_box(t)).tobytes()
    image.putpixel((300, 100), (1, 2, 3, 254))  # one pixel not quite opaque: alpha stays
    tiles = slice_metatile(png_bytes(image), meta, Encoder("png"))
    assert decode(tiles[Tile(1, 0, 1)].data).getpixel((44, 100)) == (1, 2, 3, 254)


def test_png8_is_a_palette_image_with_transparency():
    meta = metatile_for(WEB_MERCATOR, Tile(0, 0, 0), (1, 1), 0)
    image = Image.new("RGBA", (256, 256), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    for i in range(0, 256, 8):
        draw.rectangle((i, 40, i + 7, 215), fill=(i, 255 - i, 128, 255))
    got = decode(slice_metatile(png_bytes(image), meta, Encoder("png8"))[Tile(0, 0, 0)].data)
    assert got.mode == "P"
    assert len(got.getcolors(256)) <= 256
    rgba = got.convert("RGBA")
    assert rgba.getpixel((5, 5))[3] == 0
    assert rgba.getpixel((100, 100))[3] == 255


def test_png8_colours_setting_limits_the_palette():
    meta = metatile_for(WEB_MERCATOR, Tile(0, 0, 0), (1, 1), 0)
    gradient = Image.linear_gradient("L").convert("RGB")
    data = slice_metatile(png_bytes(gradient), meta, Encoder("png8", png8_colors=16))
    got = decode(data[Tile(0, 0, 0)].data)
    assert got.mode == "P" and len(got.getcolors(256)) <= 16


def test_jpeg_decodes_at_tile_size_with_transparency_on_white():
    meta = metatile_for(WEB_MERCATOR, Tile(2, 2, 3), (2, 2), 16)
    image = Image.new("RGBA", (meta.width, meta.height), (0, 0, 0, 0))
    ImageDraw.Draw(image).rectangle((16, 16, 16 + 255, 16 + 255), fill=(0, 0, 200, 255))
    tiles = slice_metatile(png_bytes(image), meta, Encoder("jpeg", jpeg_quality=85))
    blue = decode(tiles[Tile(2, 2, 3)].data)
    assert blue.format == "JPEG" and blue.size == (256, 256) and blue.mode == "RGB"
    r, g, b = blue.getpixel((128, 128))
    assert r < 8 and g < 8 and b > 190
    white = decode(tiles[Tile(3, 3, 3)].data)
    assert min(white.getpixel((128, 128))) > 250
    assert tiles[Tile(3, 3, 3)].uniform


def test_blank_tiles_share_one_encoding_whatever_hides_under_alpha_0():
    meta = metatile_for(WEB_MERCATOR, Tile(0, 0, 2), (2, 1), 0)
    image = Image.new("RGBA", (512, 256), (0, 0, 0, 0))
    # The left tile's invisible pixels carry colour noise, the right one's are zero.
    noise = Image.effect_noise((256, 256), 80).convert("RGB")
    image.paste(Image.merge("RGBA", (*noise.split(), Image.new("L", (256, 256), 0))), (0, 0))
    tiles = slice_metatile(png_bytes(image), meta, Encoder("png"))
    left, right = tiles[Tile(0, 0, 2)], tiles[Tile(1, 0, 2)]
    assert left.uniform and right.uniform
    assert left.data == right.data
    assert decode(left.data).getextrema()[3] == (0, 0)


def test_wrong_size_or_undecodable_answers_are_errors():
    meta = metatile_for(WEB_MERCATOR, Tile(5, 5, 4), (4, 4), 32)
    small = png_bytes(Image.new("RGB", (1024, 1024)))
    with pytest.raises(ImageSizeMismatch, match="1024x1024 px, expected 1088x1088"):
        slice_metatile(small, meta, Encoder())
    with pytest.raises(ImageSizeMismatch):
        slice_image(Image.new("RGB", (1088, 1087)), meta, Encoder())
    with pytest.raises(ImageSizeMismatch):
        decode_metatile(small, meta)
    with pytest.raises(UndecodableImage):
        slice_metatile(b"<ServiceExceptionReport/>", meta, Encoder())
    with pytest.raises(UndecodableImage):
        decode_metatile(b"", meta)
    whole = png_bytes(Image.effect_noise((1088, 1088), 50))
    with pytest.raises(UndecodableImage):
        slice_metatile(whole[: len(whole) // 2], meta, Encoder())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"format": "gif"},
        {"png_compress_level": 10},
        {"png_compress_level": -1},
        {"jpeg_quality": 0},
        {"png8_colors": 257},
        {"png8_method": "libimagequant"},
        {"jpeg_background": (255, 255)},
        {"jpeg_background": (0, 0, 256)},
        {"webp_quality": 101},
        {"webp_quality": -1},
        {"webp_lossless": "yes"},
    ],
)
def test_bad_encoder_settings_are_refused(kwargs):
    with pytest.raises(InvalidEncoder):
        Encoder(**kwargs)


def test_compress_level_changes_the_bytes_not_the_pixels():
    image = Image.effect_mandelbrot((256, 256), (-2, -1.5, 1, 1.5), 60).convert("RGB")
    fast = Encoder(png_compress_level=1).encode(image)
    small = Encoder(png_compress_level=9).encode(image)
    assert len(small) < len(fast)
    assert decode(fast).tobytes() == decode(small).tobytes() == image.tobytes()


# --------------------------------------------------------------------------- uniform


def test_is_uniform_for_one_colour_and_fully_transparent():
    assert is_uniform(Image.new("RGB", (256, 256), (170, 211, 223)))
    assert is_uniform(Image.new("L", (256, 256), 7))
    assert is_uniform(Image.new("RGBA", (256, 256), (10, 20, 30, 128)))
    varied = Image.effect_noise((256, 256), 100).convert("RGB")
    assert not is_uniform(varied)
    hidden = Image.merge("RGBA", (*varied.split(), Image.new("L", (256, 256), 0)))
    assert is_uniform(hidden)  # colour under alpha 0 is invisible


@pytest.mark.parametrize("where", [(255, 255), (100, 37), (0, 200)])
def test_a_single_different_pixel_is_not_uniform(where):
    for mode, colour, other in [
        ("RGB", (170, 211, 223), (170, 211, 224)),
        ("RGBA", (0, 0, 0, 0), (0, 0, 0, 1)),
        ("RGBA", (5, 5, 5, 255), (5, 5, 5, 254)),
        ("L", 0, 1),
    ]:
        image = Image.new(mode, (256, 256), colour)
        image.putpixel(where, other)
        assert not is_uniform(image), (mode, colour, other)


def test_palette_images_compare_colours_not_indices():
    image = Image.new("P", (64, 64), 0)
    image.putpalette([30, 60, 90, 30, 60, 90, 200, 0, 0] + [0] * 759)
    image.paste(1, (0, 0, 32, 64))  # another index of the same colour
    assert is_uniform(image)
    image.putpixel((40, 40), 2)
    assert not is_uniform(image)


def test_uniform_tile_decodes_bytes():
    assert uniform_tile(png_bytes(Image.new("RGBA", (256, 256))))
    assert not uniform_tile(png_bytes(Image.linear_gradient("L")))
    with pytest.raises(UndecodableImage):
        uniform_tile(b"not an image")


def test_png8_keeps_the_palette_of_a_palette_metatile():
    # A WMS asked for 8-bit PNG has already chosen the best palette: cropping must not
    # quantise again (that would merge close colours of this 250-step ramp).
    meta = metatile_for(WEB_MERCATOR, Tile(0, 0, 1), (2, 1), 0)
    ramp = Image.linear_gradient("L").resize((512, 256)).point(lambda v: v * 250 // 256)
    palette = ramp.convert("P")
    palette.putpalette([c for i in range(256) for c in (i, 255 - i, (i * 7) % 256)])
    for t, sliced in slice_metatile(png_bytes(palette), meta, Encoder("png8")).items():
        got = decode(sliced.data)
        assert got.mode == "P"
        expected = palette.crop(meta.crop_box(t)).convert("RGB")
        assert got.convert("RGB").tobytes() == expected.tobytes()
