"""``kb-prv-find PRV [--hub URL] [--json]``: where is this content? (SPEC §3.4).

Prints the download URLs the hub knows for the ``.prv``'s SHA-1, one per line, best
first (``--json``: the hub's find answer, SPEC §4). Exit 0 found, 1 not found, 2 bad
input, 3 hub unreachable.

As ``kb-prv-create`` does, the plain invocation skips typer (its import costs ~0.1 s);
``--help`` and anything unusual go through the typer application.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from kbapps import output
from kbapps.cli._args import parse_plain
from kbapps.output import UsageError

if TYPE_CHECKING:
    import typer

__all__ = ("HELP", "main", "make_app", "run")

PROG = "kb-prv-find"
HELP = (
    "Ask the hub where the content of a .prv is. Prints one URL per line, best first "
    "(--json: the hub's find answer). Exit 0 found, 1 not found, 2 bad input, "
    "3 hub unreachable."
)


def run(prv_path: str, hub: str | None = None, as_json: bool = False) -> int:
    """Do one ``kb-prv-find``; return the exit code.

    Raises:
        UsageError: bad input (exit 2) or an unreachable hub (exit 3).
    """

    from kbapps import download
    from kbproto.prv import PrvDir

    try:
        document = download.load_prv_file(prv_path)
        if isinstance(document, PrvDir):
            raise download.BadInputError(f"{prv_path} is a .prvdir; kb-prv-find takes a .prv")
        options = download.default_options(hub)

        async def ask() -> download.FindResult:
            async with download.make_http_client(options) as http:
                within = options.speed_window if options.min_speed else None
                return await download.find_content(
                    http, options.hub_url, document.sha1, within=within
                )

        result = output.run_async(ask)
    except download.ClientError as exc:
        raise UsageError(exc.message, exc.exit_code) from None
    if as_json:
        output.print_json(result.response, indent=4)
    else:
        for url in result.urls:
            output.line(url, stream=sys.stdout)
    if not result.found:
        if not as_json:
            output.error(f"not found: no node of the network has {prv_path} (sha1 {document.sha1})")
        return download.EXIT_NOT_FOUND
    return download.EXIT_OK


def make_app() -> typer.Typer:
    """Build the typer application (``--help``, option parsing, usage errors)."""
    import typer

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @app.command(help=HELP)
    def find(
        prv: str = typer.Argument(..., metavar="PRV", help="The .prv file."),
        hub: str | None = typer.Option(
            None,
            "--hub",
            metavar="URL",
            help="Hub to ask (default: $KBUCKET_URL, else http://localhost:3240).",
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the hub's JSON answer."),
    ) -> int:
        return run(prv, hub, as_json)

    return app


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the exit code."""
    from kbapps.cli._args import via_typer

    args = sys.argv[1:] if argv is None else argv

    def body() -> int:
        plain = parse_plain(args, positionals=1)
        if plain is not None:
            return run(plain.positionals[0], plain.hub, plain.as_json)
        return via_typer(make_app(), args, PROG)

    return output.run_command(body)


if __name__ == "__main__":
    sys.exit(main())
