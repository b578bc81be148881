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

Run: ``python examples/selectors_hub_and_share.py`` (exit status 0 on success).
"""

from __future__ import annotations

import hashlib
import selectors
import socket
import sys
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

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
from kbproto.events import ChildJoined, LinkClosed, LookupFailed, LookupResolved, ParentConnected

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
                self.outbox[action.link_id] += action.data
                self._want_write(action.link_id)
            elif isinstance(action, Dial):
                self._dial(action.address)
            else:
                assert isinstance(action, Hangup)
                self.closing.add(action.link_id)
                self._want_write(action.link_id)

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
            link = self._new_link(sock)
            self.core.link_opened(link, time.monotonic(), dialed=True)
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
                self.core.receive_data(link, data, time.monotonic())
            else:
                self._drop(link)
                self.core.receive_eof(link, time.monotonic())
            self.pump()

    def _flush(self, link: LinkId, sock: socket.socket) -> None:
        pending = self.outbox[link]
        try:
            sent = sock.send(pending) if pending else 0
        except OSError:
            # A failed write is reported to the core as the link's end (rule 11).
            self._drop(link)
            self.core.receive_eof(link, time.monotonic())
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


def main() -> int:
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
        timers = [t for t in (hub.core.get_timer(), share.core.get_timer()) if t is not None]
        wait = min([give_up, *timers]) - now
        for key, mask in selector.select(timeout=max(0.0, wait)):
            driver, link = key.data
            if link == "listener":
                driver.on_accept(listener)
            elif link is None:
                driver.on_connect(key.fileobj)
            else:
                driver.on_ready(link, mask)
        now = time.monotonic()
        for driver in (hub, share):
            timer = driver.core.get_timer()
            if timer is not None and timer <= now:
                driver.on_timer()

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


if __name__ == "__main__":
    sys.exit(main())
