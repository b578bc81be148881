"""``kb-prv-create PATH [OUT] [-q]``: write the ``.prv`` of a file or the ``.prvdir`` of
a directory (docs/commands.md, kb-prv-create).

On success it prints one summary line on stderr (stdout stays the ``.prv`` when OUT
is omitted): ``Wrote OUT: <n> files, <size>, <seconds> s (<k> from the hash cache)``;
``-q`` prints nothing but warnings and errors. Exit codes are the commands' table
(``docs/commands.md``): 0 done, 2 bad input (PATH missing or unreadable, OUT with
the wrong suffix or not writable), 130 Ctrl+C (OUT untouched).

Start-up time counts (a cached run over a big tree should cost little more than
listing it), so the common invocations (``kbapps.cli._args``) skip typer and rich
entirely; anything else goes through the typer application, which returns the
same ``CreateArgs``.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, BinaryIO, NamedTuple, NoReturn

from kbapps import output
from kbapps.cli._args import parse_plain
from kbapps.output import UsageError

if TYPE_CHECKING:
    import typer

    from kbapps.hashing import HashCache

__all__ = ("HELP", "PROG", "CreateArgs", "main", "make_app", "parse", "run")

PROG = "kb-prv-create"
HELP = (
    "Write the .prv of a file (to OUT, or to stdout) or the .prvdir of a directory "
    "(OUT required). Hashes use all cores and a per-user cache, so unchanged files "
    "are read only once. Prints one summary line on stderr (-q: none). Exit 0 done, "
    "2 bad input, 130 interrupted."
)


class CreateArgs(NamedTuple):
    """The command line, parsed (a NamedTuple: see ``kbapps.cli._args``).

    Attributes:
        path: the file or directory to describe.
        out: where to write (None: a file's ``.prv`` goes to stdout).
        quiet: ``-q``: no summary line, no progress.
        uri: ``--uri``: print the file's ``sha1://SHA1/NAME`` URI instead of its ``.prv``.
    """

    path: str
    out: str | None = None
    quiet: bool = False
    uri: bool = False


def _open_cache(lazy: bool = False) -> HashCache | None:
    from kbapps.cachedir import ensure_user_cache_path
    from kbapps.hashing import HASH_CACHE_FILENAME, HashCache

    try:
        return HashCache(os.path.join(ensure_user_cache_path(), HASH_CACHE_FILENAME), lazy=lazy)
    except Exception as exc:
        import sqlite3  # only here: a cached run of a tree never needs it (~5 ms)

        if not isinstance(exc, OSError | sqlite3.Error):
            raise
        output.warning(f"hash cache disabled: {exc}")
        return None


#: ``os.POSIX_FADV_DONTNEED`` where the system has it (see ``_AtomicFile``).
_FADV_DONTNEED: int | None = getattr(os, "POSIX_FADV_DONTNEED", None)


class _AtomicFile:
    """OUT, written beside its final name and renamed into place by ``commit``, so
    an interrupted run never leaves a truncated .prv/.prvdir under that name.
    ``write`` takes the document in pieces, over one or more calls (a big .prvdir
    is never joined into one more copy); ``discard`` drops what was written."""

    def __init__(self, out: str) -> None:
        from kbapps.filenames import fitting_name, name_max

        self.out = out
        folder, name = os.path.split(out)
        # A name of its own beside OUT, shortened when OUT's name leaves no room.
        tmp_name = fitting_name(name, f".tmp{os.getpid()}", name_max(folder or "."))
        self.tmp = os.path.join(folder, tmp_name)
        self.handle: BinaryIO | None = None
        self.synced = 0  # bytes whose writeback was started
        try:
            # Created at once, so that a walk of a tree holding it can leave it out.
            self.handle = open(self.tmp, "wb")  # noqa: SIM115 - closed by commit/discard
        except OSError as exc:
            self._failed(exc)

    def identity(self) -> tuple[int, int]:
        """``(st_dev, st_ino)`` of the temporary file."""
        assert self.handle is not None
        st = os.fstat(self.handle.fileno())
        return st.st_dev, st.st_ino

    def write(self, pieces: Sequence[bytes | memoryview]) -> None:
        assert self.handle is not None
        try:
            self.handle.writelines(pieces)
            self.handle.flush()
        except OSError as exc:
            self._failed(exc)
        self._start_writeback()

    def _start_writeback(self) -> None:
        # Start writing what was just written to disk now, while the hashing goes on.
        # On ext4, a rename over an existing OUT first flushes the file's unwritten
        # blocks (auto_da_alloc); left to ``commit``, that took ~9 ms at the end of
        # every run that replaced an OUT of 7 MB (docs/benchmarks.md). DONTNEED
        # starts the writeback of the pages and drops none that are still dirty.
        if _FADV_DONTNEED is None:  # pragma: no cover - not Linux
            return
        assert self.handle is not None
        end = self.handle.tell()
        with contextlib.suppress(OSError):
            os.posix_fadvise(self.handle.fileno(), self.synced, end - self.synced, _FADV_DONTNEED)
        self.synced = end

    def commit(self) -> None:
        assert self.handle is not None
        try:
            self.handle.close()
            os.replace(self.tmp, self.out)
        except OSError as exc:
            self._failed(exc)
        self.handle = None

    def discard(self) -> None:
        if self.handle is not None:
            handle, self.handle = self.handle, None
            with contextlib.suppress(OSError):
                handle.close()
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)

    def _failed(self, exc: OSError) -> NoReturn:
        self.discard()
        raise UsageError(f"cannot write {self.out}: {exc.strerror or exc}") from None


def _write_atomically(out: str, data: bytes) -> None:
    target = _AtomicFile(out)
    target.write([data])
    target.commit()


class _Tally:
    """What a run did, for its summary line: files, bytes, and files whose digests
    came from the hash cache (no byte read)."""

    def __init__(self, progress: output.Progress) -> None:
        self.progress = progress
        self.cached = 0

    def add_cached(self, files: int) -> None:
        self.cached += files

    def summary(self, what: str, started: float) -> str:
        elapsed = time.monotonic() - started
        text = (
            f"{what}: {output.counted(self.progress.files, 'file')}, "
            f"{output.format_bytes(self.progress.nbytes)}, {elapsed:.1f} s"
        )
        if self.cached:
            text += f" ({self.cached:,} from the hash cache)"
        return text


def run(args: CreateArgs) -> None:
    """Do the work of one ``kb-prv-create`` invocation.

    Raises:
        UsageError: bad input (exit 2: missing file, wrong OUT suffix, directory
            without OUT, unreadable file, OUT that cannot be written).
    """
    from kbapps.prvbuild import BuildOptions, PrvBuildError, build_prv, write_tree

    started = time.monotonic()
    path, out = args.path, args.out
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file or directory") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    is_dir = stat.S_ISDIR(st.st_mode)
    if args.uri and (is_dir or out is not None):
        raise UsageError("--uri takes one file and no OUT")
    if is_dir:
        if out is None:
            raise UsageError(f"{path} is a directory: give an OUT ending in .prvdir")
        if not out.endswith(".prvdir"):
            raise UsageError(f"OUT must end in .prvdir for a directory: {out}")
    elif stat.S_ISREG(st.st_mode):
        if out is not None and not out.endswith(".prv"):
            raise UsageError(f"OUT must end in .prv for a file: {out}")
    else:
        raise UsageError(f"{path} is not a regular file or directory")

    # A tree's small files are remembered in its fragment file: the database is
    # opened only if needed. A single file uses it at once (and warns here if broken).
    cache = _open_cache(lazy=is_dir)
    try:
        if is_dir:
            assert out is not None
            target = _AtomicFile(out)
            # OUT and its temporary file stay out of the document if in the tree.
            exclude = {target.identity()}
            try:
                out_st = os.stat(out)
                exclude.add((out_st.st_dev, out_st.st_ino))
            except OSError:
                pass
            try:
                with output.Progress("Hashing", quiet=args.quiet) as progress:
                    tally = _Tally(progress)

                    def on_total(files: int) -> None:
                        # Known once the walk ends (hashing may have started): well
                        # before the bar is first drawn, except for a huge tree.
                        progress.total_files = files

                    options = BuildOptions(
                        cache=cache,
                        on_progress=progress.update,
                        on_warning=output.warning,
                        exclude=frozenset(exclude),
                        on_cached=tally.add_cached,
                    )
                    write_tree(path, target.write, options, on_total)
                    target.commit()
            except PrvBuildError as exc:
                raise UsageError(str(exc)) from None
            finally:
                target.discard()
            what = f"Wrote {out}"
        else:
            try:
                with output.Progress(
                    "Hashing", total_files=1, total_bytes=st.st_size, quiet=args.quiet
                ) as progress:
                    tally = _Tally(progress)
                    options = BuildOptions(
                        cache=cache,
                        on_progress=progress.update,
                        on_warning=output.warning,
                        on_cached=tally.add_cached,
                    )
                    prv = build_prv(path, options)
            except PrvBuildError as exc:
                raise UsageError(str(exc)) from None
            from kbproto.prv import serialize_prv  # here: a directory never needs it

            data = serialize_prv(prv)
            if args.uri:
                from kbapps.uris import sha1_uri
                from kbproto.prv import is_valid_entry_name

                name = os.path.basename(path)
                output.line(
                    sha1_uri(prv.sha1, name if is_valid_entry_name(name) else None),
                    stream=sys.stdout,
                )
                what = f"Wrote the URI of {path} to stdout"
            elif out is None:
                output.print_json_bytes(data)
                what = f"Wrote the .prv of {path} to stdout"
            else:
                _write_atomically(out, data)
                what = f"Wrote {out}"
    finally:
        if cache is not None:
            cache.close()
    if not args.quiet:
        output.line(tally.summary(what, started))


def make_app() -> typer.Typer:
    """Build the typer application (``--help``, ``--version``, option parsing, usage
    errors); its command returns the ``CreateArgs``."""
    import typer

    from kbapps.cli._typer_app import Command, new_app, version_option

    app = new_app()

    @app.command(cls=Command, help=HELP)
    def create(
        path: str = typer.Argument(..., metavar="PATH", help="The file or directory to describe."),
        out: str | None = typer.Argument(
            None,
            metavar="OUT",
            help="Where to write: NAME.prv for a file (default: stdout), NAME.prvdir "
            "for a directory (required).",
        ),
        quiet: bool = typer.Option(
            False, "-q", "--quiet", help="Print no summary line and no progress."
        ),
        uri: bool = typer.Option(
            False,
            "--uri",
            help="Print the file's sha1://SHA1/NAME URI instead of its .prv (for "
            "kb-prv-download, kb-prv-find and Python's kbapps.api).",
        ),
        version: bool = version_option(),
    ) -> CreateArgs:
        return CreateArgs(path, out, quiet, uri)

    return app


def parse(args: list[str]) -> CreateArgs | int:
    """The ``CreateArgs`` of a command line, or the exit code of a command line that
    typer answered itself (``--help``, ``--version``).

    Raises:
        UsageError: a usage error (one line).
    """
    plain = parse_plain(
        args, positionals=(1, 2), flags={"-q": "quiet", "--quiet": "quiet", "--uri": "uri"}
    )
    if plain is not None:
        path, *rest = plain.positionals
        out = rest[0] if rest else None
        return CreateArgs(path, out, quiet="quiet" in plain.flags, uri="uri" in plain.flags)
    from kbapps.cli._typer_app import parse_with_typer

    parsed = parse_with_typer(make_app(), args, PROG)
    assert isinstance(parsed, CreateArgs | int)
    return parsed


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: with ``argv`` None (the command line is
    ``sys.argv``), the process ends here once the work is done
    (``output.exit_process``); otherwise it returns the exit code."""
    args = sys.argv[1:] if argv is None else argv

    def body() -> int:
        parsed = parse(args)
        if isinstance(parsed, int):
            return parsed
        run(parsed)
        return output.EXIT_OK

    code = output.run_command(body)
    return output.exit_process(code) if argv is None else code


if __name__ == "__main__":
    sys.exit(main())
