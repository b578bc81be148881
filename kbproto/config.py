"""Frozen configuration for the cores: limits, timeouts, and who the node is.

Strategy
--------
Configuration is data with no behaviour (STYLE rule 20, after h2's ``config.py``):
kbapps builds a ``HubConfig`` or ``ShareConfig`` from options and ``kbnode.json`` and
hands it to the core. Every limit and timeout is here, with the reason for its default,
and is validated on construction so a core never runs with a nonsensical bound. Tests
and the simulator shrink the windows and timeouts; nothing else needs to.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from kbproto.framing import DEFAULT_MAX_CONTROL_FRAME
from kbproto.messages import MAX_CREDIT, MAX_DATA_CHUNK, MAX_TEXT, MAX_URL

__all__ = ("HubConfig", "Limits", "ShareConfig", "Timeouts")


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Every bound a core enforces. A peer crossing one loses its link (``LimitExceeded``).

    Attributes:
        max_control_frame: largest control frame accepted (bytes); 1 MiB holds any
            legal message.
        data_chunk: largest data frame body we send. Each frame costs the receiving
            node a decode, an event and a dispatch: with 64 KiB frames that was a fifth
            of a proxying hub's user CPU (A/B, real processes, 1 MiB frames against
            64 KiB). 1 MiB, the size of the largest control frame, leaves the bound on
            what a receiver holds per link (one partial frame) unchanged; streams
            interleave per body piece (``Streams._forward``), whatever the frame size.
        stream_window: initial and maximum credit per stream per hop (bytes): the bound
            on buffered body bytes per stream per hop. 4 MiB: a proxied stream's round
            trip includes both nodes' event loops (a few ms under load), and measured
            through one hub (256 MiB, real processes) 256 KiB ran at 69 MB/s, latency
            bound, against 166 MB/s at 4 MiB with 20 % less CPU per byte (credit comes
            back once per quarter window). Worst-case buffering is this times the
            streams open at a node; tests shrink it below the file size.
        max_streams_per_link: streams the peer may have open toward us on one link;
            announced in the handshake so a well-behaved peer never crosses it. 256
            streams of one ``stream_window`` each: one peer can make us buffer 1 GiB
            at most.
        max_lookups_per_link: finds the peer may have pending at us on one link.
        max_pending_lookups: finds pending at this node in total (ours and relayed).
        max_open_streams: streams open at this node in total (all links, all roles).
            Each buffers at most one ``stream_window`` here, so 512 x 4 MiB bounds a
            node's stream buffers at 2 GiB (as 8192 x 256 KiB did before the window
            grew); past it, new requests are refused with 503.
        max_children: children per hub (the original allowed 1000 shares).
        index_budget: bytes of index a hub holds for all its children together
            (``kbproto.budget``: what each entry takes in the compact content table; a
            child hub's content id costs 52 bytes, a share's with a short path ~75, a
            placement ~2 KB). 1 GiB holds some 14 to 20 million content ids, a hub
            near the top of a big tree; a child that would cross it loses its link
            with ``limit``.
        open_child_quota: bytes of index a child that joined without the hub's
            passcode may hold, per node it proves (a share: itself; a child hub: each
            node routed through it). 128 MiB: a share of a million files (names up
            to ~60 bytes) fits on an open hub; a child with the passcode may use the
            whole budget.
        max_nodes_per_child: node ids (placements) one child hub may report.
        max_own_content: content ids a hub holds itself (its relay cache, docs/protocol.md
            §13) and answers for as a source; a relay cache of 1,000,000 entries is
            already ~1 GiB of 1 KiB files, far past the default bound, and ~100 bytes
            of memory each.
        index_window: index messages a child may have unacknowledged (paces a full
            sync so it never floods the outbox).
        index_batch_bytes: target size of one index message (well under the frame cap).
        transmit_bytes: largest ``Transmit`` the outbox builds at once: a 1 MiB piece
            of a body (what kbtransport hands the core at once, one outbox entry) with
            room for control frames ahead of it, so it leaves in one socket write. At
            256 KiB a 256 KiB piece took two writes, and a proxied GiB cost the
            sending share a third more user CPU.
    """

    max_control_frame: int = DEFAULT_MAX_CONTROL_FRAME
    data_chunk: int = MAX_DATA_CHUNK
    stream_window: int = 4 * 1024 * 1024
    max_streams_per_link: int = 256
    max_lookups_per_link: int = 1024
    max_pending_lookups: int = 8192
    max_open_streams: int = 512
    max_children: int = 1000
    index_budget: int = 1024**3
    open_child_quota: int = 128 * 1024**2
    max_nodes_per_child: int = 100_000
    max_own_content: int = 1_000_000
    index_window: int = 4
    index_batch_bytes: int = 256 * 1024
    transmit_bytes: int = 1024 * 1024 + 64 * 1024

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Limits.{f.name} must be a positive integer")
        if self.max_control_frame > DEFAULT_MAX_CONTROL_FRAME or self.max_control_frame < 65536:
            raise ValueError("max_control_frame must be in [64 KiB, 1 MiB]")
        if self.data_chunk > MAX_DATA_CHUNK:
            raise ValueError(f"data_chunk must be at most {MAX_DATA_CHUNK}")
        if self.stream_window > MAX_CREDIT:
            raise ValueError(f"stream_window must be at most {MAX_CREDIT}")
        if self.index_batch_bytes > self.max_control_frame // 2:
            raise ValueError("index_batch_bytes must be at most half of max_control_frame")
        if self.max_streams_per_link > 65536 or self.max_lookups_per_link > 65536:
            raise ValueError("per-link stream and lookup limits are at most 65536")


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    """Every timer, in seconds of the caller's monotonic clock.

    Attributes:
        heartbeat_interval: how often each side sends ``Ping``.
        heartbeat_timeout: silence after which a peer is declared dead (docs/protocol.md: 30 s).
        handshake_timeout: time allowed from link open to ``Welcome``.
        lookup_timeout: how long a find may take end to end.
        request_timeout: time allowed for a stream's response head to arrive.
        stream_idle_timeout: a stream with no frame either way for this long is reset.
        reconnect_min / reconnect_max: the child's redial backoff (doubling, capped,
            with jitter in [0.5, 1] of the delay). The cap is short (5 s) because a
            child should rejoin within seconds of its hub's return: a redial is one
            TCP connect, and the jitter spreads a subtree's rejoins over the last half
            of the cap.
        limit_backoff: the wait (with the same jitter) before redialing a parent that
            closed the link for a ``limit`` (an index over the child's quota): sooner
            would resend the same index to be refused again.
    """

    heartbeat_interval: float = 10.0
    heartbeat_timeout: float = 30.0
    handshake_timeout: float = 10.0
    lookup_timeout: float = 10.0
    request_timeout: float = 30.0
    stream_idle_timeout: float = 120.0
    reconnect_min: float = 1.0
    reconnect_max: float = 5.0
    limit_backoff: float = 60.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"Timeouts.{f.name} must be a positive number")
        if self.heartbeat_interval >= self.heartbeat_timeout:
            raise ValueError("heartbeat_interval must be shorter than heartbeat_timeout")
        if self.reconnect_min > self.reconnect_max:
            raise ValueError("reconnect_min must not exceed reconnect_max")


def _check_text(owner: HubConfig | ShareConfig) -> None:
    for name in ("name", "description", "owner", "owner_email"):
        value = getattr(owner, name)
        if not isinstance(value, str) or len(value) > MAX_TEXT:
            raise ValueError(f"{name} must be a string of at most {MAX_TEXT} characters")
    for name in ("listen_url", "parent_url"):
        value = getattr(owner, name)
        if value is not None and (not isinstance(value, str) or len(value) > MAX_URL):
            raise ValueError(f"{name} must be a URL of at most {MAX_URL} characters")
    if owner.parent_url == "":
        raise ValueError("parent_url must be None (no parent) or a URL")
    if not isinstance(owner.parent_passcode, str):
        raise ValueError("parent_passcode must be a string")


@dataclass(frozen=True, slots=True, kw_only=True)
class HubConfig:
    """A hub: who it is, what children must present, and where its parent is.

    The node id and public key come from the ``Signer`` given to ``HubCore``.
    ``listen_url`` is the expanded URL (kbapps turns ``"."`` into
    ``http://localhost:PORT``). ``parent_url`` None means a root hub.
    """

    name: str
    description: str = ""
    owner: str = ""
    owner_email: str = ""
    listen_url: str = ""
    passcode: str = ""
    parent_url: str | None = None
    parent_passcode: str = ""
    limits: Limits = field(default_factory=Limits)
    timeouts: Timeouts = field(default_factory=Timeouts)

    def __post_init__(self) -> None:
        _check_text(self)
        if not isinstance(self.passcode, str) or len(self.passcode) > MAX_TEXT:
            raise ValueError("passcode must be a short string")


@dataclass(frozen=True, slots=True, kw_only=True)
class ShareConfig:
    """A share: who it is and where its parent hub is (None: standalone)."""

    name: str
    description: str = ""
    owner: str = ""
    owner_email: str = ""
    listen_url: str = ""
    parent_url: str | None = None
    parent_passcode: str = ""
    limits: Limits = field(default_factory=Limits)
    timeouts: Timeouts = field(default_factory=Timeouts)

    def __post_init__(self) -> None:
        _check_text(self)
