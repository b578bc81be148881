"""Fuzz whole-network behaviour: a fault schedule and a command script drawn from bytes.

The same simulator and invariants as ``tests/sim``, but the fuzzer chooses the
ordering: which node crashes (loudly or silently) and when, which links die or go
half-open, what is partitioned and healed, which nodes are slow, which files change,
which finds and downloads run, and how much time passes between them.

Invariants (any violation raises, which is a crash for the fuzzer):

* after every step, ``kbproto.sim.invariants``: per-stream buffers within the window,
  limits kept, a deadline armed whenever anything waits, core and driver agree on
  links, at most one parent link, stream numbers never reused on a link;
* no core raises, and every frame a core sends decodes;
* every download that ends delivers exactly the file's bytes;
* after the script, with every fault lifted and every node restarted, the network
  settles: all nodes rejoin, every index converges, finds from every hub agree with
  the oracle, and no stream or find is left anywhere.

Run by hand (atheris): ``python -m fuzz.fuzz_sim fuzz/corpus/sim -max_total_time=600``
"""

from __future__ import annotations

import sys

from fuzz._reader import ByteReader
from kbproto.config import Limits, Timeouts
from kbproto.sim import (
    Crash,
    DownloadRecord,
    FaultPlan,
    HalfOpen,
    Heal,
    KillLink,
    Partition,
    Restart,
    SimNetwork,
    Slow,
    build_world,
    sha1_hex,
    tree,
)

__all__ = ("TestOneInput",)

TOPOLOGY = tree(2, 2, shares=4)
LIMITS = Limits(stream_window=2048, data_chunk=512)
TIMEOUTS = Timeouts()
MAX_OPS = 24
CONTENTS = [f"shared content {i}".encode() * (i + 1) for i in range(6)]


def _files(name: str, salt: int) -> dict[str, bytes]:
    index = int(name[1:])
    return {
        f"{name}/a.bin": CONTENTS[(index + salt) % len(CONTENTS)],
        f"{name}/b.bin": CONTENTS[(index * 3 + 1) % len(CONTENTS)],
        f"{name}/big.bin": bytes((index + i) % 251 for i in range(6000 + 900 * index)),
    }


def TestOneInput(data: bytes) -> None:  # the name atheris looks for
    """Run one fault-and-command script (raises on a violated invariant)."""
    reader = ByteReader(data)
    plan = FaultPlan(
        latency=0.001 * (1 + reader.byte() % 20),
        jitter=0.001 * (reader.byte() % 20),
        max_pieces=1 + reader.byte() % 12,
        whole_chance=(reader.byte() % 5) / 4,
    )
    net = SimNetwork(data[:8].hex() or "empty", plan)
    files = {name: _files(name, 0) for name in TOPOLOGY.shares}
    world = build_world(net, TOPOLOGY, files, limits=LIMITS, timeouts=TIMEOUTS, credit_delay=0.01)
    world.install_invariants()
    names = [spec.name for spec in TOPOLOGY.nodes]
    downloads: list[tuple[DownloadRecord, bytes]] = []
    net.run_for(1.0)
    for _ in range(MAX_OPS):
        if not reader.remaining:
            break
        code = reader.byte() % 11
        name = names[reader.byte() % len(names)]
        other = names[reader.byte() % len(names)]
        node = net.node(name)
        if code == 0:
            net.apply_fault(Crash(node=name, silent=bool(reader.byte() & 1)))
        elif code == 1 and not node.alive:
            net.apply_fault(Restart(node=name))
        elif code == 2:
            net.apply_fault(KillLink(a=name, b=other))
        elif code == 3:
            net.apply_fault(HalfOpen(a=name, b=other))
        elif code == 4 and TOPOLOGY.spec(name).parent is not None:
            net.apply_fault(Partition(nodes=tuple(TOPOLOGY.subtree(name))))
        elif code == 5:
            net.apply_fault(Heal())
        elif code == 6:
            net.apply_fault(Slow(node=name, delay=(reader.byte() % 8) * 0.25))
        elif code == 7 and name in TOPOLOGY.shares and node.alive:
            world.apps[name].set_files(node, _files(name, reader.byte()))
        elif code == 8 and name in TOPOLOGY.hubs and node.alive:
            world.apps[name].find(node, sha1_hex(CONTENTS[reader.byte() % len(CONTENTS)]))
        elif code == 9 and name in TOPOLOGY.hubs and node.alive and other in TOPOLOGY.shares:
            store = world.store(other)
            path = sorted(store.files)[reader.byte() % len(store.files)]
            target = world.ids[other]
            if world.hub(name).can_route(target):
                record = world.apps[name].download(node, target, f"/{target}/download/{path}")
                downloads.append((record, store.files[path]))
        else:
            net.run_for((reader.byte() % 64) * 0.5)
        for record, content in downloads:
            if record.ended:
                assert record.status == 200, record.path
                assert bytes(record.body) == content, record.path
            else:
                assert bytes(record.body) == content[: len(record.body)], record.path
    # Lift every fault; the network must settle and agree with the oracle. A half-open
    # link looks healthy until heartbeats give up on it, so first let that happen.
    net.heal()
    for name in names:
        net.set_slow(name, 0.0)
        if not net.node(name).alive:
            net.restart(name)
    net.run_for(TIMEOUTS.heartbeat_timeout + TIMEOUTS.heartbeat_interval)
    net.run_until(
        lambda: world.all_joined() and world.indexes_converged(),
        timeout=5 * TIMEOUTS.reconnect_max,
        poll=16,
    )
    lookups = {
        hub: world.apps[hub].find(world.nodes[hub], sha1_hex(CONTENTS[0])) for hub in TOPOLOGY.hubs
    }
    net.run_until(lambda: all(r.done for r in lookups.values()), TIMEOUTS.lookup_timeout + 1)
    for hub, lookup in lookups.items():
        assert lookup.share_ids == world.expected_find(hub, lookup.sha1), hub
    net.run_until_quiescent()


def main() -> None:
    """Run under atheris (``pip install atheris``)."""
    import atheris

    # Coverage guidance: instrument every module already imported (kbproto included).
    atheris.instrument_all()
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
