"""What the two local S3s do, where the project relies on it or works around it.

The same calls against moto's server and LocalStack's S3 (docs/localstack.md has the
table). These are facts about the pinned versions, not about s3maptiler: when one of
them fails after a version bump, the emulator changed, and so may what the other tests
can prove (for example, a LocalStack that answers a miss with 403 would let the browser
test run the 403 routing rule for real).
"""

from __future__ import annotations

import json
import uuid

import pytest
import requests
from botocore.exceptions import ClientError

from s3maptiler.bucket.spec import public_read_policy
from tests.servers import s3_client

pytestmark = pytest.mark.integration


client = s3_client


@pytest.fixture(params=["moto", "localstack"])
def s3(request):
    server = request.getfixturevalue("moto_server" if request.param == "moto" else "localstack")
    bucket = f"probe-{uuid.uuid4().hex[:10]}"
    c = client(server.url)
    c.create_bucket(Bucket=bucket)
    return request.param, server, c, bucket


def test_both_refuse_a_conditional_write_over_an_existing_key_with_412(s3):
    # The service's uploads send IfNoneMatch="*" and take 412 as "already stored".
    _, _, c, bucket = s3
    c.put_object(Bucket=bucket, Key="tiles/1.png", Body=b"a")
    with pytest.raises(ClientError) as info:
        c.put_object(Bucket=bucket, Key="tiles/1.png", Body=b"b", IfNoneMatch="*")
    assert info.value.response["Error"]["Code"] == "PreconditionFailed"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert c.get_object(Bucket=bucket, Key="tiles/1.png")["Body"].read() == b"a"


def test_only_localstack_reports_block_public_access_on_a_new_bucket(s3):
    name, _, c, bucket = s3
    if name == "localstack":  # as S3 does since April 2023
        bpa = c.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        assert all(bpa.values()) and len(bpa) == 4
    else:
        with pytest.raises(ClientError, match="NoSuchPublicAccessBlockConfiguration"):
            c.get_public_access_block(Bucket=bucket)
    # Neither enforces it: a public policy is accepted all the same.
    policy = public_read_policy(bucket, [""])
    c.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))


def test_neither_enforces_a_policy_that_denies_listing(s3):
    # On S3, an anonymous GET of a missing key without s3:ListBucket is a 403.
    _, server, c, bucket = s3
    deny = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:ListBucket",
                "Resource": f"arn:aws:s3:::{bucket}",
            }
        ],
    }
    c.put_bucket_policy(Bucket=bucket, Policy=json.dumps(deny))
    assert requests.get(f"{server.url}/{bucket}/tiles/none.png", timeout=10).status_code == 404


def test_localstack_website_answers_like_s3_in_some_ways_and_not_in_others(localstack):
    bucket = f"probe-{uuid.uuid4().hex[:10]}"
    c = localstack.client()
    c.create_bucket(Bucket=bucket)
    c.put_object(
        Bucket=bucket,
        Key="tiles/1.png",
        Body=b"x",
        ContentType="image/png",
        CacheControl="public, max-age=60",
    )
    c.put_bucket_cors(
        Bucket=bucket,
        CORSConfiguration={"CORSRules": [{"AllowedMethods": ["GET"], "AllowedOrigins": ["*"]}]},
    )
    rule = {
        "Condition": {"HttpErrorCodeReturnedEquals": "404"},
        "Redirect": {
            "HostName": "127.0.0.1:9",
            "Protocol": "http",
            "ReplaceKeyPrefixWith": "miss/",
            "HttpRedirectCode": "307",
        },
    }
    c.put_bucket_website(
        Bucket=bucket,
        WebsiteConfiguration={"IndexDocument": {"Suffix": "index.html"}, "RoutingRules": [rule]},
    )
    origin = {"Origin": "http://map.test"}
    hit = localstack.website_get(bucket, "/tiles/1.png", origin)
    assert hit.status_code == 200 and hit.headers["Access-Control-Allow-Origin"] == "*"
    # S3 would send the object's Cache-Control, Last-Modified and Content-Length.
    assert {"Cache-Control", "Last-Modified", "Content-Length"}.isdisjoint(hit.headers)
    # S3 allows HEAD on a website endpoint.
    head = requests.head(
        localstack.url + "/tiles/1.png", headers={"Host": localstack.website_host(bucket)}
    )
    assert head.status_code == 405
    # The 307 carries the bucket's CORS, as a canvas client needs.
    miss = localstack.website_get(bucket, "/tiles/none.png", origin)
    assert miss.headers["Access-Control-Allow-Origin"] == "*"
    # A rule without KeyPrefixEquals: S3 prepends ReplaceKeyPrefixWith to the key;
    # LocalStack prepends it to the whole URL.
    assert (miss.status_code, miss.headers["Location"]) == (
        307,
        "miss/http://127.0.0.1:9/tiles/none.png",
    )
