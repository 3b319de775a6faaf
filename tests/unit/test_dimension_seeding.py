"""Seeding a layer with a TIME dimension: jobs and SQS messages carry the values, a
value's metatile is drawn with its TIME= and stored under ``{prefix}{value}/``, and a
job naming a value the layer does not declare is refused before any GetMap."""

import json

import pytest

from s3maptiler.render.runtime import LayerRuntime
from s3maptiler.seeding import plan as s_plan
from s3maptiler.seeding import sqs as s_sqs
from s3maptiler.storage.stores import LocalStore
from s3maptiler.tiles.dimensions import parse_dimensions
from s3maptiler.tiles.grids import Tile
from tests.unit.test_dimension_tiles import MONTHS, stored
from tests.unit.test_seed import FakeWMS, make_layer


class RecordingWMS(FakeWMS):
    """FakeWMS that also keeps the source (with its TIME=) of every GetMap."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: list = []

    def get_map_answer(self, source, bbox, width, height):
        self.sources.append(source)
        return super().get_map_answer(source, bbox, width, height)


def months_runtime():
    return LayerRuntime.build(make_layer(dimensions=parse_dimensions(json.loads(MONTHS))))


def test_seed_jobs_carry_their_values_through_journals_and_messages():
    job = s_plan.MetaJob("demo", "png", 3, 0, 0, (), (("time", "2024-02-01"),))
    assert s_plan.MetaJob.from_dict(job.to_dict()) == job
    assert job.key != job._replace(dimensions=()).key
    assert "time=2024-02-01" in job.describe()
    other = job._replace(dimensions=(("time", "2024-03-01"),))
    bodies = list(s_sqs.encode_messages([job, other, job._replace(dimensions=())], 10))
    assert len(bodies) == 3  # one message per value
    first = json.loads(bodies[0])
    assert (first["v"], first["dimensions"]) == (2, {"time": "2024-02-01"})
    assert json.loads(bodies[2])["v"] == 1
    assert s_sqs.decode_message(bodies[0]).metatiles == (job,)


def test_a_seed_message_draws_its_value_into_its_keys(tmp_path):
    runtime, wms = months_runtime(), RecordingWMS()
    store = LocalStore(tmp_path / "tiles")
    (body,) = s_sqs.encode_messages(
        [s_plan.MetaJob("demo", "png", 2, 0, 0, (), (("time", "2024-02-01"),))]
    )
    counts = s_sqs.handle_message(body, {"demo": runtime}, wms, store)
    assert counts.stored == 16 and len(wms.calls) == 1
    assert wms.sources[0].extra_params == (("TIME", "2024-02-01"),)
    keys = stored(tmp_path)
    assert len(keys) == 16 and all(k.startswith("tiles/2024-02-01/2/") for k in keys)


@pytest.mark.parametrize(
    "dimensions",
    [{"time": "2025-01-01"}, {"time": "2024-02-01T00:00:00Z"}, {"depth": "3"}],
)
def test_a_seed_message_with_a_bad_value_is_refused_before_any_getmap(tmp_path, dimensions):
    body = {"v": 2, "layer": "demo", "ext": "png", "dimensions": dimensions}
    body["metatiles"] = [{"z": 2, "x": 0, "y": 0}]
    wms = FakeWMS()
    with pytest.raises(s_sqs.BadMessage):
        s_sqs.handle_message(body, {"demo": months_runtime()}, wms, LocalStore(tmp_path))
    assert wms.calls == []


def test_a_value_runtime_shares_the_guard_and_keys_under_the_value():
    runtime = months_runtime()
    march = runtime.with_values(("2024-03-01",))
    assert march.guard is runtime.guard
    assert march.key_to_store(Tile(0, 0, 1), "png") == "tiles/2024-03-01/1/0/1.png"
    assert runtime.sources["png"].extra_params == (("TIME", "2024-06-01"),)
    assert runtime.with_values(()) is runtime
