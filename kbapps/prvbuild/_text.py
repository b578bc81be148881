"""The ``.prvdir`` text, written straight from digests, and the fragment records.

Building a frozen ``Prv`` per file and a ``PrvDir`` per directory, then serializing
them, costs several microseconds per file; a cached re-run of a big tree must cost
little more than listing it. So the text of each directory's ``"files"`` object is
written directly (``files_fragment``, ``segment_texts``: byte-identical to
``serialize_prvdir``, which the tests check on random trees) and the directories are
joined around them (``assemble``).

Beside its text, a directory's fragment holds its key text (every file's name, dev,
ino, size and mtime_ns: ``KEY_PART``) and its files' digests (sha1, head_sha1 and the
root of its chunk digests: ``DIGESTS_HEX`` hex digits per file); ``stored_digests``
reads them back as a table by key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kbapps.prvbuild._common import (
    CHUNK_ALGORITHM,
    CHUNK_SIZE,
    DIGESTS_HEX,
    FCS_PREFIX,
    PRV_VERSION,
    Key,
    Stored,
)

if TYPE_CHECKING:
    from kbapps.hashing import Buffer, Fragments
    from kbapps.prvbuild._scan import ScannedDir

try:
    # The C function behind json.encoder's: importing the json package to reach it
    # costs ~4 ms of every kb-prv-create start-up.
    from _json import encode_basestring
except ImportError:  # pragma: no cover - not CPython
    from json.encoder import encode_basestring


_VERSION_TEXT = encode_basestring(PRV_VERSION)
_ALGORITHM_TEXT = encode_basestring(CHUNK_ALGORITHM)


def files_fragment(
    depth: int, relbase: str, entries: Sequence[tuple[str, str, str, int, str]]
) -> str:
    """Return the entries of one directory's ``"files"`` object as ``serialize_prvdir``
    writes them (without the braces around them), for a directory ``depth`` levels
    below the root whose relative path is ``relbase``.

    Args:
        depth: 0 for the root.
        relbase: the directory's ``/``-separated path relative to the root ("" for it).
        entries: ``(name, sha1, head_sha1, size, chunk root)``, sorted by name.
    """
    template, prefix = _entry_template(depth, relbase)
    return ",\n".join(
        [
            template
            % (encode_basestring(name), sha1, size, head, encode_basestring(prefix + name), root)
            for name, sha1, head, size, root in entries
        ]
    )


def _entry_template(depth: int, relbase: str) -> tuple[str, str]:
    # The fixed parts of every entry of one directory, formatted once per directory:
    # (template taking name, sha1, size, head, original_path, chunk root; prefix of
    # the paths). The chunks member is kbproto.prv's, as json.dumps(indent=4) nests it.
    i2 = " " * (8 * depth + 8)
    inner = i2 + "    "
    deeper = inner + "    "
    template = (
        f'{i2}%s: {{\n{inner}"original_checksum": "%s",\n{inner}"original_size": %d,\n'
        f'{inner}"original_fcs": "{FCS_PREFIX}%s",\n{inner}"original_path": %s,\n'
        f'{inner}"prv_version": {_VERSION_TEXT},\n'
        f'{inner}"chunks": {{\n{deeper}"algorithm": {_ALGORITHM_TEXT},\n'
        f'{deeper}"size": {CHUNK_SIZE},\n{deeper}"root": "%s"\n{inner}}}\n{i2}}}'
    )
    return template, (f"{relbase}/" if relbase else "")


#: One file's part of a directory's key text: name, then dev, ino, size, mtime_ns.
#: NUL ends each part: no name holds one, so the text maps back to one listing.
KEY_PART = "%s\0%d %d %d %d\0"


def key_bytes(text: str) -> bytes:
    # surrogatepass: a name the file system gave as undecodable bytes still compares.
    return text.encode("utf-8", "surrogatepass")


def stored_digests(
    known: Fragments,
) -> dict[Key, Stored]:
    """Return ``key -> (sha1, head_sha1, chunk root)`` for every file of a tree's
    stored fragments (from each directory's key text and digests; see
    ``segment_texts``)."""
    table: dict[Key, Stored] = {}
    for stored in known.values():
        try:
            keys_text, _, digests = stored
            parts = str(keys_text, "utf-8", "surrogatepass").split("\0")
            hexes = str(digests, "ascii")
        except (ValueError, TypeError):
            continue  # not ours: ignore it
        for position in range(len(parts) // 2):
            numbers = parts[2 * position + 1].split(" ")
            if len(numbers) != 4:
                break
            at = DIGESTS_HEX * position
            key = (int(numbers[0]), int(numbers[1]), int(numbers[2]), int(numbers[3]))
            table[key] = (hexes[at : at + 40], hexes[at + 40 : at + 80], hexes[at + 80 : at + 144])
    return table


def quiet_only(keys_text: bytes, digests: bytes, limit: int) -> tuple[bytes, bytes]:
    """Return the key text and digests of a directory without its files modified
    after ``limit`` (mtime_ns)."""
    parts = keys_text.decode("utf-8", "surrogatepass").split("\0")
    hexes = digests.decode("ascii")
    kept_keys: list[str] = []
    kept_digests: list[str] = []
    for position in range(len(parts) // 2):
        numbers = parts[2 * position + 1]
        if int(numbers.rsplit(" ", 1)[1]) <= limit:
            kept_keys.append(f"{parts[2 * position]}\0{numbers}\0")
            kept_digests.append(hexes[DIGESTS_HEX * position : DIGESTS_HEX * (position + 1)])
    return key_bytes("".join(kept_keys)), "".join(kept_digests).encode("ascii")


def directory_text(parts: list[tuple[Any, ...]]) -> bytes:
    """Put a directory's segment texts in directory order; return its entries text."""
    parts.sort(key=_first_job)
    return b",\n".join([part[1] for part in parts if part[1]])


def stored_texts(
    parts: Sequence[tuple[Any, ...]], fragment: bytes, limit: int
) -> tuple[bytes, bytes, bytes]:
    """What the cache keeps of a directory: ``(keys text, fragment, digests)``.

    A file modified after ``limit`` (within the racy window) may change again within
    the same mtime tick: then the directory keeps no fragment, and such files no digest
    (the others keep theirs).
    """
    keys_text = b"".join([part[2] for part in parts])
    digests = b"".join([part[3] for part in parts])
    if max([part[4] for part in parts]) <= limit:
        return keys_text, fragment, digests
    keys_text, digests = quiet_only(keys_text, digests, limit)
    return keys_text, b"", digests


def _first_job(part: tuple[Any, ...]) -> int:
    """The sort key of a segment's texts: its first job (files in directory order)."""
    return int(part[0])


def segment_texts(
    records: Sequence[tuple[Any, ...]], depth: int, relbase: str
) -> tuple[bytes, bytes, bytes, int]:
    """Return the ``.prvdir`` entries text, the key text, the digests text (sha1,
    head_sha1 and chunk root, ``DIGESTS_HEX`` hex digits per file) and the newest mtime
    of records ``(job, name, sha1, head, size, dev, ino, key size, mtime_ns, chunk
    root)`` of one directory, in name order."""
    template, prefix = _entry_template(depth, relbase)
    text = ",\n".join(
        [
            template
            % (encode_basestring(r[1]), r[2], r[4], r[3], encode_basestring(prefix + r[1]), r[9])
            for r in records
        ]
    )
    keys_text = "".join([KEY_PART % (r[1], r[5], r[6], r[7], r[8]) for r in records])
    digests = "".join([r[2] + r[3] + r[9] for r in records])
    newest = max([r[8] for r in records], default=0)
    return text.encode("utf-8"), key_bytes(keys_text), digests.encode("ascii"), newest


def assemble(
    dirs: Sequence[ScannedDir], depth: list[int], fragments: list[Buffer | None]
) -> list[Buffer]:
    """Return the whole document as pieces: the same layout and order as
    ``serialize_prvdir``, from the directory list and each directory's entries text
    (None or empty for a directory without files)."""
    children: list[list[tuple[str, int]]] = [[] for _ in dirs]
    for index in range(1, len(dirs)):
        children[dirs[index].parent].append((dirs[index].name, index))
    out: list[Buffer] = []
    stack: list[int | bytes] = [0]
    while stack:
        item = stack.pop()
        if isinstance(item, int):
            open_dir(depth[item], fragments[item], children[item], stack, out)
        else:
            out.append(item)
    out.append(b"\n")
    return out


def open_dir(
    depth: int,
    fragment: Buffer | None,
    subdirs: list[tuple[str, int]],
    stack: list[int | bytes],
    out: list[Buffer],
) -> None:
    """One step of ``assemble``: append a directory's text up to its first
    subdirectory to ``out``, and push the rest (each subdirectory's index after the
    text that leads to it, then the closing text) on ``stack``, last first.

    Args:
        depth: the directory's depth (0 for the root).
        fragment: its entries text.
        subdirs: ``(name, index)`` of its subdirectories, in any order (sorted here).
        stack: what is left to write, popped from the end.
        out: the pieces written so far.
    """
    indent = " " * (8 * depth)
    i1 = indent + "    "
    if fragment:
        out.append(f'{{\n{i1}"files": {{\n'.encode())
        out.append(fragment)
        out.append(f'\n{i1}}},\n{i1}"dirs": '.encode())
    else:
        out.append(f'{{\n{i1}"files": {{}},\n{i1}"dirs": '.encode())
    if not subdirs:
        out.append(("{}\n" + indent + "}").encode())
        return
    subdirs.sort()
    i2 = i1 + "    "
    stack.append(("\n" + i1 + "}\n" + indent + "}").encode())
    for position in range(len(subdirs) - 1, -1, -1):
        name, sub = subdirs[position]
        stack.append(sub)
        lead = "{\n" if position == 0 else ",\n"
        stack.append((lead + i2 + encode_basestring(name) + ": ").encode("utf-8"))
