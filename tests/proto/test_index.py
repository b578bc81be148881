"""Index sync: full sync in batches, deltas, gap resync, aggregation, limits."""

from __future__ import annotations

from kbproto import Limits, LinkId, SeededIdSource, ShareConfig, ShareCore, Transmit
from kbproto.auth import node_id_from_public_pem
from kbproto.budget import DIR_BYTES, ID_BYTES, entry_cost, placement_cost
from kbproto.codec import decode, encode
from kbproto.events import IndexSynced, LinkClosed, LookupResolved, PlacementRefused
from kbproto.framing import FrameBuffer
from kbproto.ids import NodeId
from kbproto.messages import (
    Challenge,
    Error,
    IndexAck,
    Message,
    Register,
    Resync,
    ShareIndexUpdate,
    Welcome,
)
from tests.helpers import FAST, SMALL, Ed25519Signer, Net, hub_update, make_placement, sha1_of

A, B, C = (sha1_of(x) for x in (b"a", b"b", b"c"))


def _hub(net: Net, name: str) -> int:
    return net.cores[name].content_count()  # type: ignore[union-attr]


def test_full_sync_in_batches_within_the_window() -> None:
    limits = Limits(stream_window=4096, data_chunk=1024, index_batch_bytes=2000, index_window=2)
    net = Net()
    net.add_hub("H")
    files = {f"dir/file{i:04}.dat": str(i).encode() for i in range(300)}
    net.add_share("S", parent="H", files=files, limits=limits)
    assert _hub(net, "H") == 300
    sent = [decode(*f) for _, data in net.transmitted["S"] for f in _frames(data)]
    updates = [m for m in sent if isinstance(m, ShareIndexUpdate)]
    assert len(updates) > 5
    assert [u.seq for u in updates] == list(range(len(updates)))
    assert updates[0].reset
    assert not any(u.reset for u in updates[1:])
    assert net.of("S", IndexSynced)[-1].entries == 300


def _frames(data: bytes) -> list[tuple[int, bytes]]:
    buffer = FrameBuffer()
    buffer.feed(data)
    out = []
    while (frame := buffer.next_frame()) is not None:
        out.append(frame)
    return out


def test_deltas_reach_the_top_hub() -> None:
    net = Net()
    net.add_hub("A")
    net.add_hub("B", parent="A")
    share = net.add_share("S", parent="B", files={"a": b"a"})
    assert _hub(net, "A") == 1
    share.put_file(B, "b", 1, net.now)
    net.pump()
    assert _hub(net, "A") == 2
    share.remove_file("a", net.now)
    share.remove_file("zzz", net.now)  # unknown: no-op
    net.pump()
    assert _hub(net, "A") == 1
    assert share.file_count() == 1
    share.set_files([(C, "c", 1), (B, "b", 1)], net.now)
    net.pump()
    assert _hub(net, "A") == 2
    assert share.lookup_local(C) == ("c", 1)
    assert share.lookup_local("zz") is None


def test_update_files_applies_a_batch_and_names_the_refused_puts() -> None:
    net = Net()
    net.add_hub("A")
    share = net.add_share("S", parent="A", files={"a": b"a"})
    assert _hub(net, "A") == 1
    refused = share.update_files(
        [(B, "b", 1), ("zz", "bad", 1), (C, "c", 2), (B, "", 1)], ["a", "unknown"], net.now
    )
    assert [path for path, _ in refused] == ["bad", ""]
    assert "not a sha1" in refused[0][1]
    net.pump()
    assert _hub(net, "A") == 2  # a gone; b and c in
    assert share.file_count() == 2
    assert share.lookup_local(A) is None
    assert share.lookup_local(C) == ("c", 2)
    assert share.update_files([], [], net.now) == []


def test_duplicate_content_reports_the_smallest_path() -> None:
    net = Net()
    net.add_hub("H")
    share = net.add_share("S", parent="H")
    share.put_file(A, "z/copy", 1, net.now)
    share.put_file(A, "a/orig", 1, net.now)
    share.put_file(A, "a/orig", 1, net.now)  # unchanged: nothing to report
    net.pump()
    net.cores["H"].find(A, net.now)
    net.pump()
    assert net.of("H", LookupResolved)[-1].results[0].path == "a/orig"
    share.remove_file("a/orig", net.now)
    net.pump()
    net.cores["H"].find(A, net.now)
    net.pump()
    assert net.of("H", LookupResolved)[-1].results[0].path == "z/copy"
    share.put_file(B, "z/copy", 1, net.now)  # the path now holds other content
    net.pump()
    assert share.lookup_local(A) is None


def test_aggregation_counts_content_once_and_drops_with_the_child() -> None:
    net = Net()
    net.add_hub("A")
    net.add_hub("B", parent="A")
    net.add_share("S1", parent="B", files={"x": b"a"})
    net.add_share("S2", parent="B", files={"y": b"a", "z": b"b"})
    assert _hub(net, "A") == 2
    hub_a = net.cores["A"]
    assert hub_a.knows_node(net.cores["S1"].node_id)  # type: ignore[union-attr]
    net.crash("S2")
    assert _hub(net, "A") == 1
    assert not hub_a.knows_node("0" * 12)  # type: ignore[union-attr]
    net.crash("S1")
    assert _hub(net, "A") == 0
    net.crash("B")
    assert _hub(net, "A") == 0
    assert hub_a.children() == ()  # type: ignore[union-attr]


def test_content_held_by_three_children_stays_with_the_two_left() -> None:
    net = Net()
    net.add_hub("H")
    for name in ("S1", "S2", "S3"):
        net.add_share(name, parent="H", files={name: b"a"})
    hub = net.cores["H"]
    assert _hub(net, "H") == 1
    net.crash("S2")
    assert _hub(net, "H") == 1
    answer = hub.answer_now(A)
    assert answer is not None
    assert {r.kbshare_id for r in answer} == {net.cores[n].node_id for n in ("S1", "S3")}
    net.crash("S1")
    net.crash("S3")
    assert _hub(net, "H") == 0


def test_gap_forces_a_resync() -> None:
    net = Net()
    net.add_hub("H")
    peer = net.connect_raw("H")
    peer.join()
    peer.send(ShareIndexUpdate(seq=0, reset=True, put=((A, "a", 1),), drop=()))
    peer.send(ShareIndexUpdate(seq=2, reset=False, put=((B, "b", 1),), drop=()))
    assert peer.of(Resync) == [Resync(expected=1)]
    peer.send(ShareIndexUpdate(seq=3, reset=False, put=((C, "c", 1),), drop=()))  # ignored
    assert _hub(net, "H") == 1
    peer.send(ShareIndexUpdate(seq=4, reset=True, put=((B, "b", 1),), drop=(A,)))
    assert _hub(net, "H") == 1
    assert [m.seq for m in peer.of(IndexAck)] == [0, 2, 3, 4]
    peer.send(ShareIndexUpdate(seq=5, reset=False, put=(), drop=(B, C)))
    assert _hub(net, "H") == 0


def test_wrong_index_kind_and_limits_close_the_link() -> None:
    net = Net()
    # Room for two one-letter files in one directory (tails of 3 bytes), not three.
    quota = DIR_BYTES + 2 * entry_cost(bytes(3))
    net.add_hub("H", limits=Limits(open_child_quota=quota, max_nodes_per_child=1))
    share_peer = net.connect_raw("H", seed=1)
    share_peer.join()
    share_peer.send(hub_update(0, reset=True))
    assert "wrong kind of index message" in share_peer.of(Error)[0].reason
    big = net.connect_raw("H", seed=2)
    big.join()
    big.send(
        ShareIndexUpdate(seq=0, reset=True, put=((A, "a", 1), (B, "b", 1), (C, "c", 1)), drop=())
    )
    (error,) = big.of(Error)
    assert error.code == "limit"
    assert error.reason.startswith(f"index quota exceeded: this hub holds at most {quota:,} bytes")
    assert _hub(net, "H") == 0


def test_child_hub_reports_and_limits() -> None:
    net = Net()
    below = Ed25519Signer(50)
    # Per proven node: a placement like ``below``'s (bytes) and one content id.
    quota = placement_cost(make_placement(below, "0123456789ab")) + ID_BYTES
    net.add_hub("H", limits=Limits(open_child_quota=quota, max_nodes_per_child=1))
    hub_peer = net.connect_raw("H", seed=3)
    hub_peer.join_as_hub()
    below_id = node_id_from_public_pem(below.public_pem)
    hub_peer.send(
        hub_update(0, reset=True, content=(A, A), nodes=(make_placement(below, hub_peer.node_id),))
    )
    hub_core = net.cores["H"]
    assert hub_core.knows_node(below_id)  # type: ignore[union-attr]
    assert _hub(net, "H") == 1
    hub_peer.send(hub_update(1, content_drop=(A, B), nodes_drop=(below_id, "bbbbbbbbbbbb")))
    assert _hub(net, "H") == 0
    assert not hub_core.knows_node(below_id)  # type: ignore[union-attr]
    # Proving only itself again, the child hub may hold ``quota`` bytes: that many ids.
    fits = quota // ID_BYTES
    hub_peer.send(hub_update(2, content=tuple(sha1_of(b"%d" % i) for i in range(fits))))
    assert not hub_peer.of(Error)
    assert _hub(net, "H") == fits
    hub_peer.send(hub_update(3, content=(sha1_of(b"one more"),)))
    assert hub_peer.of(Error)[0].code == "limit"
    other = net.connect_raw("H", seed=4)
    other.join_as_hub()
    twins = tuple(make_placement(Ed25519Signer(60 + i), other.node_id) for i in range(2))
    other.send(hub_update(0, reset=True, nodes=twins))
    assert other.of(Error)[0].reason == "a child hub reported more than 1 node ids"


def test_a_forged_placement_is_dropped_and_reported_once() -> None:
    net = Net()
    hub = net.add_hub("H")
    share = net.add_share("S", parent="H")
    peer = net.connect_raw("H", seed=3)
    peer.join_as_hub()
    # The share's real id and key, under the child hub, signed with another key.
    forged = make_placement(Ed25519Signer(99), peer.node_id, info=share.info, stamp=2**40)
    peer.send(hub_update(0, reset=True, nodes=(forged, forged)))
    peer.send(hub_update(1, nodes=(forged,)))
    (refused,) = net.of("H", PlacementRefused)
    assert (refused.link_id, refused.peer_id, refused.node_id) == (
        peer.link,
        peer.node_id,
        share.node_id,
    )
    assert refused.reason == f"bad signature on the placement of node {share.node_id}"
    assert hub.child_toward(share.node_id) == hub.children()[0][0]
    assert not peer.closed


def test_a_cycle_is_refused() -> None:
    net = Net()
    hub = net.add_hub("H")
    peer = net.connect_raw("H", seed=3)
    peer.join_as_hub()
    claim = make_placement(Ed25519Signer(70), peer.node_id, node_id=hub.node_id)
    peer.send(hub_update(0, reset=True, nodes=(claim,)))
    assert "cycle" in peer.of(Error)[0].reason


class _RawParent:
    """Drives a ShareCore's parent side by hand (to send acks and resyncs)."""

    def __init__(self) -> None:
        self.share = ShareCore(
            ShareConfig(name="S", parent_url="http://p", limits=SMALL, timeouts=FAST),
            signer=Ed25519Signer(8),
            ids=SeededIdSource(3),
        )
        self.share.set_files([(A, "a", 1), (B, "b", 1)], 0.0)
        self.share.start(0.0)
        self.share.next_action()
        self.share.link_opened(LinkId(1), 0.0, dialed=True)
        self.buffer = FrameBuffer()

    def send(self, message: Message) -> list[Message]:
        self.share.receive_data(LinkId(1), encode(message), 0.0)
        out: list[Message] = []
        while (action := self.share.next_action()) is not None:
            if isinstance(action, Transmit):
                self.buffer.feed(action.data)
                while (frame := self.buffer.next_frame()) is not None:
                    out.append(decode(*frame))
        return out


def test_share_resends_everything_on_resync() -> None:
    parent = _RawParent()
    out = parent.send(
        Challenge(
            nonce="00" * 32,
            node_id=NodeId("0123456789ab"),
            max_streams=4,
            max_lookups=4,
            heartbeat_timeout_ms=30_000,
        )
    )
    (register,) = out
    assert isinstance(register, Register)
    welcome = Welcome(info=register.info)
    out = parent.send(welcome)
    (first,) = [m for m in out if isinstance(m, ShareIndexUpdate)]
    assert first.reset
    assert len(first.put) == 2
    out = parent.send(Resync(expected=0))
    (again,) = [m for m in out if isinstance(m, ShareIndexUpdate)]
    assert again.reset
    assert again.seq == 1
    out = parent.send(IndexAck(seq=0))
    assert out == []
    out = parent.send(IndexAck(seq=7))
    assert isinstance(out[0], Error)
    assert "unexpected seq 7" in out[0].reason
    events = []
    while (event := parent.share.next_event()) is not None:
        events.append(event)
    assert isinstance(events[-1], LinkClosed)
    assert events[-1].reason == "index ack for unexpected seq 7"
