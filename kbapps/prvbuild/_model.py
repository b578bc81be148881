"""The model path: ``build_prv`` for one file, and ``build_prvdir`` (frozen ``Prv``
and ``PrvDir`` objects, then ``serialize_prvdir``), the reference the fast path's
bytes are tested against."""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

from kbapps.hashing import FileKey, HashResult, chunks_root, hash_files, hash_records
from kbapps.prvbuild._common import DEFAULT_OPTIONS, BuildOptions, PrvBuildError, show
from kbapps.prvbuild._fragments import enclosing_digests

if TYPE_CHECKING:
    from kbapps.prvbuild._scan import TreeScan
    from kbproto.prv import Prv, PrvDir


def _check_result(result: HashResult, shown: str) -> None:
    if result.error is not None or result.digest is None:
        raise PrvBuildError(f"cannot read {show(shown)}: {result.error}")


def build_prvdir(scan: TreeScan, options: BuildOptions = DEFAULT_OPTIONS) -> PrvDir:
    """Hash the files of a scan and assemble its ``.prvdir``.

    Args:
        scan: from ``scan_directory``.
        options: the cache, workers (passed to ``hash_records``), callbacks and
            files to leave out.

    Returns:
        The tree, every ``original_path`` relative to the scanned directory.

    Raises:
        PrvBuildError: if a file cannot be read (the message names it).
    """
    from kbproto.chunks import ChunkSpec
    from kbproto.prv import Prv, PrvDir

    files_of: list[dict[str, Prv]] = [{} for _ in scan.dirs]
    dirs = scan.dirs
    scanned = scan.files
    exclude = options.exclude
    batches = hash_records(
        scanned,
        cache=options.cache,
        workers=options.workers,
        on_progress=options.on_progress,
        on_warning=options.on_warning,
    )
    count_cached = options.cached()
    try:
        for batch in batches:
            count_cached(sum([1 for record in batch if record[5]]))
            for index, sha1, head, size, key, _, error, chunks in batch:
                entry = scanned[index]
                base = dirs[entry.dir_index].relpath
                relpath = f"{base}/{entry.name}" if base else entry.name
                if sha1 is None or head is None or chunks is None:
                    raise PrvBuildError(f"cannot read {show(relpath)}: {error}")
                if exclude and (key[0], key[1]) in exclude:
                    continue
                files_of[entry.dir_index][entry.name] = Prv(
                    sha1=sha1,
                    size=size,
                    head_sha1=head,
                    path=relpath,
                    chunks=ChunkSpec(root=chunks_root(chunks)),
                )
    finally:
        batches.close()
    # Bottom-up: children come after their parent in scan.dirs.
    subdirs_of: list[dict[str, PrvDir]] = [{} for _ in dirs]
    for index in range(len(dirs) - 1, -1, -1):
        node = PrvDir(files=files_of[index], dirs=subdirs_of[index])
        if index == 0:
            return node
        subdirs_of[dirs[index].parent][dirs[index].name] = node
    raise AssertionError("unreachable: a scan always holds its root")  # pragma: no cover


def build_prv(path: str, options: BuildOptions = DEFAULT_OPTIONS) -> Prv:
    """Hash one file and return its ``.prv``; ``original_path`` is its name only.

    ``options.workers`` and ``options.exclude`` do not apply.

    Raises:
        PrvBuildError: if the file cannot be read or is not a regular file.
    """
    cache, on_progress = options.cache, options.on_progress
    try:
        st = os.stat(path)
    except OSError as exc:
        raise PrvBuildError(f"cannot read {show(path)}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise PrvBuildError(f"{show(path)} is not a regular file")
    name = os.path.basename(os.path.normpath(path))
    key = FileKey.from_stat(st)
    if cache is not None:
        # A file of a tree described before: its digest is in that tree's fragments.
        folder = os.path.realpath(os.path.dirname(os.path.abspath(path)))
        hit = enclosing_digests(cache, folder, whole=False, itself=True).get(key)
        if hit is not None:
            if on_progress is not None:
                on_progress(1, st.st_size)
            options.cached()(1)
            return _new_prv(hit[0], st.st_size, hit[1], hit[2], name, path)
    results = hash_files(
        [(path, key)],
        cache=cache,
        workers=1,
        on_progress=on_progress,
        on_warning=options.on_warning,
    )
    try:
        result = next(results)
    finally:
        results.close()
    _check_result(result, path)
    if result.cached:
        options.cached()(1)
    digest = result.digest
    assert digest is not None  # (as _check_result says)
    assert digest.chunks is not None  # (every hash_files result has its list)
    root = chunks_root(digest.chunks)
    return _new_prv(digest.sha1, digest.size, digest.head_sha1, root, name, path)


def _new_prv(sha1: str, size: int, head: str, root: str, name: str, path: str) -> Prv:
    from kbproto.chunks import ChunkSpec
    from kbproto.errors import LocalProtocolError
    from kbproto.ids import Sha1
    from kbproto.prv import Prv

    try:
        return Prv(
            sha1=Sha1(sha1),
            size=size,
            head_sha1=Sha1(head),
            path=name,
            chunks=ChunkSpec(root=root),
        )
    except LocalProtocolError:
        raise PrvBuildError(f"{show(path)}: the file name is not valid UTF-8 text") from None
