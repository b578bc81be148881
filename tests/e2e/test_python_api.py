"""The Python API, the ``sha1://``/``kbucket://`` URIs and the fsspec file systems
(issue 14), against a real hub and a share behind a "firewall" (its advertised URL
unreachable, so every byte goes through the hub).

One network serves the whole module (a 1 GiB sparse file costs the share one hashing);
each test checks several things through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import os
import re
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from kbapps import api
from kbapps.api import aio
from kbapps.api.ranged import ContentReadError, RangeReader
from kbapps.download import BadInputError, NotFoundError
from kbproto.chunks import chunk_digests, digest_list_root
from kbproto.prv import Prv, PrvDir, make_prv
from kbtransport.http_client import ClientConfig, HttpClient
from tests.e2e.procs import UNREACHABLE, Node, Procs, command, sha1_of, wait_for, write_pattern

GIB = 1024**3
MIB = 1024**2
#: The middle of the big file holds this pattern (the rest is a sparse hole: zeros).
MIDDLE = GIB // 2
CSV = b"name,mass\nalpha,1.5\nbeta,2.25\ngamma,3.0\n"


@dataclass
class Network:
    procs: Procs
    hub: Node
    share: Node
    root: Path
    middle: bytes
    small: bytes

    @property
    def node_id(self) -> str:
        return self.share.node_id

    def kb(self, path: str) -> str:
        return f"kbucket://{self.node_id}/{path}"

    def served(self) -> int:
        """Bytes of its own files the share has sent (directly or into the tree)."""
        with urllib.request.urlopen(f"{self.share.url}/{self.node_id}/api/nodeinfo") as r:
            metrics = json.loads(r.read())["metrics"]
        return int(metrics["bytes_served_direct"]) + int(metrics["bytes_served_to_network"])


def _big_file(path: Path) -> bytes:
    """1 GiB, sparse but for 4 MiB of pattern in its middle (returned)."""
    pattern = write_pattern(path.with_suffix(".tmp"), 4 * MIB, seed=14)
    path.with_suffix(".tmp").unlink()
    with path.open("wb") as handle:
        handle.truncate(GIB)
        handle.seek(MIDDLE)
        handle.write(pattern)
    return pattern


def _h5(path: Path) -> None:
    import h5py
    import numpy

    with h5py.File(path, "w") as f:
        f.create_dataset("grid", data=numpy.arange(20000, dtype="int32").reshape(100, 200))


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    root = tmp_path_factory.mktemp("pyapi")
    share_dir = root / "share"
    (share_dir / "tables").mkdir(parents=True)
    (share_dir / "tables" / "masses.csv").write_bytes(CSV)
    _h5(share_dir / "tables" / "grid.h5")
    small = write_pattern(share_dir / "tables" / "sub" / "small.bin", 300_000, seed=1)
    middle = _big_file(share_dir / "big.bin")
    procs = Procs(root)
    try:
        hub = procs.node("kbucket-hub", root / "hub", name="api-hub")
        share = procs.node(
            "kbucket-host",
            share_dir,
            "--listen-url",
            UNREACHABLE,
            name="api-share",
            parent=hub,
        )
        os.environ["KBUCKET_CACHE_DIR"] = str(root / "user-cache")
        net = Network(procs, hub, share, root, middle, small)
        wait_for(
            lambda: api.find(f"sha1://{sha1_of(small)}", hub=hub.url).found,
            30,
            "the hub to know the share's files",
        )
        yield net
    finally:
        os.environ.pop("KBUCKET_CACHE_DIR", None)
        procs.close()


def test_api_calls_and_uri_forms(network: Network, tmp_path: Path) -> None:
    hub = network.hub.url
    small_sha1 = sha1_of(network.small)
    # get_prv: a kbucket:// file gives its .prv; sha1:// gives a .prv of the content.
    prv = api.get_prv(network.kb("tables/sub/small.bin"), hub=hub)
    assert isinstance(prv, Prv)
    assert (prv.sha1, prv.size) == (small_sha1, len(network.small))
    by_sha1 = api.get_prv(f"sha1://{small_sha1}/renamed.bin", hub=hub)
    assert isinstance(by_sha1, Prv)
    assert by_sha1.sha1 == small_sha1
    tree = api.get_prv(network.kb("tables"), hub=hub)
    assert isinstance(tree, PrvDir)
    assert {name for name, _ in tree.iter_files()} >= {"masses.csv", "sub/small.bin"}

    # find: urls best first; the firewalled share's own URL fails, the hub's works.
    found = api.find(prv, hub=hub)
    assert found.found
    assert found.size == len(network.small)

    # list_dir: directories first, each file with its size and .prv.
    entries = api.list_dir(network.kb("tables"), hub=hub)
    assert [e.name for e in entries if e.is_dir] == ["sub"]
    files = {e.name: e for e in entries if not e.is_dir}
    assert files["masses.csv"].size == len(CSV)
    assert files["masses.csv"].sha1 == sha1_of(CSV)
    assert str(files["masses.csv"].uri) == network.kb("tables/masses.csv")

    # load_file from every form: sha1:// (to the cache), kbucket://, a .prv path, a dict.
    cached = api.load_file(f"sha1://{small_sha1}/renamed.bin", hub=hub)
    assert cached.name == "renamed.bin"
    assert cached.read_bytes() == network.small
    assert api.load_file(f"sha1://{small_sha1}/renamed.bin", hub=hub) == cached  # kept
    out = api.load_file(network.kb("tables/masses.csv"), tmp_path / "m.csv", hub=hub)
    assert out.read_bytes() == CSV
    prv_path = tmp_path / "small.bin.prv"
    prv_path.write_text(json.dumps(prv.to_json_object()))
    assert api.load_file(prv_path, tmp_path / "a.bin", hub=hub).read_bytes() == network.small
    as_dict = prv.to_json_object()
    assert api.load_file(as_dict, tmp_path / "b.bin", hub=hub).read_bytes() == network.small

    # load_dir of a kbucket:// directory.
    result = api.load_dir(network.kb("tables"), tmp_path / "tables", hub=hub)
    assert result.failed == ()
    assert (tmp_path / "tables" / "sub" / "small.bin").read_bytes() == network.small

    # open_file: seek and read a range; each chunk read is checked against its digest
    # (blocks are whole 1 MiB chunks: this file is one), the whole file once read.
    small_blocks = api.ReadOptions(block_size=65536, max_readahead=65536)
    with api.open_file(network.kb("tables/sub/small.bin"), hub=hub, read_options=small_blocks) as f:
        assert f.size == len(network.small)
        f.seek(123_456)
        assert f.read(1000) == network.small[123_456:124_456]
        assert f.remote.reader.verifier.chunk_checked
        f.seek(0)
        assert f.read() == network.small
        assert f.remote.reader.verifier.fully_verified

    # Unknown content and bad URIs: the API's errors, one line each.
    with pytest.raises(NotFoundError):
        api.load_file("sha1://" + "0" * 40, tmp_path / "none", hub=hub)
    with pytest.raises(NotFoundError):
        api.get_prv(network.kb("tables/no-such.csv"), hub=hub)
    with pytest.raises(BadInputError):
        api.get_prv("kbucket://not-a-node/x", hub=hub)

    # The async twin, on the caller's loop; and the sync API inside a running loop
    # (as in Jupyter).
    async def twin() -> bytes:
        async with await aio.open_file(f"sha1://{small_sha1}", hub=hub) as g:
            g.seek(-10, os.SEEK_END)
            return await g.read()

    assert anyio.run(twin) == network.small[-10:]

    async def inside_a_loop() -> str:
        return str(api.list_dir(network.kb(""), hub=hub)[0].name)

    assert asyncio.run(inside_a_loop()) == "tables"

    # $KBUCKET_URL names the hub when hub= is not given.
    os.environ["KBUCKET_URL"] = hub
    try:
        assert api.find(f"sha1://{small_sha1}").found
    finally:
        del os.environ["KBUCKET_URL"]


def test_a_range_of_a_big_file_costs_little(network: Network) -> None:
    before = network.served()
    with api.open_file(network.kb("big.bin"), hub=network.hub.url) as f:
        assert f.size == GIB
        f.seek(MIDDLE + MIB)
        assert f.read(MIB) == network.middle[MIB : 2 * MIB]
    served = network.served() - before
    assert MIB <= served <= 8 * MIB, served


def test_fsspec_pandas_h5py(network: Network, tmp_path: Path) -> None:
    import fsspec
    import h5py
    import numpy
    import pandas

    opts = {"hub": network.hub.url}
    frame = pandas.read_csv(network.kb("tables/masses.csv"), storage_options=opts)
    assert list(frame["name"]) == ["alpha", "beta", "gamma"]
    with (
        fsspec.open(network.kb("tables/grid.h5"), **opts) as raw,
        h5py.File(raw, "r") as h5,
    ):
        assert int(numpy.asarray(h5["grid"])[99, 199]) == 19999

    small_sha1 = sha1_of(network.small)
    fs = fsspec.filesystem("sha1", **opts)
    assert fs.cat_file(small_sha1, start=10, end=20) == network.small[10:20]
    assert fs.info(small_sha1)["size"] == len(network.small)
    with fsspec.open(f"sha1://{small_sha1}", **opts) as g:
        assert g.read(5) == network.small[:5]

    kfs = fsspec.filesystem("kbucket", **opts)
    listing = kfs.ls(f"{network.node_id}/tables", detail=True)
    by_name = {item["name"]: item for item in listing}
    assert by_name[f"{network.node_id}/tables/sub"]["type"] == "directory"
    assert by_name[f"{network.node_id}/tables/masses.csv"]["size"] == len(CSV)
    assert kfs.info(network.kb("tables/masses.csv"))["sha1"] == sha1_of(CSV)
    assert kfs.cat_file(network.kb("tables/masses.csv"), start=-4) == CSV[-4:]
    kfs.get(network.kb("tables/sub/small.bin"), str(tmp_path / "got.bin"))
    assert (tmp_path / "got.bin").read_bytes() == network.small
    with pytest.raises(FileNotFoundError):
        kfs.info(network.kb("tables/absent.csv"))


def test_the_commands_speak_uris(network: Network, tmp_path: Path) -> None:
    import subprocess

    hub = network.hub.url
    small_sha1 = sha1_of(network.small)
    env = {**network.procs.env, "KBUCKET_CACHE_DIR": str(tmp_path / "cache")}

    def run(name: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command(name, *args), capture_output=True, text=True, timeout=60, env=env
        )

    found = run("kb-prv-find", f"sha1://{small_sha1}", "--hub", hub)
    assert found.returncode == 0, found.stderr
    assert f"/{network.node_id}/download/tables/sub/small.bin" in found.stdout
    got = run(
        "kb-prv-download", network.kb("tables/sub/small.bin"), str(tmp_path / "s.bin"), "--hub", hub
    )
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "s.bin").read_bytes() == network.small
    tree = run("kb-prv-download", network.kb("tables"), str(tmp_path / "t"), "--hub", hub)
    assert tree.returncode == 0, tree.stderr
    assert (tmp_path / "t" / "masses.csv").read_bytes() == CSV
    uri = run("kb-prv-create", "--uri", str(network.root / "share" / "tables" / "masses.csv"))
    assert uri.returncode == 0, uri.stderr
    assert uri.stdout.strip() == f"sha1://{sha1_of(CSV)}/masses.csv"
    bad = run("kb-prv-download", "kbucket://nope/x", str(tmp_path / "x"), "--hub", hub)
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1
    assert "Traceback" not in bad.stderr
    missing = run("kb-prv-find", "sha1://" + "0" * 40, "--hub", hub)
    assert missing.returncode == 1


class _LyingSource(http.server.BaseHTTPRequestHandler):
    """Serves ``content`` (one byte changed) with Range support, as a source that lies."""

    content = b""
    digest_list = b""  # served at .../chunks: the honest list of the honest content

    def do_GET(self) -> None:
        if self.path.endswith("/chunks"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.digest_list)))
            self.end_headers()
            self.wfile.write(self.digest_list)
            return
        match = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
        start, end = (int(match[1]), int(match[2])) if match else (0, len(self.content) - 1)
        body = self.content[start : end + 1]
        self.send_response(206 if match else 200)
        if match:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(self.content)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        del format, args


@contextlib.contextmanager
def _liar(content: bytes, wrong_at: int, path: str = "/x") -> Iterator[str]:
    bad = bytearray(content)
    bad[wrong_at] ^= 0xFF
    handler = type(
        "Liar", (_LyingSource,), {"content": bytes(bad), "digest_list": chunk_digests(content)}
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{path}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_wrong_bytes_are_never_returned_as_verified(network: Network) -> None:
    small = network.small
    prv = api.get_prv(f"sha1://{sha1_of(small)}", hub=network.hub.url)
    assert isinstance(prv, Prv)
    assert prv.chunks is not None  # the share's .prv carries the chunk digests' root
    chunked = prv
    # First a .prv without them (an older one): the head and whole-file checks.
    prv = make_prv(sha1=prv.sha1, size=prv.size, head_sha1=prv.head_sha1, path="small.bin")
    honest = f"{network.hub.url}/sha1/{prv.sha1}"
    blocks = api.ReadOptions(block_size=65536, max_readahead=65536)

    async def read(sources: list[str], offset: int, length: int) -> tuple[bytes, RangeReader]:
        async with HttpClient(ClientConfig()) as client:
            reader = RangeReader(prv, sources, client, blocks)
            return await reader.read(offset, length), reader

    # A wrong byte in the first 1000: the liar is dropped, the next source answers.
    with _liar(small, wrong_at=500) as liar:
        data, reader = anyio.run(read, [liar, honest], 0, 4096)
    assert data == small[:4096]
    assert [f.url for f in reader.failures] == [liar]
    assert "original_fcs" in reader.failures[0].error

    # A wrong byte further in: the whole file does not hash to its SHA-1, the read
    # raises (an OSError for io callers), and every later read does too.
    async def read_all(source: str) -> None:
        async with HttpClient(ClientConfig()) as client:
            reader = RangeReader(prv, [source], client, blocks)
            with pytest.raises(ContentReadError, match="SHA-1"):
                await reader.read(0, prv.size)
            with pytest.raises(ContentReadError, match="cannot be trusted"):
                await reader.read(0, 10)

    with _liar(small, wrong_at=len(small) - 7) as liar:
        anyio.run(read_all, liar)

    # With chunk digests (a .prv from kb-prv-create): a wrong byte in the middle of a
    # ranged read is caught in its chunk, before any byte of the read is returned,
    # even from a source that serves the honest digest list.
    assert chunked.chunks is not None
    assert chunked.chunks.root == digest_list_root(chunk_digests(small))

    async def read_middle(sources: list[str]) -> tuple[bytes, RangeReader]:
        async with HttpClient(ClientConfig()) as client:
            reader = RangeReader(chunked, sources, client, blocks)
            return await reader.read(100_000, 4096), reader

    with _liar(small, wrong_at=101_000, path=f"/sha1/{prv.sha1}") as liar:
        with pytest.raises(ContentReadError, match=r"chunk 0 \(bytes 0-299999\) does not match"):
            anyio.run(read_middle, [liar])
        data, reader = anyio.run(read_middle, [liar, honest])
    assert data == small[100_000:104_096]
    assert reader.verifier.chunk_checked
    assert [f.url for f in reader.failures] == [liar]


def test_the_example_notebook_runs(network: Network, tmp_path: Path) -> None:
    import nbclient
    import nbformat

    source = Path(__file__).parents[2] / "docs" / "python-api.ipynb"
    notebook = nbformat.reads(source.read_text(), as_version=4)
    saved = {k: os.environ.get(k) for k in ("KBUCKET_URL", "KBUCKET_EXAMPLE_DIR")}
    os.environ["KBUCKET_URL"] = network.hub.url
    os.environ["KBUCKET_EXAMPLE_DIR"] = network.kb("tables")
    try:
        client = nbclient.NotebookClient(
            notebook,
            timeout=120,
            kernel_name="python3",
            resources={"metadata": {"path": str(tmp_path)}},
        )
        client.execute()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    text = json.dumps(notebook["cells"])
    assert "masses.csv" in text
    assert "gamma" in text  # the DataFrame
    assert "mass" in text
    assert f"masses.csv {len(CSV)} bytes" in text
