"""Random but well-formed traffic from misbehaving peers never breaks a hub.

Each example builds a small network (a hub with a real share, a real child hub, and
two hand-driven raw children) and then plays a random script: raw peers send
well-formed messages in any order with any numbers, links close, time jumps, and the
app opens streams and finds. Whatever happens, no exception escapes the cores, and
once every raw peer is gone and time has passed, nothing is left pending.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kbproto.ids import NodeId
from kbproto.messages import (
    Credit,
    Data,
    End,
    Find,
    FindReply,
    FindResult,
    HubIndexUpdate,
    IndexAck,
    Message,
    Open,
    Ping,
    Reset,
    Response,
    Resync,
    ShareIndexUpdate,
)
from tests.helpers import (
    FAST,
    Ed25519Signer,
    Net,
    consumer,
    file_server,
    make_placement,
    node_info,
    sha1_of,
)

SHAS = [sha1_of(bytes([i])) for i in range(4)]
NODES = [NodeId(f"{i:012x}") for i in range(3)]
small = st.integers(0, 6)
_PEERS = [node_info(Ed25519Signer(i)).node_id for i in (1, 2)]
_BELOW = [Ed25519Signer(300 + i) for i in range(3)]
#: Placements a raw child hub may report: chained under a raw peer (valid), below
#: another placed node, under an unknown parent, older and newer twins, and forged.
PLACEMENTS = [
    make_placement(_BELOW[0], _PEERS[0]),
    make_placement(_BELOW[0], _PEERS[1], stamp=2),
    make_placement(_BELOW[1], node_info(_BELOW[0]).node_id),
    make_placement(_BELOW[2], NODES[0]),
    make_placement(Ed25519Signer(999), _PEERS[0], info=node_info(_BELOW[2])),
]


def _messages() -> st.SearchStrategy[Message]:
    node = st.sampled_from(NODES)
    sha = st.sampled_from(SHAS)
    return st.one_of(
        st.builds(Ping),
        st.builds(
            ShareIndexUpdate,
            seq=small,
            reset=st.booleans(),
            put=st.lists(st.tuples(sha, st.sampled_from(["a", "b"]), small), max_size=3).map(tuple),
            drop=st.lists(sha, max_size=2).map(tuple),
        ),
        st.builds(
            HubIndexUpdate,
            seq=small,
            reset=st.booleans(),
            content_put=st.lists(sha, max_size=3).map(tuple),
            content_drop=st.lists(sha, max_size=2).map(tuple),
            nodes_put=st.lists(st.sampled_from(PLACEMENTS), max_size=2).map(tuple),
            nodes_drop=st.lists(node, max_size=2).map(tuple),
        ),
        st.builds(IndexAck, seq=small),
        st.builds(Resync, expected=small),
        st.builds(
            Find,
            query=small,
            sha1=sha,
            share_id=st.none() | node,
            up=st.booleans(),
            ttl_ms=st.integers(0, 3000),
        ),
        st.builds(
            FindReply,
            query=small,
            results=st.lists(
                st.builds(
                    FindResult,
                    kbshare_id=node,
                    share_url=st.just("u"),
                    path=st.just("p"),
                    size=small,
                    hops=st.just(()),
                ),
                max_size=2,
            ).map(tuple),
        ),
        st.builds(
            Open,
            stream=st.integers(1, 12),
            target=node,
            method=st.just("GET"),
            path=st.just("/x"),
            headers=st.just(()),
            credit=st.integers(0, 5000),
        ),
        st.builds(Response, stream=st.integers(1, 12), status=st.just(200), headers=st.just(())),
        st.builds(Data, stream=st.integers(1, 12), data=st.binary(min_size=1, max_size=3000)),
        st.builds(End, stream=st.integers(1, 12)),
        st.builds(Credit, stream=st.integers(1, 12), credit=st.integers(1, 5000)),
        st.builds(Reset, stream=st.integers(1, 12), status=st.just(502), reason=st.just("r")),
    )


#: Built once: hypothesis validates a strategy the first time it is drawn from, and
#: building this one per step made that validation most of the test's time.
MESSAGES = _messages()


@st.composite
def _script(draw: st.DrawFn) -> list[tuple[str, object]]:
    steps: list[tuple[str, object]] = []
    for _ in range(draw(st.integers(1, 25))):
        kind = draw(
            st.sampled_from(["send0", "send1", "send0", "send1", "eof", "time", "find", "open"])
        )
        if kind.startswith("send"):
            steps.append((kind, draw(MESSAGES)))
        elif kind == "time":
            steps.append((kind, draw(st.floats(0.1, 12.0))))
        else:
            steps.append((kind, draw(st.integers(0, 3))))
    return steps


@given(_script(), st.booleans())
@settings(max_examples=60, deadline=None)
def test_random_peer_traffic_never_breaks_the_hub(
    script: list[tuple[str, object]], as_hub: bool
) -> None:
    net = Net(chunking=True)
    net.add_hub("H")
    net.add_hub("B", parent="H")
    data = bytes(range(256)) * 40
    net.add_share("S", parent="B", files={"f": data, "g": bytes([1])})
    net.apps["S"] = file_server({"f": data})
    net.apps["H"] = consumer({})
    peers = [net.connect_raw("H", seed=i) for i in (1, 2)]
    for peer in peers:
        if as_hub:
            peer.join(info=peer.info(node_type="hub", confirm_share=""))
        else:
            peer.join()
    hub = net.cores["H"]
    targets = [net.cores["S"].node_id, net.cores["B"].node_id, peers[0].info().node_id, NODES[0]]
    for kind, value in script:
        if kind.startswith("send"):
            peers[int(kind[-1])].send(value)  # type: ignore[arg-type]
        elif kind == "eof":
            peer = peers[int(value) % 2]  # type: ignore[call-overload]
            if (peer.target, peer.link) in net.pipes:
                del net.pipes[(peer.target, peer.link)]
                hub.receive_eof(peer.link, net.now)
                net.pump()
        elif kind == "time":
            net.advance(value)  # type: ignore[arg-type]
        elif kind == "find":
            hub.find(SHAS[int(value)], net.now)  # type: ignore[call-overload]
            net.pump()
        else:
            target = targets[int(value)]  # type: ignore[call-overload]
            hub.open_request(target, "GET", f"/{target}/download/f", now=net.now)
            net.pump()
    # Cut the raw peers and let every deadline pass: nothing may be left behind.
    for peer in peers:
        if (peer.target, peer.link) in net.pipes:
            del net.pipes[(peer.target, peer.link)]
            hub.receive_eof(peer.link, net.now)
    net.pump()
    net.advance(FAST.stream_idle_timeout + FAST.request_timeout + 1)
    for name in ("H", "B", "S"):
        core = net.cores[name]
        assert core.pending_lookups() == 0, name
        assert core.open_streams() == 0, name
