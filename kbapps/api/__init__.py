"""kbucket from Python: load, find, list and read files of the network (``docs/python-api.md``).

A file is named by a ``.prv`` path, a ``.prv`` dict or ``Prv``, a ``sha1://SHA1[/NAME]``
URI (content, wherever it is) or a ``kbucket://NODE_ID/PATH`` URI (a share's file or
directory)::

    from kbapps import api

    path = api.load_file("sha1://0123...")                # verified, cached, resumable
    api.find("kbucket://a1b2c3d4e5f6/data/x.csv").urls     # where it is, best first
    for entry in api.list_dir("kbucket://a1b2c3d4e5f6/data"):
        print(entry.name, entry.size, entry.sha1)
    api.load_dir("kbucket://a1b2c3d4e5f6/data", "local/data")
    with api.open_file("kbucket://a1b2c3d4e5f6/data/big.bin") as f:
        f.seek(1 << 30)
        block = f.read(65536)                              # fetches only that range

The hub is ``hub=``, else ``$KBUCKET_URL``, else ``http://localhost:3240``. Errors
are ``kbapps.download.ClientError`` subclasses, each with the command's ``exit_code``.
These functions block; they run their async work on a loop thread of their own
(``kbapps.api.loop``), so they work inside Jupyter and other running event loops too.
Async programs use the same functions from ``kbapps.api.aio``. fsspec users open
``sha1://`` and ``kbucket://`` URLs directly (``kbapps.api.filesystem``).
"""

from __future__ import annotations

import os
from pathlib import Path

from kbapps.api import aio
from kbapps.api.fileobj import RemoteFile
from kbapps.api.loop import run_in_loop
from kbapps.api.ranged import DEFAULT_READ_OPTIONS, ReadOptions
from kbapps.api.remote import DirEntry
from kbapps.api.sources import Source
from kbapps.download import ClientOptions, FindResult, PrvDirResult
from kbapps.uris import KBucketUri, Sha1Uri, parse_uri, sha1_uri
from kbproto.prv import Prv, PrvDir

__all__ = (
    "DirEntry",
    "KBucketUri",
    "ReadOptions",
    "RemoteFile",
    "Sha1Uri",
    "Source",
    "find",
    "get_prv",
    "list_dir",
    "load_dir",
    "load_file",
    "open_file",
    "parse_uri",
    "sha1_uri",
)


def get_prv(
    source: Source, *, hub: str | None = None, options: ClientOptions | None = None
) -> Prv | PrvDir:
    """The ``.prv`` (or ``.prvdir``) ``source`` names; see ``kbapps.api.aio.get_prv``."""
    return run_in_loop(lambda: aio.get_prv(source, hub=hub, options=options))


def find(
    source: Source, *, hub: str | None = None, options: ClientOptions | None = None
) -> FindResult:
    """Where the network has a file's content; see ``kbapps.api.aio.find``."""
    return run_in_loop(lambda: aio.find(source, hub=hub, options=options))


def list_dir(
    uri: str | KBucketUri, *, hub: str | None = None, options: ClientOptions | None = None
) -> list[DirEntry]:
    """The entries of ``kbucket://NODE_ID/PATH``; see ``kbapps.api.aio.list_dir``."""
    return run_in_loop(lambda: aio.list_dir(uri, hub=hub, options=options))


def load_file(
    source: Source,
    out: str | os.PathLike[str] | None = None,
    *,
    hub: str | None = None,
    options: ClientOptions | None = None,
) -> Path:
    """Download a file, verified, and return its path; see ``kbapps.api.aio.load_file``."""
    return run_in_loop(lambda: aio.load_file(source, out, hub=hub, options=options))


def load_dir(
    source: Source,
    out: str | os.PathLike[str],
    *,
    hub: str | None = None,
    options: ClientOptions | None = None,
) -> PrvDirResult:
    """Download a directory into ``out``; see ``kbapps.api.aio.load_dir``."""
    return run_in_loop(lambda: aio.load_dir(source, out, hub=hub, options=options))


def open_file(
    source: Source,
    *,
    hub: str | None = None,
    options: ClientOptions | None = None,
    read_options: ReadOptions = DEFAULT_READ_OPTIONS,
) -> RemoteFile:
    """Open a remote file as a read-only, seekable binary file that fetches only the
    ranges read; see ``kbapps.api.aio.open_file``. Close it (or use ``with``)."""
    remote = run_in_loop(
        lambda: aio.open_file(source, hub=hub, options=options, read_options=read_options)
    )
    return RemoteFile(remote)
