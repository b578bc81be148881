"""The command lines the ``kb-prv-*`` commands parse without typer (internal).

Importing typer (and the click it carries) costs about 0.15 s of CPU, more than a
cached ``kb-prv-create`` of 20,000 files spends on the work itself; a same-run
benchmark measured the whole difference (``docs/benchmarks.md``, "Start-up without
typer"). So the common invocations, plain arguments and a few options written the
usual way, are parsed here; anything else (``--help``, ``--version``, ``--opt=value``
for a flag, a value starting with ``-``, a repeated option, ``--``, unknown options,
the wrong number of arguments) returns None, and the command's typer application
parses it, with its usage errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

__all__ = ("PlainArgs", "parse_plain")


class PlainArgs(NamedTuple):
    """A command line parsed without typer (a NamedTuple, immutable: ``dataclasses``
    would add ~15 ms to ``kb-prv-create``'s start-up, as ``kbapps.prvbuild`` notes).

    Attributes:
        positionals: the arguments, in order.
        values: option name -> value, for the options given with a value.
        flags: the names of the flags given.
    """

    positionals: tuple[str, ...]
    values: Mapping[str, str]
    flags: frozenset[str]


def parse_plain(
    args: list[str],
    *,
    positionals: tuple[int, int],
    flags: Mapping[str, str] | None = None,
    valued: Mapping[str, str] | None = None,
) -> PlainArgs | None:
    """Parse ``args`` if they are a plain invocation; None for anything else.

    Args:
        args: the command line after the program name.
        positionals: the smallest and largest number of arguments.
        flags: each spelling of a flag (``-q``, ``--quiet``) -> its name.
        valued: each option taking a value (``--hub``) -> its name; written as
            ``--hub URL`` or ``--hub=URL``.
    """
    flags = flags or {}
    valued = valued or {}
    found: list[str] = []
    values: dict[str, str] = {}
    given: set[str] = set()
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if not arg.startswith("-"):
            found.append(arg)
            continue
        option, equals, value = arg.partition("=")
        if option in flags and not equals:
            name = flags[option]
        elif option in valued:
            if not equals:
                if index == len(args):
                    return None
                value = args[index]
                index += 1
            if value.startswith("-"):
                return None
            name = valued[option]
            values[name] = value
        else:
            return None
        if name in given:
            return None
        given.add(name)
    low, high = positionals
    if not low <= len(found) <= high:
        return None
    return PlainArgs(tuple(found), values, frozenset(given - values.keys()))
