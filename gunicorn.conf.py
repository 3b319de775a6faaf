"""gunicorn settings for a WMS-bound service (read by the Procfile command).

gthread workers: blocking WMS and S3 calls stay simple, idle connections cost little.
Sizes come from the environment so Elastic Beanstalk can tune them per instance type.
"""

import contextlib
import ctypes
import os
import sys
import tempfile

# Prometheus metrics from several workers: each writes its samples under this
# directory and /metrics sums them (set before the workers import the app).
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="s3maptiler-metrics-")

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
worker_class = "gthread"
# One worker per core by default: the workers of a host share each metatile's render
# (file locks and a spool, s3maptiler/service/spool.py), so more workers add CPU for
# decoding and encoding without asking the WMS again.
workers = int(os.environ.get("WEB_CONCURRENCY") or len(os.sched_getaffinity(0)))
threads = int(os.environ.get("GUNICORN_THREADS", "32"))
# With gthread, `timeout` is a liveness heartbeat, not a request limit: WMS and S3
# calls carry their own timeouts.
timeout = 60
# Below Elastic Beanstalk's ~90 s systemd stop timeout, so draining uploads finishes.
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "45"))
keepalive = 5
# No recycling by default: with one worker, each restart stalled every request for
# about a second (bench/soak.py), and its memory levels off at ~170 MB without it.
max_requests = int(os.environ.get("MAX_REQUESTS", "0"))
max_requests_jitter = 200
accesslog = None  # the app writes one structured line per tile request


def post_fork(server, worker):
    """Cap glibc's malloc arenas in each worker: with 32 threads each growing its own
    arena, peak RSS was 165 MB; with 2 it was 100 MB (bench/compare_mapproxy.py)."""
    m_arena_max = -8  # mallopt parameter number, from glibc's malloc.h
    arenas = int(os.environ.get("MALLOC_ARENA_MAX", "2"))
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to tune
        ctypes.CDLL("libc.so.6").mallopt(m_arena_max, arenas)


def child_exit(server, worker):
    """Forget a dead worker's live gauges (the upload queue depth)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def worker_exit(server, worker):
    """Drain this worker's pending uploads before it exits (SIGTERM, recycling)."""
    module = sys.modules.get("application")
    app = getattr(module, "application", None)
    if app is None:
        return
    left = app.extensions["s3maptiler"].drain(max(graceful_timeout - 5, 1))
    server.log.info("worker %s exit: %d uploads left undone", worker.pid, left)
