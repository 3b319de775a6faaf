"""The dry runs' counts against what really happens: ``seed --dry-run`` and ``export
--dry-run`` print GetMaps, S3 PUTs and GETs; the real seed and export of the same area
then send exactly those, counted where they arrive (GetMaps at the demo WMS, PUTs and
GETs at a counting proxy in front of moto's S3 server). The expected bytes come from
tiles already stored at the nearest zoom."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests import website
from tests.faults3 import FaultS3Proxy
from tests.integration.conftest import cli_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
AREA = "-74.02,40.70,-73.95,40.76"


@pytest.fixture
def proxy(moto_server):
    counting = FaultS3Proxy(moto_server.url).start()
    yield counting
    counting.stop()


@pytest.fixture
def env(demo_wms, proxy, bucket):
    return cli_env(demo_wms, proxy.url, bucket)


def cli(env, cwd, *args) -> subprocess.CompletedProcess:
    done = website.cli(*args, env=env, cwd=cwd, timeout=180)
    assert done.returncode == 0, done.stderr
    return done


def table(stdout: str) -> dict[str, list[str]]:
    """The rows of the cost table by zoom ("total" too): tiles, metatiles, GetMaps,
    PUTs, GETs, then the expected bytes."""
    rows = {}
    for line in stdout.splitlines():
        words = line.split()
        if words and (words[0].isdigit() or words[0] == "total"):
            rows[words[0]] = words[1:]
    return rows


def test_dry_runs_count_what_the_real_runs_send(env, tmp_path, demo_wms, proxy):
    # Before anything is stored: counts, and no size to sample.
    planned = table(
        cli(env, tmp_path, "seed", "--zoom", "12-15", "--bbox", AREA, "--dry-run").stdout
    )
    tiles, metatiles, getmaps, puts, gets = (int(v) for v in planned["total"][:5])
    assert planned["total"][5] == "unknown"
    assert (getmaps, puts, gets) == (metatiles, tiles, 0)

    proxy.reset_counts()
    before = demo_wms.request_count()
    cli(env, tmp_path, "seed", "--zoom", "12-15", "--bbox", AREA, "--concurrency", "2")
    assert demo_wms.request_count() - before == getmaps
    assert proxy.counts()["forwarded"] == puts

    # Now the sizes are sampled from the stored tiles; an export reads each tile once.
    proxy.reset_counts()
    dry = cli(
        env,
        tmp_path,
        "export",
        "default",
        "out.pmtiles",
        "--zoom",
        "12-16",
        "--bbox",
        AREA,
        "--dry-run",
    )
    rows = table(dry.stdout)
    assert proxy.counts()["forwarded"] == 0
    assert rows["16"][-1] == "(z15)"  # no z16 tile stored: sampled one zoom coarser
    assert rows["12"][-1] == "(z12)"
    export_gets = int(rows["total"][4])
    assert export_gets == int(rows["total"][0]) > tiles
    proxy.reset_counts()
    cli(env, tmp_path, "export", "default", "out.pmtiles", "--zoom", "12-16", "--bbox", AREA)
    assert proxy.counts()["gets"] == export_gets
