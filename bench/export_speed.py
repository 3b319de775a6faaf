"""How fast ``s3maptiler export`` writes, how much memory it holds, and how small
PMTiles gets with its dedup.

1. A synthetic local cache of ``--tiles`` distinct small PNG tiles (one 256 px PNG with
   a different counter appended to each copy, so no two are equal) under
   ``var/bench-export/`` (not committed; kept between runs), then one export to each
   format as a real ``s3maptiler export`` process: tiles per second (the command's
   own figure) and the process's peak RSS (``wait4``'s ``ru_maxrss``).
2. The same stream read alone, without a writer, in this process: the reading rate
   an export cannot beat.
3. With ``--seeded``: the demo MapServer WMS seeds an area into a local directory
   (``s3maptiler seed``), then the area is exported to PMTiles: the archive's size
   beside the tiles' own bytes (blank sea and land tiles are stored once).

    python bench/export_speed.py                       # 100,000 tiles, three formats
    python bench/export_speed.py --tiles 20000 --seeded

Run from the repository root, with the dev requirements installed (`make setup-dev`).
"""

from __future__ import annotations

import argparse
import io
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from s3maptiler.config import Layer  # noqa: E402
from s3maptiler.render.runtime import LayerRuntime  # noqa: E402
from s3maptiler.seeding.coverage import Coverage  # noqa: E402
from s3maptiler.seeding.plan import covered_tiles  # noqa: E402

AREA = "-74.60,40.30,-73.40,41.10"  # New York and around: 100,000 tiles by z17
SEEDED_AREA = "-74.30,40.40,-73.60,40.80"  # New York and the sea to its south
CACHE = ROOT / "var" / "bench-export"


def env(cache: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "LAYERS_FILE": "",
        "BUCKET_NAME": "",
        "WMS_SERVER": "http://127.0.0.1:9/wms",
        "MAP_LAYERS": "demo",
        "LOCAL_CACHE_DIR": str(cache),
        **extra,
    }


def synthetic_cache(tiles: int) -> tuple[Path, str]:
    """``tiles`` distinct tiles of AREA from zoom 0 up; the zoom range they span."""
    cache = CACHE / f"{tiles}"
    runtime = LayerRuntime.build(Layer(name="default", wms_url="http://x", wms_layers="demo"))
    coverage = Coverage.from_bbox([float(v) for v in AREA.split(",")])
    out = io.BytesIO()
    Image.new("RGB", (256, 256), (170, 200, 230)).save(out, "PNG")
    base = out.getvalue()
    done = cache / "complete"
    written, z = 0, 0
    while written < tiles:
        for tile in covered_tiles(runtime, coverage, z):
            if written == tiles:
                break
            if not done.exists():
                path = cache / runtime.key_to_store(tile, "png")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(base + written.to_bytes(4, "big"))  # after IEND: ignored
            written += 1
        z += 1
    done.touch()
    return cache, f"0-{z - 1}"


def export(cache: Path, zooms: str, bbox: str, output: Path) -> tuple[float, float, str]:
    """tiles/s (the command's figure), peak RSS in MB, the summary line."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "s3maptiler.cli",
            "export",
            "default",
            str(output),
            "--zoom",
            zooms,
            "--bbox",
            bbox,
            "--force",
        ],
        env=env(cache),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, status, usage = os.wait4(process.pid, 0)
    stdout, stderr = process.stdout.read(), process.stderr.read()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise SystemExit(f"export failed: {stderr.strip()}")
    rate = float(re.search(r"\(([0-9.]+) tiles/s\)", stdout)[1])
    return rate, usage.ru_maxrss / 1024, stdout.strip()


def read_only(cache: Path, zooms: str) -> float:
    """Tiles/s of the export's reading alone (the same stream, no writer), in-process."""
    from s3maptiler.seeding.export import ExportReport, ExportRequest, stored_tiles
    from s3maptiler.storage.stores import LocalStore

    runtime = LayerRuntime.build(Layer(name="default", wms_url="http://x", wms_layers="demo"))
    low, high = (int(v) for v in zooms.split("-"))
    coverage = Coverage.from_bbox([float(v) for v in AREA.split(",")])
    request = ExportRequest(runtime, "png", coverage, list(range(low, high + 1)), "default")
    started, found = time.perf_counter(), 0
    for _tile, stored in stored_tiles(request, LocalStore(cache), ExportReport()):
        found += stored is not None
    return found / (time.perf_counter() - started)


def seeded(work: Path) -> None:
    from devtools.demowms import DemoWMS, unavailable_reason

    reason = unavailable_reason()
    if reason:
        print(f"--seeded: {reason}")
        return
    wms = DemoWMS().start()
    try:
        cache = work / "seeded"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "s3maptiler.cli",
                "seed",
                "--zoom",
                "8-15",
                "--bbox",
                SEEDED_AREA,
                "--concurrency",
                "2",
            ],
            env=env(cache, WMS_SERVER=wms.url, MAP_LAYERS=wms.layers),
            capture_output=True,
            text=True,
            cwd=work,
        )
        if done.returncode:
            raise SystemExit(f"seed failed: {done.stderr.strip()}")
    finally:
        wms.stop()
    tile_bytes = sum(p.stat().st_size for p in cache.rglob("*.png"))
    count = sum(1 for _ in cache.rglob("*.png"))
    archive = work / "seeded.pmtiles"
    _, _, line = export(cache, "8-14", SEEDED_AREA, archive)
    size = archive.stat().st_size
    print(f"\nseeded area {SEEDED_AREA} z8-14 from the demo WMS: {count} tiles")
    print(f"{'tiles bytes':>14}  {'PMTiles bytes':>14}  ratio")
    distinct = len({p.read_bytes() for p in cache.rglob("*.png")})
    print(f"{tile_bytes:>14}  {size:>14}  {size / tile_bytes:.3f}  ({distinct} distinct tiles)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=100_000)
    parser.add_argument("--formats", default="pmtiles,mbtiles,gpkg")
    parser.add_argument("--seeded", action="store_true", help="also the seeded-area dedup test")
    args = parser.parse_args(argv)
    started = time.monotonic()
    cache, zooms = synthetic_cache(args.tiles)
    print(f"synthetic cache: {args.tiles} tiles, z{zooms}, {time.monotonic() - started:.1f} s")
    print(f"{'format':>8}  {'tiles/s':>8}  {'peak RSS MB':>11}  file MB")
    with tempfile.TemporaryDirectory(dir=ROOT / "var") as tmp:
        work = Path(tmp)
        for kind in args.formats.split(","):
            output = work / f"out.{kind}"
            rate, rss, _ = export(cache, zooms, AREA, output)
            size = output.stat().st_size / 1e6
            print(f"{kind:>8}  {rate:>8.0f}  {rss:>11.1f}  {size:.1f}")
        print(f"reading alone (no writer, in this process): {read_only(cache, zooms):.0f} tiles/s")
        if args.seeded:
            seeded(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
