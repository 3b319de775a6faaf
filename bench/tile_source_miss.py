"""A known miss through a tile source against a direct GET of the upstream tile.

Starts on 127.0.0.1: the demo MapServer, MapProxy from PyPI serving it as XYZ
(tests/mapproxy.py, installed into bench/.venv-mapproxy on first use), moto's S3 server,
and s3maptiler under gunicorn (Procfile) with one layer whose source is MapProxy's XYZ
template. MapProxy's cache is filled first, so both paths read MapProxy's stored tile:
the comparison is what s3maptiler adds to one upstream GET (its ring of single flight,
the pass-through, the answer; the S3 upload is in the background). For each of N tiles,
in random order: a direct GET of MapProxy's tile and a known miss (``/miss/<key>``).
With ``--cold`` MapProxy's cache starts empty and the two paths ask for different
tiles, so each request has MapProxy render from MapServer (the usual case of a slow
upstream). Also checks that every tile s3maptiler answered is byte-equal to MapProxy's.

    python bench/tile_source_miss.py --tiles 300 --zoom 15

Run from the repository root, with the dev requirements installed (`make setup-dev`).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import boto3
import mercantile
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools.demowms import DemoWMS  # noqa: E402
from s3maptiler.tiles.grids import Tile  # noqa: E402
from tests.mapproxy import MapProxyUpstream  # noqa: E402
from tests.servers import MOTO_CREDENTIALS, GunicornApp, MotoServer  # noqa: E402

GOAL = 1.10  # a known miss's p50 at most this many times the direct GET's p50


def timed_get(session: requests.Session, url: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    answer = session.get(url, timeout=60)
    elapsed = (time.perf_counter() - started) * 1000
    if answer.status_code != 200:
        raise SystemExit(f"{url} -> {answer.status_code} {answer.text[:200]}")
    return elapsed, answer.content


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiles", type=int, default=300, help="distinct tiles")
    parser.add_argument("--zoom", type=int, default=15)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment of the service, e.g. FLEET_LEASES=false (repeatable)",
    )
    parser.add_argument(
        "--cold", action="store_true", help="do not fill MapProxy's cache first: it renders"
    )
    args = parser.parse_args()
    random.seed(args.seed)
    os.environ.update(MOTO_CREDENTIALS)

    centre = mercantile.tile(-73.97, 40.73, args.zoom)
    side = int(args.tiles**0.5) + 1
    tiles = [
        Tile(centre.x + dx - side // 2, centre.y + dy - side // 2, args.zoom)
        for dx in range(side)
        for dy in range(side)
    ][: args.tiles]
    random.shuffle(tiles)

    with tempfile.TemporaryDirectory() as tmp, DemoWMS() as wms:
        upstream = MapProxyUpstream(wms.url, wms.layers).start()
        moto = MotoServer().start()
        try:
            s3 = boto3.client("s3", endpoint_url=moto.url)
            bucket = f"bench-{uuid.uuid4().hex[:8]}"
            s3.create_bucket(Bucket=bucket)
            source_type, template = upstream.template("xyz")
            layers = Path(tmp, "layers.toml")
            layers.write_text(
                f'[layers.imagery]\nprefix = "tiles/"\n'
                f'[layers.imagery.source]\ntype = "{source_type}"\nurl = "{template}"\n'
            )
            app = GunicornApp(
                {
                    **MOTO_CREDENTIALS,
                    "LAYERS_FILE": str(layers),
                    "BUCKET_NAME": bucket,
                    "AWS_ENDPOINT_URL": moto.url,
                    "LOG_LEVEL": "WARNING",
                    **dict(item.split("=", 1) for item in args.env),
                }
            ).start()
            session = requests.Session()

            def upstream_url(t: Tile) -> str:
                return (
                    template.replace("{z}", str(t.z))
                    .replace("{x}", str(t.x))
                    .replace("{y}", str(t.y))
                )

            def miss_url(t: Tile) -> str:
                return f"{app.url}/miss/tiles/{t.z}/{t.x}/{2**t.z - 1 - t.y}.png"

            # Fill MapProxy's cache with every measured tile, and warm both paths.
            for t in [] if args.cold else tiles:
                timed_get(session, upstream_url(t))
            for t in [Tile(centre.x + 100 + i, centre.y, args.zoom) for i in range(10)]:
                timed_get(session, upstream_url(t))
                timed_get(session, miss_url(t))

            direct: list[float] = []
            miss: list[float] = []
            answered: dict[Tile, bytes] = {}
            # Warm: both GET the same tiles. Cold: each its own, both rendered upstream.
            half = len(tiles) // 2
            firsts, seconds = (
                (tiles[:half], tiles[half : 2 * half]) if args.cold else (tiles, tiles)
            )
            pairs = zip(firsts, seconds, strict=True)
            for t_direct, t_miss in pairs:
                steps = [("direct", t_direct), ("miss", t_miss)]
                random.shuffle(steps)
                for name, t in steps:
                    if name == "direct":
                        direct.append(timed_get(session, upstream_url(t))[0])
                    else:
                        elapsed, answered[t] = timed_get(session, miss_url(t))
                        miss.append(elapsed)
            different = sum(
                data != timed_get(session, upstream_url(t))[1] for t, data in answered.items()
            )
            app.stop()
        finally:
            moto.stop()
            upstream.stop()

    floor = statistics.median(direct)
    ratio = statistics.median(miss) / floor
    print(f"\n{args.tiles} distinct z{args.zoom} tiles, concurrency 1, interleaved")
    print(f"{'path':40} {'p50 ms':>8} {'p95 ms':>8} {'p50 / direct':>13}")
    for name, values in (
        ("direct GET of MapProxy's tile", direct),
        ("known miss via tile source", miss),
    ):
        p95 = statistics.quantiles(values, n=100)[94] if len(values) > 1 else values[0]
        print(f"{name:40} {statistics.median(values):8.2f} {p95:8.2f} "
              f"{statistics.median(values) / floor:13.2f}")  # fmt: skip
    print(f"\ntiles not byte-equal to MapProxy's: {different}")
    ok = ratio <= GOAL and different == 0
    print(f"goal: known miss p50 <= {GOAL:.2f} x direct p50: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
