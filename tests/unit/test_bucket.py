"""Bucket documents (pure) and set-up/check against moto's in-process S3."""

from __future__ import annotations

import json

import pytest

from s3maptiler.bucket import spec as b
from s3maptiler.bucket.check import Finding, check_bucket
from s3maptiler.bucket.setup import CurrentConfig, plan_setup, setup_bucket
from s3maptiler.bucket.spec import (
    BucketSpec,
    InvalidSpec,
    PublicAccessBlocked,
    cors_configuration,
    instance_role_policy,
    lifecycle_configuration,
    public_read_policy,
    routing_rules,
    validate_host,
    website_configuration,
)

BUCKET = "tile-cache"
HOST = "tiles-api.example.com"


def spec(**changes) -> BucketSpec:
    values = {"bucket": BUCKET, "tiler_host": HOST, "prefixes": ("tiles/",)}
    values.update(changes)
    return BucketSpec(**values)


# --- routing rules: moto stores them but has no website endpoint, so test the JSON ---------


def test_routing_rules_match_the_documented_redirect_for_404_and_403():
    rules = routing_rules(HOST, ["tiles/"], "miss/")
    assert rules == [
        {
            "Condition": {"KeyPrefixEquals": "tiles/", "HttpErrorCodeReturnedEquals": code},
            "Redirect": {
                "Protocol": "https",
                "HostName": HOST,
                "ReplaceKeyPrefixWith": "miss/tiles/",
                "HttpRedirectCode": "307",
            },
        }
        for code in ("404", "403")
    ]


def test_routing_rules_one_pair_per_prefix_in_order():
    rules = routing_rules(HOST, ["roads/", "aerial/2024/"], "miss/")
    seen = [
        (r["Condition"]["KeyPrefixEquals"], r["Condition"]["HttpErrorCodeReturnedEquals"])
        for r in rules
    ]
    assert seen == [
        ("roads/", "404"),
        ("roads/", "403"),
        ("aerial/2024/", "404"),
        ("aerial/2024/", "403"),
    ]
    assert rules[2]["Redirect"]["ReplaceKeyPrefixWith"] == "miss/aerial/2024/"


def test_empty_prefix_leaves_out_key_prefix_so_s3_prepends_the_miss_prefix():
    rule = routing_rules(HOST, [""], "miss/")[0]
    assert "KeyPrefixEquals" not in rule["Condition"]
    assert rule["Redirect"]["ReplaceKeyPrefixWith"] == "miss/"


def test_website_configuration_has_the_required_index_document():
    doc = website_configuration(spec())
    assert doc["IndexDocument"] == {"Suffix": "index.html"}
    assert len(doc["RoutingRules"]) == 2


def test_redirect_codes_are_strings_in_the_json():
    text = json.dumps(website_configuration(spec()))
    assert '"HttpRedirectCode": "307"' in text
    assert '"HttpErrorCodeReturnedEquals": "403"' in text


def test_more_than_50_rules_is_an_error():
    prefixes = tuple(f"layer{i}/" for i in range(26))
    with pytest.raises(InvalidSpec, match="50"):
        spec(prefixes=prefixes)
    with pytest.raises(InvalidSpec, match="50"):
        routing_rules(HOST, prefixes, "miss/")
    assert len(routing_rules(HOST, prefixes[:25], "miss/")) == 50


@pytest.mark.parametrize(
    "host",
    [
        "https://tiles.example.com",
        "tiles.example.com/path",
        "tiles.example.com:8443",
        "tiles example.com",
        "",
        "-bad.example.com",
        "a..b",
    ],
)
def test_tiler_host_must_be_a_bare_host_name(host):
    with pytest.raises(InvalidSpec):
        validate_host(host)


def test_tiler_host_is_lowercased():
    assert validate_host(" Tiles-API.Example.com ") == "tiles-api.example.com"


@pytest.mark.parametrize("prefix", ["/tiles/", "tiles", "tiles//x/", "../tiles/", "ti les/"])
def test_bad_prefixes_are_refused(prefix):
    with pytest.raises(InvalidSpec):
        spec(prefixes=(prefix,))


def test_prefix_under_the_miss_prefix_is_refused():
    with pytest.raises(InvalidSpec, match="miss prefix"):
        spec(prefixes=("miss/tiles/",))


def test_duplicate_prefixes_count_once():
    assert spec(prefixes=("tiles/", "tiles/")).prefixes == ("tiles/",)


# --- the other documents ------------------------------------------------------------------


def test_cors_allows_get_and_head_from_the_origins():
    rule = cors_configuration(["https://map.example.com"])["CORSRules"][0]
    assert sorted(rule["AllowedMethods"]) == ["GET", "HEAD"]
    assert rule["AllowedOrigins"] == ["https://map.example.com"]
    assert "PUT" not in rule["AllowedMethods"]


def test_bad_cors_origin_is_refused():
    with pytest.raises(InvalidSpec):
        spec(cors_origins=("map.example.com/x",))


def test_lifecycle_expires_each_prefix_and_always_the_leases():
    doc = lifecycle_configuration(["tiles/", "roads/"], 30)
    assert [(r["Filter"]["Prefix"], r["Expiration"]["Days"]) for r in doc["Rules"]] == [
        ("_leases/", 1),  # a finished render kept for seconds: gone after S3's least, a day
        ("tiles/", 30),
        ("roads/", 30),
    ]
    assert all(r["Status"] == "Enabled" for r in doc["Rules"])
    assert [r["Filter"] for r in lifecycle_configuration(["tiles/"], None)["Rules"]] == [
        {"Prefix": "_leases/"}
    ]


def test_public_read_policy_grants_get_object_on_the_prefixes_only():
    doc = public_read_policy(BUCKET, ["tiles/", "roads/"])
    (statement,) = doc["Statement"]
    assert statement["Principal"] == "*"
    assert statement["Action"] == "s3:GetObject"
    assert statement["Resource"] == [
        f"arn:aws:s3:::{BUCKET}/tiles/*",
        f"arn:aws:s3:::{BUCKET}/roads/*",
    ]


def test_instance_role_policy_is_least_privilege():
    doc = instance_role_policy(BUCKET, ["tiles/"])
    actions = {
        (a, r)
        for s in doc["Statement"]
        for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
        for r in (s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])
    }
    assert actions == {
        ("s3:GetObject", f"arn:aws:s3:::{BUCKET}/tiles/*"),
        ("s3:PutObject", f"arn:aws:s3:::{BUCKET}/tiles/*"),
        # the instances' metatile leases
        ("s3:GetObject", f"arn:aws:s3:::{BUCKET}/_leases/*"),
        ("s3:PutObject", f"arn:aws:s3:::{BUCKET}/_leases/*"),
        # so that a missing tile answers 404, not 403
        ("s3:ListBucket", f"arn:aws:s3:::{BUCKET}"),
    }
    with_acl = json.dumps(instance_role_policy(BUCKET, ["tiles/"], acl=True))
    assert "s3:PutObjectAcl" in with_acl
    assert "s3:PutObjectAcl" not in json.dumps(doc)


# --- planning and merging -------------------------------------------------------------------


def test_plan_without_expiry_sends_the_leases_lifecycle_only():
    steps = plan_setup(spec())
    assert [step.name for step in steps] == ["website", "cors", "lifecycle", "policy"]
    assert [r["Filter"]["Prefix"] for r in steps[2].document["Rules"]] == ["_leases/"]
    names = [step.name for step in plan_setup(spec(expire_days=30, public_read=False))]
    assert names == ["website", "cors", "lifecycle"]


def test_plan_keeps_foreign_routing_rules_after_ours():
    foreign = {
        "Condition": {"KeyPrefixEquals": "docs/", "HttpErrorCodeReturnedEquals": "404"},
        "Redirect": {"ReplaceKeyWith": "docs/index.html"},
    }
    stale = routing_rules("old-host.example.com", ["tiles/"], "miss/")
    current = CurrentConfig(
        website={
            "IndexDocument": {"Suffix": "home.html"},
            "ErrorDocument": {"Key": "error.html"},
            "RoutingRules": [foreign, *stale],
        }
    )
    website = plan_setup(spec(), current)[0].document
    assert website["IndexDocument"] == {"Suffix": "home.html"}
    assert website["ErrorDocument"] == {"Key": "error.html"}
    assert website["RoutingRules"] == [*routing_rules(HOST, ["tiles/"], "miss/"), foreign]


def test_plan_with_block_public_access_on_refuses_without_the_flag():
    current = CurrentConfig(
        public_access_block={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        }
    )
    with pytest.raises(PublicAccessBlocked, match="--relax-public-access-block"):
        plan_setup(spec(), current)
    steps = plan_setup(spec(relax_public_access_block=True), current)
    names = ["website", "cors", "lifecycle", "public-access-block", "policy"]
    assert [s.name for s in steps] == names
    assert steps[3].document == {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": False,
        "RestrictPublicBuckets": False,
    }
    # Not public: Block Public Access is none of our business.
    steps = plan_setup(spec(public_read=False), current)
    assert [s.name for s in steps] == ["website", "cors", "lifecycle"]


# --- against moto -----------------------------------------------------------------------------


def test_setup_stores_every_document(s3):
    setup_bucket(s3, spec(expire_days=30, cors_origins=("https://map.example.com",)))

    website = s3.get_bucket_website(Bucket=BUCKET)
    assert website["IndexDocument"] == {"Suffix": "index.html"}
    assert website["RoutingRules"] == routing_rules(HOST, ["tiles/"], "miss/")

    cors = s3.get_bucket_cors(Bucket=BUCKET)["CORSRules"]
    assert cors[0]["AllowedOrigins"] == ["https://map.example.com"]
    assert sorted(cors[0]["AllowedMethods"]) == ["GET", "HEAD"]

    rules = s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]
    assert [(r["Filter"], r["Expiration"], r["Status"]) for r in rules] == [
        ({"Prefix": "_leases/"}, {"Days": 1}, "Enabled"),
        ({"Prefix": "tiles/"}, {"Days": 30}, "Enabled"),
    ]

    policy = json.loads(s3.get_bucket_policy(Bucket=BUCKET)["Policy"])
    assert policy["Statement"] == public_read_policy(BUCKET, ["tiles/"])["Statement"]
    assert check_bucket(s3, spec(expire_days=30, cors_origins=("https://map.example.com",))) == []


def test_dry_run_sends_nothing(s3):
    steps = setup_bucket(s3, spec(expire_days=7), dry_run=True)
    assert [s.name for s in steps] == ["website", "cors", "lifecycle", "policy"]
    with pytest.raises(s3.exceptions.ClientError):
        s3.get_bucket_website(Bucket=BUCKET)
    with pytest.raises(s3.exceptions.ClientError):
        s3.get_bucket_policy(Bucket=BUCKET)


def test_setup_twice_is_idempotent_and_keeps_foreign_settings(s3):
    s3.put_bucket_lifecycle_configuration(
        Bucket=BUCKET,
        LifecycleConfiguration={
            "Rules": [
                {
                    "ID": "logs",
                    "Filter": {"Prefix": "logs/"},
                    "Status": "Enabled",
                    "Expiration": {"Days": 3},
                }
            ]
        },
    )
    other = {
        "Sid": "Uploader",
        "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
        "Action": "s3:PutObject",
        "Resource": f"arn:aws:s3:::{BUCKET}/uploads/*",
    }
    s3.put_bucket_policy(
        Bucket=BUCKET, Policy=json.dumps({"Version": "2012-10-17", "Statement": [other]})
    )
    setup_bucket(s3, spec(expire_days=30))
    setup_bucket(s3, spec(expire_days=60))

    rules = s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]
    expiry = {r["Filter"]["Prefix"]: r["Expiration"]["Days"] for r in rules}
    assert expiry == {"_leases/": 1, "tiles/": 60, "logs/": 3}
    statements = json.loads(s3.get_bucket_policy(Bucket=BUCKET)["Policy"])["Statement"]
    assert [s["Sid"] for s in statements] == ["Uploader", b.POLICY_SID]
    assert len(s3.get_bucket_website(Bucket=BUCKET)["RoutingRules"]) == 2


def test_setup_refuses_before_sending_anything_when_public_access_is_blocked(s3):
    s3.put_public_access_block(
        Bucket=BUCKET,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    with pytest.raises(PublicAccessBlocked):
        setup_bucket(s3, spec())
    with pytest.raises(s3.exceptions.ClientError):
        s3.get_bucket_website(Bucket=BUCKET)

    setup_bucket(s3, spec(relax_public_access_block=True))
    bpa = s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"]
    assert bpa == {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": False,
        "RestrictPublicBuckets": False,
    }
    assert check_bucket(s3, spec()) == []


def test_check_on_a_bare_bucket_lists_every_missing_piece(s3):
    findings = check_bucket(s3, spec(expire_days=30))
    areas = [f.area for f in findings]
    assert areas == ["website", "cors", "lifecycle", "lifecycle", "policy"]
    assert "_leases/" in str(findings[2]) and "tiles/" in str(findings[3])
    assert all(isinstance(f, Finding) and "\n" not in str(f) for f in findings)


def test_check_reports_a_301_redirect_and_a_missing_403_rule(s3):
    rules = routing_rules(HOST, ["tiles/"], "miss/")[:1]  # 404 only
    rules[0]["Redirect"]["HttpRedirectCode"] = "301"
    s3.put_bucket_website(
        Bucket=BUCKET,
        WebsiteConfiguration={"IndexDocument": {"Suffix": "index.html"}, "RoutingRules": rules},
    )
    problems = [str(f) for f in check_bucket(s3, spec(public_read=False))]
    assert any("HttpRedirectCode is '301', want '307'" in p for p in problems)
    assert any("403 misses under 'tiles/'" in p for p in problems)


def test_check_reports_wrong_host_and_http(s3):
    rules = routing_rules("old.example.com", ["tiles/"], "miss/")
    for rule in rules:
        rule["Redirect"]["Protocol"] = "http"
    s3.put_bucket_website(
        Bucket=BUCKET,
        WebsiteConfiguration={"IndexDocument": {"Suffix": "index.html"}, "RoutingRules": rules},
    )
    problems = [str(f) for f in check_bucket(s3, spec(public_read=False))]
    assert sum("HostName is 'old.example.com'" in p for p in problems) == 2
    assert sum("Protocol is 'http', want 'https'" in p for p in problems) == 2


def test_check_flags_block_public_access_and_a_too_narrow_policy(s3):
    setup_bucket(s3, spec())
    s3.put_public_access_block(
        Bucket=BUCKET,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    problems = check_bucket(s3, spec(prefixes=("tiles/", "roads/")))
    assert [f.area for f in problems if f.area != "website"] == ["policy", "public-access-block"]
    assert "roads/*" in next(str(f) for f in problems if f.area == "policy")


def test_check_of_a_missing_bucket_is_one_finding(s3):
    findings = check_bucket(s3, spec(bucket="no-such-bucket"))
    assert [f.area for f in findings] == ["bucket"]
    assert "does not exist" in findings[0].problem


def test_dry_run_without_a_readable_bucket_still_shows_the_documents(s3, caplog):
    steps = setup_bucket(s3, spec(bucket="not-created-yet"), dry_run=True)
    assert [s.name for s in steps] == ["website", "cors", "lifecycle", "policy"]
    assert "not-created-yet" in caplog.text
    with pytest.raises(b.BucketNotFound):
        setup_bucket(s3, spec(bucket="not-created-yet"))


# --- a tiler named by URL: plain http and a port, for a service on this machine -------------


@pytest.mark.parametrize(
    "url, expected",
    [
        ("http://127.0.0.1:8000", ("http", "127.0.0.1:8000")),
        ("http://localhost:8000/", ("http", "localhost:8000")),
        ("HTTPS://Tiles-API.example.com", ("https", "tiles-api.example.com")),
        ("https://tiles-api.example.com:8443", ("https", "tiles-api.example.com:8443")),
    ],
)
def test_a_tiler_url_gives_protocol_and_host(url, expected):
    assert b.parse_tiler_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "127.0.0.1:8000",
        "ftp://host",
        "http://",
        "http://host/tiles-api",
        "http://host?x=1",
        "http://user@host",
        "http://host:0",
        "http://host:65536",
        "http://host:8o",
        "http://ho st",
        None,
    ],
)
def test_a_bad_tiler_url_is_refused_in_one_line(url):
    with pytest.raises(InvalidSpec) as info:
        b.parse_tiler_url(url)
    assert "\n" not in str(info.value)


def test_a_local_tiler_gets_http_rules_and_check_expects_them(s3):
    local = spec(tiler_host="127.0.0.1:8000", tiler_protocol="http", public_read=False)
    redirect = website_configuration(local)["RoutingRules"][0]["Redirect"]
    assert (redirect["Protocol"], redirect["HostName"]) == ("http", "127.0.0.1:8000")
    setup_bucket(s3, local)
    assert check_bucket(s3, local) == []
    # The same bucket against the production default: https is wanted.
    problems = [str(f) for f in check_bucket(s3, spec(public_read=False))]
    assert sum("Protocol is 'http', want 'https'" in p for p in problems) == 2
    with pytest.raises(InvalidSpec):
        spec(tiler_protocol="ftp")


def test_published_documents_outside_the_prefixes_are_made_public_and_checked(s3):
    keys = ("1.0.0/tilemapservice.xml", "wmts/1.0.0/WMTSCapabilities.xml")
    setup_bucket(s3, spec(public_keys=keys))
    statement = json.loads(s3.get_bucket_policy(Bucket=BUCKET)["Policy"])["Statement"][0]
    assert statement["Resource"] == [
        f"arn:aws:s3:::{BUCKET}/tiles/*",
        f"arn:aws:s3:::{BUCKET}/1.0.0/tilemapservice.xml",
        f"arn:aws:s3:::{BUCKET}/wmts/1.0.0/WMTSCapabilities.xml",
    ]
    assert check_bucket(s3, spec(public_keys=keys)) == []
    # A policy made before: the documents are reported unreadable.
    setup_bucket(s3, spec())
    s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(public_read_policy(BUCKET, ["tiles/"])))
    problems = [str(f) for f in check_bucket(s3, spec(public_keys=keys))]
    assert len(problems) == 2 and all(
        "WMTSCapabilities" in p or "tilemapservice" in p for p in problems
    )
