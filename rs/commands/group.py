"""The command group: usage errors print as one ``error:`` line, like every other error.

Click prints a usage error as the command's usage, a "Try ... --help" line and ``Error: ...``;
changewatch's rule is one line starting ``error:`` with the documented exit code (2 for usage),
so scripts and inspectors see the same shape whatever went wrong. ``--help`` and ``--version``
behave as Click's.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from functools import partial
from typing import Any

import click


def usage_line(exc: click.UsageError) -> str:
    """The one line a usage error prints: ``error: <message> (see '<command> --help')``."""
    hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
    return f"error: {exc.format_message()}{hint}"


class CommandGroup(click.Group):
    """A click group whose usage errors are one ``error:`` line on stderr, exit code 2."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        """Run the command line; in standalone mode it ends the process with the exit code, as Click does."""
        run = partial(super().main, args, prog_name, complete_var, standalone_mode=False, **extra)
        if not standalone_mode:
            return run()
        try:
            code: object = run()  # --help, --version: their exit code (click.exceptions.Exit); a command: None
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()  # no arguments at all: the help, as Click prints it
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            click.echo(usage_line(exc), err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)
