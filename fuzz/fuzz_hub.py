"""Fuzz a whole ``HubCore``: arbitrary bytes, valid joins and messages, on many links.

Invariant: the hub never raises, whatever its links send (STYLE rule 8). Bad input
costs only that link: it ends in a ``Hangup`` preceded by a ``LinkClosed`` event with
a reason. The driver-facing contract holds after every call: the outbox drains
completely (``pending_bytes`` is 0), a ``Transmit`` or ``Hangup`` only names a link
the driver opened and has not seen hung up, one input never makes more than a bounded
amount of output, open streams and pending finds stay within their limits, and the
timer is None or a finite time.

The input is a script. Each op is one byte, then its arguments:

* ``0`` accept a new link (at most 8 open);
* ``1`` raw bytes on a link (length, then the bytes);
* ``2`` EOF on a link;
* ``3`` let time pass and fire the timer;
* ``4`` a *valid* registration on a link (a placement signed over the hub's own
  challenge), so later ops reach the joined states;
* ``5`` a well-formed message built from input bytes (index update, find, stream
  frames, pings, acks...), so the fuzzer explores semantics, not only parsing; a
  child hub's index carries placements signed by ``SimSigner`` keys, chained under
  the joinable children or under each other, with stamps, parents and (sometimes)
  signatures drawn from the input;
* ``6`` an app command (find, open a request, grant credit, reset a stream).

Run by hand (atheris): ``python -m fuzz.fuzz_hub fuzz/corpus/hub -max_total_time=600``
"""

from __future__ import annotations

import hashlib
import math
import sys

from fuzz._reader import ByteReader
from kbproto.actions import Dial, Hangup, Transmit
from kbproto.auth import node_id_from_public_pem
from kbproto.codec import decode, encode, encode_data
from kbproto.config import HubConfig, Limits, Timeouts
from kbproto.errors import LocalProtocolError, ProtocolError
from kbproto.events import LinkClosed
from kbproto.framing import FrameBuffer
from kbproto.hub import HubCore
from kbproto.ids import LinkId, SeededIdSource, StreamId
from kbproto.messages import (
    Challenge,
    Credit,
    End,
    Find,
    FindReply,
    HubIndexUpdate,
    IndexAck,
    Message,
    NodeInfo,
    Open,
    Ping,
    Placement,
    Register,
    Reset,
    Response,
    Resync,
    ShareIndexUpdate,
)
from kbproto.placement import sign_placement
from kbproto.pump import drain
from kbproto.sim.identity import SimSigner, SimVerifier, sim_node_id

__all__ = ("TestOneInput",)

LIMITS = Limits(
    max_control_frame=65536, index_batch_bytes=16384, stream_window=4096, max_children=6
)
TIMEOUTS = Timeouts()
MAX_OPS = 64
MAX_LINKS = 8
#: Output one call may produce: a find fans out to every child, a join sends the
#: whole index; with these limits a few hundred KiB is already generous.
MAX_OUTPUT_PER_CALL = 1 << 20


def _sha1(reader: ByteReader) -> str:
    return hashlib.sha1(bytes([reader.byte() % 16])).hexdigest()


def _info(name: str, *, is_hub: bool) -> NodeInfo:
    signer = SimSigner(name)
    return NodeInfo(
        node_id=node_id_from_public_pem(signer.public_pem),
        node_type="hub" if is_hub else "leaf",
        name=name,
        description="",
        owner="",
        owner_email="",
        listen_url=f"http://{name}.fuzz",
        public_key=signer.public_pem,
        scientific_research="yes",
        confirm_share="" if is_hub else "yes",
    )


def _placement(reader: ByteReader) -> Placement:
    """A placement of one of six nodes, under a joinable child or another of the six."""
    name = f"n{reader.byte() % 6}"
    parents = [f"child{i}" for i in range(4)] + [f"n{i}" for i in range(6)]
    parent = sim_node_id(parents[reader.byte() % len(parents)])
    # Mostly its own key; sometimes another one (a forged placement).
    signer = SimSigner(name if reader.byte() % 8 else "forger")
    return sign_placement(
        signer,
        _info(name, is_hub=bool(reader.byte() & 1)),
        parent=parent,
        nonce="00" * 32,
        stamp=reader.byte() % 4,
    )


class _Harness:
    def __init__(self) -> None:
        self.hub = HubCore(
            HubConfig(
                name="fuzz hub", listen_url="http://hub.fuzz", limits=LIMITS, timeouts=TIMEOUTS
            ),
            signer=SimSigner("fuzz-hub"),
            verifier=SimVerifier(),
            ids=SeededIdSource("fuzz"),
        )
        self.now = 0.0
        self.next_link = 0
        self.open: dict[LinkId, FrameBuffer] = {}
        self.challenge: dict[LinkId, Challenge] = {}
        self.closed_events: set[LinkId] = set()
        self.streams: list[StreamId] = []
        self.hub.start(self.now)
        self.pump()

    def pump(self) -> None:
        events: list[object] = []
        drained = drain(self.hub, events.append)
        for event in events:
            if isinstance(event, LinkClosed):
                if not event.reason:
                    raise AssertionError("LinkClosed without a reason")
                self.closed_events.add(event.link_id)
        total = 0
        for action in drained.actions:
            if isinstance(action, Dial):
                raise AssertionError("a root hub dialed")
            if action.link_id not in self.open:
                raise AssertionError(f"{type(action).__name__} on link {action.link_id}, not open")
            if isinstance(action, Transmit):
                total += len(action.data)
                frames = self.open[action.link_id]
                frames.feed(action.data)
                while (frame := frames.next_frame()) is not None:
                    message = decode(*frame)  # our own output must always decode
                    if isinstance(message, Challenge):
                        self.challenge[action.link_id] = message
            else:
                assert isinstance(action, Hangup)
                if action.link_id not in self.closed_events:
                    raise AssertionError(f"Hangup of link {action.link_id} with no LinkClosed")
                del self.open[action.link_id]
        if total > MAX_OUTPUT_PER_CALL:
            raise AssertionError(f"one call produced {total} bytes of output")
        for link_id in self.open:
            if self.hub.pending_bytes(link_id):
                raise AssertionError("the outbox was not drained completely")
        if self.hub.open_streams() > LIMITS.max_open_streams + 1:
            raise AssertionError("too many open streams")
        if self.hub.pending_lookups() > LIMITS.max_pending_lookups:
            raise AssertionError("too many pending finds")
        timer = self.hub.get_timer()
        if timer is not None and not math.isfinite(timer):
            raise AssertionError(f"timer {timer!r}")

    def pick_link(self, reader: ByteReader) -> LinkId | None:
        if not self.open:
            return None
        return list(self.open)[reader.byte() % len(self.open)]

    def message(self, reader: ByteReader) -> Message:
        kind = reader.byte() % 12
        n = reader.byte()
        if kind == 0:
            put = tuple(
                (_sha1(reader), f"d/{i}.bin", reader.byte()) for i in range(reader.byte() % 5)
            )
            drop = tuple(_sha1(reader) for _ in range(reader.byte() % 3))
            return ShareIndexUpdate(seq=n % 6, reset=bool(n & 64), put=put, drop=drop)
        if kind == 1:
            nodes = tuple(_placement(reader) for _ in range(reader.byte() % 3))
            dropped = tuple(sim_node_id(f"n{reader.byte() % 6}") for _ in range(reader.byte() % 2))
            content = tuple(_sha1(reader) for _ in range(reader.byte() % 4))
            return HubIndexUpdate(
                seq=n % 6,
                reset=bool(n & 64),
                content_put=content,
                content_drop=(),
                nodes_put=nodes,
                nodes_drop=dropped,
            )
        if kind == 2:
            share = sim_node_id(f"child{reader.byte() % 4}") if n & 1 else None
            return Find(
                query=n % 8, sha1=_sha1(reader), share_id=share, up=bool(n & 2), ttl_ms=n * 100
            )
        if kind == 3:
            return FindReply(query=n % 8, results=())
        if kind == 4:
            target = sim_node_id(f"child{reader.byte() % 4}")
            return Open(
                stream=n % 16,
                target=target,
                method="GET",
                path=f"/{target}/download/x",
                headers=(),
                credit=1 + reader.byte() * 64,
            )
        if kind == 5:
            return Response(stream=n % 16, status=200 + reader.byte() % 300, headers=())
        if kind == 6:
            return End(stream=n % 16)
        if kind == 7:
            return Credit(stream=n % 16, credit=1 + reader.byte() * 32)
        if kind == 8:
            return Reset(stream=n % 16, status=400 + reader.byte() % 200, reason="fuzz")
        if kind == 9:
            return IndexAck(seq=n % 8)
        if kind == 10:
            return Resync(expected=n % 8)
        return Ping()

    def op(self, reader: ByteReader) -> None:
        code = reader.byte() % 7
        if code == 0:
            if len(self.open) < MAX_LINKS:
                self.next_link += 1
                new = LinkId(self.next_link)
                self.open[new] = FrameBuffer(LIMITS.max_control_frame)
                self.hub.link_opened(new, self.now)
            return
        if code == 3:
            self.now += reader.byte() * 0.25
            self.hub.handle_timer(self.now)
            return
        if code == 6:
            self.command(reader)
            return
        link = self.pick_link(reader)
        if link is None:
            return
        if code == 1:
            self.hub.receive_data(link, reader.take(reader.below(512)), self.now)
        elif code == 2:
            self.hub.receive_eof(link, self.now)
        elif code == 4:
            self.hub.receive_data(link, self.registration(link, reader), self.now)
        else:
            if reader.byte() % 4 == 0:
                data = encode_data(1 + reader.byte() % 16, reader.take(1 + reader.below(64)))
            else:
                try:
                    data = encode(self.message(reader))
                except (TypeError, ValueError):
                    return
            for piece in reader.chunks(data):
                self.hub.receive_data(link, piece, self.now)

    def registration(self, link: LinkId, reader: ByteReader) -> bytes:
        challenge = self.challenge.get(link)
        if challenge is None:
            return b""
        name = f"child{reader.byte() % 4}"
        placement = sign_placement(
            SimSigner(name),
            _info(name, is_hub=bool(reader.byte() & 1)),
            parent=challenge.node_id,
            nonce=challenge.nonce,
            stamp=reader.byte(),
        )
        return encode(
            Register(
                placement=placement,
                passcode="",
                max_streams=1 + reader.byte() % 8,
                max_lookups=1 + reader.byte() % 8,
                heartbeat_timeout_ms=1 + reader.byte() * 1000,
            )
        )

    def command(self, reader: ByteReader) -> None:
        which = reader.byte() % 4
        try:
            if which == 0:
                self.hub.find(_sha1(reader), self.now)
            elif which == 1:
                target = sim_node_id(f"child{reader.byte() % 4}")
                self.streams.append(
                    self.hub.open_request(target, "GET", f"/{target}/download/x", now=self.now)
                )
            elif which == 2 and self.streams:
                sid = self.streams[reader.byte() % len(self.streams)]
                self.hub.grant_credit(sid, 1 + reader.byte() * 16, self.now)
            elif self.streams:
                sid = self.streams[reader.byte() % len(self.streams)]
                self.hub.reset_stream(sid, self.now)
        except LocalProtocolError:
            pass  # our own misuse (e.g. too much credit): allowed to raise, by contract


def TestOneInput(data: bytes) -> None:  # the name atheris looks for
    """Run one script against a fresh hub (raises on a violated invariant)."""
    reader = ByteReader(data)
    harness = _Harness()
    for _ in range(MAX_OPS):
        if not reader.remaining:
            break
        try:
            harness.op(reader)
        except ProtocolError as exc:
            raise AssertionError(f"the hub raised {exc!r}") from exc
        harness.pump()
    # Time passing always resolves everything: no find or stream outlives its deadline.
    harness.now += TIMEOUTS.stream_idle_timeout + TIMEOUTS.request_timeout + 1
    harness.hub.handle_timer(harness.now)
    harness.pump()
    harness.now += TIMEOUTS.heartbeat_timeout + 1
    harness.hub.handle_timer(harness.now)
    harness.pump()
    if harness.hub.pending_lookups() or harness.hub.open_streams():
        raise AssertionError("finds or streams outlived every deadline")


def main() -> None:
    """Run under atheris (``pip install atheris``)."""
    import atheris

    # Coverage guidance: instrument every module already imported (kbproto included).
    atheris.instrument_all()
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
