"""A share core reading its files from the app's store (``kbproto.sharestore``)."""

from __future__ import annotations

import pytest

from kbproto import Limits, SeededIdSource, ShareConfig, ShareCore
from kbproto.codec import decode
from kbproto.errors import LocalProtocolError
from kbproto.events import IndexSynced
from kbproto.messages import MAX_PATH, ShareIndexUpdate
from tests.helpers import FAST, Ed25519Signer, Net, sha1_of
from tests.proto.test_index import _frames


class Store:
    """A ``ShareFiles`` over a dict, counting what the core reads."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = {path: (sha1_of(data), len(data)) for path, data in files.items()}
        self.reads = 0
        self.key_reads = 0

    def representative(self, raw: bytes) -> tuple[str, int] | None:
        self.reads += 1
        paths = sorted(p for p, (sha1, _) in self.files.items() if sha1 == raw.hex())
        return (paths[0], self.files[paths[0]][1]) if paths else None

    def content_keys(self) -> list[bytes]:
        self.key_reads += 1
        return sorted({bytes.fromhex(sha1) for sha1, _ in self.files.values()})

    @property
    def content_count(self) -> int:
        return len({sha1 for sha1, _ in self.files.values()})

    def __len__(self) -> int:
        return len(self.files)


def _share(
    net: Net, store: Store, parent: str | None = "H", limits: Limits | None = None
) -> ShareCore:
    config = ShareConfig(
        name="S",
        listen_url="http://S:2000",
        parent_url=net.addresses[parent] if parent else None,
        limits=limits or Limits(),
        timeouts=FAST,
    )
    core = ShareCore(config, signer=Ed25519Signer(77), ids=SeededIdSource("s"), files=store)
    net._register("S", "http://S:2000", core, True)
    net.pump()
    return core


def _hub_count(net: Net) -> int:
    return net.cores["H"].content_count()  # type: ignore[union-attr]


def _updates(net: Net) -> list[ShareIndexUpdate]:
    sent = [decode(*f) for _, data in net.transmitted["S"] for f in _frames(data)]
    return [m for m in sent if isinstance(m, ShareIndexUpdate)]


def test_full_sync_and_deltas_read_the_store() -> None:
    net = Net()
    net.add_hub("H")
    files = {f"d/f{i:04}.dat": str(i).encode() for i in range(300)}
    files["d/twin.dat"] = b"7"  # same content as d/f0007.dat: one content id
    store = Store(files)
    limits = Limits(index_batch_bytes=2000, index_window=2)
    share = _share(net, store, limits=limits)
    assert _hub_count(net) == 300
    assert len(_updates(net)) > 5
    assert net.of("S", IndexSynced)[-1].entries == 300
    assert share.file_count() == 301
    assert share.lookup_local(sha1_of(b"7")) == ("d/f0007.dat", 1)
    # A delta: one file removed, one added; the app says which content ids changed.
    del store.files["d/f0001.dat"]
    store.files["new.dat"] = (sha1_of(b"new"), 3)
    share.content_changed([sha1_of(b"1"), sha1_of(b"new")], net.now)
    net.pump()
    assert _hub_count(net) == 300
    last = _updates(net)[-1]
    assert last.put == ((sha1_of(b"new"), "new.dat", 3),)
    assert last.drop == (sha1_of(b"1"),)
    assert share.lookup_local(sha1_of(b"1")) is None


def test_a_representative_the_wire_cannot_carry_is_absent() -> None:
    net = Net()
    net.add_hub("H")
    store = Store({"ok.dat": b"ok"})
    store.files["x" * (MAX_PATH + 1)] = (sha1_of(b"long"), 4)
    store.files["big.dat"] = (sha1_of(b"big"), -1)
    share = _share(net, store)
    assert _hub_count(net) == 1
    assert share.lookup_local(sha1_of(b"long")) is None
    assert share.lookup_local(sha1_of(b"big")) is None


def test_changes_before_joining_are_not_queued_and_malformed_ids_refused() -> None:
    net = Net()
    store = Store({"a": b"a"})
    share = _share(net, store, parent=None)
    share.content_changed([sha1_of(b"a")], net.now)  # no parent: nothing to report
    with pytest.raises(LocalProtocolError, match="not a sha1"):
        share.content_changed(["zz"], net.now)


def test_a_store_core_refuses_its_own_copy_of_the_files() -> None:
    net = Net()
    share = _share(net, Store({}), parent=None)
    sha1 = sha1_of(b"x")
    with pytest.raises(LocalProtocolError, match="store"):
        share.set_files([(sha1, "x", 1)], net.now)
    with pytest.raises(LocalProtocolError, match="store"):
        share.put_file(sha1, "x", 1, net.now)
    with pytest.raises(LocalProtocolError, match="store"):
        share.update_files([(sha1, "x", 1)], [], net.now)
    with pytest.raises(LocalProtocolError, match="store"):
        share.remove_file("x", net.now)


def test_content_changed_also_drives_a_core_with_its_own_index() -> None:
    net = Net()
    net.add_hub("H")
    share = net.add_share("S", parent="H", files={"a": b"a"})
    share.content_changed([sha1_of(b"a")], net.now)  # re-reported, unchanged
    net.pump()
    assert _hub_count(net) == 1
