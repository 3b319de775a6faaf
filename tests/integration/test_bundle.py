"""The Elastic Beanstalk source bundle, deployed as the platform would: unpacked into an
empty folder, requirements.txt alone installed into a fresh virtual environment, the
Procfile's command run from that folder. It must answer /heartbeat, render a tile from
the demo WMS and serve the preview map with its library."""

from __future__ import annotations

import io
import os
import re
import shlex
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
import requests
import yaml
from PIL import Image

from tests.integration.conftest import need
from tests.servers import ROOT, free_port, wait_http

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PRESENT = [
    "application.py",
    "requirements.txt",
    "Procfile",
    "gunicorn.conf.py",
    "s3maptiler/__init__.py",
    "s3maptiler/http/app.py",
    "s3maptiler/http/preview.py",
    "s3maptiler/templates/preview.html",
    "s3maptiler/static/preview.js",
    "s3maptiler/static/vendor/ol/ol.js",
    "s3maptiler/static/vendor/ol/ol.css",
    ".ebextensions/01-environment.config",
    ".platform/nginx/conf.d/elasticbeanstalk/proxy_timeouts.conf",
]
# No part of a path in the bundle may be one of these.
ABSENT_PARTS = {
    "tests",
    ".venv",
    "__pycache__",
    ".git",
    "node_modules",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "bench",
    "var",
    "gdalwmscache",
}
ABSENT_FILES = {
    ".env",
    "requirements-dev.txt",
    "requirements-localstack.txt",
    "Makefile",
    "pyproject.toml",
}

# Option namespaces of Elastic Beanstalk ("General options for all environments" and
# the Python platform's). Names ending in ":" take a user-chosen last part.
EB_NAMESPACES = {
    "aws:autoscaling:asg",
    "aws:autoscaling:launchconfiguration",
    "aws:autoscaling:scheduledaction",
    "aws:autoscaling:trigger",
    "aws:autoscaling:updatepolicy:rollingupdate",
    "aws:ec2:instances",
    "aws:ec2:vpc",
    "aws:elasticbeanstalk:application",
    "aws:elasticbeanstalk:application:environment",
    "aws:elasticbeanstalk:application:environmentsecrets",
    "aws:elasticbeanstalk:cloudwatch:logs",
    "aws:elasticbeanstalk:cloudwatch:logs:health",
    "aws:elasticbeanstalk:command",
    "aws:elasticbeanstalk:container:python",
    "aws:elasticbeanstalk:environment",
    "aws:elasticbeanstalk:environment:process:",
    "aws:elasticbeanstalk:environment:proxy",
    "aws:elasticbeanstalk:environment:proxy:staticfiles",
    "aws:elasticbeanstalk:healthreporting:system",
    "aws:elasticbeanstalk:hostmanager",
    "aws:elasticbeanstalk:managedactions",
    "aws:elasticbeanstalk:managedactions:platformupdate",
    "aws:elasticbeanstalk:monitoring",
    "aws:elasticbeanstalk:sns:topics",
    "aws:elasticbeanstalk:sqsd",
    "aws:elasticbeanstalk:trafficsplitting",
    "aws:elasticbeanstalk:xray",
    "aws:elb:healthcheck",
    "aws:elb:loadbalancer",
    "aws:elb:listener",
    "aws:elb:listener:",
    "aws:elb:policies",
    "aws:elb:policies:",
    "aws:elbv2:listener:",
    "aws:elbv2:listenerrule:",
    "aws:elbv2:loadbalancer",
    "aws:rds:dbinstance",
}
# The keys a configuration file in .ebextensions may have.
EBEXTENSIONS_KEYS = {
    "option_settings",
    "packages",
    "groups",
    "users",
    "sources",
    "files",
    "commands",
    "services",
    "container_commands",
    "Resources",
    "Outputs",
}
DEFAULT_NAMESPACE = "aws:elasticbeanstalk:application:environment"


def valid_namespace(name: str) -> bool:
    if name in EB_NAMESPACES:
        return True
    return any(
        ns.endswith(":") and name.startswith(ns) and re.fullmatch(r"[\w-]+", name[len(ns) :])
        for ns in EB_NAMESPACES
    )


def option_settings(document: dict) -> list[tuple[str, str, object]]:
    """(namespace, option, value) of a config file, in either of its two spellings."""
    settings = document.get("option_settings") or []
    if isinstance(settings, dict):  # namespace: {option: value}
        return [(ns, name, value) for ns, opts in settings.items() for name, value in opts.items()]
    return [
        (item.get("namespace", DEFAULT_NAMESPACE), item["option_name"], item.get("value"))
        for item in settings
    ]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> tuple[Path, list[str]]:
    """The zip from scripts/build-bundle.sh, unpacked into an empty folder."""
    work = tmp_path_factory.mktemp("bundle")
    archive = work / "s3maptiler.zip"
    built = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-bundle.sh"), str(archive)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if built.returncode != 0 and "npm is not installed" in built.stderr:
        need(built.stderr.strip())
    assert built.returncode == 0, built.stdout + built.stderr
    assert str(archive) in built.stdout
    target = work / "app"
    target.mkdir()
    with zipfile.ZipFile(archive) as zipped:
        names = zipped.namelist()
        zipped.extractall(target)
    return target, names


def test_bundle_holds_the_app_and_nothing_else(bundle):
    target, names = bundle
    for name in PRESENT:
        assert name in names, f"{name} is not in the bundle"
    for name in names:
        parts = set(Path(name).parts)
        assert not parts & ABSENT_PARTS, f"{name} should not be in the bundle"
        assert Path(name).name not in ABSENT_FILES or "/" in name, name
        assert not name.endswith((".pyc", ".zip")), name
    # Everything sits at the top level, as the platform expects; no folder wraps it.
    assert (target / "application.py").is_file()
    assert (target / "Procfile").read_text().startswith("web: ")


def test_ebextensions_parse_and_use_valid_namespaces(bundle):
    target, _ = bundle
    configs = sorted((target / ".ebextensions").glob("*.config"))
    assert configs
    for path in configs:
        document = yaml.safe_load(path.read_text())
        assert isinstance(document, dict), f"{path.name} is not a YAML mapping"
        assert set(document) <= EBEXTENSIONS_KEYS, f"{path.name}: {set(document)}"
        for namespace, option, value in option_settings(document):
            assert valid_namespace(namespace), f"{path.name}: unknown namespace {namespace}"
            assert isinstance(option, str) and option, f"{path.name}: {namespace} {option!r}"
            # Values reach the environment as strings; YAML must not turn them into others.
            assert isinstance(value, str), f"{path.name}: {namespace} {option}={value!r}"


def test_nginx_waits_longer_than_the_wms(bundle):
    target, _ = bundle
    conf = (target / ".platform/nginx/conf.d/elasticbeanstalk/proxy_timeouts.conf").read_text()
    env = {}
    for path in (target / ".ebextensions").glob("*.config"):
        for namespace, option, value in option_settings(yaml.safe_load(path.read_text())):
            if namespace == DEFAULT_NAMESPACE:
                env[option] = value
    wms_wait = float(env.get("WMS_CONNECT_TIMEOUT", 3.05)) + float(env.get("WMS_TIMEOUT", 30))
    for directive in ("proxy_read_timeout", "proxy_send_timeout"):
        match = re.search(rf"^{directive} (\d+)s;$", conf, re.MULTILINE)
        assert match, f"{directive} is not set in seconds"
        assert int(match[1]) > wms_wait, (directive, match[1], wms_wait)


def test_bundle_runs_from_a_fresh_venv_with_only_its_requirements(bundle, demo_wms, tmp_path):
    target, _ = bundle
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        + ["-r", str(target / "requirements.txt")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if install.returncode != 0 and "Could not find a version" in install.stderr:
        need(f"the package index cannot be reached: {install.stderr.strip()[-300:]}")
    assert install.returncode == 0, install.stderr

    procfile = (target / "Procfile").read_text().splitlines()
    argv = shlex.split(next(line for line in procfile if line.startswith("web:"))[4:])
    argv[0] = str(env_dir / "bin" / argv[0])  # the platform runs it inside its venv
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "VIRTUAL_ENV", "LAYERS_FILE", "BUCKET_NAME")
    }
    env.update(
        PATH=f"{env_dir / 'bin'}:{os.environ.get('PATH', '')}",
        HOST="127.0.0.1",
        PORT=str(port),
        WMS_SERVER=demo_wms.url,
        MAP_LAYERS=demo_wms.layers,
        LOCAL_CACHE_DIR=str(tmp_path / "tiles"),
        WEB_CONCURRENCY="1",
        GUNICORN_THREADS="4",
    )
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, cwd=target, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/heartbeat", timeout=60, process=process)
        heartbeat = requests.get(url + "/heartbeat", timeout=10)
        assert heartbeat.status_code == 200
        assert heartbeat.text.startswith("ok")

        tile = requests.get(url + "/tiles/12/1205/2556.png", timeout=60)
        assert tile.status_code == 200, tile.text
        assert tile.headers["Content-Type"] == "image/png"
        assert tile.headers["X-Tile-Source"] == "render"
        image = Image.open(io.BytesIO(tile.content))
        assert image.size == (256, 256)
        assert image.convert("RGB").getcolors(maxcolors=2) is None, "a blank tile"

        page = requests.get(url + "/preview/default", timeout=10)
        assert page.status_code == 200
        assert "build-viewer" not in page.text, "the bundle lacks the map library"
        library = requests.get(url + "/preview/static/vendor/ol/ol.js", timeout=10)
        assert library.status_code == 200
        assert len(library.content) > 100_000
    except BaseException:
        sys.stderr.write(log_path.read_text(errors="replace"))
        raise
    finally:
        process.terminate()
        process.wait(60)
    # The venv's Python, started where the platform starts it, imports the bundle's copy.
    where = subprocess.run(
        [str(python), "-c", "import s3maptiler; print(s3maptiler.__file__)"],
        cwd=target,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert where.stdout.strip() == str(target / "s3maptiler" / "__init__.py")


def test_deploy_guide_names_every_setting():
    sys.path.insert(0, str(ROOT))
    try:
        import example_env
    finally:
        sys.path.remove(str(ROOT))
    guide = (ROOT / "docs" / "deploy.md").read_text()
    missing = [name for name, _, _ in example_env.SETTINGS if f"`{name}`" not in guide]
    assert missing == [], f"docs/deploy.md does not name {missing}"
