"""Argument handling shared by ``kb-prv-find`` and ``kb-prv-download`` (internal).

The common invocations (positionals plus ``--hub URL`` and ``--json``) are parsed here
without typer, which costs ~0.1 s to import; ``--help``, unknown options and wrong
argument counts go through the command's typer application instead, whose errors
become one ``Error:`` line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kbapps.output import UsageError

if TYPE_CHECKING:
    import typer


@dataclass(frozen=True, slots=True)
class PlainArgs:
    """The fast-path parse: positionals, ``--hub`` and ``--json``."""

    positionals: tuple[str, ...]
    hub: str | None
    as_json: bool


def parse_plain(args: list[str], *, positionals: int) -> PlainArgs | None:
    """Parse ``args`` if they are exactly ``positionals`` plain arguments plus known
    options; return None for anything else (let typer handle it)."""
    found: list[str] = []
    hub: str | None = None
    as_json = False
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--json":
            as_json = True
        elif arg == "--hub" and index + 1 < len(args):
            hub = args[index + 1]
            index += 1
        elif arg.startswith("--hub="):
            hub = arg[len("--hub=") :]
        elif arg.startswith("-"):
            return None
        else:
            found.append(arg)
        index += 1
    if len(found) != positionals:
        return None
    return PlainArgs(tuple(found), hub, as_json)


def via_typer(app: typer.Typer, args: list[str], prog: str) -> int:
    """Run ``app`` on ``args``; click's usage errors become a one-line ``UsageError``."""
    import typer
    import typer.main

    command = typer.main.get_command(app)
    try:
        result = command.main(args=args, prog_name=prog, standalone_mode=False)
    except typer.Abort:
        raise KeyboardInterrupt from None
    except Exception as exc:
        # Matched by shape: click's exceptions carry format_message() and exit_code.
        format_message = getattr(exc, "format_message", None)
        if not callable(format_message) or not isinstance(getattr(exc, "exit_code", None), int):
            raise
        raise UsageError(f"{format_message()} (see {prog} --help)") from None
    return result if isinstance(result, int) else 0
