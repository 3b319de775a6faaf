"""Bucket set-up: the bucket's settings read, merged with the spec's documents (rules,
lifecycle rules and policy statements that are not ours are kept) and sent. Block
Public Access is relaxed only when the spec says so explicitly, and only the two
settings that stop a public bucket policy."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from s3maptiler.bucket.spec import (
    CORS_RULE_ID,
    LEASE_EXPIRY_DAYS,
    LEASE_PREFIX,
    MAX_ROUTING_RULES,
    MISS_CODES,
    POLICY_SID,
    BucketAccessDenied,
    BucketError,
    BucketNotFound,
    BucketSpec,
    InvalidSpec,
    PublicAccessBlocked,
    SetupFailed,
    blocks_public_policy,
    cors_configuration,
    lifecycle_configuration,
    object_arns,
    public_read_policy,
    relaxed_public_access_block,
    website_configuration,
)
from s3maptiler.storage.s3 import BUCKET_NOT_FOUND_CODES, error_code

log = logging.getLogger(__name__)


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


def rule_prefix(rule: dict) -> str | None:
    filt = rule.get("Filter")
    if filt is None:
        return rule.get("Prefix")
    return filt.get("Prefix") if set(filt) == {"Prefix"} else None


def _merged_lifecycle(spec: BucketSpec, current: list | None) -> dict:
    ours = lifecycle_configuration(spec.prefixes, spec.expire_days)
    ids = {rule["ID"] for rule in ours["Rules"]}
    prefixes = {rule_prefix(rule) for rule in ours["Rules"]}
    others = [
        rule
        for rule in current or []
        # An older expiry rule on exactly our prefix would fight ours: replace it too.
        if rule.get("ID") not in ids
        and not (rule.get("Expiration") and rule_prefix(rule) in prefixes)
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
    code, _ = error_code(err)
    message = err.response.get("Error", {}).get("Message") or code
    if code in BUCKET_NOT_FOUND_CODES:
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
        if blocks_public_policy(current.public_access_block):
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
                + ", ".join(object_arns(b, spec.prefixes, spec.public_keys)),
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
