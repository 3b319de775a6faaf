"""s3maptiler beside MapProxy on the same WMS, on cold tiles, measured in one run.

Starts on 127.0.0.1: the demo MapServer (lighttpd FastCGI), moto's S3 server, s3maptiler
under gunicorn with the Procfile command (S3 store on moto; local store in a temporary
directory) and MapProxy, pinned in bench/requirements-mapproxy.txt and installed into
bench/.venv-mapproxy, under gunicorn with the same worker class, workers and threads
(S3 cache on the same moto server; file cache). All four use the same WMS, grid,
metatile and meta_buffer. For each concurrency level every target, and a direct WMS
GetMap per tile as the floor, requests the same cold block of tiles once (each target
has its own bucket or directory); then each target reads all its tiles again as hits.
A single-tile known miss of s3maptiler with 1x1 metatiles is timed interleaved with
direct GetMaps. Prints one table of figures and one of ratios and targets.

    python bench/compare_mapproxy.py --tiles 576 --zoom 14 --concurrency 1,8,32

Run from the repository root with the dev requirements installed; bench/README.md
explains every column.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import math
import os
import random
import re
import runpy
import signal
import string
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import mercantile
import requests
from PIL import Image, ImageChops, ImageStat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools.demowms import DemoWMS, unavailable_reason  # noqa: E402
from s3maptiler.render.getmap import WMSSource, getmap_url  # noqa: E402
from s3maptiler.tiles.grids import WEB_MERCATOR, Tile  # noqa: E402
from tests.servers import (  # noqa: E402
    MOTO_CREDENTIALS,
    GunicornApp,
    MotoServer,
    free_port,
    service_cpu_seconds,
    worker_peak_rss_mb,
)

log = logging.getLogger("bench.compare_mapproxy")

BENCH = ROOT / "bench"
VENV = BENCH / ".venv-mapproxy"
REQUIREMENTS = BENCH / "requirements-mapproxy.txt"
TEMPLATE = BENCH / "mapproxy" / "mapproxy.yaml.in"

AWS = MOTO_CREDENTIALS  # moto accepts any keys
# The middle of New York's five boroughs, the only detailed part of the demo map: at
# zoom 15 they span about 52x52 tiles, four blocks of 24x24. Elsewhere the demo map
# draws one colour per tile at such zooms.
CENTRE = (-73.98, 40.705)  # decimal degrees, lon/lat
MAPPROXY_LAYER = "demo"
MAPPROXY_GRID = "webmercator"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CONNECT_TIMEOUT = 3.05  # seconds
# The gunicorn settings MapProxy gets from the project's gunicorn.conf.py (Procfile).
GUNICORN_KEYS = (
    "worker_class",
    "workers",
    "threads",
    "timeout",
    "graceful_timeout",
    "keepalive",
    "max_requests",
    "max_requests_jitter",
)


class BenchError(Exception):
    """Base class for every error this benchmark raises."""


class SetupError(BenchError):
    """A server or the MapProxy environment could not be prepared."""


class WrongTileError(BenchError):
    """Two targets do not serve the same geographic tile for the same z/x/y."""


# --------------------------------------------------------------------------- tiles


def tms_row(tile: Tile) -> int:
    """The TMS row (counted up from the bottom) of a tile whose ``y`` counts from the top."""
    return 2**tile.z - 1 - tile.y


def block_side(tiles: int, metatile: tuple[int, int]) -> int:
    """Side, in tiles, of the square block holding at least ``tiles`` tiles, a whole
    number of metatiles wide and high (so every metatile of the block is complete)."""
    step = math.lcm(*metatile)
    return max(step, math.ceil(math.sqrt(tiles) / step) * step)


def block_positions() -> Iterator[tuple[int, int]]:
    """Block offsets (columns, rows of blocks): the 2x2 around the centre first."""
    cells = [(i, j) for i in range(-3, 5) for j in range(-3, 5)]
    cells.sort(key=lambda c: ((c[0] - 0.5) ** 2 + (c[1] - 0.5) ** 2, c[1], c[0]))
    yield from cells


def plan_blocks(zoom: int, side: int, step: int, count: int) -> list[list[Tile]]:
    """``count`` disjoint square blocks of ``side`` x ``side`` tiles over New York, the
    first four around its centre, corners on multiples of ``step`` tiles (whole
    metatiles), each listed row by row from the top left, as a map viewer fills a screen."""
    centre = mercantile.tile(*CENTRE, zoom)
    x0, y0 = (centre.x - side) // step * step, (centre.y - side) // step * step
    matrix = 2**zoom
    blocks = []
    for i, j in block_positions():
        left, top = x0 + i * side, y0 + j * side
        if left < 0 or top < 0 or left + side > matrix or top + side > matrix:
            continue
        blocks.append([Tile(left + dx, top + dy, zoom) for dy in range(side) for dx in range(side)])
        if len(blocks) == count:
            return blocks
    raise BenchError(f"zoom {zoom} is too small for {count} blocks of {side}x{side} tiles")


def warm_tiles(block: list[Tile], metatile: tuple[int, int]) -> list[Tile]:
    """The top-left corner of a block: two metatiles' worth, and at least 8x2 tiles."""
    cols, rows = metatile
    left, top = block[0].x, block[0].y
    width, height = max(2 * cols, 8), max(rows, 2)
    return [t for t in block if t.x - left < width and t.y - top < height]


# --------------------------------------------------------------------------- processes


def procfile_gunicorn_settings() -> dict[str, object]:
    """The gunicorn settings s3maptiler runs with (its gunicorn.conf.py, read with this
    process's environment), so MapProxy gets the same worker class, workers and threads."""
    conf = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    return {key: conf[key] for key in GUNICORN_KEYS}


def ensure_mapproxy_venv(venv: Path = VENV, requirements: Path = REQUIREMENTS) -> Path:
    """Create or update the bench-only virtual environment with the pinned MapProxy;
    returns its ``bin`` directory. Reinstalls only when the requirements file changed."""
    stamp = venv / ".requirements.sha256"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    bindir = venv / "bin"
    if stamp.exists() and stamp.read_text().strip() == digest and (bindir / "gunicorn").exists():
        return bindir
    try:
        if not (bindir / "python").exists():
            log.info("creating %s", venv)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        log.info("installing %s into %s", requirements.name, venv)
        subprocess.run(
            [str(bindir / "python"), "-m", "pip", "install", "--quiet", "-r", str(requirements)],
            check=True,
            timeout=900,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise SetupError(f"could not install MapProxy into {venv}: {exc}") from None
    stamp.write_text(digest + "\n")
    return bindir


def mapproxy_config(
    *,
    wms_url: str,
    layers: str,
    transparent: bool,
    metatile: tuple[int, int],
    meta_buffer: int,
    wms_timeout: float,
    work_dir: Path,
    cache: dict[str, str],
) -> str:
    """MapProxy's YAML for one target, from bench/mapproxy/mapproxy.yaml.in. ``cache`` is
    the cache block (``type: s3`` or ``type: file`` and its options)."""
    cache_block = "".join(f"      {key}: {value}\n" for key, value in cache.items())
    return string.Template(TEMPLATE.read_text()).substitute(
        wms_url=wms_url,
        layers=layers,
        transparent="true" if transparent else "false",
        # Full colour, with alpha only when the WMS is asked for transparency.
        mode="RGBA" if transparent else "RGB",
        meta_cols=metatile[0],
        meta_rows=metatile[1],
        meta_buffer=meta_buffer,
        wms_timeout=wms_timeout,
        work_dir=work_dir,
        cache=cache_block.rstrip("\n"),
    )


class MapProxyServer:
    """MapProxy's WSGI app under the bench venv's gunicorn on a free 127.0.0.1 port."""

    def __init__(self, bindir: Path, config: Path, work_dir: Path, env: dict[str, str]):
        self.bindir = bindir
        self.config = config
        self.work_dir = work_dir
        self.env = {**os.environ, **env}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = work_dir / f"gunicorn-{self.port}.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 90.0) -> MapProxyServer:
        s = procfile_gunicorn_settings()
        argv = [
            str(self.bindir / "gunicorn"),
            f"--worker-class={s['worker_class']}",
            f"--workers={s['workers']}",
            f"--threads={s['threads']}",
            f"--timeout={s['timeout']}",
            f"--graceful-timeout={s['graceful_timeout']}",
            f"--keep-alive={s['keepalive']}",
            f"--max-requests={s['max_requests']}",
            f"--max-requests-jitter={s['max_requests_jitter']}",
            f"--bind=127.0.0.1:{self.port}",
            f"--chdir={self.work_dir}",
            f"mapproxy.wsgiapp:make_wsgi_app({str(self.config)!r})",
        ]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            argv, cwd=self.work_dir, env=self.env, stdout=self._log, stderr=subprocess.STDOUT
        )
        # gunicorn listens before its workers have loaded MapProxy: a request may wait
        # in the backlog past a short read timeout, which is not a failure yet.
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log_path.read_text(errors="replace")[-3000:]
                raise SetupError(f"MapProxy did not start within {timeout:.0f} s:\n{tail}")
            try:
                requests.get(self.url + "/", timeout=5)
                return self
            except requests.RequestException:
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if getattr(self, "_log", None):
            self._log.close()


def wait_uploads(base_url: str, timeout: float = 60.0) -> None:
    """Wait until s3maptiler's /heartbeat reports no pending uploads several times in a
    row, each on a new connection, so that both workers are likely to have answered."""
    deadline = time.monotonic() + timeout
    zeros = 0
    while zeros < 8 and time.monotonic() < deadline:
        answer = requests.get(base_url + "/heartbeat", timeout=5, headers={"Connection": "close"})
        match = re.search(r"uploads_pending=(\d+)", answer.text)
        if match is None:
            return  # a service without the counter: nothing to wait for
        zeros = zeros + 1 if match.group(1) == "0" else 0
        time.sleep(0.1)
    if zeros < 8:
        log.warning("uploads still pending at %s after %.0f s", base_url, timeout)


# --------------------------------------------------------------------------- load


@dataclass(frozen=True)
class Sample:
    """One request: latency in milliseconds, HTTP status (or the exception's name)."""

    ms: float
    status: int | str
    source: str | None = None  # s3maptiler's X-Tile-Source
    size: int = 0  # body bytes

    @property
    def ok(self) -> bool:
        return self.status == 200


def fetch(session: requests.Session, url: str, timeout: float) -> Sample:
    """GET one tile; a 200 whose body is not a PNG counts as an error."""
    started = time.perf_counter()
    try:
        answer = session.get(url, timeout=(CONNECT_TIMEOUT, timeout))
        body = answer.content
        status: int | str = answer.status_code
        if status == 200 and not body.startswith(PNG_SIGNATURE):
            status = "not-png"
        source = answer.headers.get("X-Tile-Source")
    except requests.RequestException as exc:
        status, source, body = type(exc).__name__, None, b""
    return Sample((time.perf_counter() - started) * 1000, status, source, len(body))


def run_pass(
    urls: Sequence[str], concurrency: int, *, deadline: float, timeout: float
) -> tuple[list[Sample], float]:
    """Request every URL once from ``concurrency`` threads (one keep-alive session each)
    and return the samples in URL order and the wall time in seconds. No new request
    starts after ``deadline`` (time.monotonic()); requests already sent finish."""
    samples: list[Sample | None] = [None] * len(urls)
    cursor = iter(range(len(urls)))
    lock = threading.Lock()

    def worker() -> None:
        with requests.Session() as session:
            while time.monotonic() < deadline:
                with lock:
                    index = next(cursor, None)
                if index is None:
                    return
                samples[index] = fetch(session, urls[index], timeout)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [s for s in samples if s is not None], time.perf_counter() - started


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class PassResult:
    """The figures of one pass of one target."""

    target: str
    measurement: str  # "miss", "hit", "floor (interleaved)", "known miss (interleaved)"
    concurrency: int
    planned: int
    samples: list[Sample]
    seconds: float  # wall time of the requests, seconds
    wms_requests: int | None = None  # GetMaps that reached mapserv during the pass
    cpu_seconds: float | None = None  # service CPU during the pass (uploads included)
    peak_rss_mb: float | None = None  # largest VmHWM among the workers so far
    skipped: bool = False

    @property
    def tiles(self) -> int:
        return len(self.samples)

    @property
    def cut(self) -> bool:
        return self.tiles < self.planned

    @property
    def ok(self) -> int:
        return sum(s.ok for s in self.samples)

    @property
    def errors(self) -> int:
        return self.tiles - self.ok

    @property
    def tiles_per_s(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else math.nan

    def p(self, q: float) -> float:
        return percentile([s.ms for s in self.samples], q)

    @property
    def wms_per_100(self) -> float | None:
        if self.wms_requests is None or not self.tiles:
            return None
        return 100 * self.wms_requests / self.tiles

    @property
    def kb_per_tile(self) -> float | None:
        """Mean size of the tiles answered, kilobytes (1000 bytes)."""
        sizes = [s.size for s in self.samples if s.ok]
        return sum(sizes) / len(sizes) / 1000 if sizes else None

    @property
    def cpu_ms_per_tile(self) -> float | None:
        if self.cpu_seconds is None or not self.tiles:
            return None
        return 1000 * self.cpu_seconds / self.tiles

    def figures(self) -> dict[str, object]:
        return {
            "target": self.target,
            "measurement": self.measurement,
            "concurrency": self.concurrency,
            "planned": self.planned,
            "tiles": self.tiles,
            "errors": self.errors,
            "error_kinds": dict(Counter(str(s.status) for s in self.samples if not s.ok)),
            "skipped": self.skipped,
            "seconds": round(self.seconds, 3),
            "tiles_per_s": _round(self.tiles_per_s, 2),
            "p50_ms": _round(self.p(50), 1),
            "p95_ms": _round(self.p(95), 1),
            "wms_requests": self.wms_requests,
            "wms_per_100_tiles": _round(self.wms_per_100, 2),
            "cpu_ms_per_tile": _round(self.cpu_ms_per_tile, 2),
            "kb_per_tile": _round(self.kb_per_tile, 2),
            "peak_rss_mb_per_worker": _round(self.peak_rss_mb, 1),
            "tile_sources": dict(Counter(s.source for s in self.samples if s.source)),
            "latencies_ms": [round(s.ms, 2) for s in self.samples],
        }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None or math.isnan(value) else round(value, digits)


# --------------------------------------------------------------------------- targets


@dataclass
class Target:
    """A tile server under test (or the direct WMS) and how to read its state."""

    name: str
    url_for: Callable[[Tile], str]
    arbiter: int | None = None  # gunicorn arbiter pid; None: not a measured service
    settle: Callable[[], None] = lambda: None  # background work done (s3maptiler uploads)
    stop: Callable[[], None] = lambda: None
    peaks: dict[int, float] = field(default_factory=dict)

    def cpu(self) -> float | None:
        return None if self.arbiter is None else service_cpu_seconds(self.arbiter)

    def peak_rss(self) -> float | None:
        """Largest VmHWM of any worker seen so far, megabytes (recycled workers kept)."""
        if self.arbiter is None:
            return None
        for pid, mb in worker_peak_rss_mb(self.arbiter).items():
            self.peaks[pid] = max(mb, self.peaks.get(pid, 0.0))
        return max(self.peaks.values(), default=None)


def s3maptiler_url(base: str, known_miss: bool = False) -> Callable[[Tile], str]:
    """s3maptiler's TMS tile URL (the S3 key tiles/{z}/{x}/{y}.png, y up)."""
    prefix = f"{base}/miss/tiles" if known_miss else f"{base}/tiles"
    return lambda t: f"{prefix}/{t.z}/{t.x}/{tms_row(t)}.png"


def mapproxy_url(base: str) -> Callable[[Tile], str]:
    """MapProxy's TMS-like tile URL with rows counted from the bottom."""
    prefix = f"{base}/tiles/1.0.0/{MAPPROXY_LAYER}/{MAPPROXY_GRID}"
    return lambda t: f"{prefix}/{t.z}/{t.x}/{tms_row(t)}.png"


def direct_url(source: WMSSource) -> Callable[[Tile], str]:
    """A direct 256 px GetMap of the tile's bbox: what a 1x1 render costs at least."""
    return lambda t: getmap_url(source, WEB_MERCATOR.tile_bbox(t), 256, 256)


class Measurer:
    """Runs passes against targets and reads the WMS counter and /proc around them."""

    def __init__(self, wms: DemoWMS, timeout: float, pass_seconds: float, end: float):
        self.wms = wms
        self.timeout = timeout
        self.pass_seconds = pass_seconds
        self.end = end  # time.monotonic() after which no pass starts

    def measure(
        self, target: Target, tiles: Sequence[Tile], concurrency: int, measurement: str
    ) -> PassResult:
        planned = len(tiles)
        now = time.monotonic()
        if now >= self.end:
            log.warning(
                "time budget spent: %s %s c=%d skipped", target.name, measurement, concurrency
            )
            return PassResult(target.name, measurement, concurrency, planned, [], 0.0, skipped=True)
        urls = [target.url_for(t) for t in tiles]
        wms_before = self.wms.request_count()
        cpu_before = target.cpu()
        samples, seconds = run_pass(
            urls, concurrency, deadline=min(now + self.pass_seconds, self.end), timeout=self.timeout
        )
        target.settle()  # uploads of this pass belong to this pass's CPU, not the next's
        cpu_after = target.cpu()
        result = PassResult(
            target.name,
            measurement,
            concurrency,
            planned,
            samples,
            seconds,
            wms_requests=self.wms.request_count() - wms_before,
            cpu_seconds=None if cpu_before is None else cpu_after - cpu_before,
            peak_rss_mb=target.peak_rss(),
        )
        log.info(
            "%-18s %-5s c=%-3d %4d/%d tiles %7.1f tiles/s p50 %7.1f ms p95 %7.1f ms errors %d",
            target.name,
            measurement,
            concurrency,
            result.tiles,
            planned,
            result.tiles_per_s,
            result.p(50),
            result.p(95),
            result.errors,
        )
        time.sleep(0.5)  # let the machine go quiet before the next pass
        return result


def interleaved_floor(
    measurer: Measurer, known: Target, direct: Target, tiles: Sequence[Tile], seed: int
) -> list[PassResult]:
    """Known misses of ``known`` and direct GetMaps of the same tiles at concurrency 1,
    in random order per tile, so drift on a shared machine hits both alike."""
    rng = random.Random(seed)
    samples: dict[str, list[Sample]] = {known.name: [], direct.name: []}
    seconds = dict.fromkeys(samples, 0.0)
    wms_before = measurer.wms.request_count()
    cpu_before = known.cpu()
    with requests.Session() as s_known, requests.Session() as s_direct:
        for tile in tiles:
            steps = [(known, s_known), (direct, s_direct)]
            rng.shuffle(steps)
            for target, session in steps:
                sample = fetch(session, target.url_for(tile), measurer.timeout)
                samples[target.name].append(sample)
                seconds[target.name] += sample.ms / 1000
    known.settle()
    cpu = known.cpu()
    wms_calls = measurer.wms.request_count() - wms_before
    n = len(tiles)
    return [
        PassResult(
            direct.name,
            "floor (interleaved)",
            1,
            n,
            samples[direct.name],
            seconds[direct.name],
            wms_requests=n,
        ),
        PassResult(
            known.name,
            "known miss (interleaved)",
            1,
            n,
            samples[known.name],
            seconds[known.name],
            wms_requests=wms_calls - n,
            cpu_seconds=None if cpu_before is None else cpu - cpu_before,
            peak_rss_mb=known.peak_rss(),
        ),
    ]


# --------------------------------------------------------------------------- checks


def _image(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference of two RGB images, in 0..255 levels per channel."""
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


def verify_same_tile(
    targets: Sequence[Target], direct: Target, candidates: Sequence[Tile]
) -> dict[str, object]:
    """Check that every target serves the same place for the same z/x/y, on the first
    candidate tile that differs from its neighbours: its pixels must be closer to a
    direct GetMap of the tile's bbox than to the tiles a y-axis mistake would give (the
    row flipped, the rows above and below)."""
    with requests.Session() as session:

        def get(url: str) -> Image.Image:
            answer = session.get(url, timeout=(CONNECT_TIMEOUT, 60))
            if answer.status_code != 200 or not answer.content.startswith(PNG_SIGNATURE):
                # The end of a WMS exception report holds its message.
                text = " ".join(answer.text.split())[-300:]
                raise WrongTileError(f"{url} -> {answer.status_code}: {text}")
            return _image(answer.content)

        for tile in candidates:
            z = tile.z
            wrong = {
                "row flipped": Tile(tile.x, tms_row(tile), z),
                "row above": Tile(tile.x, tile.y - 1, z),
                "row below": Tile(tile.x, tile.y + 1, z),
            }
            reference = get(direct.url_for(tile))
            controls = {name: get(direct.url_for(t)) for name, t in wrong.items()}
            # A tile like its neighbours (one colour, say) cannot tell a y mistake.
            if min(mean_difference(reference, c) for c in controls.values()) > 1.0:
                break
        else:
            raise WrongTileError("no candidate tile differs from its neighbours")
        report: dict[str, object] = {"tile": f"{z}/{tile.x}/{tms_row(tile)} (TMS)"}
        images = {}
        for target in targets:
            image = images[target.name] = get(target.url_for(tile))
            right = mean_difference(image, reference)
            nearest = min((mean_difference(image, c), name) for name, c in controls.items())
            report[target.name] = round(right, 2)
            if not right < nearest[0]:
                raise WrongTileError(
                    f"{target.name} serves {report['tile']} closer to the {nearest[1]} "
                    f"({nearest[0]:.2f}) than to the direct GetMap ({right:.2f})"
                )
        names = list(images)
        report["max difference between targets"] = round(
            max(
                (mean_difference(images[a], images[b]) for a in names for b in names if a < b),
                default=0.0,
            ),
            2,
        )
        return report


# --------------------------------------------------------------------------- output


def _fmt(value: float | None, spec: str) -> str:
    """``value`` formatted by ``spec``; a missing figure is a dash as wide as the spec."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        width = re.match(r"\d*", spec).group()
        return format("-", f">{width or 1}")
    return format(value, spec)


def figures_table(results: Sequence[PassResult]) -> str:
    """The main table: one row per target and measurement."""
    header = (
        f"{'target':18} {'measurement':24} {'c':>3} {'tiles':>6} {'tiles/s':>8} "
        f"{'p50 ms':>8} {'p95 ms':>8} {'errors':>6} {'WMS/100':>7} {'CPU ms/t':>8} "
        f"{'RSS MB':>6} {'KB/t':>5}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        if r.skipped:
            lines.append(
                f"{r.target:18} {r.measurement:24} {r.concurrency:3d}   skipped (time budget)"
            )
            continue
        tiles = f"{r.tiles}{'*' if r.cut else ''}"
        lines.append(
            f"{r.target:18} {r.measurement:24} {r.concurrency:3d} {tiles:>6} "
            f"{_fmt(r.tiles_per_s, '8.1f')} {_fmt(r.p(50), '8.1f')} {_fmt(r.p(95), '8.1f')} "
            f"{r.errors:6d} {_fmt(r.wms_per_100, '7.2f')} {_fmt(r.cpu_ms_per_tile, '8.2f')} "
            f"{_fmt(r.peak_rss_mb, '6.0f')} {_fmt(r.kb_per_tile, '5.1f')}"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class Check:
    """A figure of the run beside the issue's target for it (``None``: report only)."""

    what: str
    value: float | None
    unit: str  # "x" for ratios
    target: str | None = None
    met: bool | None = None
    spec: str = ".2f"

    def row(self) -> str:
        value = _fmt(self.value, self.spec) + self.unit if self.value is not None else "-"
        met = "-" if self.met is None else ("yes" if self.met else "NO")
        return f"{self.what:58} {value:>10} {self.target or '':>10} {met:>4}"


def checks(
    results: Sequence[PassResult], levels: Sequence[int], metatile: tuple[int, int]
) -> list[Check]:
    """Ratios of s3maptiler to MapProxy and the issue's targets, from this run only."""
    by = {(r.target, r.measurement, r.concurrency): r for r in results if not r.skipped}
    top = max(levels)
    out: list[Check] = []

    def ratio(what: str, a: str, b: str, measurement: str, c: int, goal: float | None) -> None:
        ra, rb = by.get((a, measurement, c)), by.get((b, measurement, c))
        if ra is None or rb is None or not rb.tiles_per_s or math.isnan(rb.tiles_per_s):
            return
        value = ra.tiles_per_s / rb.tiles_per_s
        out.append(
            Check(
                f"{what} c={c} tiles/s {a} / {b}",
                value,
                "x",
                None if goal is None else f">= {goal:g}x",
                None if goal is None else value >= goal,
            )
        )

    for c in levels:
        at_top = c == top
        ratio("miss", "s3maptiler-S3", "MapProxy-S3", "miss", c, 20 if at_top else None)
        ratio("miss", "s3maptiler-S3", "MapProxy-file", "miss", c, 1.0 if at_top else None)
        ratio("miss", "s3maptiler-local", "MapProxy-file", "miss", c, None)
    ratio("hit", "s3maptiler-S3", "MapProxy-S3", "hit", top, 2)
    ratio("hit", "s3maptiler-local", "MapProxy-file", "hit", top, 1.0)

    s3m = by.get(("s3maptiler-S3", "miss", top))
    if s3m is not None:
        p95 = s3m.p(95)
        out.append(Check(f"miss c={top} p95 s3maptiler-S3", p95, " ms", "<= 1000 ms", p95 <= 1000))
        out.append(
            Check(f"miss c={top} errors s3maptiler-S3", s3m.errors, "", "0", s3m.errors == 0, "d")
        )
    expected = 100 / (metatile[0] * metatile[1])
    for name in ("s3maptiler-S3", "s3maptiler-local"):
        for c in levels:
            r = by.get((name, "miss", c))
            if r is not None and r.wms_per_100 is not None:
                met = abs(r.wms_per_100 - expected) < 0.005
                out.append(
                    Check(
                        f"miss c={c} WMS/100 tiles {name}", r.wms_per_100, "", f"{expected:g}", met
                    )
                )
    known = by.get(("s3maptiler-S3 1x1", "known miss (interleaved)", 1))
    floor = by.get(("direct WMS", "floor (interleaved)", 1))
    if known is not None and floor is not None and known.samples and floor.samples:
        value = known.p(50) / floor.p(50)
        out.append(
            Check("known miss 1x1 c=1 p50 / direct WMS p50", value, "x", "<= 1.10x", value <= 1.10)
        )
    for name in ("s3maptiler-S3", "s3maptiler-local", "MapProxy-S3", "MapProxy-file"):
        r = by.get((name, "miss", top))
        if r is not None and r.cpu_ms_per_tile is not None:
            out.append(Check(f"miss c={top} service CPU per tile {name}", r.cpu_ms_per_tile, " ms"))
    for name in ("s3maptiler-S3", "s3maptiler-local", "MapProxy-S3", "MapProxy-file"):
        rss = max((x.peak_rss_mb or 0.0 for x in results if x.target == name), default=0.0)
        if rss:
            out.append(Check(f"peak RSS per worker (VmHWM) {name}", rss, " MB", spec=".0f"))
    return out


# --------------------------------------------------------------------------- main

_TARGET_ORDER = (
    "direct WMS",
    "s3maptiler-S3 1x1",
    "s3maptiler-S3",
    "s3maptiler-local",
    "MapProxy-S3",
    "MapProxy-file",
)


def _row_order(result: PassResult) -> tuple[int, int, int]:
    """Targets in a fixed order; the interleaved rows first, then misses, then hits."""
    target = _TARGET_ORDER.index(result.target) if result.target in _TARGET_ORDER else 99
    kind = {"miss": 1, "hit": 2}.get(result.measurement, 0)
    return target, kind, result.concurrency


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so every server started is stopped."""
    raise KeyboardInterrupt


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--tiles",
        type=int,
        default=576,
        help="tiles per cold block (rounded up to a square of whole metatiles)",
    )
    parser.add_argument("--zoom", type=int, default=15)
    parser.add_argument(
        "--concurrency", default="1,8,32", help="comma-separated levels; hits use the highest"
    )
    parser.add_argument(
        "--metatile", default="4x4", help="columns x rows, for s3maptiler and MapProxy"
    )
    parser.add_argument(
        "--meta-buffer",
        type=int,
        default=80,
        help="pixels around a metatile (MapProxy's default: 80)",
    )
    parser.add_argument(
        "--only", choices=("s3maptiler", "mapproxy"), help="run one side only (no ratios)"
    )
    parser.add_argument(
        "--known-tiles",
        type=int,
        default=100,
        help="tiles of the interleaved known-miss / direct WMS floor",
    )
    parser.add_argument(
        "--pass-seconds",
        type=float,
        default=45,
        help="no new request of a pass starts after this many seconds",
    )
    parser.add_argument(
        "--budget-minutes", type=float, default=7.5, help="no pass starts after this much time"
    )
    parser.add_argument(
        "--timeout", type=float, default=30, help="read timeout of every request, seconds"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write every figure and latency here")
    args = parser.parse_args(argv)
    try:
        args.levels = sorted({int(c) for c in args.concurrency.split(",")})
        cols, rows = (int(v) for v in args.metatile.lower().split("x"))
    except ValueError:
        parser.error("--concurrency takes numbers like 1,8,32 and --metatile one like 4x4")
    if min(args.levels) < 1 or cols < 1 or rows < 1 or args.meta_buffer < 0:
        parser.error("concurrency, metatile sizes must be positive and --meta-buffer not negative")
    args.metatile_size = (cols, rows)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    reason = unavailable_reason()
    if reason:
        log.error("no demo WMS: %s", reason)
        return 2
    started = time.monotonic()
    want_s3m = args.only in (None, "s3maptiler")
    want_mp = args.only in (None, "mapproxy")
    bindir = ensure_mapproxy_venv() if want_mp else None
    os.environ.update(AWS)
    side = block_side(args.tiles, args.metatile_size)
    # One block per concurrency level, the same for every target (each has its own
    # bucket or directory, so each is cold), and one more: its corner warms the servers,
    # the rest serves the known-miss floor (a server of its own, cold as well).
    blocks = plan_blocks(args.zoom, side, math.lcm(*args.metatile_size), len(args.levels) + 1)
    level_blocks = dict(zip(args.levels, blocks, strict=False))
    warm = warm_tiles(blocks[-1], args.metatile_size)
    floor_tiles = [t for t in blocks[-1] if t not in warm][: args.known_tiles]
    meta = f"{args.metatile_size[0]}x{args.metatile_size[1]}"
    end = started + args.budget_minutes * 60

    results: list[PassResult] = []
    report: dict[str, object] = {}
    with ExitStack() as stack:
        stack.callback(signal.signal, signal.SIGTERM, signal.signal(signal.SIGTERM, _interrupt))
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-mapproxy-")))
        wms = stack.enter_context(DemoWMS())
        moto = MotoServer().start()
        stack.callback(moto.stop)
        s3 = boto3.client("s3", endpoint_url=moto.url)
        run_id = uuid.uuid4().hex[:8]
        source = WMSSource(url=wms.url, layers=wms.layers)
        direct = Target("direct WMS", direct_url(source))
        targets: list[Target] = []

        def s3maptiler(
            name: str, metatile: str, buffer: int, store: dict[str, str], known_miss: bool = False
        ) -> Target:
            app = GunicornApp(
                {
                    **AWS,
                    "WMS_SERVER": wms.url,
                    "MAP_LAYERS": wms.layers,
                    "METATILE": metatile,
                    "META_BUFFER": str(buffer),
                    "LOG_LEVEL": "WARNING",  # MapProxy logs no line per request either
                    **store,
                }
            ).start()
            stack.callback(app.stop)
            return Target(
                name,
                s3maptiler_url(app.url, known_miss),
                app.process.pid,
                settle=lambda: wait_uploads(app.url),
                stop=app.stop,
            )

        def s3_store(label: str) -> dict[str, str]:
            bucket = f"bench-{label}-{run_id}"
            s3.create_bucket(Bucket=bucket)
            return {"BUCKET_NAME": bucket, "AWS_ENDPOINT_URL": moto.url}

        def mapproxy(name: str, cache: dict[str, str]) -> Target:
            work = tmp / name
            work.mkdir()
            config = work / "mapproxy.yaml"
            config.write_text(
                mapproxy_config(
                    wms_url=wms.url,
                    layers=wms.layers,
                    transparent=source.transparent,
                    metatile=args.metatile_size,
                    meta_buffer=args.meta_buffer,
                    wms_timeout=30,  # s3maptiler's WMS_TIMEOUT default
                    work_dir=work,
                    cache=cache,
                )
            )
            server = MapProxyServer(bindir, config, work, AWS).start()
            stack.callback(server.stop)
            return Target(name, mapproxy_url(server.url), server.process.pid)

        if want_s3m:
            targets.append(s3maptiler("s3maptiler-S3", meta, args.meta_buffer, s3_store("s3m")))
            targets.append(
                s3maptiler(
                    "s3maptiler-local",
                    meta,
                    args.meta_buffer,
                    {"BUCKET_NAME": "", "LOCAL_CACHE_DIR": str(tmp / "s3maptiler-local")},
                )
            )
        if want_mp:
            bucket = f"bench-mp-{run_id}"
            s3.create_bucket(Bucket=bucket)
            s3_cache = {
                "type": "s3",
                "bucket_name": bucket,
                "endpoint_url": moto.url,
                "region_name": AWS["AWS_DEFAULT_REGION"],
                "directory": "tiles",
                "directory_layout": "tms",
            }
            targets.append(mapproxy("MapProxy-S3", s3_cache))
            file_cache = {
                "type": "file",
                "directory": str(tmp / "mapproxy-file" / "tiles"),
                "directory_layout": "tms",
            }
            targets.append(mapproxy("MapProxy-file", file_cache))
        log.info(
            "servers up in %.0f s; %d blocks of %dx%d z%d tiles",
            time.monotonic() - started,
            len(blocks),
            side,
            side,
            args.zoom,
        )

        measurer = Measurer(wms, args.timeout, args.pass_seconds, end)
        # Warm every server (connections, imports, MapServer's first loads) outside the
        # measured blocks, then check they all serve the same place for one z/x/y.
        for target in targets:
            run_pass([target.url_for(t) for t in warm], 8, deadline=end, timeout=args.timeout)
            target.settle()
        run_pass([direct.url_for(t) for t in warm], 8, deadline=end, timeout=args.timeout)
        report["verify"] = verify_same_tile(targets, direct, warm)
        log.info("same tile everywhere: %s", report["verify"])

        if want_s3m and not floor_tiles:
            log.warning("blocks too small for the known-miss floor: raise --tiles")
        if want_s3m and floor_tiles:
            known = s3maptiler("s3maptiler-S3 1x1", "1x1", 0, s3_store("s3m1"), known_miss=True)
            run_pass([known.url_for(t) for t in warm[:10]], 1, deadline=end, timeout=args.timeout)
            known.settle()
            results += interleaved_floor(measurer, known, direct, floor_tiles, args.seed)
            known.stop()

        # The same cold block per level for every target, in a rotating order so slow
        # drift of a shared machine does not always favour the same target.
        everyone = [direct, *targets]
        for i, level in enumerate(args.levels):
            order = everyone[i % len(everyone) :] + everyone[: i % len(everyone)]
            for target in order:
                results.append(measurer.measure(target, level_blocks[level], level, "miss"))
        # Hits: every tile a target answered during its miss passes, at the top level.
        top = max(args.levels)
        shift = len(args.levels) % max(len(targets), 1)
        for target in targets[shift:] + targets[:shift]:
            served = [
                t
                for r in results
                if r.target == target.name and r.measurement == "miss"
                for t, s in zip(level_blocks[r.concurrency], r.samples, strict=False)
                if s.ok
            ]
            results.append(measurer.measure(target, served, top, "hit"))

    results.sort(key=_row_order)
    found = checks(results, args.levels, args.metatile_size)
    out = sys.stdout
    out.write(
        f"\n{len(blocks[0])} cold z{args.zoom} tiles per block ({side}x{side}, metatile-aligned, "
        f"row by row), the same blocks for every target; metatile {meta}, meta_buffer "
        f"{args.meta_buffer} px; hits at c={max(args.levels)}; run took "
        f"{time.monotonic() - started:.0f} s\n\n"
    )
    out.write(figures_table(results) + "\n")
    if any(r.cut for r in results):
        out.write(f"* cut: no new request after {args.pass_seconds:g} s of a pass\n")
    out.write(f"\n{'ratio or figure (this run)':58} {'measured':>10} {'target':>10} {'met':>4}\n")
    out.write("\n".join(c.row() for c in found) + "\n")
    if args.json:
        report.update(
            args={k: v for k, v in vars(args).items() if k not in ("json",)},
            block_side=side,
            passes=[r.figures() for r in results],
            checks=[c.__dict__ for c in found],
        )
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        log.error("%s", exc)
        sys.exit(1)
    except KeyboardInterrupt:
        log.error("interrupted; every server started was stopped")
        sys.exit(130)
