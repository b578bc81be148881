"""``.prv`` stand-ins and hidden folders in a share, with real processes (issue 16 item 11).

Topology (module-wide)::

    hub  <-  share HOLDER  (holds data/real.bin)
      ^
      +----  share POINTERS (publishes remote.bin.prv, sub/deep.bin.prv ... pointing at it;
                             advertises an unreachable URL, so the hub must proxy)

A stand-in ``X`` (``X.prv`` alone) is listed with the pointer's size and ``prv``; its
download, direct or through the hub, with HEAD and Range, gives the bytes that live on
the other share. ``X.prv`` next to ``X`` and ``node_modules`` folders are hidden; a
malformed or oversized ``.prv`` is listed as the plain file it is.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e.procs import (
    LINE_TIMEOUT,
    UNREACHABLE,
    Node,
    Procs,
    sha1_of,
    wait_for,
    write_pattern,
)

REAL_SIZE = 3 * 1024 * 1024 + 17
#: Above the stand-in size limit (``kbapps.share.standins.MAX_STANDIN_BYTES``).
HUGE_PRV_BYTES = 70 * 1024


def prv_bytes(data: bytes, original_path: str, *, pad: int = 0) -> bytes:
    """A ``.prv`` of ``data`` as the original tool wrote it (an absolute path is fine)."""
    obj = {
        "original_checksum": sha1_of(data),
        "original_size": len(data),
        "original_fcs": "head1000-" + hashlib.sha1(data[:1000]).hexdigest(),
        "original_path": original_path,
        "prv_version": "0.11",
    }
    return (json.dumps(obj, indent=4) + " " * pad + "\n").encode()


@dataclass
class Net:
    hub: Node
    holder: Node
    pointers: Node
    real: bytes
    module_js: bytes


def _request(
    url: str, *, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return (
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                response.read(),
            )
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def _json(url: str) -> dict[str, Any]:
    status, _, body = _request(url)
    assert status == 200, (url, status, body[:300])
    value = json.loads(body)
    assert isinstance(value, dict)
    return value


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    work = tmp_path_factory.mktemp("standins")
    procs = Procs(work)
    try:
        holder_dir = work / "holder"
        real = write_pattern(holder_dir / "data" / "real.bin", REAL_SIZE, seed=11)
        pointers_dir = work / "pointers"
        (pointers_dir / "sub").mkdir(parents=True)
        (pointers_dir / "remote.bin.prv").write_bytes(prv_bytes(real, "/home/lab/real.bin"))
        (pointers_dir / "sub" / "deep.bin.prv").write_bytes(prv_bytes(real, "deep.bin"))
        (pointers_dir / "both.txt").write_bytes(b"the file itself\n")
        (pointers_dir / "both.txt.prv").write_bytes(prv_bytes(real, "both.txt"))
        (pointers_dir / "folder").mkdir()
        (pointers_dir / "folder" / "inside.txt").write_bytes(b"inside\n")
        (pointers_dir / "folder.prv").write_bytes(prv_bytes(real, "folder"))
        (pointers_dir / "bad.dat.prv").write_bytes(b"{not json\n")
        (pointers_dir / "huge.dat.prv").write_bytes(prv_bytes(real, "huge.dat", pad=HUGE_PRV_BYTES))
        (pointers_dir / "missing.bin.prv").write_bytes(prv_bytes(b"nobody has this", "m.bin"))
        module_js = b"module.exports = 'a dependency, not data';\n"
        (pointers_dir / "node_modules" / "pkg").mkdir(parents=True)
        (pointers_dir / "node_modules" / "pkg" / "index.js").write_bytes(module_js)
        (pointers_dir / "sub" / "node_modules").mkdir()
        hub = procs.node("kbucket-hub", work / "hub", name="standin-hub")
        holder_ready = procs.launch("kbucket-host", holder_dir, name="holder", parent=hub)
        pointers = procs.node(
            "kbucket-host", pointers_dir, "--listen-url", UNREACHABLE, name="pointers", parent=hub
        )
        yield Net(hub, holder_ready(), pointers, real, module_js)
    finally:
        procs.close()


def _files(listing: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in listing["files"]}


@pytest.mark.parametrize("via", ["share", "hub"])
def test_listing_shows_standins_and_hides_what_the_original_hid(net: Net, via: str) -> None:
    base = net.pointers.url if via == "share" else net.hub.url
    sid = net.pointers.node_id
    listing = _json(f"{base}/{sid}/api/readdir/")
    files = _files(listing)
    assert sorted(files) == ["bad.dat.prv", "both.txt", "huge.dat.prv", "missing.bin", "remote.bin"]
    assert [d["name"] for d in listing["dirs"]] == ["folder", "sub"]  # no node_modules
    remote = files["remote.bin"]
    assert remote["size"] == REAL_SIZE
    assert remote["prv"] == {
        "original_checksum": sha1_of(net.real),
        "original_size": REAL_SIZE,
        "original_fcs": "head1000-" + hashlib.sha1(net.real[:1000]).hexdigest(),
        "original_path": "remote.bin",  # never the pointer's absolute path
        "prv_version": "0.11",
    }
    # The real file, not its pointer, describes both.txt.
    assert files["both.txt"]["size"] == len(b"the file itself\n")
    assert files["huge.dat.prv"]["size"] > HUGE_PRV_BYTES
    assert files["bad.dat.prv"]["size"] == len(b"{not json\n")
    sub = _json(f"{base}/{sid}/api/readdir/sub")
    assert [f["name"] for f in sub["files"]] == ["deep.bin"]
    assert sub["dirs"] == []


@pytest.mark.parametrize("via", ["share", "hub"])
def test_standin_download_gets_the_bytes_from_the_other_share(net: Net, via: str) -> None:
    base = net.pointers.url if via == "share" else net.hub.url
    sid = net.pointers.node_id
    for path in ("remote.bin", "sub/deep.bin"):
        status, headers, body = _request(f"{base}/{sid}/download/{path}")
        assert status == 200, (path, status, body[:300])
        assert body == net.real
        assert headers["etag"] == f'"{sha1_of(net.real)}"'
    status, headers, body = _request(f"{base}/{sid}/download/remote.bin", method="HEAD")
    assert (status, body) == (200, b"")
    assert headers["content-length"] == str(REAL_SIZE)
    status, headers, body = _request(
        f"{base}/{sid}/download/remote.bin", headers={"Range": "bytes=1000000-1065535"}
    )
    assert status == 206
    assert headers["content-range"] == f"bytes 1000000-1065535/{REAL_SIZE}"
    assert body == net.real[1000000:1065536]
    status, _, body = _request(f"{base}/{sid}/download/missing.bin")
    assert status == 404, body[:300]
    assert json.loads(body)["success"] is False


def test_prv_route_answers_the_standin_pointer(net: Net) -> None:
    sid = net.pointers.node_id
    for base in (net.pointers.url, net.hub.url):
        status, _, body = _request(f"{base}/{sid}/prv/remote.bin")
        assert status == 200, body[:300]
        assert body == prv_bytes(net.real, "remote.bin")
        # A folder's pointer is not a stand-in, nor is a malformed one.
        assert _request(f"{base}/{sid}/prv/folder")[0] == 404
        assert _request(f"{base}/{sid}/prv/bad.dat")[0] == 404
    # Hidden pointers and oversized ones are plain files, served as such.
    status, _, body = _request(f"{net.pointers.url}/{sid}/download/huge.dat.prv")
    assert status == 200
    assert len(body) > HUGE_PRV_BYTES
    status, _, body = _request(f"{net.pointers.url}/{sid}/download/both.txt")
    assert (status, body) == (200, b"the file itself\n")


def test_standins_and_node_modules_are_not_advertised(net: Net) -> None:
    wait_for(
        lambda: _json(f"{net.hub.url}/find/{sha1_of(net.real)}")["found"] is True,
        LINE_TIMEOUT,
        "the hub to know the holder's file",
    )
    found = _json(f"{net.hub.url}/find/{sha1_of(net.real)}")
    # Only the share holding the bytes is a source; the pointers share is not (the
    # hub is one too once it cached a stand-in's download: docs/protocol.md §13).
    sources = {r["kbshare_id"] for r in found["results"]}
    assert sources - {net.hub.node_id} == {net.holder.node_id}
    hidden = _json(f"{net.hub.url}/find/{sha1_of(net.module_js)}")
    assert hidden == {"success": True, "found": False}
