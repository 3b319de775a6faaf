"""The bundled demo WMS: Debian's MapServer 8 behind lighttpd FastCGI on 127.0.0.1.

Used by `python application.py` when WMS_SERVER is unset, by the integration tests
and by the benchmarks. FastCGI keeps `mapserv` processes alive between requests
(plain CGI costs ~80 ms a request for fork and mapfile load). lighttpd's statistics
page counts the requests that reached `mapserv` exactly, which is how tests count
WMS calls.

    python -m s3maptiler.demowms      # run it in the foreground
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
DEMO_DIR = REPO / "demo"
MAPFILE = DEMO_DIR / "demo.map"
MAPSERV = "/usr/bin/mapserv"
INSTALL_HINT = "run `sudo bash scripts/install-system-packages.sh`"


def unavailable_reason() -> str | None:
    """None when the demo WMS can run here, else one line saying what is missing."""
    missing = [name for name in ("lighttpd", "mapserv") if not _which(name)]
    if missing:
        return f"{' and '.join(missing)} not installed ({INSTALL_HINT})"
    if not Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf").exists():
        return f"the DejaVu fonts are not installed ({INSTALL_HINT})"
    if not _which("ogr2ogr"):
        return f"GDAL's ogr2ogr is not installed ({INSTALL_HINT})"
    return None


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")


def ensure_demo_data() -> Path:
    """Build demo/build/ (once) and return it; see demo/build_data.py."""
    spec = importlib.util.spec_from_file_location("demo_build_data", DEMO_DIR / "build_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ensure_demo_data()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DemoWMS:
    """One lighttpd with `fcgi_processes` persistent mapserv processes."""

    layers = "demo"  # the WMS LAYERS value that draws every layer (a mapfile GROUP)

    def __init__(
        self, port: int | None = None, fcgi_processes: int = 4, workdir: Path | None = None
    ) -> None:
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}/wms"
        self.fcgi_processes = fcgi_processes
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="s3maptiler-wms-"))
        self.process: subprocess.Popen | None = None

    def start(self) -> DemoWMS:
        reason = unavailable_reason()
        if reason:
            raise RuntimeError(f"demo WMS: {reason}")
        ensure_demo_data()
        conf = self._write_config()
        self.process = subprocess.Popen(
            [_which("lighttpd"), "-D", "-f", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.workdir / "lighttpd.stderr", "wb"),  # noqa: SIM115
            start_new_session=True,  # its own process group: stop() ends mapserv too
        )
        try:
            self._wait_ready(15.0)
        except Exception:
            self.stop()
            raise
        log.info("demo WMS on %s (LAYERS=%s)", self.url, self.layers)
        return self

    def _write_config(self) -> Path:
        ms_config = self.workdir / "mapserver.conf"
        # MapServer 8 refuses to run without a config file; MS_MAP_NO_PATH stops clients
        # from naming another mapfile with map=.
        ms_config.write_text('CONFIG\n  ENV\n    MS_MAP_NO_PATH "1"\n  END\nEND\n')
        conf = self.workdir / "lighttpd.conf"
        conf.write_text(
            f"""
server.modules = ("mod_fastcgi", "mod_setenv", "mod_status")
server.document-root = "{self.workdir}"
server.bind = "127.0.0.1"
server.port = {self.port}
server.errorlog = "{self.workdir}/error.log"
server.max-connections = 1024
status.statistics-url = "/server-statistics"
# Per request, so mapserv (spawned by lighttpd) finds the mapfile in its CGI env.
setenv.add-environment = (
  "MS_MAPFILE" => "{MAPFILE}",
  "MAPSERVER_CONFIG_FILE" => "{ms_config}",
)
fastcgi.server = ("/wms" => ((
  "bin-path" => "{MAPSERV}",
  "socket" => "{self.workdir}/mapserv.sock",
  "check-local" => "disable",
  "max-procs" => {self.fcgi_processes},
  "bin-environment" => ("MAPSERVER_CONFIG_FILE" => "{ms_config}"),
)))
"""
        )
        return conf

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"{self.url}?SERVICE=WMS&REQUEST=GetCapabilities&VERSION=1.1.1"
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"demo WMS: lighttpd exited: {self._stderr()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    if answer.status == 200 and b"WMT_MS_Capabilities" in answer.read():
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"demo WMS did not answer within {timeout} s: {self._stderr()}")
            time.sleep(0.1)

    def _stderr(self) -> str:
        text = ""
        for name in ("lighttpd.stderr", "error.log"):
            path = self.workdir / name
            if path.exists():
                text += path.read_text(errors="replace")[-1500:]
        return text.strip().replace("\n", " | ") or "no output"

    def request_count(self) -> int:
        """How many requests reached mapserv so far (lighttpd's fastcgi.requests)."""
        url = f"http://127.0.0.1:{self.port}/server-statistics"
        with urllib.request.urlopen(url, timeout=5) as answer:
            for line in answer.read().decode().splitlines():
                name, _, value = line.partition(":")
                if name.strip() == "fastcgi.requests":
                    return int(value)
        return 0

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            # lighttpd alone first: it stops its mapserv children and reaps them.
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        # mapserv children left by an abrupt lighttpd exit share the process group.
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> DemoWMS:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    wms = DemoWMS(port=int(os.environ.get("DEMO_WMS_PORT", "0")) or None).start()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        log.info("try %s?SERVICE=WMS&REQUEST=GetCapabilities&VERSION=1.1.1", wms.url)
        while wms.process.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        wms.stop()


if __name__ == "__main__":
    main()
