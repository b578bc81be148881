"""``kbproto.sim``: a deterministic simulator that runs real kbproto cores as a network.

See STYLE.md section 2. Everything here is pure: a seeded scheduler, a fake clock,
simulated links with faults, scripted apps and global invariants, with no sockets,
no event loop and no wall clock, so the same seed gives the same run byte for byte.
"""

from __future__ import annotations

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
from kbproto.sim.network import CoreFactory as CoreFactory
from kbproto.sim.network import NodeApp as NodeApp
from kbproto.sim.network import NullApp as NullApp
from kbproto.sim.network import SimFailure as SimFailure
from kbproto.sim.network import SimLink as SimLink
from kbproto.sim.network import SimNetwork as SimNetwork
from kbproto.sim.network import SimNode as SimNode
from kbproto.sim.tracelog import TraceLog as TraceLog

__all__ = (
    "CoreFactory",
    "Crash",
    "Fault",
    "FaultPlan",
    "HalfOpen",
    "Heal",
    "KillLink",
    "NodeApp",
    "NullApp",
    "Partition",
    "Restart",
    "SimClock",
    "SimFailure",
    "SimLink",
    "SimNetwork",
    "SimNode",
    "Slow",
    "TraceLog",
)
