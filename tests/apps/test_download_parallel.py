"""Parallel downloads from several sources against the stand-in network (127.0.0.1
only; ``kbapps.download.parallel``, issue 13 items 2 to 4).

What these prove: two paced sources are both used and the file ends exact; a source
that lies from the middle of the file is dropped at the first wrong chunk it sends
(nothing of it written) and its pieces come from the other; a source that stalls is
dropped at the read time-out and a reserve takes its place; an interrupted download
with two sources in flight resumes without asking again for the chunks it finished,
and a kept chunk changed on disk is fetched again; an original five-field ``.prv``
(no chunk digests) still downloads from several sources, and when its pieces do not
hash to its SHA-1 the file is fetched again from one source at a time; the same node
behind two URLs counts once; small files keep one request; a ``.prvdir`` uses the
same engine; ``--max-sources`` and the progress lines.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from kbapps import download, output
from kbapps.cli import prv_download
from kbapps.cli._download_report import DownloadReport
from kbapps.download import ClientOptions
from kbapps.download.partfile import PieceRecord
from kbproto.chunks import CHUNK_SIZE
from kbproto.prv import Prv, PrvDir, serialize_prv
from tests.apps.test_download_support import FakeNetwork, content, fake_network, prv_of

MIB = 1 << 20
#: 12 chunks and a short one: three pieces of four chunks and a tail.
SIZE = 12 * MIB + 4321
NODE_A, NODE_B, NODE_C = "aaaaaaaaaaaa", "bbbbbbbbbbbb", "cccccccccccc"


@pytest.fixture
def net(tmp_path: Path) -> Iterator[FakeNetwork]:
    with fake_network(tmp_path) as network:
        yield network


def options(hub: str, **kw: Any) -> ClientOptions:
    values: dict[str, Any] = {
        "hub_url": hub,
        "cache_dir": None,
        "hash_cache_path": None,
        "read_timeout": 10.0,
        "connect_timeout": 5.0,
        "progress_interval": 0.0,
        "parallel_min_size": MIB,
        # Every source from the start: these tests are about the parallel engine (the
        # ramp from one source is tested with the default, below).
        "one_source_first": False,
    }
    values.update(kw)
    return ClientOptions(**values)


def fetch(
    prv: Prv, out: Path, opts: ClientOptions, events: list[dict[str, Any]]
) -> download.DownloadResult:
    return anyio.run(lambda: download.download_prv(prv, out, opts, on_event=events.append))


def served_ranges(net: FakeNetwork, route: str) -> list[tuple[int, int]]:
    """The byte ranges (end exclusive) the ``route`` requests asked for."""
    out = []
    for entry in net.requests(route):
        match = re.fullmatch(r"bytes=(\d+)-(\d+)", entry.range or "")
        assert match, f"a piece request without a closed range: {entry.range!r}"
        out.append((int(match.group(1)), int(match.group(2)) + 1))
    return out


def test_two_sources_are_both_used_and_the_file_is_exact(net: FakeNetwork, tmp_path: Path) -> None:
    data = content(SIZE, seed=1)
    net.pace = 8 * MIB  # per request: each source sends at most 8 MiB/s
    sha1 = net.add(data, [])
    net.sources[sha1] = [
        net.node_url(NODE_A, "paced", sha1),
        net.node_url(NODE_B, "paced", sha1),
    ]
    events: list[dict[str, Any]] = []
    out = tmp_path / "out.bin"
    result = fetch(prv_of(data, chunks=True), out, options(net.base), events)
    assert out.read_bytes() == data
    per_source = dict(result.sources)
    assert set(per_source) == set(net.sources[sha1])
    assert sum(per_source.values()) == SIZE
    assert all(n >= 2 * CHUNK_SIZE for n in per_source.values()), per_source
    # Pieces are chunk-aligned and cover the file (the end game may ask twice for the
    # last ones).
    ranges = sorted(served_ranges(net, "paced"))
    assert all(start % CHUNK_SIZE == 0 for start, _ in ranges)
    covered = set()
    for start, end in ranges:
        covered |= set(range(start // CHUNK_SIZE, -(-end // CHUNK_SIZE)))
    assert covered == set(range(-(-SIZE // CHUNK_SIZE)))
    done = [e for e in events if e["event"] == "done"]
    assert done[0]["sources"] == per_source
    progress = [e for e in events if e["event"] == "progress" and "sources" in e]
    assert progress
    assert all(0 <= e["active_sources"] <= 2 for e in progress)
    assert max(e["active_sources"] for e in progress) == 2
    assert not (tmp_path / "out.bin.part").exists()
    assert not (tmp_path / "out.bin.part.json").exists()


def test_a_source_lying_from_the_middle_is_dropped_within_one_chunk(
    net: FakeNetwork, tmp_path: Path
) -> None:
    data = content(SIZE, seed=2)
    net.pace = 8 * MIB
    net.bad_from = 5 * MIB + 777  # inside chunk 5
    sha1 = net.add(data, [])
    good, liar = net.node_url(NODE_A, "paced", sha1), net.node_url(NODE_B, "wrongmid", sha1)
    net.sources[sha1] = [liar, good]
    events: list[dict[str, Any]] = []
    out = tmp_path / "out.bin"
    result = fetch(prv_of(data, chunks=True), out, options(net.base), events)
    assert out.read_bytes() == data
    dropped = [e for e in events if e["event"] == "dropped"]
    assert [e["url"] for e in dropped] == [liar]
    match = re.search(r"chunk (\d+) \(bytes", str(dropped[0]["message"]))
    assert match, dropped
    # Caught at the first wrong chunk it sent: the first chunk from chunk 5 on of its
    # first request that reached that far (its requests come one after the other).
    first_bad = next(
        max(start // CHUNK_SIZE, 5)
        for start, end in served_ranges(net, "wrongmid")
        if -(-end // CHUNK_SIZE) > 5
    )
    assert int(match.group(1)) == first_bad
    # What the liar delivered and was kept lies before its first wrong byte.
    assert dict(result.sources).get(liar, 0) <= net.bad_from
    assert [f.url for f in result.failures] == [liar]


def test_an_interrupted_parallel_download_resumes_without_refetching(
    net: FakeNetwork, tmp_path: Path
) -> None:
    data = content(SIZE, seed=3)
    net.pace = 4 * MIB
    sha1 = net.add(data, [])
    net.sources[sha1] = [
        net.node_url(NODE_A, "paced", sha1),
        net.node_url(NODE_B, "paced", sha1),
    ]
    prv = prv_of(data, chunks=True)
    out = tmp_path / "out.bin"
    events: list[dict[str, Any]] = []

    async def interrupted() -> None:
        with anyio.CancelScope() as scope:
            landed = 0

            def progress(files: int, nbytes: int) -> None:
                nonlocal landed
                landed += nbytes
                if landed >= SIZE // 2:
                    scope.cancel()  # Ctrl+C, with both sources in flight

            await download.download_prv(
                prv, out, options(net.base), on_event=events.append, on_progress=progress
            )
        assert scope.cancelled_caught

    anyio.run(interrupted)
    kept = [e for e in events if e["event"] == "kept"]
    assert len(kept) == 1
    assert kept[0]["bytes"] >= SIZE // 2
    sidecar = json.loads((tmp_path / "out.bin.part.json").read_text())
    record = PieceRecord(sidecar["unit"], tuple(tuple(r) for r in sidecar["pieces"]))
    assert record.nbytes(SIZE) == kept[0]["bytes"]
    # Both sources delivered pieces before the interruption.
    delivered = {e["url"] for e in events if e["event"] == "source"}
    assert len(delivered) == 2
    first_run = len(net.requests("paced"))

    events.clear()
    result = fetch(prv, out, options(net.base), events)
    assert out.read_bytes() == data
    resume = [e for e in events if e["event"] == "resume"]
    assert resume
    assert resume[0]["offset"] == kept[0]["bytes"]
    # The second run asked only for chunks that were not finished.
    finished = set(record.units())
    for start, end in served_ranges(net, "paced")[first_run:]:
        asked = set(range(start // CHUNK_SIZE, -(-end // CHUNK_SIZE)))
        assert not asked & finished, (start, end, sorted(finished))
    assert result.resumed_from == kept[0]["bytes"]


def test_a_resumed_chunk_that_changed_on_disk_is_fetched_again(
    net: FakeNetwork, tmp_path: Path
) -> None:
    data = content(4 * MIB, seed=4)
    sha1 = net.add(data, [])
    net.sources[sha1] = [net.node_url(NODE_A, "good", sha1), net.node_url(NODE_B, "good", sha1)]
    prv = prv_of(data, chunks=True)
    # An earlier run's part: chunks 0 and 2 recorded finished, chunk 2 since damaged.
    part = bytearray(data[: 3 * MIB])
    part[MIB : 2 * MIB] = bytes(MIB)
    part[2 * MIB + 5] ^= 1
    (tmp_path / "out.bin.part").write_bytes(part)
    (tmp_path / "out.bin.part.json").write_text(
        json.dumps({"sha1": sha1, "size": len(data), "unit": MIB, "pieces": [[0, 1], [2, 3]]})
    )
    events: list[dict[str, Any]] = []
    fetch(prv, tmp_path / "out.bin", options(net.base), events)
    assert (tmp_path / "out.bin").read_bytes() == data
    asked = {
        r for start, end in served_ranges(net, "good") for r in range(start // MIB, end // MIB)
    }
    assert 0 not in asked
    assert asked >= {1, 2, 3}


def test_an_original_five_field_prv_downloads_from_several_sources(
    net: FakeNetwork, tmp_path: Path
) -> None:
    data = content(SIZE, seed=5)
    net.pace = 16 * MIB
    sha1 = net.add(data, [])
    net.sources[sha1] = [net.node_url(NODE_A, "paced", sha1), net.node_url(NODE_B, "paced", sha1)]
    prv = prv_of(data)
    assert prv.chunks is None
    events: list[dict[str, Any]] = []
    result = fetch(prv, tmp_path / "out.bin", options(net.base), events)
    assert (tmp_path / "out.bin").read_bytes() == data
    assert len(result.sources) == 2
    assert not net.requests("chunks")  # no digest list asked for


def test_pieces_that_do_not_hash_right_are_fetched_again_from_one_source(
    net: FakeNetwork, tmp_path: Path
) -> None:
    # Without chunk digests a lie past the first 1000 bytes shows only at the end.
    data = content(SIZE, seed=6)
    net.bad_from = 8 * MIB
    sha1 = net.add(data, [])
    liar = net.node_url(NODE_A, "wrongmid", sha1)
    net.sources[sha1] = [liar, net.node_url(NODE_B, "good", sha1)]
    events: list[dict[str, Any]] = []
    result = fetch(prv_of(data), tmp_path / "out.bin", options(net.base), events)
    assert (tmp_path / "out.bin").read_bytes() == data
    warnings = [e for e in events if e["event"] == "warning"]
    assert warnings
    assert "one source at a time" in str(warnings[0]["message"])
    assert liar in {f.url for f in result.failures}
    assert result.url == net.node_url(NODE_B, "good", sha1)


def test_a_node_behind_two_urls_is_one_source_and_small_files_use_one_request(
    net: FakeNetwork, tmp_path: Path
) -> None:
    big = content(4 * MIB, seed=7)
    sha1 = net.add(big, [])
    # One node, directly and "through a hub": not two sources, so no pieces.
    net.sources[sha1] = [net.node_url(NODE_C, "good", sha1), net.url("sha1", sha1)]
    events: list[dict[str, Any]] = []
    result = fetch(prv_of(big, chunks=True), tmp_path / "big.bin", options(net.base), events)
    assert (tmp_path / "big.bin").read_bytes() == big
    assert result.sources == ()
    assert [e.range for e in net.requests("good")] == [None]
    # Two nodes but under parallel_min_size: one request too.
    small = content(MIB // 2, seed=8)
    sha1 = net.add(small, [])
    net.sources[sha1] = [net.node_url(NODE_A, "good", sha1), net.node_url(NODE_B, "good", sha1)]
    result = fetch(prv_of(small), tmp_path / "small.bin", options(net.base), events)
    assert result.sources == ()
    assert hashlib.sha1((tmp_path / "small.bin").read_bytes()).hexdigest() == sha1
    # --max-sources 1: today's path even for a large file on two nodes.
    sha1 = net.add(big + b"x", [])
    net.sources[sha1] = [net.node_url(NODE_A, "good", sha1), net.node_url(NODE_B, "good", sha1)]
    result = fetch(
        prv_of(big + b"x"), tmp_path / "one.bin", options(net.base, max_sources=1), events
    )
    assert result.sources == ()


def test_a_digest_list_that_does_not_match_the_root_is_not_used(
    net: FakeNetwork, tmp_path: Path
) -> None:
    data = content(3 * MIB, seed=9)
    sha1 = net.add(data, [])
    net.bad_lists = {NODE_A}
    net.sources[sha1] = [net.node_url(NODE_A, "good", sha1), net.node_url(NODE_B, "good", sha1)]
    events: list[dict[str, Any]] = []
    result = fetch(prv_of(data, chunks=True), tmp_path / "out.bin", options(net.base), events)
    assert (tmp_path / "out.bin").read_bytes() == data
    assert not result.failures  # node A's wrong list cost it nothing: B's list matched
    assert len(net.requests("chunks")) == 2


def test_every_source_failing_keeps_the_finished_pieces(net: FakeNetwork, tmp_path: Path) -> None:
    data = content(SIZE, seed=10)
    net.bad_from = 6 * MIB
    sha1 = net.add(data, [])
    net.sources[sha1] = [
        net.node_url(NODE_A, "wrongmid", sha1),
        net.node_url(NODE_B, "wrongmid", sha1),
    ]
    net.serve_sha1 = False
    events: list[dict[str, Any]] = []
    with pytest.raises(download.DownloadFailedError, match="kept for the next run"):
        fetch(prv_of(data, chunks=True), tmp_path / "out.bin", options(net.base), events)
    sidecar = json.loads((tmp_path / "out.bin.part.json").read_text())
    record = PieceRecord(sidecar["unit"], tuple(tuple(r) for r in sidecar["pieces"]))
    assert record.runs == ((0, 6),)
    assert (tmp_path / "out.bin.part").read_bytes()[: 6 * MIB] == data[: 6 * MIB]
    assert not (tmp_path / "out.bin").exists()


def test_a_prvdir_fetches_its_large_files_in_pieces(net: FakeNetwork, tmp_path: Path) -> None:
    big, small = content(3 * MIB + 5, seed=11), content(5000, seed=12)
    for data in (big, small):
        sha1 = net.add(data, [])
        net.sources[sha1] = [
            net.node_url(NODE_A, "good", sha1),
            net.node_url(NODE_B, "good", sha1),
        ]
    tree = PrvDir(files={"big.bin": prv_of(big, chunks=True), "small.txt": prv_of(small)}, dirs={})
    events: list[dict[str, Any]] = []
    outcome = anyio.run(
        lambda: download.download_prvdir(
            tree, tmp_path / "out", options(net.base), on_event=events.append
        )
    )
    assert not outcome.failed
    assert (tmp_path / "out" / "big.bin").read_bytes() == big
    assert (tmp_path / "out" / "small.txt").read_bytes() == small
    done = {str(e["path"]).rsplit("/", 1)[-1]: e for e in events if e["event"] == "done"}
    assert len(done["big.bin"]["sources"]) == 2
    assert "sources" not in done["small.txt"]


def test_a_part_that_cannot_be_written_is_one_clear_error(
    net: FakeNetwork, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = content(3 * MIB, seed=13)
    sha1 = net.add(data, [])
    net.sources[sha1] = [net.node_url(NODE_A, "good", sha1), net.node_url(NODE_B, "good", sha1)]

    def full(fd: int, data: object, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)  # the downloader writes pieces with it
    with pytest.raises(download.BadInputError, match="No space left on device"):
        fetch(prv_of(data, chunks=True), tmp_path / "out.bin", options(net.base), [])
    assert not (tmp_path / "out.bin").exists()


def test_the_progress_lines_say_how_many_sources_are_sending(
    capsys: pytest.CaptureFixture[str],
) -> None:
    now = [0.0]
    stream = io.StringIO()
    report = DownloadReport(as_json=False)
    with output.Progress(
        "Downloading",
        total_files=1,
        total_bytes=1000,
        stream=stream,
        tty=False,
        clock=lambda: now[0],
    ) as progress:
        report.progress = progress
        now[0] = 1.0
        report({"event": "progress", "sources": {"a": 100, "b": 100}, "active_sources": 2})
        progress.update(0, 200)
        report({"event": "progress", "sources": {"a": 300, "b": 200}, "active_sources": 1})
        progress.update(0, 300)
        progress.close(success=False)
    assert stream.getvalue().splitlines() == [
        "Downloading: 20% (0/1 file, 2 sources, 200 B of 1.0 kB)",
        "Downloading: 50% (0/1 file, 500 B of 1.0 kB)",
    ]
    report({"event": "dropped", "url": "http://x/0123456789ab/download/f", "message": "cut"})
    captured = capsys.readouterr()
    assert captured.out == ""  # not --json: no events printed
    assert captured.err == "Dropped source http://x/0123456789ab/download/f: cut\n"


def test_a_stalling_source_is_dropped_and_the_other_finishes(
    net: FakeNetwork, tmp_path: Path
) -> None:
    data = content(6 * MIB, seed=14)
    sha1 = net.add(data, [])
    net.pace = 2 * MIB  # node A: 3 s for the file, so B's silence outlasts the time-out
    net.node_pace = {NODE_B: 1}  # answers its head, then sends nothing
    stalling = net.node_url(NODE_B, "paced", sha1)
    net.sources[sha1] = [net.node_url(NODE_A, "paced", sha1), stalling]
    events: list[dict[str, Any]] = []
    result = fetch(
        prv_of(data, chunks=True), tmp_path / "out.bin", options(net.base, read_timeout=1.0), events
    )
    assert (tmp_path / "out.bin").read_bytes() == data
    dropped = [e for e in events if e["event"] == "dropped"]
    assert [e["url"] for e in dropped] == [stalling]
    assert dropped[0]["bytes"] == 0
    # A and the reserve that took B's place (the hub's /sha1/ URL) delivered the rest.
    per_source = dict(result.sources)
    assert per_source.pop(stalling) == 0
    assert set(per_source) == {net.node_url(NODE_A, "paced", sha1), net.url("sha1", sha1)}
    assert sum(per_source.values()) == len(data)


@pytest.mark.parametrize("value", ["0", "33", "two"])
def test_max_sources_out_of_range_is_one_usage_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    prv = tmp_path / "f.prv"
    prv.write_bytes(serialize_prv(prv_of(b"x")))
    code = prv_download.main(["--max-sources", value, str(prv), str(tmp_path / "out")])
    assert code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "--max-sources" in line or "'two'" in line
    assert not (tmp_path / "out").exists()


def test_max_sources_reaches_the_options() -> None:
    parsed = prv_download.parse(["--max-sources", "3", "a.prv", "out"])
    assert isinstance(parsed, prv_download.DownloadArgs)
    assert parsed.max_sources == 3


def test_slow_sources_are_engaged_after_one_source_probed(net: FakeNetwork, tmp_path: Path) -> None:
    # The default: one source first; at 4 MiB/s it keeps this client mostly idle, so
    # the ramp brings the other in after its first window.
    data = content(SIZE, seed=21)
    net.pace = 4 * MIB
    sha1 = net.add(data, [])
    first, other = net.node_url(NODE_A, "paced", sha1), net.node_url(NODE_B, "paced", sha1)
    net.sources[sha1] = [first, other]
    events: list[dict[str, Any]] = []
    out = tmp_path / "out.bin"
    result = fetch(prv_of(data, chunks=True), out, options(net.base, one_source_first=True), events)
    assert out.read_bytes() == data
    switch = [e for e in events if e["event"] == "sources"]
    assert len(switch) == 1, switch
    assert 0 < switch[0]["offset"] < SIZE, switch
    assert "adding sources" in switch[0]["message"]
    per_source = dict(result.sources)
    assert list(per_source) == [first, other]
    assert sum(per_source.values()) == SIZE
    assert per_source[other] >= 2 * CHUNK_SIZE, per_source
    # The first request was open-ended (the one-source path), the others pieces.
    ranges = [e.range for e in net.requests("paced")]
    assert ranges[0] is None
    assert all(r is not None for r in ranges[1:])


def test_fast_sources_keep_one_source(net: FakeNetwork, tmp_path: Path) -> None:
    # Unpaced sources in this process: the client is busy checking and writing, so
    # another source could only add work; the ramp keeps one (never more bytes
    # fetched than the file, the second node never asked).
    size = 48 * MIB + 17
    data = content(size, seed=22)
    sha1 = net.add(data, [])
    first, other = net.node_url(NODE_A, "good", sha1), net.node_url(NODE_B, "good", sha1)
    net.sources[sha1] = [first, other]
    events: list[dict[str, Any]] = []
    out = tmp_path / "out.bin"
    result = fetch(prv_of(data, chunks=True), out, options(net.base, one_source_first=True), events)
    assert out.read_bytes() == data
    assert not [e for e in events if e["event"] == "sources"]
    assert result.url == first
    assert result.transferred == size
    assert not result.sources
    assert [e.range for e in net.requests("good")] == [None]


def test_a_source_that_failed_before_the_switch_is_reported_and_not_asked_again(
    net: FakeNetwork, tmp_path: Path
) -> None:
    # One source first: the first URL answers 404, the next paced one starts, and the
    # ramp then brings in the third. The 404 stays among the download's failures (it
    # was lost at the switch before) and the parallel phase does not ask it again.
    data = content(SIZE, seed=23)
    net.pace = 4 * MIB
    sha1 = net.add(data, [])
    missing = net.node_url(NODE_C, "missing", sha1)
    first, other = net.node_url(NODE_A, "paced", sha1), net.node_url(NODE_B, "paced", sha1)
    net.sources[sha1] = [missing, first, other]
    events: list[dict[str, Any]] = []
    out = tmp_path / "out.bin"
    result = fetch(prv_of(data, chunks=True), out, options(net.base, one_source_first=True), events)
    assert out.read_bytes() == data
    assert len([e for e in events if e["event"] == "sources"]) == 1
    assert [f.url for f in result.failures] == [missing]
    assert len(net.requests("missing")) == 1
    assert set(dict(result.sources)) == {first, other}


@pytest.mark.parametrize(
    "argv",
    [
        ["a.prv", "out"],
        ["a.prv", "out", "--hub", "http://127.0.0.1:1", "--json"],
        ["--force", "a.prv", "out", "--cache-size=0", "--max-sources", "2"],
        ["a.prv", "out", "--min-speed", "10K", "--speed-window", "5"],
    ],
)
def test_typer_parses_what_the_download_fast_path_parses(argv: list[str]) -> None:
    # The fast path (no typer import: ~50 ms of every download's start) and the typer
    # application must read a command line alike.
    from kbapps.cli._typer_app import parse_with_typer

    fast = prv_download.parse(argv)
    assert isinstance(fast, prv_download.DownloadArgs)
    assert parse_with_typer(prv_download.make_app(), argv, prv_download.PROG) == fast


def test_a_bad_max_sources_goes_to_typer_for_its_message() -> None:
    with pytest.raises(output.UsageError):
        prv_download.parse(["a.prv", "out", "--max-sources", "two"])
