"""Embed kbproto in a plain ``selectors`` loop: a hub and a share over loopback TCP.

No anyio, no kbtransport, no threads: one ``selectors.DefaultSelector`` drives two
sans-IO cores, exactly as STYLE rule 11 describes a driver. For every input (bytes
from a socket, a finished connect, EOF, or the core's timer):

1. call the core with ``now = time.monotonic()``;
2. drain it with ``kbproto.pump.drain``: events go to the app, actions come back;
3. perform the actions in order (``Transmit`` -> buffer and send, ``Dial`` -> a
   non-blocking connect, ``Hangup`` -> flush and close);
4. re-read ``get_timer()``; the next ``select`` waits at most until then.

The hub listens on 127.0.0.1 (port 0: the OS picks one). The share dials it, signs
the hub's challenge with an Ed25519 key (``cryptography``), and reports three
in-memory files. Once the hub's index holds them, the hub's app runs a find and
prints the answer. kbproto frames are self-delimiting, so here they travel on bare
TCP; kbtransport carries the very same bytes inside WebSocket messages.

With ``--hub http://HOST:PORT`` only the share core runs, in the same loop, and joins
a real ``kbucket-hub``: ``WebSocketDriver`` wraps its link in a WebSocket with wsproto
(sans-IO as well). Once the hub acknowledges the index, a plain HTTP GET asks the hub's
``/find/SHA1`` and prints the JSON answer; the exit status is 0 if it lists this share.

Run: ``python examples/selectors_hub_and_share.py [--hub URL]`` (exit status 0 on success).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import selectors
import socket
import sys
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    Request,
)
from wsproto.utilities import RemoteProtocolError

from kbproto import (
    Dial,
    Event,
    Hangup,
    HubConfig,
    HubCore,
    LinkId,
    SeededIdSource,
    ShareConfig,
    ShareCore,
    SignatureScheme,
    Transmit,
    drain,
)
from kbproto.events import (
    ChildJoined,
    IndexSynced,
    JoinRefused,
    LinkClosed,
    LookupFailed,
    LookupResolved,
    ParentConnected,
)

#: Give up (exit 1) if the whole exchange takes longer than this.
DEADLINE_SECONDS = 15.0
#: Bytes read per ``recv``: one read never buffers more than this per link.
READ_SIZE = 65536

FILES = {
    "data/readme.txt": b"kbucket: share large scientific data where it lives\n",
    "data/raw.bin": bytes(range(256)) * 64,
    "sorting/firings.csv": b"channel,time,label\n1,100,3\n2,250,1\n",
}


class Ed25519Signer:
    """``kbproto.auth.Signer`` backed by a fresh Ed25519 key (kept in memory only)."""

    def __init__(self) -> None:
        self._key = ed25519.Ed25519PrivateKey.generate()
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


class Ed25519Verifier:
    """``kbproto.auth.Verifier`` for Ed25519; anything malformed is simply False."""

    def verify(
        self, public_pem: str, scheme: SignatureScheme, signature: bytes, data: bytes
    ) -> bool:
        if scheme is not SignatureScheme.ED25519:
            return False
        try:
            key = serialization.load_pem_public_key(public_pem.encode())
            if not isinstance(key, ed25519.Ed25519PublicKey):
                return False
            key.verify(signature, data)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True


class Driver:
    """Owns one core and its sockets; the selector calls back into it."""

    def __init__(
        self, name: str, core: HubCore | ShareCore, selector: selectors.BaseSelector
    ) -> None:
        self.name = name
        self.core = core
        self.selector = selector
        self.socks: dict[LinkId, socket.socket] = {}
        self.outbox: dict[LinkId, bytearray] = {}
        self.closing: set[LinkId] = set()
        self.next_link = 0
        self.on_event: Callable[[Event], None] = lambda event: None

    # The four steps: call (by the caller), drain, act, re-read the timer (run_loop).
    def pump(self) -> None:
        drained = drain(self.core, self.on_event)
        for action in drained.actions:
            if isinstance(action, Transmit):
                self.send(action.link_id, action.data)
            elif isinstance(action, Dial):
                self._dial(action.address)
            else:
                assert isinstance(action, Hangup)
                self.hangup(action.link_id)

    # How core bytes meet the socket. Here: bare TCP; ``WebSocketDriver`` overrides these.
    def send(self, link: LinkId, data: bytes) -> None:
        self.outbox[link] += data
        self._want_write(link)

    def hangup(self, link: LinkId) -> None:
        self.closing.add(link)
        self._want_write(link)

    def connected(self, link: LinkId) -> None:
        self.core.link_opened(link, time.monotonic(), dialed=True)

    def received(self, link: LinkId, data: bytes) -> None:
        self.core.receive_data(link, data, time.monotonic())

    def closed(self, link: LinkId) -> None:
        self.core.receive_eof(link, time.monotonic())

    def _new_link(self, sock: socket.socket) -> LinkId:
        self.next_link += 1
        link = LinkId(self.next_link)
        sock.setblocking(False)
        self.socks[link] = sock
        self.outbox[link] = bytearray()
        self.selector.register(sock, selectors.EVENT_READ, (self, link))
        return link

    def _want_write(self, link: LinkId) -> None:
        sock = self.socks.get(link)
        if sock is not None:
            self.selector.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, (self, link))

    def _dial(self, address: str) -> None:
        parts = urlsplit(address)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex((parts.hostname or "127.0.0.1", parts.port or 80))
        # Writable means the connect finished (or failed: checked in on_connect).
        self.selector.register(sock, selectors.EVENT_WRITE, (self, None))

    def on_accept(self, listener: socket.socket) -> None:
        sock, _addr = listener.accept()
        link = self._new_link(sock)
        self.core.link_opened(link, time.monotonic())
        self.pump()

    def on_connect(self, sock: socket.socket) -> None:
        self.selector.unregister(sock)
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            sock.close()
            self.core.dial_failed(time.monotonic(), f"connect failed: errno {error}")
        else:
            self.connected(self._new_link(sock))
        self.pump()

    def on_ready(self, link: LinkId, mask: int) -> None:
        sock = self.socks[link]
        if mask & selectors.EVENT_WRITE:
            self._flush(link, sock)
            if link not in self.socks:
                return
        if mask & selectors.EVENT_READ:
            try:
                data = sock.recv(READ_SIZE)
            except OSError:
                data = b""
            if data:
                self.received(link, data)
            else:
                self._drop(link)
                self.closed(link)
            self.pump()

    def _flush(self, link: LinkId, sock: socket.socket) -> None:
        pending = self.outbox[link]
        try:
            sent = sock.send(pending) if pending else 0
        except OSError:
            # A failed write is reported to the core as the link's end (rule 11).
            self._drop(link)
            self.closed(link)
            self.pump()
            return
        del pending[:sent]
        if pending:
            return
        if link in self.closing:
            self._drop(link)
        else:
            self.selector.modify(sock, selectors.EVENT_READ, (self, link))

    def _drop(self, link: LinkId) -> None:
        sock = self.socks.pop(link, None)
        if sock is not None:
            self.selector.unregister(sock)
            sock.close()
        self.outbox.pop(link, None)
        self.closing.discard(link)

    def on_timer(self) -> None:
        self.core.handle_timer(time.monotonic())
        self.pump()


class WebSocketDriver(Driver):
    """A share's driver whose links are WebSocket client connections (to a real hub).

    A real ``kbucket-hub`` carries kbproto's bytes inside binary WebSocket messages.
    wsproto is sans-IO like kbproto, so the same loop drives both: socket bytes go
    into wsproto, its messages' payloads into the core, and each ``Transmit`` goes out
    as one binary message. The core sees the link only once the upgrade is accepted.
    """

    def __init__(
        self, name: str, core: HubCore | ShareCore, selector: selectors.BaseSelector, host: str
    ) -> None:
        super().__init__(name, core, selector)
        self.host = host
        self.ws: dict[LinkId, WSConnection] = {}
        self.opened: set[LinkId] = set()

    def connected(self, link: LinkId) -> None:
        ws = self.ws[link] = WSConnection(ConnectionType.CLIENT)
        # Any path with an Upgrade reaches the hub's link endpoint.
        super().send(link, ws.send(Request(host=self.host, target="/")))

    def send(self, link: LinkId, data: bytes) -> None:
        ws = self.ws.get(link)
        if ws is not None and ws.state is ConnectionState.OPEN:
            super().send(link, ws.send(Message(data=data)))

    def hangup(self, link: LinkId) -> None:
        ws = self.ws.get(link)
        if ws is not None and ws.state is ConnectionState.OPEN:
            super().send(link, ws.send(CloseConnection(code=1000)))
        super().hangup(link)

    def received(self, link: LinkId, data: bytes) -> None:
        ws = self.ws.get(link)
        if ws is None:
            return  # already closing: late bytes are dropped
        ws.receive_data(data)
        try:
            events = list(ws.events())
        except RemoteProtocolError as exc:
            # Broken WebSocket framing ends the link (one line, no traceback).
            print(f"share: bad websocket data from the hub: {exc}", file=sys.stderr)
            super().hangup(link)
            self.closed(link)
            return
        for event in events:
            if isinstance(event, AcceptConnection):
                self.opened.add(link)
                self.core.link_opened(link, time.monotonic(), dialed=True)
            elif isinstance(event, BytesMessage):
                # kbproto frames are self-delimiting: a message fragment may go in as is.
                self.core.receive_data(link, bytes(event.data), time.monotonic())
            elif isinstance(event, Ping):
                super().send(link, ws.send(event.response()))
            elif isinstance(event, CloseConnection | RejectConnection):
                if (
                    isinstance(event, CloseConnection)
                    and ws.state is ConnectionState.REMOTE_CLOSING
                ):
                    super().send(link, ws.send(event.response()))
                super().hangup(link)
                self.closed(link)
                return

    def closed(self, link: LinkId) -> None:
        # Report each link's end once: as a link's end if the core saw it open (the
        # upgrade was accepted), else as a failed dial (the core will dial again).
        if self.ws.pop(link, None) is None:
            return
        if link in self.opened:
            self.opened.discard(link)
            self.core.receive_eof(link, time.monotonic())
        else:
            self.core.dial_failed(time.monotonic(), "websocket upgrade failed")


def turn(
    selector: selectors.BaseSelector,
    drivers: tuple[Driver, ...],
    give_up: float,
    listener: socket.socket | None = None,
) -> None:
    """One turn of the loop: wait for a socket or the earliest core timer, dispatch."""
    timers = [t for d in drivers if (t := d.core.get_timer()) is not None]
    wait = min([give_up, *timers]) - time.monotonic()
    for key, mask in selector.select(timeout=max(0.0, wait)):
        driver, link = key.data
        if link == "listener":
            assert listener is not None
            driver.on_accept(listener)
        elif link is None:
            driver.on_connect(key.fileobj)
        else:
            driver.on_ready(link, mask)
    now = time.monotonic()
    for driver in drivers:
        timer = driver.core.get_timer()
        if timer is not None and timer <= now:
            driver.on_timer()


def hub_and_share() -> int:
    selector = selectors.DefaultSelector()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    hub_url = f"http://127.0.0.1:{listener.getsockname()[1]}"

    hub = Driver(
        "hub",
        HubCore(
            HubConfig(name="demo hub", listen_url=hub_url),
            signer=Ed25519Signer(),
            verifier=Ed25519Verifier(),
            ids=SeededIdSource("demo hub"),
        ),
        selector,
    )
    share_core = ShareCore(
        ShareConfig(name="demo share", parent_url=hub_url),
        signer=Ed25519Signer(),
        ids=SeededIdSource("demo share"),
    )
    share = Driver("share", share_core, selector)
    selector.register(listener, selectors.EVENT_READ, (hub, "listener"))
    print(f"hub {hub.core.node_id} listening on {hub_url}")

    wanted = hashlib.sha1(FILES["data/readme.txt"]).hexdigest()
    answer: list[LookupResolved | LookupFailed] = []

    def hub_app(event: Event) -> None:
        if isinstance(event, ChildJoined):
            print(f"hub: share {event.info.node_id} ({event.info.name}) joined")
        elif isinstance(event, LookupResolved | LookupFailed):
            answer.append(event)

    def share_app(event: Event) -> None:
        if isinstance(event, ParentConnected):
            print(f"share: connected to parent hub: {event.info.name}")
        elif isinstance(event, LinkClosed):
            print(f"share: link closed: {event.reason}")

    hub.on_event, share.on_event = hub_app, share_app
    now = time.monotonic()
    share_core.set_files(
        [(hashlib.sha1(data).hexdigest(), path, len(data)) for path, data in FILES.items()], now
    )
    hub.core.start(now)
    share.core.start(now)
    hub.pump()
    share.pump()

    asked = False
    give_up = time.monotonic() + DEADLINE_SECONDS
    while not answer:
        now = time.monotonic()
        if now > give_up:
            print("gave up: no answer in time", file=sys.stderr)
            return 1
        assert isinstance(hub.core, HubCore)
        if not asked and hub.core.content_count() == len(FILES):
            print(f"hub: index holds {hub.core.content_count()} content ids; finding {wanted}")
            hub.core.find(wanted, now)
            hub.pump()
            asked = True
            continue
        turn(selector, (hub, share), give_up, listener)

    event = answer[0]
    if isinstance(event, LookupFailed):
        print(f"find {wanted}: not found ({event.reason})")
        return 1
    print(f"find {wanted} -> {len(event.results)} result(s)")
    for result in event.results:
        url = f"{hub_url}/{result.kbshare_id}/download/{result.path}"
        print(f"  share {result.kbshare_id} path {result.path} size {result.size} url {url}")
    for driver in (hub, share):
        for link in list(driver.socks):
            driver._drop(link)
    selector.unregister(listener)
    listener.close()
    selector.close()
    return 0


def join_real_hub(hub_url: str) -> int:
    """Only the share core, in the same loop, joined to a real ``kbucket-hub``."""
    parts = urlsplit(hub_url)
    if parts.scheme != "http" or not parts.hostname or parts.port is None:
        print(f"--hub wants http://HOST:PORT, not {hub_url!r}", file=sys.stderr)
        return 2
    selector = selectors.DefaultSelector()
    core = ShareCore(
        ShareConfig(name="selectors share", parent_url=hub_url),
        signer=Ed25519Signer(),
        ids=SeededIdSource("selectors share"),
    )
    share = WebSocketDriver("share", core, selector, host=parts.netloc)
    print(f"share {core.node_id} joining {hub_url}")
    synced: list[IndexSynced] = []
    refused: list[str] = []

    def share_app(event: Event) -> None:
        if isinstance(event, ParentConnected):
            print(f"share: connected to parent hub: {event.info.name}")
        elif isinstance(event, IndexSynced):
            print(f"share: the hub acknowledged {event.entries} index entries")
            synced.append(event)
        elif isinstance(event, JoinRefused):
            refused.append(event.reason)
        elif isinstance(event, LinkClosed):
            print(f"share: link closed: {event.reason}")

    share.on_event = share_app
    now = time.monotonic()
    core.set_files(
        [(hashlib.sha1(data).hexdigest(), path, len(data)) for path, data in FILES.items()], now
    )
    core.start(now)
    share.pump()

    # Until the hub has acknowledged the whole index, keep the share's link served.
    give_up = time.monotonic() + DEADLINE_SECONDS
    while not synced:
        if refused or time.monotonic() > give_up:
            print(f"gave up: {refused[0] if refused else 'not joined in time'}", file=sys.stderr)
            return 1
        turn(selector, (share,), give_up)

    # The index is at the hub, so the hub answers from it without asking the share: a
    # blocking GET here (the loop pauses) is fine. Any HTTP client would do.
    wanted = hashlib.sha1(FILES["data/readme.txt"]).hexdigest()
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=DEADLINE_SECONDS)
    try:
        conn.request("GET", f"/find/{wanted}")
        response = conn.getresponse()
        body = response.read(READ_SIZE)  # bounded: a find answer is small
    finally:
        conn.close()
    print(f"GET {hub_url}/find/{wanted} -> {response.status}")
    print(body.decode(errors="replace"))
    answer = json.loads(body) if response.status == 200 else {}
    ours = [r for r in answer.get("results", []) if r.get("kbshare_id") == core.node_id]
    # Say goodbye properly: a WebSocket close frame, flushed by the loop, then the socket.
    for link in list(share.socks):
        share.hangup(link)
    while share.socks and time.monotonic() < give_up:
        turn(selector, (share,), give_up)
    selector.close()
    return 0 if ours else 1


def main(argv: list[str] | None = None) -> int:
    """Run the hub and the share in one loop, or (``--hub URL``) only the share."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--hub", metavar="URL", help="join this real kbucket-hub (http://HOST:PORT) instead"
    )
    args = parser.parse_args(argv)
    return join_real_hub(args.hub) if args.hub else hub_and_share()


if __name__ == "__main__":
    sys.exit(main())
