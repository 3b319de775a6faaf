"""``s3maptiler bucket setup|check|iam-policy``: make a bucket a self-completing tile
cache, report what is missing, print the service role's IAM policy."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from s3maptiler.bucket import publish as publish_docs
from s3maptiler.bucket import spec as bucket_docs
from s3maptiler.bucket.check import check_bucket
from s3maptiler.bucket.setup import setup_bucket
from s3maptiler.cli import console, context, errors
from s3maptiler.config import checked_prefix


@click.group("bucket")
def bucket_group() -> None:
    """Set up or check a bucket: website redirects, CORS, lifecycle, public read."""


@dataclass(frozen=True)
class WantedBucket:
    """The bucket the options of ``setup`` and ``check`` describe."""

    tiler_host: str | None
    tiler_url: str | None
    s3: context.S3Place
    prefixes: tuple[str, ...]
    miss_prefix: str | None
    expire_days: int | None
    cors_origins: tuple[str, ...]
    public_read: bool

    def spec(self, env: context.Environment, relax: bool = False) -> bucket_docs.BucketSpec:
        """The BucketSpec, each option defaulting to the service's environment."""
        protocol, tiler_host = _tiler(self.tiler_host, self.tiler_url)
        try:
            return bucket_docs.BucketSpec(
                bucket=context.bucket_name(env, self.s3.bucket),
                tiler_host=tiler_host,
                tiler_protocol=protocol,
                prefixes=self.prefixes or context.prefixes_of(env),
                miss_prefix=self.miss_prefix or env.miss_prefix,
                expire_days=self.expire_days,
                cors_origins=self.cors_origins or ("*",),
                public_read=self.public_read,
                relax_public_access_block=relax,
                # The service documents `publish` writes outside the tile prefixes.
                public_keys=publish_docs.SERVICE_DOCUMENT_KEYS,
            )
        except bucket_docs.InvalidSpec as err:
            raise errors.ConfigProblem(str(err)) from None


def bucket_spec_options(tiler_host_help: str) -> Callable[[Callable], Callable]:
    """The options describing the wanted bucket, handed to the command as one ``wanted``
    argument (:class:`WantedBucket`); shared by setup and check."""

    def decorate(command: Callable) -> Callable:
        @functools.wraps(command)
        def run(*args: Any, **options: Any) -> Any:
            names = [f.name for f in dataclasses.fields(WantedBucket)]
            wanted = WantedBucket(**{name: options.pop(name) for name in names})
            return command(*args, wanted=wanted, **options)

        for decorator in reversed(
            [
                click.option("--tiler-host", metavar="HOST", help=tiler_host_help),
                click.option("--tiler-url", metavar="URL", help=TILER_URL_HELP),
                context.s3_options,
                click.option(
                    "--prefix",
                    "prefixes",
                    multiple=True,
                    metavar="PREFIX",
                    help="Tile prefix (repeatable; default: every configured layer's, "
                    "TILE_PREFIX, and arcgis/rest/services/ for ArcGIS REST tile URLs).",
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
            run = decorator(run)
        return run

    return decorate


def _tiler(tiler_host: str | None, tiler_url: str | None) -> tuple[str, str | None]:
    """(protocol, host[:port]) from --tiler-host or --tiler-url (at most one)."""
    if tiler_host and tiler_url:
        raise errors.ConfigProblem("give --tiler-host or --tiler-url, not both")
    if tiler_url is None:
        return "https", tiler_host
    try:
        protocol, host = bucket_docs.parse_tiler_url(tiler_url)
    except bucket_docs.InvalidSpec as err:
        raise errors.ConfigProblem(str(err)) from None
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


@bucket_group.command("setup")
@bucket_spec_options("The service's host name (https).")
@click.option(
    "--relax-public-access-block",
    is_flag=True,
    help="Allow turning off BlockPublicPolicy and RestrictPublicBuckets for public read.",
)
@click.option("--dry-run", is_flag=True, help="Print every JSON document; send nothing.")
@click.pass_context
def bucket_setup(
    ctx: click.Context, wanted: WantedBucket, relax_public_access_block: bool, dry_run: bool
) -> None:
    """Make a bucket send tile misses to the tiler (307, https) and serve tiles.

    Routing rules for 404 and 403 misses under each prefix, CORS, optional lifecycle
    expiry and a public-read bucket policy (never ACLs). Settings of the bucket that
    are not s3maptiler's are kept. Prints the IAM policy for the service's role.
    """
    env = context.environment(ctx)
    if not wanted.tiler_host and not wanted.tiler_url:
        raise errors.ConfigProblem("where do misses go? pass --tiler-host HOST or --tiler-url URL")
    spec = wanted.spec(env, relax_public_access_block)
    client = context.s3_client(env, wanted.s3.endpoint_url, pool=2)
    try:
        steps = setup_bucket(client, spec, dry_run=dry_run)
    except bucket_docs.InvalidSpec as err:
        raise errors.ConfigProblem(str(err)) from None
    except bucket_docs.BucketError as err:
        raise errors.Failed(str(err)) from None
    for step in steps:
        if dry_run:
            click.echo(f"# would send {step.operation} (s3://{spec.bucket}): {step.summary}")
            click.echo(console.json_text(step.document))
        else:
            click.echo(f"{step.name}: {step.summary}")
        if step.name == "public-access-block":
            click.echo(
                f"warning: Block Public Access on {spec.bucket} "
                f"{'would be' if dry_run else 'was'} relaxed "
                "(BlockPublicPolicy=false, RestrictPublicBuckets=false)",
                err=True,
            )
    acl = bool(env.s3_acl)
    click.echo("# IAM policy for the service's instance role (least privilege):")
    click.echo(
        console.json_text(bucket_docs.instance_role_policy(spec.bucket, spec.prefixes, acl=acl))
    )
    click.echo(
        f"bucket setup{' (dry run)' if dry_run else ''} s3://{spec.bucket}: "
        f"{len(steps)} documents {'to send' if dry_run else 'sent'}"
    )


@bucket_group.command("check")
@bucket_spec_options("The host redirects must go to.")
@click.pass_context
def bucket_check(ctx: click.Context, wanted: WantedBucket) -> None:
    """Report what is missing or wrong on a bucket, one finding per line; exit 1 if any."""
    env = context.environment(ctx)
    spec = wanted.spec(env)
    findings = check_bucket(context.s3_client(env, wanted.s3.endpoint_url, pool=2), spec)
    for finding in findings:
        click.echo(str(finding))
    if findings:
        click.echo(f"bucket check s3://{spec.bucket}: {len(findings)} problems")
        ctx.exit(errors.EXIT_FAILED)
    click.echo(f"bucket check s3://{spec.bucket}: ok")


@bucket_group.command("iam-policy")
@click.option("--bucket", metavar="NAME", help="Bucket (default: BUCKET_NAME).")
@click.option("--prefix", "prefixes", multiple=True, metavar="PREFIX", help="Tile prefix.")
@click.pass_context
def bucket_iam_policy(ctx: click.Context, bucket: str | None, prefixes: tuple[str, ...]) -> None:
    """Print the least-privilege IAM policy for the service's instance role."""
    env = context.environment(ctx)
    chosen = tuple(
        checked_prefix("--prefix", p, errors.ConfigProblem) for p in prefixes
    ) or context.prefixes_of(env)
    acl = bool(env.s3_acl)
    click.echo(
        console.json_text(
            bucket_docs.instance_role_policy(context.bucket_name(env, bucket), chosen, acl=acl)
        )
    )
