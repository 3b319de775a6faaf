"""Seeding rate: ``s3maptiler seed`` against MapProxy's ``mapproxy-seed``, one run.

Starts on 127.0.0.1 the demo MapServer (lighttpd FastCGI) and moto's S3 server, then
seeds the same area and zoom levels with the same WMS, metatile, meta_buffer and
concurrency four times, each into a fresh bucket or directory:

- ``s3maptiler seed`` to a moto bucket and to a local directory (the console script
  as a user runs it, ``python -m s3maptiler.cli``);
- ``mapproxy-seed`` (MapProxy pinned in bench/requirements-mapproxy.txt, installed in
  bench/.venv-mapproxy) with an S3 cache on the same moto server and a file cache.
  Its configuration comes from bench/compare_mapproxy.py (the same template).

Each figure is wall time of the whole command (start-up included), tiles counted in
the bucket or directory afterwards, and the GetMaps the WMS received. Prints one table.

    python bench/seed_vs_mapproxy.py --bbox=-74.05,40.66,-73.90,40.80 --zoom 10-16 --concurrency 4
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from compare_mapproxy import AWS, ensure_mapproxy_venv, mapproxy_config  # noqa: E402

from devtools.demowms import DemoWMS, unavailable_reason  # noqa: E402
from tests.servers import MotoServer  # noqa: E402

log = logging.getLogger("bench.seed_vs_mapproxy")

SEED_YAML = """\
seeds:
  bench:
    caches: [demo_cache]
    grids: [webmercator]
    coverages: [area]
    levels:
      from: {low}
      to: {high}
coverages:
  area:
    bbox: [{bbox}]
    srs: 'EPSG:4326'
"""


@dataclass(frozen=True)
class Result:
    """One seeding run: tiles stored, GetMaps sent, seconds of wall time."""

    name: str
    tiles: int
    getmaps: int
    seconds: float


def count_keys(s3, bucket: str) -> int:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sum(page.get("KeyCount", 0) for page in pages)


def count_files(root: Path) -> int:
    return sum(1 for p in root.rglob("*.png") if p.is_file())


def timed(argv: Sequence[str], env: dict[str, str], cwd: Path, timeout: float) -> float:
    started = time.monotonic()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    log.info("%s", (done.stdout.strip().splitlines() or ["(no output)"])[-1][:300])
    return seconds


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bbox", default="-74.05,40.66,-73.90,40.80", help="W,S,E,N degrees")
    parser.add_argument("--zoom", default="10-16", help="LOW-HIGH")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--metatile", default="4x4")
    parser.add_argument("--meta-buffer", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    reason = unavailable_reason()
    if reason:
        log.error("no demo WMS: %s", reason)
        return 2
    low, _, high = args.zoom.partition("-")
    high = high or low
    cols, rows = (int(v) for v in args.metatile.lower().split("x"))
    bindir = ensure_mapproxy_venv()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-seed-") as tmp_name, DemoWMS() as wms:
        tmp = Path(tmp_name)
        moto = MotoServer().start()
        try:
            s3 = boto3.client("s3", endpoint_url=moto.url, **_client_args())
            run_id = uuid.uuid4().hex[:8]
            base_env = {**os.environ, **AWS, "AWS_ENDPOINT_URL": moto.url}

            def s3maptiler(name: str, store: dict[str, str], count) -> None:
                work = tmp / name
                work.mkdir()
                env = {
                    **base_env,
                    "PYTHONPATH": str(ROOT),
                    "WMS_SERVER": wms.url,
                    "MAP_LAYERS": wms.layers,
                    "METATILE": args.metatile,
                    "META_BUFFER": str(args.meta_buffer),
                    "LAYERS_FILE": "",
                    **store,
                }
                argv = [sys.executable, "-m", "s3maptiler.cli", "seed"]
                argv += ["--bbox", args.bbox, "--zoom", args.zoom]
                argv += ["--concurrency", str(args.concurrency)]
                before = wms.request_count()
                seconds = timed(argv, env, work, args.timeout)
                results.append(Result(name, count(), wms.request_count() - before, seconds))

            def mapproxy(name: str, cache: dict[str, str], count) -> None:
                work = tmp / name
                work.mkdir()
                config = work / "mapproxy.yaml"
                config.write_text(
                    mapproxy_config(
                        wms_url=wms.url,
                        layers=wms.layers,
                        transparent=False,
                        metatile=(cols, rows),
                        meta_buffer=args.meta_buffer,
                        wms_timeout=30,
                        work_dir=work,
                        cache=cache,
                    )
                )
                seed_conf = work / "seed.yaml"
                seed_conf.write_text(SEED_YAML.format(low=low, high=high, bbox=args.bbox))
                argv = [str(bindir / "mapproxy-seed"), "-f", str(config), "-s", str(seed_conf)]
                argv += ["-c", str(args.concurrency), "--seed", "ALL", "-q"]
                before = wms.request_count()
                seconds = timed(argv, base_env, work, args.timeout)
                results.append(Result(name, count(), wms.request_count() - before, seconds))

            bucket = f"seed-s3m-{run_id}"
            s3.create_bucket(Bucket=bucket)
            s3maptiler("s3maptiler-S3", {"BUCKET_NAME": bucket}, lambda: count_keys(s3, bucket))
            local = tmp / "s3maptiler-local-tiles"
            s3maptiler(
                "s3maptiler-local",
                {"BUCKET_NAME": "", "LOCAL_CACHE_DIR": str(local)},
                lambda: count_files(local),
            )
            mp_bucket = f"seed-mp-{run_id}"
            s3.create_bucket(Bucket=mp_bucket)
            s3_cache = {
                "type": "s3",
                "bucket_name": mp_bucket,
                "endpoint_url": moto.url,
                "region_name": AWS["AWS_DEFAULT_REGION"],
                "directory": "tiles",
                "directory_layout": "tms",
            }
            mapproxy("MapProxy-S3", s3_cache, lambda: count_keys(s3, mp_bucket))
            mp_dir = tmp / "mapproxy-file-tiles"
            file_cache = {"type": "file", "directory": str(mp_dir), "directory_layout": "tms"}
            mapproxy("MapProxy-file", file_cache, lambda: count_files(mp_dir))
        finally:
            moto.stop()
    print_table(results, args, covered_tiles(args.bbox, args.zoom, (cols, rows)))
    return 0


def _client_args() -> dict[str, str]:
    return {
        "region_name": AWS["AWS_DEFAULT_REGION"],
        "aws_access_key_id": AWS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": AWS["AWS_SECRET_ACCESS_KEY"],
    }


def covered_tiles(bbox: str, zoom: str, metatile: tuple[int, int]) -> int:
    """Tiles of the grid that share area with the bbox at the zoom levels: the work
    both tools are asked for. MapProxy also stores the rest of each metatile."""
    from s3maptiler.config import Layer
    from s3maptiler.render.runtime import LayerRuntime
    from s3maptiler.seeding.coverage import Coverage
    from s3maptiler.seeding.plan import zoom_plan

    low, _, high = zoom.partition("-")
    runtime = LayerRuntime.build(Layer("bench", "http://unused", "demo", metatile=metatile))
    coverage = Coverage.from_bbox([float(v) for v in bbox.split(",")])
    return sum(p.tiles for p in zoom_plan(runtime, coverage, range(int(low), int(high or low) + 1)))


def print_table(results: list[Result], args: argparse.Namespace, covered: int) -> None:
    """Rate = tiles of the area / wall seconds (the same numerator for every target);
    ratio = the MapProxy run's seconds / s3maptiler's with the same kind of store."""
    by_name = {r.name: r for r in results}
    print(
        f"seed bbox {args.bbox} z{args.zoom} ({covered} tiles in the area), metatile "
        f"{args.metatile} buffer {args.meta_buffer}, concurrency {args.concurrency}, demo WMS"
    )
    print(
        f"{'target':<18}{'stored':>8}{'GetMaps':>9}{'seconds':>9}{'area tiles/s':>14}"
        f"{'vs MapProxy':>13}"
    )
    for r in results:
        peer = by_name.get(r.name.replace("s3maptiler", "MapProxy").replace("-local", "-file"))
        ratio = f"{peer.seconds / r.seconds:.2f}x" if peer and peer is not r else ""
        rate = covered / r.seconds if r.seconds > 0 else 0.0
        print(f"{r.name:<18}{r.tiles:>8}{r.getmaps:>9}{r.seconds:>9.2f}{rate:>14.1f}{ratio:>13}")


if __name__ == "__main__":
    sys.exit(main())
