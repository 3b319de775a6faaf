"""Bucket set-up and check: the S3 documents that make a bucket a self-completing tile cache.

Pure functions build each document from a :class:`BucketSpec`:

- :func:`website_configuration`: static website hosting whose routing rules send both
  404 and 403 misses under each tile prefix to the tiler with a **307** over **https**
  (``ReplaceKeyPrefixWith`` = miss prefix + tile prefix); plain http and a port only
  for a tiler named by URL (:func:`parse_tiler_url`), e.g. on this machine;
- :func:`cors_configuration`: GET/HEAD from the configured origins;
- :func:`lifecycle_configuration`: optional expiry per prefix;
- :func:`public_read_policy`: public ``s3:GetObject`` on the tile prefixes (no ACLs);
- :func:`instance_role_policy`: the least-privilege IAM policy of the service's role.

:mod:`~s3maptiler.bucket.setup` merges them with what the bucket already holds and
sends them; :mod:`~s3maptiler.bucket.check` lists what is missing or wrong.

>>> rule = routing_rules("tiles-api.example.com", ["tiles/"], "miss/")[0]
>>> rule["Redirect"]["ReplaceKeyPrefixWith"], rule["Redirect"]["HttpRedirectCode"]
('miss/tiles/', '307')

One module of about 400 lines on purpose: the spec and every document built from it,
so the rules a bucket gets can be read in one place.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from s3maptiler.config import checked_prefix, validators
from s3maptiler.storage.s3 import LEASE_PREFIX

__all__ = [
    "MAX_ROUTING_RULES",
    "BucketAccessDenied",
    "BucketError",
    "BucketNotFound",
    "BucketSpec",
    "InvalidSpec",
    "PublicAccessBlocked",
    "cors_configuration",
    "instance_role_policy",
    "lifecycle_configuration",
    "parse_tiler_url",
    "public_read_policy",
    "relaxed_public_access_block",
    "routing_rules",
    "validate_host",
    "website_configuration",
]

log = logging.getLogger(__name__)

#: S3 accepts at most 50 routing rules in one website configuration.
MAX_ROUTING_RULES = 50
#: Both miss codes: 404 from a public website endpoint, 403 when S3 may not say "missing".
MISS_CODES = ("404", "403")

# Names that mark the pieces this module owns, so a re-run replaces them and nothing else.
CORS_RULE_ID = "s3maptiler-tiles"
LIFECYCLE_ID_PREFIX = "s3maptiler-expire-"
# Days after which the fleet's metatile leases (s3maptiler.service.leases) expire: S3's least.
LEASE_EXPIRY_DAYS = 1
POLICY_SID = "S3maptilerPublicReadTiles"

_HOST_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_HOST_RE = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*")
_PORT_RE = re.compile(r"[1-9][0-9]{0,4}")
PROTOCOLS = ("https", "http")


# --- errors -------------------------------------------------------------------------


class BucketError(Exception):
    """Base class for every error raised by this module; the message is one line."""


class InvalidSpec(BucketError, ValueError):
    """A host, prefix, origin or number that cannot go into the documents."""


class BucketNotFound(BucketError):
    """The bucket does not exist."""


class BucketAccessDenied(BucketError):
    """The credentials may not read or write a bucket setting."""


class PublicAccessBlocked(BucketError):
    """Block Public Access would refuse the public-read policy and may not be relaxed."""


class SetupFailed(BucketError):
    """S3 refused one of the documents."""


# --- the inputs ---------------------------------------------------------------------


def validate_host(host: str) -> str:
    """The tiler's host name in lower case; InvalidSpec unless it is a bare host name.

    S3's ``Redirect.HostName`` is a host only: no scheme, port, path or spaces.

    >>> validate_host("Tiles-API.example.com")
    'tiles-api.example.com'
    """
    text = host.strip().lower() if isinstance(host, str) else ""
    if "://" in text:
        raise InvalidSpec(
            f"tiler host {host!r}: give the host name only, without the scheme "
            "(the redirect always uses https)"
        )
    if not text or len(text) > 253 or _HOST_RE.fullmatch(text) is None:
        raise InvalidSpec(
            f"tiler host {host!r} is not a host name (e.g. tiles-api.example.com; "
            "no scheme, port, path or spaces)"
        )
    return text


def _validate_redirect_host(host: str) -> str:
    """A host name with an optional ``:port`` (what a tiler URL names), lower-cased."""
    name, colon, port = host.strip().lower().rpartition(":") if ":" in host else (host, "", "")
    if colon and (_PORT_RE.fullmatch(port) is None or int(port) > 65535):
        raise InvalidSpec(f"tiler host {host!r}: port {port!r} is not a port number")
    return validate_host(name) + (f":{port}" if colon else "")


def parse_tiler_url(url: str) -> tuple[str, str]:
    """(protocol, host[:port]) of the tiler's URL, for a redirect to it.

    The default redirect is https to a bare host name; a URL can name plain http and
    a port, as a service on this machine needs. Only scheme, host and port: the miss
    path is always ``/<miss prefix><key>``.

    >>> parse_tiler_url("http://127.0.0.1:8000")
    ('http', '127.0.0.1:8000')
    >>> parse_tiler_url("https://Tiles-API.example.com/")
    ('https', 'tiles-api.example.com')
    """
    text = url.strip() if isinstance(url, str) else ""
    scheme, sep, rest = text.partition("://")
    if not sep or scheme.lower() not in PROTOCOLS:
        raise InvalidSpec(f"tiler URL {url!r} must start with http:// or https://")
    host = rest[:-1] if rest.endswith("/") else rest
    if not host or any(c in host for c in "/?#@") or any(c.isspace() for c in host):
        raise InvalidSpec(
            f"tiler URL {url!r}: give scheme, host and port only (e.g. http://127.0.0.1:8000); "
            "misses always go to /<miss prefix><key>"
        )
    return scheme.lower(), _validate_redirect_host(host)


@dataclass(frozen=True)
class BucketSpec:
    """What a tile bucket should look like.

    `tiler_host`: where misses go, a host name (a ``:port`` only with a tiler URL);
    `tiler_protocol`: ``https``, or ``http`` for a tiler on this machine;
    `prefixes`: tile key prefixes (``tiles/``); `miss_prefix`: the path prefix the
    tiler recognises as a redirected miss (``miss/``); `expire_days`: lifecycle
    expiry in days, None for no lifecycle rule; `cors_origins`: browser origins
    allowed to GET/HEAD tiles; `public_read`: grant anonymous ``s3:GetObject`` on the
    prefixes (and on `public_keys`, single objects such as the published documents)
    through the bucket policy; `relax_public_access_block`: allow this module to turn
    off BlockPublicPolicy and RestrictPublicBuckets.
    """

    bucket: str
    tiler_host: str | None
    prefixes: tuple[str, ...] = ("tiles/",)
    miss_prefix: str = "miss/"
    expire_days: int | None = None
    cors_origins: tuple[str, ...] = ("*",)
    public_read: bool = True
    relax_public_access_block: bool = False
    index_document: str = "index.html"
    tiler_protocol: str = "https"
    public_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.tiler_host is not None:
            object.__setattr__(self, "tiler_host", _validate_redirect_host(self.tiler_host))
        if self.tiler_protocol not in PROTOCOLS:
            raise InvalidSpec(f"tiler protocol {self.tiler_protocol!r} is not https or http")
        prefixes = tuple(
            dict.fromkeys(checked_prefix("prefix", p, InvalidSpec) for p in self.prefixes)
        )
        if not prefixes:
            raise InvalidSpec("at least one tile prefix is needed")
        object.__setattr__(self, "prefixes", prefixes)
        checked_prefix("miss prefix", self.miss_prefix, InvalidSpec)
        if not self.miss_prefix:
            raise InvalidSpec("miss prefix must not be empty (it marks redirected misses)")
        for prefix in prefixes:
            if prefix.startswith(self.miss_prefix):
                raise InvalidSpec(
                    f"prefix {prefix!r} lies under the miss prefix {self.miss_prefix!r}"
                )
        if self.expire_days is not None and not (
            isinstance(self.expire_days, int) and self.expire_days >= 1
        ):
            raise InvalidSpec(f"expiry {self.expire_days!r} must be a whole number of days >= 1")
        origins = tuple(dict.fromkeys(o.strip() for o in self.cors_origins))
        for origin in origins:
            try:
                validators.cors_origin(origin, wildcard=True)
            except ValueError as err:
                raise InvalidSpec(f"CORS origin {err}") from None
        object.__setattr__(self, "cors_origins", origins)
        if 2 * len(prefixes) > MAX_ROUTING_RULES:
            raise InvalidSpec(
                f"{len(prefixes)} prefixes need {2 * len(prefixes)} routing rules; "
                f"S3 allows {MAX_ROUTING_RULES}"
            )


# --- documents (pure) ---------------------------------------------------------------


def miss_redirect(protocol: str, miss_prefix: str, prefix: str, host: str | None) -> dict:
    """The ``Redirect`` of a miss under `prefix`: 307 to the tiler's miss route. Website
    endpoints are HTTP only; without ``Protocol`` the tiler would be asked over plain
    HTTP too. No ``HostName`` when `host` is None (what `bucket check` may not know)."""
    redirect = {
        "Protocol": protocol,
        "ReplaceKeyPrefixWith": miss_prefix + prefix,
        "HttpRedirectCode": "307",
    }
    if host is not None:
        redirect["HostName"] = host
    return redirect


def routing_rules(
    tiler_host: str, prefixes: Sequence[str], miss_prefix: str, protocol: str = "https"
) -> list[dict]:
    """Two routing rules per prefix (404 and 403) that 307-redirect misses to the tiler.

    ``KeyPrefixEquals`` is the tile prefix and ``ReplaceKeyPrefixWith`` the miss
    prefix + tile prefix, so ``tiles/3/4/2.png`` goes to
    ``https://<tiler_host>/miss/tiles/3/4/2.png``. An empty prefix leaves out
    ``KeyPrefixEquals``; S3 then prepends ``ReplaceKeyPrefixWith`` to the whole key,
    which is the same thing. 307, not S3's default 301: a permanent redirect is cached
    by browsers and would keep sending the tile to the tiler after it is in S3.
    `tiler_host` may carry a ``:port`` and `protocol` be ``http`` only for a tiler
    on this machine (see :func:`parse_tiler_url`).
    """
    host = _validate_redirect_host(tiler_host)
    if protocol not in PROTOCOLS:
        raise InvalidSpec(f"tiler protocol {protocol!r} is not https or http")
    rules = []
    for prefix in prefixes:
        for code in MISS_CODES:
            condition = {"HttpErrorCodeReturnedEquals": code}
            if prefix:
                condition = {"KeyPrefixEquals": prefix, **condition}
            redirect = miss_redirect(protocol, miss_prefix, prefix, host)
            rules.append({"Condition": condition, "Redirect": redirect})
    if len(rules) > MAX_ROUTING_RULES:
        raise InvalidSpec(f"{len(rules)} routing rules; S3 allows {MAX_ROUTING_RULES}")
    return rules


def website_configuration(spec: BucketSpec) -> dict:
    """The ``PutBucketWebsite`` document: an IndexDocument (S3 requires one with routing
    rules) and the redirect-on-miss rules of :func:`routing_rules`."""
    if spec.tiler_host is None:
        raise InvalidSpec("a tiler host is needed for the website routing rules")
    return {
        "IndexDocument": {"Suffix": spec.index_document},
        "RoutingRules": routing_rules(
            spec.tiler_host, spec.prefixes, spec.miss_prefix, spec.tiler_protocol
        ),
    }


def cors_configuration(origins: Sequence[str]) -> dict:
    """The ``PutBucketCors`` document: GET and HEAD from `origins`, any request header
    (conditional GETs send ``If-None-Match``, which needs a preflight), ETag exposed."""
    return {
        "CORSRules": [
            {
                "ID": CORS_RULE_ID,
                "AllowedMethods": ["GET", "HEAD"],
                "AllowedOrigins": list(origins),
                "AllowedHeaders": ["*"],
                "ExposeHeaders": ["ETag"],
                "MaxAgeSeconds": 3600,
            }
        ]
    }


def _lifecycle_id(prefix: str) -> str:
    return LIFECYCLE_ID_PREFIX + (prefix.rstrip("/") or "all")


def lifecycle_configuration(prefixes: Sequence[str], expire_days: int | None) -> dict:
    """The ``PutBucketLifecycleConfiguration`` document: the fleet's metatile leases
    (``_leases/``, each a finished render kept for seconds) expire after a day, the
    shortest S3 allows; with `expire_days`, tiles under each prefix expire that many
    days after they were last written (S3 rounds up to 00:00 UTC)."""
    expiries = [(LEASE_PREFIX, LEASE_EXPIRY_DAYS)]
    if expire_days is not None:
        expiries += [(prefix, expire_days) for prefix in prefixes]
    return {
        "Rules": [
            {
                "ID": _lifecycle_id(prefix),
                "Filter": {"Prefix": prefix},
                "Status": "Enabled",
                "Expiration": {"Days": days},
            }
            for prefix, days in expiries
        ]
    }


def object_arns(bucket: str, prefixes: Iterable[str], keys: Iterable[str] = ()) -> list[str]:
    return [f"arn:aws:s3:::{bucket}/{prefix}*" for prefix in prefixes] + [
        f"arn:aws:s3:::{bucket}/{key}" for key in keys
    ]


def public_read_policy(bucket: str, prefixes: Sequence[str], keys: Sequence[str] = ()) -> dict:
    """A bucket policy statement granting anyone ``s3:GetObject`` on the tile prefixes
    (and on single `keys`, such as the published service documents), as a whole policy
    document. Read access through the policy, never through ACLs: buckets created
    since April 2023 refuse ACLs."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": POLICY_SID,
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": object_arns(bucket, prefixes, keys),
            }
        ],
    }


def instance_role_policy(bucket: str, prefixes: Sequence[str], acl: bool = False) -> dict:
    """The least-privilege IAM policy for the service's instance role.

    Get and Put on the tile prefixes and on the fleet's metatile leases only;
    ``s3:ListBucket`` on the bucket so that a missing tile answers 404 rather than 403
    and the start-up HeadBucket works; ``s3:PutObjectAcl`` only when the service sends
    an ACL (`acl`).
    """
    object_actions = ["s3:GetObject", "s3:PutObject"]
    if acl:
        object_actions.append("s3:PutObjectAcl")
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadWriteTiles",
                "Effect": "Allow",
                "Action": object_actions,
                "Resource": object_arns(bucket, prefixes),
            },
            {
                "Sid": "MetatileLeases",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject"],
                "Resource": object_arns(bucket, [LEASE_PREFIX]),
            },
            {
                "Sid": "MissingTilesAnswer404",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": f"arn:aws:s3:::{bucket}",
            },
        ],
    }


def relaxed_public_access_block(current: dict | None) -> dict:
    """Block Public Access with the two policy settings off and the ACL settings kept.

    A public bucket policy needs BlockPublicPolicy and RestrictPublicBuckets off;
    the ACL settings stay on (true when unset) because tiles never use ACLs.
    """
    current = current or {}
    return {
        "BlockPublicAcls": current.get("BlockPublicAcls", True),
        "IgnorePublicAcls": current.get("IgnorePublicAcls", True),
        "BlockPublicPolicy": False,
        "RestrictPublicBuckets": False,
    }


def blocks_public_policy(bpa: dict | None) -> bool:
    return bool(bpa) and bool(bpa.get("BlockPublicPolicy") or bpa.get("RestrictPublicBuckets"))
