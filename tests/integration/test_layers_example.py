"""The shipped layers.example.toml, as a user starts it (``LAYERS_FILE`` and the demo
WMS as ``WMS_SERVER``, which its layers take for their ``wms_url``): every layer of it
served by gunicorn from the demo MapServer, one tile of each kind through its own key, with the
Content-Type, size and lifetime that kind promises, and every layer in the documents."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import requests
from PIL import Image

from s3maptiler.tiles.formats import sniff_content_type
from tests.servers import GunicornApp

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "layers.example.toml"
# Zoom 5 over New York: land, sea and the March band of the months layer are nearby.
KEYS = {
    "photo/5/9/19.webp": ("image/webp", 256),
    "retina/5/9/19.png": ("image/png", 256),
    "retina/5/9/19@2x.png": ("image/png", 512),
    "months/2024-03-01/5/9/19.png": ("image/png", 256),
    "months/5/9/19.png": ("image/png", 256),
    "fresh/5/9/19.png": ("image/png", 256),
}


@pytest.fixture(scope="module")
def app(demo_wms, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("example")
    # The file as shipped: its layers take WMS_SERVER's WMS, as under `make run`.
    env = {
        "LAYERS_FILE": str(EXAMPLE),
        "WMS_SERVER": demo_wms.url,
        "LOCAL_CACHE_DIR": str(tmp / "tiles"),
    }
    service = GunicornApp({**env, "LOG_LEVEL": "WARNING"}).start()
    yield service
    service.stop()


def get(app: GunicornApp, path: str) -> requests.Response:
    return requests.get(app.url + path, timeout=60)


@pytest.mark.parametrize("key", sorted(KEYS))
def test_each_kind_answers_its_own_key(app, key):
    media, size = KEYS[key]
    answer = get(app, f"/{key}")
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == media
    assert sniff_content_type(answer.content) == media
    with Image.open(io.BytesIO(answer.content)) as image:
        assert image.size == (size, size)


def test_a_mixed_tile_says_what_its_bytes_are(app):
    # Zoom 5 tiles around New York: open sea (transparent: PNG) and the coast.
    kinds = set()
    for x, y in ((9, 19), (10, 19), (11, 19), (12, 19)):
        answer = get(app, f"/coast/5/{x}/{y}.mixed")
        assert answer.status_code == 200, answer.text
        assert answer.headers["Content-Type"] == sniff_content_type(answer.content)
        kinds.add(answer.headers["Content-Type"])
    assert kinds <= {"image/png", "image/jpeg"} and kinds


def test_a_month_is_drawn_at_its_time(app):
    march = get(app, "/months/2024-03-01/3/1/4.png").content
    june = get(app, "/months/2024-06-01/3/1/4.png").content
    assert march != june
    assert get(app, "/months/2025-03-01/3/1/4.png").status_code == 400


def test_every_layer_is_in_the_documents(app):
    names = {"demo", "nyc", "world4326", "esri", "photo", "coast", "retina", "months", "fresh"}
    capabilities = get(app, "/wmts/1.0.0/WMTSCapabilities.xml").text
    for name in names | {"retina@2x"}:
        assert f"<ows:Identifier>{name}</ows:Identifier>" in capabilities
    collections = get(app, "/ogcapi/collections").json()["collections"]
    assert names <= {c["id"] for c in collections}
