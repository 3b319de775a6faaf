"""The bundled demo WMS: Debian's MapServer 8 behind lighttpd FastCGI on 127.0.0.1.

Used by ``python application.py`` when WMS_SERVER is unset, by the integration
tests and by the benchmarks. FastCGI keeps ``mapserv`` processes alive between
requests (plain CGI costs ~80 ms a request for fork and mapfile load). lighttpd's
statistics page counts the requests that reached ``mapserv`` exactly, which is how
tests count WMS calls.

    python -m devtools.demowms [--port N] [--processes N] [--demo-dir DIR]

The map is ``demo/demo.map``; its data is built on first use by
``demo/build_data.py`` into ``demo/build/``. The ``demo/`` folder is found by
:func:`find_demo_dir`: an explicit argument, else ``$DEMO_DIR``, else ``demo/``
beside the package (a checkout or an editable install), else ``demo/`` in the
current directory (the repository root, where ``make run`` and the Procfile run),
so the package also works installed anywhere else.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

log = logging.getLogger(__name__)

#: The environment variable naming the demo folder (the one holding demo.map).
DEMO_DIR_VARIABLE = "DEMO_DIR"
MAPFILE_NAME = "demo.map"
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
INSTALL_HINT = "run `sudo bash scripts/install-system-packages.sh`"

#: The WMS LAYERS value that draws every layer of demo.map (a mapfile GROUP).
DEMO_LAYERS = "demo"
WMS_PATH = "/wms"
STATISTICS_PATH = "/server-statistics"
#: Seconds start() waits for a first GetCapabilities answer.
START_TIMEOUT = 15.0
#: Seconds stop() gives lighttpd to end its mapserv processes before SIGKILL.
STOP_TIMEOUT = 10.0

# Never route 127.0.0.1 traffic through an HTTP proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class DemoWMSError(RuntimeError):
    """Base class for demo WMS failures (a RuntimeError, as callers caught before)."""


class NotInstalledError(DemoWMSError):
    """mapserv, lighttpd or another system package is missing."""


class StartError(DemoWMSError):
    """lighttpd exited or the WMS did not answer in time; the message has its log."""


def _which(name: str) -> str | None:
    # lighttpd lives in /usr/sbin, which a normal user's PATH often lacks.
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")


def find_demo_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding ``demo.map`` and ``build_data.py``.

    Looked for in this order: ``explicit``; the ``DEMO_DIR`` environment variable;
    ``demo/`` beside the package (a checkout, an editable install); ``demo/`` in the
    current directory. An explicit folder or ``DEMO_DIR`` must hold ``demo.map``.
    Raises NotInstalledError with one line naming ``DEMO_DIR`` otherwise.
    """
    named = explicit if explicit is not None else os.environ.get(DEMO_DIR_VARIABLE) or None
    if named is not None:
        folder = Path(named).expanduser().resolve()
        if not (folder / MAPFILE_NAME).is_file():
            raise NotInstalledError(f"{DEMO_DIR_VARIABLE}: no {MAPFILE_NAME} in {folder}")
        return folder
    beside_package = Path(__file__).resolve().parent.parent / "demo"
    for folder in (beside_package, Path.cwd() / "demo"):
        if (folder / MAPFILE_NAME).is_file():
            return folder.resolve()
    raise NotInstalledError(
        f"no demo/{MAPFILE_NAME} beside the package or in {Path.cwd()}: set "
        f"{DEMO_DIR_VARIABLE} to the demo folder of an s3maptiler checkout"
    )


_BUILD_MODULES: dict[Path, ModuleType] = {}


def _build_module(demo_dir: Path) -> ModuleType:
    """``demo_dir/build_data.py``, loaded by path (demo/ is data, not a package)."""
    module = _BUILD_MODULES.get(demo_dir)
    if module is None:
        script = demo_dir / "build_data.py"
        name = f"devtools._demo_build_data_{len(_BUILD_MODULES)}"
        spec = importlib.util.spec_from_file_location(name, script)
        if spec is None or spec.loader is None or not script.is_file():
            raise NotInstalledError(f"cannot load {script}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        _BUILD_MODULES[demo_dir] = module
    return module


def unavailable_reason(demo_dir: str | os.PathLike[str] | None = None) -> str | None:
    """None when the demo WMS can run here, else one line naming what is missing."""
    try:
        build = _build_module(find_demo_dir(demo_dir))
    except NotInstalledError as exc:
        return f"demo WMS: {exc}"
    missing = [name for name in ("mapserv", "lighttpd") if _which(name) is None]
    if not FONT.exists():
        missing.append(str(FONT))
    # The data tools matter only until the data has been built once.
    if not build.is_complete():
        tools = ("ogr2ogr", "gdal_translate", "gdal_rasterize", "gdaldem", "shptree")
        missing += [tool for tool in tools if _which(tool) is None]
    if missing:
        return f"demo WMS needs {', '.join(missing)} ({INSTALL_HINT})"
    return None


def ensure_demo_data(demo_dir: str | os.PathLike[str] | None = None) -> Path:
    """Build ``demo/build/`` unless complete; return it. See demo/build_data.py."""
    return _build_module(find_demo_dir(demo_dir)).ensure_demo_data()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Proc(NamedTuple):
    pid: int
    ppid: int
    pgrp: int
    start: int  # clock ticks after boot: tells a process from a later one with its pid


def _processes() -> dict[int, _Proc]:
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name may contain spaces and parentheses: split after the last ")".
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] == "Z":
            continue  # a zombie holds nothing; its parent reaps it
        pid = int(stat.parent.name)
        found[pid] = _Proc(pid, int(fields[1]), int(fields[2]), int(fields[19]))
    return found


def descendants(pid: int) -> list[_Proc]:
    """Living (non-zombie) processes below ``pid``, from /proc (Linux)."""
    table = _processes()
    children: dict[int, list[_Proc]] = {}
    for proc in table.values():
        children.setdefault(proc.ppid, []).append(proc)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child.pid)
    return found


class DemoWMS:
    """lighttpd on 127.0.0.1 with ``fcgi_processes`` persistent mapserv processes.

    ``url`` is a complete WMS endpoint; clients append ``?SERVICE=WMS&...``.
    Use as a context manager, or call start() and stop().
    """

    layers = DEMO_LAYERS

    def __init__(
        self,
        port: int | None = None,
        fcgi_processes: int = 4,
        workdir: Path | None = None,
        demo_dir: str | os.PathLike[str] | None = None,
        response_headers: Mapping[str, str] | None = None,
    ) -> None:
        """`demo_dir`: the folder holding demo.map; None: :func:`find_demo_dir`'s lookup.
        `response_headers`: headers lighttpd adds to every answer, e.g. the
        ``Cache-Control`` of a WMS whose operator says how long its maps stay valid."""
        if fcgi_processes < 1:
            raise ValueError("fcgi_processes must be at least 1")
        self._demo_dir = demo_dir
        self.mapfile: Path | None = None
        self._pick_port = port is None
        self.port = port if port is not None else free_port()
        self.fcgi_processes = fcgi_processes
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else None
        self.process: subprocess.Popen[bytes] | None = None
        self.response_headers = dict(response_headers or {})

    @property
    def url(self) -> str:
        """The WMS endpoint, ``http://127.0.0.1:<port>/wms``."""
        return f"http://127.0.0.1:{self.port}{WMS_PATH}"

    @property
    def statistics_url(self) -> str:
        """lighttpd's counters (plain text, ``name: value`` lines)."""
        return f"http://127.0.0.1:{self.port}{STATISTICS_PATH}"

    # -- life cycle ------------------------------------------------------------------

    def start(self) -> DemoWMS:
        """Build the data if needed, start lighttpd and wait until the WMS answers.

        Raises NotInstalledError or StartError (with lighttpd's log) on failure.
        """
        if self.process is not None:
            return self
        reason = unavailable_reason(self._demo_dir)
        if reason:
            raise NotInstalledError(reason)
        demo_dir = find_demo_dir(self._demo_dir)
        self.mapfile = demo_dir / MAPFILE_NAME
        ensure_demo_data(demo_dir)
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="s3maptiler-wms-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        # A free port can be taken between free_port() and lighttpd's bind: try anew.
        attempts = 3 if self._pick_port else 1
        for attempt in range(attempts):
            try:
                self._start_once()
                break
            except StartError as exc:
                if attempt + 1 < attempts and "Address already in use" in str(exc):
                    self.port = free_port()
                    continue
                self.stop()
                raise
        log.info("demo WMS on %s (LAYERS=%s)", self.url, self.layers)
        return self

    def _start_once(self) -> None:
        conf = self._write_config()
        (self.workdir / "error.log").unlink(missing_ok=True)
        with open(self.workdir / "lighttpd.stderr", "wb") as stderr:
            self.process = subprocess.Popen(
                [_which("lighttpd") or "lighttpd", "-D", "-f", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                # Its own process group: Ctrl-C in a terminal reaches us, not mapserv,
                # and stop() decides the order of shutdown.
                start_new_session=True,
            )
        try:
            self._wait_ready(START_TIMEOUT)
        except StartError:
            self._terminate()
            raise

    def _write_config(self) -> Path:
        assert self.workdir is not None
        ms_config = self.workdir / "mapserver.conf"
        # MapServer 8 refuses to run without this file. MS_MAP_NO_PATH: a client's
        # map= may only name an alias from MAPS, never a path.
        ms_config.write_text(
            "CONFIG\n"
            "  ENV\n"
            '    MS_MAP_NO_PATH "1"\n'
            "  END\n"
            "  MAPS\n"
            f'    DEMO "{self.mapfile}"\n'
            "  END\n"
            "END\n"
        )
        conf = self.workdir / "lighttpd.conf"
        conf.write_text(
            f"""# Written by devtools.demowms; deleted on stop.
server.modules = ("mod_setenv", "mod_fastcgi", "mod_status")
server.bind = "127.0.0.1"
server.port = {self.port}
server.document-root = "{self.workdir}"
server.upload-dirs = ("{self.workdir}")
server.errorlog = "{self.workdir}/error.log"
# No server.username: lighttpd keeps the invoking user (root included), so it can
# read the mapfile and the data wherever the checkout is.
server.max-connections = 1024
server.max-fds = 4096
status.statistics-url = "{STATISTICS_PATH}"
# Per request: mapserv reads the mapfile name from its request environment.
setenv.add-environment = (
  "MS_MAPFILE" => "{self.mapfile}",
  "MAPSERVER_CONFIG_FILE" => "{ms_config}",
)
{self._response_headers_config()}fastcgi.server = ("{WMS_PATH}" => ((
  "bin-path" => "{_which("mapserv") or "mapserv"}",
  "socket" => "{self.workdir}/mapserv.sock",
  "check-local" => "disable",
  "max-procs" => {self.fcgi_processes},
  "bin-environment" => ("MAPSERVER_CONFIG_FILE" => "{ms_config}"),
)))
"""
        )
        return conf

    def _response_headers_config(self) -> str:
        if not self.response_headers:
            return ""
        pairs = ", ".join(f'"{name}" => "{value}"' for name, value in self.response_headers.items())
        return f"setenv.add-response-header = ({pairs})\n"

    def _wait_ready(self, timeout: float) -> None:
        """Poll GetCapabilities every 0.1 s for up to ``timeout`` seconds."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        probe = f"{self.url}?SERVICE=WMS&VERSION=1.1.1&REQUEST=GetCapabilities"
        last = "no answer"
        while True:
            if self.process.poll() is not None:
                raise StartError(
                    f"lighttpd exited with {self.process.returncode}: {self._log_tail()}"
                )
            try:
                with _OPENER.open(probe, timeout=2) as answer:
                    body = answer.read()
                    if answer.status == 200 and b"WMT_MS_Capabilities" in body:
                        return
                    last = f"HTTP {answer.status}: {body[:200]!r}"
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}: {exc.read()[:200]!r}"
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            if time.monotonic() > deadline:
                raise StartError(
                    f"demo WMS on {self.url} not ready after {timeout:.0f} s ({last}): "
                    f"{self._log_tail()}"
                )
            time.sleep(0.1)

    def _log_tail(self, limit: int = 2000) -> str:
        text = ""
        if self.workdir is not None:
            for name in ("lighttpd.stderr", "error.log"):
                with contextlib.suppress(OSError):
                    text += (self.workdir / name).read_text(errors="replace")
        return text[-limit:].strip().replace("\n", " | ") or "lighttpd wrote nothing"

    def request_count(self) -> int:
        """Requests that reached mapserv so far: lighttpd's exact ``fastcgi.requests``."""
        with _OPENER.open(self.statistics_url, timeout=5) as answer:
            text = answer.read().decode("ascii", "replace")
        for line in text.splitlines():
            name, _, value = line.partition(":")
            if name.strip() == "fastcgi.requests":
                return int(value)
        return 0  # lighttpd lists the counter only once a request has reached a backend

    def stop(self) -> None:
        """Stop lighttpd and every mapserv it started; remove our own workdir."""
        self._terminate()
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _terminate(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        # start_new_session made lighttpd the leader of its own process group, and
        # the mapserv processes it spawns stay in that group.
        group = process.pid
        # Remember them now too: once lighttpd is gone they are re-parented to init.
        children = descendants(process.pid)
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        # lighttpd 1.4.69 exits on SIGTERM without ending its FastCGI children
        # (measured): they would live on as orphans holding the socket.
        _end_processes(children, group)

    def __enter__(self) -> DemoWMS:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.process is not None else "stopped"
        return f"DemoWMS({self.url!r}, {state})"


def _still_running(children: Sequence[_Proc], group: int) -> list[_Proc]:
    table = _processes()
    # Same pid and start time: still ours, not a newcomer that reuses the pid.
    alive = {c.pid: c for c in children if (now := table.get(c.pid)) and now.start == c.start}
    alive.update((p.pid, p) for p in table.values() if p.pgrp == group)
    return list(alive.values())


def _signal_all(procs: Sequence[_Proc], signum: int) -> None:
    for proc in procs:
        try:
            os.kill(proc.pid, signum)
        except OSError as exc:
            if exc.errno != errno.ESRCH:  # already gone is what we want
                raise


def _end_processes(children: Sequence[_Proc], group: int, grace: float = 3.0) -> None:
    """SIGTERM ``children`` and members of process ``group``; SIGKILL after ``grace`` s."""
    alive = _still_running(children, group)
    _signal_all(alive, signal.SIGTERM)
    for signum in (signal.SIGKILL, None):
        deadline = time.monotonic() + grace
        while alive and time.monotonic() < deadline:
            time.sleep(0.02)
            alive = _still_running(alive, group)
        if not alive:
            return
        if signum is not None:
            log.warning("demo WMS: SIGKILL to %s", ", ".join(str(p.pid) for p in alive))
            _signal_all(alive, signum)
    log.error("demo WMS: processes %s survived SIGKILL", [p.pid for p in alive])


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo WMS in the foreground until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m devtools.demowms", description=__doc__)
    parser.add_argument("--port", type=int, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--processes", type=int, default=4, help="mapserv FastCGI processes")
    parser.add_argument(
        "--demo-dir", help="the folder holding demo.map (default: $DEMO_DIR, then demo/ found)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    try:
        wms = DemoWMS(port=args.port, fcgi_processes=args.processes, demo_dir=args.demo_dir).start()
    except DemoWMSError as exc:
        log.error("%s", exc)
        return 1
    try:
        log.info("WMS endpoint: %s", wms.url)
        log.info("try %s?SERVICE=WMS&VERSION=1.3.0&REQUEST=GetCapabilities", wms.url)
        while not stopping.wait(0.5):
            if wms.process is None or wms.process.poll() is not None:
                log.error("lighttpd exited: %s", wms._log_tail())
                return 1
        log.info("stopping")
    finally:
        wms.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
