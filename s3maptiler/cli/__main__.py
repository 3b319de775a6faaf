"""``python -m s3maptiler.cli``: the console script."""

from s3maptiler.cli.main import main

main(prog_name="s3maptiler")
