"""MapProxy from PyPI as an upstream tile service for tests: the demo MapServer as TMS,
XYZ (``/tiles`` with ``origin=nw``) and WMTS (REST and KVP), all from one cache.

MapProxy is installed into ``bench/.venv-mapproxy`` and run under gunicorn by
``bench/compare_mapproxy.py``; this module only writes the configuration a tile-source
test needs and starts that same server.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from bench.compare_mapproxy import MapProxyServer, SetupError, ensure_mapproxy_venv

__all__ = ["CAPABILITIES", "TEMPLATES", "MapProxyUpstream", "unavailable_reason"]

LAYER = "demo"
GRID = "webmercator"

#: Each way MapProxy serves one tile, as a layer's tile source: (type, path template).
TEMPLATES = {
    # /tiles (not /tms: MapProxy's TMS service numbers GLOBAL_WEBMERCATOR's levels from
    # 1, the TMS global-mercator profile's): rows from the bottom, origin 'sw' below.
    "tms": ("tms", f"/tiles/1.0.0/{LAYER}/{GRID}/{{z}}/{{x}}/{{y}}.png"),
    "xyz": ("xyz", f"/tiles/{LAYER}/{GRID}/{{z}}/{{x}}/{{y}}.png?origin=nw"),
    "xyz512": ("xyz", f"/tiles/{LAYER}512/{GRID}512/{{z}}/{{x}}/{{y}}.png?origin=nw"),
    "wmts-rest": ("xyz", f"/wmts/{LAYER}/{GRID}/{{z}}/{{x}}/{{y}}.png"),
    "wmts-kvp": (
        "xyz",
        "/service?SERVICE=WMTS&REQUEST=GetTile&VERSION=1.0.0&LAYER=demo&STYLE=default"
        "&TILEMATRIXSET=webmercator&TILEMATRIX={z}&TILEROW={y}&TILECOL={x}&FORMAT=image/png",
    ),
}

#: Its WMTS capabilities documents, for a layer's `type = "wmts"` source: (encoding, path).
CAPABILITIES = {
    "rest": "/wmts/1.0.0/WMTSCapabilities.xml",
    "kvp": "/service?SERVICE=WMTS&REQUEST=GetCapabilities&VERSION=1.0.0",
}

_CONFIG = """\
services:
  tms:
    use_grid_names: true
    origin: 'sw'
  wmts:
    restful: true
    kvp: true
layers:
  - name: demo
    title: the demo MapServer through MapProxy
    sources: [demo_cache]
  # A cache of its own: MapProxy names cache directories by the grid's SRS, so two
  # grids of one cache in EPSG:3857 would share theirs.
  - name: demo512
    title: the demo MapServer in 512 px tiles
    sources: [demo_cache512]
caches:
  demo_cache512:
    grids: [webmercator512]
    sources: [demo_wms]
    format: image/png
    image:
      format: image/png
      mode: RGB
      colors: 0
    meta_size: [1, 1]
    meta_buffer: 0
  demo_cache:
    grids: [webmercator]
    sources: [demo_wms]
    format: image/png
    image:
      format: image/png
      mode: RGB
      colors: 0
    meta_size: [1, 1]
    meta_buffer: 0
sources:
  demo_wms:
    type: wms
    supported_srs: ['EPSG:3857']
    wms_opts:
      version: '1.1.1'
    req:
      url: {wms_url}
      layers: {layers}
      styles: ''
      format: image/png
      transparent: false
grids:
  webmercator:
    base: GLOBAL_WEBMERCATOR
  # 512 px tiles, each over the ground of a 256 px tile of the same zoom (Mapbox-style).
  webmercator512:
    srs: 'EPSG:3857'
    bbox: [-20037508.342789244, -20037508.342789244, 20037508.342789244, 20037508.342789244]
    origin: 'nw'
    tile_size: [512, 512]
    min_res: 78271.51696402048
    num_levels: 20
globals:
  cache:
    base_dir: {work}/cache_data
    lock_dir: {work}/locks
    tile_lock_dir: {work}/tile_locks
  image:
    paletted: false
"""


def unavailable_reason() -> str | None:
    """Why MapProxy cannot be installed here, or None (it is installed on first use)."""
    try:
        ensure_mapproxy_venv()
    except SetupError as exc:
        return str(exc).splitlines()[0]
    return None


class MapProxyUpstream:
    """MapProxy serving `wms_url`'s `layers` on a free port (``url``)."""

    def __init__(self, wms_url: str, layers: str) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="s3maptiler-mapproxy-"))
        config = self.work / "mapproxy.yaml"
        config.write_text(_CONFIG.format(wms_url=wms_url, layers=layers, work=self.work))
        self.server = MapProxyServer(ensure_mapproxy_venv(), config, self.work, {})
        self.url = self.server.url

    def template(self, kind: str, base: str | None = None) -> tuple[str, str]:
        """(source type, URL template) of one of TEMPLATES, at `base` (a proxy) or here."""
        source_type, path = TEMPLATES[kind]
        return source_type, (base or self.url) + path

    def start(self) -> MapProxyUpstream:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()
        shutil.rmtree(self.work, ignore_errors=True)
