"""Scale-out: three instances x two workers behind a load balancer, against one x one.

Starts on 127.0.0.1: the demo MapServer (lighttpd FastCGI, which counts GetMaps),
moto's S3 server, and Debian's nginx twice over: as the round-robin load balancer in
front of the service instances (as Elastic Beanstalk's balancer spreads requests),
and as a proxy in front of moto that logs every S3 request (PUTs, 412s, lease calls).
Each instance is the Procfile command with its own SPOOL_DIR, as separate hosts have.

Every setup gets the same cold block of z15 tiles over New York (its own bucket),
requested once each in random order by `--clients` concurrent clients through the
balancer, in the redirect form S3 sends (`/miss/<key>`) and as plain keys (`/<key>`,
a store read first). Prints one table; ratios are within this one run.

    python bench/scale_out.py --side 24 --clients 32

Run from the repository root with the dev requirements installed (`make setup-dev`).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import boto3
import mercantile
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools.demowms import DemoWMS  # noqa: E402
from s3maptiler.service.leases import DEFAULT_PREFIX as LEASE_PREFIX  # noqa: E402
from tests.nginx import Nginx  # noqa: E402
from tests.servers import MOTO_CREDENTIALS, GunicornApp, MotoServer, service_cpu_seconds  # noqa: E402

AWS = MOTO_CREDENTIALS  # moto accepts any keys
CPU_PARTS = ("service", "wms", "s3")
CENTRE = (-73.98, 40.705)  # lon/lat: the demo map is detailed only over New York


@dataclass
class Outcome:
    setup: str
    form: str
    tiles: int
    errors: int
    failed: Counter  # answers that were not 200, by status
    getmaps: int
    error_statuses: Counter  # the status of each answer that was not 200
    seconds: float
    latencies: list[float]
    tile_puts: Counter
    refused_puts: int
    lease_calls: int
    store_reads: int
    kinds: Counter  # S3 requests by kind (see s3_kind), from nginx's log
    cpu: dict[str, float]  # CPU seconds of the service, the WMS and S3 over the run

    @property
    def stored_once(self) -> bool:
        return len(self.tile_puts) == self.tiles and set(self.tile_puts.values()) == {1}


def block_keys(side: int, zoom: int, seed: int) -> list[str]:
    """A side x side block of TMS keys aligned on 4x4 metatiles, shuffled."""
    centre = mercantile.tile(*CENTRE, zoom)
    x0 = (centre.x - side // 2) // 4 * 4
    y0 = (centre.y - side // 2) // 4 * 4
    keys = [
        f"tiles/{zoom}/{x}/{2**zoom - 1 - y}.png"
        for x in range(x0, x0 + side)
        for y in range(y0, y0 + side)
    ]
    random.Random(seed).shuffle(keys)
    return keys


def s3_kind(call) -> str:
    """The kind of one S3 request, as /metrics names it (s3maptiler_s3_requests_total)."""
    lease = call.key.startswith(LEASE_PREFIX)
    if call.method == "PUT" and call.key:
        return "lease_put" if lease else "put"
    if call.method == "GET" and call.key and not call.query:
        return "lease_get" if lease else "get"
    if call.method == "HEAD":
        return "head"
    return "list" if call.method == "GET" and "list-type" in call.query else "other"


def run_setup(name, instances, workers, form, keys, clients, wms, moto, s3, spool_root) -> Outcome:
    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    nginx = Nginx(s3=moto.url)
    apps = [
        GunicornApp(
            {
                **AWS,
                "WMS_SERVER": wms.url,
                "MAP_LAYERS": wms.layers,
                "BUCKET_NAME": bucket,
                "AWS_ENDPOINT_URL": nginx.s3_url,
                "WEB_CONCURRENCY": str(workers),
                "SPOOL_DIR": str(spool_root / f"{bucket}-{n}"),
                "LOG_LEVEL": "WARNING",
            }
        )
        for n in range(instances)
    ]
    nginx.instances = [app.url for app in apps]
    try:
        for app in apps:
            app.start()
        nginx.start()
        paths = [f"miss/{k}" if form == "miss" else k for k in keys]
        session = requests.Session()
        session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=clients))

        def fetch(path: str) -> tuple[int, float]:
            started = time.perf_counter()
            answer = session.get(f"{nginx.balancer_url}/{path}", timeout=120)
            return answer.status_code, time.perf_counter() - started

        def cpu() -> dict[str, float]:
            return {
                "service": sum(service_cpu_seconds(app.process.pid) for app in apps),
                "wms": service_cpu_seconds(wms.process.pid),
                "s3": service_cpu_seconds(moto.process.pid),
            }

        before, cpu_before = wms.request_count(), cpu()
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            answers = list(pool.map(fetch, paths))
        seconds = time.perf_counter() - started
        getmaps = wms.request_count() - before
        calls = nginx.settle(quiet=0.5)  # the uploads that follow the answers
        used = {name: value - cpu_before[name] for name, value in cpu().items()}
    finally:
        nginx.stop()
        for app in apps:
            app.stop()
    puts = [c for c in calls if c.method == "PUT" and c.key.startswith("tiles/")]
    return Outcome(
        setup=name,
        form=form,
        tiles=len(keys),
        errors=sum(status != 200 for status, _ in answers),
        failed=Counter(status for status, _ in answers if status != 200),
        getmaps=getmaps,
        error_statuses=Counter(status for status, _ in answers if status != 200),
        seconds=seconds,
        latencies=[latency for _, latency in answers],
        tile_puts=Counter(c.key for c in puts if c.status == 200),
        refused_puts=sum(c.status == 412 for c in puts),
        lease_calls=sum(c.key.startswith(LEASE_PREFIX) for c in calls),
        store_reads=sum(c.method == "GET" and c.key.startswith("tiles/") for c in calls),
        kinds=Counter(s3_kind(c) for c in calls),
        cpu=used,
    )


def lone_misses(count: int, zoom: int, wms, moto, s3, spool_root) -> dict[str, list[float]]:
    """Latency of a lone miss with and without the fleet lease, interleaved: one tile of
    each of `count` distinct metatiles per service, in random order, one at a time."""
    centre = mercantile.tile(*CENTRE, zoom)
    apps = {}
    for name, leases in (("with lease", "true"), ("without lease", "false")):
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        s3.create_bucket(Bucket=bucket)
        apps[name] = GunicornApp(
            {
                **AWS,
                "WMS_SERVER": wms.url,
                "MAP_LAYERS": wms.layers,
                "BUCKET_NAME": bucket,
                "AWS_ENDPOINT_URL": moto.url,
                "WEB_CONCURRENCY": "1",
                "FLEET_LEASES": leases,
                "SPOOL_DIR": str(spool_root / bucket),
                "LOG_LEVEL": "WARNING",
            }
        ).start()
    session = requests.Session()
    latencies: dict[str, list[float]] = {name: [] for name in apps}
    try:
        for n in range(count + 5):  # the first five warm both paths
            x, y = centre.x + 4 * (n % 20) - 40, centre.y + 4 * (n // 20) - 40
            key = f"tiles/{zoom}/{x}/{2**zoom - 1 - y}.png"
            for name in random.sample(list(apps), len(apps)):
                started = time.perf_counter()
                answer = session.get(f"{apps[name].url}/miss/{key}", timeout=60)
                if answer.status_code == 200 and n >= 5:
                    latencies[name].append(time.perf_counter() - started)
    finally:
        for app in apps.values():
            app.stop()
    return latencies


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def report(outcomes: list[Outcome]) -> None:
    print(
        "| setup | requests | errors | GetMaps per 100 tiles | tiles/s | p50 ms | p95 ms "
        "| tiles stored once | refused tile PUTs | lease calls per tile | store reads per tile "
        "| CPU ms per tile: service / WMS / S3 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for o in outcomes:
        print(
            f"| {o.setup} | {'/miss/<key>' if o.form == 'miss' else '/<key>'} | {o.errors} "
            f"| {100 * o.getmaps / o.tiles:.2f} | {o.tiles / o.seconds:.1f} "
            f"| {1000 * percentile(o.latencies, 50):.0f} "
            f"| {1000 * percentile(o.latencies, 95):.0f} "
            f"| {'yes' if o.stored_once else 'NO'} | {o.refused_puts} "
            f"| {o.lease_calls / o.tiles:.3f} | {o.store_reads / o.tiles:.2f} "
            f"| {' / '.join(f'{1000 * o.cpu[k] / o.tiles:.1f}' for k in CPU_PARTS)} |"
        )
    print()
    for o in outcomes:
        if o.errors:
            counted = sorted(o.error_statuses.items())
            statuses = ", ".join(f"{n} x {status}" for status, n in counted)
            print(f"errors of {o.setup} {o.form}: {statuses}")
    for form in ("miss", "key"):
        pair = {o.setup: o for o in outcomes if o.form == form}
        if len(pair) == 2:
            one, fleet = pair["1 x 1"], pair["3 x 2"]
            ratio = (fleet.tiles / fleet.seconds) / (one.tiles / one.seconds)
            print(f"throughput 3 x 2 over 1 x 1 ({form} form): {ratio:.2f}x")
    for o in outcomes:
        if o.failed:
            print(f"errors of {o.setup} {o.form}: {dict(o.failed)}")
    print()
    kinds = ("get", "put", "lease_put", "lease_get", "head", "list", "other")
    print("S3 requests per tile by kind (nginx's log; put counts refused 412s too)")
    print(f"| setup | requests | {' | '.join(kinds)} | all |")
    print("|---|---|" + "---|" * (len(kinds) + 1))
    for o in outcomes:
        per = [o.kinds[k] / o.tiles for k in kinds]
        form = "/miss/<key>" if o.form == "miss" else "/<key>"
        print(f"| {o.setup} | {form} | {' | '.join(f'{v:.3f}' for v in per)} | {sum(per):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=24, help="tiles per side of the block")
    parser.add_argument("--zoom", type=int, default=15)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument(
        "--forms",
        default="miss,key",
        choices=("miss", "key", "miss,key"),
        help="the redirect form (/miss/<key>), plain keys (/<key>), or both (miss,key)",
    )
    parser.add_argument(
        "--lone", type=int, default=60, help="lone misses timed per service (0: none)"
    )
    args = parser.parse_args()
    moto = MotoServer().start()
    wms = DemoWMS().start()
    s3 = boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1",
                      aws_access_key_id=AWS["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=AWS["AWS_SECRET_ACCESS_KEY"])  # fmt: skip
    spool_root = Path(tempfile.mkdtemp(prefix="bench-spool-"))
    outcomes = []
    try:
        # Warm MapServer (fonts, shapefile indexes) so no setup pays for it.
        requests.get(wms.url, params={"SERVICE": "WMS", "REQUEST": "GetCapabilities"}, timeout=30)
        for round_, form in enumerate(args.forms.split(",")):
            keys = block_keys(args.side, args.zoom, seed=round_)
            for name, instances, workers in (("1 x 1", 1, 1), ("3 x 2", 3, 2)):
                outcomes.append(
                    run_setup(
                        name,
                        instances,
                        workers,
                        form,
                        keys,
                        args.clients,
                        wms,
                        moto,
                        s3,
                        spool_root,
                    )  # fmt: skip
                )
        lone = lone_misses(args.lone, args.zoom, wms, moto, s3, spool_root) if args.lone else None
    finally:
        wms.stop()
        moto.stop()
    report(outcomes)
    if lone is None:
        return
    with_lease, without = (statistics.median(lone[k]) for k in ("with lease", "without lease"))
    print(
        f"lone miss, 4x4 metatile, c=1, p50: {1000 * with_lease:.1f} ms with the lease, "
        f"{1000 * without:.1f} ms without (+{1000 * (with_lease - without):.1f} ms, "
        f"{len(lone['with lease'])} misses each, interleaved)"
    )


if __name__ == "__main__":
    main()
