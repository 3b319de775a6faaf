"""High-DPI (2x) tiles from the demo MapServer, through the service under gunicorn.

- A 2x tile covers the ground of its 1x tile: a layer drawn tile by tile answers
  exactly MapServer's own GetMap of the 1x tile's bbox at 512 px with
  MAP_RESOLUTION=144; a metatiled layer's 2x tile is the crop of MapServer's 2x map
  of the 1x metatile's ground (buffer included), twice its pixels.
- Its labels and lines are twice as large: dark (text and outline) pixels are about
  four times as many as in the 1x tile, while a 2x tile drawn without the resolution
  parameter (wms_vendor = "none") has about as many as the 1x one: the same labels,
  shrunk to half their size on the screen.
- GDAL reads the 2x layer through its WMTS, TMS and ArcGIS documents.

var/screenshots/hidpi-tile-1x-2x-none.png puts a 1x tile (enlarged to 512 px), the 2x
tile and the 2x tile without MAP_RESOLUTION side by side, for a person to look at.
"""

from __future__ import annotations

import io

import pytest
import requests
from PIL import Image, ImageChops, ImageDraw, ImageStat

from s3maptiler.config.hidpi import with_tile_size
from s3maptiler.render.getmap import WMSSource, getmap_url
from s3maptiler.tiles.grids import WEB_MERCATOR, Tile
from s3maptiler.tiles.metatile import metatile_for
from s3maptiler.tiles.tilemath import lonlat_to_tile
from tests.integration.test_website_gdal import gdal  # GDAL with its WMS cache off
from tests.servers import ROOT, GunicornApp

pytestmark = pytest.mark.integration

Z = 10
NYC = lonlat_to_tile(WEB_MERCATOR, -73.98, 40.75, Z)  # XYZ numbering
SCREENSHOTS = ROOT / "var" / "screenshots"

LAYERS = """
wms_url = "{wms}"
wms_layers = "demo"
max_zoom = 12
pixel_ratios = [1, 2]
[layers.demo]
prefix = "tiles/"
layout = "xyz"
[layers.single]
prefix = "single/"
layout = "xyz"
metatile = 1
[layers.flat]
prefix = "flat/"
layout = "xyz"
wms_vendor = "none"
"""


@pytest.fixture(scope="module")
def app(demo_wms, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hidpi")
    (tmp / "layers.toml").write_text(LAYERS.format(wms=demo_wms.url))
    service = GunicornApp(
        {
            "LAYERS_FILE": str(tmp / "layers.toml"),
            "LOCAL_CACHE_DIR": str(tmp / "tiles"),
            "LOG_LEVEL": "WARNING",
        }
    ).start()
    service.wms = demo_wms
    yield service
    service.stop()


def image(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def tile(app, layer_prefix: str, t: Tile, ratio: int = 1) -> Image.Image:
    suffix = "" if ratio == 1 else f"@{ratio}x"
    answer = requests.get(f"{app.url}/{layer_prefix}{t.z}/{t.x}/{t.y}{suffix}.png", timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "image/png"
    return image(answer.content)


def direct(app, bbox, width: int, height: int | None = None, resolution=None) -> Image.Image:
    """A GetMap straight to the demo MapServer, as the service's source would send it."""
    extra = () if resolution is None else (("MAP_RESOLUTION", str(resolution)),)
    source = WMSSource(app.wms.url, layers="demo", srs="EPSG:3857", extra_params=extra)
    answer = requests.get(getmap_url(source, bbox, width, height or width), timeout=60)
    assert answer.headers["Content-Type"].startswith("image/png"), answer.text
    return image(answer.content)


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


def dark_pixels(picture: Image.Image) -> int:
    """Pixels of text and outlines: every channel below 100 (the demo's labels are
    near-black or dark brown, its fills and relief light)."""
    red, green, blue = picture.convert("RGB").split()
    brightest = ImageChops.lighter(ImageChops.lighter(red, green), blue)
    return sum(brightest.histogram()[:100])


def test_a_2x_tile_drawn_alone_is_the_wms_own_map_of_the_same_bbox_at_2x(app):
    bbox = WEB_MERCATOR.tile_bbox(NYC)
    two = tile(app, "single/", NYC, ratio=2)
    assert two.size == (512, 512)
    assert two.tobytes() == direct(app, bbox, 512, resolution=144).tobytes()
    assert two.tobytes() != direct(app, bbox, 512).tobytes()  # the parameter matters
    assert tile(app, "single/", NYC).tobytes() == direct(app, bbox, 256).tobytes()


def test_a_metatiled_2x_tile_covers_the_ground_of_its_1x_tile(app):
    # The layer's 4x4 metatiles, with a 64 px buffer at 1x and 128 px at 2x.
    meta = metatile_for(WEB_MERCATOR, NYC, (4, 4), 64)
    meta2 = metatile_for(with_tile_size(WEB_MERCATOR, 512), NYC, (4, 4), 128)
    assert meta2.bbox == meta.bbox  # one GetMap of the same ground...
    assert (meta2.width, meta2.height) == (2 * meta.width, 2 * meta.height)  # ...at 2x
    two = tile(app, "tiles/", NYC, ratio=2)
    drawn = direct(app, meta2.bbox, meta2.width, meta2.height, resolution=144)
    assert two.tobytes() == drawn.crop(meta2.crop_box(NYC)).tobytes()
    # Shrunk to 256 px it is the 1x tile, within resampling.
    one = tile(app, "tiles/", NYC)
    assert mean_difference(two.resize((256, 256), Image.Resampling.BOX), one) < 4


def test_labels_and_lines_of_a_2x_tile_are_twice_as_large(app):
    one = tile(app, "tiles/", NYC)
    two = tile(app, "tiles/", NYC, ratio=2)
    flat = tile(app, "flat/", NYC, ratio=2)  # 2x pixels, no MAP_RESOLUTION
    assert flat.size == two.size == (512, 512)
    dark = {"1x": dark_pixels(one), "2x": dark_pixels(two), "none": dark_pixels(flat)}
    # Twice as wide and twice as high: about four times the pixels (antialiased edges
    # of the 1x strokes are lighter, so a little more); without the parameter the
    # same labels in the same number of pixels, over four times the area.
    assert dark["1x"] > 200, dark
    assert 3.0 < dark["2x"] / dark["1x"] < 8.0, dark
    assert 0.6 < dark["none"] / dark["1x"] < 1.6, dark
    save_side_by_side(one, two, flat)


def save_side_by_side(one: Image.Image, two: Image.Image, flat: Image.Image) -> None:
    """var/screenshots/hidpi-tile-1x-2x-none.png: the 1x tile enlarged to 512 px (as a
    2x screen shows it), the 2x tile, and the 2x tile drawn without MAP_RESOLUTION."""
    gap, caption = 12, 28
    sheet = Image.new("RGB", (3 * 512 + 2 * gap, 512 + caption), "white")
    draw = ImageDraw.Draw(sheet)
    panels = [
        (one.resize((512, 512), Image.Resampling.NEAREST), "1x tile (256 px) on a 2x screen"),
        (two, "2x tile: 512 px, MAP_RESOLUTION=144"),
        (flat, "512 px without MAP_RESOLUTION: labels shrink"),
    ]
    for n, (panel, text) in enumerate(panels):
        left = n * (512 + gap)
        sheet.paste(panel, (left, caption))
        draw.text((left + 4, 8), text, fill="black")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    sheet.save(SCREENSHOTS / "hidpi-tile-1x-2x-none.png")


@pytest.mark.parametrize("document", ["wmts", "tms", "arcgis"])
def test_gdal_reads_the_2x_tiles(app, tmp_path, document):
    source = {
        "wmts": f"WMTS:{app.url}/wmts/1.0.0/WMTSCapabilities.xml,layer=demo@2x",
        # The TileMap's deepest level is the layer's max_zoom (12); GDAL recognises a
        # TileMap by its first bytes, so it reads it over /vsicurl/.
        "tms": f"/vsicurl/{app.url}/1.0.0/demo@2x",
        "arcgis": f"{app.url}/arcgis/rest/services/demo@2x/MapServer?f=json",
    }[document]
    options = ["-oo", f"ZOOM_LEVEL={Z}"] if document == "wmts" else []
    info = gdal("gdalinfo", *options, source, cwd=tmp_path)
    size = 512 * 2 ** (Z if document == "wmts" else 12)
    assert f"Size is {size}, {size}" in info, info
    # The 2x tiles over New York: 2 x 2 of them, read at zoom 10 pixel for pixel.
    scale = 1 if document == "wmts" else 2 ** (12 - Z)
    window = [NYC.x * 512 * scale, NYC.y * 512 * scale, 1024 * scale, 1024 * scale]
    out = tmp_path / "window.png"
    command = ["gdal_translate", "-q", *options, "-of", "PNG", "-srcwin", *map(str, window)]
    gdal(*command, "-outsize", "1024", "1024", source, str(out), cwd=tmp_path)
    got = Image.open(out).convert("RGB")
    served = Image.new("RGB", (1024, 1024))
    for dy in (0, 1):
        for dx in (0, 1):
            two = tile(app, "tiles/", Tile(NYC.x + dx, NYC.y + dy, Z), ratio=2)
            served.paste(two, (512 * dx, 512 * dy))
    assert got.tobytes() == served.tobytes()
