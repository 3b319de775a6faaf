"""A fault-injecting HTTP proxy in front of moto's S3 server, on a free 127.0.0.1 port.

Point the service's ``AWS_ENDPOINT_URL`` at `FaultS3Proxy.url`. Every request is
forwarded to moto unchanged, except PutObject requests while a fault is armed:

- ``slowdown``: HTTP 503 with S3's ``SlowDown`` error XML (throttling);
- ``500``: HTTP 500 with S3's ``InternalError`` error XML;
- ``reset``: the request is read, then the connection is reset (TCP RST), no answer;
- ``expired``: ``ExpiredToken`` error XML, HTTP ``expired_status`` (S3 documents 400;
  some S3-compatible stores and proxies answer 403).

``fail_puts(fault, times)`` arms a fault for the next `times` PutObjects (None:
always); ``clear()`` disarms it. ``fail_all(shape)`` fails EVERY call, the three shapes
of an S3 that is down: ``refused`` (the port is closed: connection refused),
``hang`` (connections are accepted, requests read, and never answered) and
``slowdown`` (503 SlowDown to every request); ``heal()`` ends it, on the same port.
``deny_gets(True)`` answers every GetObject with 403 ``AccessDenied``, as S3 does
for a role without ``s3:GetObject`` (`gets_denied` counts them). ``hold_puts()``
makes PutObjects wait until ``release_puts()``; ``delay`` seconds are added to
every PutObject. Counters: `puts_seen`, `puts_failed`, `puts_forwarded` and the keys
of forwarded PUTs; `gets_seen` (GetObject and HeadObject on a key); `calls_failed`
(calls that met fail_all's shape).
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

FAULTS = ("slowdown", "500", "reset", "expired")
DOWN = ("refused", "hang", "slowdown")  # shapes of fail_all

_ERRORS = {
    "denied": (403, "AccessDenied", "Access Denied"),
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
    "expired": (400, "ExpiredToken", "The provided token has expired."),
}
# Sub-resources that make a PUT on a key something other than PutObject.
_NOT_PUT_OBJECT = {"uploadId", "partNumber", "tagging", "acl", "retention", "legal-hold"}
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "expect"}


def error_xml(code: str, message: str, resource: str) -> bytes:
    """An S3 REST error document, as S3 sends it."""
    request_id = uuid.uuid4().hex[:16].upper()
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<Resource>{resource}</Resource><RequestId>{request_id}</RequestId>"
        f"<HostId>faults3</HostId></Error>"
    ).encode()


def get_object_key(method: str, path: str) -> str | None:
    """The ``bucket/key`` a path-style GetObject reads, else None (listings included)."""
    if method not in ("GET", "HEAD"):
        return None
    parts = urlsplit(path)
    bucket, _, key = parts.path.lstrip("/").partition("/")
    return f"{bucket}/{unquote(key)}" if bucket and key else None


def put_object_key(method: str, path: str) -> str | None:
    """The ``bucket/key`` a path-style request writes with PutObject, else None."""
    if method != "PUT":
        return None
    parts = urlsplit(path)
    if _NOT_PUT_OBJECT & set(parse_qs(parts.query, keep_blank_values=True)):
        return None
    bucket, _, key = parts.path.lstrip("/").partition("/")
    return f"{bucket}/{unquote(key)}" if bucket and key else None


class FaultS3Proxy:
    """The proxy. Thread-safe; faults may be armed and cleared while it serves."""

    def __init__(self, target: str, delay: float = 0.0, expired_status: int = 400) -> None:
        self.target_host, port = target.removeprefix("http://").rstrip("/").split(":")
        self.target_port = int(port)
        self.delay = delay
        self.expired_status = expired_status
        self.puts_seen = 0
        self.puts_failed = 0
        self.puts_forwarded = 0
        self.forwarded_keys: list[str] = []
        self.failed_keys: list[str] = []
        self.gets_denied = 0
        self.gets_seen = 0  # GetObject and HeadObject requests on a key
        self.calls_failed = 0  # calls that met fail_all's shape
        self._deny_gets = False
        self._down: str | None = None
        self._healed = threading.Event()
        self._healed.set()
        self._fault: str | None = None
        self._times: int | None = None
        self._lock = threading.Lock()
        self._open = threading.Event()
        self._open.set()
        self._stopping = threading.Event()
        self.port = 0
        self._listen()
        self.url = f"http://127.0.0.1:{self.port}"

    def _listen(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self.server.daemon_threads = True
        self.server.request_queue_size = 256
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # ------------------------------------------------------------------ control

    def start(self) -> FaultS3Proxy:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._open.set()
        self._healed.set()
        if self._down != "refused":
            self.server.shutdown()
            self.server.server_close()

    def fail_all(self, shape: str) -> None:
        """Every call fails in `shape` (one of DOWN) until heal()."""
        if shape not in DOWN:
            raise ValueError(f"unknown shape {shape!r}; one of {', '.join(DOWN)}")
        self.heal()
        with self._lock:
            self._down = shape
            self.calls_failed = 0
        if shape == "refused":  # nobody listens on the port any more
            self.server.shutdown()
            self.server.server_close()
        elif shape == "hang":
            self._healed.clear()

    def heal(self) -> None:
        """S3 is back: the same port forwards every call again."""
        with self._lock:
            down, self._down = self._down, None
        self._healed.set()  # hanging requests are let go (their clients are long gone)
        if down == "refused":
            self._listen()
            self.thread.start()

    def _take_down(self) -> str | None:
        with self._lock:
            if self._down is not None:
                self.calls_failed += 1
            return self._down

    def fail_puts(self, fault: str, times: int | None = None) -> None:
        """Answer the next `times` PutObjects (None: every one) with `fault`."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; one of {', '.join(FAULTS)}")
        with self._lock:
            self._fault, self._times = fault, times

    def deny_gets(self, deny: bool = True) -> None:
        """Answer every GetObject with 403 AccessDenied (or stop doing so)."""
        with self._lock:
            self._deny_gets = deny

    def _take_get(self, key: str) -> bool:
        with self._lock:
            self.gets_seen += 1
            if self._deny_gets:
                self.gets_denied += 1
            return self._deny_gets

    def clear(self) -> None:
        """Forward every request again."""
        with self._lock:
            self._fault, self._times = None, None

    def hold_puts(self) -> None:
        """PutObjects wait (holding their connection) until `release_puts`."""
        self._open.clear()

    def release_puts(self) -> None:
        self._open.set()

    def reset_counts(self) -> None:
        with self._lock:
            self.puts_seen = self.puts_failed = self.puts_forwarded = self.gets_seen = 0
            self.forwarded_keys.clear()
            self.failed_keys.clear()

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {
                "seen": self.puts_seen,
                "failed": self.puts_failed,
                "forwarded": self.puts_forwarded,
                "gets": self.gets_seen,
            }

    def _take_fault(self, key: str) -> str | None:
        with self._lock:
            self.puts_seen += 1
            fault = self._fault
            if fault is None:
                return None
            if self._times is not None:
                self._times -= 1
                if self._times <= 0:
                    self._fault, self._times = None, None
            self.puts_failed += 1
            self.failed_keys.append(key)
            return fault

    def _forwarded(self, key: str | None) -> None:
        if key is None:
            return
        with self._lock:
            self.puts_forwarded += 1
            self.forwarded_keys.append(key)

    # ------------------------------------------------------------------ serving

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                down = proxy._take_down()
                if down == "hang":
                    proxy._healed.wait()
                    self.close_connection = True
                    return
                if down == "slowdown":
                    self._fail("slowdown", urlsplit(self.path).path.lstrip("/"))
                    return
                if down == "refused":  # a kept-alive connection from before: reset it
                    self._fail("reset", "")
                    return
                read = get_object_key(self.command, self.path)
                if read is not None and proxy._take_get(read):
                    self._fail("denied", read)
                    return
                key = put_object_key(self.command, self.path)
                if key is not None:
                    fault = proxy._take_fault(key)
                    if fault is not None:
                        self._fail(fault, key)
                        return
                    proxy._open.wait()
                    if proxy.delay:
                        proxy._stopping.wait(proxy.delay)
                self._forward(body)
                proxy._forwarded(key)

            def _fail(self, fault: str, key: str) -> None:
                if fault == "reset":
                    sock = self.connection
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    sock.close()
                    return
                status, code, message = _ERRORS[fault]
                if fault == "expired":
                    status = proxy.expired_status
                body = error_xml(code, message, "/" + key)
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("x-amz-request-id", "FAULTS3")
                self.end_headers()
                self.wfile.write(body)

            def _forward(self, body: bytes | None) -> None:
                upstream = http.client.HTTPConnection(
                    proxy.target_host, proxy.target_port, timeout=30
                )
                try:
                    headers = {
                        k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP
                    }
                    if body is not None:
                        headers["Content-Length"] = str(len(body))
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    data = answer.read()
                finally:
                    upstream.close()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in _HOP_BY_HOP:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _serve

            def log_message(self, *args) -> None:
                pass

        return Handler


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    """Poll `predicate` until it is true or `timeout` seconds passed; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return bool(value)
        time.sleep(interval)
