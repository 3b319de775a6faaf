"""Soak: a realistic request mix at concurrency 64 for minutes, against gunicorn.

Starts on 127.0.0.1: the demo MapServer (lighttpd FastCGI), moto's S3 server, and
s3maptiler under gunicorn with the Procfile command and `gunicorn.conf.py` as they
are (workers, threads, max_requests recycling, graceful timeout), BUCKET_NAME on
moto. Seeds the bucket with `--seed-tiles` tiles (the hits), then runs `--concurrency`
client threads for `--seconds`: 80 % hits, 20 % misses (a quarter of them repeat a
recent miss), about 1 % bad requests. At the end it waits for the upload queue to
drain and counts which misses reached the bucket. Prints one table.

    python bench/soak.py --seconds 120
    python bench/soak.py --seconds 180 --json bench/results/soak.json

Run from the repository root, with the dev requirements installed (`make setup-dev`)
and the demo WMS available (`make system`). The load generator shares the machine's
cores with everything it measures: read latencies as a soak's, not a benchmark's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import mercantile
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools.demowms import DemoWMS  # noqa: E402
from tests.servers import (  # noqa: E402
    MOTO_CREDENTIALS,
    DelayProxy,
    GunicornApp,
    MotoServer,
    status_kib,
    worker_pids,
)

AWS = MOTO_CREDENTIALS  # moto accepts any keys
# Addresses the service must refuse (4xx), sent as ~1 % of the load.
BAD_PATHS = [
    "/tiles/3/%2e%2e/4/2.png",  # (a literal ".." would be removed by the client)
    "/tiles/3/4%2F2.png",
    "/tiles/-1/0/0.png",
    "/tiles/99999999999999999999/0/0.png",
    "/tiles/23/0/0.png",
    "/tiles/3/%EF%BC%94/2.png",
    "/tiles/3/4/2.png%00",
    "/nope/3/4/2.png",
    "/?tile=../../etc/passwd",
    "/tiles/3/4/2.gif",
]
STALL_MS = 1000.0


@dataclass
class Sample:
    kind: str  # hit | miss | repeat | bad
    status: int  # 0: no answer (client timeout or connection error)
    ms: float
    at: float  # seconds since the load started, when the request was sent
    source: str = ""  # X-Tile-Source: cache, render, inflight


@dataclass
class Load:
    """What the client threads share: the miss keys handed out and every sample."""

    miss_tiles: list[tuple[int, int, int]]
    rng_seed: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    next_miss: int = 0
    recent: list[str] = field(default_factory=list)
    missed: set[str] = field(default_factory=set)  # miss keys answered 200
    samples: list[Sample] = field(default_factory=list)

    def new_miss(self) -> str | None:
        with self.lock:
            if self.next_miss >= len(self.miss_tiles):
                return None
            x, y, z = self.miss_tiles[self.next_miss]
            self.next_miss += 1
        return tms_key(x, y, z)

    def repeat_miss(self) -> str | None:
        with self.lock:
            return random.choice(self.recent) if self.recent else None

    def record(self, sample: Sample, key: str | None) -> None:
        with self.lock:
            self.samples.append(sample)
            if key is not None and sample.kind == "miss" and sample.status == 200:
                self.missed.add(key)
                self.recent.append(key)
                del self.recent[:-200]


def tms_key(x: int, y: int, z: int) -> str:
    """The TMS key of the XYZ tile (x, y, z)."""
    return f"tiles/{z}/{x}/{2**z - 1 - y}.png"


def block(lon: float, lat: float, z: int, count: int) -> list[tuple[int, int, int]]:
    """`count` distinct XYZ tiles in a square around (lon, lat) at zoom z, row by row."""
    centre = mercantile.tile(lon, lat, z)
    side = int(count**0.5) + 1
    x0, y0 = centre.x - side // 2, centre.y - side // 2
    return [(x0 + i % side, y0 + i // side, z) for i in range(count)]


def rss_mb(pid: int) -> float:
    return (status_kib(pid, "VmRSS") or 0) / 1024


def pct(values: list[float], q: int) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def pending_uploads(url: str) -> int:
    text = requests.get(f"{url}/heartbeat", timeout=10).text
    return int(text.split("uploads_pending=")[1].split()[0])


def seed_bucket(s3, bucket: str, tiles: list[tuple[int, int, int]], png: bytes) -> None:
    """Put the hit tiles straight into the bucket (8 threads: moto is the bottleneck)."""

    def put(tile: tuple[int, int, int]) -> None:
        s3.put_object(Bucket=bucket, Key=tms_key(*tile), Body=png, ContentType="image/png")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, tiles))


def client(
    url: str, load: Load, hits: list[str], origin: float, deadline: float, number: int
) -> None:
    """One client thread: its own keep-alive session, the mix drawn per request."""
    rng = random.Random(load.rng_seed * 1000 + number)
    session = requests.Session()
    while time.monotonic() < deadline:
        roll = rng.random()
        key: str | None = None
        if roll < 0.01:
            kind, path = "bad", rng.choice(BAD_PATHS)
        elif roll < 0.81:
            kind, key = "hit", rng.choice(hits)
            path = "/" + key
        else:
            kind = "repeat" if rng.random() < 0.25 else "miss"
            key = load.repeat_miss() if kind == "repeat" else load.new_miss()
            if key is None:
                kind, key = "miss", load.new_miss()
            if key is None:  # every prepared miss is used: keep the mix with hits
                kind, key = "hit", rng.choice(hits)
            path = "/" + key
        started = time.perf_counter()
        try:
            answer = session.get(url + path, timeout=30)
            status, source = answer.status_code, answer.headers.get("X-Tile-Source", "")
        except requests.RequestException:
            status, source = 0, ""
            session = requests.Session()
        ms = (time.perf_counter() - started) * 1000
        at = time.monotonic() - origin - ms / 1000
        load.record(Sample(kind, status, ms, at, source), key)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=180, help="length of the load")
    parser.add_argument("--concurrency", type=int, default=64, help="client threads")
    parser.add_argument("--seed-tiles", type=int, default=1500, help="tiles stored beforehand")
    parser.add_argument("--zoom", type=int, default=17, help="zoom of the missed tiles")
    parser.add_argument("--log-level", default="WARNING", help="LOG_LEVEL of the service")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the mix")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment of the service, e.g. MAX_REQUESTS=0 (repeatable)",
    )
    parser.add_argument(
        "--s3-latency-ms",
        type=float,
        default=0.0,
        help="milliseconds added to every S3 request (a proxy in front of moto)",
    )
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args(argv)
    random.seed(args.seed)
    os.environ.update(AWS)

    hit_tiles = block(-73.97, 40.75, 15, args.seed_tiles)
    # Enough distinct misses for 200 requests/s of misses; the mix falls back to hits after.
    miss_tiles = block(-73.95, 40.70, args.zoom, int(args.seconds * 200) + 1000)
    hits = [tms_key(*t) for t in hit_tiles]

    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        wms = stack.enter_context(DemoWMS())
        moto = MotoServer().start()
        stack.callback(moto.stop)
        s3 = boto3.client("s3", endpoint_url=moto.url)
        bucket = f"soak-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(Bucket=bucket)
        # The hits hold a real map tile, drawn once by the demo WMS.
        sample = requests.get(
            f"{wms.url}?SERVICE=WMS&VERSION=1.1.1&REQUEST=GetMap&LAYERS={wms.layers}&STYLES="
            "&SRS=EPSG:3857&BBOX=-8238310,4970241,-8236864,4971687&WIDTH=256&HEIGHT=256"
            "&FORMAT=image/png",
            timeout=30,
        ).content
        seed_bucket(s3, bucket, hit_tiles, sample)
        s3_url = moto.url
        if args.s3_latency_ms:
            slow = DelayProxy(moto.url, args.s3_latency_ms / 1000).start()
            stack.callback(slow.stop)
            s3_url = slow.url

        app = GunicornApp(
            {
                **AWS,
                "WMS_SERVER": wms.url,
                "MAP_LAYERS": wms.layers,
                "BUCKET_NAME": bucket,
                "AWS_ENDPOINT_URL": s3_url,
                "LOCAL_CACHE_DIR": f"{tmp}/tiles",
                "LOG_LEVEL": args.log_level,
                **dict(item.split("=", 1) for item in args.env),
            }
        )
        app.start()
        stack.callback(app.stop)
        arbiter = app.process.pid
        for key in hits[:20]:  # warm connections and the allocator
            requests.get(f"{app.url}/{key}", timeout=30)

        rss: dict[int, list[float]] = defaultdict(list)
        first_seen: dict[int, float] = {}  # worker pid -> seconds into the load
        start_rss = {pid: rss_mb(pid) for pid in worker_pids(arbiter)}
        wms_before = wms.request_count()
        load = Load(miss_tiles, args.seed)
        stop_sampling = threading.Event()

        def sample_rss() -> None:
            while not stop_sampling.wait(0.5):
                for pid in worker_pids(arbiter):
                    first_seen.setdefault(pid, time.monotonic() - started)
                    rss[pid].append(rss_mb(pid))

        sampler = threading.Thread(target=sample_rss, daemon=True)
        sampler.start()
        started = time.monotonic()
        deadline = started + args.seconds
        with ThreadPoolExecutor(args.concurrency) as pool:
            for number in range(args.concurrency):
                pool.submit(client, app.url, load, hits, started, deadline, number)
        elapsed = time.monotonic() - started
        end_rss = {pid: rss_mb(pid) for pid in worker_pids(arbiter)}
        stop_sampling.set()

        drain_started = time.monotonic()
        while pending_uploads(app.url) and time.monotonic() - drain_started < 60:
            time.sleep(0.5)
        drain_s = time.monotonic() - drain_started
        pending_left = pending_uploads(app.url)
        stored = {
            item["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for item in page.get("Contents", [])
        }
        wms_getmaps = wms.request_count() - wms_before
        log = app.log()

    report = summarise(args, load, elapsed, stored, wms_getmaps, start_rss, end_rss, rss)
    # A new worker pid is a max_requests recycle: are the slow requests around them?
    changes = sorted(t for pid, t in first_seen.items() if pid not in start_rss)
    slow = [s.at for s in load.samples if s.ms > STALL_MS]
    report["worker_changes_s"] = [round(t, 1) for t in changes]
    report["stalls_near_recycle"] = sum(
        1 for at in slow if any(-5.0 <= t - at <= 5.0 for t in changes)
    )
    report.update(drain_s=round(drain_s, 1), pending_after_drain=pending_left, env=args.env)
    report["log_errors"] = sum(1 for line in log.splitlines() if " ERROR " in line)
    print_table(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        raw = {
            **report,
            "samples": [
                (s.kind, s.status, round(s.ms, 2), round(s.at, 3), s.source) for s in load.samples
            ],
        }
        args.json.write_text(json.dumps(raw, indent=1))
    return 0 if report["5xx"] == 0 and report["misses_not_stored"] == 0 else 1


def summarise(args, load, elapsed, stored, wms_getmaps, start_rss, end_rss, rss) -> dict:
    rows = {}
    for kind in ("hit", "miss", "repeat", "bad", "all"):
        chosen = [s for s in load.samples if kind in ("all", s.kind)]
        times = [s.ms for s in chosen]
        rows[kind] = {
            "requests": len(chosen),
            "statuses": dict(sorted(Counter(s.status for s in chosen).items())),
            "p50_ms": round(pct(times, 50), 1),
            "p95_ms": round(pct(times, 95), 1),
            "p99_ms": round(pct(times, 99), 1),
            "max_ms": round(max(times, default=float("nan")), 1),
            "stalls": sum(1 for t in times if t > STALL_MS),
            "sources": dict(Counter(s.source for s in chosen if s.source)),
        }
    statuses = rows["all"]["statuses"]
    bad_ok = all(400 <= s < 500 for s in rows["bad"]["statuses"])
    peak = max((max(v) for v in rss.values() if v), default=0.0)
    return {
        "seconds": round(elapsed, 1),
        "concurrency": args.concurrency,
        "requests_per_s": round(len(load.samples) / elapsed, 1),
        "rows": rows,
        "5xx": sum(n for s, n in statuses.items() if s >= 500),
        "no_answer": statuses.get(0, 0),
        "bad_all_4xx": bad_ok,
        "misses_answered": len(load.missed),
        "misses_stored": len(load.missed & stored),
        "misses_not_stored": len(load.missed - stored),
        "objects_in_bucket": len(stored),
        "wms_getmaps": wms_getmaps,
        "rss_start_mb": {str(k): round(v, 1) for k, v in start_rss.items()},
        "rss_end_mb": {str(k): round(v, 1) for k, v in end_rss.items()},
        "rss_peak_mb": round(peak, 1),
        # every 0.5 s while the load runs, per worker pid
        "rss_timeline_mb": {str(k): [round(x, 1) for x in v] for k, v in rss.items()},
    }


def print_table(r: dict) -> None:
    print(
        f"\nsoak: {r['seconds']} s, {r['concurrency']} client threads, "
        f"{r['requests_per_s']} requests/s; gunicorn as in the Procfile"
        + (f", with {' '.join(r['env'])}" if r["env"] else "")
    )
    print(
        f"{'class':8} {'requests':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8} {'>1 s':>5}  statuses"
    )
    for kind, row in r["rows"].items():
        statuses = " ".join(f"{s or 'none'}:{n}" for s, n in row["statuses"].items())
        print(
            f"{kind:8} {row['requests']:9d} {row['p50_ms']:8.1f} {row['p95_ms']:8.1f} "
            f"{row['p99_ms']:8.1f} {row['max_ms']:8.1f} {row['stalls']:5d}  {statuses}"
        )
    sources = ", ".join(f"{k} {v}" for k, v in sorted(r["rows"]["miss"]["sources"].items()))
    print(f"new misses answered from: {sources} (a 4x4 metatile stores its neighbours)")
    start = ", ".join(f"{v} MB (pid {k})" for k, v in r["rss_start_mb"].items())
    end = ", ".join(f"{v} MB (pid {k})" for k, v in r["rss_end_mb"].items())
    print(
        f"\n5xx: {r['5xx']}; no answer: {r['no_answer']}; bad requests all 4xx: "
        f"{r['bad_all_4xx']}; ERROR lines in the service log: {r['log_errors']}"
    )
    print(
        f"misses answered 200: {r['misses_answered']}, stored: {r['misses_stored']}, "
        f"not stored: {r['misses_not_stored']} (after draining {r['drain_s']} s, "
        f"{r['pending_after_drain']} still pending); WMS GetMaps: {r['wms_getmaps']}"
    )
    print(
        f"worker RSS: start {start}; end {end}; peak {r['rss_peak_mb']} MB; "
        f"new workers (max_requests recycling) at {r['worker_changes_s']} s; requests "
        f"over 1 s within 5 s of one: {r['stalls_near_recycle']} of {r['rows']['all']['stalls']}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
