"""`s3maptiler seed` and `s3maptiler worker` against real components on 127.0.0.1:
the demo MapServer WMS and moto's S3 and SQS server.

The CLI runs as a subprocess (``python -m s3maptiler.cli``), so signals, exit
codes and the journal file behave as for a user. WMS calls are counted with the
demo WMS's own request counter.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import pytest
import requests

from s3maptiler.config import Layer
from s3maptiler.render.runtime import LayerRuntime
from s3maptiler.seeding import coverage as s_coverage
from s3maptiler.seeding import plan as s_plan
from s3maptiler.tiles.grids import Tile
from tests import website
from tests.integration.conftest import AWS_ENV, cli_env
from tests.servers import GunicornApp, free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CACHE_CONTROL = "public, max-age=3600"
# Manhattan and Brooklyn: the detailed part of the demo map.
SMALL = "-74.02,40.70,-73.95,40.76"
LARGER = "-74.05,40.66,-73.90,40.80"


def layer_runtime():
    """The layer the CLI builds from the environment below."""
    layer = Layer(
        name="default",
        wms_url="http://unused",
        wms_layers="demo",
        prefix="tiles/",
        metatile=(4, 4),
        meta_buffer=64,
        cache_control=CACHE_CONTROL,
    )
    return LayerRuntime.build(layer)


def expected(bbox: str, zooms: range) -> tuple[set[str], int]:
    """Keys the seed must write and its number of metatiles."""
    runtime = layer_runtime()
    coverage = s_coverage.Coverage.from_bbox([float(v) for v in bbox.split(",")])
    jobs = list(s_plan.plan_jobs(runtime, coverage, zooms))
    keys = {
        runtime.key_to_store(t, "png") for job in jobs for t in s_plan.job_tiles(runtime, job)[1]
    }
    return keys, len(jobs)


@pytest.fixture
def env(demo_wms, moto_server, bucket, tmp_path):
    return cli_env(demo_wms, moto_server.url, bucket, CACHE_CONTROL=CACHE_CONTROL)


def cli(env, cwd, *args, timeout=60) -> subprocess.CompletedProcess:
    return website.cli(*args, env=env, cwd=cwd, timeout=timeout)


def stored_keys(s3, bucket) -> set[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {obj["Key"] for page in pages for obj in page.get("Contents", [])}


def test_seed_writes_every_covered_tile_and_nothing_else(env, tmp_path, s3, bucket, demo_wms):
    keys, metatiles = expected(SMALL, range(10, 14))
    before = demo_wms.request_count()
    done = cli(env, tmp_path, "seed", "--zoom", "10-13", "--bbox", SMALL, "--concurrency", "2")
    assert done.returncode == 0, done.stderr
    assert stored_keys(s3, bucket) == keys
    assert demo_wms.request_count() - before == metatiles
    assert f"{len(keys)} done, 0 skipped" in done.stdout
    for key in sorted(keys)[:5]:
        head = s3.head_object(Bucket=bucket, Key=key)
        assert head["ContentType"] == "image/png"
        assert head["CacheControl"] == CACHE_CONTROL
    # The journal of a complete run is gone: the same command draws everything again,
    # unless told to skip stored tiles (then not one GetMap).
    assert not list((tmp_path / "var" / "seed").glob("*.journal.jsonl"))
    before = demo_wms.request_count()
    again = cli(env, tmp_path, "seed", "--zoom", "10-13", "--bbox", SMALL, "--skip-existing")
    assert again.returncode == 0, again.stderr
    assert demo_wms.request_count() == before
    assert f"0 done, {len(keys)} skipped" in again.stdout


def test_dry_run_counts_and_stores_nothing(env, tmp_path, s3, bucket):
    keys, metatiles = expected(SMALL, range(10, 14))
    done = cli(env, tmp_path, "seed", "--zoom", "10-13", "--bbox", SMALL, "--dry-run")
    assert done.returncode == 0, done.stderr
    total = next(line for line in done.stdout.splitlines() if line.startswith("total")).split()
    assert total[:3] == ["total", str(len(keys)), str(metatiles)]
    assert "estimate" in done.stdout
    assert stored_keys(s3, bucket) == set()


def test_interrupted_seed_resumes_without_drawing_twice(env, tmp_path, s3, bucket, demo_wms):
    keys, metatiles = expected(LARGER, range(10, 15))
    journal = tmp_path / "s_run.journal"
    args = ["seed", "--zoom", "10-14", "--bbox", LARGER, "--journal", str(journal)]
    before = demo_wms.request_count()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "s3maptiler.cli",
            *args,
            "--concurrency",
            "1",
            "--wms-rate",
            "4",
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if journal.exists() and len(journal.read_text().splitlines()) >= 4:
            break
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 1, err
    assert "interrupted" in err
    done_first = len(journal.read_text().splitlines()) - 1  # less the header line
    assert 3 <= done_first < metatiles
    assert len(stored_keys(s3, bucket)) < len(keys)

    rerun = cli(env, tmp_path, *args, "--concurrency", "2")
    assert rerun.returncode == 0, rerun.stderr
    assert f"{done_first} resumed" in rerun.stdout
    assert stored_keys(s3, bucket) == keys
    assert demo_wms.request_count() - before == metatiles


def test_failed_metatiles_are_replayed_with_retry_failed(env, tmp_path, s3, bucket, demo_wms):
    keys, metatiles = expected(SMALL, range(12, 14))
    failed = tmp_path / "failed.jsonl"
    broken = {**env, "WMS_SERVER": f"http://127.0.0.1:{free_port()}/wms", "WMS_RETRIES": "0"}
    first = cli(
        broken, tmp_path, "seed", "--zoom", "12-13", "--bbox", SMALL, "--failed-file", str(failed)
    )
    assert first.returncode == 1
    assert f"0 done, 0 skipped (already stored), {len(keys)} failed" in first.stdout
    assert len(failed.read_text().splitlines()) == metatiles
    assert stored_keys(s3, bucket) == set()

    before = demo_wms.request_count()
    retry = cli(env, tmp_path, "seed", "--retry-failed", str(failed), "--failed-file", str(failed))
    assert retry.returncode == 0, retry.stderr
    assert stored_keys(s3, bucket) == keys
    assert demo_wms.request_count() - before == metatiles
    assert not failed.exists()  # no failures left


@pytest.fixture
def queue(moto_server):
    sqs = boto3.client("sqs", endpoint_url=moto_server.url, **_credentials())
    url = sqs.create_queue(QueueName=f"seed-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    return sqs, url


def _credentials():
    return {
        "region_name": AWS_ENV["AWS_DEFAULT_REGION"],
        "aws_access_key_id": AWS_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": AWS_ENV["AWS_SECRET_ACCESS_KEY"],
    }


def test_two_workers_drain_the_queue_drawing_each_metatile_once(
    env, tmp_path, s3, bucket, demo_wms, queue
):
    _sqs, url = queue
    keys, metatiles = expected(SMALL, range(10, 15))
    sent = cli(env, tmp_path, "seed", "--zoom", "10-14", "--bbox", SMALL, "--queue", url)
    assert sent.returncode == 0, sent.stderr
    assert f"{metatiles} metatiles queued in {metatiles} messages" in sent.stdout
    before = demo_wms.request_count()
    argv = [sys.executable, "-m", "s3maptiler.cli", "worker", "--queue", url]
    argv += ["--wait-seconds", "1", "--idle-exit", "3"]
    workers = [
        subprocess.Popen(
            argv, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=60) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    assert stored_keys(s3, bucket) == keys
    assert demo_wms.request_count() - before == metatiles  # no metatile drawn twice
    done = [int(out.split(": ")[1].split()[0]) for out, _ in outputs]
    assert sum(done) == metatiles
    status = cli(env, tmp_path, "seed", "--status", "--queue", url)
    assert "0 waiting, 0 in flight" in status.stdout, status.stderr


def test_tasks_seed_through_flask_and_gunicorn(env, tmp_path, s3, bucket, demo_wms, monkeypatch):
    from s3maptiler.config import load_settings
    from s3maptiler.http.app import create_app
    from s3maptiler.seeding.sqs import encode_messages

    runtime = layer_runtime()
    job = s_plan.MetaJob("default", "png", 12, 1204, 1536)
    body = next(encode_messages([job]))
    keys = {runtime.key_to_store(t, "png") for t in s_plan.job_tiles(runtime, job)[1]}

    for name, value in AWS_ENV.items():  # boto3 reads credentials from the environment
        monkeypatch.setenv(name, value)
    closed = create_app(load_settings({**env}, dotenv_path=None))
    assert closed.test_client().post("/tasks/seed", data=body).status_code == 405
    app = create_app(load_settings({**env, "TASKS_ENABLED": "true"}, dotenv_path=None))
    client = app.test_client()
    before = demo_wms.request_count()
    answer = client.post("/tasks/seed", data=body, content_type="application/json")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert stored_keys(s3, bucket) == keys
    assert demo_wms.request_count() - before == 1
    assert client.post("/tasks/seed", data=b"[]").status_code == 400

    # The same body as sqsd delivers it to the app under gunicorn (Procfile command).
    app_server = GunicornApp(
        {
            **{k: env[k] for k in env if k not in os.environ or os.environ[k] != env[k]},
            "TASKS_ENABLED": "true",
        }
    )
    app_server.start()
    try:
        other = s_plan.MetaJob("default", "png", 12, 1208, 1536)
        answer = requests.post(
            app_server.url + "/tasks/seed",
            data=next(encode_messages([other])),
            headers={"Content-Type": "application/json", "X-Aws-Sqsd-Msgid": "m-1"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert json.loads(answer.text)["stored"] == 16
        tile = runtime.key_to_store(Tile(1209, 1537, 12), "png")
        assert s3.head_object(Bucket=bucket, Key=tile)["ContentType"] == "image/png"
    finally:
        app_server.stop()
