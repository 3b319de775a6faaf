"""What a command prints: its log lines on stderr, progress bars with rate and ETA (on a
terminal), the one-line summary's numbers and the failures listed after it; and the
signals that end a long command after its running work, the summary still printed."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

log = logging.getLogger(__name__)

# Failures listed one per line after a summary; the rest are only counted.
_SHOWN_FAILURES = 20


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record arrives, not when the handler
    was made: click's test runner swaps stderr per invocation."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


_LOG_HANDLER = _StderrHandler()
_LOG_HANDLER.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
_PACKAGE_LOG = logging.getLogger("s3maptiler")


def configure_logging(verbose: int) -> None:
    """Our messages on stderr: warnings, or info (-v) and debug (-vv). Only the
    package's logger is touched, never the root logger of a host program."""
    level = logging.WARNING - 10 * min(verbose, 2)
    _LOG_HANDLER.setLevel(level)
    if _LOG_HANDLER not in _PACKAGE_LOG.handlers:
        _PACKAGE_LOG.addHandler(_LOG_HANDLER)
    if verbose:
        _PACKAGE_LOG.setLevel(level)


def _bar(total: int | None, desc: str, unit: str = "tile") -> tqdm:
    """A progress bar (rate, ETA) on stderr, shown only when stderr is a terminal."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        disable=not sys.stderr.isatty(),
        dynamic_ncols=True,
        mininterval=0.2,
    )


@contextmanager
def progress_bar(total: int | None, desc: str, unit: str = "tile") -> Iterator[tqdm]:
    # Log lines go through tqdm.write while the bar is up, so they do not tear it.
    with logging_redirect_tqdm(loggers=[_PACKAGE_LOG]), _bar(total, desc, unit) as bar:
        yield bar


def per_second(count: int, seconds: float) -> str:
    return f"{count / seconds:.1f}" if seconds > 0 else "-"


def size_text(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # unreachable


def show_failures(failures: list[tuple[str, str]]) -> None:
    for key, reason in failures[:_SHOWN_FAILURES]:
        click.echo(f"failed: {key}: {reason}", err=True)
    if len(failures) > _SHOWN_FAILURES:
        click.echo(f"failed: ... and {len(failures) - _SHOWN_FAILURES} more", err=True)


def json_text(document: Any) -> str:
    return json.dumps(document, indent=2, sort_keys=False)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM (main thread only): running metatiles finish,
    no new one starts, and the summary is still printed."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, _frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt  # a second signal: stop now
        log.warning("signal %d: finishing running metatiles, then stopping", signum)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
