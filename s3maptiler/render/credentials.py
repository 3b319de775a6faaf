"""Upstream credentials: the values of the secrets a layer names, read at start-up and
again every ``refresh`` seconds, and what they add to each request.

A secret's value lives here only. It goes into a request (HTTP basic, a header, a
query parameter) and nowhere else: :func:`redact` is applied by the client to every
reason it turns into text, and logs name the source by its endpoint only (no query).
A refresh that fails keeps the last value (and logs the reference, not the value);
the first read failing stops start-up with one line naming the layer and reference.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from s3maptiler.config import ConfigError
from s3maptiler.config.sources import Credentials, SecretRef, Value

__all__ = [
    "REDACTED",
    "ResolvedCredentials",
    "SecretError",
    "SecretReader",
    "redact",
    "resolve",
]

log = logging.getLogger(__name__)

REDACTED = "<redacted>"
# Shorter values are not scrubbed from text: "a" would erase every letter a.
_MIN_REDACT = 4


# Every secret value this process has read, for the logging filters below.
_KNOWN: set[str] = set()


class _Redacting(logging.Filter):
    """On urllib3's logger: its DEBUG lines carry each request's URL, query included
    (a `token=` parameter)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _KNOWN:
            message = record.getMessage()
            cleaned = redact(message, list(_KNOWN))
            if cleaned != message:
                record.msg, record.args = cleaned, ()
        return True


class _NoResponseBodies(logging.Filter):
    """On botocore's parser logger: its DEBUG lines print whole answers, and a
    GetSecretValue or GetParameter answer is the secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Response body")


def _guard_logs() -> None:
    for name, kind in (
        ("urllib3.connectionpool", _Redacting),
        ("botocore.parsers", _NoResponseBodies),
    ):
        logger = logging.getLogger(name)
        if not any(isinstance(f, kind) for f in logger.filters):
            logger.addFilter(kind())


class SecretError(ConfigError):
    """A secret could not be read; the message names the reference, never a value.
    A configuration error: at start-up it stops the service with that one line."""


def _aws_client(service: str) -> Any:
    import boto3  # only layers with AWS secrets pay for it

    return boto3.client(service)


class SecretReader:
    """Reads references; ``client_factory(service)`` gives boto3 clients (tests pass
    moto's)."""

    def __init__(self, client_factory: Callable[[str], Any] = _aws_client) -> None:
        self._client_factory = client_factory
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _client(self, service: str) -> Any:
        with self._lock:
            if service not in self._clients:
                self._clients[service] = self._client_factory(service)
            return self._clients[service]

    def read(self, ref: SecretRef) -> str:
        _guard_logs()
        try:
            value = self._read(ref)
        except SecretError:
            raise
        except Exception as exc:  # boto3, OS and JSON errors alike: one line, no value
            raise SecretError(f"secret {ref}: {type(exc).__name__}") from None
        if not value:
            raise SecretError(f"secret {ref} is empty")
        return value

    def _read(self, ref: SecretRef) -> str:
        if ref.scheme == "env":
            if ref.name not in os.environ:
                raise SecretError(f"secret {ref}: the variable is not set")
            return os.environ[ref.name]
        if ref.scheme == "file":
            try:
                text = Path(ref.name).read_text(encoding="utf-8")
            except OSError as exc:
                raise SecretError(f"secret {ref}: {exc.strerror}") from None
            return text[:-1] if text.endswith("\n") else text
        if ref.scheme == "ssm":
            answer = self._client("ssm").get_parameter(Name=ref.name, WithDecryption=True)
            return answer["Parameter"]["Value"]
        answer = self._client("secretsmanager").get_secret_value(SecretId=ref.name)
        text = answer.get("SecretString")
        if text is None:
            raise SecretError(f"secret {ref}: binary secrets are not supported")
        if ref.field is None:
            return text
        try:
            field = json.loads(text)[ref.field]
        except (ValueError, KeyError, TypeError):
            raise SecretError(f"secret {ref}: no such field in a JSON secret") from None
        return str(field)


class ResolvedCredentials:
    """A layer's :class:`Credentials` with their values: read once at construction
    (raising SecretError), then again when older than ``refresh`` seconds."""

    def __init__(
        self,
        spec: Credentials,
        reader: SecretReader | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = spec
        self._reader = reader or SecretReader()
        self._clock = clock
        self._lock = threading.Lock()
        self._values: dict[SecretRef, str] = {}
        self._read_at = 0.0
        self._refs = [v for v in spec.values() if isinstance(v, SecretRef)]
        self._read_all(first=True)

    def _read_all(self, first: bool = False) -> None:
        values = {}
        for ref in self._refs:
            try:
                values[ref] = self._reader.read(ref)
            except SecretError as exc:
                if first:
                    raise
                log.warning("%s; keeping the last value read", exc)
                values[ref] = self._values[ref]
        self._values = values
        self._read_at = self._clock()
        _guard_logs()
        _KNOWN.update(t for t in self.secrets() if len(t) >= _MIN_REDACT)

    def _fresh(self) -> None:
        if self._refs and self._clock() - self._read_at >= self.spec.refresh:
            with self._lock:
                if self._clock() - self._read_at >= self.spec.refresh:
                    self._read_all()

    def _of(self, value: Value) -> str:
        return self._values[value] if isinstance(value, SecretRef) else value

    def auth(self) -> tuple[str, str] | None:
        """HTTP basic (user, password), or None."""
        self._fresh()
        spec = self.spec
        if spec.user is None or spec.password is None:
            return None
        return self._of(spec.user), self._of(spec.password)

    def headers(self) -> dict[str, str]:
        self._fresh()
        return {name: self._of(value) for name, value in self.spec.headers}

    def params(self) -> list[tuple[str, str]]:
        self._fresh()
        return [(name, self._of(value)) for name, value in self.spec.params]

    def secrets(self) -> list[str]:
        """Every value that must never be shown: secrets, the password and header and
        parameter values, literal or not (a literal API key is still a key)."""
        spec = self.spec
        shown = [spec.password] + [v for _, v in spec.headers] + [v for _, v in spec.params]
        shown += [v for v in (spec.user,) if isinstance(v, SecretRef)]
        texts = [self._of(v) for v in shown if v is not None]
        # A bearer header's token on its own too: it may be echoed without "Bearer ".
        texts += [t.split(None, 1)[1] for t in texts if " " in t.strip()]
        return texts


_RESOLVED: dict[Credentials, ResolvedCredentials] = {}
_RESOLVED_LOCK = threading.Lock()


def resolve(spec: Credentials) -> ResolvedCredentials:
    """The process's one ResolvedCredentials for `spec`: a layer and its variants
    (dimension values, @2x) read each secret once, and refresh it once."""
    with _RESOLVED_LOCK:
        if spec not in _RESOLVED:
            _RESOLVED[spec] = ResolvedCredentials(spec)
        return _RESOLVED[spec]


def protect(values: Iterable[str]) -> None:
    """Keep `values` out of the logs too: secrets written into an upstream's URL
    itself (a template's ``?key=``) rather than in its credentials table."""
    _guard_logs()
    _KNOWN.update(v for v in values if len(v) >= _MIN_REDACT)


def redact(text: str, secrets: list[str]) -> str:
    """`text` with every secret (and its URL-encoded form) replaced by <redacted>."""
    from urllib.parse import quote, quote_plus

    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) < _MIN_REDACT:
            continue
        for form in {secret, quote(secret), quote(secret, safe=""), quote_plus(secret)}:
            text = re.sub(re.escape(form), REDACTED, text, flags=re.IGNORECASE)
    return text
