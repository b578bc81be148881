"""``kbapps.download`` against a stand-in network with misbehaving sources (127.0.0.1 only).

What these prove: the source order and fallback with every failure listed; that OUT
never holds wrong bytes (nothing at OUT, or the old OUT untouched, on failure); resume
from ``OUT.part`` with a Range request that transfers only the rest; that a ``.part``
of other content is never resumed and a corrupt prefix is caught; the content cache
(no request at all the second time, with the server gone); ``.prvdir`` downloads with
several files at once, skip-if-present and path safety; the events.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from kbapps import download
from kbapps.download import (
    BadInputError,
    ClientOptions,
    ConflictError,
    DownloadFailedError,
    HubUnreachableError,
    NotFoundError,
)
from kbapps.download.places import split_relpath
from kbproto.prv import Prv, PrvDir
from tests.apps.test_download_support import (
    SLOW_PREFIX,
    FakeNetwork,
    closed_port,
    content,
    fake_network,
    prv_of,
)

#: Above kbapps.download's inline limit (256 KiB): bodies go through the writer thread.
SIZE = 300_000


@pytest.fixture
def net(tmp_path: Path) -> Iterator[FakeNetwork]:
    with fake_network(tmp_path) as network:
        yield network


def options(hub: str, tmp_path: Path, **kw: Any) -> ClientOptions:
    values: dict[str, Any] = {
        "hub_url": hub,
        "cache_dir": tmp_path / "cache" / "content",
        "hash_cache_path": tmp_path / "cache" / "hashes.sqlite3",
        "read_timeout": 5.0,
        "connect_timeout": 5.0,
        "progress_interval": 0.0,
    }
    values.update(kw)
    return ClientOptions(**values)


def fetch_file(
    prv: Prv, out: Path, opts: ClientOptions, events: list[dict[str, Any]] | None = None
) -> download.DownloadResult:
    sink = events.append if events is not None else None
    return anyio.run(lambda: download.download_prv(prv, out, opts, on_event=sink))


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --- hub URL and find ------------------------------------------------------------------


def test_hub_url_option_then_environment_then_default() -> None:
    env = {"KBUCKET_URL": "http://hub.example:3240/"}
    assert download.resolve_hub_url("https://other:8443/", env) == "https://other:8443"
    assert download.resolve_hub_url(None, env) == "http://hub.example:3240"
    assert download.resolve_hub_url(None, {}) == "http://localhost:3240"


@pytest.mark.parametrize("bad", ["ftp://x", "not a url", "http://", "ws://h:1", "http://h/?q=1"])
def test_bad_hub_url_is_bad_input(bad: str) -> None:
    with pytest.raises(BadInputError) as info:
        download.resolve_hub_url(bad, {})
    assert info.value.exit_code == 2
    assert "--hub" in info.value.message


def test_find_keeps_the_hubs_order_and_adds_the_hub_itself_last(
    net: FakeNetwork, tmp_path: Path
) -> None:
    data = content(5000)
    sha1 = net.add(data, ["good", "ftp://nowhere/x", "cut", "good"])
    opts = options(net.base, tmp_path)

    async def ask() -> download.FindResult:
        async with download.make_http_client(opts) as http:
            return await download.find_content(http, opts.hub_url, sha1)

    found = anyio.run(ask)
    assert found.found
    assert found.size == 5000
    # Only http(s), duplicates dropped, order kept.
    assert found.urls == (net.url("good", sha1), net.url("cut", sha1))
    assert found.response["urls"][1] == "ftp://nowhere/x"  # the answer as received
    assert download.download_sources(found, net.base, sha1) == (
        net.url("good", sha1),
        net.url("cut", sha1),
        f"{net.base}/sha1/{sha1}",
    )


# --- fallback ------------------------------------------------------------------------


def test_falls_back_in_order_and_lists_each_failure(net: FakeNetwork, tmp_path: Path) -> None:
    data = content(SIZE, 1)
    down = f"http://127.0.0.1:{closed_port()}/abc/download/f.dat"
    sha1 = net.add(data, [down, "wrong", "missing", "badetag", "good"])
    out = tmp_path / "out.dat"
    events: list[dict[str, Any]] = []
    result = fetch_file(prv_of(data), out, options(net.base, tmp_path), events)

    assert out.read_bytes() == data
    assert result.origin == "network"
    assert result.url == net.url("good", sha1)
    urls = [f.url for f in result.failures]
    assert urls == [down] + [net.url(r, sha1) for r in ("wrong", "missing", "badetag")]
    errors = [f.error for f in result.failures]
    assert "cannot connect" in errors[0]
    assert "original_fcs" in errors[1]  # wrong content caught after 1000 bytes
    assert "404" in errors[2]
    assert "no such file" in errors[2]
    assert "other content" in errors[3]  # the ETag named other content: not read at all
    kinds = [e["event"] for e in events]
    assert kinds.count("source") == 5
    assert kinds.count("error") == 4
    assert kinds[-1] == "done"
    assert events[-1]["url"] == net.url("good", sha1)
    assert leftovers(tmp_path) == ["blobs", "cache", "out.dat"]  # no .part left


def test_sources_announcing_the_wrong_length_or_range_are_dropped(
    net: FakeNetwork, tmp_path: Path
) -> None:
    data = content(SIZE, 17)
    net.add(data, ["shortlen", "badrange", "good"])
    result = fetch_file(prv_of(data), tmp_path / "out.dat", options(net.base, tmp_path))
    errors = [f.error for f in result.failures]
    assert errors == [
        f"announced {SIZE - 1} bytes, expected {SIZE}",
        f"sent range 1-{SIZE - 1}/{SIZE}, asked for 0-{SIZE - 1}/{SIZE}",
    ]
    assert (tmp_path / "out.dat").read_bytes() == data


def test_every_source_failing_lists_them_all_and_writes_nothing(
    net: FakeNetwork, tmp_path: Path
) -> None:
    data = content(SIZE, 2)
    net.serve_sha1 = False
    sha1 = net.add(data, ["wrongtail", "cut", "norange", "missing"])
    out = tmp_path / "out.dat"
    with pytest.raises(DownloadFailedError) as info:
        fetch_file(prv_of(data), out, options(net.base, tmp_path))
    failures = info.value.failures
    assert [f.url for f in failures] == [
        net.url("wrongtail", sha1),
        net.url("cut", sha1),
        net.url("norange", sha1),
        net.url("missing", sha1),
        f"{net.base}/sha1/{sha1}",
    ]
    assert "SHA-1" in failures[0].error  # only the last byte was wrong
    assert "ignored the Range" in failures[2].error  # asked to continue after the cut
    assert info.value.exit_code == 3
    assert not out.exists()
    # What the cut source sent stays for a later resume, with what it is.
    assert leftovers(tmp_path) == ["blobs", "out.dat.part", "out.dat.part.json"]
    assert (tmp_path / "out.dat.part").read_bytes() == data[: SIZE // 2]


def test_a_failed_download_leaves_no_empty_part(net: FakeNetwork, tmp_path: Path) -> None:
    data = content(SIZE, 2)
    net.serve_sha1 = False
    net.add(data, ["wrong", "missing"])
    with pytest.raises(DownloadFailedError):
        fetch_file(prv_of(data), tmp_path / "out.dat", options(net.base, tmp_path))
    assert leftovers(tmp_path) == ["blobs"]


def test_wrong_bytes_never_replace_an_existing_out(net: FakeNetwork, tmp_path: Path) -> None:
    data = content(SIZE, 3)
    net.serve_sha1 = False
    net.add(data, ["wrongtail"])
    out = tmp_path / "out.dat"
    out.write_bytes(b"the user's previous file")
    with pytest.raises(DownloadFailedError):  # --force: it may be replaced, by right bytes only
        fetch_file(prv_of(data), out, options(net.base, tmp_path, force=True))
    assert out.read_bytes() == b"the user's previous file"


@pytest.mark.parametrize("size", [SIZE, 100_000])  # through the writer thread, and inline
def test_cut_source_is_continued_by_the_next_with_a_range(
    net: FakeNetwork, tmp_path: Path, size: int
) -> None:
    data = content(size, 4)
    sha1 = net.add(data, ["cut", "norange", "good"])
    out = tmp_path / "out.dat"
    result = fetch_file(prv_of(data), out, options(net.base, tmp_path))
    assert out.read_bytes() == data
    half = size // 2
    assert result.resumed_from == half
    assert "body bytes missing" in result.failures[0].error
    assert "ignored the Range" in result.failures[1].error
    (good,) = net.requests("good")
    assert good.range == f"bytes={half}-"
    assert good.status == 206
    assert good.body_bytes == size - half
    assert good.sha1 == sha1


def test_a_stalled_source_times_out_and_the_next_continues(
    net: FakeNetwork, tmp_path: Path
) -> None:
    data = content(SIZE, 5)
    net.add(data, ["slow", "good"])
    out = tmp_path / "out.dat"
    result = fetch_file(prv_of(data), out, options(net.base, tmp_path, read_timeout=0.5))
    assert out.read_bytes() == data
    assert "no data" in result.failures[0].error
    (good,) = net.requests("good")
    assert good.range == f"bytes={SLOW_PREFIX}-"


# --- resume --------------------------------------------------------------------------


def test_interrupted_download_resumes_and_transfers_only_the_rest(
    net: FakeNetwork, tmp_path: Path
) -> None:
    data = content(SIZE, 6)
    net.serve_sha1 = False
    sha1 = net.add(data, ["cut"])
    out = tmp_path / "out.dat"
    opts = options(net.base, tmp_path)
    with pytest.raises(DownloadFailedError):
        fetch_file(prv_of(data), out, opts)
    part = tmp_path / "out.dat.part"
    assert part.read_bytes() == data[: SIZE // 2]
    assert not out.exists()
    sidecar = json.loads((tmp_path / "out.dat.part.json").read_text())
    assert sidecar == {"sha1": sha1, "size": SIZE}

    net.sources[sha1] = ["good"]
    result = fetch_file(prv_of(data), out, opts)
    assert out.read_bytes() == data
    assert result.resumed_from == SIZE // 2
    assert result.transferred == SIZE - SIZE // 2
    (good,) = net.requests("good")
    assert good.range == f"bytes={SIZE // 2}-"
    assert good.body_bytes == SIZE - SIZE // 2
    assert leftovers(tmp_path) == ["blobs", "cache", "out.dat"]


@pytest.mark.parametrize("sidecar", [None, {"sha1": "0" * 40, "size": SIZE}])
def test_a_part_of_other_content_is_never_resumed(
    net: FakeNetwork, tmp_path: Path, sidecar: dict[str, object] | None
) -> None:
    data = content(SIZE, 7)
    net.add(data, ["good"])
    out = tmp_path / "out.dat"
    (tmp_path / "out.dat.part").write_bytes(content(SIZE // 3, 70))
    if sidecar is not None:
        (tmp_path / "out.dat.part.json").write_text(json.dumps(sidecar))
    result = fetch_file(prv_of(data), out, options(net.base, tmp_path))
    assert out.read_bytes() == data
    assert result.resumed_from == 0
    (good,) = net.requests("good")
    assert good.range is None


def test_a_corrupt_resumed_prefix_is_caught_and_refetched(net: FakeNetwork, tmp_path: Path) -> None:
    data = content(SIZE, 8)
    sha1 = net.add(data, ["good"])
    out = tmp_path / "out.dat"
    prefix = bytearray(data[:100_000])
    prefix[50_000] ^= 0xFF  # past the first 1000 bytes: only the whole SHA-1 can tell
    (tmp_path / "out.dat.part").write_bytes(prefix)
    (tmp_path / "out.dat.part.json").write_text(json.dumps({"sha1": sha1, "size": SIZE}))
    result = fetch_file(prv_of(data), out, options(net.base, tmp_path))
    assert out.read_bytes() == data
    assert "retrying from byte 0" in result.failures[0].error
    assert [r.range for r in net.requests("good")] == ["bytes=100000-", None]


def test_a_complete_part_is_installed_without_the_network(tmp_path: Path) -> None:
    data = content(SIZE, 9)
    prv = prv_of(data)
    (tmp_path / "out.dat.part").write_bytes(data)
    (tmp_path / "out.dat.part.json").write_text(json.dumps({"sha1": prv.sha1, "size": SIZE}))
    hub = f"http://127.0.0.1:{closed_port()}"
    result = fetch_file(prv, tmp_path / "out.dat", options(hub, tmp_path))
    assert result.origin == "part"
    assert (tmp_path / "out.dat").read_bytes() == data


# --- the content cache -----------------------------------------------------------------


def test_second_download_makes_no_request_at_all(tmp_path: Path) -> None:
    data = content(SIZE, 10)
    prv = prv_of(data)
    with fake_network(tmp_path) as network:
        network.add(data, ["good"])
        opts = options(network.base, tmp_path)
        first = fetch_file(prv, tmp_path / "one.dat", opts)
        assert first.origin == "network"
    # The server is gone; a hub URL where nothing listens proves no request is made.
    opts = options(f"http://127.0.0.1:{closed_port()}", tmp_path)
    second = fetch_file(prv, tmp_path / "two.dat", opts)
    assert second.origin == "cache"
    assert (tmp_path / "two.dat").read_bytes() == data
    # Copies, not links: editing one output never changes another or the cache.
    cache = download.ContentCache(tmp_path / "cache" / "content", download.DEFAULT_CACHE_SIZE)
    inodes = {os.stat(p).st_ino for p in (tmp_path / "one.dat", tmp_path / "two.dat")}
    assert len(inodes) == 2
    assert os.stat(cache.path_for(prv.sha1)).st_ino not in inodes


def test_a_corrupted_cache_entry_is_dropped_and_refetched(net: FakeNetwork, tmp_path: Path) -> None:
    data = content(SIZE, 11)
    prv = prv_of(data)
    net.add(data, ["good"])
    opts = options(net.base, tmp_path)
    cache = download.ContentCache(tmp_path / "cache" / "content", download.DEFAULT_CACHE_SIZE)
    entry = cache.path_for(prv.sha1)
    entry.parent.mkdir(parents=True)
    entry.write_bytes(content(SIZE, 12))  # right size, wrong bytes
    result = fetch_file(prv, tmp_path / "out.dat", opts)
    assert result.origin == "network"
    assert (tmp_path / "out.dat").read_bytes() == data
    assert entry.read_bytes() == data  # replaced by the verified download


def test_an_empty_file_needs_no_network(tmp_path: Path) -> None:
    hub = f"http://127.0.0.1:{closed_port()}"
    result = fetch_file(prv_of(b""), tmp_path / "empty.dat", options(hub, tmp_path))
    assert result.origin == "empty"
    assert (tmp_path / "empty.dat").read_bytes() == b""


# --- not found and an unreachable hub --------------------------------------------------


def test_not_found(net: FakeNetwork, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError) as info:
        fetch_file(prv_of(content(10, 13)), tmp_path / "o", options(net.base, tmp_path))
    assert info.value.exit_code == 1
    assert not (tmp_path / "o").exists()
    assert not (tmp_path / "o.part").exists()


def test_hub_unreachable(tmp_path: Path) -> None:
    hub = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(HubUnreachableError) as info:
        fetch_file(prv_of(content(10, 14)), tmp_path / "o", options(hub, tmp_path))
    assert info.value.exit_code == 3
    assert "cannot reach hub" in info.value.message


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (504, None, "hub trouble"),
        (200, b"<html>not json</html>", "not JSON"),
        (200, b'{"success": false, "error": "lookup timed out"}', "lookup timed out"),
        (200, b"[1, 2]", "could not answer"),
    ],
)
def test_hub_errors_are_exit_3(
    net: FakeNetwork, tmp_path: Path, status: int, body: bytes | None, expected: str
) -> None:
    net.find_status, net.find_body = status, body
    with pytest.raises(HubUnreachableError) as info:
        fetch_file(prv_of(content(10, 15)), tmp_path / "o", options(net.base, tmp_path))
    assert expected in info.value.message


def test_out_in_a_missing_directory_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInputError):
        fetch_file(prv_of(b"x"), tmp_path / "no" / "such" / "o", options("http://h", tmp_path))


def test_out_an_existing_directory_gets_the_prv_file_name(net: FakeNetwork, tmp_path: Path) -> None:
    data = content(2000, 16)
    net.add(data, ["good"])
    target = tmp_path / "into"
    target.mkdir()
    result = fetch_file(prv_of(data, "named.bin"), target, options(net.base, tmp_path))
    assert result.path == target / "named.bin"
    assert result.path.read_bytes() == data


# --- .prvdir ---------------------------------------------------------------------------


def tree_of(files: dict[str, bytes]) -> PrvDir:
    """A PrvDir holding ``files`` (``a/b/c.dat`` -> bytes)."""
    nested: dict[str, Any] = {}
    for rel, data in files.items():
        *dirs, name = rel.split("/")
        node = nested
        for d in dirs:
            node = node.setdefault(d, {})
        node[name] = prv_of(data, rel)

    def build(node: dict[str, Any]) -> PrvDir:
        return PrvDir(
            files={k: v for k, v in node.items() if isinstance(v, Prv)},
            dirs={k: build(v) for k, v in node.items() if isinstance(v, dict)},
        )

    return build(nested)


def download_dir(
    tree: PrvDir, out: Path, opts: ClientOptions, events: list[dict[str, Any]] | None = None
) -> download.PrvDirResult:
    sink = events.append if events is not None else None
    return anyio.run(lambda: download.download_prvdir(tree, out, opts, on_event=sink))


def test_prvdir_downloads_several_files_at_once(net: FakeNetwork, tmp_path: Path) -> None:
    files = {f"d{i % 2}/sub/f{i}.dat": content(50_000 + i, 100 + i) for i in range(6)}
    files["top.dat"] = files["d0/sub/f0.dat"]  # same content twice: fetched once
    net.gate = 3  # every request waits until three are in flight at once
    for data in files.values():
        net.add(data, ["gated"])
    out = tmp_path / "out"
    events: list[dict[str, Any]] = []
    result = download_dir(tree_of(files), out, options(net.base, tmp_path, concurrency=3), events)
    assert result.exit_code == 0
    assert not result.failed
    for rel, data in files.items():
        assert (out / rel).read_bytes() == data
    assert net.max_in_flight == 3
    assert len(net.requests("gated")) == 6  # 7 files, 6 distinct contents
    assert sorted(r.origin for r in result.done).count("copy") == 1
    assert events[-1] == {
        "event": "finished",
        "files": 7,
        "done": 7,
        "skipped": 0,
        "failed": 0,
        "exit_code": 0,
    }
    assert leftovers(out) == ["d0", "d1", "top.dat"]  # the partial dir is gone


def test_prvdir_skips_files_already_present(net: FakeNetwork, tmp_path: Path) -> None:
    files = {"a.dat": content(4000, 21), "b/b.dat": content(5000, 22), "c.dat": content(10, 23)}
    for data in files.values():
        net.add(data, ["good"])
    out = tmp_path / "out"
    (out / "b").mkdir(parents=True)
    (out / "a.dat").write_bytes(files["a.dat"])
    (out / "b" / "b.dat").write_bytes(files["b/b.dat"])
    (out / "c.dat").write_bytes(b"0123456789")  # right size, wrong content
    with pytest.raises(ConflictError) as info:  # other content: nothing changes
        download_dir(tree_of(files), out, options(net.base, tmp_path))
    assert info.value.conflicts == (f"{out / 'c.dat'} holds other content",)
    assert net.requests() == []
    assert (out / "c.dat").read_bytes() == b"0123456789"
    result = download_dir(tree_of(files), out, options(net.base, tmp_path, force=True))
    origins = {r.path.relative_to(out).as_posix(): r.origin for r in result.done}
    assert origins == {"a.dat": "present", "b/b.dat": "present", "c.dat": "network"}
    assert [r.sha1 for r in net.requests("good")] == [hashlib.sha1(files["c.dat"]).hexdigest()]
    assert (out / "c.dat").read_bytes() == files["c.dat"]


def test_prvdir_never_writes_through_a_symlink(net: FakeNetwork, tmp_path: Path) -> None:
    files = {"safe.dat": content(3000, 31), "link/evil.dat": content(3000, 32)}
    for data in files.values():
        net.add(data, ["good"])
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "link").symlink_to(outside)
    with pytest.raises(ConflictError) as info:
        download_dir(tree_of(files), out, options(net.base, tmp_path))
    assert info.value.conflicts == (
        f"{out / 'link'} is a symlink (never replaced, even with --force)",
    )
    assert sorted(os.listdir(out)) == ["link"]
    result = download_dir(tree_of(files), out, options(net.base, tmp_path, force=True))
    assert (out / "safe.dat").read_bytes() == files["safe.dat"]
    ((rel, error),) = result.failed
    assert rel == "link/evil.dat"
    assert "symlink" in error.message
    assert error.exit_code == 2
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("rel", ["../x", "/abs", "a/../b", ".hidden", "a/.git/x", "a//b", ""])
def test_split_relpath_refuses_escapes(rel: str) -> None:
    with pytest.raises(BadInputError):
        split_relpath(rel)


def test_prvdir_stops_when_the_hub_is_unreachable(tmp_path: Path) -> None:
    files = {f"f{i}.dat": content(1000, 40 + i) for i in range(5)}
    hub = f"http://127.0.0.1:{closed_port()}"
    result = download_dir(tree_of(files), tmp_path / "out", options(hub, tmp_path, concurrency=1))
    assert result.exit_code == 3
    assert len(result.failed) == 5
    assert sum("not attempted" in e.message for _, e in result.failed) == 4


def test_prvdir_mixed_outcomes_give_the_worst_exit_code(net: FakeNetwork, tmp_path: Path) -> None:
    net.serve_sha1 = False
    files = {"ok.dat": content(2000, 51), "bad.dat": content(2000, 52), "gone.dat": b"gone!"}
    net.add(files["ok.dat"], ["good"])
    net.add(files["bad.dat"], ["wrongtail"])
    result = download_dir(tree_of(files), tmp_path / "out", options(net.base, tmp_path))
    codes = {rel: e.exit_code for rel, e in result.failed}
    assert codes == {"bad.dat": 3, "gone.dat": 1}
    assert result.exit_code == 3
    assert (tmp_path / "out" / "ok.dat").read_bytes() == files["ok.dat"]
    assert not (tmp_path / "out" / "bad.dat").exists()


def test_out_file_for_a_prvdir_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(BadInputError):
        download_dir(tree_of({"a": b"a"}), tmp_path / "f", options("http://h", tmp_path))


def test_an_out_already_holding_the_content_is_kept(net: FakeNetwork, tmp_path: Path) -> None:
    data = content(SIZE, 60)
    net.add(data, ["good"])
    out = tmp_path / "out.dat"
    out.write_bytes(data)
    result = fetch_file(prv_of(data), out, options(net.base, tmp_path))
    assert result.origin == "present"
    assert net.requests() == []  # not even a find
    out.write_bytes(content(SIZE, 61))  # same size, other bytes: replaced with --force only
    with pytest.raises(ConflictError):
        fetch_file(prv_of(data), out, options(net.base, tmp_path))
    assert net.requests() == []
    opts = options(net.base, tmp_path, force=True)
    assert fetch_file(prv_of(data), out, opts).origin == "network"
    assert out.read_bytes() == data


def test_prvdir_resumes_its_partial_files(net: FakeNetwork, tmp_path: Path) -> None:
    data = content(SIZE, 70)
    net.serve_sha1 = False
    sha1 = net.add(data, ["cut"])
    out = tmp_path / "out"
    tree = tree_of({"big.dat": data})
    first = download_dir(tree, out, options(net.base, tmp_path))
    assert first.exit_code == 3
    partial = out / download.PARTIAL_DIRNAME / f"{sha1}.part"
    assert partial.read_bytes() == data[: SIZE // 2]
    net.sources[sha1] = ["good"]
    second = download_dir(tree, out, options(net.base, tmp_path))
    assert second.exit_code == 0
    assert (out / "big.dat").read_bytes() == data
    (good,) = net.requests("good")
    assert good.range == f"bytes={SIZE // 2}-"
    assert leftovers(out) == ["big.dat"]


def test_prvdir_tries_an_unreachable_origin_last_after_it_failed(
    net: FakeNetwork, tmp_path: Path
) -> None:
    port = closed_port()
    files = {f"f{i}.dat": content(2000, 80 + i) for i in range(4)}
    for name, data in files.items():
        net.add(data, [f"http://127.0.0.1:{port}/0123456789ab/download/{name}", "good"])
    events: list[dict[str, Any]] = []
    opts = options(net.base, tmp_path, concurrency=1)
    result = download_dir(tree_of(files), tmp_path / "out", opts, events)
    assert result.exit_code == 0
    tried = [e["url"] for e in events if e["event"] == "source"]
    # The firewalled share's URL costs one failure, not one per file.
    assert sum(f":{port}/" in url for url in tried) == 1
    assert len(tried) == 5
