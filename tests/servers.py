"""Real servers for tests, each on a free 127.0.0.1 port, started and stopped here."""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

from s3maptiler.service.leases import DEFAULT_PREFIX as LEASE_PREFIX
from tests import leakcheck

ROOT = Path(__file__).resolve().parent.parent
# Keys for moto, which accepts any: tests, benchmarks and the services they start.
# The secret carries the leak check's marker (tests/leakcheck.py).
MOTO_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing-" + leakcheck.MARKER,
    "AWS_DEFAULT_REGION": "us-east-1",
}


def tile_keys(s3, bucket: str) -> set[str]:
    """Every key in the bucket but the fleet's metatile leases (service/leases.py)."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    keys = {item["Key"] for page in pages for item in page.get("Contents", [])}
    return {key for key in keys if not key.startswith(LEASE_PREFIX)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 20.0, process: subprocess.Popen | None = None) -> None:
    """Poll `url` until it answers at all; fail early if `process` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before answering {url}")
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s")



def s3_client(url: str, config=None):
    """A boto3 S3 client for the S3 server at `url` (moto, or a proxy in front of it),
    with the suite's moto credentials; `config` a botocore Config."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name=MOTO_CREDENTIALS["AWS_DEFAULT_REGION"],
        aws_access_key_id=MOTO_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=MOTO_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        config=config,
    )

class MotoServer:
    """moto in server mode: a separate process speaking the S3 API over HTTP."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> MotoServer:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_http(self.url + "/moto-api/", process=self.process)
        return self

    def client(self):
        """A boto3 S3 client for this server."""
        return s3_client(self.url)

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                leakcheck.scan_buckets(self.client(), "moto server")
            self.process.terminate()
            self.process.wait(10)


# --- what a running gunicorn costs, from /proc (Linux) ------------------------------


def worker_pids(arbiter: int) -> list[int]:
    """The gunicorn workers: the arbiter's child processes."""
    try:
        text = Path(f"/proc/{arbiter}/task/{arbiter}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(pid) for pid in text.split()]


def _stat_cpu_seconds(pid: int) -> float:
    """utime + stime + cutime + cstime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def service_cpu_seconds(arbiter: int) -> float:
    """CPU seconds of a gunicorn service: the arbiter, the workers it has reaped (recycled)
    and the live workers, so deltas of this are exact across recycling."""
    total = _stat_cpu_seconds(arbiter)
    for pid in worker_pids(arbiter):
        # A worker that exits between the listing and the read is counted once reaped.
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            total += _stat_cpu_seconds(pid)
    return total


def status_kib(pid: int, field: str) -> int | None:
    """A kB field of /proc/<pid>/status (VmRSS, VmHWM), or None if the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) if match else None


def worker_peak_rss_mb(arbiter: int) -> dict[int, float]:
    """VmHWM (peak resident set) of each live worker, in megabytes (10^6 bytes)."""
    peaks = {pid: status_kib(pid, "VmHWM") for pid in worker_pids(arbiter)}
    return {pid: kib * 1024 / 1e6 for pid, kib in peaks.items() if kib is not None}


def procfile_command() -> list[str]:
    """The `web:` command of the project's Procfile, split into argv."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith("web:"):
            return shlex.split(line[len("web:") :])
    raise RuntimeError("Procfile has no web: line")


class GunicornApp:
    """The service under gunicorn, started with the Procfile command from the repo root."""

    def __init__(self, env: dict[str, str], cwd: Path = ROOT) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env, "PORT": str(self.port), "HOST": "127.0.0.1"}
        self.cwd = cwd
        self.process: subprocess.Popen | None = None
        self.log_path = Path(tempfile.gettempdir()) / f"s3maptiler-gunicorn-{self.port}.log"

    def start(self) -> GunicornApp:
        argv = procfile_command()
        # The venv's gunicorn when tests run from it, else the one on PATH.
        local = Path(sys.executable).parent / argv[0]
        if local.exists():
            argv[0] = str(local)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        leakcheck.watch_service(self.url)
        self.process = subprocess.Popen(
            argv, cwd=self.cwd, env=self.env, stdout=self._log, stderr=subprocess.STDOUT
        )
        try:
            wait_http(self.url + "/heartbeat", process=self.process)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"gunicorn did not start:\n{self.log()}") from None
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM, as Elastic Beanstalk sends on deploy; wait for the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if getattr(self, "_log", None):
            self._log.close()
            leakcheck.scan_service_log(self.url, self.log())


class DelayProxy:
    """An HTTP proxy that holds every request `delay` seconds before forwarding it,
    and records what it forwarded.

    Put in front of moto it makes uploads slow, so a test can stop the service
    while uploads are still pending, and it counts the service's S3 calls.
    """

    def __init__(self, target: str, delay: float) -> None:
        host, port = target.removeprefix("http://").split(":")
        self.delay = delay
        self.seen: list[tuple[str, str]] = []  # (method, path) of every request forwarded
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                proxy.seen.append((self.command, self.path))
                time.sleep(proxy.delay)
                upstream = http.client.HTTPConnection(host, int(port), timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                upstream.request(self.command, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                upstream.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> DelayProxy:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
