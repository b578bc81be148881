"""kbapps.share.indexer: walk rules, first scan, restart without re-hashing, live deltas."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest

from kbapps.hashing import FileKey, HashResult, ProcessPool, digest, hash_files
from kbapps.share import indexer as indexer_module
from kbapps.share.index import INDEX_FILENAME, FileIndex
from kbapps.share.indexer import (
    Indexer,
    IndexerConfig,
    IndexerHooks,
    default_hasher,
    iter_share,
    walk_share,
)
from kbproto.chunks import ChunkSpec, chunk_digests, digest_list_root

MS = 1_000_000
#: Short timings so changes show within a fraction of a second (the defaults are 2 s).
FAST = IndexerConfig(min_interval=0.05, max_interval=0.2, settle=0.1, workers=1)
RACY_NS = 50 * MS
#: Bound on every wait for the indexer; generous for a loaded 2-core machine.
WAIT = 20.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def sha1_of(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


@dataclass
class Sink:
    """Stands for the share's core: hears which content ids changed and reads, as the
    core does (``kbproto.sharestore``), each one's representative from the index."""

    index: FileIndex
    calls: int = 0
    reports: list[tuple[str, tuple[str, int] | None]] = field(default_factory=list)

    async def content_changed(self, sha1s: Collection[str]) -> None:
        self.calls += 1
        for sha1 in sha1s:
            self.reports.append((sha1, self.index.representative(bytes.fromhex(sha1))))

    @property
    def files(self) -> dict[str, tuple[str, int]]:
        """What the share serves with a SHA-1: every trusted entry."""
        index = self.index
        return {e.path: (e.sha1, e.size) for e in index.entries() if index.trusted(e)}

    def reported_at(self, path: str) -> list[str]:
        """The SHA-1s reported with ``path`` as their representative, in order."""
        return [sha1 for sha1, rep in self.reports if rep is not None and rep[0] == path]


class CountingHasher:
    """The real hasher, counting every path it is asked to read."""

    def __init__(self, before: Callable[[str], None] | None = None) -> None:
        self.paths: list[str] = []
        self.lock = threading.Lock()
        self.before = before

    def __call__(
        self, items: Sequence[tuple[str, FileKey | None]], on_progress: Callable[[int, int], None]
    ) -> Iterator[HashResult]:
        with self.lock:
            self.paths.extend(path for path, _ in items)
        if self.before is not None:
            for path, _ in items:
                self.before(path)
        return hash_files(items, workers=1, on_progress=on_progress)

    def names(self) -> list[str]:
        return sorted(os.path.basename(p) for p in self.paths)


@dataclass
class Running:
    indexer: Indexer
    index: FileIndex
    sink: Sink
    warnings: list[str]
    done: list[int]


@asynccontextmanager
async def running(
    root: Path,
    *,
    hasher: Callable[..., Iterator[HashResult]] | None = None,
    config: IndexerConfig = FAST,
    db: Path | None = None,
) -> AsyncIterator[Running]:
    warnings: list[str] = []
    done: list[int] = []
    index = FileIndex(db, racy_window_ns=RACY_NS, on_warning=warnings.append)
    indexer = Indexer(
        root,
        index,
        config=config,
        hooks=IndexerHooks(on_warning=warnings.append, on_initial_done=done.append),
        hasher=hasher,
    )
    sink = Sink(index)
    async with anyio.create_task_group() as tg:
        tg.start_soon(indexer.run, sink)
        with anyio.fail_after(WAIT):
            await indexer.initial_done.wait()
        yield Running(indexer, index, sink, warnings, done)
        tg.cancel_scope.cancel()
    index.close()


async def eventually(check: Callable[[], bool]) -> None:
    with anyio.fail_after(WAIT):
        while not check():
            await anyio.sleep(0.02)


def make_share(root: Path) -> dict[str, bytes]:
    files = {
        "top.bin": bytes(range(256)) * 8,
        "empty.txt": b"",
        "sub/a.dat": b"alpha\n",
        "sub/deeper/b.dat": b"beta" * 1000,
        "sub/twin.dat": b"alpha\n",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / ".kbucket").mkdir()
    (root / ".kbucket" / "private.pem").write_bytes(b"secret")
    (root / ".hidden.dat").write_bytes(b"hidden")
    (root / "sub" / ".git").mkdir()
    (root / "sub" / ".git" / "config").write_bytes(b"hidden")
    return files


# --- the walk ------------------------------------------------------------------------


def test_walk_rules(tmp_path: Path) -> None:
    root = tmp_path / "share"
    root.mkdir()
    files = make_share(root)
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"outside")
    (root / "link_out").symlink_to(outside)
    (root / "link_in").symlink_to("top.bin")
    (root / "link_kb").symlink_to(root / ".kbucket" / "private.pem")
    (root / "dirlink").symlink_to("sub/deeper")
    (root / "sub" / "loop").symlink_to("..")
    (root / "dangling").symlink_to(tmp_path / "missing")
    (root / "bad\\name").write_bytes(b"x")
    (root / "ctl\x01name").write_bytes(b"x")
    os.mkfifo(root / "fifo")
    warnings: list[str] = []
    found = walk_share(root, on_warning=warnings.append)
    expected = set(files) | {"link_in", "dirlink/b.dat"}
    assert set(found) == expected
    assert found["link_in"] == found["top.bin"]  # the target's stamp
    assert found["top.bin"].size == 2048
    text = "\n".join(warnings)
    for name in ("link_out", "link_kb", "sub/loop", "fifo", "bad\\name", "ctl\\x01name"):
        assert name in text, name
    assert "sub/loop: symlink loop" in text
    assert str(tmp_path) not in text


def test_walk_depth_limit_and_missing_root(tmp_path: Path) -> None:
    root = tmp_path / "share"
    deep = root.joinpath(*["d"] * 64)
    deep.mkdir(parents=True)
    (deep.parent / "ok.txt").write_bytes(b"63 directories deep: 64 segments")
    (deep / "too_deep.txt").write_bytes(b"65 segments: cannot be served")
    warnings: list[str] = []
    found = walk_share(root, on_warning=warnings.append)
    assert list(found) == ["/".join(["d"] * 63 + ["ok.txt"])]
    assert any("deeper than 64" in w for w in warnings)
    with pytest.raises(FileNotFoundError):
        walk_share(tmp_path / "missing")


def test_walk_yields_the_order_of_the_index(tmp_path: Path) -> None:
    """``iter_share`` yields in the byte order of the UTF-8 paths, which is SQLite's
    order of the index's primary key: the indexer merges the two without holding
    either (``a-b`` before ``a/x``, a name before its longer siblings, non-ASCII last)."""
    root = tmp_path / "share"
    names = ["a/x", "a-b", "a.c", "a0", "ab/y", "a/b/c", "a/b-", "b", "é/z", "Z", "a/b/d"]
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(name.encode())
    walked = [path for path, _ in iter_share(root)]
    assert sorted(walked, key=lambda p: p.encode()) == walked
    assert sorted(walked) == sorted(names)
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (path TEXT PRIMARY KEY) WITHOUT ROWID")
    db.executemany("INSERT INTO t VALUES (?)", [(n,) for n in names])
    assert [row[0] for row in db.execute("SELECT path FROM t ORDER BY path")] == walked


@pytest.mark.anyio
async def test_a_rename_to_a_later_name_is_not_rehashed_either(tmp_path: Path) -> None:
    """The walk meets the vanished paths first here (``aaa/`` < ``zzz/``)."""
    root = tmp_path / "share"
    (root / "aaa").mkdir(parents=True)
    for i in range(5):
        (root / "aaa" / f"f{i}.dat").write_bytes(b"file %d" % i)
    hasher = CountingHasher()
    async with running(root, hasher=hasher) as run:
        before = len(hasher.paths)
        (root / "aaa").rename(root / "zzz")
        await eventually(lambda: set(run.sink.files) == {f"zzz/f{i}.dat" for i in range(5)})
        assert len(hasher.paths) == before


@pytest.mark.anyio
async def test_more_new_files_than_the_buffer_are_all_indexed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """New paths are held in a bounded buffer; past it they are hashed as they come."""
    monkeypatch.setattr(indexer_module, "_NEW_BUFFER", 7)
    monkeypatch.setattr(indexer_module, "_STRETCH", 5)
    root = tmp_path / "share"
    for i in range(40):
        (root / f"d{i % 4}").mkdir(parents=True, exist_ok=True)
        (root / f"d{i % 4}" / f"f{i}.dat").write_bytes(b"n %d" % i)
    async with running(root) as run:
        assert len(run.sink.files) == 40
        assert run.done == [40]
        for i in range(0, 40, 2):
            (root / f"d{i % 4}" / f"f{i}.dat").unlink()
        await eventually(lambda: len(run.sink.files) == 20)


# --- first scan and restart ------------------------------------------------------------


@pytest.mark.anyio
async def test_initial_scan_advertises_every_servable_file(tmp_path: Path) -> None:
    root = tmp_path / "share"
    root.mkdir()
    files = make_share(root)
    os.mkfifo(root / "fifo")
    async with running(root) as run:
        expected = {rel: (sha1_of(data), len(data)) for rel, data in files.items()}
        assert run.sink.files == expected
        assert run.sink.calls >= 1
        assert run.done == [len(files)]
        assert len(run.index) == len(files)
        entry = run.index.get("sub/deeper/b.dat")
        assert entry is not None
        assert entry.head_sha1 == sha1_of(files["sub/deeper/b.dat"][:1000])
        assert run.index.paths_for(sha1_of(b"alpha\n")) in (
            ("sub/a.dat", "sub/twin.dat"),
            ("sub/twin.dat", "sub/a.dat"),
        )
        assert any("fifo" in w for w in run.warnings)


@pytest.mark.anyio
async def test_new_files_reach_the_node_in_batches_not_one_call_each(tmp_path: Path) -> None:
    root = tmp_path / "share"
    for i in range(300):
        sub = root / f"d{i // 100}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i}.dat").write_bytes(b"file %d\n" % i)
    async with running(root) as run:
        assert len(run.sink.files) == 300
        assert 1 <= run.sink.calls <= 30, run.sink.calls  # one per hashing batch, not 300


@pytest.mark.anyio
async def test_restart_does_not_rehash_unchanged_files(tmp_path: Path) -> None:
    root = tmp_path / "share"
    root.mkdir()
    files = make_share(root)
    db = tmp_path / INDEX_FILENAME
    first = CountingHasher()
    async with running(root, hasher=first, db=db) as run:
        advertised = dict(run.sink.files)
    assert first.names() == sorted(os.path.basename(p) for p in files)

    # Same files: the second start reads none of them and advertises the same index.
    second = CountingHasher()
    async with running(root, hasher=second, db=db) as run:
        assert run.sink.files == advertised
        assert run.sink.calls == 0  # nothing changed: the core reads the index as it is
    assert second.paths == []

    # One changed while stopped: only that one is read again, and it is not
    # advertised under its old SHA-1 meanwhile.
    (root / "sub" / "a.dat").write_bytes(b"alpha, edited\n")
    third = CountingHasher()
    async with running(root, hasher=third, db=db) as run:
        assert run.sink.files["sub/a.dat"] == (sha1_of(b"alpha, edited\n"), 14)
        # The old content's copy is now sub/twin.dat; the edited one is reported.
        assert run.sink.reported_at("sub/a.dat") == [sha1_of(b"alpha, edited\n")]
        assert (sha1_of(b"alpha\n"), ("sub/twin.dat", 6)) in run.sink.reports
    assert third.names() == ["a.dat"]


@pytest.mark.anyio
async def test_chunk_digests_are_indexed_kept_and_not_recomputed(tmp_path: Path) -> None:
    """The indexer stores each file's digest list with the index; a restart reads no
    file and still has every list and root (issue 13, chunk digests)."""
    root = tmp_path / "share"
    root.mkdir()
    files = make_share(root)
    big = os.urandom((1 << 20) + 5)  # two chunks
    (root / "two-chunks.bin").write_bytes(big)
    files["two-chunks.bin"] = big
    db = tmp_path / INDEX_FILENAME
    async with running(root, hasher=CountingHasher(), db=db):
        pass
    again = CountingHasher()
    async with running(root, hasher=again, db=db) as run:
        for relpath, data in files.items():
            recorded = run.index.get(relpath)
            assert recorded is not None
            digests = chunk_digests(data)
            assert run.index.chunk_list(sha1_of(data)) == digests
            assert recorded.chunks_root == digest_list_root(digests)
            assert recorded.prv().chunks == ChunkSpec(root=digest_list_root(digests))
    assert again.paths == []


@pytest.mark.anyio
async def test_an_index_from_before_chunk_digests_is_hashed_once_more(tmp_path: Path) -> None:
    """Schema 1 (no chunk digests): its entries are kept and advertised, each file is
    read once more for its list, then never again."""
    root = tmp_path / "share"
    root.mkdir()
    files = make_share(root)
    db = tmp_path / INDEX_FILENAME
    async with running(root, hasher=CountingHasher(), db=db) as run:
        advertised = dict(run.sink.files)
    # Make it what the previous version wrote: no chunks_root column, no lists.
    raw = sqlite3.connect(db)
    raw.execute("DROP TABLE chunk_lists")
    raw.execute("ALTER TABLE files DROP COLUMN chunks_root")
    raw.execute("PRAGMA user_version=1")
    raw.commit()
    raw.close()
    second = CountingHasher()
    async with running(root, hasher=second, db=db) as run:
        assert run.sink.files == advertised  # advertised at once
        await eventually(
            lambda: all(run.index.chunk_list(sha1_of(d)) is not None for d in files.values())
        )
        assert run.sink.files == advertised
    assert second.names() == sorted(os.path.basename(p) for p in files)
    third = CountingHasher()
    async with running(root, hasher=third, db=db) as run:
        assert run.index.chunk_list(sha1_of(files["sub/a.dat"])) == chunk_digests(
            files["sub/a.dat"]
        )
    assert third.paths == []


# --- changes while running -------------------------------------------------------------


@pytest.mark.anyio
async def test_add_modify_remove_while_running(tmp_path: Path) -> None:
    root = tmp_path / "share"
    root.mkdir()
    make_share(root)
    async with running(root) as run:
        sink = run.sink
        (root / "new").mkdir()
        (root / "new" / "added.dat").write_bytes(b"added later")
        (root / ".new-hidden").write_bytes(b"never")
        await eventually(lambda: "new/added.dat" in sink.files)
        assert sink.files["new/added.dat"] == (sha1_of(b"added later"), 11)

        old_sha1 = sink.files["top.bin"][0]
        seen = len(sink.reports)
        (root / "top.bin").write_bytes(b"rewritten")
        await eventually(lambda: sink.files.get("top.bin", ("", 0))[0] == sha1_of(b"rewritten"))
        # The old SHA-1 was withdrawn as soon as the change was seen, then the new one put.
        assert sink.reports[seen:] == [(old_sha1, None), (sha1_of(b"rewritten"), ("top.bin", 9))]

        (root / "sub" / "twin.dat").unlink()
        await eventually(lambda: "sub/twin.dat" not in sink.files)
        assert run.index.get("sub/twin.dat") is None
        assert run.index.paths_for(sha1_of(b"alpha\n")) == ("sub/a.dat",)
        assert all(not path.startswith(".") for path in sink.files)


@pytest.mark.anyio
async def test_requested_rescan_runs_before_the_interval(tmp_path: Path) -> None:
    root = tmp_path / "share"
    root.mkdir()
    make_share(root)
    slow = IndexerConfig(min_interval=3600.0, max_interval=3600.0, settle=0.1, workers=1)
    async with running(root, config=slow) as run:
        walks = run.indexer.walks
        (root / "late.dat").write_bytes(b"late")
        run.indexer.request_rescan()
        await eventually(lambda: "late.dat" in run.sink.files)
        assert run.indexer.walks == walks + 1


@pytest.mark.anyio
async def test_file_being_written_is_never_advertised_with_a_torn_digest(tmp_path: Path) -> None:
    root = tmp_path / "share"
    root.mkdir()
    target = root / "growing.log"
    states: set[str] = set()
    content = b""
    async with running(root) as run:
        for i in range(40):
            content += f"line {i} ".encode() * 200
            target.write_bytes(content)
            states.add(sha1_of(content))
            await anyio.sleep(0.015)
        final = sha1_of(content)
        await eventually(lambda: run.sink.files.get("growing.log", ("", 0))[0] == final)
        puts = run.sink.reported_at("growing.log")
        assert puts
        assert set(puts) <= states
        entry = run.index.get("growing.log")
        assert entry is not None
        assert entry.size == len(content)


@pytest.mark.anyio
async def test_change_between_walk_and_hash_is_not_recorded(tmp_path: Path) -> None:
    root = tmp_path / "share"
    root.mkdir()
    victim = root / "victim.dat"
    victim.write_bytes(b"version one")
    changed: list[str] = []

    def rewrite_once(path: str) -> None:
        if path.endswith("victim.dat") and not changed:
            changed.append(path)
            # A different size: the stamp the walk took no longer matches.
            Path(path).write_bytes(b"version two, longer")

    hasher = CountingHasher(before=rewrite_once)
    async with running(root, hasher=hasher) as run:
        await eventually(lambda: "victim.dat" in run.sink.files)
        assert run.sink.files["victim.dat"] == (sha1_of(b"version two, longer"), 19)
        puts = run.sink.reported_at("victim.dat")
        assert len(puts) == 1
    assert hasher.names().count("victim.dat") >= 2


@pytest.mark.anyio
async def test_unreadable_file_warns_once_and_is_retried_when_it_changes(tmp_path: Path) -> None:
    root = tmp_path / "share"
    root.mkdir()
    (root / "ok.dat").write_bytes(b"fine")
    (root / "locked.dat").write_bytes(b"locked")
    attempts: list[str] = []

    def failing(
        items: Sequence[tuple[str, FileKey | None]], on_progress: Callable[[int, int], None]
    ) -> Iterator[HashResult]:
        keep = []
        for path, key in items:
            if path.endswith("locked.dat") and Path(path).read_bytes() == b"locked":
                attempts.append(path)
                assert key is not None
                yield HashResult(path, key, None, "Permission denied")
            else:
                keep.append((path, key))
        yield from hash_files(keep, workers=1, on_progress=on_progress)

    async with running(root, hasher=failing) as run:
        assert set(run.sink.files) == {"ok.dat"}
        walks = run.indexer.walks
        await eventually(lambda: run.indexer.walks >= walks + 3)
        assert len(attempts) == 1
        assert [w for w in run.warnings if "locked.dat" in w] == [
            "cannot read locked.dat: Permission denied"
        ]
        (root / "locked.dat").write_bytes(b"unlocked")
        await eventually(lambda: "locked.dat" in run.sink.files)
        assert run.sink.files["locked.dat"] == (sha1_of(b"unlocked"), 8)


@pytest.mark.anyio
async def test_directory_renamed_inside_the_share_is_not_rehashed(tmp_path: Path) -> None:
    root = tmp_path / "share"
    root.mkdir()
    make_share(root)
    hasher = CountingHasher()
    async with running(root, hasher=hasher) as run:
        before = len(hasher.paths)
        old = dict(run.sink.files)
        (root / "sub").rename(root / "moved")
        await eventually(lambda: "moved/deeper/b.dat" in run.sink.files)
        await eventually(lambda: "sub/a.dat" not in run.sink.files)
        assert run.sink.files["moved/deeper/b.dat"] == old["sub/deeper/b.dat"]
        assert not any(p.startswith("sub/") for p in run.sink.files)
        assert len(hasher.paths) == before


def test_many_files_use_worker_processes_while_the_loop_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forks: list[int]
) -> None:
    root = tmp_path / "share"
    for d in range(6):
        (root / f"d{d}").mkdir(parents=True)
        for i in range(110):
            (root / f"d{d}" / f"f{i}.txt").write_bytes(f"{d}/{i}".encode())
    # Settled (a file's age counts from its ctime too, which no utime can set back):
    # the first walk hashes all of them at once, in one batch big enough for the pool.
    time.sleep(0.3)
    opened_by = tmp_path / "opened-by"
    real_open = digest.open_for_hashing

    def open_for_hashing(path: str | os.PathLike[str]) -> int:
        with opened_by.open("a") as log:  # (appends of a line are atomic)
            log.write(f"{os.getpid()}\n")
        return real_open(path)

    # Before the pool starts: its worker inherits the spy.
    monkeypatch.setattr(digest, "open_for_hashing", open_for_hashing)
    config = IndexerConfig(min_interval=0.05, max_interval=0.2, settle=0.1, batch_files=600)
    progress: list[tuple[int, int]] = []
    ticks = 0
    sink: list[Sink] = []

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.sleep(0.005)

    async def index_all(indexer: Indexer) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            tg.start_soon(indexer.run, sink[0])
            with anyio.fail_after(WAIT):
                await indexer.initial_done.wait()
            tg.cancel_scope.cancel()

    # As kbucket-host does: the pool's worker is forked before the event loop starts
    # threads, and the indexer's worker threads send it their batches.
    pool = ProcessPool(2)
    try:
        assert pool.start()
        index = FileIndex(None, racy_window_ns=RACY_NS)
        sink.append(Sink(index))
        indexer = Indexer(
            root,
            index,
            config=config,
            hooks=IndexerHooks(on_hash_progress=lambda f, b: progress.append((f, b))),
            hasher=default_hasher(pool=pool),
        )
        anyio.run(index_all, indexer, backend="asyncio")
        assert pool.workers == 1  # still there for the next batches
    finally:
        pool.close()
    assert len(sink[0].files) == 660
    assert sink[0].files["d5/f109.txt"] == (sha1_of(b"5/109"), 5)
    assert sum(f for f, _ in progress) == 660
    assert ticks > 1  # the event loop kept running while hashing
    pids = opened_by.read_text().split()
    assert len(pids) == 660
    assert str(forks[0]) in pids  # the worker process hashed some of them


@pytest.mark.anyio
async def test_batches_are_recorded_while_the_rest_is_hashed(tmp_path: Path) -> None:
    # A first scan is one hashing job whose results are written (and reported) a
    # batch at a time while it goes on: files are findable before the job ends.
    root = tmp_path / "share"
    root.mkdir()
    for i in range(6):
        (root / f"f{i}.dat").write_bytes(b"%d" % i)
    old = time.time() - 3600
    for path in root.iterdir():
        os.utime(path, (old, old))
    calls: list[int] = []
    seen_while_hashing: list[int] = []
    db = tmp_path / INDEX_FILENAME

    def recorded() -> int:
        reader = sqlite3.connect(db)
        try:
            return int(reader.execute("SELECT count(*) FROM files").fetchone()[0])
        finally:
            reader.close()

    def watching(
        items: Sequence[tuple[str, FileKey | None]], on_progress: Callable[[int, int], None]
    ) -> Iterator[HashResult]:
        calls.append(len(items))
        for done, result in enumerate(hash_files(items, workers=1), 1):
            yield result
            if done == 4:
                # The first batch (2 files) is recorded while this job goes on.
                deadline = time.monotonic() + WAIT
                while not recorded() and time.monotonic() < deadline:
                    time.sleep(0.01)
                seen_while_hashing.append(recorded())

    config = IndexerConfig(min_interval=0.05, max_interval=0.2, settle=0.1, batch_files=2)
    async with running(root, hasher=watching, config=config, db=db) as run:
        assert len(run.sink.files) == 6
    assert calls == [6]
    assert len(seen_while_hashing) == 1
    assert seen_while_hashing[0] >= 2


@pytest.mark.anyio
async def test_a_failing_hasher_surfaces_as_itself(tmp_path: Path) -> None:
    # The hashing runs beside the writes (a task group): what it raises reaches the
    # caller of run() as it is, not wrapped in an exception group.
    root = tmp_path / "share"
    root.mkdir()
    (root / "a.dat").write_bytes(b"a")
    old = time.time() - 3600
    os.utime(root / "a.dat", (old, old))

    def broken(
        items: Sequence[tuple[str, FileKey | None]], on_progress: Callable[[int, int], None]
    ) -> Iterator[HashResult]:
        if items:
            raise RuntimeError("hasher broke")
        yield from ()  # (a generator, as the real one)

    index = FileIndex(None, racy_window_ns=RACY_NS)
    indexer = Indexer(root, index, config=FAST, hasher=broken)
    with anyio.fail_after(WAIT), pytest.raises(RuntimeError, match="hasher broke"):
        await indexer.run(Sink(index))


def test_config_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="min_interval"):
        IndexerConfig(min_interval=0)
    with pytest.raises(ValueError, match="cpu_fraction"):
        IndexerConfig(cpu_fraction=0)
    with pytest.raises(ValueError, match="settle"):
        IndexerConfig(settle=-1)
    with pytest.raises(ValueError, match="batch"):
        IndexerConfig(batch_files=0)
    with pytest.raises(ValueError, match="workers"):
        IndexerConfig(workers=0)
    with pytest.raises(ValueError, match="racy window"):
        Indexer(tmp_path, FileIndex(None), config=IndexerConfig(settle=0.5))


@pytest.mark.anyio
async def test_stopping_does_not_wait_for_a_batch_being_hashed(tmp_path: Path) -> None:
    root = tmp_path / "share"
    root.mkdir()
    (root / "big.dat").write_bytes(b"pretend this takes an hour to hash")
    entered = threading.Event()
    release = threading.Event()

    def stuck(
        items: Sequence[tuple[str, FileKey | None]], on_progress: Callable[[int, int], None]
    ) -> Iterator[HashResult]:
        entered.set()
        release.wait(WAIT)  # a hash that outlives the node's shutdown
        on_progress(1, 1)  # raises: the indexer has stopped
        yield from hash_files(items, workers=1)

    index = FileIndex(None, racy_window_ns=RACY_NS)
    indexer = Indexer(root, index, config=FAST, hasher=stuck)
    try:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(indexer.run, Sink(index))
                while not entered.is_set():
                    await anyio.sleep(0.01)
                tg.cancel_scope.cancel()
        # Cancelled while the worker thread is still inside the hasher.
        assert not release.is_set()
    finally:
        release.set()
    assert index.get("big.dat") is None
