"""``s3maptiler publish``: the TMS, WMTS and ArcGIS documents of every layer, into the
bucket beside the tiles."""

from __future__ import annotations

import click
from botocore.exceptions import BotoCoreError, ClientError

from s3maptiler.bucket import publish as publish_docs
from s3maptiler.cli import context, errors


@click.command("publish")
@context.s3_options
@click.option(
    "--base-url",
    metavar="URL",
    help="Public URL of the bucket's tiles: website endpoint or CloudFront (default: PUBLIC_URL).",
)
@click.option("--dry-run", is_flag=True, help="Print what would be written, write nothing.")
@click.pass_context
def publish_command(
    ctx: click.Context,
    s3: context.S3Place,
    base_url: str | None,
    dry_run: bool,
) -> None:
    """Write TMS, WMTS and ArcGIS documents for every layer into the bucket."""
    env = context.environment(ctx)
    if env.settings is None:
        raise errors.ConfigProblem(str(env.settings_error))
    base = base_url or env.public_url
    if not base or not base.startswith(("http://", "https://")):
        raise errors.ConfigProblem("no public URL: pass --base-url https://... or set PUBLIC_URL")
    name = context.bucket_name(env, s3.bucket)
    docs, skipped = publish_docs.documents(env.settings, base)
    for item in skipped:
        click.echo(f"skipped: layer {item.layer}: {item.reason}", err=True)
    try:
        outcome = publish_docs.publish(
            context.s3_client(env, s3.endpoint_url, 4), name, docs, dry_run
        )
    except (BotoCoreError, ClientError) as err:
        raise errors.Failed(f"publishing to {name}: {err}") from None
    for doc in docs:
        click.echo(f"{outcome[doc.key]}: s3://{name}/{doc.key} ({doc.content_type})")
        if dry_run and outcome[doc.key] == "would write":
            click.echo(doc.body.decode())
    written = sum(1 for v in outcome.values() if v == "written")
    click.echo(
        f"publish: {written} written, {len(docs) - written} unchanged or dry run, "
        f"{len(skipped)} skipped"
    )
