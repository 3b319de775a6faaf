"""Tile-miss latency against direct WMS latency, measured interleaved in one run.

Starts on 127.0.0.1: the demo MapServer (lighttpd FastCGI), moto's S3 server, and
s3maptiler under gunicorn with the Procfile command. For each of N distinct tiles it
sends, in random order, a direct WMS GetMap of the tile's bbox and a request to the
service; then it reads every tile again as a hit. Prints one table.

    python bench/miss_latency.py --tiles 300 --zoom 15
    python bench/miss_latency.py --tiles 300 --s3-fault hang   # S3 down, see below

With ``--s3-fault refused|hang|slowdown`` moto sits behind `tests/faults3.py`'s proxy,
which after the warm-up refuses every connection, accepts them and never answers, or
answers every call 503 SlowDown: the misses are then measured while S3 is down (every
one must still be answered 200), and nothing more may be stored.

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
from s3maptiler.render.getmap import WMSSource, getmap_url  # noqa: E402
from s3maptiler.tiles.grids import WEB_MERCATOR, Tile  # noqa: E402
from tests.faults3 import DOWN, FaultS3Proxy  # noqa: E402
from tests.servers import MOTO_CREDENTIALS, GunicornApp, MotoServer, service_cpu_seconds  # noqa: E402

AWS = MOTO_CREDENTIALS  # moto accepts any keys


def timed_get(session: requests.Session, url: str) -> float:
    started = time.perf_counter()
    answer = session.get(url, timeout=60)
    elapsed = (time.perf_counter() - started) * 1000
    if answer.status_code != 200:
        raise SystemExit(f"{url} -> {answer.status_code} {answer.text[:200]}")
    return elapsed


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiles", type=int, default=300, help="distinct tiles per path")
    parser.add_argument("--zoom", type=int, default=15)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--store", choices=("s3", "local"), default="s3", help="the tile store")
    parser.add_argument(
        "--s3-fault", choices=DOWN, help="measure the misses while S3 is down in this shape"
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment of the service, e.g. WEB_CONCURRENCY=1 (repeatable)",
    )
    args = parser.parse_args()
    random.seed(args.seed)
    os.environ.update(AWS)

    # Distinct tiles over New York, two sets: known misses and plain (cache read first).
    centre = mercantile.tile(-73.97, 40.73, args.zoom)
    side = int((2 * args.tiles) ** 0.5) + 1
    tiles = [
        Tile(centre.x + dx - side // 2, centre.y + dy - side // 2, args.zoom)
        for dx in range(side)
        for dy in range(side)
    ][: 2 * args.tiles]
    random.shuffle(tiles)
    known, plain = tiles[: args.tiles], tiles[args.tiles :]

    with tempfile.TemporaryDirectory() as tmp, DemoWMS() as wms:
        moto = MotoServer().start()
        s3 = boto3.client("s3", endpoint_url=moto.url)
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(Bucket=bucket)
        proxy = FaultS3Proxy(moto.url).start() if args.s3_fault else None
        endpoint = proxy.url if proxy else moto.url
        store = {"BUCKET_NAME": bucket, "AWS_ENDPOINT_URL": endpoint} if args.store == "s3" else {}
        app = GunicornApp(
            {
                **AWS,
                "WMS_SERVER": wms.url,
                "MAP_LAYERS": wms.layers,
                **store,
                "LOCAL_CACHE_DIR": f"{tmp}/tiles",
                "LOG_LEVEL": "WARNING",
                # One GetMap per tile: the comparison is a miss against the GetMap it makes.
                "METATILE": "1x1",
                "META_BUFFER": "0",
                **dict(item.split("=", 1) for item in args.env),
            }
        ).start()
        session = requests.Session()
        source = WMSSource(url=wms.url, layers=wms.layers)

        def key(t: Tile) -> str:
            return f"tiles/{t.z}/{t.x}/{2**t.z - 1 - t.y}.png"

        def direct(t: Tile) -> float:
            return timed_get(session, getmap_url(source, WEB_MERCATOR.tile_bbox(t), 256, 256))

        # Warm both paths (connections, MapServer's first loads) on tiles not measured.
        for t in [Tile(centre.x + 100 + i, centre.y, args.zoom) for i in range(10)]:
            direct(t)
            timed_get(session, f"{app.url}/miss/{key(t)}")
        if proxy is not None:
            time.sleep(2)  # the warm-up's uploads land
            proxy.fail_all(args.s3_fault)

        results: dict[str, list[float]] = {
            "direct": [],
            "known": [],
            "plain": [],
            "direct2": [],
            "hit": [],
        }
        wms_before = wms.request_count()
        cpu_before = service_cpu_seconds(app.process.pid)
        for tk, tp in zip(known, plain, strict=True):
            steps = [
                ("direct", lambda t=tk: direct(t)),
                ("known", lambda t=tk: timed_get(session, f"{app.url}/miss/{key(t)}")),
                ("direct2", lambda t=tp: direct(t)),
                ("plain", lambda t=tp: timed_get(session, f"{app.url}/{key(t)}")),
            ]
            random.shuffle(steps)
            for name, step in steps:
                results[name].append(step())
        cpu_misses = service_cpu_seconds(app.process.pid) - cpu_before
        wms_calls = wms.request_count() - wms_before - 2 * args.tiles  # minus the direct ones

        time.sleep(2)  # let the uploads finish before the hit pass
        cpu_before = service_cpu_seconds(app.process.pid)
        for t in known if proxy is None else []:  # S3 down: no hits to measure
            results["hit"].append(timed_get(session, f"{app.url}/{key(t)}"))
        cpu_hits = service_cpu_seconds(app.process.pid) - cpu_before
        if proxy is not None:
            heartbeat = session.get(f"{app.url}/heartbeat", timeout=10).text
            deep = session.get(f"{app.url}/heartbeat?deep=1", timeout=10).json()["checks"]
            proxy.heal()
            proxy.stop()
        if args.store == "s3":
            stored = sum(
                1
                for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
                for _ in page.get("Contents", [])
            )
        else:
            stored = sum(1 for _ in Path(tmp, "tiles").rglob("*.png"))
        app.stop()
        moto.stop()

    floor = statistics.median(results["direct"] + results["direct2"])
    rows = [
        ("direct WMS GetMap (floor)", results["direct"] + results["direct2"]),
        ("miss, known (redirect form)", results["known"]),
        ("miss, cache read first", results["plain"]),
        ("hit (S3 GetObject)" if args.store == "s3" else "hit (file)", results["hit"]),
    ]
    rows = [(name, values) for name, values in rows if values]
    down = f", S3 down: {args.s3_fault}" if args.s3_fault else ""
    print(f"\n{args.tiles} distinct z{args.zoom} tiles per path, concurrency 1, interleaved{down}")
    print(f"{'path':32} {'p50 ms':>8} {'p95 ms':>8} {'p50 / WMS p50':>14}")
    for name, values in rows:
        p50 = statistics.median(values)
        print(f"{name:32} {p50:8.1f} {pct(values, 95):8.1f} {p50 / floor:14.2f}")
    misses = 2 * args.tiles
    print(
        f"\nWMS GetMaps per miss: {wms_calls / misses:.2f}; objects stored: {stored} "
        + (
            "(warm-up 10; none while S3 was down)"
            if args.s3_fault
            else f"(misses {misses} + warm-up 10)"
        )
    )
    per_hit = cpu_hits * 1000 / len(results["hit"]) if results["hit"] else float("nan")
    print(
        f"service CPU per miss (S3 write included): {cpu_misses * 1000 / misses:.2f} ms; "
        f"per hit: {per_hit:.2f} ms"
    )
    if args.s3_fault:
        print(f"every miss answered 200; heartbeat: {heartbeat}")
        print(f"deep heartbeat: {deep}")


if __name__ == "__main__":
    main()
