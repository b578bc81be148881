"""Writing a streamed tree's document and fragment file a directory at a time, as
directories complete (``Emitter``), while the rest of the tree is still being
hashed: little is left to write once the last file is in."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from kbapps.hashing import RACY_WINDOW_NS, FragmentWriter, HashCache
from kbapps.prvbuild._text import directory_text, open_dir, stored_texts

if TYPE_CHECKING:
    from kbapps.hashing import Buffer
    from kbapps.prvbuild._collect import Collected
    from kbapps.prvbuild._scan import ScannedDir

#: Takes the document as lists of pieces (bytes or read-only buffers), over one or
#: more calls: all the pieces, in order, are the document. The list is not kept.
Writer = Callable[[list["Buffer"]], None]
#: The document is handed to ``write`` in pieces of about this much, so few writes
#: while hashing goes on, and little held in memory.
OUT_PIECE_BYTES = 1 << 20


class Emitter:
    """Writes a streamed tree's document (to ``write``) and its fragment file (if
    there is a cache) a directory at a time: the next directory in document order
    as soon as it has been listed and all its files are in.

    ``dirs`` and ``depth`` grow as the walk runs; ``listed`` tells each directory's
    number of files once it is listed.
    """

    def __init__(
        self,
        dirs: Sequence[ScannedDir],
        depth: Sequence[int],
        collected: Collected,
        write: Writer,
        cache: HashCache | None,
        scope: str,
        warn: Callable[[str], None],
    ) -> None:
        self.dirs = dirs
        self.depth = depth
        self.collected = collected
        self.write = write
        self.warn = warn
        self.racy_ns = cache.racy_window_ns if cache else RACY_WINDOW_NS
        self.expected: dict[int, int] = {}  # files of each listed directory
        self.children: list[list[tuple[str, int]]] = [[]]
        self.stack: list[int | bytes] = [0]
        self.out: list[Buffer] = []
        self.out_bytes = 0
        self.fragments: FragmentWriter | None = None
        if cache is not None:
            try:
                self.fragments = cache.fragments.writer(scope)
            except OSError as exc:
                self._store_failed(exc)

    def growing(self) -> frozenset[tuple[int, int]]:
        """``(st_dev, st_ino)`` of the fragment file being written, if any (a cache
        directory inside the tree must not describe it)."""
        if self.fragments is None:
            return frozenset()
        return frozenset({self.fragments.identity()})

    def listed(self, index: int, nfiles: int) -> None:
        """Directory ``index`` has been listed: ``nfiles`` files, and its
        subdirectories are the entries of ``dirs`` added since the last call."""
        self.expected[index] = nfiles
        for sub in range(len(self.children), len(self.dirs)):
            self.children.append([])
            self.children[self.dirs[sub].parent].append((self.dirs[sub].name, sub))

    def advance(self) -> None:
        """Write out every directory that is complete, in order, up to the first
        that is not."""
        stack, out, collected = self.stack, self.out, self.collected
        while stack:
            item = stack[-1]
            if not isinstance(item, int):
                stack.pop()
                out.append(item)
                continue
            nfiles = self.expected.get(item)
            if nfiles is None or collected.counts.get(item, 0) < nfiles or item in collected.raw:
                break
            stack.pop()
            fragment = self._fragment(item)
            open_dir(self.depth[item], fragment, self.children[item], stack, out)
            self.out_bytes += len(fragment) if fragment else 0
            if self.out_bytes >= OUT_PIECE_BYTES:
                self._flush()

    def finish(self, hashed: int) -> None:
        """Write out the rest (every file is in) and store the fragment file."""
        self.advance()
        if self.stack:  # pragma: no cover - every directory is complete by now
            raise AssertionError("a directory was never completed")
        self.out.append(b"\n")
        try:
            self._flush()
        except BaseException:
            self.abort()
            raise
        if self.fragments is not None:
            writer, self.fragments = self.fragments, None
            if not hashed:
                writer.abort()  # nothing worth remembering
                return
            try:
                writer.commit()
            except OSError as exc:
                self._store_failed(exc)

    def abort(self) -> None:
        """Drop the fragment file being written."""
        if self.fragments is not None:
            self.fragments.abort()
            self.fragments = None

    def _fragment(self, index: int) -> bytes | None:
        # Join the directory's texts, and store them.
        parts = self.collected.texts.pop(index, None)
        if not parts:
            return None
        fragment = directory_text(parts)
        if self.fragments is not None:
            limit = time.time_ns() - self.racy_ns
            keys_text, stored, digests = stored_texts(parts, fragment, limit)
            try:
                self.fragments.add(self.collected.relpaths[index], keys_text, stored, digests)
            except OSError as exc:
                self.fragments = None  # (the writer dropped its file)
                self._store_failed(exc)
        return fragment

    def _flush(self) -> None:
        if self.out:
            pieces = self.out[:]
            self.out.clear()  # (the same list: advance holds it)
            self.out_bytes = 0
            self.write(pieces)

    def _store_failed(self, exc: OSError) -> None:
        self.warn(f"hash cache: cannot store directory fragments: {exc.strerror or exc}")
