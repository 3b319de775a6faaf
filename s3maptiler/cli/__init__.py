"""The ``s3maptiler`` command line: one package, a module per command and their
shared helpers (:mod:`~s3maptiler.cli.common`)."""

from s3maptiler.cli.main import main

__all__ = ["main"]
