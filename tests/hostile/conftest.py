"""The hostile-input tests' network: a real ``kbucket-hub`` and a real ``kbucket-host``
(joined to it) on 127.0.0.1, started once per module, stopped at the end.

The share's directory holds bait: dot-files with markers, a symlink to a secret file
outside the share, a symlinked directory escaping it; ``.kbucket/`` holds the real
private key. Every test attacks the running processes, then checks that a normal
client is still served (``Net.assert_serving``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.procs import Node, Procs
from tests.hostile.helpers import find_json, http_get

#: Bytes that must never leave the share (outside file, dot-files).
SECRET = b"HOSTILE-SECRET-OUTSIDE-THE-SHARE"
DOT_MARKER = b"HOSTILE-DOT-FILE-MARKER"
NORMAL = b"a normal file that normal clients download\n" * 100


@dataclass
class Net:
    """The running hub and share, and the bait they hold."""

    procs: Procs
    hub: Node
    share: Node
    work: Path
    normal_sha1: str

    def forbidden(self) -> list[bytes]:
        """Byte strings no response may hold: secrets, key bodies, absolute paths."""
        out = [SECRET, DOT_MARKER, str(self.work).encode(), b"Traceback"]
        for node in (self.hub, self.share):
            pem = (node.directory / ".kbucket" / "private.pem").read_text()
            out += [line.encode() for line in pem.splitlines() if "-----" not in line and line]
        return out

    def assert_clean(self, response: bytes) -> None:
        """``response`` holds nothing of ``forbidden()``."""
        for bad in self.forbidden():
            assert bad not in response, f"leaked {bad[:40]!r} in {response[:300]!r}"

    def assert_serving(self) -> None:
        """Both processes run and a normal client gets the right bytes, directly
        from the share, proxied through the hub and by a find at the hub."""
        for node in (self.hub, self.share):
            assert node.proc.popen.poll() is None, f"{node.proc.name} died: {node.proc.stderr()}"
            # A handler that failed is logged with a traceback: none may have been.
            assert node.proc.stderr_path is not None
            logged = node.proc.stderr_path.read_text(errors="replace")
            assert "Traceback" not in logged, logged[-3000:]
        sid = self.share.node_id
        assert http_get(f"{self.share.url}/{sid}/download/normal.txt") == (200, NORMAL)
        assert http_get(f"{self.hub.url}/{sid}/download/normal.txt") == (200, NORMAL)
        found = find_json(self.hub, self.normal_sha1)
        assert found["found"] is True, found


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    work = tmp_path_factory.mktemp("hostile").resolve()
    procs = Procs(work)
    try:
        share_dir = work / "share"
        (share_dir / "sub" / ".git").mkdir(parents=True)
        (share_dir / "normal.txt").write_bytes(NORMAL)
        (share_dir / "sub" / "b.txt").write_bytes(b"file b\n")
        (share_dir / "sub" / ".git" / "config").write_bytes(DOT_MARKER)
        (share_dir / ".env").write_bytes(DOT_MARKER)
        outside = work / "outside"
        outside.mkdir()
        (outside / "secret.txt").write_bytes(SECRET)
        (share_dir / "escape.txt").symlink_to(outside / "secret.txt")
        (share_dir / "escdir").symlink_to(outside)
        (share_dir / "sub" / "up").symlink_to("../..")
        hub = procs.node("kbucket-hub", work / "hub", name="hostile-hub")
        share = procs.node("kbucket-host", share_dir, name="hostile-share", parent=hub)
        yield Net(procs, hub, share, work, hashlib.sha1(NORMAL).hexdigest())
    finally:
        procs.close()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    """A ``Procs`` whose processes are all stopped when the test ends."""
    started = Procs(tmp_path)
    try:
        yield started
    finally:
        started.close()
