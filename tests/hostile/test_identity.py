"""Node identities below a child hub (issue 11, class 4), with real processes.

A fake child hub (``tests.sim.hostile.HostileHub``: a kbproto ``HubCore`` with a
permissive verifier, over a real websocket) joins a real ``kbucket-hub`` and claims
the node id of a real ``kbucket-host``: with the share's public key and a signature of
its own, and with the share's genuine old placement (signed by the share's key, naming
the fake hub as its parent: what a former parent holds). It answers every request for
that id with ``IMPOSTOR`` bytes. Whichever joined first, and across the share
reconnecting, the hub routes ``/ID/download``, ``/ID/api/readdir`` and
``/ID/api/nodeinfo`` for the share's id to the share, and its console says it
dropped an unproven claim.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from kbapps.config import ensure_kbucket_dir
from kbapps.keys import load_or_create_signer
from kbproto import HubConfig, HubCore, SeededIdSource, SignatureScheme
from kbproto.auth import node_id_from_public_pem
from kbproto.messages import NodeInfo, Placement
from kbproto.placement import sign_placement
from tests.e2e.procs import Node, Procs
from tests.helpers import Ed25519Signer
from tests.hostile.helpers import CoreRun, drive_core, http_get
from tests.sim.hostile import IMPOSTOR, HostileHub

pytestmark = pytest.mark.anyio

FILE = b"the real share's bytes\n" * 100
#: A placement stamp from long ago (Unix milliseconds): the share's join under the
#: fake hub, before it moved to the real one.
OLD_STAMP = 1_500_000_000_000


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class _Permissive:
    """The fake hub's verifier: it believes anything (it is not the one being tested)."""

    def verify(
        self, public_pem: str, scheme: SignatureScheme, signature: bytes, data: bytes
    ) -> bool:
        return True


def _share_dir(tmp: Path) -> tuple[Path, NodeInfo, Placement]:
    """The share's directory with its keys made ahead (so the attacker's statements can
    name them), its info as it will register, and its genuine old placement under the
    fake hub."""
    directory = tmp / "share"
    directory.mkdir()
    (directory / "normal.txt").write_bytes(FILE)
    ensure_kbucket_dir(directory)
    signer, _ = load_or_create_signer(directory / ".kbucket")
    info = NodeInfo(
        node_id=signer.node_id,
        node_type="leaf",
        name="real-share",
        description="",
        owner="",
        owner_email="",
        listen_url="http://127.0.0.1:9",
        public_key=signer.public_pem,
        scientific_research="yes",
        confirm_share="yes",
    )
    old = sign_placement(
        signer, info, parent=_FAKE_ID, nonce="00" * 32, stamp=OLD_STAMP
    )  # the share's own key: genuine, but old
    return directory, info, old


_FAKE_KEY = Ed25519Signer(4711)
_FAKE_ID = node_id_from_public_pem(_FAKE_KEY.public_pem)


def _forged(info: NodeInfo) -> Placement:
    """The share's id and public key, signed with the fake hub's key."""
    return sign_placement(_FAKE_KEY, info, parent=_FAKE_ID, nonce="00" * 32, stamp=2**52)


@asynccontextmanager
async def _fake_hub(
    hub: Node, claims: list[Placement], impersonate: set[str]
) -> AsyncIterator[HostileHub]:
    """The fake child hub, joined to ``hub`` and lying, until the block exits."""
    core = HostileHub(
        HubCore(
            HubConfig(name="fake-hub", listen_url="http://127.0.0.1:9", parent_url=hub.url),
            signer=_FAKE_KEY,
            verifier=_Permissive(),
            ids=SeededIdSource("fake-hub"),
        ),
        claims=lambda: claims,
        impersonate=impersonate,
    )
    run = CoreRun()
    done = False

    async def carry() -> None:
        await drive_core(core, run, seconds=120, stop=lambda: done)

    async with anyio.create_task_group() as tg:
        tg.start_soon(carry)
        with anyio.fail_after(15):
            while not run.joined:
                await anyio.sleep(0.05)
        await anyio.sleep(1.0)  # its index (and the lies in it) reached the hub
        try:
            yield core
        finally:
            done = True
    assert not run.closed, "the fake hub lost its link"


def _answers(node_url: str, share_id: str) -> list[tuple[int, bytes]]:
    """What ``node_url`` answers for the share's download, readdir and nodeinfo."""
    out = []
    for path in ("download/normal.txt", "api/readdir/", "api/nodeinfo"):
        status, body = http_get(f"{node_url}/{share_id}/{path}")
        out.append((status, body))
    return out


def _same_as_direct(hub: Node, share: Node) -> None:
    direct = _answers(share.url, share.node_id)
    via_hub = _answers(hub.url, share.node_id)
    assert [status for status, _ in direct] == [200, 200, 200]
    assert via_hub[0] == direct[0]
    assert via_hub[1] == direct[1]
    # nodeinfo through the hub is the share's own (its id and name), not the impostor's.
    info = json.loads(via_hub[2][1])["info"]
    assert (info["node_id"], info["name"]) == (share.node_id, "real-share")
    assert all(IMPOSTOR not in body for _, body in via_hub)


async def _start_share(procs: Procs, directory: Path, hub: Node) -> Node:
    return await anyio.to_thread.run_sync(
        lambda: procs.node("kbucket-host", directory, name="real-share", parent=hub)
    )


async def test_a_fake_hub_claiming_a_share_first_never_gets_its_requests(
    procs: Procs, tmp_path: Path
) -> None:
    directory, info, old = _share_dir(tmp_path)
    hub = await anyio.to_thread.run_sync(
        lambda: procs.node("kbucket-hub", tmp_path / "hub", name="hub")
    )
    async with _fake_hub(hub, [_forged(info), old], {info.node_id}) as fake:
        share = await _start_share(procs, directory, hub)
        await anyio.to_thread.run_sync(_same_as_direct, hub, share)
        # The share reconnects (a restart): its fresh join wins again.
        share.proc.stop()
        share = await _start_share(procs, directory, hub)
        await anyio.to_thread.run_sync(_same_as_direct, hub, share)
        assert fake.served == []
    assert hub.proc.has_line(
        rf"Child hub fake-hub \({_FAKE_ID}\) reported node {info.node_id} without proof: "
        rf"bad signature"
    )


async def test_a_fake_hub_claiming_a_joined_share_never_gets_its_requests(
    procs: Procs, tmp_path: Path
) -> None:
    directory, info, old = _share_dir(tmp_path)
    hub = await anyio.to_thread.run_sync(
        lambda: procs.node("kbucket-hub", tmp_path / "hub", name="hub")
    )
    share = await _start_share(procs, directory, hub)
    async with _fake_hub(hub, [old, _forged(info)], {info.node_id}) as fake:
        await anyio.to_thread.run_sync(_same_as_direct, hub, share)
        # The share reconnects while the fake hub keeps claiming it.
        share.proc.stop()
        share = await _start_share(procs, directory, hub)
        await anyio.to_thread.run_sync(_same_as_direct, hub, share)
        assert fake.served == []
    assert hub.proc.has_line(rf"Child hub fake-hub \({_FAKE_ID}\) reported node {info.node_id}")


async def test_a_hub_minting_nodes_proves_only_those(procs: Procs, tmp_path: Path) -> None:
    """The fake hub may place nodes it holds keys for under itself (proven: the hub
    routes them to it); the share's id hung below one of them is not."""
    directory, info, _old = _share_dir(tmp_path)
    hub = await anyio.to_thread.run_sync(
        lambda: procs.node("kbucket-hub", tmp_path / "hub", name="hub")
    )
    minted_key = Ed25519Signer(4712)
    minted_id = node_id_from_public_pem(minted_key.public_pem)
    minted_info = replace(info, node_id=minted_id, public_key=minted_key.public_pem)
    minted = sign_placement(minted_key, minted_info, parent=_FAKE_ID, nonce="00" * 32, stamp=1)
    below = sign_placement(minted_key, info, parent=minted_id, nonce="00" * 32, stamp=2**52)
    share = await _start_share(procs, directory, hub)
    async with _fake_hub(hub, [below, minted], {info.node_id, minted_id}) as fake:
        await anyio.to_thread.run_sync(_same_as_direct, hub, share)
        share.proc.stop()
        share = await _start_share(procs, directory, hub)
        await anyio.to_thread.run_sync(_same_as_direct, hub, share)
        answer = await anyio.to_thread.run_sync(
            http_get, f"{hub.url}/{minted_id}/download/anything"
        )
        assert answer == (200, IMPOSTOR)
        assert fake.served == [minted_id]
