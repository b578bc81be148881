"""The wire messages of the parent-child link (``docs/protocol.md`` section 3).

Strategy
--------
Every message is a frozen, slotted, keyword-only dataclass that validates itself in
``__post_init__`` (STYLE rule 5), so an invalid message cannot exist: the codec decodes
JSON into plain Python values and hands them to the constructor, and any ``ValueError``
or ``TypeError`` the constructor raises becomes a ``RemoteProtocolError`` at the link.
The object a share sends is, field for field, the object the hub decodes.

Field names are the JSON keys on the wire; ``TYPE`` is the value of the ``"type"`` key.
Compact repeated data (index entries, hub chains, headers) are tuples of tuples, which
travel as JSON arrays of arrays: one object per entry would cost a dict per entry on
both ends for a million-entry index.

All size limits here are protocol constants: a sender must stay under them and a
receiver rejects anything over them. Each carries the reason for its value.

Messages by phase:

* joining: ``Challenge`` (parent), ``Register`` (child, carrying its signed
  ``Placement``), ``Welcome`` (parent), ``Error``;
* liveness: ``Ping`` (both sides, every heartbeat interval);
* index: ``ShareIndexUpdate`` / ``HubIndexUpdate`` (child; a hub's carries the
  ``Placement`` of every node id it reports), ``IndexAck`` and ``Resync`` (parent);
* lookup: ``Find`` and ``FindReply`` (both directions);
* streams: ``Open``, ``Response``, ``Data`` (a binary frame), ``End``, ``Credit``,
  ``Reset`` (both directions).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from kbproto.ids import NodeId, is_node_id, is_sha1

__all__ = (
    "MAX_BATCH_ENTRIES",
    "MAX_CREDIT",
    "MAX_DATA_CHUNK",
    "MAX_HEADERS",
    "MAX_HEADER_NAME",
    "MAX_HEADER_VALUE",
    "MAX_HOPS",
    "MAX_ID",
    "MAX_PATH",
    "MAX_PEM",
    "MAX_RESULTS",
    "MAX_SEQ",
    "MAX_SIGNATURE",
    "MAX_SIZE",
    "MAX_TEXT",
    "MAX_TIMEOUT_MS",
    "MAX_URL",
    "NODE_TYPES",
    "PROTOCOL_VERSION",
    "Challenge",
    "Credit",
    "Data",
    "End",
    "Error",
    "Find",
    "FindReply",
    "FindResult",
    "HubIndexUpdate",
    "IndexAck",
    "Message",
    "NodeInfo",
    "Open",
    "Ping",
    "Placement",
    "Register",
    "Reset",
    "Response",
    "Resync",
    "ShareIndexUpdate",
    "Welcome",
)

#: Version byte of every frame; a peer speaking another version loses the link.
#: Version 4 signs a ``Placement`` at every join and carries placements, not bare
#: node ids, in ``HubIndexUpdate`` (docs/protocol.md section 3).
PROTOCOL_VERSION = 4
#: Free-text fields (name, description, owner...): generous for a paragraph, small
#: enough that a registration always fits one frame.
MAX_TEXT = 4096
#: URLs: browsers cope with 2 KiB; nothing we build is longer.
MAX_URL = 2048
#: Share-relative paths: PATH_MAX on Linux is 4096 bytes.
MAX_PATH = 4096
#: Public key PEM: an RSA-4096 SubjectPublicKeyInfo PEM is about 800 characters.
MAX_PEM = 8192
#: Signature bytes (hex on the wire): RSA-4096 signatures are 512 bytes.
MAX_SIGNATURE = 1024
#: Request and response headers per message; HTTP servers commonly allow about 100.
MAX_HEADERS = 64
#: One header name; real names are under 40 characters.
MAX_HEADER_NAME = 256
#: One header value; h11's whole-head default is 16 KiB.
MAX_HEADER_VALUE = 8192
#: Entries in one index message: keeps every index frame well under the frame cap.
MAX_BATCH_ENTRIES = 4096
#: Results in one find reply: the client needs a handful of sources, not thousands.
MAX_RESULTS = 256
#: Hubs in one result's chain: a tree deeper than this is a misconfiguration.
MAX_HOPS = 64
#: Bytes one data frame may carry (``Limits.data_chunk`` is what a sender uses). As
#: large as a control frame may be. Version 2 capped frames at 64 KiB: a hub relaying
#: a GiB then handled 16,384 frames, and per-frame work was a fifth of its CPU.
MAX_DATA_CHUNK = 1024 * 1024
#: Largest heartbeat timeout a node may announce (2**31 - 1 ms, about 24.8 days).
MAX_TIMEOUT_MS = 2**31 - 1
#: Query and stream numbers are unsigned 32-bit (data frames carry them in 4 bytes).
MAX_ID = 2**32 - 1
#: Sequence numbers stay exact in every JSON implementation (IEEE double mantissa).
MAX_SEQ = 2**53 - 1
#: File sizes: signed 64-bit, like every file system's offsets.
MAX_SIZE = 2**63 - 1
#: One credit grant, and the largest window a stream may ever have open.
MAX_CREDIT = 2**31 - 1
#: The two kinds of node (docs/formats.md §3 ``node_type``).
NODE_TYPES = ("leaf", "hub")

_SHA1_RE = re.compile(r"[0-9a-f]{40}")
_NODE_ID_RE = re.compile(r"[0-9a-f]{12}")
_HEX_RE = re.compile(r"[0-9a-f]*")


def _text(name: str, value: object, limit: int, *, empty: bool = True) -> None:
    """Check ``value`` is a str of at most ``limit`` characters."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string")
    if len(value) > limit:
        raise ValueError(f"{name} is longer than {limit} characters")
    if not empty and not value:
        raise ValueError(f"{name} must not be empty")


def _int(name: str, value: object, low: int, high: int) -> None:
    """Check ``value`` is an int (never a bool) in ``[low, high]``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}]")


def _node_id(name: str, value: object) -> None:
    """Check a node id."""
    if not is_node_id(value):
        raise ValueError(f"{name} must be 12 lowercase hex digits")


def _nonce(value: object) -> None:
    """Check a challenge nonce: 64 lowercase hex digits (32 random bytes)."""
    if not isinstance(value, str) or len(value) != 64 or _HEX_RE.fullmatch(value) is None:
        raise ValueError("nonce must be 64 lowercase hex digits")


def _sha1(name: str, value: object) -> None:
    """Check a content id."""
    if not is_sha1(value):
        raise ValueError(f"{name} must be 40 lowercase hex digits")


def _tuple(name: str, value: object, limit: int) -> tuple[object, ...]:
    """Check ``value`` is a tuple of at most ``limit`` items and return it."""
    if not isinstance(value, tuple):
        raise TypeError(f"{name} must be a tuple")
    if len(value) > limit:
        raise ValueError(f"{name} has more than {limit} items")
    return value


def _path(name: str, value: object) -> None:
    """A share-relative path: non-empty, no NUL (it would end a C string)."""
    _text(name, value, MAX_PATH, empty=False)
    assert isinstance(value, str)
    if "\x00" in value:
        raise ValueError(f"{name} must not contain NUL")


def _headers(value: object) -> None:
    """Headers are (name, value) pairs of strings; names are non-empty tokens."""
    for item in _tuple("headers", value, MAX_HEADERS):
        if not isinstance(item, tuple) or len(item) != 2:
            raise TypeError("each header must be a (name, value) pair")
        _text("header name", item[0], MAX_HEADER_NAME, empty=False)
        _text("header value", item[1], MAX_HEADER_VALUE)
        if any(c in item[0] or c in item[1] for c in "\r\n\x00"):
            raise ValueError("headers must not contain CR, LF or NUL")


def _hops(value: object) -> None:
    """Check a hub chain: ``(node_id, listen_url)`` pairs."""
    for item in _tuple("hops", value, MAX_HOPS):
        if not isinstance(item, tuple) or len(item) != 2:
            raise TypeError("each hop must be a (node_id, listen_url) pair")
        _node_id("hop node_id", item[0])
        _text("hop listen_url", item[1], MAX_URL)


# --- joining -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeInfo:
    """What a node says about itself (docs/formats.md §3 and the ``nodeinfo`` route).

    Sent by the child inside ``Register`` and by the parent inside ``Welcome``.
    ``confirm_share`` is ``"yes"`` for a share that agreed to share its directory and
    ``""`` for a hub.
    """

    node_id: NodeId
    node_type: str
    name: str
    description: str
    owner: str
    owner_email: str
    listen_url: str
    public_key: str
    scientific_research: str
    confirm_share: str

    def __post_init__(self) -> None:
        _node_id("node_id", self.node_id)
        if self.node_type not in NODE_TYPES:
            raise ValueError("node_type must be 'leaf' or 'hub'")
        for name in ("name", "description", "owner", "owner_email"):
            _text(name, getattr(self, name), MAX_TEXT)
        _text("listen_url", self.listen_url, MAX_URL)
        _text("public_key", self.public_key, MAX_PEM, empty=False)
        _text("scientific_research", self.scientific_research, 16)
        _text("confirm_share", self.confirm_share, 16)


@dataclass(frozen=True, slots=True, kw_only=True)
class Challenge:
    """Parent -> child, first frame on a new link: sign this to join.

    ``nonce`` is 32 fresh bytes (hex) from the parent's ``IdSource``; ``node_id`` is
    the parent's own id, bound into the signed transcript so a signature made for one
    hub is useless at another. ``max_streams``/``max_lookups`` are the parent's limits
    for streams and finds the child may have open on this link at once;
    ``heartbeat_timeout_ms`` is the silence after which the parent drops the link, so
    the child pings often enough (at most a third of it apart).
    """

    TYPE: ClassVar[str] = "challenge"
    nonce: str
    node_id: NodeId
    max_streams: int
    max_lookups: int
    heartbeat_timeout_ms: int

    def __post_init__(self) -> None:
        _nonce(self.nonce)
        _node_id("node_id", self.node_id)
        _int("max_streams", self.max_streams, 1, 65536)
        _int("max_lookups", self.max_lookups, 1, 65536)
        _int("heartbeat_timeout_ms", self.heartbeat_timeout_ms, 1, MAX_TIMEOUT_MS)


@dataclass(frozen=True, slots=True, kw_only=True)
class Placement:
    """A node's signed statement of where it joined the tree (docs/protocol.md §3.2).

    ``info`` is the node as it registered; ``parent`` the node id of the hub it joined;
    ``nonce`` that hub's challenge on the link, so the one signature is also the
    join's fresh proof of key; ``stamp`` a number that only grows for this node
    (wall-clock milliseconds at the join, kept above the last one it used), so where
    two placements of one node meet, the newer wins. ``signature`` (hex) signs
    ``kbproto.placement.placement_transcript``. A hub forwards the placements of its
    whole subtree upward, and every hub above checks each one (docs/protocol.md §5).
    """

    info: NodeInfo
    parent: NodeId
    nonce: str
    stamp: int
    scheme: str
    signature: str

    def __post_init__(self) -> None:
        if not isinstance(self.info, NodeInfo):
            raise TypeError("info must be a NodeInfo")
        _node_id("parent", self.parent)
        _nonce(self.nonce)
        _int("stamp", self.stamp, 0, MAX_SEQ)
        _text("scheme", self.scheme, 64, empty=False)
        _text("signature", self.signature, 2 * MAX_SIGNATURE, empty=False)
        if _HEX_RE.fullmatch(self.signature) is None or len(self.signature) % 2:
            raise ValueError("signature must be lowercase hex")

    @property
    def node_id(self) -> NodeId:
        """The id of the node this placement is about."""
        return self.info.node_id


@dataclass(frozen=True, slots=True, kw_only=True)
class Register:
    """Child -> parent: who I am, and proof that I hold my node's private key.

    ``placement`` is signed over the challenge's nonce and the parent's id (its
    ``nonce`` and ``parent`` must be exactly those), so it proves the key on this link
    and is also the statement the parent forwards upward. ``heartbeat_timeout_ms`` is
    the child's own heartbeat timeout, which paces the parent's pings.
    """

    TYPE: ClassVar[str] = "register"
    placement: Placement
    passcode: str
    max_streams: int
    max_lookups: int
    heartbeat_timeout_ms: int

    def __post_init__(self) -> None:
        if not isinstance(self.placement, Placement):
            raise TypeError("placement must be a Placement")
        _text("passcode", self.passcode, MAX_TEXT)
        _int("max_streams", self.max_streams, 1, 65536)
        _int("max_lookups", self.max_lookups, 1, 65536)
        _int("heartbeat_timeout_ms", self.heartbeat_timeout_ms, 1, MAX_TIMEOUT_MS)

    @property
    def info(self) -> NodeInfo:
        """The joining node's info (from its placement)."""
        return self.placement.info


@dataclass(frozen=True, slots=True, kw_only=True)
class Welcome:
    """Parent -> child: registration accepted; ``info`` is the parent's own info."""

    TYPE: ClassVar[str] = "welcome"
    info: NodeInfo

    def __post_init__(self) -> None:
        if not isinstance(self.info, NodeInfo):
            raise TypeError("info must be a NodeInfo")


@dataclass(frozen=True, slots=True, kw_only=True)
class Error:
    """Either side, last frame before hanging up: why the link is being closed.

    ``code`` is one of ``refused`` (registration refused), ``protocol`` (malformed or
    out-of-order input), ``limit`` (a bound was crossed), ``timeout``, ``shutdown``.
    """

    TYPE: ClassVar[str] = "error"
    code: str
    reason: str

    def __post_init__(self) -> None:
        _text("code", self.code, 32, empty=False)
        _text("reason", self.reason, MAX_TEXT)


@dataclass(frozen=True, slots=True, kw_only=True)
class Ping:
    """Either side, every heartbeat interval: I am alive (no answer expected)."""

    TYPE: ClassVar[str] = "ping"


# --- index ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ShareIndexUpdate:
    """Share -> parent: one batch of its index.

    ``seq`` counts index messages on this link from 0 (``reset``) upward by one. With
    ``reset`` the parent first forgets everything this child reported. ``put`` entries
    are ``(sha1, path, size)`` and replace the entry for that sha1; ``drop`` lists sha1s
    the share no longer holds.
    """

    TYPE: ClassVar[str] = "share_index"
    seq: int
    reset: bool
    put: tuple[tuple[str, str, int], ...]
    drop: tuple[str, ...]

    def __post_init__(self) -> None:
        _int("seq", self.seq, 0, MAX_SEQ)
        if not isinstance(self.reset, bool):
            raise TypeError("reset must be a boolean")
        if (
            len(_tuple("put", self.put, MAX_BATCH_ENTRIES))
            + len(_tuple("drop", self.drop, MAX_BATCH_ENTRIES))
            > MAX_BATCH_ENTRIES
        ):
            raise ValueError(f"an index message holds at most {MAX_BATCH_ENTRIES} entries")
        # Inlined checks: a full sync validates millions of entries.
        sha1_ok = _SHA1_RE.fullmatch
        for entry in self.put:
            if type(entry) is not tuple or len(entry) != 3:
                raise TypeError("each put entry must be (sha1, path, size)")
            sha1, path, size = entry
            if type(sha1) is not str or sha1_ok(sha1) is None:
                raise ValueError("sha1 must be 40 lowercase hex digits")
            if type(path) is not str or not path or len(path) > MAX_PATH or "\x00" in path:
                raise ValueError(f"path must be 1 to {MAX_PATH} characters without NUL")
            if type(size) is not int or not 0 <= size <= MAX_SIZE:
                raise ValueError(f"size must be an integer in [0, {MAX_SIZE}]")
        for sha1 in self.drop:
            if type(sha1) is not str or sha1_ok(sha1) is None:
                raise ValueError("sha1 must be 40 lowercase hex digits")


@dataclass(frozen=True, slots=True, kw_only=True)
class HubIndexUpdate:
    """Hub -> parent: changes to the content ids and node ids its subtree reaches.

    Same ``seq``/``reset`` rules as ``ShareIndexUpdate``. ``content_put``/``content_drop``
    are sha1s that became reachable/unreachable. ``nodes_put`` holds the signed
    ``Placement`` of each node id that became reachable (or whose placement changed),
    ``nodes_drop`` the node ids that became unreachable: a parent routes only ids it
    can check (docs/protocol.md §5).
    """

    TYPE: ClassVar[str] = "hub_index"
    seq: int
    reset: bool
    content_put: tuple[str, ...]
    content_drop: tuple[str, ...]
    nodes_put: tuple[Placement, ...]
    nodes_drop: tuple[NodeId, ...]

    def __post_init__(self) -> None:
        _int("seq", self.seq, 0, MAX_SEQ)
        if not isinstance(self.reset, bool):
            raise TypeError("reset must be a boolean")
        total = 0
        for name in ("content_put", "content_drop", "nodes_drop"):
            items = _tuple(name, getattr(self, name), MAX_BATCH_ENTRIES)
            total += len(items)
            pattern = _SHA1_RE if name.startswith("content") else _NODE_ID_RE
            for item in items:
                if type(item) is not str or pattern.fullmatch(item) is None:
                    raise ValueError(f"{name} holds a malformed id")
        placements = _tuple("nodes_put", self.nodes_put, MAX_BATCH_ENTRIES)
        total += len(placements)
        for placement in placements:
            if not isinstance(placement, Placement):
                raise TypeError("nodes_put must hold Placement objects")
        if total > MAX_BATCH_ENTRIES:
            raise ValueError(f"an index message holds at most {MAX_BATCH_ENTRIES} entries")


@dataclass(frozen=True, slots=True, kw_only=True)
class IndexAck:
    """Parent -> child: index message ``seq`` was applied (paces the child's sync)."""

    TYPE: ClassVar[str] = "index_ack"
    seq: int

    def __post_init__(self) -> None:
        _int("seq", self.seq, 0, MAX_SEQ)


@dataclass(frozen=True, slots=True, kw_only=True)
class Resync:
    """Parent -> child: I saw a gap in ``seq``; send your whole index again (reset)."""

    TYPE: ClassVar[str] = "resync"
    expected: int

    def __post_init__(self) -> None:
        _int("expected", self.expected, 0, MAX_SEQ)


# --- lookup --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class FindResult:
    """One place holding the content.

    ``hops`` are the hubs (node id, listen URL) between the share and the node that
    asked, nearest the share first; every hub appends itself when it relays a reply.
    """

    kbshare_id: NodeId
    share_url: str
    path: str
    size: int
    hops: tuple[tuple[NodeId, str], ...]

    def __post_init__(self) -> None:
        _node_id("kbshare_id", self.kbshare_id)
        _text("share_url", self.share_url, MAX_URL)
        _path("path", self.path)
        _int("size", self.size, 0, MAX_SIZE)
        _hops(self.hops)


@dataclass(frozen=True, slots=True, kw_only=True)
class Find:
    """Where is ``sha1``? (optionally only on share ``share_id``).

    ``up`` is True when a child asks its parent (search your subtree except my
    branch, then your parent), False when a parent asks a child hub (search only your
    subtree). ``ttl_ms`` is what is left of the asker's deadline; every hop answers
    before it runs out. ``query`` is chosen by the sender, unique among its open finds
    on this link.
    """

    TYPE: ClassVar[str] = "find"
    query: int
    sha1: str
    share_id: NodeId | None
    up: bool
    ttl_ms: int

    def __post_init__(self) -> None:
        _int("query", self.query, 0, MAX_ID)
        _sha1("sha1", self.sha1)
        if self.share_id is not None:
            _node_id("share_id", self.share_id)
        if not isinstance(self.up, bool):
            raise TypeError("up must be a boolean")
        _int("ttl_ms", self.ttl_ms, 0, 3_600_000)


@dataclass(frozen=True, slots=True, kw_only=True)
class FindReply:
    """The answer to ``Find`` number ``query``: every result found (maybe none)."""

    TYPE: ClassVar[str] = "find_reply"
    query: int
    results: tuple[FindResult, ...]

    def __post_init__(self) -> None:
        _int("query", self.query, 0, MAX_ID)
        for result in _tuple("results", self.results, MAX_RESULTS):
            if not isinstance(result, FindResult):
                raise TypeError("results must be FindResult objects")


# --- proxy streams -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Open:
    """Open stream ``stream``: an HTTP-like request for node ``target``.

    The dialing side (child) numbers its streams odd, the accepting side (parent)
    even, each increasing. ``credit`` is the initial window: how many response body
    bytes the receiver may send before more ``Credit`` arrives.
    """

    TYPE: ClassVar[str] = "open"
    stream: int
    target: NodeId
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    credit: int

    def __post_init__(self) -> None:
        _int("stream", self.stream, 1, MAX_ID)
        _node_id("target", self.target)
        _text("method", self.method, 16, empty=False)
        if not self.method.isalpha() or not self.method.isupper():
            raise ValueError("method must be upper-case letters")
        _text("path", self.path, MAX_PATH + MAX_URL, empty=False)
        if not self.path.startswith("/") or any(c in self.path for c in " \r\n\x00"):
            raise ValueError("path must start with / and hold no spaces or controls")
        _headers(self.headers)
        _int("credit", self.credit, 0, MAX_CREDIT)


@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    """The response head for ``stream`` (sent once, before any data)."""

    TYPE: ClassVar[str] = "response"
    stream: int
    status: int
    headers: tuple[tuple[str, str], ...]

    def __post_init__(self) -> None:
        _int("stream", self.stream, 1, MAX_ID)
        _int("status", self.status, 100, 599)
        _headers(self.headers)


@dataclass(frozen=True, slots=True, kw_only=True)
class Data:
    """Response body bytes for ``stream`` (a binary frame, never JSON)."""

    TYPE: ClassVar[str] = "data"
    stream: int
    data: bytes

    def __post_init__(self) -> None:
        _int("stream", self.stream, 1, MAX_ID)
        if not isinstance(self.data, bytes):
            raise TypeError("data must be bytes")
        if not 1 <= len(self.data) <= MAX_DATA_CHUNK:
            raise ValueError(f"a data frame carries 1 to {MAX_DATA_CHUNK} bytes")


@dataclass(frozen=True, slots=True, kw_only=True)
class End:
    """The response for ``stream`` is complete; the stream is closed."""

    TYPE: ClassVar[str] = "end"
    stream: int

    def __post_init__(self) -> None:
        _int("stream", self.stream, 1, MAX_ID)


@dataclass(frozen=True, slots=True, kw_only=True)
class Credit:
    """The receiver of ``stream`` consumed data: the sender may send ``credit`` more."""

    TYPE: ClassVar[str] = "credit"
    stream: int
    credit: int

    def __post_init__(self) -> None:
        _int("stream", self.stream, 1, MAX_ID)
        _int("credit", self.credit, 1, MAX_CREDIT)


@dataclass(frozen=True, slots=True, kw_only=True)
class Reset:
    """Abort ``stream`` (either side). ``status`` is the HTTP status that fits.

    ``status`` is 404 (unknown node), 502 (a node on the way failed), 503 (too busy),
    504 (timed out) or 499 (the requester went away).
    """

    TYPE: ClassVar[str] = "reset"
    stream: int
    status: int
    reason: str

    def __post_init__(self) -> None:
        _int("stream", self.stream, 1, MAX_ID)
        _int("status", self.status, 400, 599)
        _text("reason", self.reason, MAX_TEXT)


#: Every wire message.
Message = (
    Challenge
    | Register
    | Welcome
    | Error
    | Ping
    | ShareIndexUpdate
    | HubIndexUpdate
    | IndexAck
    | Resync
    | Find
    | FindReply
    | Open
    | Response
    | Data
    | End
    | Credit
    | Reset
)
