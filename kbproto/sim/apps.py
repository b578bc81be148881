"""Scripted applications for simulated nodes: file stores, finds, downloads, records.

Strategy
--------
A real kbucket node is a core plus an app: the share's app owns the files and answers
``RequestReceived``; a hub's app turns HTTP requests into ``find`` and
``open_request``. ``SimApp`` is both halves in memory, driven by the test:

* serving: a ``FileStore`` (path -> bytes) is announced to the core at every (re)start
  with ``set_files``; ``GET /<own id>/download/<path>`` and ``GET /sha1/<sha1>`` are
  answered with ``respond`` and ``send_data`` strictly within ``send_capacity``, more
  on ``StreamWritable`` (so the app never buffers more than the credit allows), with a
  single ``bytes=a-b`` Range honoured (206), and 404 for anything else;
* asking: ``find`` and ``download`` are commands the test calls; answers are kept in
  ``LookupRecord`` and ``DownloadRecord`` objects, so tests assert on results, not on
  event order. A download returns credit as it consumes, at once or after
  ``credit_delay`` simulated seconds (a slow client), which is what makes a window
  smaller than the file matter.

Inside ``on_event`` the app calls the core directly with ``node.now``; the network's
drain picks up what it queues (STYLE rule 11). Outside, it goes through
``SimNode.command`` so its output is drained right away. Records are created inside
the command, before any event about them can be delivered.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from kbproto.events import (
    Event,
    IndexSynced,
    JoinRefused,
    LinkClosed,
    LookupFailed,
    LookupResolved,
    ParentConnected,
    RequestReceived,
    ResponseData,
    ResponseEnded,
    ResponseStarted,
    StreamReset,
    StreamWritable,
)
from kbproto.hub import HubCore
from kbproto.ids import LookupId, StreamId
from kbproto.messages import FindResult
from kbproto.share import ShareCore
from kbproto.sim.network import SimNetwork, SimNode

__all__ = ("DownloadRecord", "FileStore", "LookupRecord", "SimApp", "sha1_hex")


def sha1_hex(data: bytes) -> str:
    """The content id of ``data`` (40 lowercase hex digits)."""
    return hashlib.sha1(data).hexdigest()


class FileStore:
    """The files of one simulated share, in memory: path -> bytes.

    Args:
        files: initial contents.
    """

    def __init__(self, files: Mapping[str, bytes] | None = None) -> None:
        # Read-only after construction (``SimApp.set_files`` builds a new store), so
        # the hashes are computed once.
        self.files: dict[str, bytes] = dict(sorted((files or {}).items()))
        self._sha1: dict[str, str] = {path: sha1_hex(data) for path, data in self.files.items()}
        self._first: dict[str, str] = {}
        for path, sha1 in self._sha1.items():
            self._first.setdefault(sha1, path)

    def entries(self) -> list[tuple[str, str, int]]:
        """``(sha1, path, size)`` for every file, sorted by path (what ``set_files`` takes)."""
        return [(self._sha1[path], path, len(data)) for path, data in self.files.items()]

    def sha1s(self) -> list[str]:
        """Every distinct content id held, sorted."""
        return sorted(self._first)

    def holds(self, sha1: str) -> bool:
        """True if some file has content ``sha1``."""
        return sha1 in self._first

    def by_sha1(self, sha1: str) -> tuple[str, bytes] | None:
        """The first file (by path) with content ``sha1``, or None."""
        path = self._first.get(sha1)
        return (path, self.files[path]) if path is not None else None


@dataclass(slots=True)
class LookupRecord:
    """One find issued by a test, and its outcome once ``done``."""

    lookup_id: LookupId
    sha1: str
    share_id: str | None
    started: float
    done: bool = False
    finished: float | None = None
    results: tuple[FindResult, ...] = ()
    reason: str = ""
    timed_out: bool = False

    @property
    def share_ids(self) -> list[str]:
        """The sorted share ids in the results."""
        return sorted({result.kbshare_id for result in self.results})


@dataclass(slots=True)
class DownloadRecord:
    """One request opened by a test, and the response as it arrives."""

    stream_id: StreamId
    target: str
    path: str
    started: float
    status: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    body: bytearray = field(default_factory=bytearray)
    done: bool = False
    ended: bool = False
    reset_status: int | None = None
    reset_reason: str = ""
    finished: float | None = None
    #: The most body bytes received but not yet credited back (the client's buffer).
    max_uncredited: int = 0
    uncredited: int = 0


@dataclass(slots=True)
class _Serving:
    data: bytes
    offset: int
    end: int


class SimApp:
    """A node's scripted app: serves a ``FileStore`` (if any) and issues finds/downloads.

    Args:
        store: the files this node serves (shares); None for a hub.
        credit_delay: seconds before consumed bytes are credited back (0: at once).
        serve_chunk: largest ``send_data`` call (bytes).
    """

    def __init__(
        self,
        store: FileStore | None = None,
        *,
        credit_delay: float = 0.0,
        serve_chunk: int = 16384,
    ) -> None:
        self.store = store
        self.credit_delay = credit_delay
        self.serve_chunk = serve_chunk
        self.lookups: dict[LookupId, LookupRecord] = {}
        self.downloads: dict[StreamId, DownloadRecord] = {}
        self.serving: dict[StreamId, _Serving] = {}
        self.joined = False
        #: The parent has acknowledged everything this node reported (``IndexSynced``).
        self.synced = False
        self.joins = 0
        self.served = 0
        self.refused: list[str] = []
        self.closed: list[LinkClosed] = []
        self.stream_resets: list[StreamReset] = []
        self._incarnation = -1

    # --- NodeApp --------------------------------------------------------------------

    def on_start(self, node: SimNode) -> None:
        """(Re)started: forget the old core's streams and announce the files."""
        self._incarnation = node.incarnation
        self.joined = False
        self.synced = False
        for record in list(self.lookups.values()):
            if not record.done:
                self._finish_lookup(record, node.now, reason="node restarted")
        for download in list(self.downloads.values()):
            if not download.done:
                download.done = True
                download.reset_status = 0
                download.reset_reason = "node restarted"
                download.finished = node.now
        self.serving.clear()
        core = _core(node)
        if self.store is not None and isinstance(core, ShareCore):
            core.set_files(self.store.entries(), node.now)

    def busy(self) -> bool:
        """True while a find or a download of this app is unfinished."""
        return any(not r.done for r in self.lookups.values()) or any(
            not d.done for d in self.downloads.values()
        )

    def on_event(self, node: SimNode, event: Event) -> None:
        """Route one event to the serving half, the asking half, or the link state."""
        if isinstance(event, ParentConnected):
            self.joined = True
            self.synced = False
            self.joins += 1
        elif isinstance(event, IndexSynced):
            self.synced = True
        elif isinstance(event, LinkClosed):
            self.closed.append(event)
            if event.role == "parent":
                self.joined = False
                self.synced = False
        elif isinstance(event, LookupResolved | LookupFailed):
            self._on_lookup(node, event)
        elif isinstance(event, RequestReceived):
            self._on_request(node, event)
        elif isinstance(event, StreamWritable):
            self._pump(node, event.stream_id)
        elif isinstance(event, ResponseStarted | ResponseData | ResponseEnded):
            self._on_response(node, event)
        elif isinstance(event, StreamReset):
            self.stream_resets.append(event)
            self.serving.pop(event.stream_id, None)
            download = self.downloads.get(event.stream_id)
            if download is not None and not download.done:
                download.done = True
                download.reset_status = event.status
                download.reset_reason = event.reason
                download.finished = node.now
        elif isinstance(event, JoinRefused):
            self.refused.append(event.reason)
        # ChildJoined: nothing for a script to do.

    # --- commands (call from tests and scheduled scripts) ---------------------------

    def find(self, node: SimNode, sha1: str, share_id: str | None = None) -> LookupRecord:
        """Start a find at ``node``; the returned record fills in when it is answered."""

        def run(core: object, now: float) -> LookupRecord:
            assert isinstance(core, HubCore | ShareCore)
            lookup_id = core.find(sha1, now, share_id=share_id)
            record = LookupRecord(lookup_id=lookup_id, sha1=sha1, share_id=share_id, started=now)
            self.lookups[lookup_id] = record
            return record

        return node.command(run)

    def download(
        self,
        node: SimNode,
        target: str,
        path: str,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> DownloadRecord:
        """Open ``GET path`` to node id ``target`` from ``node``; returns its record."""

        def run(core: object, now: float) -> DownloadRecord:
            assert isinstance(core, HubCore | ShareCore)
            sid = core.open_request(target, "GET", path, headers, now=now)
            record = DownloadRecord(stream_id=sid, target=target, path=path, started=now)
            self.downloads[sid] = record
            return record

        return node.command(run)

    def cancel(self, node: SimNode, record: DownloadRecord) -> None:
        """The client went away: reset the stream (every hop learns of it)."""

        def run(core: object, now: float) -> None:
            assert isinstance(core, HubCore | ShareCore)
            core.reset_stream(record.stream_id, now, "client went away")
            if not record.done:
                record.done = True
                record.reset_status = 499
                record.reset_reason = "cancelled by the client"
                record.finished = now

        node.command(run)

    def set_files(self, node: SimNode, files: Mapping[str, bytes]) -> None:
        """Replace the store's files and tell the core (only differences travel)."""
        # ``synced`` is left alone: a change that reports nothing new (same content
        # ids) brings no new ``IndexSynced``; convergence is judged at the hubs.
        self.store = FileStore(files)
        store = self.store

        def run(core: object, now: float) -> None:
            assert isinstance(core, ShareCore)
            core.set_files(store.entries(), now)

        node.command(run)

    # --- internals ------------------------------------------------------------------

    def _finish_lookup(
        self,
        record: LookupRecord,
        now: float,
        *,
        results: Iterable[FindResult] = (),
        reason: str = "",
        timed_out: bool = False,
    ) -> None:
        record.done = True
        record.finished = now
        record.results = tuple(results)
        record.reason = reason
        record.timed_out = timed_out

    def _on_lookup(self, node: SimNode, event: LookupResolved | LookupFailed) -> None:
        record = self.lookups.get(event.lookup_id)
        if record is None or record.done:
            return
        if isinstance(event, LookupResolved):
            self._finish_lookup(record, node.now, results=event.results)
        else:
            self._finish_lookup(record, node.now, reason=event.reason, timed_out=event.timed_out)

    def _on_request(self, node: SimNode, event: RequestReceived) -> None:
        core = _core(node)
        now = node.now
        found = self._resolve(core.node_id, event.path) if event.method in ("GET", "HEAD") else None
        if found is None:
            core.respond(event.stream_id, 404, (("content-length", "0"),), now=now)
            core.end_stream(event.stream_id, now)
            return
        start, end = 0, len(found)
        status = 200
        headers: list[tuple[str, str]] = [("accept-ranges", "bytes")]
        wanted = dict(event.headers).get("range")
        if wanted is not None:
            parsed = _parse_range(wanted, len(found))
            if parsed is None:
                core.respond(
                    event.stream_id, 416, (("content-range", f"bytes */{len(found)}"),), now=now
                )
                core.end_stream(event.stream_id, now)
                return
            start, end = parsed
            status = 206
            headers.append(("content-range", f"bytes {start}-{end - 1}/{len(found)}"))
        headers.append(("content-length", str(end - start)))
        core.respond(event.stream_id, status, tuple(headers), now=now)
        self.served += 1
        if event.method == "HEAD" or start == end:
            core.end_stream(event.stream_id, now)
            return
        self.serving[event.stream_id] = _Serving(data=found, offset=start, end=end)
        self._pump(node, event.stream_id)

    def _resolve(self, own_id: str, path: str) -> bytes | None:
        if self.store is None:
            return None
        parts = path.split("/", 3)
        if len(parts) == 4 and parts[0] == "" and parts[1] == own_id and parts[2] == "download":
            return self.store.files.get(parts[3])
        if len(parts) == 3 and parts[0] == "" and parts[1] == "sha1":
            found = self.store.by_sha1(parts[2])
            return found[1] if found is not None else None
        return None

    def _pump(self, node: SimNode, sid: StreamId) -> None:
        serving = self.serving.get(sid)
        if serving is None:
            return
        core = _core(node)
        now = node.now
        capacity = core.send_capacity(sid)
        while capacity > 0 and serving.offset < serving.end:
            n = min(capacity, serving.end - serving.offset, self.serve_chunk)
            core.send_data(sid, serving.data[serving.offset : serving.offset + n], now)
            serving.offset += n
            capacity -= n
        if serving.offset >= serving.end:
            del self.serving[sid]
            core.end_stream(sid, now)

    def _on_response(
        self, node: SimNode, event: ResponseStarted | ResponseData | ResponseEnded
    ) -> None:
        record = self.downloads.get(event.stream_id)
        if record is None or record.done:
            return
        if isinstance(event, ResponseStarted):
            record.status = event.status
            record.headers = event.headers
        elif isinstance(event, ResponseData):
            record.body += event.data
            record.uncredited += len(event.data)
            record.max_uncredited = max(record.max_uncredited, record.uncredited)
            if self.credit_delay <= 0:
                self._credit(node, record, len(event.data))
            else:
                self._credit_later(node, record, len(event.data))
        else:
            record.done = True
            record.ended = True
            record.finished = node.now

    def _credit(self, node: SimNode, record: DownloadRecord, amount: int) -> None:
        record.uncredited -= amount
        if not record.done:
            _core(node).grant_credit(record.stream_id, amount, node.now)

    def _credit_later(self, node: SimNode, record: DownloadRecord, amount: int) -> None:
        incarnation = node.incarnation

        def later(network: SimNetwork) -> None:
            if node.alive and node.incarnation == incarnation:
                node.command(lambda core, now: self._credit(node, record, amount))

        node.network.schedule(node.network.now + self.credit_delay, f"credit {node.name}", later)


def _core(node: SimNode) -> HubCore | ShareCore:
    core = node.core
    assert isinstance(core, HubCore | ShareCore), "SimApp drives HubCore or ShareCore"
    return core


def _parse_range(value: str, size: int) -> tuple[int, int] | None:
    """One ``bytes=a-b`` (or ``a-`` / ``-n``) range as a half-open span, or None."""
    if not value.startswith("bytes=") or "," in value:
        return None
    first, _, last = value[6:].partition("-")
    try:
        if first == "":
            n = int(last)
            return (max(0, size - n), size) if n > 0 else None
        start = int(first)
        end = size if last == "" else min(int(last) + 1, size)
    except ValueError:
        return None
    return (start, end) if 0 <= start < end else None
