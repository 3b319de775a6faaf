"""Bucket check: what is missing or wrong on a bucket, one finding per line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from s3maptiler.bucket import spec as specs
from s3maptiler.bucket.setup import read_current, rule_prefix


@dataclass(frozen=True)
class Finding:
    """One thing missing or wrong on a bucket: the `area` (website, cors, lifecycle,
    policy, public-access-block, bucket) and a one-line `problem`."""

    area: str
    problem: str

    def __str__(self) -> str:
        return f"{self.area}: {self.problem}"


def _check_rule(spec: specs.BucketSpec, rules: list[dict], prefix: str, code: str) -> list[Finding]:
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
    want = specs.miss_redirect(spec.tiler_protocol, spec.miss_prefix, prefix, spec.tiler_host)
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


def _check_website(spec: specs.BucketSpec, website: dict | None) -> list[Finding]:
    if not website:
        return [Finding("website", "static website hosting is not configured")]
    findings = []
    if not (website.get("IndexDocument") or {}).get("Suffix"):
        findings.append(Finding("website", "no IndexDocument (S3 needs one with routing rules)"))
    if website.get("RedirectAllRequestsTo"):
        findings.append(Finding("website", "RedirectAllRequestsTo is set; routing rules ignored"))
    rules = website.get("RoutingRules") or []
    if len(rules) > specs.MAX_ROUTING_RULES:
        findings.append(Finding("website", f"{len(rules)} routing rules; S3 allows 50"))
    for prefix in spec.prefixes:
        for code in specs.MISS_CODES:
            findings.extend(_check_rule(spec, rules, prefix, code))
    return findings


def _check_cors(spec: specs.BucketSpec, rules: list | None) -> list[Finding]:
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


def _check_lifecycle(spec: specs.BucketSpec, rules: list | None) -> list[Finding]:
    findings = []
    if not any(
        r.get("Status") == "Enabled"
        and rule_prefix(r) == specs.LEASE_PREFIX
        and r.get("Expiration")
        for r in rules or []
    ):
        findings.append(
            Finding(
                "lifecycle", f"no expiry rule for {specs.LEASE_PREFIX!r}: old leases stay forever"
            )
        )
    if spec.expire_days is None:
        return findings
    for prefix in spec.prefixes:
        days = [
            (r.get("Expiration") or {}).get("Days")
            for r in rules or []
            if r.get("Status") == "Enabled" and rule_prefix(r) == prefix
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


def _check_policy(spec: specs.BucketSpec, policy: dict | None) -> list[Finding]:
    statements = _as_list((policy or {}).get("Statement", []))
    findings = []
    for arn in specs.object_arns(spec.bucket, spec.prefixes, spec.public_keys):
        if not any(_grants_public_get(s, arn) for s in statements if isinstance(s, dict)):
            findings.append(Finding("policy", f"no statement grants public s3:GetObject on {arn}"))
    return findings


def check_bucket(client: Any, spec: specs.BucketSpec) -> list[Finding]:
    """Everything missing or wrong on an existing bucket, compared with `spec`.

    An empty list means the bucket is ready. The tiles' lifecycle is checked only when
    `spec.expire_days` is set (the leases' always); the policy and Block Public Access
    only when `spec.public_read`. Account-wide Block Public Access cannot be seen from here.
    """
    try:
        current = read_current(client, spec.bucket)
    except specs.BucketError as err:
        return [Finding("bucket", str(err))]
    findings = _check_website(spec, current.website)
    findings += _check_cors(spec, current.cors_rules)
    findings += _check_lifecycle(spec, current.lifecycle_rules)
    if spec.public_read:
        findings += _check_policy(spec, current.policy)
        if specs.blocks_public_policy(current.public_access_block):
            findings.append(
                Finding(
                    "public-access-block",
                    "BlockPublicPolicy/RestrictPublicBuckets are on: the public-read policy "
                    "is refused or ignored",
                )
            )
    return findings
