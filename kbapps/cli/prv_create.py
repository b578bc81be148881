"""``kb-prv-create PATH [OUT]``: write the ``.prv`` of a file or the ``.prvdir`` of a
directory (SPEC §3.3).

Start-up time counts (a cached run over a big tree should cost little more than
listing it), so the common invocation, one or two plain arguments, skips typer and
rich entirely: importing them costs ~0.1 s each. Anything else (``--help``, options,
wrong argument counts) goes through the typer application, which shares ``run``.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, BinaryIO, NoReturn

from kbapps import output
from kbapps.output import UsageError

if TYPE_CHECKING:
    import typer

    from kbapps.hashing import HashCache

__all__ = ("HELP", "main", "make_app", "run")

HELP = (
    "Write the .prv of a file (to OUT, or to stdout) or the .prvdir of a directory "
    "(OUT required). Hashes use all cores and a per-user cache, so unchanged files "
    "are read only once."
)


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


class _AtomicFile:
    """OUT, written beside its final name and renamed into place by ``commit``, so
    an interrupted run never leaves a truncated .prv/.prvdir under that name.
    ``write`` takes the document in pieces, over one or more calls (a big .prvdir
    is never joined into one more copy); ``discard`` drops what was written."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.tmp = f"{out}.tmp{os.getpid()}"
        self.handle: BinaryIO | None = None
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
        except OSError as exc:
            self._failed(exc)

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
        raise UsageError(f"cannot write {self.out}: {exc.strerror}", exit_code=1) from None


def _write_atomically(out: str, data: bytes) -> None:
    target = _AtomicFile(out)
    target.write([data])
    target.commit()


def run(path: str, out: str | None, uri: bool = False) -> None:
    """Do the work of one ``kb-prv-create`` invocation (``uri``: print the file's
    ``sha1://SHA1/NAME`` URI instead of its ``.prv``).

    Raises:
        UsageError: bad input (exit 2: missing file, wrong OUT suffix, directory
            without OUT, unreadable file) or an unwritable OUT (exit 1).
    """
    from kbapps.prvbuild import BuildOptions, PrvBuildError, build_prv, write_tree

    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file or directory") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    is_dir = stat.S_ISDIR(st.st_mode)
    if uri and (is_dir or out is not None):
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
                with output.Progress("Hashing") as progress:

                    def on_total(files: int) -> None:
                        # Known once the walk ends (hashing may have started): well
                        # before the bar is first drawn, except for a huge tree.
                        progress.total_files = files

                    options = BuildOptions(
                        cache=cache,
                        on_progress=progress.update,
                        on_warning=output.warning,
                        exclude=frozenset(exclude),
                    )
                    write_tree(path, target.write, options, on_total)
                    target.commit()
            except PrvBuildError as exc:
                raise UsageError(str(exc)) from None
            finally:
                target.discard()
        else:
            try:
                with output.Progress("Hashing", total_files=1, total_bytes=st.st_size) as progress:
                    options = BuildOptions(
                        cache=cache, on_progress=progress.update, on_warning=output.warning
                    )
                    prv = build_prv(path, options)
            except PrvBuildError as exc:
                raise UsageError(str(exc)) from None
            from kbproto.prv import serialize_prv  # here: a directory never needs it

            data = serialize_prv(prv)
            if uri:
                from kbapps.uris import sha1_uri
                from kbproto.prv import is_valid_entry_name

                name = os.path.basename(path)
                output.line(
                    sha1_uri(prv.sha1, name if is_valid_entry_name(name) else None),
                    stream=sys.stdout,
                )
            elif out is None:
                output.print_json_bytes(data)
            else:
                _write_atomically(out, data)
    finally:
        if cache is not None:
            cache.close()


def make_app() -> typer.Typer:
    """Build the typer application (``--help``, option parsing, usage errors)."""
    import typer

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @app.command(help=HELP)
    def create(
        path: str = typer.Argument(..., metavar="PATH", help="The file or directory to describe."),
        out: str | None = typer.Argument(
            None,
            metavar="OUT",
            help="Where to write: NAME.prv for a file (default: stdout), NAME.prvdir "
            "for a directory (required).",
        ),
        uri: bool = typer.Option(
            False,
            "--uri",
            help="Print the file's sha1://SHA1/NAME URI instead of its .prv (for "
            "kb-prv-download, kb-prv-find and Python's kbapps.api).",
        ),
    ) -> None:
        run(path, out, uri)

    return app


def _is_plain(argv: list[str]) -> bool:
    return 1 <= len(argv) <= 2 and not any(arg.startswith("-") for arg in argv)


def _via_typer(argv: list[str]) -> int:
    import typer
    import typer.main

    command = typer.main.get_command(make_app())
    try:
        result = command.main(args=argv, prog_name="kb-prv-create", standalone_mode=False)
    except typer.Abort:
        raise KeyboardInterrupt from None
    except Exception as exc:
        # click (vendored inside newer typer, a dependency of older ones) would print a
        # usage block and a boxed message; SPEC §3 wants one line. Matched by shape so
        # both layouts work.
        format_message = getattr(exc, "format_message", None)
        if not callable(format_message) or not isinstance(getattr(exc, "exit_code", None), int):
            raise
        raise UsageError(f"{format_message()} (see kb-prv-create --help)") from None
    return result if isinstance(result, int) else 0


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the exit code."""
    args = sys.argv[1:] if argv is None else argv

    def body() -> int:
        if _is_plain(args):
            run(args[0], args[1] if len(args) == 2 else None)
            return 0
        return _via_typer(args)

    return output.run_command(body)


if __name__ == "__main__":
    sys.exit(main())
