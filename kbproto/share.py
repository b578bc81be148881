"""``ShareCore``: the protocol core of a share (docs/commands.md, kbucket-host and §5).

Strategy
--------
A share joins its parent hub (if it has one), reports its index (a full sync in
acknowledged batches, then coalesced changes), answers finds for its own files before
asking up, serves requests addressed to it (``RequestReceived`` -> ``respond`` /
``send_data`` / ``end_stream``), and can itself open requests to any node id through
its parent. The share's app owns the files, hashing and HTTP; it tells the core what
the index holds with ``set_files``/``put_file``/``remove_file`` (the core then keeps
its own copy, ``kbproto.index.ShareIndex``), or it hands the core a store of its
files (``files=``, ``kbproto.sharestore``) and tells it which content ids changed
with ``content_changed``: the core then keeps nothing per file (a million-file share).

Example::

    share = ShareCore(ShareConfig(name="lab data", listen_url="http://s:2000",
                                  parent_url="http://hub:3240"),
                      signer=signer, ids=SeededIdSource(2))
    share.set_files([(sha1, "data/file1.dat", 1234)], now)
    share.start(now)                       # queues Dial("http://hub:3240")
    share.link_opened(LinkId(1), now, dialed=True)
"""

from __future__ import annotations

from collections.abc import Iterable

from kbproto._common import _CoreCommon
from kbproto._node import _Node
from kbproto.auth import Signer
from kbproto.config import ShareConfig
from kbproto.errors import LocalProtocolError
from kbproto.ids import IdSource, is_sha1
from kbproto.index import ShareIndex
from kbproto.sharestore import ShareFiles
from kbproto.trace import TraceSink

__all__ = ("ShareCore",)


class ShareCore(_CoreCommon):
    """The sans-IO share (satisfies ``kbproto.core.NodeCore``).

    Args:
        config: who the share is, its parent (or None), limits and timeouts.
        signer: signs the registration with the parent.
        ids: backoff jitter.
        trace: optional sink for trace records.
        files: the app's store of its files (``kbproto.sharestore.ShareFiles``); then
            ``set_files``, ``put_file``, ``update_files`` and ``remove_file`` refuse,
            and ``content_changed`` reports changes.
    """

    def __init__(
        self,
        config: ShareConfig,
        *,
        signer: Signer,
        ids: IdSource,
        trace: TraceSink | None = None,
        files: ShareFiles | None = None,
    ) -> None:
        if not isinstance(config, ShareConfig):
            raise TypeError("ShareCore needs a ShareConfig")
        self._node = _Node(
            config, signer=signer, verifier=None, ids=ids, trace=trace, share_files=files
        )

    def _own_index(self) -> ShareIndex:
        """The core's own copy of the files (refused for a core reading a store)."""
        index = self._node.share_index
        if not isinstance(index, ShareIndex):
            raise LocalProtocolError("this share's files are in its store: use content_changed")
        return index

    def content_changed(self, sha1s: Iterable[str], now: float) -> None:
        """The files holding these content ids changed: report each one's current
        state (from the store, or the core's own index) to the parent. Drain actions
        after calling.

        Raises:
            LocalProtocolError: a malformed SHA-1 (nothing is reported).
        """
        raws = []
        for sha1 in sha1s:
            if not is_sha1(sha1):
                raise LocalProtocolError(f"not a sha1: {sha1!r}")
            raws.append(bytes.fromhex(sha1))
        for raw in raws:
            self._node.uplink.changed(raw)
        self._node.flush_index()

    def set_files(self, entries: Iterable[tuple[str, str, int]], now: float) -> None:
        """Replace the whole index with ``(sha1, path, size)`` entries.

        Only the differences are reported to the parent. Drain actions after calling.

        Raises:
            LocalProtocolError: a malformed entry (the index is left partly updated).
        """
        index = self._own_index()
        new: dict[str, tuple[str, int]] = {}
        for sha1, path, size in entries:
            new[path] = (sha1, size)
        for path in index.paths():
            if path not in new:
                index.remove(path)
        for path, (sha1, size) in new.items():
            index.put(sha1, path, size)
        self._node.flush_index()

    def put_file(self, sha1: str, path: str, size: int, now: float) -> None:
        """Add or replace the file at ``path``. Drain actions after calling.

        Raises:
            LocalProtocolError: malformed sha1, path or size.
        """
        index = self._own_index()
        index.put(sha1, path, size)
        self._node.flush_index()

    def update_files(
        self,
        puts: Iterable[tuple[str, str, int]],
        removes: Iterable[str],
        now: float,
    ) -> list[tuple[str, str]]:
        """Forget ``removes``, then add or replace ``(sha1, path, size)`` ``puts``, and
        report them to the parent together (one call per batch of a rescan, instead of
        one per file). Drain actions after calling.

        Returns:
            The puts refused as ``(path, reason)`` (malformed sha1, path or size); every
            other change is applied.
        """
        index = self._own_index()
        for path in removes:
            index.remove(path)
        refused: list[tuple[str, str]] = []
        for sha1, path, size in puts:
            try:
                index.put(sha1, path, size)
            except LocalProtocolError as exc:
                refused.append((str(path), str(exc)))
        self._node.flush_index()
        return refused

    def remove_file(self, path: str, now: float) -> None:
        """Forget the file at ``path`` (no-op if unknown). Drain actions after calling."""
        index = self._own_index()
        index.remove(path)
        self._node.flush_index()

    def file_count(self) -> int:
        """Number of indexed files."""
        index = self._node.share_index
        assert index is not None
        return len(index)

    def lookup_local(self, sha1: str) -> tuple[str, int] | None:
        """``(path, size)`` this share reports for ``sha1``, or None."""
        index = self._node.share_index
        assert index is not None
        try:
            raw = bytes.fromhex(sha1)
        except ValueError:
            return None
        return index.representative(raw)
