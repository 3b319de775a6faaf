"""The lifetime a WMS's own cache headers give a tile (render/freshness.py), and the
setting that asks for it."""

import doctest

import pytest

from s3maptiler.config import ConfigError, load_settings
from s3maptiler.render import freshness
from s3maptiler.render.freshness import Freshness, freshness_of, http_date, stored_headers
from s3maptiler.service.bundle import RenderedTiles
from s3maptiler.tiles.grids import Tile

NOW = 1_800_000_000.0  # our clock when the answer arrives
WMS_NOW = NOW - 1000  # the WMS's clock, 1000 s behind ours


def wms_date(offset: float) -> str:
    """An HTTP date `offset` seconds from the WMS's own now."""
    return http_date(WMS_NOW + offset)


def test_module_doctests():
    assert doctest.testmod(freshness).failed == 0


@pytest.mark.parametrize(
    ("headers", "lifetime"),
    [
        ({"Cache-Control": "public, max-age=600"}, 600),
        # max-age wins over Expires; s-maxage (for shared caches) over max-age.
        ({"Cache-Control": "max-age=600", "Expires": wms_date(60), "Date": wms_date(0)}, 600),
        ({"Cache-Control": "s-maxage=30, max-age=600"}, 30),
        # Expires counts from the WMS's own Date: its clock being off does not matter.
        ({"Expires": wms_date(120), "Date": wms_date(0)}, 120),
        ({"Expires": wms_date(-120), "Date": wms_date(0)}, 0),
        ({"Expires": "0"}, 0),  # not a date: already expired
        ({"Cache-Control": "no-cache"}, 0),
        ({"Cache-Control": "no-cache, max-age=600"}, 0),
        ({"Cache-Control": "max-age=soon"}, 0),  # not delta-seconds: stale
        ({"Cache-Control": "max-age=60, max-age=120"}, 60),  # the first one counts
        ({"Cache-Control": 'max-age="90"'}, 90),
        ({"Cache-Control": "max-age=600", "Age": "100"}, 500),  # a proxy held it 100 s
        # Last-Modified alone: a tenth of the time since, capped at the layer's max-age.
        ({"Last-Modified": wms_date(-5 * 3600), "Date": wms_date(0)}, 1800),
        ({"Last-Modified": wms_date(-30 * 86400), "Date": wms_date(0)}, 86400),
    ],
)
def test_a_lifetime_from_the_answer(headers, lifetime):
    fresh = freshness_of(headers, NOW)
    assert fresh == Freshness(NOW + lifetime)
    assert fresh.cache_control(NOW) == f"public, max-age={lifetime}"


def test_the_heuristic_never_outlives_the_layers_own_max_age():
    headers = {"Last-Modified": wms_date(-30 * 86400), "Date": wms_date(0)}
    assert freshness_of(headers, NOW, heuristic_cap=3600) == Freshness(NOW + 3600)


@pytest.mark.parametrize(
    "headers",
    [{}, {"Cache-Control": "public"}, {"Last-Modified": wms_date(600), "Date": wms_date(0)}],
)
def test_no_lifetime_when_the_answer_gives_none(headers):
    assert freshness_of(headers, NOW) is None


@pytest.mark.parametrize("value", ["no-store", "private, max-age=60", "Private"])
def test_no_store_and_private_answers_are_never_shared(value):
    fresh = freshness_of({"Cache-Control": value}, NOW)
    assert fresh is not None and not fresh.shared
    assert fresh.cache_control(NOW) == value  # passed on to the client as the WMS said it
    assert stored_headers("public, max-age=86400", fresh) is None


def test_what_a_tile_is_stored_with():
    assert stored_headers("public, max-age=86400", None) == ("public, max-age=86400", None)
    assert stored_headers("", None) == (None, None)
    # S3 cannot count a max-age down: the object says public and when it expires.
    assert stored_headers("public, max-age=86400", Freshness(NOW + 60)) == ("public", NOW + 60)
    assert Freshness(NOW + 60).cache_control(NOW + 100) == "public, max-age=0"


def test_the_setting_from_the_environment_and_the_layers_file(tmp_path):
    env = {"WMS_SERVER": "http://wms.test/", "MAP_LAYERS": "x"}
    assert not load_settings(env, dotenv_path=None).layers[0].cache_from_wms
    on = load_settings({**env, "CACHE_FROM_WMS": "true"}, dotenv_path=None)
    assert on.layers[0].cache_from_wms
    with pytest.raises(ConfigError, match="^CACHE_FROM_WMS: expected true or false"):
        load_settings({**env, "CACHE_FROM_WMS": "sometimes"}, dotenv_path=None)
    path = tmp_path / "layers.toml"
    path.write_text('wms_url = "http://w/"\n[layers.a]\nwms_layers = "x"\ncache_from_wms = true\n')
    assert load_settings({"LAYERS_FILE": str(path)}, dotenv_path=None).layers[0].cache_from_wms
    path.write_text('wms_url = "http://w/"\n[layers.a]\nwms_layers = "x"\ncache_from_wms = "yes"\n')
    with pytest.raises(ConfigError) as bad:
        load_settings({"LAYERS_FILE": str(path)}, dotenv_path=None)
    assert str(bad.value) == f"{path}: layer a: key 'cache_from_wms': expected true or false"


def test_a_render_hands_its_lifetime_to_other_workers_and_instances():
    tiles = {Tile(1, 2, 3): b"one", Tile(2, 2, 3): b"two"}
    for fresh in (Freshness(NOW + 60), Freshness(NOW, shared=False, directive="no-store"), None):
        blob = RenderedTiles("image/png", tiles, fresh).to_bytes(state="done")
        back, header = RenderedTiles.from_bytes(blob)
        assert (back.tiles, back.freshness, header["state"]) == (tiles, fresh, "done")
