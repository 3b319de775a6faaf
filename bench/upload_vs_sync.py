"""`s3maptiler upload` against `aws s3 sync`: the same tile tree, the same S3 endpoint.

Starts moto's S3 server on 127.0.0.1, writes a TMS tree of N small PNG tiles, and
uploads it with each tool, each into a fresh bucket, both as the user would run
them (a new process, default settings). Then runs both again on the unchanged tree
(everything skipped), for a few rounds in alternating order. Prints one table of
medians and the ratios.

    python bench/upload_vs_sync.py --files 3000
    python bench/upload_vs_sync.py --files 3000 --latency-ms 30

On one machine both tools share the CPU with moto, whose ~2.3 ms of CPU per PutObject
in one Python process is a floor for both; `--latency-ms` puts tests/servers.py's
DelayProxy in front of moto so that each request also waits like a real S3 round trip,
where the number of requests in flight decides the time.

The AWS CLI is installed on first use into its own virtual environment
`bench/.venv-awscli` (pinned below, never part of requirements*.txt); when that is
impossible the script says so and times s3maptiler alone. Run from the repository
root with the dev requirements installed (`make setup-dev`).
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from statistics import median

import boto3
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import MOTO_CREDENTIALS, DelayProxy, MotoServer  # noqa: E402

log = logging.getLogger("upload_vs_sync")

AWSCLI_PIN = "awscli==1.46.2"
VENV = ROOT / "bench" / ".venv-awscli"
ZOOM = 12
AWS = MOTO_CREDENTIALS  # moto accepts any keys


def ensure_awscli(venv: Path = VENV) -> Path | None:
    """The `aws` executable of the bench venv, installing the pinned CLI if needed;
    None (with the reason logged) when it cannot be installed."""
    aws = venv / "bin" / "aws"
    stamp = venv / ".pin"
    if aws.exists() and stamp.exists() and stamp.read_text() == AWSCLI_PIN:
        return aws
    try:
        if not (venv / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", AWSCLI_PIN],
            check=True,
            timeout=900,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("cannot install %s into %s: %s", AWSCLI_PIN, venv, exc)
        return None
    stamp.write_text(AWSCLI_PIN)
    return aws


def tile_png(z: int, x: int, y: int) -> bytes:
    """A 256 px PNG that names its tile: small like a real map tile of flat areas."""
    image = Image.new("RGB", (256, 256), ((x * 37) % 256, (y * 59) % 256, 180))
    ImageDraw.Draw(image).text((8, 8), f"{z}/{x}/{y}", fill=(0, 0, 0))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def write_tree(root: Path, count: int) -> int:
    """`count` tiles `z/x/y.png` at zoom 12 in a square block; total bytes written."""
    side = 1
    while side * side < count:
        side += 1
    written = total = 0
    for x in range(1000, 1000 + side):
        for y in range(1000, 1000 + side):
            if written == count:
                return total
            path = root / str(ZOOM) / str(x) / f"{y}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            data = tile_png(ZOOM, x, y)
            path.write_bytes(data)
            written += 1
            total += len(data)
    return total


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} {argv[1]} failed ({done.returncode}):\n{done.stderr}")
    return elapsed, done


def count_objects(s3, bucket: str) -> int:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sum(len(page.get("Contents", [])) for page in pages)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=3000, help="tiles in the tree")
    parser.add_argument("--workers", type=int, default=32, help="s3maptiler upload --workers")
    parser.add_argument("--rounds", type=int, default=3, help="runs per tool; medians shown")
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="hold every S3 request this long in a proxy, as a network round trip would",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    aws = ensure_awscli()
    workdir = Path(tempfile.mkdtemp(prefix="s3maptiler-bench-"))
    server = MotoServer().start()
    proxy = DelayProxy(server.url, args.latency_ms / 1000).start() if args.latency_ms else None
    endpoint = proxy.url if proxy else server.url
    try:
        tree = workdir / "tiles"
        size = write_tree(tree, args.files)
        log.info("wrote %d tiles (%.1f MiB) under %s", args.files, size / 2**20, tree)
        env = {
            **os.environ,
            **AWS,
            "AWS_ENDPOINT_URL": endpoint,
            "PYTHONPATH": str(ROOT),
            # Neither tool may pick up a user's profile or config.
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }
        env.pop("LAYERS_FILE", None)
        s3 = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1",
                          aws_access_key_id=AWS["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=AWS["AWS_SECRET_ACCESS_KEY"])  # fmt: skip
        tools = {
            f"s3maptiler upload (--workers {args.workers})": lambda bucket: [
                sys.executable, "-m", "s3maptiler.cli", "upload", str(tree),
                "--bucket", bucket, "--prefix", "tiles/", "--layout-from", "tms",
                "--layout-to", "tms", "--workers", str(args.workers),
            ],
        }  # fmt: skip
        if aws is not None:
            tools[f"aws s3 sync ({AWSCLI_PIN}, defaults)"] = lambda bucket: [
                str(aws), "s3", "sync", str(tree), f"s3://{bucket}/tiles/",
                "--endpoint-url", endpoint, "--only-show-errors",
            ]  # fmt: skip
        times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in tools}
        for round_ in range(args.rounds):
            # Alternate the order so that neither tool always runs on a warmer server.
            names = list(tools) if round_ % 2 == 0 else list(reversed(tools))
            for name in names:
                bucket = f"bench-{uuid.uuid4().hex[:8]}"
                s3.create_bucket(Bucket=bucket)
                first, _ = timed(tools[name](bucket), env)
                again, _ = timed(tools[name](bucket), env)
                if count_objects(s3, bucket) != args.files:
                    raise RuntimeError(f"{name} did not upload every tile")
                times[name][0].append(first)
                times[name][1].append(again)
                log.info("round %d %s: %.2f s, again %.2f s", round_ + 1, name, first, again)
        rows = [(name, median(a), median(b)) for name, (a, b) in times.items()]
    finally:
        if proxy:
            proxy.stop()
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    delay = f" behind a {args.latency_ms:g} ms delay proxy" if args.latency_ms else ""
    print(f"\n{args.files} PNG tiles ({size / args.files / 1024:.1f} KiB each), moto server on "
          f"127.0.0.1{delay}, {os.cpu_count()} CPUs; median of {args.rounds} rounds, "
          "wall time incl. process start")  # fmt: skip
    print("| tool | first upload s | tiles/s | re-run, unchanged s | tiles/s |")
    print("|---|---|---|---|---|")
    for name, first, again in rows:
        print(f"| {name} | {first:.2f} | {args.files / first:.0f} | {again:.2f} | "
              f"{args.files / again:.0f} |")  # fmt: skip
    if len(rows) == 2:
        (_, ours_first, ours_again), (_, sync_first, sync_again) = rows
        print("\nratio aws s3 sync / s3maptiler upload: "
              f"first upload {sync_first / ours_first:.2f}x, "
              f"unchanged re-run {sync_again / ours_again:.2f}x")  # fmt: skip
    else:
        print("\naws s3 sync not available (see the log above): no ratio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
