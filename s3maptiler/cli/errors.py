"""The command's errors and exit codes: 0 all good, 1 something failed, 2 usage or
configuration error, each said in one line on stderr."""

from __future__ import annotations

import sys

import click

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "ConfigProblem", "Failed", "Group"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class Failed(click.ClickException):
    """Something went wrong at run time (S3 refused, a file could not be read): exit 1."""

    exit_code = EXIT_FAILED


class Group(click.Group):
    """A click group whose errors are one line on stderr: usage errors exit 2."""

    def main(  # type: ignore[override]
        self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra
    ):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as err:
            where = err.ctx.command_path if err.ctx is not None else "s3maptiler"
            hint = "" if isinstance(err, ConfigProblem) else f" (see {where} --help)"
            click.echo(f"{where}: error: {err.format_message()}{hint}", err=True)
            sys.exit(EXIT_USAGE)
        except click.ClickException as err:
            click.echo(f"s3maptiler: error: {err.format_message()}", err=True)
            sys.exit(err.exit_code)
        except click.Abort:
            click.echo("s3maptiler: aborted", err=True)
            sys.exit(EXIT_FAILED)
        sys.exit(code if isinstance(code, int) else EXIT_OK)


class ConfigProblem(click.UsageError):
    """A bad setting or option value: exit 2, one line."""

    exit_code = EXIT_USAGE
