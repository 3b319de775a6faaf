import re
from pathlib import Path

import pytest

import example_env
from s3maptiler.config import (
    DEFAULT_CACHE_CONTROL,
    ConfigError,
    load_command_settings,
    load_settings,
)
from tests.leakcheck import MARKER

BASE = {"WMS_SERVER": "http://wms.example/mapserv?map=x", "MAP_LAYERS": "roads"}


def settings(**env):
    return load_settings({**BASE, **env}, dotenv_path=None)


def test_prototype_variables_describe_one_layer():
    s = settings(BUCKET_NAME="my-tiles", TILE_PREFIX="roads/")
    (layer,) = s.layers
    assert layer.wms_url == BASE["WMS_SERVER"]
    assert layer.wms_layers == "roads"
    assert layer.prefix == "roads/"
    assert s.bucket == "my-tiles"
    assert s.store_location == "s3://my-tiles"


def test_defaults_are_the_embedded_local_store():
    s = settings()
    assert s.bucket is None
    assert s.store_location == "var/tiles"
    assert s.layers[0].prefix == "tiles/"
    assert s.layers[0].wms_version == "1.1.1"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"WMS_SERVER": ""}, "WMS_SERVER"),
        ({"WMS_SERVER": "ftp://x"}, "WMS_SERVER"),
        ({"MAP_LAYERS": ""}, "MAP_LAYERS"),
        ({"WMS_VERSION": "1.2"}, "WMS_VERSION"),
        ({"WMS_TIMEOUT": "soon"}, "WMS_TIMEOUT"),
        ({"WMS_TIMEOUT": "0"}, "WMS_TIMEOUT"),
        ({"UPLOAD_WORKERS": "-3"}, "UPLOAD_WORKERS"),
        ({"TILE_PREFIX": "tiles"}, "TILE_PREFIX"),
        ({"TILE_PREFIX": "/tiles/"}, "TILE_PREFIX"),
        ({"TILE_PREFIX": "a/../b/"}, "TILE_PREFIX"),
        ({"BUCKET_NAME": "Not_A_Bucket"}, "BUCKET_NAME"),
        ({"TILE_FORMATS": "png,gif"}, "TILE_FORMATS"),
        ({"WMS_TRANSPARENT": "maybe"}, "WMS_TRANSPARENT"),
        ({"MIN_ZOOM": "9", "MAX_ZOOM": "3"}, "MIN_ZOOM"),
        ({"MISS_PREFIX": "tiles/"}, "MISS_PREFIX"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"AWS_ENDPOINT_URL": "localhost:9000"}, "AWS_ENDPOINT_URL"),
    ],
)
def test_bad_settings_fail_with_one_line_naming_the_setting(env, named):
    with pytest.raises(ConfigError) as info:
        settings(**env)
    message = str(info.value)
    assert message.startswith(f"{named}:")
    assert "\n" not in message


def test_environment_wins_over_dotenv(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("MAP_LAYERS=from_file\nBUCKET_NAME=file-bucket\nWMS_SERVER=http://w/\n")
    s = load_settings({"MAP_LAYERS": "from_env"}, dotenv_path=dotenv)
    assert s.layers[0].wms_layers == "from_env"
    assert s.bucket == "file-bucket"


def test_every_setting_read_is_documented_in_example_env_and_readme():
    # Every setting is read in config/environment.py (and gunicorn's in its own file).
    source = Path("s3maptiler/config/environment.py").read_text()
    source += Path("gunicorn.conf.py").read_text()
    read = set(re.findall(r'"([A-Z][A-Z0-9_]{2,})"', source))
    read |= set(re.findall(r"environ\.get\('([A-Z_]+)'", source))
    read -= {
        "INFO",
        "DEBUG",
        "WARNING",
        "ERROR",
        "CRITICAL",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL_S3",
    }
    documented = {name for name, _, _ in example_env.SETTINGS}
    assert read <= documented, read - documented
    readme = Path("README.md").read_text()
    assert all(f"`{name}`" in readme for name in documented), [
        n for n in documented if f"`{n}`" not in readme
    ]


def test_the_env_template_starts_the_service_as_no_env_file_does(tmp_path):
    """`python example_env.py > .env`, then start-up: the template sets nothing, so
    defaults that describe a value ("cores", "GUNICORN_THREADS/2") cannot break it."""
    dotenv = tmp_path / ".env"
    dotenv.write_text(example_env.template())
    base = {"WMS_SERVER": "http://wms.test/", "MAP_LAYERS": "roads"}
    assert load_settings(base, dotenv_path=dotenv) == load_settings(base, dotenv_path=None)
    names = [line.split("=")[0] for line in example_env.template().splitlines()[1::2]]
    assert names == [f"# {name}" for name, _, _ in example_env.SETTINGS]


def test_the_bucket_url_is_public_url_else_the_aws_website_endpoint():
    base = {"WMS_SERVER": "http://wms.test/", "MAP_LAYERS": "roads"}
    assert load_settings(base, dotenv_path=None).bucket_url is None
    aws = {**base, "BUCKET_NAME": "my-tiles", "AWS_REGION": "eu-central-1"}
    assert (
        load_settings(aws, dotenv_path=None).bucket_url
        == "http://my-tiles.s3-website.eu-central-1.amazonaws.com"
    )
    assert (
        load_settings({**aws, "AWS_REGION": "us-east-1"}, dotenv_path=None).bucket_url
        == "http://my-tiles.s3-website-us-east-1.amazonaws.com"
    )
    # Another S3 (MinIO, LocalStack): no guess, only PUBLIC_URL.
    local = {**aws, "AWS_ENDPOINT_URL": "http://127.0.0.1:4566"}
    assert load_settings(local, dotenv_path=None).bucket_url is None
    public = {**local, "PUBLIC_URL": "https://d123.cloudfront.net/"}
    assert load_settings(public, dotenv_path=None).bucket_url == "https://d123.cloudfront.net"
    with pytest.raises(ConfigError, match="PUBLIC_URL"):
        load_settings({**base, "PUBLIC_URL": "d123.cloudfront.net"}, dotenv_path=None)


def test_settings_keep_no_copy_of_the_environment():
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY" + MARKER
    s = settings(AWS_SECRET_ACCESS_KEY=secret, AWS_SESSION_TOKEN=secret, SOME_OTHER_TOOL=secret)
    assert not hasattr(s, "extra")
    # Nothing reachable from the settings object holds the secret.
    seen, stack = set(), [s]
    while stack:
        value = stack.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        assert value != secret
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list | tuple | set | frozenset):
            stack.extend(value)
        elif hasattr(value, "__dataclass_fields__"):
            stack.extend(getattr(value, name) for name in value.__dataclass_fields__)


@pytest.mark.parametrize(
    ("env", "metatile", "buffer"),
    [
        ({}, (4, 4), 64),
        ({"METATILE": "1x1"}, (1, 1), 0),  # a true pass-through: the WMS's own bytes
        ({"METATILE": "1"}, (1, 1), 0),
        ({"METATILE": "1x1", "META_BUFFER": "32"}, (1, 1), 32),  # explicit wins
        ({"METATILE": "2x2"}, (2, 2), 64),
        ({"METATILE": "2x2", "META_BUFFER": "0"}, (2, 2), 0),
    ],
)
def test_metatile_1x1_draws_no_buffer_unless_asked(env, metatile, buffer):
    (layer,) = settings(**env).layers
    assert (layer.metatile, layer.meta_buffer) == (metatile, buffer)


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({}, "default"),
        ({"TILE_PREFIX": "1.0.0/tms-mercator-naip/"}, "tms-mercator-naip"),
        ({"TILE_PREFIX": "1.0.0/roads_2024/"}, "roads_2024"),
        ({"TILE_PREFIX": "roads/"}, "default"),
        ({"TILE_PREFIX": "1.0.0/a/b/"}, "default"),  # not of the form 1.0.0/<name>/
        ({"TILE_PREFIX": "1.0.0/a.b/"}, "default"),  # '.' is no layer-name character
        ({"TILE_PREFIX": "2.0.0/naip/"}, "default"),
        ({"TILE_PREFIX": ""}, "default"),
        ({"TILE_PREFIX": "1.0.0/naip/", "LAYER_NAME": "aerial"}, "aerial"),
        ({"LAYER_NAME": "roads"}, "roads"),
    ],
)
def test_layer_name_defaults_from_a_tms_shaped_prefix(env, name):
    (layer,) = settings(**env).layers
    assert layer.name == name


@pytest.mark.parametrize("bad", ["a b", "a/b", "..", "x" * 65, "naïve", "a.b"])
def test_a_bad_layer_name_fails_at_start_up(bad):
    with pytest.raises(ConfigError) as info:
        settings(LAYER_NAME=bad)
    assert str(info.value).startswith("LAYER_NAME:") and "\n" not in str(info.value)


def test_a_command_reads_the_environment_through_config_without_a_wms():
    """The CLI's single layer when the service's settings do not load (no WMS_SERVER):
    checked as the service checks it, with the model's defaults."""
    found = load_command_settings(
        {
            "BUCKET_NAME": "my-tiles",
            "AWS_ENDPOINT_URL": "http://s3.test",
            "AWS_REGION": "eu-west-1",
        },
        dotenv_path=None,
    )
    assert found.settings is None and "WMS_SERVER" in str(found.settings_error)
    assert (found.bucket, found.s3_endpoint_url, found.region) == (
        "my-tiles",
        "http://s3.test",
        "eu-west-1",
    )
    assert found.sqs_endpoint_url == "http://s3.test"
    layer = found.single_layer
    assert (layer.name, layer.prefix, layer.cache_control) == (
        "default",
        "tiles/",
        DEFAULT_CACHE_CONTROL,
    )
    assert found.miss_prefix == "miss/"


@pytest.mark.parametrize(
    "env, named",
    [
        ({"TILE_PREFIX": "tiles"}, "TILE_PREFIX"),
        ({"LAYER_NAME": "a b"}, "LAYER_NAME"),
        ({"BUCKET_NAME": "Not_A_Bucket"}, "BUCKET_NAME"),
        ({"AWS_ENDPOINT_URL_S3": "s3.test"}, "AWS_ENDPOINT_URL_S3"),
        ({"AWS_ENDPOINT_URL_SQS": "sqs.test"}, "AWS_ENDPOINT_URL_SQS"),
        ({"MISS_PREFIX": "/miss/"}, "MISS_PREFIX"),
    ],
)
def test_a_command_s_bad_setting_fails_in_one_line_naming_it(env, named):
    with pytest.raises(ConfigError) as info:
        load_command_settings(env, dotenv_path=None)
    assert str(info.value).startswith(f"{named}:")
    assert "\n" not in str(info.value)


def test_the_s3_endpoint_of_its_own_wins_and_a_layers_file_has_no_single_layer(tmp_path):
    found = load_command_settings(
        {"AWS_ENDPOINT_URL": "http://all.test", "AWS_ENDPOINT_URL_S3": "http://s3.test"},
        dotenv_path=None,
    )
    assert (found.s3_endpoint_url, found.sqs_endpoint_url) == ("http://s3.test", "http://all.test")
    broken = load_command_settings({"LAYERS_FILE": str(tmp_path / "none.toml")}, dotenv_path=None)
    assert broken.single_layer is None and broken.settings is None


def test_every_default_example_env_states_is_the_model_s():
    """A default is written once (config/model.py); example_env.py states it for users:
    setting a variable to its stated default changes no setting."""
    # Rules, not values: "GUNICORN_THREADS/2"; a directory of this machine's.
    described = {"WMS_MAX_CONCURRENT", "SPOOL_DIR"}
    fixed = {"SPOOL_DIR": "/tmp/spool"}
    reference = settings(**fixed)
    for name, default, _ in example_env.SETTINGS:
        if default is None or name in BASE or name in described:
            continue
        assert settings(**fixed, **{name: default}) == reference, name
