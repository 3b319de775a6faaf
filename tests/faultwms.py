"""A misbehaving WMS for fault tests: a threaded HTTP server on a free 127.0.0.1 port.

`FaultWMS.mode` picks the answer to every GetMap and may be switched between
requests:

- ``ok``: a real image of the asked WIDTH x HEIGHT in the asked FORMAT (Pillow);
- ``slow``: the same, after ``slow_seconds`` (beyond the service's WMS_TIMEOUT);
- ``hang``: holds every request until :meth:`release` (or :meth:`stop`), then ``ok``;
- ``500``: HTTP 500, a plain-text MapServer message;
- ``503-retry-after``: HTTP 503 with ``Retry-After: <retry_after>`` and a message;
- ``exception-200``: HTTP 200 with an OGC ServiceExceptionReport (the classic trap);
- ``html``: HTTP 200 with an HTML error page from a front proxy;
- ``truncated-png``: HTTP 200 ``image/png``, the first half of a real PNG;
- ``wrong-size``: HTTP 200, a complete PNG of half the asked size;
- ``jpeg-for-png``: HTTP 200 ``image/jpeg``, a complete JPEG where PNG was asked;
- ``reset``: reads the request, then resets the connection (RST) without answering.

`headers` (a dict, may be changed between requests) are sent with every ``ok`` answer,
e.g. a ``Cache-Control`` or ``Expires`` of the WMS's own; `colour` is the colour of
its images (change it to tell a new render from an old one).

Every GetMap is counted and its query kept (`queries`); `concurrent_max` is the most
GetMaps the server held at once. `closed_url()` is a WMS URL on a port nobody
listens on, for "connection refused".
"""

from __future__ import annotations

import io
import random
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from PIL import Image

from tests.servers import free_port

MODES = (
    "ok",
    "slow",
    "hang",
    "500",
    "503-retry-after",
    "exception-200",
    "html",
    "truncated-png",
    "wrong-size",
    "jpeg-for-png",
    "reset",
)

# The WMS's own words in each failing mode: the service must pass them on.
MESSAGES = {
    "500": "msDrawMap(): Image handling error. Failed to draw layer named 'roads'.",
    "503-retry-after": "mapserv pool exhausted, try again shortly",
    "exception-200": "msWMSLoadGetMapParams(): Invalid layer(s) given in the LAYERS parameter.",
    "html": "Scheduled maintenance of the map server until 14:00 UTC",
}

_EXCEPTION_REPORT = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<ServiceExceptionReport version="1.1.1">\n'
    '<ServiceException code="LayerNotDefined">\n{message}\n</ServiceException>\n'
    "</ServiceExceptionReport>\n"
)
_HTML_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>{message}</title></head>\n"
    "<body><h1>Service unavailable</h1><p>Please come back later.</p></body></html>\n"
)


def closed_url() -> str:
    """A WMS URL on a 127.0.0.1 port with no listener: every connection is refused."""
    return f"http://127.0.0.1:{free_port()}/wms"


def encode_image(
    width: int,
    height: int,
    fmt: str = "PNG",
    noise: bool = False,
    colour: tuple[int, int, int] = (40, 120, 200),
) -> bytes:
    """A ``width`` x ``height`` pixel image in ``fmt`` ("PNG" or "JPEG"): one colour,
    or random pixels (``noise``: large, incompressible bodies for memory tests)."""
    if noise:
        image = Image.frombytes("RGB", (width, height), _random_bytes(width * height * 3))
    else:
        image = Image.new("RGB", (width, height), colour)
    out = io.BytesIO()
    if fmt == "PNG":
        image.save(out, "PNG", compress_level=1)
    else:
        image.save(out, "JPEG", quality=80)
    return out.getvalue()


def _random_bytes(n: int) -> bytes:
    # Cheap, reproducible noise; nothing here needs cryptographic randomness.
    return random.Random(n).randbytes(n)


class FaultWMS:
    """The misbehaving WMS. Thread-safe counters; `mode` may change at any time."""

    def __init__(
        self,
        mode: str = "ok",
        slow_seconds: float = 5.0,
        retry_after: int = 1,
        noise: bool = False,
    ) -> None:
        self.mode = mode
        self.slow_seconds = slow_seconds
        self.retry_after = retry_after
        self.noise = noise  # "ok" answers with random pixels (big PNGs)
        self.headers: dict[str, str] = {}  # sent with every "ok" answer
        self.colour = (40, 120, 200)
        self.queries: list[dict[str, str]] = []
        self.times: list[float] = []  # time.monotonic() of each GetMap's arrival
        self.concurrent_max = 0
        self._concurrent = 0
        self._lock = threading.Lock()
        self._images: dict[tuple, bytes] = {}
        self._release = threading.Event()
        self._stopping = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.server.request_queue_size = 128
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/wms"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown FaultWMS mode {mode!r}; one of {', '.join(MODES)}")
        self._mode = mode

    # ------------------------------------------------------------------ control

    def start(self) -> FaultWMS:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._release.set()
        self.server.shutdown()
        self.server.server_close()

    def release(self) -> None:
        """Let every request held by ``hang`` go (and the later ones pass at once)."""
        self._release.set()

    def reset(self, mode: str | None = None) -> None:
        """Forget what was counted; optionally switch mode. Held requests stay held."""
        with self._lock:
            self.queries.clear()
            self.times.clear()
            self.concurrent_max = self._concurrent
        if mode is not None:
            self.mode = mode
            if mode == "hang":
                self._release.clear()

    @property
    def requests(self) -> int:
        """GetMaps received since the last reset."""
        with self._lock:
            return len(self.queries)

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._concurrent

    def image(self, width: int, height: int, fmt: str = "PNG") -> bytes:
        key = (width, height, fmt, self.noise, self.colour)
        with self._lock:
            cached = self._images.get(key)
        if cached is None:
            cached = encode_image(width, height, fmt, self.noise, self.colour)
            with self._lock:
                self._images[key] = cached
        return cached

    # ------------------------------------------------------------------ serving

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        wms = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                query = {k.upper(): v for k, v in parse_qsl(urlsplit(self.path).query, True)}
                if query.get("REQUEST", "").lower() != "getmap":
                    self._send(400, "text/plain", b"only GetMap here\n")
                    return
                with wms._lock:
                    wms.queries.append(query)
                    wms.times.append(time.monotonic())
                    wms._concurrent += 1
                    wms.concurrent_max = max(wms.concurrent_max, wms._concurrent)
                try:
                    wms._answer(self, wms.mode, query)
                finally:
                    with wms._lock:
                        wms._concurrent -= 1

            def _send(self, status: int, content_type: str, body: bytes, **headers) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name.replace("_", "-"), str(value))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        return Handler

    def _answer(self, handler, mode: str, query: dict[str, str]) -> None:
        width = _int(query.get("WIDTH"), 256)
        height = _int(query.get("HEIGHT"), 256)
        fmt = "JPEG" if "jpeg" in query.get("FORMAT", "").lower() else "PNG"
        content_type = f"image/{fmt.lower()}"
        if mode == "slow":
            self._stopping.wait(self.slow_seconds)
            mode = "ok"
        elif mode == "hang":
            self._release.wait()
            mode = "ok"
        if mode == "ok":
            handler._send(200, content_type, self.image(width, height, fmt), **self.headers)
        elif mode == "500":
            body = (MESSAGES["500"] + "\n").encode()
            handler._send(500, "text/plain; charset=utf-8", body)
        elif mode == "503-retry-after":
            body = (MESSAGES["503-retry-after"] + "\n").encode()
            handler._send(503, "text/plain", body, Retry_After=self.retry_after)
        elif mode == "exception-200":
            body = _EXCEPTION_REPORT.format(message=MESSAGES["exception-200"]).encode()
            handler._send(200, "application/vnd.ogc.se_xml; charset=UTF-8", body)
        elif mode == "html":
            body = _HTML_PAGE.format(message=MESSAGES["html"]).encode()
            handler._send(200, "text/html; charset=utf-8", body)
        elif mode == "truncated-png":
            whole = self.image(width, height, "PNG")
            handler._send(200, "image/png", whole[: len(whole) // 2])
        elif mode == "wrong-size":
            handler._send(200, "image/png", self.image(max(width // 2, 1), max(height // 2, 1)))
        elif mode == "jpeg-for-png":
            handler._send(200, "image/jpeg", self.image(width, height, "JPEG"))
        elif mode == "reset":
            _reset(handler)


def _reset(handler: BaseHTTPRequestHandler) -> None:
    """Close the connection with a TCP RST (SO_LINGER 0) and nothing answered."""
    sock = handler.connection
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    handler.close_connection = True
    sock.close()


def _int(text: str | None, default: int) -> int:
    try:
        value = int(text or "")
    except ValueError:
        return default
    return value if 0 < value <= 8192 else default
