"""Test helpers: real Ed25519 signing, and an in-memory network of real cores.

``Net`` joins real ``HubCore``/``ShareCore`` objects with in-memory links (STYLE rule
17: no mocks of kbproto internals). Bytes move in order per link, optionally cut into
random chunks; time moves only when a test calls ``advance``. Each node's events are
recorded in ``net.events[name]`` and may be handed to a per-node app callback, which
can call the node's commands (its output is pumped in the same round).
"""

from __future__ import annotations

import hashlib
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from kbproto import (
    Dial,
    Event,
    Hangup,
    HubConfig,
    HubCore,
    Limits,
    LinkId,
    SeededIdSource,
    ShareConfig,
    ShareCore,
    SignatureScheme,
    Timeouts,
    Transmit,
)
from kbproto.auth import node_id_from_public_pem
from kbproto.codec import decode, encode
from kbproto.framing import FrameBuffer
from kbproto.ids import NodeId
from kbproto.messages import Challenge, HubIndexUpdate, Message, NodeInfo, Placement, Register
from kbproto.placement import placement_transcript

Core = HubCore | ShareCore
M = TypeVar("M")
App = Callable[["Net", str, Event], None]


class Ed25519Signer:
    """A real Ed25519 signer (a fixed seed gives a fixed key and node id)."""

    def __init__(self, seed: int = 0) -> None:
        raw = hashlib.sha256(f"kbucket-test-key-{seed}".encode()).digest()
        self._key = ed25519.Ed25519PrivateKey.from_private_bytes(raw)
        self._pem = (
            self._key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    @property
    def public_pem(self) -> str:
        return self._pem

    @property
    def scheme(self) -> SignatureScheme:
        return SignatureScheme.ED25519

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


class RsaSigner:
    """An RSA PKCS#1 v1.5 / SHA-256 signer (legacy keys of the original tool)."""

    _cache: ClassVar[dict[int, rsa.RSAPrivateKey]] = {}

    def __init__(self, seed: int = 0) -> None:
        if seed not in self._cache:
            self._cache[seed] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._key = self._cache[seed]
        self._pem = (
            self._key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
            .decode()
        )

    @property
    def public_pem(self) -> str:
        return self._pem

    @property
    def scheme(self) -> SignatureScheme:
        return SignatureScheme.RSA_PKCS1V15_SHA256

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data, padding.PKCS1v15(), hashes.SHA256())


class CryptoVerifier:
    """Verifies Ed25519 and RSA PKCS#1 v1.5 / SHA-256 signatures with ``cryptography``."""

    def verify(
        self, public_pem: str, scheme: SignatureScheme, signature: bytes, data: bytes
    ) -> bool:
        try:
            if scheme is SignatureScheme.ED25519:
                key = serialization.load_pem_public_key(public_pem.encode())
                if not isinstance(key, ed25519.Ed25519PublicKey):
                    return False
                key.verify(signature, data)
                return True
            if "BEGIN RSA PUBLIC KEY" in public_pem:
                rkey = serialization.load_pem_public_key(public_pem.encode())
            else:
                rkey = serialization.load_pem_public_key(public_pem.encode())
            if not isinstance(rkey, rsa.RSAPublicKey):
                return False
            rkey.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
            return True
        except (InvalidSignature, ValueError, TypeError):
            return False


def sha1_of(data: bytes) -> str:
    """The content id of ``data``."""
    return hashlib.sha1(data).hexdigest()


def node_info(signer: Ed25519Signer | RsaSigner, **changes: str) -> NodeInfo:
    """A share's ``NodeInfo`` for ``signer``'s key (``changes`` override fields)."""
    values = {
        "node_id": node_id_from_public_pem(signer.public_pem),
        "node_type": "leaf",
        "name": "raw",
        "description": "",
        "owner": "",
        "owner_email": "",
        "listen_url": "http://raw:1",
        "public_key": signer.public_pem,
        "scientific_research": "yes",
        "confirm_share": "yes",
    }
    values.update(changes)
    return NodeInfo(**values)  # type: ignore[arg-type]


def make_placement(
    signer: Ed25519Signer | RsaSigner,
    parent: str,
    *,
    stamp: int = 1,
    nonce: str = "00" * 32,
    info: NodeInfo | None = None,
    **changes: str,
) -> Placement:
    """A placement of ``signer``'s node under ``parent``, signed with its own key (what
    that node signed when it joined ``parent``)."""
    info = info if info is not None else node_info(signer, **changes)
    scheme = signer.scheme.value
    data = placement_transcript(
        info, parent=NodeId(parent), nonce=nonce, stamp=stamp, scheme=scheme
    )
    return Placement(
        info=info,
        parent=NodeId(parent),
        nonce=nonce,
        stamp=stamp,
        scheme=scheme,
        signature=signer.sign(data).hex(),
    )


def hub_update(
    seq: int,
    *,
    reset: bool = False,
    content: tuple[str, ...] = (),
    content_drop: tuple[str, ...] = (),
    nodes: tuple[Placement, ...] = (),
    nodes_drop: tuple[str, ...] = (),
) -> HubIndexUpdate:
    """A ``HubIndexUpdate`` with empty defaults."""
    return HubIndexUpdate(
        seq=seq,
        reset=reset,
        content_put=content,
        content_drop=content_drop,
        nodes_put=nodes,
        nodes_drop=tuple(NodeId(n) for n in nodes_drop),
    )


#: Small timeouts and windows so tests exercise them.
FAST = Timeouts(
    heartbeat_interval=1.0,
    heartbeat_timeout=3.0,
    handshake_timeout=2.0,
    lookup_timeout=2.0,
    request_timeout=5.0,
    stream_idle_timeout=10.0,
    reconnect_min=0.5,
    reconnect_max=4.0,
)
SMALL = Limits(stream_window=4096, data_chunk=1024)


@dataclass
class _Pipe:
    peer: str
    peer_link: LinkId
    open: bool = True
    #: Half-open: bytes sent on this side are silently lost.
    blackhole: bool = False


@dataclass
class Net:
    """An in-memory network of real cores with explicit time."""

    seed: int = 0
    chunking: bool = False
    now: float = 0.0
    cores: dict[str, Core] = field(default_factory=dict)
    events: dict[str, list[Event]] = field(default_factory=dict)
    apps: dict[str, App] = field(default_factory=dict)
    addresses: dict[str, str] = field(default_factory=dict)
    pipes: dict[tuple[str, LinkId], _Pipe] = field(default_factory=dict)
    dial_refused: set[str] = field(default_factory=set)
    transmitted: dict[str, list[tuple[LinkId, bytes]]] = field(default_factory=dict)
    next_link: int = 1
    raw: dict[str, RawPeer] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._deliveries: deque[tuple[str, LinkId, bytes | None]] = deque()

    # --- building ---------------------------------------------------------------------

    def add_hub(
        self,
        name: str,
        *,
        parent: str | None = None,
        key: int | None = None,
        passcode: str = "",
        parent_passcode: str = "",
        limits: Limits = SMALL,
        timeouts: Timeouts = FAST,
        start: bool = True,
    ) -> HubCore:
        url = f"http://{name}:3240"
        config = HubConfig(
            name=name,
            listen_url=url,
            passcode=passcode,
            parent_url=self.addresses[parent] if parent else None,
            parent_passcode=parent_passcode,
            limits=limits,
            timeouts=timeouts,
        )
        core = HubCore(
            config,
            signer=Ed25519Signer(key if key is not None else len(self.cores) + 1000 * self.seed),
            verifier=CryptoVerifier(),
            ids=SeededIdSource(f"{self.seed}/{name}"),
        )
        self._register(name, url, core, start)
        return core

    def add_share(
        self,
        name: str,
        *,
        parent: str | None = None,
        files: dict[str, bytes] | None = None,
        key: int | None = None,
        parent_passcode: str = "",
        limits: Limits = SMALL,
        timeouts: Timeouts = FAST,
        signer: object | None = None,
        start: bool = True,
    ) -> ShareCore:
        url = f"http://{name}:2000"
        config = ShareConfig(
            name=name,
            listen_url=url,
            parent_url=self.addresses[parent] if parent else None,
            parent_passcode=parent_passcode,
            limits=limits,
            timeouts=timeouts,
        )
        core = ShareCore(
            config,
            signer=signer
            or Ed25519Signer(key if key is not None else len(self.cores) + 1000 * self.seed),  # type: ignore[arg-type]
            ids=SeededIdSource(f"{self.seed}/{name}"),
        )
        if files:
            core.set_files(
                [(sha1_of(data), path, len(data)) for path, data in files.items()], self.now
            )
        self._register(name, url, core, start)
        return core

    def _register(self, name: str, url: str, core: Core, start: bool) -> None:
        self.cores[name] = core
        self.events[name] = []
        self.transmitted[name] = []
        self.addresses[name] = url
        if start:
            core.start(self.now)
            self.pump()

    # --- moving bytes -----------------------------------------------------------------

    def pump(self, max_rounds: int = 100_000) -> None:
        """Drain every node and deliver every byte until the network is still."""
        for _ in range(max_rounds):
            progressed = False
            for name, core in list(self.cores.items()):
                while (event := core.next_event()) is not None:
                    progressed = True
                    self.events[name].append(event)
                    app = self.apps.get(name)
                    if app is not None:
                        app(self, name, event)
                while (action := core.next_action()) is not None:
                    progressed = True
                    self._perform(name, action)
            if self._deliveries:
                progressed = True
                target, link, data = self._deliveries.popleft()
                if target in self.raw:
                    self.raw[target].arrived(data)
                    continue
                receiver = self.cores.get(target)
                if receiver is not None and (target, link) in self.pipes:
                    if data is None:
                        del self.pipes[(target, link)]
                        receiver.receive_eof(link, self.now)
                    else:
                        receiver.receive_data(link, data, self.now)
            if not progressed:
                return
        raise AssertionError("network did not settle")

    def _perform(self, name: str, action: Transmit | Dial | Hangup) -> None:
        if isinstance(action, Transmit):
            self.transmitted[name].append((action.link_id, action.data))
            pipe = self.pipes.get((name, action.link_id))
            if pipe is None or pipe.blackhole or not pipe.open:
                return
            data = action.data
            if self.chunking:
                while data:
                    cut = self.rng.randint(1, max(1, min(len(data), 97)))
                    self._deliveries.append((pipe.peer, pipe.peer_link, data[:cut]))
                    data = data[cut:]
            else:
                self._deliveries.append((pipe.peer, pipe.peer_link, data))
        elif isinstance(action, Dial):
            target = next((n for n, url in self.addresses.items() if url == action.address), None)
            core = self.cores[name]
            if target is None or target in self.dial_refused or target not in self.cores:
                core.dial_failed(self.now, "connection refused")
                return
            child_link = LinkId(self.next_link)
            parent_link = LinkId(self.next_link + 1)
            self.next_link += 2
            self.pipes[(name, child_link)] = _Pipe(target, parent_link)
            self.pipes[(target, parent_link)] = _Pipe(name, child_link)
            self.cores[target].link_opened(parent_link, self.now)
            core.link_opened(child_link, self.now, dialed=True)
        else:
            pipe = self.pipes.pop((name, action.link_id), None)
            if pipe is not None and not pipe.blackhole:
                self._deliveries.append((pipe.peer, pipe.peer_link, None))

    def connect_raw(self, target: str, *, seed: int = 77) -> RawPeer:
        """Open a link from a hand-driven test peer to hub ``target``."""
        link = LinkId(self.next_link)
        self.next_link += 1
        name = f"raw{link}"
        peer = RawPeer(self, target, link, Ed25519Signer(seed))
        self.raw[name] = peer
        self.pipes[(target, link)] = _Pipe(name, link)
        self.cores[target].link_opened(link, self.now)
        self.pump()
        return peer

    # --- faults and time --------------------------------------------------------------

    def half_open(self, a: str, b: str) -> None:
        """Every link between ``a`` and ``b`` silently loses everything, both ways."""
        for (name, _), pipe in self.pipes.items():
            if {name, pipe.peer} == {a, b}:
                pipe.blackhole = True

    def cut(self, a: str, b: str) -> None:
        """Close every link between ``a`` and ``b`` (both sides see EOF)."""
        for (name, link), pipe in list(self.pipes.items()):
            if {name, pipe.peer} == {a, b} and (name, link) in self.pipes:
                del self.pipes[(name, link)]
                self.cores[name].receive_eof(link, self.now)
        self.pump()

    def crash(self, name: str) -> None:
        """Remove node ``name``: its peers see EOF."""
        for (node, link), pipe in list(self.pipes.items()):
            if pipe.peer == name and (node, link) in self.pipes:
                del self.pipes[(node, link)]
                self.cores[node].receive_eof(link, self.now)
        for key in [k for k in self.pipes if k[0] == name]:
            del self.pipes[key]
        del self.cores[name]
        self.pump()

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, firing every timer on the way."""
        end = self.now + seconds
        for _ in range(1_000_000):
            timers = [(t, n) for n, c in self.cores.items() if (t := c.get_timer()) is not None]
            due = min(timers, default=None)
            if due is None or due[0] > end:
                break
            self.now = max(self.now, due[0])
            self.cores[due[1]].handle_timer(self.now)
            self.pump()
        self.now = end

    def settle(self) -> None:
        """Pump until still (no time passes)."""
        self.pump()

    def of(self, name: str, kind: type) -> list:  # type: ignore[type-arg]
        """Events of type ``kind`` recorded at node ``name``."""
        return [e for e in self.events[name] if isinstance(e, kind)]


def file_server(files: dict[str, bytes], *, chunk: int = 1000) -> App:
    """A share app serving ``/ID/download/PATH`` from ``files`` as credit allows."""
    sending: dict[int, memoryview] = {}

    def app(net: Net, name: str, event: Event) -> None:
        from kbproto.events import RequestReceived, StreamReset, StreamWritable

        core = net.cores[name]
        if isinstance(event, RequestReceived):
            path = event.path.split("/download/", 1)[-1]
            data = files.get(path)
            if data is None:
                core.respond(event.stream_id, 404, (), now=net.now)
                core.end_stream(event.stream_id, net.now)
                return
            core.respond(event.stream_id, 200, (("content-length", str(len(data))),), now=net.now)
            sending[event.stream_id] = memoryview(data)
            _push(net, core, event.stream_id)
        elif isinstance(event, StreamWritable):
            _push(net, core, event.stream_id)
        elif isinstance(event, StreamReset):
            sending.pop(event.stream_id, None)

    def _push(net: Net, core: Core, sid: int) -> None:
        view = sending.get(sid)
        if view is None:
            return
        while view and (cap := core.send_capacity(sid)) > 0:  # type: ignore[arg-type]
            piece = view[: min(cap, chunk)]
            core.send_data(sid, bytes(piece), net.now)  # type: ignore[arg-type]
            view = view[len(piece) :]
        if view:
            sending[sid] = view
        else:
            del sending[sid]
            core.end_stream(sid, net.now)  # type: ignore[arg-type]

    return app


def consumer(received: dict[int, bytearray], *, auto_credit: bool = True) -> App:
    """An origin app that collects response bodies and returns credit at once."""

    def app(net: Net, name: str, event: Event) -> None:
        from kbproto.events import ResponseData

        if isinstance(event, ResponseData):
            received.setdefault(event.stream_id, bytearray()).extend(event.data)
            if auto_credit:
                net.cores[name].grant_credit(event.stream_id, len(event.data), net.now)

    return app


class RawPeer:
    """A hand-driven child on one link of a hub: sends any bytes, decodes the replies."""

    def __init__(self, net: Net, target: str, link: LinkId, signer: Ed25519Signer) -> None:
        self.net = net
        self.target = target
        self.link = link
        self.signer = signer
        self.frames = FrameBuffer()
        self.messages: list[Message] = []
        self.closed = False

    def arrived(self, data: bytes | None) -> None:
        if data is None:
            self.closed = True
            return
        self.frames.feed(data)
        while (frame := self.frames.next_frame()) is not None:
            self.messages.append(decode(*frame))

    def send_bytes(self, data: bytes) -> None:
        if (self.target, self.link) in self.net.pipes:
            self.net.cores[self.target].receive_data(self.link, data, self.net.now)
        self.net.pump()

    def send(self, message: Message) -> None:
        self.send_bytes(encode(message))

    def of(self, kind: type[M]) -> list[M]:
        return [m for m in self.messages if isinstance(m, kind)]

    def info(self, **changes: str) -> NodeInfo:
        return node_info(self.signer, **changes)

    @property
    def node_id(self) -> NodeId:
        """The raw peer's node id."""
        return node_id_from_public_pem(self.signer.public_pem)

    def join_as_hub(self, **kwargs: object) -> None:
        """Join as a child hub."""
        self.join(info=self.info(node_type="hub", confirm_share=""), **kwargs)

    def register_message(
        self,
        *,
        info: NodeInfo | None = None,
        passcode: str = "",
        nonce: str | None = None,
        signer: Ed25519Signer | None = None,
        stamp: int = 1,
    ) -> Register:
        (challenge,) = self.of(Challenge)
        info = info or self.info()
        signer = signer or self.signer
        nonce = nonce or challenge.nonce
        data = placement_transcript(
            info, parent=challenge.node_id, nonce=nonce, stamp=stamp, scheme="ed25519"
        )
        placement = Placement(
            info=info,
            parent=challenge.node_id,
            nonce=nonce,
            stamp=stamp,
            scheme="ed25519",
            signature=signer.sign(data).hex(),
        )
        return Register(
            placement=placement,
            passcode=passcode,
            max_streams=8,
            max_lookups=8,
            heartbeat_timeout_ms=30_000,
        )

    def join(self, **kwargs: object) -> None:
        self.send(self.register_message(**kwargs))  # type: ignore[arg-type]
