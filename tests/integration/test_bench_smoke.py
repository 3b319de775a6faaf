"""A tiny run of bench/compare_mapproxy.py against s3maptiler alone: the harness counts
what it claims to count (tiles, errors, GetMaps) and its tables come out."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import need

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BENCH = Path(__file__).resolve().parents[2] / "bench" / "compare_mapproxy.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("compare_mapproxy", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while defined
    spec.loader.exec_module(module)
    return module


def test_tiny_run_against_s3maptiler_alone(tmp_path, capsys):
    from devtools.demowms import unavailable_reason

    need(unavailable_reason())
    bench = load_bench()
    out = tmp_path / "run.json"
    code = bench.main(
        [
            "--only=s3maptiler",
            "--tiles=16",
            "--metatile=2x2",
            "--meta-buffer=8",
            "--concurrency=1,4",
            "--known-tiles=3",
            f"--json={out}",
        ]
    )

    assert code == 0
    report = json.loads(out.read_text())
    passes = {(p["target"], p["measurement"], p["concurrency"]): p for p in report["passes"]}
    for target in ("s3maptiler-S3", "s3maptiler-local"):
        for level in (1, 4):
            miss = passes[(target, "miss", level)]
            assert (miss["tiles"], miss["errors"]) == (16, 0), miss["error_kinds"]
            assert 4 <= miss["wms_requests"] <= 16  # 4 metatiles; 1x1 renders at worst
        hit = passes[(target, "hit", 4)]
        # Both blocks read again: all from the store, not one GetMap.
        assert (hit["tiles"], hit["errors"], hit["wms_requests"]) == (32, 0, 0)
        assert target in report["verify"]
    # Every known miss is one GetMap, counted apart from the interleaved direct ones.
    known = passes[("s3maptiler-S3 1x1", "known miss (interleaved)", 1)]
    assert (known["tiles"], known["errors"], known["wms_per_100_tiles"]) == (3, 0, 100.0)
    assert known["cpu_ms_per_tile"] > 0 and known["peak_rss_mb_per_worker"] > 0
    table = capsys.readouterr().out
    assert "known miss 1x1 c=1 p50 / direct WMS p50" in table
    assert "s3maptiler-local" in table
