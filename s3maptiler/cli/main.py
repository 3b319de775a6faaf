"""The ``s3maptiler`` console script: one click group, a subcommand per tool.

Commands stay thin: they turn options into calls of :mod:`s3maptiler.bucket` and
:mod:`s3maptiler.seeding` and print the outcome. Every long command shows a progress
bar with rate and ETA on stderr when stderr is a terminal, always prints a one-line
summary, and has ``--dry-run``. Exit codes: 0 all good, 1 something failed, 2 usage
or configuration error (one line on stderr).
"""

from __future__ import annotations

import click

from s3maptiler.cli import bucket, export, publish, purge, seed, upload, worker
from s3maptiler.cli.common import Group, configure_logging

__all__ = ["main"]


@click.group("s3maptiler", cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Tools for an s3maptiler tile cache in S3."""
    configure_logging(verbose)


for command in (
    upload.upload,
    bucket.bucket_group,
    purge.purge_command,
    publish.publish_command,
    seed.seed_command,
    export.export_command,
    worker.worker_command,
):
    main.add_command(command)
