"""The demo WMS the project ships: Debian's MapServer 8 behind lighttpd FastCGI.

Runs against the real server (devtools.demowms.DemoWMS) on a free 127.0.0.1 port.
Skips when mapserv or lighttpd is missing, except under CI=true, where it fails.
"""

from __future__ import annotations

import io
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from PIL import Image

from devtools.demowms import DemoWMS, descendants, unavailable_reason
from tests.integration.conftest import need

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

# Lower Manhattan, Brooklyn and Jersey City, Web Mercator metres (about zoom 11).
NYC_3857 = "-8238310,4960241,-8218526,4980025"
# The same kind of box in decimal degrees: lon/lat for 1.1.1, lat/lon for 1.3.0.
NYC_LONLAT = "-74.1,40.6,-73.9,40.8"
NYC_LATLON = "40.6,-74.1,40.8,-73.9"
# Open sea in the North Atlantic, nothing drawn but IMAGECOLOR.
SEA_3857 = "-4500000,3500000,-4480000,3520000"
SEA_RGB = (170, 211, 223)  # demo.map IMAGECOLOR


def require_installed() -> None:
    need(unavailable_reason())


@pytest.fixture(scope="module")
def wms():
    require_installed()
    with DemoWMS(fcgi_processes=2) as server:
        yield server


@pytest.fixture(scope="module")
def http():
    session = requests.Session()
    session.trust_env = False  # no proxy from the environment for 127.0.0.1
    yield session
    session.close()


def getmap(http, wms, **params) -> requests.Response:
    """A GetMap with sane 1.1.1 defaults; a parameter set to None is left out."""
    query = {
        "SERVICE": "WMS",
        "VERSION": "1.1.1",
        "REQUEST": "GetMap",
        "LAYERS": wms.layers,
        "STYLES": "",
        "SRS": "EPSG:3857",
        "BBOX": NYC_3857,
        "WIDTH": "256",
        "HEIGHT": "256",
        "FORMAT": "image/png",
        **params,
    }
    query = {key: value for key, value in query.items() if value is not None}
    return http.get(wms.url, params=query, timeout=30)


def decode(answer: requests.Response, mime: str = "image/png") -> Image.Image:
    assert answer.status_code == 200, answer.text[:300]
    assert answer.headers["Content-Type"].startswith(mime), answer.text[:300]
    image = Image.open(io.BytesIO(answer.content))
    image.load()  # fails on truncated data
    return image


def colours(image: Image.Image) -> int:
    return len(image.convert("RGBA").getcolors(1 << 24))


def test_getmap_111_web_mercator_draws_new_york(wms, http):
    image = decode(getmap(http, wms))
    assert image.format == "PNG"
    assert image.size == (256, 256)
    # Relief, borough fills, outlines and anti-aliased labels: many colours.
    assert colours(image) > 50


def test_getmap_size_follows_width_and_height(wms, http):
    image = decode(getmap(http, wms, WIDTH="512", HEIGHT="300"))
    assert image.size == (512, 300)


def test_getmap_130_epsg4326_takes_lat_lon_bbox(wms, http):
    lat_lon = decode(getmap(http, wms, VERSION="1.3.0", SRS=None, CRS="EPSG:4326", BBOX=NYC_LATLON))
    lon_lat = decode(getmap(http, wms, SRS="EPSG:4326", BBOX=NYC_LONLAT))
    assert colours(lat_lon) > 50
    # 1.3.0 lat/lon and 1.1.1 lon/lat name the same box: the same picture.
    assert lat_lon.convert("RGBA").tobytes() == lon_lat.convert("RGBA").tobytes()


def test_epsg_900913_is_an_alias_of_3857(wms, http):
    google = decode(getmap(http, wms, SRS="EPSG:900913"))
    mercator = decode(getmap(http, wms))
    assert google.convert("RGBA").tobytes() == mercator.convert("RGBA").tobytes()


def test_the_sea_is_one_colour(wms, http):
    image = decode(getmap(http, wms, BBOX=SEA_3857)).convert("RGBA")
    assert image.getcolors() == [(256 * 256, (*SEA_RGB, 255))]


def test_transparent_sea_is_fully_transparent(wms, http):
    image = decode(getmap(http, wms, BBOX=SEA_3857, TRANSPARENT="TRUE"))
    assert image.mode == "RGBA"
    assert image.getextrema()[3] == (0, 0)


@pytest.mark.parametrize("layer", ["relief", "countries", "boroughs", "cities"])
def test_each_layer_alone_draws_something_over_new_york(wms, http, layer):
    image = decode(getmap(http, wms, LAYERS=layer, TRANSPARENT="TRUE"))
    alpha = image.getchannel("A")
    drawn = sum(alpha.histogram()[1:])
    assert drawn > 0, f"layer {layer} drew nothing over New York"


def test_relief_alone_is_transparent_at_sea(wms, http):
    image = decode(getmap(http, wms, LAYERS="relief", BBOX=SEA_3857, TRANSPARENT="TRUE"))
    assert image.getextrema()[3] == (0, 0)


def test_jpeg_and_8bit_png(wms, http):
    jpeg = decode(getmap(http, wms, FORMAT="image/jpeg"), "image/jpeg")
    assert (jpeg.format, jpeg.size) == ("JPEG", (256, 256))
    png8 = decode(getmap(http, wms, FORMAT="image/png; mode=8bit"), "image/png")
    assert (png8.format, png8.mode) == ("PNG", "P")
    assert colours(png8) > 20


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"STYLES": None}, "MissingParameterValue"),
        ({"LAYERS": "no_such_layer"}, "LayerNotDefined"),
        ({"SRS": "EPSG:999999"}, "InvalidSRS"),
    ],
)
def test_errors_are_service_exceptions_not_images(wms, http, params, code):
    answer = getmap(http, wms, **params)
    assert not answer.headers["Content-Type"].startswith("image/")
    assert b"<ServiceExceptionReport" in answer.content
    assert f'code="{code}"'.encode() in answer.content


def test_clients_cannot_pick_another_mapfile(wms, http):
    answer = getmap(http, wms, map="/etc/passwd")
    assert not answer.headers["Content-Type"].startswith("image/")


def test_capabilities_name_this_server(wms, http):
    answer = http.get(
        wms.url, params={"SERVICE": "WMS", "VERSION": "1.3.0", "REQUEST": "GetCapabilities"}
    )
    assert answer.status_code == 200
    text = answer.text
    assert f'xlink:href="{wms.url}?' in text  # the real port, so clients can follow it
    for name in ("demo", "relief", "countries", "boroughs", "cities"):
        assert f"<Name>{name}</Name>" in text
    for srs in ("EPSG:3857", "EPSG:4326", "EPSG:900913"):
        assert f"<CRS>{srs}</CRS>" in text


def test_request_count_grows_by_exactly_the_requests_sent(wms, http):
    before = wms.request_count()
    assert wms.request_count() == before, "reading the counter must not count"
    getmap(http, wms)
    getmap(http, wms, BBOX=SEA_3857)
    getmap(http, wms, STYLES=None)  # an error still reached mapserv
    http.get(wms.url, params={"SERVICE": "WMS", "REQUEST": "GetCapabilities"})
    assert wms.request_count() == before + 4


def test_stop_leaves_no_lighttpd_or_mapserv(http):
    require_installed()
    wms = DemoWMS(fcgi_processes=3).start()
    lighttpd = wms.process.pid
    children = descendants(lighttpd)
    assert len(children) == 3, "one mapserv per FastCGI process"
    decode(getmap(http, wms))
    workdir = wms.workdir

    wms.stop()

    assert not alive(lighttpd)
    assert [c.pid for c in children if alive(c.pid)] == []
    assert in_process_group(lighttpd) == []
    assert not workdir.exists()
    with pytest.raises(requests.ConnectionError):
        getmap(http, wms)
    wms.stop()  # twice is harmless


def test_runs_in_the_foreground_and_stops_on_sigterm(http):
    require_installed()
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.demowms", "--processes", "1"],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        bufsize=0,
    )
    started = []
    try:
        url = wait_for_url(proc, timeout=60)
        answer = http.get(url, params={"SERVICE": "WMS", "REQUEST": "GetCapabilities"})
        assert answer.status_code == 200
        started = descendants(proc.pid)
        assert len(started) == 2, "lighttpd and one mapserv"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert [p.pid for p in started if alive(p.pid)] == []
    finally:
        # On failure: SIGTERM lets the child stop its own servers; only then force.
        if proc.poll() is None:
            started = started or descendants(proc.pid)
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for leftover in started:
            if alive(leftover.pid):
                os.kill(leftover.pid, signal.SIGKILL)
        proc.stderr.close()


@pytest.mark.parametrize("how", ["--demo-dir", "DEMO_DIR"])
def test_an_installed_copy_of_the_package_serves_the_demo_it_is_pointed_at(http, tmp_path, how):
    """The demo tools copied into a site-packages of their own, run from an unrelated folder:
    nothing beside it or in the working directory is a demo folder."""
    require_installed()
    site = tmp_path / "site-packages"
    shutil.copytree(
        REPO / "devtools", site / "devtools", ignore=shutil.ignore_patterns("__pycache__")
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    argv = [sys.executable, "-m", "devtools.demowms", "--processes", "1"]
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("DEMO_DIR", None)
    if how == "--demo-dir":
        argv += ["--demo-dir", str(REPO / "demo")]
    else:
        env["DEMO_DIR"] = str(REPO / "demo")
    proc = subprocess.Popen(
        argv,
        cwd=elsewhere,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        bufsize=0,
    )
    try:
        url = wait_for_url(proc, timeout=60)
        answer = http.get(url, params={"SERVICE": "WMS", "REQUEST": "GetCapabilities"})
        assert answer.status_code == 200 and b"<WMS_Capabilities" in answer.content
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.stderr.close()


# -- helpers -----------------------------------------------------------------------


def wait_for_url(proc: subprocess.Popen, timeout: float) -> str:
    """Read the child's log (raw, unbuffered: select() sees what is unread) until it
    names the WMS endpoint."""
    marker = b"WMS endpoint: "
    deadline = time.monotonic() + timeout
    log = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 0.5)
        if ready:
            chunk = os.read(proc.stderr.fileno(), 65536)
            if not chunk:
                break
            log += chunk
        elif proc.poll() is not None:
            break
        line = next((line for line in log.splitlines(True) if marker in line), b"")
        if line.endswith(b"\n"):
            return line.split(marker, 1)[1].decode().strip()
    pytest.fail(f"no WMS endpoint logged: {log[-1500:].decode(errors='replace')}")


def process_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    """Running, sleeping or stopped; a zombie (exited, not yet reaped) is not alive."""
    return process_state(pid) not in (None, "Z", "X")


def in_process_group(group: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == group and fields[0] not in ("Z", "X"):
            found.append(int(stat.parent.name))
    return found
