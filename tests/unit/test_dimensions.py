"""Dimensions (tiles/dimensions.py): declared values, the one spelling of each value,
the key segments, and their checks in the layers file and the environment."""

from pathlib import Path

import pytest

from s3maptiler.config import ConfigError, load_settings
from s3maptiler.tiles.dimensions import (
    LISTED_VALUES,
    DimensionError,
    parse_dimensions,
    select_values,
    split_values,
    values_path,
    wms_params,
)


def one(values, default, name="time"):
    return parse_dimensions({name: {"values": values, "default": default}})[0]


MONTHLY = one("2024-01-01/2024-12-01/P1M", "2024-12-01")


def test_a_monthly_interval_lists_its_twelve_dates():
    assert MONTHLY.listed() == tuple(f"2024-{m:02d}-01" for m in range(1, 13))
    assert (MONTHLY.identifier, MONTHLY.wms_param, MONTHLY.default) == (
        "Time",
        "TIME",
        "2024-12-01",
    )


@pytest.mark.parametrize(
    "spelling",
    ["2024-03-01", "2024-03-01T00:00Z", "2024-03-01T00:00:00Z", "2024-03-01T01:00:00+01:00"],
)
def test_every_spelling_of_an_instant_has_one_canonical_form(spelling):
    assert MONTHLY.canonical(spelling) == "2024-03-01"


def test_keys_accept_only_the_canonical_spelling():
    assert MONTHLY.key_value("2024-03-01") == "2024-03-01"
    with pytest.raises(DimensionError, match="spelt '2024-03-01' in keys"):
        MONTHLY.key_value("2024-03-01T00:00:00Z")


@pytest.mark.parametrize(
    "value",
    ["2024-03-02", "2023-12-01", "2025-01-01", "2024-03-01T12:00:00Z", "2024-13-01", "march", ""],
)
def test_values_outside_the_declared_ones_are_refused(value):
    with pytest.raises(DimensionError, match=r"^Time "):
        MONTHLY.canonical(value)


def test_fixed_periods_step_in_utc_and_write_datetimes_with_z():
    six_hourly = one("2024-01-01T00:00:00Z/2024-01-02T00:00:00Z/PT6H", "2024-01-01T06:00:00Z")
    assert len(six_hourly.listed()) == 5
    assert six_hourly.canonical("2024-01-01T08:00:00+02:00") == "2024-01-01T06:00:00Z"
    assert six_hourly.canonical("2024-01-01T12:00") == "2024-01-01T12:00:00Z"  # no offset: UTC
    with pytest.raises(DimensionError):
        six_hourly.canonical("2024-01-01T07:00:00Z")


def test_a_long_interval_is_listed_as_the_interval_and_checked_arithmetically():
    daily = one("2000-01-01/2024-12-31/P1D", "2024-12-31")
    assert daily.listed() == ("2000-01-01/2024-12-31/P1D",)
    assert daily.domain.count > LISTED_VALUES
    assert daily.canonical("2012-02-29") == "2012-02-29"
    assert daily.select("2024-12-30/2030-01-01") == ["2024-12-30", "2024-12-31"]


def test_years_step_the_calendar():
    yearly = one("2000-06-15/2010-06-15/P2Y", "2010-06-15")
    assert yearly.listed() == tuple(f"{y}-06-15" for y in range(2000, 2011, 2))
    assert yearly.select("2003-01-01/2007-01-01") == ["2004-06-15", "2006-06-15"]


def test_numbers_have_one_spelling_too():
    elevation = one("0/1000/250", 0, name="elevation")
    assert elevation.listed() == ("0", "250", "500", "750", "1000")
    assert (elevation.identifier, elevation.wms_param) == ("Elevation", "ELEVATION")
    assert elevation.canonical("250.0") == "250"
    assert elevation.select("100/600") == ["250", "500"]
    with pytest.raises(DimensionError, match="spelt '250'"):
        elevation.key_value("250.00")
    depths = one([-10, -2.5, 0], -2.5, name="depth")
    assert depths.listed() == ("-10", "-2.5", "0") and depths.default == "-2.5"


def test_custom_words_are_exact_and_become_dim_parameters():
    band = one(["red", "nir", "swir"], "red", name="Band")
    assert (band.name, band.identifier, band.wms_param) == ("band", "band", "DIM_BAND")
    assert band.select("nir/swir") == ["nir", "swir"]
    with pytest.raises(DimensionError):
        band.canonical("NIR")


def test_custom_dimensions_of_dates_are_times():
    run = one(["2024-01-01T00:00:00Z", "2024-01-01T12:00:00Z"], "2024-01-01T12:00:00Z", "run")
    assert run.canonical("2024-01-01T13:00:00+01:00") == "2024-01-01T12:00:00Z"
    assert run.wms_param == "DIM_RUN"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            {"time": {"values": "2024-01-01/2024-12-01/P1M", "default": "2025-01-01"}},
            "time.default",
        ),
        ({"time": {"values": "2024-01-01/2024-12-01/P1M"}}, "time.default: missing"),
        ({"time": {"values": ["jan", "feb"], "default": "jan"}}, "time.values: time values"),
        ({"time": {"values": "2024-01-01/2024-12-01/P1M1D", "default": "2024-01-01"}}, "period"),
        ({"time": {"values": "2024-01-01/2024-12-01/1M", "default": "2024-01-01"}}, "period"),
        ({"time": {"values": "2024-01-31/2024-12-31/P1M", "default": "2024-01-31"}}, "day 1 to 28"),
        ({"time": {"values": "2024-12-01/2024-01-01/P1M", "default": "2024-01-01"}}, "before"),
        ({"time": {"values": [], "default": "x"}}, "time.values"),
        ({"band": {"values": ["a", "a"], "default": "a"}}, "twice"),
        ({"band": {"values": ["a/b"], "default": "a"}}, "band.values"),
        ({"band": {"values": ["a"], "default": "a", "unit": "m"}}, "band.unit: unknown"),
        ({"elevation": {"values": "0/100/0", "default": 0}}, "step 0"),
        ({"tilerow": {"values": ["a"], "default": "a"}}, "not a WMTS key"),
        ({"time": {"values": ["2024-01-01"], "default": "2024-01-01"}, "TIME": {}}, "twice"),
        ({}, "expected a table"),
    ],
)
def test_bad_declarations_name_the_part(table, message):
    with pytest.raises(ValueError, match=message):
        parse_dimensions(table)


def test_key_segments_round_trip():
    assert values_path(["2024-03-01", "250"]) == "2024-03-01/250/"
    path = values_path(["2024-03-01", "250"]) + "5/17/11.png"
    assert split_values(path, 2) == (("2024-03-01", "250"), "5/17/11.png")
    assert split_values("0123.png", 1) == (None, "0123.png")  # a dimension-less quadkey


def test_select_values_takes_combinations_and_defaults():
    dims = parse_dimensions(
        {
            "time": {"values": "2024-01-01/2024-12-01/P1M", "default": "2024-12-01"},
            "elevation": {"values": [0, 100], "default": 0},
        }
    )
    assert select_values(dims, []) == [()]
    assert select_values(dims, ["time=2024-01-01/2024-02-01", "ELEVATION=100"]) == [
        ("2024-01-01", "100"),
        ("2024-02-01", "100"),
    ]
    assert select_values(dims, ["time=2024-03-01T00:00:00Z"]) == [("2024-03-01", "0")]
    for bad in (["depth=3"], ["time"], ["time=2030-01-01/2031-01-01"], ["time=x", "time=y"]):
        with pytest.raises(DimensionError):
            select_values(dims, bad)
    with pytest.raises(DimensionError, match="no dimensions"):
        select_values((), ["time=2024-01-01"])
    assert wms_params(dims, None) == (("TIME", "2024-12-01"), ("ELEVATION", "0"))
    assert wms_params(dims, ("2024-01-01", "100"))[0] == ("TIME", "2024-01-01")


LAYERS = """
wms_url = "http://wms.test/"
[layers.rain]
wms_layers = "rain"
[layers.rain.dimensions.time]
values = {values}
default = {default}
"""


def test_the_layers_file_declares_dimensions(tmp_path):
    path = tmp_path / "layers.toml"
    path.write_text(LAYERS.format(values='"2024-01-01/2024-12-01/P1M"', default='"2024-12-01"'))
    (layer,) = load_settings({"LAYERS_FILE": str(path)}, dotenv_path=None).layers
    assert [d.name for d in layer.dimensions] == ["time"]
    assert layer.dimensions[0].default == "2024-12-01"


@pytest.mark.parametrize(
    ("values", "default", "message"),
    [
        ('"2024-01-01/2024-12-01/P1M"', '"2024-12-15"', "time.default: Time '2024-12-15'"),
        ('"2024-01-01/2024-12-01/P1Q"', '"2024-12-01"', "time.values:"),
        ("true", '"2024-12-01"', "time.values:"),
    ],
)
def test_bad_layers_file_dimensions_fail_in_one_line_naming_file_layer_and_key(
    tmp_path, values, default, message
):
    path = tmp_path / "layers.toml"
    path.write_text(LAYERS.format(values=values, default=default))
    with pytest.raises(ConfigError) as error:
        load_settings({"LAYERS_FILE": str(path)}, dotenv_path=None)
    text = str(error.value)
    assert "\n" not in text
    assert text.startswith(f"{path}: layer rain: key 'dimensions': {message}"), text


def test_the_environment_declares_the_layers_dimensions_as_json():
    env = {"WMS_SERVER": "http://wms.test/", "MAP_LAYERS": "rain"}
    spec = '{"time": {"values": ["2024-01-01", "2024-02-01"], "default": "2024-02-01"}}'
    (layer,) = load_settings({**env, "DIMENSIONS": spec}, dotenv_path=None).layers
    assert layer.dimensions[0].listed() == ("2024-01-01", "2024-02-01")
    for bad, message in (("{time", "DIMENSIONS: not JSON"), ('{"time": 1}', "DIMENSIONS: time:")):
        with pytest.raises(ConfigError, match=message):
            load_settings({**env, "DIMENSIONS": bad}, dotenv_path=None)


def test_the_commented_example_in_layers_example_toml_loads(tmp_path):
    example = (Path(__file__).resolve().parents[2] / "layers.example.toml").read_text()
    start = example.index("# [layers.rain]")
    block = example[start : example.index("\n\n", start)]
    text = "\n".join(line.removeprefix("# ") for line in block.splitlines())
    path = tmp_path / "layers.toml"
    path.write_text('wms_url = "http://wms.test/"\n' + text)
    (layer,) = load_settings({"LAYERS_FILE": str(path)}, dotenv_path=None).layers
    assert [(d.wms_param, d.default) for d in layer.dimensions] == [
        ("TIME", "2024-12-01"),
        ("ELEVATION", "0"),
    ]


def test_bounds_are_the_first_and_last_values_however_many_there_are():
    weekly = {"values": "2020-01-01/2020-01-16/P7D", "default": "2020-01-01"}
    assert parse_dimensions({"time": weekly})[0].bounds() == ("2020-01-01", "2020-01-15")
    # More values than the capabilities list: the last value, not the declared end.
    long = {"values": "2000-01-01/2030-01-02/P7D", "default": "2000-01-01"}
    (dimension,) = parse_dimensions({"time": long})
    assert dimension.listed() == ("2000-01-01/2030-01-02/P7D",)
    assert dimension.bounds() == ("2000-01-01", "2029-12-29")
    numbers = {"values": [500, 0, 1000], "default": 0}
    assert parse_dimensions({"elevation": numbers})[0].bounds() == ("0", "1000")
