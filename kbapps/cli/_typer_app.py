"""What every command's typer application shares (internal): the application and
command classes, ``--version``, and parsing a command line into the command's options.

Typer only parses: each command's function returns its options (a frozen
dataclass), and the command runs them outside typer, where Ctrl+C and errors are
reported as ``kbapps.output.run_command`` does (typer would turn Ctrl+C into a
silent exit 130). Help is click's plain layout, rendered by ``Command``:

* the usage line names every argument by its metavar, in brackets when optional
  (``Usage: kb-prv-create [OPTIONS] PATH [OUT]``);
* the Arguments and Options sections show each option's metavar (``--hub URL``) and
  nothing after a flag, where typer's own panels would show value types
  (``<str>``, ``<bool>``) and ``{PATH}``.

``docs/commands.md`` is the reference of every command's arguments and options.
"""

from __future__ import annotations

import sys
from typing import Any

import typer
import typer.core
import typer.main

from kbapps import output
from kbapps.output import UsageError

__all__ = ("Command", "new_app", "package_version", "parse_with_typer", "version_option")

#: The distribution whose metadata holds the version (``pyproject.toml``).
DISTRIBUTION = "kbucket"


class Command(typer.core.TyperCommand):
    """A typer command whose help shows metavars: pass it as ``app.command(cls=Command)``.

    Every argument and every option taking a value must be given a ``metavar``.
    """

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        """``[OPTIONS]``, then each argument's metavar (bracketed when optional)."""
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = param.metavar or (param.name or "").upper()
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        """The Arguments section (metavar, help) and the Options section (the option
        with its metavar, or alone for a flag; help)."""
        arguments: list[tuple[str, str]] = []
        options: list[tuple[str, str]] = []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                # typer's record names the argument with its value type: the
                # metavar alone says what to give.
                arguments.append((param.metavar or (param.name or "").upper(), record[1]))
            else:
                options.append(record)
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


def new_app() -> typer.Typer:
    """A typer application for one command: plain help (``Command`` renders it), no
    shell-completion options, no rich tracebacks."""
    return typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)


def package_version() -> str:
    """The installed version of kbucket (its package metadata); ``kbapps.__version__``
    when running from a source tree that was never installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        from kbapps import __version__

        return __version__


def _print_version(ctx: typer.Context, value: bool) -> None:
    if value:
        output.line(f"{ctx.info_name} {package_version()}", stream=sys.stdout)
        raise typer.Exit()


def version_option() -> Any:
    """The ``--version`` flag of a command: prints ``<command> <version>`` on stdout
    and exits 0 before anything else is checked."""
    return typer.Option(
        False,
        "--version",
        is_eager=True,
        expose_value=False,
        callback=_print_version,
        help="Print the version and exit.",
    )


def parse_with_typer(app: typer.Typer, args: list[str], prog: str) -> object:
    """Parse ``args`` with ``app``; return what its command returned (the options),
    or an exit code when typer finished the command itself (``--help``,
    ``--version``: 0).

    Raises:
        UsageError: a usage error (unknown option, missing argument...), one line.
        KeyboardInterrupt: the input ended while typer was asking (Ctrl+D).
    """
    command = typer.main.get_command(app)
    try:
        return command.main(args=args, prog_name=prog, standalone_mode=False)
    except typer.Abort:
        raise KeyboardInterrupt from None
    except Exception as exc:
        # Matched by shape: click's exceptions carry format_message() and exit_code.
        format_message = getattr(exc, "format_message", None)
        if not callable(format_message) or not isinstance(getattr(exc, "exit_code", None), int):
            raise
        raise UsageError(f"{format_message()} (see {prog} --help)") from None
