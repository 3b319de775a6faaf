"""Operations: ``/heartbeat`` (cheap, or deep with ``?deep=1``) and ``/metrics``."""

from __future__ import annotations

import ipaddress
import json

from flask import Blueprint, Response, request
from werkzeug.datastructures import Headers

from s3maptiler import metrics
from s3maptiler.config import IPNetwork
from s3maptiler.http.replies import service, text

blueprint = Blueprint("operations", __name__)


@blueprint.get("/heartbeat")
def heartbeat() -> Response:
    """``ok`` with the upload counters; ``?deep=1``: the store and every WMS, each
    checked with a short timeout and reported one by one (503 when any fails)."""
    tiles = service()
    stats = tiles.uploads.stats()
    if request.args.get("deep") not in ("1", "true"):
        names = ("pending", "stored", "failed", "skipped", "dropped", "unstored")
        counts = " ".join(f"uploads_{name}={stats[name]}" for name in names)
        return text(200, f"ok {counts}")
    checks = tiles.health_checks()
    healthy = all(result == "ok" for result in checks.values())
    body = {"status": "ok" if healthy else "failing", "checks": checks, "uploads": stats}
    return Response(json.dumps(body), 200 if healthy else 503, mimetype="application/json")


@blueprint.get("/metrics")
def prometheus() -> Response:
    allowed = service().settings.metrics_allow
    if allowed is None:
        return text(404, "404 Not Found")  # METRICS_ALLOW=off: as if there were none
    refused = _refused_hop(allowed, request.remote_addr, request.headers)
    if refused is not None:
        return text(403, f"metrics: {refused[:64]} is not in METRICS_ALLOW")
    body, content_type = metrics.exposition()
    response = Response(body, content_type=content_type)
    response.headers["Cache-Control"] = "no-store"
    return response


def _refused_hop(allowed: tuple[IPNetwork, ...], peer: str | None, headers: Headers) -> str | None:
    """The first address of a request's path that is in none of `allowed`, else None.

    The path is the peer (behind Elastic Beanstalk, nginx on 127.0.0.1) and every
    address in X-Forwarded-For and X-Real-IP (the load balancer, the client, and
    whatever the client wrote itself). All must be allowed: a forged entry can only
    make a request less allowed, so no count of trusted proxies is needed.
    """
    hops = [peer or ""]
    for name in ("X-Forwarded-For", "X-Real-IP"):
        for value in headers.getlist(name):
            hops.extend(part.strip() for part in value.split(","))
    for hop in hops:
        try:
            address = ipaddress.ip_address(hop.strip("[]"))
        except ValueError:
            return hop or "an unknown address"
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if not any(address in network for network in allowed):
            return hop
    return None
