"""A local S3 with a real website endpoint: LocalStack's S3 in host mode on 127.0.0.1.

moto stores a bucket's website configuration but serves no website endpoint, so nothing
there runs the routing rules that send a missing tile to the service. LocalStack's S3
does: ``GET /<key>`` with ``Host: <bucket>.s3-website.<domain>`` is answered like an S3
website endpoint, with the bucket's routing rules, index document and CORS.

Used by the tests and by ``make run-website`` (``LOCAL_WEBSITE=true python
application.py``, see :func:`start_for_service`). LocalStack lives in
``.venv-localstack/``, installed by ``scripts/install-localstack.sh`` from
``requirements-localstack.txt``.

The website endpoint of a bucket is ``http://<bucket>.s3-website.localhost:<port>``:
LocalStack accepts any domain after ``s3-website.``, and Chromium
and curl (so GDAL) resolve every ``*.localhost`` name to the loopback address
themselves, with no DNS and no hosts file. Python's resolver does not, so Python code
sends the request to 127.0.0.1 with that Host header (:meth:`LocalStack.website_get`).

    python -m devtools.localwebsite [--port N]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import requests

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv-localstack"
PYTHON = VENV / "bin" / "python"
INSTALL_HINT = "run `bash scripts/install-localstack.sh` (needs Python 3.13)"
#: Seconds start() waits for the S3 service to report itself ready.
START_TIMEOUT = 60.0
#: Credentials LocalStack accepts (it checks none); never real ones.
CREDENTIALS = {
    "aws_access_key_id": "test",
    "aws_secret_access_key": "test",
    "region_name": "us-east-1",
}
WEBSITE_DOMAIN = "s3-website.localhost"


class LocalStackError(RuntimeError):
    """LocalStack is not installed, or did not start; the message says why."""


def unavailable_reason() -> str | None:
    """None when LocalStack can run here, else one line naming what is missing."""
    if not PYTHON.exists():
        return f"LocalStack is not installed in {VENV.name}/ ({INSTALL_HINT})"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


class LocalStack:
    """LocalStack's S3 alone, in host mode, on a free 127.0.0.1 port.

    Its files (state, a self-signed certificate) go to a temporary directory that
    stop() removes; nothing persists between runs.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self._root: Path | None = None
        self._log: Any = None
        self.credentials = dict(CREDENTIALS)  # LocalStack checks none; tests mark theirs

    @property
    def endpoint_url(self) -> str:
        """The S3 API endpoint (path-style), for boto3's ``endpoint_url``."""
        return self.url

    def website_host(self, bucket: str) -> str:
        """The Host of a bucket's website endpoint, with the port."""
        return f"{bucket}.{WEBSITE_DOMAIN}:{self.port}"

    def website_url(self, bucket: str) -> str:
        """The bucket's website endpoint as a browser or GDAL reaches it (no trailing /)."""
        return f"http://{self.website_host(bucket)}"

    def website_get(
        self, bucket: str, path: str, headers: Mapping[str, str] | None = None, **kwargs: Any
    ) -> requests.Response:
        """GET `path` from the bucket's website endpoint, without following redirects."""
        kwargs.setdefault("timeout", 30)
        kwargs.setdefault("allow_redirects", False)
        return requests.get(
            self.url + path,
            headers={**(headers or {}), "Host": self.website_host(bucket)},
            **kwargs,
        )

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client for this LocalStack."""
        import boto3

        return boto3.client("s3", endpoint_url=self.url, **{**self.credentials, **config})

    @property
    def log_path(self) -> Path | None:
        return self._root / "localstack.log" if self._root else None

    def start(self, timeout: float = START_TIMEOUT) -> LocalStack:
        reason = unavailable_reason()
        if reason:
            raise LocalStackError(reason)
        if _port_in_use(self.port):
            raise LocalStackError(f"port {self.port} on 127.0.0.1 is in use")
        self._root = Path(tempfile.mkdtemp(prefix="s3maptiler-localstack-"))
        env = {
            # Only what LocalStack needs: no AWS settings of the caller leak in.
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self._root),
            "GATEWAY_LISTEN": f"127.0.0.1:{self.port}",
            "SERVICES": "s3",
            # Host mode: files under FILESYSTEM_ROOT (else /var/lib/localstack when the
            # machine looks like a container), no DNS server, nothing fetched.
            "OVERRIDE_IN_DOCKER": "0",
            "FILESYSTEM_ROOT": str(self._root / "fs"),
            "DNS_ADDRESS": "0",
            "SKIP_SSL_CERT_DOWNLOAD": "1",
            "DISABLE_EVENTS": "1",
            "LOCALSTACK_HOST": f"127.0.0.1:{self.port}",
        }
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [str(PYTHON), "-m", "localstack.runtime.main"],
            cwd=self._root,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stop() ends all of it
        )
        try:
            self._wait_ready(timeout)
        except LocalStackError:
            tail = self.log_tail()
            self.stop()
            raise LocalStackError(f"LocalStack did not start on {self.url}:\n{tail}") from None
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise LocalStackError(f"exited with {self.process.returncode}")
            try:
                health = requests.get(self.url + "/_localstack/health", timeout=2).json()
                if health.get("services", {}).get("s3") in ("available", "running"):
                    return
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.2)
        raise LocalStackError(f"no answer within {timeout:.0f} s")

    def log_tail(self, limit: int = 3000) -> str:
        path = self.log_path
        if path is None or not path.exists():
            return ""
        return path.read_text(errors="replace")[-limit:]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LocalStack({self.url})"


def start_for_service(environ: MutableMapping[str, str] | None = None) -> LocalStack:
    """Start LocalStack for ``LOCAL_WEBSITE=true python application.py`` and point the
    service's settings in `environ` (default: the process's) at it: ``BUCKET_NAME``
    (default s3maptiler-demo), ``AWS_ENDPOINT_URL``, LocalStack's fake credentials and
    ``PUBLIC_URL``, the bucket's website endpoint. Call :func:`prepare_bucket` once the
    settings are loaded. Raises LocalStackError with a one-line message."""
    environ = os.environ if environ is None else environ
    raw = (environ.get("LOCAL_WEBSITE_PORT") or "4566").strip()
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise LocalStackError(f"LOCAL_WEBSITE_PORT: expected a port number, got {raw!r}")
    try:
        stack = LocalStack(int(raw)).start()
    except LocalStackError as exc:
        first = str(exc).splitlines()[0]
        raise LocalStackError(f"{first} (LOCAL_WEBSITE_PORT picks another port)") from None
    bucket = environ.get("BUCKET_NAME") or "s3maptiler-demo"
    environ.update(
        {
            "BUCKET_NAME": bucket,
            "AWS_ENDPOINT_URL": stack.url,
            "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
            "AWS_DEFAULT_REGION": CREDENTIALS["region_name"],
            "PUBLIC_URL": stack.website_url(bucket),
        }
    )
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
        environ.pop(name, None)
    return stack


def prepare_bucket(stack: LocalStack, settings: Any) -> list[str]:
    """Make the service's bucket on `stack` a self-completing tile cache, as ``s3maptiler
    bucket setup --tiler-url http://<host>:<port>`` and ``s3maptiler publish`` would:
    routing rules to the service over plain http, CORS, public read, and the TMS, WMTS
    and ArcGIS documents. Returns one line per step."""
    from s3maptiler.bucket import publish
    from s3maptiler.bucket.setup import setup_bucket
    from s3maptiler.bucket.spec import BucketSpec
    from s3maptiler.documents.paths import ARCGIS_SERVICES_PREFIX

    client = stack.client()
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=settings.bucket)
    prefixes = [layer.prefix for layer in settings.layers] + [ARCGIS_SERVICES_PREFIX]
    spec = BucketSpec(
        bucket=settings.bucket,
        tiler_host=f"{settings.host}:{settings.port}",
        tiler_protocol="http",
        prefixes=tuple(dict.fromkeys(prefixes)),
        miss_prefix=settings.miss_prefix,
        relax_public_access_block=True,  # LocalStack, as S3, creates buckets with it on
        public_keys=publish.SERVICE_DOCUMENT_KEYS,
    )
    steps = [step.summary for step in setup_bucket(client, spec)]
    docs, _skipped = publish.documents(settings, settings.bucket_url)
    outcome = publish.publish(client, settings.bucket, docs)
    steps.append(f"published {sum(v == 'written' for v in outcome.values())} documents")
    return steps


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=4566)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        stack = LocalStack(args.port).start()
    except LocalStackError as exc:
        sys.stderr.write(f"localwebsite: {exc}\n")
        return 2
    log.info(
        "LocalStack S3 on %s; website endpoints http://<bucket>.%s:%d/ (Ctrl-C stops)",
        stack.url,
        WEBSITE_DOMAIN,
        stack.port,
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while stack.process is not None and stack.process.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
