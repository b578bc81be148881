"""``kbproto.sim``: a deterministic simulator that runs real kbproto cores as a network.

See STYLE.md section 2. Everything here is pure: a seeded scheduler, a fake clock,
simulated links with faults, scripted apps and global invariants, with no sockets,
no event loop and no wall clock, so the same seed gives the same run byte for byte.

A scenario in a few lines::

    net = SimNetwork(seed, FaultPlan(max_pieces=8))          # latency, chunking
    world = build_world(net, chain(3, shares=1), {"s0": {"f.bin": data}})
    world.install_invariants()                               # checked every step
    net.run_until(lambda: world.all_joined() and world.indexes_converged(), 60)
    sid = world.ids["s0"]
    rec = world.apps["h0"].download(world.nodes["h0"], sid, f"/{sid}/download/f.bin")
    net.apply_fault(KillLink(a="h1", b="h2"))                # or Crash, Partition...
    net.run_until(lambda: rec.done, 60)                      # SimFailure: seed + trace
    net.run_until_quiescent()                                # no leaks anywhere

Modules: ``network`` (scheduler, links, faults applied), ``faults`` (``FaultPlan``
and fault records), ``clock``, ``apps`` (``SimApp``: file store, finds, downloads),
``topology`` (``star``/``chain``/``tree``, ``SimWorld`` and its find oracle),
``invariants``, ``identity`` (deterministic stand-in keys), ``tracelog``, ``scale``
(a network of thousands of shares and a million content ids: ``ScaleSpec``).
"""

from __future__ import annotations

from kbproto.sim.apps import DownloadRecord as DownloadRecord
from kbproto.sim.apps import FileStore as FileStore
from kbproto.sim.apps import LookupRecord as LookupRecord
from kbproto.sim.apps import SimApp as SimApp
from kbproto.sim.apps import sha1_hex as sha1_hex
from kbproto.sim.clock import SimClock as SimClock
from kbproto.sim.faults import Crash as Crash
from kbproto.sim.faults import Fault as Fault
from kbproto.sim.faults import FaultPlan as FaultPlan
from kbproto.sim.faults import HalfOpen as HalfOpen
from kbproto.sim.faults import Heal as Heal
from kbproto.sim.faults import KillLink as KillLink
from kbproto.sim.faults import Partition as Partition
from kbproto.sim.faults import Restart as Restart
from kbproto.sim.faults import Slow as Slow
from kbproto.sim.identity import SimSigner as SimSigner
from kbproto.sim.identity import SimVerifier as SimVerifier
from kbproto.sim.identity import sim_node_id as sim_node_id
from kbproto.sim.network import CoreFactory as CoreFactory
from kbproto.sim.network import NodeApp as NodeApp
from kbproto.sim.network import NullApp as NullApp
from kbproto.sim.network import SimFailure as SimFailure
from kbproto.sim.network import SimLink as SimLink
from kbproto.sim.network import SimNetwork as SimNetwork
from kbproto.sim.network import SimNode as SimNode
from kbproto.sim.topology import NodeSpec as NodeSpec
from kbproto.sim.topology import SimWorld as SimWorld
from kbproto.sim.topology import Topology as Topology
from kbproto.sim.topology import build_world as build_world
from kbproto.sim.topology import chain as chain
from kbproto.sim.topology import star as star
from kbproto.sim.topology import tree as tree
from kbproto.sim.tracelog import TraceLog as TraceLog

__all__ = (
    "CoreFactory",
    "Crash",
    "DownloadRecord",
    "Fault",
    "FaultPlan",
    "FileStore",
    "HalfOpen",
    "Heal",
    "KillLink",
    "LookupRecord",
    "NodeApp",
    "NodeSpec",
    "NullApp",
    "Partition",
    "Restart",
    "SimApp",
    "SimClock",
    "SimFailure",
    "SimLink",
    "SimNetwork",
    "SimNode",
    "SimSigner",
    "SimVerifier",
    "SimWorld",
    "Slow",
    "Topology",
    "TraceLog",
    "build_world",
    "chain",
    "sha1_hex",
    "sim_node_id",
    "star",
    "tree",
)
