"""Seeding without servers: coverage math, token bucket, journal and resume, failures,
the SQS message format and worker (moto in-process), and POST /tasks/seed."""

from __future__ import annotations

import io
import json
import threading

import boto3
import pytest
from moto import mock_aws
from PIL import Image

from s3maptiler.config import Layer, Settings
from s3maptiler.render.errors import WMSConnectionError
from s3maptiler.render.runtime import LayerRuntime
from s3maptiler.render.wms import WMSAnswer, WMSClient
from s3maptiler.seeding import coverage as s_coverage
from s3maptiler.seeding import journal as s_journal
from s3maptiler.seeding import plan as s_plan
from s3maptiler.seeding import run as s_run
from s3maptiler.seeding import sqs as s_sqs
from s3maptiler.seeding import worker as s_worker
from s3maptiler.service.tilepath import TileService
from s3maptiler.storage.stores import LocalStore, S3Store
from s3maptiler.storage.uploads import UploadPool
from s3maptiler.tiles.grids import Tile
from s3maptiler.tiles.tilemath import tile_lonlat_bounds

NYC = (-74.05, 40.68, -73.90, 40.82)  # west, south, east, north in degrees


def make_layer(**changes) -> Layer:
    values = dict(
        name="demo",
        wms_url="http://127.0.0.1:9/wms",
        wms_layers="demo",
        metatile=(4, 4),
        meta_buffer=8,
        formats=("png",),
        cache_control="public, max-age=60",
    )
    values.update(changes)
    return Layer(**values)


class FakeWMS(WMSClient):
    """Answers every GetMap with a PNG of the asked size; fails for bboxes in `broken`."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__(pool_size=1, retries=0)
        self.calls: list[tuple] = []
        self.fail = fail
        self.lock = threading.Lock()

    @property
    def requests_sent(self) -> int:
        return len(self.calls)

    def get_map_answer(self, source, bbox, width, height) -> WMSAnswer:
        with self.lock:
            self.calls.append((tuple(bbox), width, height))
        if self.fail:
            raise WMSConnectionError("connection refused")
        out = io.BytesIO()
        Image.new("RGB", (width, height), (200, 30, 30)).save(out, "PNG")
        return WMSAnswer(out.getvalue(), {})


def brute_force(runtime: LayerRuntime, bbox, z: int) -> set[Tile]:
    cols, rows = runtime.grid.matrix_size(z)
    west, south, east, north = bbox
    found = set()
    for x in range(cols):
        for y in range(rows):
            b = tile_lonlat_bounds(runtime.grid, Tile(x, y, z))
            if b.left < east and west < b.right and b.bottom < north and south < b.top:
                found.add(Tile(x, y, z))
    return found


def planned_tiles(runtime: LayerRuntime, jobs_: list[s_plan.MetaJob]) -> set[Tile]:
    return {t for job in jobs_ for t in s_plan.job_tiles(runtime, job)[1]}


# --- coverage -----------------------------------------------------------------------


@pytest.mark.parametrize("bbox", [NYC, (-10.0, -5.0, 30.0, 12.5), (100.0, 60.0, 179.9, 85.0)])
def test_bbox_plan_is_exactly_the_overlapping_tiles(bbox):
    runtime = LayerRuntime.build(make_layer())
    for z in range(0, 7):
        planned = list(s_plan.plan_jobs(runtime, s_coverage.Coverage.from_bbox(bbox), [z]))
        assert planned_tiles(runtime, planned) == brute_force(runtime, bbox, z)
        # One job per metatile, each the top-left tile of an aligned 4x4 block.
        assert len({(j.x, j.y) for j in planned}) == len(planned)
        assert all(j.x % 4 == 0 and j.y % 4 == 0 for j in planned)


def test_bbox_on_tile_edges_leaves_out_neighbours_that_only_touch():
    runtime = LayerRuntime.build(make_layer())
    # Zoom 2 tile (2, 1) spans lon 0..90 and lat 0..66.51: exactly that box selects it alone.
    b = tile_lonlat_bounds(runtime.grid, Tile(2, 1, 2))
    planned = list(s_plan.plan_jobs(runtime, s_coverage.Coverage.from_bbox(b), [2]))
    assert planned_tiles(runtime, planned) == {Tile(2, 1, 2)}


def test_polygon_equal_to_bbox_plans_the_same_tiles():
    runtime = LayerRuntime.build(make_layer())
    w, s, e, n = NYC
    doc = {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}
    for z in (9, 12):
        polygon = list(s_plan.plan_jobs(runtime, s_coverage.load_geojson(doc), [z]))
        box = list(s_plan.plan_jobs(runtime, s_coverage.Coverage.from_bbox(NYC), [z]))
        assert polygon == box


def inside_triangle(p, a, b, c) -> bool:
    def side(p1, p2, p3):
        return (p1[0] - p3[0]) * (p2[1] - p3[1]) - (p2[0] - p3[0]) * (p1[1] - p3[1])

    d1, d2, d3 = side(p, a, b), side(p, b, c), side(p, c, a)
    return (d1 > 0 and d2 > 0 and d3 > 0) or (d1 < 0 and d2 < 0 and d3 < 0)


def test_triangle_selects_tiles_it_overlaps_and_no_others():
    runtime = LayerRuntime.build(make_layer(metatile=(1, 1), meta_buffer=0))
    a, b, c = (-74.0, 40.70), (-73.80, 40.72), (-73.95, 40.90)
    doc = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[a, b, c, a]]}}
    z = 12
    selected = planned_tiles(
        runtime, list(s_plan.plan_jobs(runtime, s_coverage.load_geojson(doc), [z]))
    )
    # The bbox plan equals brute force (test above); here it bounds the candidates.
    around = s_coverage.Coverage.from_bbox((-74.0, 40.70, -73.80, 40.90))
    box = planned_tiles(runtime, list(s_plan.plan_jobs(runtime, around, [z])))
    for tile in box:
        bounds = tile_lonlat_bounds(runtime.grid, tile)
        samples = [
            (
                bounds.left + (bounds.right - bounds.left) * (i + 0.5) / 16,
                bounds.bottom + (bounds.top - bounds.bottom) * (j + 0.5) / 16,
            )
            for i in range(16)
            for j in range(16)
        ]
        if any(inside_triangle(p, a, b, c) for p in samples):
            assert tile in selected, tile
    assert selected <= box
    # The triangle's bbox holds tiles the triangle misses: they are not seeded.
    assert len(selected) < len(box)


def test_polygon_touching_rules_edges_corners_and_holes():
    runtime = LayerRuntime.build(make_layer(metatile=(1, 1), meta_buffer=0))
    grid = runtime.grid
    t = tile_lonlat_bounds(grid, Tile(2, 1, 2))  # lon 0..90, lat 0..66.5
    right = tile_lonlat_bounds(grid, Tile(3, 1, 2))
    # A polygon inside the right neighbour that shares tile (2, 1)'s east edge.
    ring = ((t.right, t.bottom), (right.right, t.bottom), (right.right, t.top), (t.right, t.top))
    edge_only = s_coverage.Coverage(((ring,),))
    assert not s_coverage.tile_touches(edge_only, t)
    assert s_coverage.tile_touches(edge_only, right)
    corner = ((t.right, t.top), (t.right + 5, t.top), (t.right, t.top + 5))
    corner_only = s_coverage.Coverage(((corner,),))
    assert not s_coverage.tile_touches(corner_only, t)
    # A donut whose hole holds the whole tile: the tile is not covered; its neighbour is.
    outer = ((-10.0, -10.0), (100.0, -10.0), (100.0, 80.0), (-10.0, 80.0))
    hole = ((-1.0, -1.0), (91.0, -1.0), (91.0, 70.0), (-1.0, 70.0))
    donut = s_coverage.Coverage(((outer, hole),))
    assert not s_coverage.tile_touches(donut, t)
    assert s_coverage.tile_touches(donut, tile_lonlat_bounds(grid, Tile(1, 1, 2)))
    # A concave (U-shaped) ring whose notch holds the tile misses it too.
    u_shape = s_coverage.Coverage(
        ((((-20.0, -20.0), (110.0, -20.0), (110.0, 80.0), (95.0, 80.0), (95.0, -5.0),
           (-5.0, -5.0), (-5.0, 80.0), (-20.0, 80.0)),),)
    )  # fmt: skip
    assert not s_coverage.tile_touches(u_shape, t)


@pytest.mark.parametrize(
    "doc",
    [
        {"type": "Point", "coordinates": [0, 0]},
        {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [0, 0]]]},
        {"type": "Polygon", "coordinates": [[["a", 0], [1, 1], [2, 0]]]},
        {"type": "FeatureCollection", "features": []},
        [1, 2],
    ],
)
def test_bad_geojson_is_refused(doc):
    with pytest.raises(s_coverage.CoverageError):
        s_coverage.load_geojson(doc)


def test_partial_metatiles_list_their_tiles_and_full_ones_do_not():
    runtime = LayerRuntime.build(make_layer())
    planned = list(s_plan.plan_jobs(runtime, s_coverage.Coverage.from_bbox(NYC), [15]))
    assert any(j.tiles for j in planned) and any(not j.tiles for j in planned)
    for job in planned:
        meta, tiles = s_plan.job_tiles(runtime, job)
        assert len(tiles) == (len(job.tiles) or 16)


def test_zoom_plan_counts():
    runtime = LayerRuntime.build(make_layer())
    coverage = s_coverage.Coverage.from_bbox(NYC)
    counts = s_plan.zoom_plan(runtime, coverage, [10, 14])
    for plan in counts:
        jobs_ = list(s_plan.plan_jobs(runtime, coverage, [plan.z]))
        assert plan.metatiles == len(jobs_)
        assert plan.tiles == len(planned_tiles(runtime, jobs_))


# --- token bucket -------------------------------------------------------------------


def test_token_bucket_spaces_acquisitions_at_the_rate():
    now = [0.0]
    stamps = []
    bucket = s_run.TokenBucket(
        5.0, burst=1, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s)
    )
    for _ in range(11):
        bucket.acquire()
        stamps.append(now[0])
    assert stamps[-1] == pytest.approx(2.0)  # 10 intervals of 1/5 s after the first
    assert s_run.TokenBucket(None).acquire()


def test_token_bucket_gives_up_when_stopped():
    now = [0.0]
    stop = threading.Event()

    def sleep(seconds):
        now[0] += seconds
        stop.set()

    bucket = s_run.TokenBucket(1.0, clock=lambda: now[0], sleep=sleep)
    assert bucket.acquire(stop)
    assert not bucket.acquire(stop)


# --- running, journal, failures -----------------------------------------------------


@pytest.fixture
def runtime():
    return LayerRuntime.build(make_layer())


def test_run_seed_stores_every_covered_tile_with_one_getmap_per_metatile(tmp_path, runtime):
    store = LocalStore(tmp_path / "tiles")
    planned = list(s_plan.plan_jobs(runtime, s_coverage.Coverage.from_bbox(NYC), range(10, 14)))
    wms = FakeWMS()
    report = s_run.run_seed({"demo": runtime}, planned, wms, store, s_run.SeedOptions(3))
    expected = planned_tiles(runtime, planned)
    written = {
        p.relative_to(tmp_path / "tiles").as_posix() for p in (tmp_path / "tiles").rglob("*.png")
    }
    assert written == {runtime.key_to_store(t, "png") for t in expected}
    assert len(wms.calls) == len(planned) == report.metatiles_done == report.wms_requests
    assert report.done == len(expected) and report.failed == 0
    # Again with skip_existing: nothing drawn, everything skipped.
    again = s_run.run_seed(
        {"demo": runtime}, planned, wms, store, s_run.SeedOptions(3, skip_existing=True)
    )
    assert len(wms.calls) == len(planned)
    assert again.skipped == len(expected) and again.done == 0


def test_seeding_honours_empty_tiles_redirect_through_the_shared_pipeline():
    """Seeding once ignored the layer's blank policy; it now renders through the
    service's own pipeline: a uniform tile is a pointer to one shared blank."""
    runtime = LayerRuntime.build(make_layer(empty_tiles="redirect"))
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="seeded")
        store = S3Store("seeded", s3)
        planned = list(s_plan.plan_jobs(runtime, s_coverage.Coverage.from_bbox(NYC), [12]))
        report = s_run.run_seed({"demo": runtime}, planned, FakeWMS(), store, s_run.SeedOptions(1))
        keys = {runtime.key_to_store(t, "png") for t in planned_tiles(runtime, planned)}
        heads = {k: s3.head_object(Bucket="seeded", Key=k) for k in keys}
        pointers = {k for k, h in heads.items() if "WebsiteRedirectLocation" in h}
        (blank,) = {heads[k]["WebsiteRedirectLocation"] for k in pointers}
        assert blank.startswith("/tiles/_blank/")
        stored_blank = s3.get_object(Bucket="seeded", Key=blank[1:])["Body"].read()
        assert Image.open(io.BytesIO(stored_blank)).size == (256, 256)
        # Only the first uniform tile, written before its blank was, is stored whole.
        assert len(pointers) == len(keys) - 1
        assert all(heads[k]["ContentLength"] == 0 for k in pointers)
        assert report.done == len(keys)


def test_interrupted_run_resumes_from_its_journal(tmp_path, runtime):
    store = LocalStore(tmp_path / "tiles")
    planned = list(s_plan.plan_jobs(runtime, s_coverage.Coverage.from_bbox(NYC), range(10, 15)))
    journal = s_journal.Journal(tmp_path / "j.jsonl", "sig-1")
    wms = FakeWMS()
    stop = threading.Event()
    seen = []

    def progress(n):
        seen.append(n)
        if len(seen) == 5:
            stop.set()

    first = s_run.run_seed(
        {"demo": runtime},
        planned,
        wms,
        store,
        s_run.SeedOptions(1),
        journal,
        stop=stop,
        on_progress=progress,
    )
    journal.close()
    assert first.interrupted and first.metatiles_done >= 5
    assert first.metatiles_done + first.metatiles_left == len(planned)
    second_wms = FakeWMS()
    second = s_run.run_seed(
        {"demo": runtime},
        planned,
        second_wms,
        store,
        s_run.SeedOptions(2),
        s_journal.Journal(tmp_path / "j.jsonl", "sig-1"),
    )
    assert second.metatiles_skipped == first.metatiles_done
    assert len(wms.calls) + len(second_wms.calls) == len(planned)
    assert second.done + first.done == len(planned_tiles(runtime, planned))
    with pytest.raises(s_journal.JournalMismatch):
        s_journal.Journal(tmp_path / "j.jsonl", "another seed").done()


def test_journal_ignores_a_torn_last_line(tmp_path):
    path = tmp_path / "j.jsonl"
    journal = s_journal.Journal(path, "s")
    journal.record(s_plan.MetaJob("demo", "png", 3, 0, 4))
    journal.close()
    with path.open("a") as f:
        f.write('{"layer":"demo","ext":"png","z":3,"x":4')
    assert s_journal.Journal(path, "s").done() == {("demo", "png", 3, 0, 4)}


def test_failed_metatiles_go_to_a_file_that_replays_them(tmp_path, runtime):
    store = LocalStore(tmp_path / "tiles")
    planned = list(s_plan.plan_jobs(runtime, s_coverage.Coverage.from_bbox(NYC), [12, 13]))
    failures = s_journal.FailureLog(tmp_path / "failed.jsonl")
    report = s_run.run_seed(
        {"demo": runtime},
        planned,
        FakeWMS(fail=True),
        store,
        s_run.SeedOptions(2),
        failures=failures,
    )
    failures.close()
    assert report.metatiles_failed == len(planned) and report.done == 0
    assert report.failed == len(planned_tiles(runtime, planned))
    replay = s_journal.read_failures(tmp_path / "failed.jsonl")
    assert sorted(replay) == sorted(planned)
    lines = [json.loads(line) for line in (tmp_path / "failed.jsonl").read_text().splitlines()]
    assert all("connection refused" in line["error"] for line in lines)
    good = FakeWMS()
    again = s_run.run_seed({"demo": runtime}, replay, good, store, s_run.SeedOptions(2))
    assert again.done == report.failed and len(good.calls) == len(planned)


def test_estimate_extrapolates_from_a_sample(runtime):
    planned = list(s_plan.plan_jobs(runtime, s_coverage.Coverage.from_bbox(NYC), range(10, 15)))
    wms = FakeWMS()
    guess = s_run.estimate({"demo": runtime}, planned, wms, s_run.SeedOptions(2, wms_rate=0.5))
    assert guess.sampled == len(wms.calls) <= 4
    assert guess.total_seconds >= len(planned) / 0.5  # the rate cap bounds it


# --- messages -----------------------------------------------------------------------


def test_message_round_trip_and_batching():
    planned = [
        s_plan.MetaJob("demo", "png", 12, 1204, 1536),
        s_plan.MetaJob("demo", "png", 12, 1208, 1536, ((1208, 1536), (1209, 1536))),
        s_plan.MetaJob("demo", "png", 13, 2408, 3072),
        s_plan.MetaJob("other", "jpg", 13, 0, 0),
    ]
    bodies = list(s_sqs.encode_messages(planned, per_message=2, skip_existing=True))
    assert len(bodies) == 3  # 2 + 1 of demo/png, then a new message for other/jpg
    decoded = [s_sqs.decode_message(b) for b in bodies]
    assert [j for m in decoded for j in m.metatiles] == planned
    assert all(m.skip_existing for m in decoded)
    assert all(len(b.encode()) < 1024 for b in bodies)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"layer": "demo", "ext": "png"}',
        b'{"layer": "demo", "ext": "png", "metatiles": [{"z": 1, "x": -1, "y": 0}]}',
        b'{"layer": "demo", "ext": "png", "metatiles": [{"z": 1}]}',
        b'{"v": 9, "layer": "demo", "ext": "png", "metatiles": [{"z": 1, "x": 0, "y": 0}]}',
    ],
)
def test_malformed_messages_are_refused(body):
    with pytest.raises(s_sqs.BadMessage):
        s_sqs.decode_message(body)


def test_handle_message_refuses_coordinates_that_are_no_metatile(tmp_path, runtime):
    store = LocalStore(tmp_path)
    for doc in (
        {"layer": "demo", "ext": "png", "metatiles": [{"z": 5, "x": 1, "y": 0}]},  # not aligned
        {"layer": "demo", "ext": "png", "metatiles": [{"z": 2, "x": 8, "y": 0}]},  # outside
        {"layer": "nope", "ext": "png", "metatiles": [{"z": 2, "x": 0, "y": 0}]},
        {"layer": "demo", "ext": "gif", "metatiles": [{"z": 2, "x": 0, "y": 0}]},
    ):
        with pytest.raises(s_sqs.BadMessage):
            s_sqs.handle_message(json.dumps(doc), {"demo": runtime}, FakeWMS(), store)


@pytest.fixture
def sqs():
    with mock_aws():
        yield boto3.client("sqs", region_name="us-east-1")


def test_enqueue_worker_and_status_with_moto(sqs, tmp_path, runtime):
    url = sqs.create_queue(QueueName="seed")["QueueUrl"]
    planned = list(s_plan.plan_jobs(runtime, s_coverage.Coverage.from_bbox(NYC), range(10, 14)))
    bodies = list(s_sqs.encode_messages(planned))
    report = s_sqs.enqueue(sqs, url, bodies)
    assert report.sent == len(planned) and report.failed == 0
    assert s_sqs.queue_status(sqs, url).waiting == len(planned)
    store = LocalStore(tmp_path / "tiles")
    wms = FakeWMS()
    worked = s_worker.run_worker(
        sqs,
        url,
        lambda body: s_sqs.handle_message(body, {"demo": runtime}, wms, store),
        threading.Event(),
        wait_seconds=0,
        max_messages=10,
        idle_exit=0.5,
    )
    assert worked.done == len(planned) and worked.failed == 0
    assert len(wms.calls) == len(planned)
    assert worked.tiles == len(planned_tiles(runtime, planned))
    assert s_sqs.queue_status(sqs, url).drained


def test_worker_leaves_failed_and_malformed_messages_for_redrive(sqs, tmp_path, runtime):
    url = sqs.create_queue(QueueName="seed", Attributes={"VisibilityTimeout": "60"})["QueueUrl"]
    s_sqs.enqueue(
        sqs, url, [*s_sqs.encode_messages([s_plan.MetaJob("demo", "png", 3, 0, 0)]), "junk"]
    )
    worked = s_worker.run_worker(
        sqs,
        url,
        lambda body: s_sqs.handle_message(
            body, {"demo": runtime}, FakeWMS(fail=True), LocalStore(tmp_path)
        ),
        threading.Event(),
        wait_seconds=0,
        max_messages=10,
        idle_exit=0.3,
    )
    assert (worked.done, worked.failed, worked.malformed) == (0, 1, 1)
    status = s_sqs.queue_status(sqs, url)
    assert status.in_flight == 2 and not status.drained  # back after the visibility timeout


# --- POST /tasks/seed ---------------------------------------------------------------


def tasks_client(tmp_path, wms):
    from s3maptiler.http.app import create_app
    from s3maptiler.http.tasks import blueprint as tasks

    layer = make_layer()
    settings = Settings(layers=(layer,), local_cache_dir=tmp_path / "tiles", log_level="WARNING")
    store = LocalStore(tmp_path / "tiles")
    service = TileService(settings, store, wms, UploadPool(store, workers=1))
    app = create_app(settings, service)
    if "tasks" not in app.blueprints:
        app.register_blueprint(tasks)
    return app.test_client()


def test_tasks_seed_route(tmp_path, runtime):
    wms = FakeWMS()
    client = tasks_client(tmp_path, wms)
    body = next(s_sqs.encode_messages([s_plan.MetaJob("demo", "png", 12, 1204, 1536)]))
    answer = client.post("/tasks/seed", data=body, content_type="application/json")
    assert answer.status_code == 200
    assert answer.get_json()["stored"] == 16 and len(wms.calls) == 1
    key = runtime.key_to_store(Tile(1205, 1537, 12), "png")
    assert (tmp_path / "tiles" / key).is_file()
    bad = client.post("/tasks/seed", data=b"{nope", content_type="application/json")
    assert bad.status_code == 400 and "\n" not in bad.get_json()["error"]
    failing = tasks_client(tmp_path / "other", FakeWMS(fail=True))
    assert failing.post("/tasks/seed", data=body).status_code == 502
