"""The suite's secret leak check (issue 19), a pytest plugin loaded by tests/conftest.py.

Every credential a test uses carries MARKER: moto's and LocalStack's secret keys, upstream
passwords, API keys and tokens, secrets in files, Secrets Manager and SSM. The check then
looks for MARKER wherever the service could leak one:

- every log record of the test process, with the root logger at DEBUG for the session;
- the log of every service the tests start (GunicornApp), read as it stops;
- every answer of the Flask test client, and of a started service through `requests`;
- the output of every command run through click's CliRunner or tests/website.py's cli();
- every object and its metadata in the buckets the tests made: moto's in-process S3 as
  each mock ends, moto server and LocalStack as they stop (documents are published there).

A hit fails the test that produced it (for a bucket, the test that created the bucket is
named); hits found after the last test fail the session. Upstream servers (nginx, MapProxy,
the WMS) are not read: they are handed the credentials on purpose. A test that itself hands
a secret to its store (botocore logs the request at DEBUG) wraps that in handing_over().
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

MARKER = "s3cr3tMARKERzq"
_MARKER_BYTES = MARKER.encode()

_active = False  # only under pytest with this plugin: benchmarks reuse tests/servers.py
_current = "(before the first test)"
_hits: list[Hit] = []
_reported = 0  # hits already turned into a failed test report
_bucket_owner: dict[str, str] = {}  # bucket -> nodeid of the test that created it
_service_urls: set[str] = set()
_quiet = threading.local()
_read = {"objects": 0, "answers": 0, "service logs": 0}  # what the bucket/server reads cost
_seconds = [0.0]


@dataclass
class Hit:
    nodeid: str
    where: str
    excerpt: str


def scan(where: str, data: str | bytes, nodeid: str | None = None) -> None:
    """Record a hit if `data` holds MARKER; `where` says what was read."""
    if not _active:
        return
    text = data.decode("latin-1") if isinstance(data, bytes) else data
    at = text.find(MARKER)
    if at >= 0:
        excerpt = text[max(0, at - 60) : at + len(MARKER) + 20].replace("\n", " ")
        _hits.append(Hit(nodeid or _current, where, excerpt))


@contextlib.contextmanager
def handing_over() -> Iterator[None]:
    """The test itself gives a secret to its store (botocore logs that request at DEBUG):
    log records in this thread are not checked meanwhile."""
    _quiet.depth = getattr(_quiet, "depth", 0) + 1
    try:
        yield
    finally:
        _quiet.depth -= 1


class _LogCheck(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if getattr(_quiet, "depth", 0):
            return
        try:
            message = record.getMessage()
        except Exception:  # a broken record is logging's problem, not a leak
            return
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        scan(f"log record of {record.name}", message + (record.exc_text or ""))


def scan_answer(where: str, headers: object, body: bytes) -> None:
    _read["answers"] += 1
    scan(where, repr(headers))
    scan(where, body)


# --------------------------------------------------------------------------- services


def watch_service(url: str) -> None:
    """Answers from `url` (a started service) are read as the tests receive them."""
    _service_urls.add(url)


def scan_service_log(url: str, text: str) -> None:
    _service_urls.discard(url)
    _read["service logs"] += 1
    scan(f"log of the service at {url}", text)


def _scan_object(client, bucket: str, key: str, label: str) -> None:
    got = client.get_object(Bucket=bucket, Key=key)
    _read["objects"] += 1
    owner = _bucket_owner.get(bucket)
    where = f"{label} s3://{bucket}/{key}"
    scan(where, got["Body"].read(), owner)
    scan(where + " (metadata)", repr((got.get("Metadata"), got.get("ContentType"))), owner)


def scan_buckets(client, label: str) -> None:
    """Every object (body, metadata, content type) of every bucket behind `client`: a
    server the suite started, so every bucket there is one a test made. One GET each."""
    if not _active:
        return
    started = time.perf_counter()
    with handing_over(), ThreadPoolExecutor(8) as pool:
        for bucket in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
            list(pool.map(lambda key, b=bucket: _scan_object(client, b, key, label), keys))
    _seconds[0] += time.perf_counter() - started


def _scan_moto_in_process() -> None:
    """moto's in-process S3, read from its backends just before a mock drops them."""
    from moto.s3.models import s3_backends

    started = time.perf_counter()
    for account in list(s3_backends):
        for backend in list(s3_backends[account].values()):
            for name, bucket in list(backend.buckets.items()):
                owner = _bucket_owner.get(name)
                for key in bucket.keys.values():  # the latest version of each key
                    if key is None or not hasattr(key, "value"):
                        continue
                    where = f"moto s3://{name}/{key.name}"
                    scan(where, key.value, owner)
                    scan(where + " (metadata)", repr(key.metadata), owner)  # + Content-Type
                    _read["objects"] += 1
    _seconds[0] += time.perf_counter() - started


def _install_moto_hook() -> None:
    from moto.core.models import MockAWS

    disable = MockAWS._disable_patching

    def scanned_then_disabled(self, *args, **kwargs):
        try:
            _scan_moto_in_process()
        except Exception as exc:  # a check that cannot look fails, but never breaks moto
            _hits.append(Hit(_current, "the check could not read moto's S3", repr(exc)))
        return disable(self, *args, **kwargs)

    MockAWS._disable_patching = scanned_then_disabled


def _note_bucket(params: dict, **_: object) -> None:
    if "Bucket" in params:
        _bucket_owner.setdefault(params["Bucket"], _current)


def _install_answer_hooks() -> None:
    import boto3
    import flask
    import requests
    from flask.testing import FlaskClient

    class LeakCheckingClient(FlaskClient):
        def open(self, *args, **kwargs):
            answer = super().open(*args, **kwargs)
            scan_answer(f"answer to {answer.request.url}", answer.headers, answer.get_data())
            return answer

    flask.Flask.test_client_class = LeakCheckingClient

    send = requests.Session.send

    def checked_send(self, request, **kwargs):
        answer = send(self, request, **kwargs)
        if not kwargs.get("stream") and any(request.url.startswith(u) for u in _service_urls):
            scan_answer(f"answer to {request.method} {request.url}", answer.headers, answer.content)
        return answer

    requests.Session.send = checked_send

    from click.testing import CliRunner

    invoke = CliRunner.invoke

    def checked_invoke(self, cli, args=None, *more, **kwargs):
        result = invoke(self, cli, args, *more, **kwargs)
        scan(f"output of command {args}", result.output + repr(result.exception or ""))
        return result

    CliRunner.invoke = checked_invoke
    boto3.DEFAULT_SESSION = None
    boto3.setup_default_session()
    boto3.DEFAULT_SESSION.events.register("before-parameter-build.s3.CreateBucket", _note_bucket)


# --------------------------------------------------------------------------- pytest hooks


def pytest_sessionstart(session: pytest.Session) -> None:
    global _active
    _active = True
    root = logging.getLogger()
    root.addHandler(_LogCheck(logging.DEBUG))
    root.setLevel(logging.DEBUG)
    # pytest's own "Captured log" sections keep INFO and up, as before.
    logging_plugin = session.config.pluginmanager.get_plugin("logging-plugin")
    if logging_plugin is not None:
        logging_plugin.report_handler.setLevel(logging.INFO)
    _install_answer_hooks()
    _install_moto_hook()


def pytest_runtest_logstart(nodeid: str) -> None:
    global _current
    _current = nodeid


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A test's own hits (logs, answers, its in-process buckets) fail it."""
    global _reported
    report = yield
    if call.when in ("call", "teardown"):
        mine = [hit for hit in _hits[_reported:] if hit.nodeid == item.nodeid]
        _reported = len(_hits)
        if mine and not report.failed:
            report.outcome = "failed"
            report.longrepr = _describe(mine)
        elif mine:
            report.sections.append(("secret leak check", _describe(mine)))
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _hits and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter) -> None:
    read = ", ".join(f"{n} {what}" for what, n in _read.items())
    terminalreporter.write_line(
        f"secret leak check: {len(_hits)} leak(s); read {read} (buckets in {_seconds[0]:.1f} s)"
    )
    if _hits:
        terminalreporter.section("secret leak check", red=True)
        terminalreporter.line(_describe(_hits))


def _describe(hits: list[Hit]) -> str:
    lines = [f"{len(hits)} leak(s) of the credential marker {MARKER!r}:"]
    lines += [f"  {hit.nodeid}: {hit.where}: ...{hit.excerpt}..." for hit in hits[:50]]
    return "\n".join(lines)
