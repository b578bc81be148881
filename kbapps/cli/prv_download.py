"""``kb-prv-download PRV OUT [--hub URL] [--json]``: fetch verified content (SPEC §3.5).

For a ``.prv``, OUT is the file to write (or an existing directory to write into); for
a ``.prvdir``, OUT is a directory. The work is ``kbapps.download``'s; this module parses
the arguments, draws the progress bar (a terminal) or milestone lines (otherwise) on
stderr, prints ``--json`` events as JSON Lines on stdout, and turns the outcome into
the exit code: 0 done, 1 not found anywhere, 2 bad input, 3 the hub unreachable or no
source delivered the right bytes (each source and its error listed, one line each),
130 on Ctrl+C (the ``.part`` stays, and the next run resumes it).
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from kbapps import output
from kbapps.allocator import tune_allocator
from kbapps.cli._args import parse_plain
from kbapps.output import UsageError

if TYPE_CHECKING:
    import typer

    from kbapps.download import ClientError, DownloadResult

__all__ = ("HELP", "main", "make_app", "run")

PROG = "kb-prv-download"
HELP = (
    "Download the content of a .prv to OUT (or of a .prvdir into the directory OUT), "
    "verifying its SHA-1: from the local cache, else directly from the share, else "
    "through the hubs. Interrupted downloads resume from OUT.part. Exit 0 done, 1 not "
    "found, 2 bad input, 3 hub unreachable or no source delivered the right bytes."
)


def _print_event(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _report_failure(label: str | None, exc: ClientError) -> None:
    """One ``Error:`` line (prefixed with ``label`` unless it names it), then one
    indented line per failed source or conflicting file."""
    from kbapps.download import ConflictError, DownloadFailedError

    named = label is None or exc.message.startswith(label)
    output.error(exc.message if named else f"{label}: {exc.message}")
    if isinstance(exc, DownloadFailedError):
        for failure in exc.failures:
            # One line per source (SPEC §3.5: every source and its error are listed).
            output.info(f"  {failure.url}: {failure.error}")
    elif isinstance(exc, ConflictError):
        for conflict in exc.conflicts:
            if conflict not in exc.message:
                output.info(f"  {conflict}")


def _done_line(result: DownloadResult) -> str:
    size = output.format_bytes(result.size)
    if result.origin == "present":
        return f"Already present: {result.path} ({size}) holds this content; kept as it is"
    where = {
        "cache": "the local cache",
        "part": "the complete .part on disk",
        "empty": "nowhere (empty file)",
    }.get(result.origin, result.url or "")
    return f"Downloaded {result.path} ({size}) from {where}"


def run(
    prv_path: str,
    out: str,
    hub: str | None = None,
    as_json: bool = False,
    *,
    force: bool = False,
) -> int:
    """Do one ``kb-prv-download``; return the exit code.

    Raises:
        UsageError: bad input (exit 2).
    """
    import anyio

    from kbapps import download
    from kbproto.prv import PrvDir

    try:
        document = download.load_prv_file(prv_path)
        options = download.default_options(hub, force=force)
    except download.ClientError as exc:
        raise UsageError(exc.message, exc.exit_code) from None
    emit = _print_event if as_json else None

    if isinstance(document, PrvDir):
        nfiles, _ = document.count()
        total = sum(prv.size for _, prv in document.iter_files())
        with output.Progress("Downloading", total_files=nfiles, total_bytes=total) as progress:
            try:
                outcome = anyio.run(
                    lambda: download.download_prvdir(
                        document, out, options, on_event=emit, on_progress=progress.update
                    )
                )
            except download.ClientError as exc:
                progress.close(success=False)
                _report_failure(None, exc)
                return exc.exit_code
        for rel, problem in outcome.failed:
            _report_failure(rel, problem)
        skipped = sum(1 for r in outcome.done if r.origin == "present")
        output.info(
            f"Downloaded {len(outcome.done) - skipped} files, skipped {skipped} already "
            f"present, {len(outcome.failed)} failed, into {out}"
        )
        return outcome.exit_code

    with output.Progress("Downloading", total_files=1, total_bytes=document.size) as progress:
        try:
            result = anyio.run(
                lambda: download.download_prv(
                    document, out, options, on_event=emit, on_progress=progress.update
                )
            )
        except download.ClientError as exc:
            progress.close(success=False)  # no "done" line for a failed download
            failure: ClientError | None = exc
        else:
            failure = None
    if failure is not None:
        _report_failure(out, failure)
        return failure.exit_code
    output.info(_done_line(result))
    return download.EXIT_OK


def make_app() -> typer.Typer:
    """Build the typer application (``--help``, option parsing, usage errors)."""
    import typer

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @app.command(help=HELP)
    def download(
        prv: str = typer.Argument(..., metavar="PRV", help="The .prv or .prvdir file."),
        out: str = typer.Argument(
            ..., metavar="OUT", help="The file to write (a directory for a .prvdir)."
        ),
        hub: str | None = typer.Option(
            None,
            "--hub",
            metavar="URL",
            help="Hub to ask (default: $KBUCKET_URL, else http://localhost:3240).",
        ),
        as_json: bool = typer.Option(
            False, "--json", help="Print JSON Lines events (source, progress, done, error)."
        ),
        force: bool = typer.Option(
            False,
            "--force",
            help="Replace files at OUT that hold other content (without it such a file "
            "stops the download and nothing changes). Symlinks are replaced, never "
            "written through; directories are never replaced.",
        ),
    ) -> int:
        return run(prv, out, hub, as_json, force=force)

    return app


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the exit code."""
    from kbapps.cli._args import via_typer

    args = sys.argv[1:] if argv is None else argv
    tune_allocator()

    def body() -> int:
        plain = parse_plain(args, positionals=2)
        if plain is not None:
            prv_path, out = plain.positionals
            return run(prv_path, out, plain.hub, plain.as_json)
        return via_typer(make_app(), args, PROG)

    return output.run_command(body)


if __name__ == "__main__":
    sys.exit(main())
