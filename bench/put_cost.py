"""What one tile PutObject costs the service: client CPU, wall time, TCP connects.

Starts moto's S3 server on 127.0.0.1 and writes the same 20 kB tile N times in each
way the service can: a bare boto3 ``put_object``, ``S3Store.put`` with its
conditional ``If-None-Match: *``, and ``S3Store.put`` with ``overwrite`` (the
``cache_from_wms`` layers). Counts the TCP connections opened, to show whether the
S3 server keeps them alive (moto does not; S3 does). Prints one table.

    python bench/put_cost.py --puts 200

Run from the repository root, with the dev requirements installed (`make setup-dev`).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from s3maptiler.storage.s3 import make_s3_client  # noqa: E402
from s3maptiler.storage.stores import S3Store  # noqa: E402
from tests.servers import MOTO_CREDENTIALS, MotoServer  # noqa: E402

BUCKET = "bench-put"


class ConnectCounter:
    """Counts socket connects of this process while installed."""

    def __init__(self) -> None:
        self.count = 0
        self._connect = socket.socket.connect

    def __enter__(self) -> ConnectCounter:
        counter, original = self, self._connect

        def connect(sock, address):
            counter.count += 1
            return original(sock, address)

        socket.socket.connect = connect
        return self

    def __exit__(self, *exc: object) -> None:
        socket.socket.connect = self._connect


def measure(put: Callable[[str], object], puts: int, label: str) -> tuple:
    for i in range(5):  # warm the client and its connection pool
        put(f"warm/{label}/{i}.png")
    with ConnectCounter() as connects:
        cpu, wall = time.process_time(), time.perf_counter()
        for i in range(puts):
            put(f"{label}/{i}.png")
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return label, 1000 * cpu / puts, 1000 * wall / puts, connects.count / puts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--puts", type=int, default=200, help="PutObjects per way")
    args = parser.parse_args()
    moto = MotoServer().start()
    try:
        os.environ.update(MOTO_CREDENTIALS)
        client = make_s3_client(4, endpoint_url=moto.url, region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        store = S3Store(BUCKET, client)
        data = os.urandom(20_000)  # the size of a typical PNG tile
        rows = [
            measure(
                lambda k: client.put_object(Bucket=BUCKET, Key=k, Body=data),
                args.puts,
                "boto3 put_object",
            ),
            measure(
                lambda k: store.put(k, data, "image/png", "public, max-age=86400"),
                args.puts,
                "S3Store.put (If-None-Match)",
            ),
            measure(
                lambda k: store.put(k, data, "image/png", "public", overwrite=True),
                args.puts,
                "S3Store.put overwrite",
            ),
        ]
    finally:
        moto.stop()
    print(f"\n{args.puts} PutObjects of 20 kB per way, moto server on 127.0.0.1")
    print(f"{'way':30s} {'CPU ms':>8s} {'wall ms':>8s} {'connects/PUT':>13s}")
    for label, cpu, wall, connects in rows:
        print(f"{label:30s} {cpu:8.2f} {wall:8.2f} {connects:13.2f}")


if __name__ == "__main__":
    main()
