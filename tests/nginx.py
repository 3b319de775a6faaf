"""Debian's nginx on 127.0.0.1 ports of its own, for scale-out tests and benchmarks.

One nginx process serves up to three purposes at once:

- a round-robin load balancer in front of several service instances, as Elastic
  Beanstalk's load balancer spreads requests over its instances (`balancer_url`);
- a reverse proxy in front of the S3 server that logs every request's method, key
  and status (`s3_url`, `s3_requests()`), so a test counts PUTs and lease calls
  without slowing S3 down the way a Python proxy would;
- an auth proxy in front of an upstream (a WMS, a tile service) that answers 401
  unless the request carries HTTP basic credentials or a header token
  (`protected_url`, `protected_requests()`), as a GeoServer or an imagery API does.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from tests.servers import free_port, wait_http

NGINX = "/usr/sbin/nginx"


def unavailable_reason() -> str | None:
    """Why nginx cannot run here, or None."""
    if shutil.which("nginx") is None and not Path(NGINX).exists():
        return "nginx is not installed (Debian package nginx; make system installs it)"
    return None


@dataclass(frozen=True)
class S3Request:
    """One request nginx forwarded to S3 (path-style): method, bucket, key, status."""

    method: str
    bucket: str
    key: str
    query: str
    status: int


class Nginx:
    """nginx balancing `instances` (base URLs) and proxying `s3` (a base URL)."""

    def __init__(
        self,
        instances: list[str] = (),
        s3: str | None = None,
        protect: str | None = None,
        basic: tuple[str, str] | None = None,
        header: tuple[str, str] | None = None,
    ) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="s3maptiler-nginx-"))
        self.instances = list(instances)
        self.s3 = s3
        self.protect, self.basic, self.header = protect, basic, header
        self.protected_port = free_port()
        self.protected_url = f"http://127.0.0.1:{self.protected_port}"
        self.balancer_port = free_port()
        self.s3_port = free_port()
        self.balancer_url = f"http://127.0.0.1:{self.balancer_port}"
        self.s3_url = f"http://127.0.0.1:{self.s3_port}"
        self.process: subprocess.Popen | None = None

    def _config(self) -> str:
        d = self.directory
        temp = " ".join(
            f"{name}_temp_path {d / name};"
            for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        proxied = (
            'proxy_http_version 1.1; proxy_set_header Connection "";'
            " proxy_set_header Host $http_host; proxy_buffering off;"
            " proxy_request_buffering off; proxy_read_timeout 300s;"
        )
        blocks = []
        if self.instances:
            servers = " ".join(f"server {urlsplit(u).netloc};" for u in self.instances)
            blocks.append(
                f"upstream service {{ {servers} keepalive 64; }}"
                f" server {{ listen 127.0.0.1:{self.balancer_port};"
                " location / { proxy_pass http://service;"
                f" {proxied} proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; }} }}"
            )
        if self.s3:
            blocks.append(
                f"upstream s3 {{ server {urlsplit(self.s3).netloc}; keepalive 64; }}"
                f" server {{ listen 127.0.0.1:{self.s3_port}; client_max_body_size 0;"
                f" access_log {d / 's3.log'} s3;"
                f" location / {{ proxy_pass http://s3; {proxied} }} }}"
            )
        if self.protect:
            blocks.append(self._protected_block())
        return (
            f"daemon off; worker_processes 1; pid {d / 'nginx.pid'};"
            f" error_log {d / 'error.log'} warn;"
            " events { worker_connections 4096; }"
            " http { access_log off; log_format s3 '$request_method $request_uri $status';"
            " log_format auth '$status';"
            f" {temp} {' '.join(blocks)} }}"
        )

    def _protected_block(self) -> str:
        d = self.directory
        checks = ""
        if self.basic:
            # nginx reads {PLAIN} passwords: a test needs no crypt() here.
            (d / "htpasswd").write_text(f"{self.basic[0]}:{{PLAIN}}{self.basic[1]}\n")
            # Workers read it per request, as nginx's user when started as root.
            (d / "htpasswd").chmod(0o644)
            d.chmod(0o755)
            checks += f' auth_basic "upstream"; auth_basic_user_file {d / "htpasswd"};'
        if self.header:
            variable = "$http_" + self.header[0].lower().replace("-", "_")
            checks += f' if ({variable} != "{self.header[1]}") {{ return 401; }}'
        return (
            f"server {{ listen 127.0.0.1:{self.protected_port};"
            f" access_log {d / 'protected.log'} auth;"
            f" location / {{{checks} proxy_pass http://{urlsplit(self.protect).netloc};"
            ' proxy_set_header Authorization ""; } }'
        )

    def protected_requests(self) -> list[int]:
        """The status of every request to the protected upstream so far."""
        path = self.directory / "protected.log"
        return [int(line) for line in path.read_text().split()] if path.exists() else []

    def start(self) -> Nginx:
        config = self.directory / "nginx.conf"
        config.write_text(self._config())
        self.process = subprocess.Popen(
            [shutil.which("nginx") or NGINX, "-c", str(config), "-p", str(self.directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if self.instances:
            wait_http(self.balancer_url + "/heartbeat", process=self.process)
        if self.s3:
            wait_http(self.s3_url, process=self.process)
        if self.protect:
            wait_http(self.protected_url, process=self.process)
        return self

    def s3_requests(self) -> list[S3Request]:
        """Every request forwarded to S3 so far (nginx writes its log as it answers)."""
        path = self.directory / "s3.log"
        if not path.exists():
            return []
        seen = []
        for line in path.read_text().splitlines():
            method, uri, status = line.split(" ")
            parts = urlsplit(uri)
            bucket, _, key = parts.path.lstrip("/").partition("/")
            seen.append(S3Request(method, bucket, unquote(key), parts.query, int(status)))
        return seen

    def settle(self, quiet: float = 0.3, timeout: float = 30.0) -> list[S3Request]:
        """The S3 requests once none has arrived for `quiet` seconds (uploads done)."""
        deadline = time.monotonic() + timeout
        seen = self.s3_requests()
        while time.monotonic() < deadline:
            time.sleep(quiet)
            now = self.s3_requests()
            if len(now) == len(seen):
                return now
            seen = now
        return seen

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        shutil.rmtree(self.directory, ignore_errors=True)
