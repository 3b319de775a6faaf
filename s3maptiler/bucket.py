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

:func:`plan_setup` merges them with what the bucket already holds (rules, lifecycle
rules and policy statements that are not ours are kept), :func:`setup_bucket` sends
them, :func:`check_bucket` lists what is missing or wrong. Block Public Access is
relaxed only when the spec says so explicitly, and only the two settings that stop a
public bucket policy.

>>> rule = routing_rules("tiles-api.example.com", ["tiles/"], "miss/")[0]
>>> rule["Redirect"]["ReplaceKeyPrefixWith"], rule["Redirect"]["HttpRedirectCode"]
('miss/tiles/', '307')
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from s3maptiler.service.leases import DEFAULT_PREFIX as LEASE_PREFIX

__all__ = [
    "MAX_ROUTING_RULES",
    "BucketAccessDenied",
    "BucketError",
    "BucketNotFound",
    "BucketSpec",
    "CurrentConfig",
    "Finding",
    "InvalidSpec",
    "PublicAccessBlocked",
    "SetupFailed",
    "SetupStep",
    "check_bucket",
    "check_prefix",
    "cors_configuration",
    "instance_role_policy",
    "lifecycle_configuration",
    "parse_tiler_url",
    "plan_setup",
    "public_read_policy",
    "read_current",
    "relaxed_public_access_block",
    "routing_rules",
    "setup_bucket",
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
_PREFIX_RE = re.compile(r"(?:[A-Za-z0-9_.~-]+/)*")
# What a CORS origin may look like: "*", or scheme://host[:port] with at most one "*".
_ORIGIN_RE = re.compile(r"\*|https?://[A-Za-z0-9*.-]+(?::[0-9]{1,5})?")


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


def check_prefix(prefix: str, what: str = "prefix") -> str:
    """`prefix` unchanged if it is a usable S3 key prefix: empty, or '/'-terminated parts
    of letters, digits and ``_.~-``, with no leading '/', '.' or '..' parts."""
    if not isinstance(prefix, str) or _PREFIX_RE.fullmatch(prefix) is None:
        raise InvalidSpec(
            f"{what} {prefix!r} must be empty or '/'-terminated parts of letters, digits "
            "and _.~- (e.g. tiles/), without a leading '/'"
        )
    if any(part in (".", "..") for part in prefix.split("/")):
        raise InvalidSpec(f"{what} {prefix!r} has a '.' or '..' part")
    return prefix


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
        prefixes = tuple(dict.fromkeys(check_prefix(p) for p in self.prefixes))
        if not prefixes:
            raise InvalidSpec("at least one tile prefix is needed")
        object.__setattr__(self, "prefixes", prefixes)
        check_prefix(self.miss_prefix, "miss prefix")
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
            if _ORIGIN_RE.fullmatch(origin) is None or origin.count("*") > 1:
                raise InvalidSpec(
                    f"CORS origin {origin!r} must be '*' or scheme://host[:port] "
                    "with at most one '*'"
                )
        object.__setattr__(self, "cors_origins", origins)
        if 2 * len(prefixes) > MAX_ROUTING_RULES:
            raise InvalidSpec(
                f"{len(prefixes)} prefixes need {2 * len(prefixes)} routing rules; "
                f"S3 allows {MAX_ROUTING_RULES}"
            )


# --- documents (pure) ---------------------------------------------------------------


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
            rules.append(
                {
                    "Condition": condition,
                    "Redirect": {
                        # Website endpoints are HTTP only; without this the tiler
                        # would be asked over plain HTTP too.
                        "Protocol": protocol,
                        "HostName": host,
                        "ReplaceKeyPrefixWith": miss_prefix + prefix,
                        "HttpRedirectCode": "307",
                    },
                }
            )
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


def _object_arns(bucket: str, prefixes: Iterable[str], keys: Iterable[str] = ()) -> list[str]:
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
                "Resource": _object_arns(bucket, prefixes, keys),
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
                "Resource": _object_arns(bucket, prefixes),
            },
            {
                "Sid": "MetatileLeases",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject"],
                "Resource": _object_arns(bucket, [LEASE_PREFIX]),
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


def _blocks_public_policy(bpa: dict | None) -> bool:
    return bool(bpa) and bool(bpa.get("BlockPublicPolicy") or bpa.get("RestrictPublicBuckets"))


# --- merging with what is there -----------------------------------------------------


@dataclass(frozen=True)
class CurrentConfig:
    """The bucket's settings as read from S3; None where the bucket has none."""

    website: dict | None = None
    cors_rules: list | None = None
    lifecycle_rules: list | None = None
    policy: dict | None = None
    public_access_block: dict | None = None


def _is_our_rule(rule: dict, prefixes: Sequence[str]) -> bool:
    condition = rule.get("Condition") or {}
    return (
        condition.get("KeyPrefixEquals", "") in prefixes
        and condition.get("HttpErrorCodeReturnedEquals") in MISS_CODES
    )


def _merged_website(spec: BucketSpec, current: dict | None) -> dict:
    ours = website_configuration(spec)
    if not current:
        return ours
    if current.get("RedirectAllRequestsTo"):
        raise SetupFailed(
            f"bucket {spec.bucket} redirects all website requests to "
            f"{current['RedirectAllRequestsTo'].get('HostName')}; remove that first"
        )
    merged: dict[str, Any] = {
        "IndexDocument": current.get("IndexDocument") or ours["IndexDocument"]
    }
    if current.get("ErrorDocument"):
        merged["ErrorDocument"] = current["ErrorDocument"]
    others = [r for r in current.get("RoutingRules") or [] if not _is_our_rule(r, spec.prefixes)]
    # Ours first: S3 applies the first rule that matches.
    merged["RoutingRules"] = ours["RoutingRules"] + others
    if len(merged["RoutingRules"]) > MAX_ROUTING_RULES:
        raise InvalidSpec(
            f"{len(ours['RoutingRules'])} tile rules + {len(others)} existing routing rules "
            f"exceed S3's {MAX_ROUTING_RULES}"
        )
    return merged


def _merged_cors(spec: BucketSpec, current: list | None) -> dict:
    ours = cors_configuration(spec.cors_origins)
    others = [r for r in current or [] if r.get("ID") != CORS_RULE_ID]
    return {"CORSRules": ours["CORSRules"] + others}


def _rule_prefix(rule: dict) -> str | None:
    filt = rule.get("Filter")
    if filt is None:
        return rule.get("Prefix")
    return filt.get("Prefix") if set(filt) == {"Prefix"} else None


def _merged_lifecycle(spec: BucketSpec, current: list | None) -> dict:
    ours = lifecycle_configuration(spec.prefixes, spec.expire_days)
    ids = {rule["ID"] for rule in ours["Rules"]}
    prefixes = {_rule_prefix(rule) for rule in ours["Rules"]}
    others = [
        rule
        for rule in current or []
        # An older expiry rule on exactly our prefix would fight ours: replace it too.
        if rule.get("ID") not in ids
        and not (rule.get("Expiration") and _rule_prefix(rule) in prefixes)
    ]
    return {"Rules": ours["Rules"] + others}


def _merged_policy(spec: BucketSpec, current: dict | None) -> dict:
    ours = public_read_policy(spec.bucket, spec.prefixes, spec.public_keys)
    if not current:
        return ours
    merged = dict(current)
    statements = current.get("Statement") or []
    if isinstance(statements, dict):
        statements = [statements]
    others = [s for s in statements if s.get("Sid") != POLICY_SID]
    merged["Statement"] = others + ours["Statement"]
    merged.setdefault("Version", "2012-10-17")
    return merged


# --- reading ------------------------------------------------------------------------

_ABSENT_CODES = frozenset(
    {
        "NoSuchWebsiteConfiguration",
        "NoSuchCORSConfiguration",
        "NoSuchLifecycleConfiguration",
        "NoSuchBucketPolicy",
        "NoSuchPublicAccessBlockConfiguration",
    }
)


def _translate(err: ClientError | BotoCoreError, bucket: str, what: str) -> BucketError:
    if isinstance(err, BotoCoreError):
        return SetupFailed(f"{what} on {bucket}: {err}")
    error = err.response.get("Error", {})
    code = str(error.get("Code", ""))
    message = error.get("Message") or code
    if code in ("NoSuchBucket", "404", "NotFound"):
        return BucketNotFound(f"bucket {bucket!r} does not exist")
    if code in ("AccessDenied", "403", "Forbidden"):
        return BucketAccessDenied(f"{what} on {bucket}: access denied ({message})")
    return SetupFailed(f"{what} on {bucket}: {code} {message}")


def _read(client: Any, operation: str, bucket: str) -> dict | None:
    try:
        answer = getattr(client, operation)(Bucket=bucket)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") in _ABSENT_CODES:
            return None
        raise _translate(err, bucket, operation) from err
    except BotoCoreError as err:
        raise _translate(err, bucket, operation) from err
    answer.pop("ResponseMetadata", None)
    return answer


def read_current(client: Any, bucket: str) -> CurrentConfig:
    """The bucket's website, CORS, lifecycle, policy and Block Public Access settings.

    Raises BucketNotFound, BucketAccessDenied or SetupFailed.
    """
    website = _read(client, "get_bucket_website", bucket)
    cors = _read(client, "get_bucket_cors", bucket)
    lifecycle = _read(client, "get_bucket_lifecycle_configuration", bucket)
    policy = _read(client, "get_bucket_policy", bucket)
    bpa = _read(client, "get_public_access_block", bucket)
    return CurrentConfig(
        website=website,
        cors_rules=cors.get("CORSRules") if cors else None,
        lifecycle_rules=lifecycle.get("Rules") if lifecycle else None,
        policy=json.loads(policy["Policy"]) if policy and policy.get("Policy") else None,
        public_access_block=bpa.get("PublicAccessBlockConfiguration") if bpa else None,
    )


# --- set-up -------------------------------------------------------------------------


@dataclass(frozen=True)
class SetupStep:
    """One S3 call of the set-up: the boto3 `operation`, its keyword `params`, the JSON
    `document` it sends (for ``--dry-run``) and a one-line `summary`."""

    name: str
    operation: str
    params: dict = field(repr=False)
    document: dict
    summary: str


def plan_setup(spec: BucketSpec, current: CurrentConfig | None = None) -> list[SetupStep]:
    """Every call :func:`setup_bucket` would make, merged with `current` settings.

    Raises PublicAccessBlocked when a public-read policy is wanted, Block Public
    Access forbids it and the spec does not allow relaxing it.
    """
    current = current or CurrentConfig()
    b = spec.bucket
    website = _merged_website(spec, current.website)
    steps = [
        SetupStep(
            "website",
            "put_bucket_website",
            {"Bucket": b, "WebsiteConfiguration": website},
            website,
            f"website hosting: 404 and 403 misses under {', '.join(map(repr, spec.prefixes))} "
            f"-> 307 {spec.tiler_protocol}://{spec.tiler_host}/{spec.miss_prefix}...",
        )
    ]
    cors = _merged_cors(spec, current.cors_rules)
    steps.append(
        SetupStep(
            "cors",
            "put_bucket_cors",
            {"Bucket": b, "CORSConfiguration": cors},
            cors,
            f"CORS: GET, HEAD from {', '.join(spec.cors_origins)}",
        )
    )
    lifecycle = _merged_lifecycle(spec, current.lifecycle_rules)
    tiles_expire = (
        f"tiles expire {spec.expire_days} days after their last write, "
        if spec.expire_days is not None
        else ""
    )
    steps.append(
        SetupStep(
            "lifecycle",
            "put_bucket_lifecycle_configuration",
            {"Bucket": b, "LifecycleConfiguration": lifecycle},
            lifecycle,
            f"lifecycle: {tiles_expire}metatile leases ({LEASE_PREFIX}) after "
            f"{LEASE_EXPIRY_DAYS} day",
        )
    )
    if spec.public_read:
        if _blocks_public_policy(current.public_access_block):
            if not spec.relax_public_access_block:
                raise PublicAccessBlocked(
                    f"Block Public Access on bucket {b} refuses a public-read policy; rerun "
                    "with --relax-public-access-block to turn off BlockPublicPolicy and "
                    "RestrictPublicBuckets, or use --no-public-read (e.g. CloudFront OAC)"
                )
            bpa = relaxed_public_access_block(current.public_access_block)
            steps.append(
                SetupStep(
                    "public-access-block",
                    "put_public_access_block",
                    {"Bucket": b, "PublicAccessBlockConfiguration": bpa},
                    bpa,
                    "RELAXING Block Public Access: BlockPublicPolicy and RestrictPublicBuckets "
                    "off (public ACLs stay blocked)",
                )
            )
        policy = _merged_policy(spec, current.policy)
        steps.append(
            SetupStep(
                "policy",
                "put_bucket_policy",
                {"Bucket": b, "Policy": json.dumps(policy)},
                policy,
                "bucket policy: public s3:GetObject on "
                + ", ".join(_object_arns(b, spec.prefixes, spec.public_keys)),
            )
        )
    return steps


def setup_bucket(client: Any, spec: BucketSpec, dry_run: bool = False) -> list[SetupStep]:
    """Read the bucket, plan, and (unless `dry_run`) send every step; the steps.

    Nothing is sent when planning fails (for example PublicAccessBlocked). Raises a
    BucketError subclass naming the step S3 refused. A dry run that cannot read the
    bucket (no credentials yet) plans for a bucket without settings and says so.
    """
    try:
        current = read_current(client, spec.bucket)
    except BucketError as err:
        if not dry_run:
            raise
        log.warning("%s; showing the documents for a bucket with no settings yet", err)
        current = CurrentConfig()
    steps = plan_setup(spec, current)
    if dry_run:
        return steps
    for step in steps:
        try:
            getattr(client, step.operation)(**step.params)
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code")
            if step.name == "policy" and code in ("AccessDenied", "403"):
                raise PublicAccessBlocked(
                    f"bucket policy on {spec.bucket} refused (AccessDenied): Block Public "
                    "Access may be on for the whole account (s3control), or the "
                    "credentials lack s3:PutBucketPolicy"
                ) from err
            raise _translate(err, spec.bucket, step.operation) from err
        except BotoCoreError as err:
            raise _translate(err, spec.bucket, step.operation) from err
        log.info("bucket %s: %s", spec.bucket, step.summary)
    return steps


# --- check --------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One thing missing or wrong on a bucket: the `area` (website, cors, lifecycle,
    policy, public-access-block, bucket) and a one-line `problem`."""

    area: str
    problem: str

    def __str__(self) -> str:
        return f"{self.area}: {self.problem}"


def _check_rule(spec: BucketSpec, rules: list[dict], prefix: str, code: str) -> list[Finding]:
    matching = [
        r
        for r in rules
        if (r.get("Condition") or {}).get("KeyPrefixEquals", "") == prefix
        and (r.get("Condition") or {}).get("HttpErrorCodeReturnedEquals") == code
    ]
    where = f"{code} misses under {prefix!r}"
    if not matching:
        return [Finding("website", f"no routing rule redirects {where} to the tiler")]
    redirect = matching[0].get("Redirect") or {}
    want = {
        "Protocol": spec.tiler_protocol,
        "ReplaceKeyPrefixWith": spec.miss_prefix + prefix,
        "HttpRedirectCode": "307",
    }
    if spec.tiler_host is not None:
        want["HostName"] = spec.tiler_host
    findings = []
    for name, value in want.items():
        got = redirect.get(name)
        if name == "HostName" and isinstance(got, str):
            got = got.lower()
        if got != value:
            # 301 is what S3 does without a code: permanent, and cached by browsers.
            hint = " (301 is permanent and browser-cached)" if name == "HttpRedirectCode" else ""
            findings.append(
                Finding("website", f"rule for {where}: {name} is {got!r}, want {value!r}{hint}")
            )
    if spec.tiler_host is None and not redirect.get("HostName"):
        findings.append(Finding("website", f"rule for {where} has no HostName"))
    return findings


def _check_website(spec: BucketSpec, website: dict | None) -> list[Finding]:
    if not website:
        return [Finding("website", "static website hosting is not configured")]
    findings = []
    if not (website.get("IndexDocument") or {}).get("Suffix"):
        findings.append(Finding("website", "no IndexDocument (S3 needs one with routing rules)"))
    if website.get("RedirectAllRequestsTo"):
        findings.append(Finding("website", "RedirectAllRequestsTo is set; routing rules ignored"))
    rules = website.get("RoutingRules") or []
    if len(rules) > MAX_ROUTING_RULES:
        findings.append(Finding("website", f"{len(rules)} routing rules; S3 allows 50"))
    for prefix in spec.prefixes:
        for code in MISS_CODES:
            findings.extend(_check_rule(spec, rules, prefix, code))
    return findings


def _check_cors(spec: BucketSpec, rules: list | None) -> list[Finding]:
    if not rules:
        return [Finding("cors", "no CORS configuration (browsers on other sites cannot fetch)")]
    findings = []
    for origin in spec.cors_origins:
        for method in ("GET", "HEAD"):
            if not any(
                method in (r.get("AllowedMethods") or [])
                and {"*", origin} & set(r.get("AllowedOrigins") or [])
                for r in rules
            ):
                findings.append(Finding("cors", f"{method} from origin {origin!r} not allowed"))
    return findings


def _check_lifecycle(spec: BucketSpec, rules: list | None) -> list[Finding]:
    findings = []
    if not any(
        r.get("Status") == "Enabled" and _rule_prefix(r) == LEASE_PREFIX and r.get("Expiration")
        for r in rules or []
    ):
        findings.append(
            Finding("lifecycle", f"no expiry rule for {LEASE_PREFIX!r}: old leases stay forever")
        )
    if spec.expire_days is None:
        return findings
    for prefix in spec.prefixes:
        days = [
            (r.get("Expiration") or {}).get("Days")
            for r in rules or []
            if r.get("Status") == "Enabled" and _rule_prefix(r) == prefix
        ]
        days = [d for d in days if d is not None]
        if not days:
            findings.append(Finding("lifecycle", f"no enabled expiry rule for {prefix!r}"))
        elif spec.expire_days not in days:
            findings.append(
                Finding(
                    "lifecycle",
                    f"tiles under {prefix!r} expire after {days[0]} days, want {spec.expire_days}",
                )
            )
    return findings


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _grants_public_get(statement: dict, arn: str) -> bool:
    if statement.get("Effect") != "Allow" or statement.get("Condition"):
        return False
    principal = statement.get("Principal")
    if principal != "*" and not (
        isinstance(principal, dict) and "*" in _as_list(principal.get("AWS"))
    ):
        return False
    actions = {a.lower() for a in _as_list(statement.get("Action", []))}
    if not actions & {"s3:getobject", "s3:get*", "s3:*", "*"}:
        return False
    return any(
        r == arn or (r.endswith("*") and arn.startswith(r[:-1]))
        for r in _as_list(statement.get("Resource", []))
    )


def _check_policy(spec: BucketSpec, policy: dict | None) -> list[Finding]:
    statements = _as_list((policy or {}).get("Statement", []))
    findings = []
    for arn in _object_arns(spec.bucket, spec.prefixes, spec.public_keys):
        if not any(_grants_public_get(s, arn) for s in statements if isinstance(s, dict)):
            findings.append(Finding("policy", f"no statement grants public s3:GetObject on {arn}"))
    return findings


def check_bucket(client: Any, spec: BucketSpec) -> list[Finding]:
    """Everything missing or wrong on an existing bucket, compared with `spec`.

    An empty list means the bucket is ready. The tiles' lifecycle is checked only when
    `spec.expire_days` is set (the leases' always); the policy and Block Public Access
    only when `spec.public_read`. Account-wide Block Public Access cannot be seen from here.
    """
    try:
        current = read_current(client, spec.bucket)
    except BucketError as err:
        return [Finding("bucket", str(err))]
    findings = _check_website(spec, current.website)
    findings += _check_cors(spec, current.cors_rules)
    findings += _check_lifecycle(spec, current.lifecycle_rules)
    if spec.public_read:
        findings += _check_policy(spec, current.policy)
        if _blocks_public_policy(current.public_access_block):
            findings.append(
                Finding(
                    "public-access-block",
                    "BlockPublicPolicy/RestrictPublicBuckets are on: the public-read policy "
                    "is refused or ignored",
                )
            )
    return findings
