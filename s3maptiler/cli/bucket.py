"""``s3maptiler bucket setup|check|iam-policy``: make a bucket a self-completing tile
cache, report what is missing, print the service role's IAM policy."""

from __future__ import annotations

from collections.abc import Callable

import click

from s3maptiler.bucket import publish as publish_docs
from s3maptiler.bucket import spec as bucket_docs
from s3maptiler.bucket.check import check_bucket
from s3maptiler.bucket.setup import setup_bucket
from s3maptiler.cli.common import (
    EXIT_FAILED,
    ConfigProblem,
    Environment,
    Failed,
    bucket_name,
    checked_prefix,
    environment,
    json_text,
    s3_client,
    s3_options,
)


@click.group("bucket")
def bucket_group() -> None:
    """Set up or check a bucket: website redirects, CORS, lifecycle, public read."""


def bucket_spec_options(command: Callable) -> Callable:
    """Options describing the wanted bucket, shared by setup and check."""
    for decorator in reversed(
        [
            s3_options,
            click.option(
                "--prefix",
                "prefixes",
                multiple=True,
                metavar="PREFIX",
                help="Tile prefix (repeatable; default: every configured layer's, TILE_PREFIX, "
                "and arcgis/rest/services/ for ArcGIS REST tile URLs).",
            ),
            click.option(
                "--miss-prefix",
                metavar="PREFIX",
                help="Path prefix of redirected misses (default: MISS_PREFIX, miss/).",
            ),
            click.option(
                "--expire-days",
                type=click.IntRange(1),
                help="Lifecycle: tiles expire this many days after their last write.",
            ),
            click.option(
                "--cors-origin",
                "cors_origins",
                multiple=True,
                metavar="ORIGIN",
                help="Origin allowed to GET/HEAD (repeatable; default: *).",
            ),
            click.option(
                "--public-read/--no-public-read",
                default=True,
                show_default=True,
                help="Grant public s3:GetObject on the prefixes through the bucket policy.",
            ),
        ]
    ):
        command = decorator(command)
    return command


def _tiler(tiler_host: str | None, tiler_url: str | None) -> tuple[str, str | None]:
    """(protocol, host[:port]) from --tiler-host or --tiler-url (at most one)."""
    if tiler_host and tiler_url:
        raise ConfigProblem("give --tiler-host or --tiler-url, not both")
    if tiler_url is None:
        return "https", tiler_host
    try:
        protocol, host = bucket_docs.parse_tiler_url(tiler_url)
    except bucket_docs.InvalidSpec as err:
        raise ConfigProblem(str(err)) from None
    if protocol == "http" and host.split(":")[0] not in _LOCAL_HOSTS:
        click.echo(
            f"warning: misses will be redirected over plain http to {host}; plain http is "
            "meant for a tiler on this machine, use https (--tiler-host) elsewhere",
            err=True,
        )
    return protocol, host


# Hosts for which a plain-http tiler is expected (a service on this machine).
_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


TILER_URL_HELP = (
    "The service's URL instead of --tiler-host: plain http and a port for local use, "
    "e.g. http://127.0.0.1:8000 (the default is https to --tiler-host)."
)


def _spec(
    env: Environment,
    bucket: str | None,
    tiler: tuple[str, str | None],
    prefixes: tuple[str, ...],
    miss_prefix: str | None,
    expire_days: int | None,
    cors_origins: tuple[str, ...],
    public_read: bool,
    relax: bool = False,
) -> bucket_docs.BucketSpec:
    protocol, tiler_host = tiler
    try:
        return bucket_docs.BucketSpec(
            bucket=bucket_name(env, bucket),
            tiler_host=tiler_host,
            tiler_protocol=protocol,
            prefixes=prefixes or env.prefixes(),
            miss_prefix=miss_prefix or env.get("MISS_PREFIX") or "miss/",
            expire_days=expire_days,
            cors_origins=cors_origins or ("*",),
            public_read=public_read,
            relax_public_access_block=relax,
            # The service documents `publish` writes outside the tile prefixes.
            public_keys=publish_docs.SERVICE_DOCUMENT_KEYS,
        )
    except bucket_docs.InvalidSpec as err:
        raise ConfigProblem(str(err)) from None


@bucket_group.command("setup")
@click.option("--tiler-host", metavar="HOST", help="The service's host name (https).")
@click.option("--tiler-url", metavar="URL", help=TILER_URL_HELP)
@bucket_spec_options
@click.option(
    "--relax-public-access-block",
    is_flag=True,
    help="Allow turning off BlockPublicPolicy and RestrictPublicBuckets for public read.",
)
@click.option("--dry-run", is_flag=True, help="Print every JSON document; send nothing.")
@click.pass_context
def bucket_setup(
    ctx: click.Context,
    tiler_host: str | None,
    tiler_url: str | None,
    bucket: str | None,
    endpoint_url: str | None,
    prefixes: tuple[str, ...],
    miss_prefix: str | None,
    expire_days: int | None,
    cors_origins: tuple[str, ...],
    public_read: bool,
    relax_public_access_block: bool,
    dry_run: bool,
) -> None:
    """Make a bucket send tile misses to the tiler (307, https) and serve tiles.

    Routing rules for 404 and 403 misses under each prefix, CORS, optional lifecycle
    expiry and a public-read bucket policy (never ACLs). Settings of the bucket that
    are not s3maptiler's are kept. Prints the IAM policy for the service's role.
    """
    env = environment(ctx)
    if not tiler_host and not tiler_url:
        raise ConfigProblem("where do misses go? pass --tiler-host HOST or --tiler-url URL")
    spec = _spec(
        env,
        bucket,
        _tiler(tiler_host, tiler_url),
        prefixes,
        miss_prefix,
        expire_days,
        cors_origins,
        public_read,
        relax_public_access_block,
    )
    client = s3_client(env, endpoint_url, pool=2)
    try:
        steps = setup_bucket(client, spec, dry_run=dry_run)
    except bucket_docs.InvalidSpec as err:
        raise ConfigProblem(str(err)) from None
    except bucket_docs.BucketError as err:
        raise Failed(str(err)) from None
    for step in steps:
        if dry_run:
            click.echo(f"# would send {step.operation} (s3://{spec.bucket}): {step.summary}")
            click.echo(json_text(step.document))
        else:
            click.echo(f"{step.name}: {step.summary}")
        if step.name == "public-access-block":
            click.echo(
                f"warning: Block Public Access on {spec.bucket} "
                f"{'would be' if dry_run else 'was'} relaxed "
                "(BlockPublicPolicy=false, RestrictPublicBuckets=false)",
                err=True,
            )
    acl = bool(env.get("S3_ACL"))
    click.echo("# IAM policy for the service's instance role (least privilege):")
    click.echo(json_text(bucket_docs.instance_role_policy(spec.bucket, spec.prefixes, acl=acl)))
    click.echo(
        f"bucket setup{' (dry run)' if dry_run else ''} s3://{spec.bucket}: "
        f"{len(steps)} documents {'to send' if dry_run else 'sent'}"
    )


@bucket_group.command("check")
@click.option("--tiler-host", metavar="HOST", help="The host redirects must go to.")
@click.option("--tiler-url", metavar="URL", help=TILER_URL_HELP)
@bucket_spec_options
@click.pass_context
def bucket_check(
    ctx: click.Context,
    tiler_host: str | None,
    tiler_url: str | None,
    bucket: str | None,
    endpoint_url: str | None,
    prefixes: tuple[str, ...],
    miss_prefix: str | None,
    expire_days: int | None,
    cors_origins: tuple[str, ...],
    public_read: bool,
) -> None:
    """Report what is missing or wrong on a bucket, one finding per line; exit 1 if any."""
    env = environment(ctx)
    spec = _spec(
        env,
        bucket,
        _tiler(tiler_host, tiler_url),
        prefixes,
        miss_prefix,
        expire_days,
        cors_origins,
        public_read,
    )
    findings = check_bucket(s3_client(env, endpoint_url, pool=2), spec)
    for finding in findings:
        click.echo(str(finding))
    if findings:
        click.echo(f"bucket check s3://{spec.bucket}: {len(findings)} problems")
        ctx.exit(EXIT_FAILED)
    click.echo(f"bucket check s3://{spec.bucket}: ok")


@bucket_group.command("iam-policy")
@click.option("--bucket", metavar="NAME", help="Bucket (default: BUCKET_NAME).")
@click.option("--prefix", "prefixes", multiple=True, metavar="PREFIX", help="Tile prefix.")
@click.pass_context
def bucket_iam_policy(ctx: click.Context, bucket: str | None, prefixes: tuple[str, ...]) -> None:
    """Print the least-privilege IAM policy for the service's instance role."""
    env = environment(ctx)
    chosen = tuple(checked_prefix(p) for p in prefixes) or env.prefixes()
    acl = bool(env.get("S3_ACL"))
    click.echo(
        json_text(bucket_docs.instance_role_policy(bucket_name(env, bucket), chosen, acl=acl))
    )
