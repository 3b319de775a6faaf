"""The demo WMS the project ships: MapServer 8 behind lighttpd FastCGI."""

import io
import os
import time
from pathlib import Path

import pytest
import requests
from PIL import Image

from s3maptiler.demowms import DemoWMS

pytestmark = pytest.mark.integration

NYC_3857 = "-8238310,4970241,-8228526,4980025"
SEA_3857 = "-5000000,3000000,-4990000,3010000"  # mid-Atlantic


def getmap(wms, **params):
    query = {
        "SERVICE": "WMS",
        "VERSION": "1.1.1",
        "REQUEST": "GetMap",
        "LAYERS": "demo",
        "STYLES": "",
        "SRS": "EPSG:3857",
        "BBOX": NYC_3857,
        "WIDTH": "256",
        "HEIGHT": "256",
        "FORMAT": "image/png",
        **params,
    }
    return requests.get(
        wms.url, params={k: v for k, v in query.items() if v is not None}, timeout=30
    )


def image(answer):
    assert answer.headers["Content-Type"].startswith("image/"), answer.text[:300]
    return Image.open(io.BytesIO(answer.content))


def test_getmap_draws_new_york(demo_wms):
    tile = image(getmap(demo_wms))
    assert tile.size == (256, 256)
    assert len(tile.convert("RGBA").getcolors(65536)) > 50


def test_wms_130_with_epsg_4326_takes_lat_lon(demo_wms):
    tile = image(
        getmap(demo_wms, VERSION="1.3.0", SRS=None, CRS="EPSG:4326", BBOX="40.6,-74.1,40.8,-73.9")
    )
    assert len(tile.convert("RGBA").getcolors(65536)) > 50


def test_the_sea_is_one_colour_or_fully_transparent(demo_wms):
    opaque = image(getmap(demo_wms, BBOX=SEA_3857)).convert("RGBA")
    assert len(opaque.getcolors(65536)) == 1
    clear = image(getmap(demo_wms, BBOX=SEA_3857, TRANSPARENT="TRUE")).convert("RGBA")
    assert clear.getextrema()[3] == (0, 0)


@pytest.mark.parametrize("params", [{"STYLES": None}, {"LAYERS": "no_such_layer"}])
def test_errors_are_service_exceptions_not_images(demo_wms, params):
    answer = getmap(demo_wms, **params)
    assert not answer.headers["Content-Type"].startswith("image/")
    assert b"ServiceException" in answer.content


def test_request_count_is_exact_and_stop_leaves_no_process():
    wms = DemoWMS(fcgi_processes=2).start()
    before = wms.request_count()
    for _ in range(3):
        getmap(wms)
    assert wms.request_count() == before + 3
    group = wms.process.pid
    assert living_in_group(group), "lighttpd and mapserv should be running"
    wms.stop()
    deadline = time.monotonic() + 5
    while living_in_group(group) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert living_in_group(group) == []
    assert not os.path.exists(wms.workdir)


def living_in_group(group: int) -> list[int]:
    """Processes of a process group that are not zombies waiting to be reaped."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, pgrp = fields[0], int(fields[2])
        if pgrp == group and state != "Z":
            found.append(int(stat.parent.name))
    return found
