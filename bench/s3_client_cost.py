"""Client CPU per S3 call of the data path, for each candidate client, in one run.

Starts moto's S3 server and Debian's nginx in front of it (`tests/nginx.py`): moto
closes every connection after each answer, S3 does not, and nginx keeps the
client's connections alive as S3 would. Each client makes `--calls` calls of each
kind the tile path makes, against both endpoints:

- ``get_miss``: GetObject of a key that is not there (404);
- ``get_hit``: GetObject of a 20 kB tile;
- ``put``: PutObject, unconditional (``cache_from_wms`` layers);
- ``put_inm``: PutObject ``If-None-Match: *`` of a new key (every tile write);
- ``put_im``: PutObject ``If-Match`` the current ETag (a lease replaced).

Clients: ``botocore`` tuned (one client, pooled keep-alive, checksums only when
required, no parameter validation), ``obstore`` (Rust object_store, if installed)
and ``lean``, the project's data-path client (`s3maptiler/storage/objects.py`:
botocore's credentials, its own SigV4, one requests session). CPU is this
process's (`time.process_time`, all threads, obstore's runtime included), per call,
median of the calls; the servers' CPU is not counted. Prints one table.

    python bench/s3_client_cost.py --calls 300

Run from the repository root with the dev requirements (`make setup-dev`) and nginx
(`make system`).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402

from s3maptiler.storage.objects import ObjectClient  # noqa: E402
from tests.nginx import Nginx  # noqa: E402
from tests.servers import MOTO_CREDENTIALS, MotoServer  # noqa: E402

KEY_ID = MOTO_CREDENTIALS["AWS_ACCESS_KEY_ID"]
SECRET = MOTO_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]
REGION = MOTO_CREDENTIALS["AWS_DEFAULT_REGION"]
BOTO_CREDENTIALS = {
    "aws_access_key_id": KEY_ID,
    "aws_secret_access_key": SECRET,
    "region_name": REGION,
}

BUCKET = "bench-client"
TILE = bytes(range(256)) * 80  # 20 kB
KINDS = ("get_miss", "get_hit", "put", "put_inm", "put_im")


def botocore_calls(endpoint: str) -> dict[str, Callable[[int], Any]]:
    config = Config(
        max_pool_connections=4,
        retries={"mode": "standard", "total_max_attempts": 3},
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        parameter_validation=False,
        tcp_keepalive=True,
    )
    client = boto3.session.Session().client(
        "s3", endpoint_url=endpoint, config=config, **BOTO_CREDENTIALS
    )
    etag = {"v": client.put_object(Bucket=BUCKET, Key="im/b", Body=TILE)["ETag"]}

    def get_miss(i: int) -> None:
        with contextlib.suppress(client.exceptions.NoSuchKey):
            client.get_object(Bucket=BUCKET, Key=f"none/{i}")

    def get_hit(i: int) -> None:
        client.get_object(Bucket=BUCKET, Key="hit.png")["Body"].read()

    def put_im(i: int) -> None:
        etag["v"] = client.put_object(Bucket=BUCKET, Key="im/b", Body=TILE, IfMatch=etag["v"])[
            "ETag"
        ]

    return {
        "get_miss": get_miss,
        "get_hit": get_hit,
        "put": lambda i: client.put_object(Bucket=BUCKET, Key=f"b/p/{i}", Body=TILE),
        "put_inm": lambda i: client.put_object(
            Bucket=BUCKET, Key=f"b/n/{i}", Body=TILE, IfNoneMatch="*"
        ),
        "put_im": put_im,
    }


def obstore_calls(endpoint: str) -> dict[str, Callable[[int], Any]] | None:
    try:
        import obstore
        from obstore.store import S3Store as ObjectStore
    except ImportError:
        return None
    store = ObjectStore(
        BUCKET,
        endpoint=endpoint,
        region=REGION,
        access_key_id=KEY_ID,
        secret_access_key=SECRET,
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )
    etag = {"v": obstore.put(store, "im/o", TILE)["e_tag"]}

    def get_miss(i: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            obstore.get(store, f"none/{i}").bytes()

    def put_im(i: int) -> None:
        mode = {"e_tag": etag["v"]}
        etag["v"] = obstore.put(store, "im/o", TILE, mode=mode)["e_tag"]

    return {
        "get_miss": get_miss,
        "get_hit": lambda i: obstore.get(store, "hit.png").bytes(),
        "put": lambda i: obstore.put(store, f"o/p/{i}", TILE),
        "put_inm": lambda i: obstore.put(store, f"o/n/{i}", TILE, mode="create"),
        "put_im": put_im,
    }


def lean_calls(endpoint: str) -> dict[str, Callable[[int], Any]]:
    from botocore.credentials import Credentials

    client = ObjectClient(Credentials(KEY_ID, SECRET), REGION, endpoint, pool_size=4)
    etag = {"v": client.put(BUCKET, "im/l", TILE, {}).headers["ETag"]}
    png = {"Content-Type": "image/png"}

    def put_im(i: int) -> None:
        reply = client.put(BUCKET, "im/l", TILE, {**png, "If-Match": etag["v"]})
        assert reply.status == 200, reply.status
        etag["v"] = reply.headers["ETag"]

    return {
        "get_miss": lambda i: client.get(BUCKET, f"none/{i}"),
        "get_hit": lambda i: client.get(BUCKET, "hit.png").body,
        "put": lambda i: client.put(BUCKET, f"l/p/{i}", TILE, png),
        "put_inm": lambda i: client.put(BUCKET, f"l/n/{i}", TILE, {**png, "If-None-Match": "*"}),
        "put_im": put_im,
    }


def measure(call: Callable[[int], Any], calls: int, offset: int) -> float:
    """Median CPU milliseconds of this process per call (after 10 warm-up calls)."""
    for i in range(10):
        call(offset + 100_000 + i)
    spent = []
    for i in range(calls):
        before = time.process_time()
        call(offset + i)
        spent.append(time.process_time() - before)
    return statistics.median(spent) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="calls per kind and client")
    args = parser.parse_args()
    moto = MotoServer().start()
    nginx = Nginx(s3=moto.url).start()
    try:
        setup = boto3.client("s3", endpoint_url=moto.url, **BOTO_CREDENTIALS)
        setup.create_bucket(Bucket=BUCKET)
        setup.put_object(Bucket=BUCKET, Key="hit.png", Body=TILE, ContentType="image/png")
        rows = []
        endpoints = (("moto (closes)", moto.url), ("nginx keep-alive", nginx.s3_url))
        for round_, (where, url) in enumerate(endpoints):
            makers = (("botocore tuned", botocore_calls), ("obstore 0.12.1", obstore_calls),
                      ("lean (ours)", lean_calls))  # fmt: skip
            for name, make in makers:
                calls = make(url)
                if calls is None:
                    rows.append((where, name, ["n/a"] * len(KINDS)))
                    continue
                figures = [
                    f"{measure(calls[k], args.calls, round_ * 1_000_000):.3f}" for k in KINDS
                ]
                rows.append((where, name, figures))
        header = ("endpoint", "client", *(f"{k} ms" for k in KINDS))
        print(" | ".join(header))
        print(" | ".join("---" for _ in header))
        for where, name, figures in rows:
            print(" | ".join((where, name, *figures)))
        print(f"\nclient CPU per call, median of {args.calls}; machine: see docs/benchmarks.md")
    finally:
        nginx.stop()
        moto.stop()


if __name__ == "__main__":
    main()
