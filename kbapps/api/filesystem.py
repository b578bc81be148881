"""fsspec file systems for ``sha1://`` and ``kbucket://`` URLs (``docs/python-api.md``).

Registered by entry point (``fsspec.specs`` in ``pyproject.toml``), so anything built
on fsspec opens kbucket files with no kbucket-specific code::

    import fsspec, pandas
    with fsspec.open("sha1://0123...") as f: ...
    frame = pandas.read_csv("kbucket://a1b2c3d4e5f6/data/table.csv")

``ls``, ``info``, ``cat_file`` (with ranges), ``open`` (read-only, binary: text modes
are fsspec's wrapper) and ``get`` behave as fsspec's own file systems do: ``open``
returns a ``kbapps.api.RemoteFile`` that fetches only the ranges read, and ``get``
downloads verified, as ``kb-prv-download`` does. Storage options: ``hub`` (else
``$KBUCKET_URL``, else the default hub), ``options`` (``ClientOptions``) and
``read_options`` (``ReadOptions``). Paths without their scheme are ``SHA1[/NAME]``
and ``NODE_ID/PATH``. A missing file is ``FileNotFoundError``; other failures are
``OSError`` with kbucket's one-line message.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

from fsspec.spec import AbstractFileSystem

from kbapps import api
from kbapps.api.ranged import DEFAULT_READ_OPTIONS, ReadOptions
from kbapps.api.remote import DirEntry
from kbapps.download import (
    BadInputError,
    ClientError,
    ClientOptions,
    NotFoundError,
    default_options,
)
from kbapps.uris import KBUCKET_SCHEME, SHA1_SCHEME, KBucketUri, Sha1Uri, UriError, parse_uri
from kbproto.prv import Prv

__all__ = ("KBucketFileSystem", "Sha1FileSystem")


@contextlib.contextmanager
def _as_os_errors(path: str) -> Iterator[None]:
    """kbucket's errors as the ``OSError`` family fsspec callers expect."""
    try:
        yield
    except NotFoundError as exc:
        raise FileNotFoundError(exc.message) from None
    except OSError:
        raise
    except BadInputError as exc:
        raise ValueError(exc.message) from None
    except ClientError as exc:
        raise OSError(f"{path}: {exc.message}") from None


class _KBucketBase(AbstractFileSystem):  # type: ignore[misc]  # fsspec is untyped
    """What both schemes share: options, ``open``, ``get_file``."""

    scheme = ""
    cachable = True

    def __init__(
        self,
        hub: str | None = None,
        options: ClientOptions | None = None,
        read_options: ReadOptions = DEFAULT_READ_OPTIONS,
        **storage_options: Any,
    ) -> None:
        super().__init__(**storage_options)
        self.hub = hub
        self.client_options = options
        self.read_options = read_options

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        text = str(path)
        if text[: len(cls.scheme)].lower() == cls.scheme:
            text = text[len(cls.scheme) :]
        return text.strip("/")

    def unstrip_protocol(self, name: str) -> str:
        """The full URL of ``name``."""
        return self.scheme + self._strip_protocol(name)

    def _uri(self, path: str) -> Sha1Uri | KBucketUri:
        try:
            return parse_uri(self.unstrip_protocol(path))
        except UriError as exc:
            raise ValueError(str(exc)) from None

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> api.RemoteFile:
        if mode != "rb":
            raise NotImplementedError(f"{self.scheme} files are read-only (mode {mode!r})")
        read_options = self.read_options
        if block_size:
            read_options = ReadOptions(
                block_size=block_size,
                cache_blocks=read_options.cache_blocks,
                max_readahead=max(block_size, read_options.max_readahead),
            )
        uri = str(self._uri(path))
        with _as_os_errors(uri):
            return api.open_file(
                uri, hub=self.hub, options=self.client_options, read_options=read_options
            )

    def get_file(self, rpath: str, lpath: str, callback: Any = None, **kwargs: Any) -> None:
        """Download ``rpath`` to the local file ``lpath``, verified (a file already
        there with other content is replaced, as fsspec's ``get`` does)."""
        uri = str(self._uri(rpath))
        options = self.client_options or default_options(self.hub)
        with _as_os_errors(uri):
            api.load_file(uri, lpath, options=_forced(options))

    def ukey(self, path: str) -> str:
        """The content's SHA-1: it changes exactly when the content does."""
        return str(self.info(path)["sha1"])

    def _file_info(self, name: str, prv: Prv | None, size: int | None) -> dict[str, Any]:
        return {
            "name": name,
            "size": prv.size if prv is not None else size,
            "type": "file",
            "sha1": prv.sha1 if prv is not None else None,
        }


def _forced(options: ClientOptions) -> ClientOptions:
    return dataclasses.replace(options, force=True)


class Sha1FileSystem(_KBucketBase):
    """``sha1://SHA1[/NAME]``: content by its SHA-1, wherever the network has it."""

    protocol = ("sha1",)
    scheme = SHA1_SCHEME

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        """``name``, ``size``, ``type`` (``file``) and ``sha1`` of the content."""
        name = self._strip_protocol(path)
        uri = self._uri(path)
        with _as_os_errors(str(uri)):
            prv = api.get_prv(str(uri), hub=self.hub, options=self.client_options)
        assert isinstance(prv, Prv)
        return self._file_info(name, prv, None)

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        """The content itself (a ``sha1://`` URL names one file)."""
        info = self.info(path)
        return [info] if detail else [info["name"]]


class KBucketFileSystem(_KBucketBase):
    """``kbucket://NODE_ID/PATH``: the files and directories of a share."""

    protocol = ("kbucket",)
    scheme = KBUCKET_SCHEME

    def _entry_info(self, entry: DirEntry) -> dict[str, Any]:
        name = f"{entry.uri.node_id}/{entry.uri.path}"
        if entry.is_dir:
            return {"name": name, "size": 0, "type": "directory"}
        return self._file_info(name, entry.prv, entry.size)

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        """The entries of a directory (a file: itself), as fsspec's ``ls``."""
        uri = self._uri(path)
        assert isinstance(uri, KBucketUri)
        try:
            with _as_os_errors(str(uri)):
                entries = api.list_dir(uri, hub=self.hub, options=self.client_options)
        except OSError as not_listed:
            # A file lists as itself (fsspec's rule); anything else keeps the error.
            info = self.info(path)
            if info["type"] != "file":
                raise not_listed from None
            entries_info = [info]
        else:
            entries_info = [self._entry_info(entry) for entry in entries]
        return entries_info if detail else [item["name"] for item in entries_info]

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        """``name``, ``size``, ``type`` (and for a hashed file ``sha1``) of ``path``."""
        uri = self._uri(path)
        assert isinstance(uri, KBucketUri)
        name = self._strip_protocol(path)
        if not uri.path:
            return {"name": name, "size": 0, "type": "directory"}
        parent_path, _, leaf = uri.path.rpartition("/")
        parent = KBucketUri(node_id=uri.node_id, path=parent_path)
        with _as_os_errors(str(uri)):
            entries = api.list_dir(parent, hub=self.hub, options=self.client_options)
        for entry in entries:
            if entry.name == leaf:
                return self._entry_info(entry)
        raise FileNotFoundError(f"{uri}: no such file or directory")
