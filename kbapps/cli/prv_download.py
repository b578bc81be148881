"""``kb-prv-download PRV OUT [--hub URL] [--json] [--force] [--cache-size SIZE]
[--min-speed RATE] [--speed-window SECONDS] [--max-sources N]``: fetch verified
content (docs/commands.md);
``--cache-info``/``--clear-cache`` show and empty the content cache.

PRV may also be a ``sha1://`` or ``kbucket://`` URI (``docs/python-api.md``): a
``kbucket://`` directory downloads as a ``.prvdir``. For a ``.prv``, OUT is the file
to write (or an existing directory to write into); for
a ``.prvdir``, OUT is a directory. The work is ``kbapps.download``'s; this module parses
the arguments, draws the progress bar (a terminal) or milestone lines (otherwise) on
stderr, and turns the outcome into the exit code: 0 done, 1 not found anywhere, 2 bad
input (OUT holding other content without ``--force`` included: nothing changed), 3 the
hub unreachable or no source delivered the right bytes (each source and its error
listed, one line each), 130 on Ctrl+C: the ``.part`` stays, a line says what it holds,
and the next run resumes it, saying so (``Resuming OUT at ...``) with its progress bar
starting there. ``--json`` prints the events as JSON Lines on stdout and draws no
progress (its ``progress`` events are the progress); the human lines stay on stderr
(``docs/commands.md``). The copy into the content cache runs after the command, in a
process of its own (``kbapps.download.cachefill``).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kbapps import output
from kbapps.allocator import tune_allocator
from kbapps.cli._args import parse_plain
from kbapps.cli._download_report import DownloadReport
from kbapps.output import UsageError

if TYPE_CHECKING:
    import typer

    from kbapps.download import ClientError, ClientOptions, DownloadResult

__all__ = ("HELP", "PROG", "DownloadArgs", "main", "make_app", "parse", "run")

PROG = "kb-prv-download"
#: The most ``--max-sources`` takes: a find lists at most 32 URLs (``find.MAX_SOURCES``).
_MAX_SOURCES_LIMIT = 32
HELP = (
    "Download the content of a .prv to OUT (or of a .prvdir into the directory OUT), "
    "verifying its SHA-1: from the local cache, else directly from the share, else "
    "through the hubs. Interrupted downloads resume from OUT.part. A file at OUT with "
    "other content is never replaced without --force. Exit 0 done, 1 not found, 2 bad "
    "input, 3 hub unreachable or no source delivered the right bytes, 130 interrupted."
)


@dataclass(frozen=True, slots=True, kw_only=True)
class DownloadArgs:
    """The command line, parsed.

    Attributes:
        prv: the ``.prv``/``.prvdir`` (None with ``cache_info``/``clear_cache`` alone).
        out: where to write it.
        hub: ``--hub``.
        as_json: ``--json``.
        force: ``--force``.
        cache_size: ``--cache-size`` as given (None: ``$KBUCKET_CACHE_SIZE`` or 10G).
        cache_info: ``--cache-info``.
        clear_cache: ``--clear-cache``.
        min_speed: ``--min-speed`` as given (None: ``$KBUCKET_MIN_SPEED`` or 1K).
        speed_window: ``--speed-window`` as given (None: ``$KBUCKET_SPEED_WINDOW`` or 30).
        max_sources: ``--max-sources`` (None: 4): distinct nodes a large file is
            fetched from at once.
    """

    prv: str | None = None
    out: str | None = None
    hub: str | None = None
    as_json: bool = False
    force: bool = False
    cache_size: str | None = None
    cache_info: bool = False
    clear_cache: bool = False
    min_speed: str | None = None
    speed_window: str | None = None
    max_sources: int | None = None


def _report_failure(label: str | None, exc: ClientError) -> None:
    """One ``Error:`` line (prefixed with ``label`` unless it names it), then one
    indented line per failed source or conflicting file."""
    from kbapps.download import ConflictError, DownloadFailedError

    named = label is None or exc.message.startswith(label)
    output.error(exc.message if named else f"{label}: {exc.message}")
    if isinstance(exc, DownloadFailedError):
        for failure in exc.failures:
            # One line per source (docs/commands.md: every source and its error are listed).
            output.line(f"  {failure.url}: {failure.error}")
    elif isinstance(exc, ConflictError):
        for conflict in exc.conflicts:
            if conflict not in exc.message:
                output.line(f"  {conflict}")


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


def _cache_commands(args: DownloadArgs, options: ClientOptions) -> int:
    """``--clear-cache`` then ``--cache-info``: one line each (a JSON event with --json)."""
    from kbapps.download import ClientError, ContentCache

    assert options.cache_dir is not None
    cache = ContentCache(options.cache_dir, options.cache_size)
    where = str(options.cache_dir)
    try:
        if args.clear_cache:
            removed = cache.clear()
            if args.as_json:
                output.print_json(
                    {
                        "event": "cleared",
                        "path": where,
                        "entries": removed.entries,
                        "bytes": removed.size,
                    }
                )
            entries = output.counted(removed.entries, "entry", "entries")
            output.line(
                f"Cleared the content cache {where}: {entries}, "
                f"{output.format_bytes(removed.size)} removed"
            )
        if args.cache_info:
            usage = cache.usage()
            if args.as_json:
                output.print_json(
                    {
                        "event": "cache",
                        "path": where,
                        "entries": usage.entries,
                        "bytes": usage.size,
                        "bound": options.cache_size,
                    }
                )
            bound = (
                f"at most {output.format_bytes(options.cache_size)}"
                if options.cache_size
                else "off (size 0)"
            )
            entries = output.counted(usage.entries, "entry", "entries")
            output.line(
                f"Content cache {where}: {entries}, {output.format_bytes(usage.size)}; {bound} "
                "(--cache-size or $KBUCKET_CACHE_SIZE)"
            )
    except OSError as exc:
        raise UsageError(f"cannot use the content cache {where}: {exc.strerror or exc}") from None
    except ClientError as exc:  # the cache directory is a symlink or not a directory
        raise UsageError(exc.message, exc.exit_code) from None
    return 0


def run(args: DownloadArgs) -> int:
    """Do one ``kb-prv-download``; return the exit code.

    Raises:
        UsageError: bad input (exit 2).
    """

    from kbapps import download
    from kbapps.uris import is_uri
    from kbproto.prv import PrvDir

    cache_only = args.cache_info or args.clear_cache
    prv_path, out = args.prv, args.out
    ignored: list[str] = []
    if cache_only and (prv_path is not None or out is not None):
        raise UsageError("--cache-info and --clear-cache take no PRV or OUT")
    if args.max_sources is not None and not 1 <= args.max_sources <= _MAX_SOURCES_LIMIT:
        raise UsageError(f"--max-sources must be from 1 to {_MAX_SOURCES_LIMIT}")
    extra: dict[str, Any] = {} if args.max_sources is None else {"max_sources": args.max_sources}
    try:
        options = download.default_options(
            args.hub,
            cache_size=args.cache_size,
            min_speed=args.min_speed,
            speed_window=args.speed_window,
            force=args.force,
            cache_in_background=True,
            **extra,
        )
        if cache_only:
            return _cache_commands(args, options)
        if prv_path is None or out is None:
            raise UsageError(f"PRV and OUT are required (see {PROG} --help)")
        if is_uri(prv_path):  # sha1:// or kbucket:// (docs/python-api.md)
            from kbapps.api import aio

            document = output.run_async(lambda: aio.get_prv(prv_path, options=options))
        else:
            document = download.load_prv_file(prv_path, ignored)
    except download.ClientError as exc:
        raise UsageError(exc.message, exc.exit_code) from None
    report = DownloadReport(as_json=args.as_json)
    for message in ignored:  # a malformed ``chunks`` field: whole-file check only
        report({"event": "warning", "path": prv_path, "message": message})

    if isinstance(document, PrvDir):
        nfiles, _ = document.count()
        total = sum(prv.size for _, prv in document.iter_files())
        with output.Progress(
            "Downloading", total_files=nfiles, total_bytes=total, quiet=args.as_json
        ) as progress:
            try:
                outcome = output.run_async(
                    lambda: download.download_prvdir(
                        document, out, options, on_event=report, on_progress=progress.update
                    )
                )
            except download.ClientError as exc:
                progress.close(success=False)
                _report_failure(None, exc)
                return exc.exit_code
            except KeyboardInterrupt:
                progress.close(success=False)
                partial = os.path.join(out, download.PARTIAL_DIRNAME)
                return report.interrupted(out, partial_dir=partial, total_files=nfiles)
        for rel, problem in outcome.failed:
            _report_failure(rel, problem)
        skipped = sum(1 for r in outcome.done if r.origin == "present")
        output.line(
            f"Downloaded {output.counted(len(outcome.done) - skipped, 'file')}, skipped "
            f"{skipped} already present, {len(outcome.failed)} failed, into {out}"
        )
        return outcome.exit_code

    with output.Progress(
        "Downloading", total_files=1, total_bytes=document.size, quiet=args.as_json
    ) as progress:
        report.progress = progress
        try:
            result = output.run_async(
                lambda: download.download_prv(
                    document, out, options, on_event=report, on_progress=progress.update
                )
            )
        except download.ClientError as exc:
            progress.close(success=False)  # no "done" line for a failed download
            failure: ClientError | None = exc
        except KeyboardInterrupt:
            progress.close(success=False)
            return report.interrupted(out, partial_dir=None, total_files=1)
        else:
            failure = None
    if failure is not None:
        _report_failure(out, failure)
        return failure.exit_code
    output.line(_done_line(result))
    return download.EXIT_OK


def make_app() -> typer.Typer:
    """Build the typer application (``--help``, ``--version``, option parsing, usage
    errors); its command returns the ``DownloadArgs``."""
    import typer

    from kbapps.cli._typer_app import Command, new_app, version_option

    app = new_app()

    @app.command(cls=Command, help=HELP)
    def download(
        prv: str | None = typer.Argument(
            None,
            metavar="PRV",
            help="The .prv or .prvdir file, or a sha1://SHA1[/NAME] or kbucket://NODE_ID/PATH URI.",
        ),
        out: str | None = typer.Argument(
            None, metavar="OUT", help="The file to write (a directory for a .prvdir)."
        ),
        hub: str | None = typer.Option(
            None,
            "--hub",
            metavar="URL",
            help="Hub to ask (default: $KBUCKET_URL, else http://localhost:3240).",
        ),
        as_json: bool = typer.Option(
            False,
            "--json",
            help="Print JSON Lines events (source, progress, done, error, caching).",
        ),
        force: bool = typer.Option(
            False,
            "--force",
            help="Replace files at OUT that hold other content (without it such a file "
            "stops the download and nothing changes). Symlinks are replaced, never "
            "written through; directories are never replaced.",
        ),
        cache_size: str | None = typer.Option(
            None,
            "--cache-size",
            metavar="SIZE",
            help="Bound of the content cache: 500M, 20G..., 0 turns it off "
            "(default: $KBUCKET_CACHE_SIZE, else 10G). Least recently used content "
            "goes first.",
        ),
        cache_info: bool = typer.Option(
            False,
            "--cache-info",
            help="Show where the content cache is, what it holds and its bound (no PRV/OUT).",
        ),
        clear_cache: bool = typer.Option(
            False, "--clear-cache", help="Empty the content cache (no PRV/OUT)."
        ),
        min_speed: str | None = typer.Option(
            None,
            "--min-speed",
            metavar="RATE",
            help="Bytes per second (1K, 100K...) a source must average over each "
            "--speed-window, or the next source continues from the bytes on disk; 0: "
            "no minimum (default: $KBUCKET_MIN_SPEED, else 1K).",
        ),
        speed_window: str | None = typer.Option(
            None,
            "--speed-window",
            metavar="SECONDS",
            help="The window of --min-speed (default: $KBUCKET_SPEED_WINDOW, else 30).",
        ),
        max_sources: int | None = typer.Option(
            None,
            "--max-sources",
            metavar="N",
            help="Fetch a large file (16 MiB or more) from up to N distinct nodes at once, "
            "in pieces checked chunk by chunk; 1: one source at a time (default: 4).",
        ),
        version: bool = version_option(),
    ) -> DownloadArgs:
        return DownloadArgs(
            prv=prv,
            out=out,
            hub=hub,
            as_json=as_json,
            force=force,
            cache_size=cache_size,
            cache_info=cache_info,
            clear_cache=clear_cache,
            min_speed=min_speed,
            speed_window=speed_window,
            max_sources=max_sources,
        )

    return app


#: What ``parse`` reads without typer (a download with any of these starts ~50 ms
#: sooner: docs/benchmarks.md, "Start-up without typer").
_PLAIN_FLAGS = {"--json": "json", "--force": "force"}
_PLAIN_VALUED = {
    "--hub": "hub",
    "--cache-size": "cache_size",
    "--min-speed": "min_speed",
    "--speed-window": "speed_window",
    "--max-sources": "max_sources",
}


def parse(args: list[str]) -> DownloadArgs | int:
    """The ``DownloadArgs`` of a command line, or the exit code of one typer answered
    itself (``--help``, ``--version``).

    Raises:
        UsageError: a usage error (one line).
    """
    plain = parse_plain(args, positionals=(2, 2), flags=_PLAIN_FLAGS, valued=_PLAIN_VALUED)
    sources = plain.values.get("max_sources", "1") if plain is not None else ""
    if plain is not None and sources.isdigit():  # else typer says what is wrong with it
        prv_path, out = plain.positionals
        values = plain.values
        return DownloadArgs(
            prv=prv_path,
            out=out,
            hub=values.get("hub"),
            as_json="json" in plain.flags,
            force="force" in plain.flags,
            cache_size=values.get("cache_size"),
            min_speed=values.get("min_speed"),
            speed_window=values.get("speed_window"),
            max_sources=int(values["max_sources"]) if "max_sources" in values else None,
        )
    from kbapps.cli._typer_app import parse_with_typer

    parsed = parse_with_typer(make_app(), args, PROG)
    assert isinstance(parsed, DownloadArgs | int)
    return parsed


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the exit code."""
    args = sys.argv[1:] if argv is None else argv
    tune_allocator()

    def body() -> int:
        parsed = parse(args)
        return parsed if isinstance(parsed, int) else run(parsed)

    return output.run_command(body)


if __name__ == "__main__":
    sys.exit(main())
