"""``kb-prv-find PRV [--hub URL] [--json]``: where is this content? (docs/commands.md, kb-prv-find).

PRV may also be a ``sha1://SHA1`` or ``kbucket://NODE_ID/PATH`` URI (``docs/python-api.md``).

Prints the download URLs the hub knows for the ``.prv``'s SHA-1, one per line, best
first (``--json``: the hub's find answer, docs/http.md). Exit 0 found, 1 not found, 2 bad
input, 3 hub unreachable, 130 interrupted (``docs/commands.md``).

As ``kb-prv-create`` does, the plain invocation skips typer (``kbapps.cli._args``);
``--help``, ``--version`` and anything unusual go through the typer application.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kbapps import output
from kbapps.cli._args import parse_plain
from kbapps.output import UsageError

if TYPE_CHECKING:
    import typer

__all__ = ("HELP", "PROG", "FindArgs", "main", "make_app", "parse", "run")

PROG = "kb-prv-find"
HELP = (
    "Ask the hub where the content of a .prv (or a sha1:// or kbucket:// URI) is. "
    "Prints one URL per line, best first "
    "(--json: the hub's find answer). Exit 0 found, 1 not found, 2 bad input, "
    "3 hub unreachable, 130 interrupted."
)


@dataclass(frozen=True, slots=True)
class FindArgs:
    """The command line, parsed: the ``.prv``, ``--hub`` and ``--json``."""

    prv: str
    hub: str | None = None
    as_json: bool = False


def run(args: FindArgs) -> int:
    """Do one ``kb-prv-find``; return the exit code.

    Raises:
        UsageError: bad input (exit 2) or an unreachable hub (exit 3).
    """
    prv_path, hub, as_json = args.prv, args.hub, args.as_json

    from kbapps import download
    from kbapps.uris import is_uri
    from kbproto.prv import PrvDir

    try:
        document = None if is_uri(prv_path) else download.load_prv_file(prv_path)
        if isinstance(document, PrvDir):
            raise download.BadInputError(f"{prv_path} is a .prvdir; kb-prv-find takes a .prv")
        options = download.default_options(hub)

        async def ask() -> tuple[str, download.FindResult]:
            async with download.make_http_client(options) as http:
                sha1: str
                if document is not None:
                    sha1 = document.sha1
                else:  # a sha1:// or kbucket:// URI (kbapps.api, docs/python-api.md)
                    from kbapps.api.sources import content_sha1

                    sha1 = await content_sha1(prv_path, http, options.hub_url)
                within = options.speed_window if options.min_speed else None
                found = await download.find_content(http, options.hub_url, sha1, within=within)
                return sha1, found

        sha1, result = output.run_async(ask)
    except download.ClientError as exc:
        raise UsageError(exc.message, exc.exit_code) from None
    if as_json:
        output.print_json(result.response, indent=4)
    else:
        for url in result.urls:
            output.line(url, stream=sys.stdout)
    if not result.found:
        if not as_json:
            output.error(f"not found: no node of the network has {prv_path} (sha1 {sha1})")
        return download.EXIT_NOT_FOUND
    return download.EXIT_OK


def make_app() -> typer.Typer:
    """Build the typer application (``--help``, ``--version``, option parsing, usage
    errors); its command returns the ``FindArgs``."""
    import typer

    from kbapps.cli._typer_app import Command, new_app, version_option

    app = new_app()

    @app.command(cls=Command, help=HELP)
    def find(
        prv: str = typer.Argument(
            ...,
            metavar="PRV",
            help="The .prv file, or a sha1://SHA1 or kbucket://NODE_ID/PATH URI.",
        ),
        hub: str | None = typer.Option(
            None,
            "--hub",
            metavar="URL",
            help="Hub to ask (default: $KBUCKET_URL, else http://localhost:3240).",
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the hub's JSON answer."),
        version: bool = version_option(),
    ) -> FindArgs:
        return FindArgs(prv, hub, as_json)

    return app


def parse(args: list[str]) -> FindArgs | int:
    """The ``FindArgs`` of a command line, or the exit code of one typer answered
    itself (``--help``, ``--version``).

    Raises:
        UsageError: a usage error (one line).
    """
    plain = parse_plain(args, positionals=(1, 1), flags={"--json": "json"}, valued={"--hub": "hub"})
    if plain is not None:
        return FindArgs(plain.positionals[0], plain.values.get("hub"), "json" in plain.flags)
    from kbapps.cli._typer_app import parse_with_typer

    parsed = parse_with_typer(make_app(), args, PROG)
    assert isinstance(parsed, FindArgs | int)
    return parsed


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the exit code."""
    args = sys.argv[1:] if argv is None else argv

    def body() -> int:
        parsed = parse(args)
        return parsed if isinstance(parsed, int) else run(parsed)

    return output.run_command(body)


if __name__ == "__main__":
    sys.exit(main())
