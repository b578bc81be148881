"""Node identities below a child hub (issue 11, class 4), in the simulator.

A hostile child hub (``tests.sim.hostile.HostileHub``: a real ``HubCore`` whose
parent link lies) claims a real share's node id: with the share's public key and its
own signature, as a node hanging below a node it minted, or with the share's genuine
old placement recorded while it was the share's parent. Whichever joined first, the
root keeps routing the share's id to the share: a download of the share's file from
the root brings the share's bytes, never the impostor's. A node that really moved is
routed to its new place at once, before its old parent notices it left.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from kbproto.config import HubConfig, ShareConfig
from kbproto.hub import HubCore
from kbproto.messages import NodeInfo, Placement
from kbproto.placement import sign_placement
from kbproto.share import ShareCore
from kbproto.sim import (
    DownloadRecord,
    FileStore,
    NodeSpec,
    SimApp,
    SimNode,
    SimWorld,
    Topology,
)
from kbproto.sim.identity import SimSigner, SimVerifier, sim_node_id
from tests.sim.hostile import IMPOSTOR, HostileHub
from tests.sim.scenarios import TIMEOUTS, make_world

FILE = b"the victim share's real bytes\n" * 50
PATH = "data/real.txt"


def _address(name: str) -> str:
    return f"http://{name}.sim:3240"


def _info(name: str, *, hub: bool = False) -> NodeInfo:
    """The info a sim node called ``name`` registers with."""
    return NodeInfo(
        node_id=sim_node_id(name),
        node_type="hub" if hub else "leaf",
        name=name,
        description="",
        owner="",
        owner_email="",
        listen_url=_address(name),
        public_key=SimSigner(name).public_pem,
        scientific_research="yes",
        confirm_share="" if hub else "yes",
    )


def _forged(claimed: str, signer: str, parent: str, stamp: int = 2**50) -> Placement:
    """``claimed``'s info, placed under ``parent``, signed by ``signer``'s key."""
    return sign_placement(
        SimSigner(signer), _info(claimed), parent=sim_node_id(parent), nonce="00" * 32, stamp=stamp
    )


def _world(seed: int, specs: list[NodeSpec]) -> SimWorld:
    return make_world(seed, Topology(tuple(specs)), {"v": {PATH: FILE}})


def _add_hostile(
    world: SimWorld,
    parent: str,
    start_at: float,
    claims: list[Placement] | None = None,
) -> list[HostileHub]:
    """Add the hostile hub ``evil`` under ``parent``; returns its cores (per start)."""
    cores: list[HostileHub] = []
    config = HubConfig(
        name="evil",
        listen_url=_address("evil"),
        parent_url=_address(parent),
        limits=world.limits,
        timeouts=world.timeouts,
    )

    def make(node: SimNode) -> HostileHub:
        hub = HubCore(
            config,
            signer=SimSigner("evil"),
            verifier=SimVerifier(),
            ids=node.id_source(),
            trace=node.trace_sink,
        )
        core = HostileHub(
            hub,
            claims=lambda: list(claims) if claims is not None else list(core.recorded.values()),
            impersonate={sim_node_id("v")},
        )
        cores.append(core)
        return core

    world.network.add_node("evil", make, address=_address("evil"), start_at=start_at)
    return cores


def _add_share_v(world: SimWorld, name: str, parent: str, start_at: float) -> SimNode:
    """The share ``v`` (its key and files) started as node ``name``, joining ``parent``."""
    config = ShareConfig(
        name="v",
        listen_url=_address(name),
        parent_url=_address(parent),
        limits=world.limits,
        timeouts=world.timeouts,
    )

    def make(node: SimNode) -> ShareCore:
        return ShareCore(config, signer=SimSigner("v"), ids=node.id_source(), trace=node.trace_sink)

    app = SimApp(FileStore({PATH: FILE}))
    world.apps[name] = app
    return world.network.add_node(name, make, app, address=_address(name), start_at=start_at)


def _download(world: SimWorld, at: str = "h0") -> DownloadRecord:
    victim = sim_node_id("v")
    record = world.apps[at].download(world.nodes[at], victim, f"/{victim}/download/{PATH}")
    world.network.run_until(lambda: record.done, TIMEOUTS.request_timeout + 5)
    return record


def _routed_to(world: SimWorld, hub: str, node: str) -> bool:
    """``hub`` routes requests for share ``v`` down its link to ``node``."""
    link = world.nodes[hub].link_to(node)
    core = world.nodes[hub].core
    assert isinstance(core, HubCore)
    return link is not None and core.child_toward(sim_node_id("v")) == link.link_id


@pytest.mark.parametrize("victim_first", [True, False], ids=["victim-first", "impostor-first"])
@pytest.mark.parametrize(
    "claims",
    [
        # The share's id and key, signed with the hostile hub's own key.
        [_forged("v", "evil", "evil")],
        # A node the hostile hub minted (genuinely signed by its own key), with the
        # share hanging below it on a forged placement.
        [_forged("minted", "minted", "evil"), _forged("v", "minted", "minted")],
        # A forged id: the hostile hub's own key and signature under the share's id.
        [
            sign_placement(
                SimSigner("evil"),
                replace(_info("evil"), node_id=sim_node_id("v")),
                parent=sim_node_id("evil"),
                nonce="00" * 32,
                stamp=2**50,
            )
        ],
    ],
    ids=["forged-signature", "below-a-minted-node", "forged-id"],
)
def test_a_hostile_hub_cannot_take_a_share_s_id(
    victim_first: bool, claims: list[Placement]
) -> None:
    victim_at, evil_at = (0.2, 1.0) if victim_first else (1.0, 0.2)
    world = _world(
        7,
        [
            NodeSpec(name="h0", kind="hub", parent=None, start_at=0.0),
            NodeSpec(name="v", kind="share", parent="h0", start_at=victim_at),
        ],
    )
    evil = _add_hostile(world, "h0", evil_at, claims)
    net = world.network
    net.run_until(lambda: world.all_joined() and world.indexes_converged(), 30)
    net.run_for(2.0)  # every hub_index of the impostor has arrived
    assert _routed_to(world, "h0", "v")
    record = _download(world)
    assert (record.status, bytes(record.body)) == (200, FILE)
    assert evil[0].served == []
    # The share reconnects (a network blip): the impostor still does not get its id.
    net.kill_link("h0", "v")
    app = world.apps["v"]
    net.run_until(lambda: app.joins == 2 and app.synced and _routed_to(world, "h0", "v"), 30)
    assert bytes(_download(world).body) == FILE
    assert evil[0].served == []


def test_a_former_parent_replaying_a_genuine_old_placement_is_refused() -> None:
    world = _world(11, [NodeSpec(name="h0", kind="hub", parent=None, start_at=0.0)])
    # The share first joins the hostile hub, which records its signed placement...
    evil = _add_hostile(world, "h0", 0.1)
    net = world.network
    first = _add_share_v(world, "v-first", "evil", 0.3)
    net.run_until(lambda: bool(evil and evil[0].recorded), 10)
    net.run_for(2.0)
    assert _routed_to(world, "h0", "evil")  # it is the share's real parent now
    assert bytes(_download(world).body) == IMPOSTOR  # (and, being hostile, lies)
    # ...then the share leaves it (vanishes without a word) and joins the root directly.
    # The hostile hub keeps announcing the recorded placement and never drops it.
    net.crash(first.name, silent=True)
    again = _add_share_v(world, "v-again", "h0", net.now + 1.0)
    net.run_until(lambda: _routed_to(world, "h0", again.name), 10)
    assert bytes(_download(world).body) == FILE
    net.run_for(TIMEOUTS.heartbeat_timeout + 5)  # the hostile hub dropped it, and lied on
    assert _routed_to(world, "h0", again.name)
    assert bytes(_download(world).body) == FILE
    # Once the share is gone from the root too, the old placement still proves nothing,
    # even sent afresh (the hostile hub rejoins and syncs again): the root remembers
    # the newer stamp it saw.
    net.crash(again.name)
    net.kill_link("h0", "evil")
    net.run_until(lambda: world.nodes["h0"].link_to("evil") is not None, 30)
    net.run_for(5.0)
    record = _download(world)
    assert (record.reset_status, bytes(record.body)) == (404, b"")
    assert evil[0].served == [sim_node_id("v")]  # only while it was the real parent


def test_a_share_that_moves_is_routed_to_its_new_place_at_once() -> None:
    world = _world(
        13,
        [
            NodeSpec(name="h0", kind="hub", parent=None, start_at=0.0),
            NodeSpec(name="h1", kind="hub", parent="h0", start_at=0.05),
            NodeSpec(name="h2", kind="hub", parent="h0", start_at=0.1),
            NodeSpec(name="v", kind="share", parent="h1", start_at=0.2),
        ],
    )
    net = world.network
    net.run_until(lambda: world.all_joined() and world.indexes_converged(), 30)
    assert _routed_to(world, "h0", "h1")
    # The share's machine moves to another network: it vanishes from h1 without a
    # word (h1 keeps it until its heartbeat timeout) and joins h2.
    net.crash("v", silent=True)
    moved = _add_share_v(world, "v-moved", "h2", net.now + 1.0)
    net.run_until(lambda: _routed_to(world, "h0", "h2"), 10)
    assert net.now < 10.0  # well before h1 gives up on the old link
    assert _routed_to(world, "h2", moved.name)
    assert bytes(_download(world).body) == FILE
    net.run_for(TIMEOUTS.heartbeat_timeout + 5)
    assert _routed_to(world, "h0", "h2")
    assert bytes(_download(world).body) == FILE
