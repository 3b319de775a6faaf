"""The ``s3maptiler`` command line: one package, a module per command and what
they share: :mod:`~s3maptiler.cli.errors` (exit codes, one-line errors),
:mod:`~s3maptiler.cli.context` (the environment, layer, bucket and clients a command
works with) and :mod:`~s3maptiler.cli.console` (progress, summaries, signals)."""

from s3maptiler.cli.main import main

__all__ = ["main"]
