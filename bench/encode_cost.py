"""CPU per tile of slicing a 4x4 metatile, and tile size, for each encoding.

Starts the demo MapServer (devtools.demowms.DemoWMS) on 127.0.0.1, fetches 4x4
metatiles with a 64 px buffer (1152 px images) over New York at zooms 12-15 and over
open ocean, then measures in this process, with time.process_time():

- decode: Pillow decoding the metatile PNG, divided by the tiles it holds;
- slice+encode: cropping every tile and encoding it, for png compress levels
  1, 3, 6, 9, png8, jpeg quality 90 and webp (lossy at quality 75, 80 and 90, and
  lossless) (uniform tiles included, as the service sees them: after the first round
  their canonical blank comes from the per-process cache).

Prints one table: CPU ms per tile (decode + slice/encode), the same for the tiles
that are not uniform, and the mean encoded size of all tiles and of non-uniform tiles.

    python bench/encode_cost.py --rounds 5

Run from the repository root with the dev requirements installed.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools.demowms import DemoWMS  # noqa: E402
from s3maptiler.render.encode import Encoder, slice_image  # noqa: E402
from s3maptiler.render.getmap import WMSSource  # noqa: E402
from s3maptiler.render.wms import WMSClient  # noqa: E402
from s3maptiler.tiles.grids import WEB_MERCATOR, Tile  # noqa: E402
from s3maptiler.tiles.metatile import MetaTile, metatile_for  # noqa: E402
from s3maptiler.tiles.tilemath import lonlat_to_tile  # noqa: E402

META_SIZE = (4, 4)
META_BUFFER = 64
# Points whose metatiles are mostly drawn: Manhattan, Brooklyn, Queens, the Bronx.
NYC = [(-73.985, 40.758), (-73.95, 40.65), (-73.83, 40.72), (-73.89, 40.85)]
# Open Atlantic: water only (uniform tiles, the cheap case).
OCEAN = [(-50.0, 35.0), (-35.0, 20.0)]
ENCODERS = [
    ("png level 1", Encoder("png", png_compress_level=1)),
    ("png level 3", Encoder("png", png_compress_level=3)),
    ("png level 6", Encoder("png", png_compress_level=6)),
    ("png level 9", Encoder("png", png_compress_level=9)),
    ("png8 (level 6)", Encoder("png8", png_compress_level=6)),
    ("jpeg 90", Encoder("jpeg", jpeg_quality=90)),
    ("webp q75", Encoder("webp", webp_quality=75)),
    ("webp q80", Encoder("webp", webp_quality=80)),
    ("webp q90", Encoder("webp", webp_quality=90)),
    ("webp lossless", Encoder("webp", webp_lossless=True)),
]


def metatiles() -> list[MetaTile]:
    """Distinct 4x4 metatiles: each NYC point at z12..z15, each ocean point at z12 and z14."""
    found: dict[MetaTile, None] = {}
    for z in (12, 13, 14, 15):
        for lon, lat in NYC:
            tile = lonlat_to_tile(WEB_MERCATOR, lon, lat, z)
            found[metatile_for(WEB_MERCATOR, tile, META_SIZE, META_BUFFER)] = None
    for z in (12, 14):
        for lon, lat in OCEAN:
            tile = lonlat_to_tile(WEB_MERCATOR, lon, lat, z)
            found[metatile_for(WEB_MERCATOR, tile, META_SIZE, META_BUFFER)] = None
    return list(found)


def cpu_ms(work, rounds: int) -> float:
    """Median over rounds of the process CPU time of ``work()``, in milliseconds."""
    samples = []
    for _ in range(rounds):
        started = time.process_time()
        work()
        samples.append((time.process_time() - started) * 1000)
    return statistics.median(samples)


def measure(
    encoder: Encoder,
    decoded: list[tuple[MetaTile, Image.Image]],
    uniform: dict[Tile, bool],
    rounds: int,
) -> tuple[float, float, float, float]:
    """CPU ms per tile (all tiles, content tiles) and mean bytes (all, content)."""
    total_ms = content_ms = 0.0
    sizes: dict[Tile, int] = {}
    for meta, image in decoded:
        total_ms += cpu_ms(lambda m=meta, i=image: slice_image(i, m, encoder), rounds)
        content = [t for t in meta.tiles() if not uniform[t]]
        if content:
            # The same work restricted to the tiles with content: crop + encode each.
            def encode_content(m=meta, i=image, ts=content):
                work = encoder.prepare(i)
                for t in ts:
                    encoder.encode(work.crop(m.crop_box(t)))

            content_ms += cpu_ms(encode_content, rounds)
        for tile, sliced in slice_image(image, meta, encoder).items():
            sizes[tile] = len(sliced.data)
    content_sizes = [size for tile, size in sizes.items() if not uniform[tile]]
    n_content = max(len(content_sizes), 1)
    return (
        total_ms / len(sizes),
        content_ms / n_content,
        statistics.fmean(sizes.values()),
        statistics.fmean(content_sizes) if content_sizes else 0.0,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="repetitions; the median counts")
    args = parser.parse_args()

    wms = DemoWMS().start()
    try:
        source = WMSSource(wms.url, layers=wms.layers, srs=WEB_MERCATOR.srs)
        client = WMSClient()
        fetched = []
        for meta in metatiles():
            fetched.append((meta, client.get_map(source, meta.bbox, meta.width, meta.height)))
    finally:
        wms.stop()

    decoded = []
    decode_total = 0.0
    for meta, data in fetched:

        def decode(data: bytes = data) -> Image.Image:
            image = Image.open(io.BytesIO(data))
            image.load()
            return image

        decode_total += cpu_ms(decode, args.rounds)
        decoded.append((meta, decode()))
    n_tiles = sum(len(meta.tiles()) for meta, _ in fetched)
    decode_per_tile = decode_total / n_tiles

    # Which tiles carry content is a property of the pixels, not of the encoding.
    reference = {
        tile: sliced.uniform
        for meta, image in decoded
        for tile, sliced in slice_image(image, meta, Encoder()).items()
    }
    n_content = sum(not uniform for uniform in reference.values())

    rows = [
        (label, *measure(encoder, decoded, reference, args.rounds), decode_per_tile)
        for label, encoder in ENCODERS
    ]

    print(
        f"{len(fetched)} metatiles {META_SIZE[0]}x{META_SIZE[1]} + {META_BUFFER} px buffer,"
        f" {n_tiles} tiles ({n_content} with content, {n_tiles - n_content} uniform);"
        f" decode {decode_per_tile:.2f} ms/tile included; median of {args.rounds} rounds"
    )
    header = (
        f"{'encoding':<16}{'CPU ms/tile':>13}{'content ms':>12}"
        f"{'mean bytes':>12}{'content bytes':>15}{'bytes vs png6':>15}"
    )
    print(header)
    print("-" * len(header))
    png6 = next(row for row in rows if row[0] == "png level 6")
    for label, all_ms, content_ms, mean_all, mean_content, decode_ms in rows:
        print(
            f"{label:<16}{decode_ms + all_ms:>13.2f}{decode_ms + content_ms:>12.2f}"
            f"{mean_all:>12.0f}{mean_content:>15.0f}{mean_all / png6[3]:>15.2f}"
        )


if __name__ == "__main__":
    main()
