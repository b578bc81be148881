"""The ``.prv`` and ``.prvdir`` pointer files: pure models, serializer and parser.

Strategy
--------
A ``.prv`` names one file's content by its SHA-1 (docs/formats.md §1); a ``.prvdir`` is a tree
of them (docs/formats.md §2). Both are JSON, compatible with the original tool
(``src/kbucket/kbnodeshareindexer.js``, ``computePrvObject`` and
``computePrvDirectoryObject``), which wrote them with ``JSON.stringify(obj, null, 4)``.

This module never touches the file system: callers hand in digests they computed
(``kbapps.hashing``) and get bytes back, or hand in bytes they read and get models
back. Three rules shape it:

* **An invalid model cannot exist.** ``Prv`` and ``PrvDir`` are frozen dataclasses that
  validate in ``__post_init__`` (STYLE rule 5); building one from bad values raises
  ``LocalProtocolError``. Entry names are checked here once, so every consumer (the
  download client writing files, the web page listing them) can trust them: no name is
  empty, starts with ``.``, or holds ``/``, ``\\`` or NUL, so a hostile ``.prvdir``
  cannot make a downloader write outside its target directory.
* **Reading is lenient where the original was, strict everywhere else.** Extra fields
  are ignored, any ``prv_version`` starting with ``0.`` and absolute ``original_path``
  values (which the original tool wrote) are accepted. Anything else that is wrong
  raises ``PrvFormatError`` (a ``RemoteProtocolError``) whose ``field`` names where,
  e.g. ``dirs["raw"].files["a.dat"].original_size``. Nothing else ever escapes the
  parser: not ``JSONDecodeError``, not ``RecursionError`` on absurdly nested input.
* **Everything is bounded and linear.** Input size, tree depth and entry count have
  limits (``PrvLimits``). Tree walks use explicit stacks, never recursion, so the
  depth limit is a choice rather than an accident of the interpreter's stack. The
  serializer writes the exact bytes ``json.dumps(obj, indent=4, ensure_ascii=False)``
  would, plus the final newline docs/formats.md §1 asks for, without its recursion.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from types import MappingProxyType
from typing import Any

from kbproto.chunks import ChunkSpec, parse_chunk_field
from kbproto.errors import LocalProtocolError, RemoteProtocolError
from kbproto.ids import Sha1

__all__ = (
    "FCS_HEAD_BYTES",
    "FCS_PREFIX",
    "MAX_NAME_BYTES",
    "MAX_PATH_CHARS",
    "PRV_VERSION",
    "Prv",
    "PrvDir",
    "PrvFormatError",
    "PrvLimits",
    "is_valid_entry_name",
    "make_prv",
    "parse_document",
    "parse_prv",
    "parse_prvdir",
    "serialize_prv",
    "serialize_prvdir",
)

#: The version string we write; the original tool's last version (docs/formats.md §1).
PRV_VERSION = "0.11"
#: ``original_fcs`` is this prefix followed by the SHA-1 of the file's first bytes.
FCS_PREFIX = "head1000-"
#: How many leading bytes ``original_fcs`` covers (the whole file if it is shorter).
FCS_HEAD_BYTES = 1000
#: NAME_MAX on common Linux file systems: no real entry name is longer.
MAX_NAME_BYTES = 255
#: Generous bound on ``original_path``: Linux PATH_MAX is 4096 bytes, and old files
#: hold absolute paths from other machines.
MAX_PATH_CHARS = 4096
#: ``prv_version`` is a short dotted string; anything longer is garbage.
_MAX_VERSION_CHARS = 32
#: A size must fit in a signed 64-bit file offset.
_MAX_SIZE = 2**63 - 1

_SHA1_RE = re.compile(r"[0-9a-f]{40}")
#: Characters that may not appear in a ``.prvdir`` entry name: path separators of
#: every platform and NUL.
_BAD_NAME_CHARS = re.compile(r"[/\\\x00]")
_ASCII_NAME_RE = re.compile(r"[^./\\\x00][^/\\\x00]{0,254}")
_DRIVE_RE = re.compile(r"[A-Za-z]:[\\/]")


@dataclass(frozen=True, slots=True, kw_only=True)
class PrvLimits:
    """Bounds applied when parsing ``.prv``/``.prvdir`` documents.

    Attributes:
        max_bytes: the largest document accepted. 512 MiB holds a ``.prvdir`` of about
            two million files (~250 bytes each); a ``.prv`` is under 5 KiB.
        max_depth: the deepest directory nesting accepted. Deeper trees are not
            realistic (a 256-deep path of 1-letter names is already 512 bytes) and
            the default stays well inside what ``json`` can decode.
        max_entries: the most files plus directories in one ``.prvdir``.
    """

    max_bytes: int = 512 * 1024 * 1024
    max_depth: int = 256
    max_entries: int = 5_000_000


_DEFAULT_LIMITS = PrvLimits()


class PrvFormatError(RemoteProtocolError):
    """A ``.prv``/``.prvdir`` document is malformed.

    Attributes:
        field: where the problem is, as a JSON path (``original_size``,
            ``dirs["a"].files["b.dat"].original_checksum``); empty for the whole
            document.
        problem: what is wrong with it, in a few words.
    """

    def __init__(self, field: str, problem: str) -> None:
        # A path through a deep tree can be long; the message keeps both ends.
        shown = field if len(field) <= 200 else f"{field[:80]}...{field[-100:]}"
        msg = f"{shown}: {problem}" if field else problem
        super().__init__(msg)
        self.field = field
        self.problem = problem


def _utf8_ok(text: str) -> bool:
    # Lone surrogates (from JSON "\ud800" escapes or undecodable file names) cannot be
    # written back as UTF-8, so a model holding one could not be serialized.
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_valid_entry_name(name: object) -> bool:
    """Return True if ``name`` may be a file or directory name in a ``.prvdir``.

    A valid name is a non-empty UTF-8-encodable string of at most 255 bytes that does
    not start with ``.`` and holds no ``/``, ``\\`` or NUL.
    """
    if type(name) is str and name.isascii():  # the common case, one regex call
        return _ASCII_NAME_RE.fullmatch(name) is not None
    if not isinstance(name, str) or not name or name[0] == ".":
        return False
    if _BAD_NAME_CHARS.search(name) is not None or not _utf8_ok(name):
        return False
    return len(name) <= MAX_NAME_BYTES // 4 or len(name.encode("utf-8")) <= MAX_NAME_BYTES


def _check_sha1(value: object) -> str | None:
    if not isinstance(value, str) or _SHA1_RE.fullmatch(value) is None:
        return "must be 40 lowercase hex digits"
    return None


def _check_size(value: object) -> str | None:
    if not isinstance(value, int) or isinstance(value, bool):
        return "must be an integer"
    if value < 0:
        return "must not be negative"
    if value > _MAX_SIZE:
        return "is too large"
    return None


def _check_path(value: object) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    if len(value) > MAX_PATH_CHARS:
        return f"is longer than {MAX_PATH_CHARS} characters"
    if "\x00" in value or not _utf8_ok(value):
        return "holds characters that are not valid text"
    return None


def _check_version(value: object) -> str | None:
    if not isinstance(value, str) or not value.startswith("0."):
        return 'must be a string starting with "0."'
    if len(value) > _MAX_VERSION_CHARS or not _utf8_ok(value):
        return "is not a valid version string"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Prv:
    """The pointer to one file's content (docs/formats.md §1).

    Attributes:
        sha1: SHA-1 of the whole file (``original_checksum``).
        size: file size in bytes (``original_size``).
        head_sha1: SHA-1 of the first 1000 bytes, or of the whole file if shorter
            (``original_fcs`` without its ``head1000-`` prefix).
        path: ``original_path``. Files we write hold a relative path; files written
            by the original tool may hold an absolute one, which is kept as read.
        version: ``prv_version``; any string starting with ``0.``.
        chunks: the optional ``chunks`` field (``kbproto.chunks``): the root of the
            file's chunk digests, or None (old ``.prv`` files, and any whose field a
            reader could not check: whole-file verification only).

    Raises:
        LocalProtocolError: if a value is malformed.
    """

    sha1: Sha1
    size: int
    head_sha1: Sha1
    path: str
    version: str = PRV_VERSION
    chunks: ChunkSpec | None = None

    def __post_init__(self) -> None:
        # Fast path: what we write and what we read is nearly always plain ASCII
        # with the current version; 100,000 files must validate in well under a second.
        size, path = self.size, self.path
        if (
            type(size) is int
            and 0 <= size <= _MAX_SIZE
            and type(self.sha1) is str
            and _SHA1_RE.fullmatch(self.sha1) is not None
            and type(self.head_sha1) is str
            and _SHA1_RE.fullmatch(self.head_sha1) is not None
            and type(path) is str
            and len(path) <= MAX_PATH_CHARS
            and path.isascii()
            and "\x00" not in path
            and self.version == PRV_VERSION
            and (self.chunks is None or type(self.chunks) is ChunkSpec)
        ):
            return
        if self.chunks is not None and not isinstance(self.chunks, ChunkSpec):
            raise LocalProtocolError(f"Prv.chunks must be a ChunkSpec: {self.chunks!r:.80}")
        for name, problem in (
            ("sha1", _check_sha1(self.sha1)),
            ("size", _check_size(self.size)),
            ("head_sha1", _check_sha1(self.head_sha1)),
            ("path", _check_path(self.path)),
            ("version", _check_version(self.version)),
        ):
            if problem is not None:
                raise LocalProtocolError(f"Prv.{name} {problem}: {getattr(self, name)!r:.80}")

    @property
    def fcs(self) -> str:
        """The ``original_fcs`` field as written: ``head1000-<head_sha1>``."""
        return FCS_PREFIX + self.head_sha1

    def to_json_object(self) -> dict[str, Any]:
        """Return the fields as a dict in the written order (for embedding in JSON):
        the original five, then ``chunks`` when present."""
        obj: dict[str, Any] = {
            "original_checksum": self.sha1,
            "original_size": self.size,
            "original_fcs": self.fcs,
            "original_path": self.path,
            "prv_version": self.version,
        }
        if self.chunks is not None:
            obj["chunks"] = self.chunks.to_json_object()
        return obj


def _is_relative_path(path: str) -> bool:
    if not path or path[0] in "/\\" or _DRIVE_RE.match(path) is not None:
        return False
    return all(is_valid_entry_name(part) for part in path.split("/"))


def make_prv(
    *, sha1: str, size: int, head_sha1: str, path: str, chunks_root: str | None = None
) -> Prv:
    """Build the ``.prv`` we write for a file whose digests the caller computed.

    Args:
        sha1: SHA-1 of the whole file, 40 lowercase hex digits.
        size: the number of bytes hashed.
        head_sha1: SHA-1 of the first ``FCS_HEAD_BYTES`` bytes.
        path: the file's name, or its ``/``-separated path relative to the directory
            of a ``.prvdir``. Never absolute (docs/formats.md §1: nothing about the machine).
        chunks_root: the root of the file's chunk digests (``kbproto.chunks``), for
            a ``chunks`` field of ``CHUNK_SIZE`` chunks; None for none.

    Returns:
        A ``Prv`` with ``prv_version`` ``0.11``.

    Raises:
        LocalProtocolError: if a digest is malformed or ``path`` is absolute, empty,
            or has a component that is not a valid entry name.
    """
    if not isinstance(path, str) or not _is_relative_path(path):
        raise LocalProtocolError(f"original_path must be a relative path: {path!r:.80}")
    chunks = None if chunks_root is None else ChunkSpec(root=chunks_root)
    return Prv(sha1=Sha1(sha1), size=size, head_sha1=Sha1(head_sha1), path=path, chunks=chunks)


def _freeze_entries(
    entries: Mapping[str, Any], kind: type, what: str
) -> MappingProxyType[str, Any]:
    if not isinstance(entries, Mapping):
        raise LocalProtocolError(f"PrvDir.{what} must be a mapping")
    for name, value in entries.items():
        if not is_valid_entry_name(name):
            raise LocalProtocolError(f"PrvDir.{what}: invalid entry name {name!r:.80}")
        if not isinstance(value, kind):
            raise LocalProtocolError(f"PrvDir.{what}[{name!r:.80}] must be a {kind.__name__}")
    # docs/formats.md §2: keys sorted. Sorting here makes equal trees compare and serialize equal
    # whatever order the caller inserted them in.
    return MappingProxyType(dict(sorted(entries.items())))


@dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class PrvDir:
    """A directory tree of ``.prv`` pointers (docs/formats.md §2).

    Attributes:
        files: entry name -> ``Prv``, sorted by name, read-only.
        dirs: entry name -> ``PrvDir``, sorted by name, read-only.

    A name may appear in both ``files`` and ``dirs`` only if the caller says so; the
    file system cannot produce that, so the constructor refuses it.

    Raises:
        LocalProtocolError: if a name is not a valid entry name, a value has the
            wrong type, or a name is both a file and a directory.
    """

    files: Mapping[str, Prv] = field(default_factory=dict)
    dirs: Mapping[str, PrvDir] = field(default_factory=dict)

    def __post_init__(self) -> None:
        files = _freeze_entries(self.files, Prv, "files")
        dirs = _freeze_entries(self.dirs, PrvDir, "dirs")
        if len(files) and len(dirs):
            both = files.keys() & dirs.keys()
            if both:
                name = min(both)
                raise LocalProtocolError(f"PrvDir: {name!r:.80} is both a file and a dir")
        object.__setattr__(self, "files", files)
        object.__setattr__(self, "dirs", dirs)

    # Equality and repr are written out because the generated ones recurse once per
    # level (several interpreter frames each), which a deep tree would overflow.
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PrvDir):
            return NotImplemented
        stack: list[tuple[PrvDir, PrvDir]] = [(self, other)]
        while stack:
            mine, theirs = stack.pop()
            if mine is theirs:
                continue
            if mine.files != theirs.files or mine.dirs.keys() != theirs.dirs.keys():
                return False
            stack.extend((sub, theirs.dirs[name]) for name, sub in mine.dirs.items())
        return True

    #: Unhashable: equality is structural over read-only but unhashable mappings.
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        files, dirs = self.count()
        return f"PrvDir(<{files} files, {dirs} dirs>)"

    def iter_files(self) -> Iterator[tuple[str, Prv]]:
        """Yield ``(relative path, Prv)`` for every file in the tree, depth first.

        Paths use ``/``; files of a directory come before its subdirectories, each in
        name order. Iterative, so any depth works.
        """
        stack: list[tuple[str, PrvDir]] = [("", self)]
        while stack:
            prefix, node = stack.pop()
            for name, prv in node.files.items():
                yield prefix + name, prv
            stack.extend(
                (f"{prefix}{name}/", sub) for name, sub in reversed(list(node.dirs.items()))
            )

    def count(self) -> tuple[int, int]:
        """Return ``(number of files, number of directories)`` in the whole tree."""
        files = dirs = 0
        stack: list[PrvDir] = [self]
        while stack:
            node = stack.pop()
            files += len(node.files)
            dirs += len(node.dirs)
            stack.extend(node.dirs.values())
        return files, dirs


# --- serializing -------------------------------------------------------------------


def _chunks_lines(spec: ChunkSpec, inner: str) -> str:
    """The ``chunks`` member as ``json.dumps(indent=4)`` writes it inside an object
    whose members are indented by ``inner`` (with the comma before it)."""
    deeper = inner + "    "
    return (
        f',\n{inner}"chunks": {{\n{deeper}"algorithm": {encode_basestring(spec.algorithm)},\n'
        f'{deeper}"size": {spec.size},\n{deeper}"root": "{spec.root}"\n{inner}}}'
    )


def _prv_lines(prv: Prv, indent: str, out: list[str]) -> None:
    inner = indent + "    "
    chunks = "" if prv.chunks is None else _chunks_lines(prv.chunks, inner)
    out.append(
        f'{{\n{inner}"original_checksum": "{prv.sha1}",\n'
        f'{inner}"original_size": {prv.size},\n'
        f'{inner}"original_fcs": "{FCS_PREFIX}{prv.head_sha1}",\n'
        f'{inner}"original_path": {encode_basestring(prv.path)},\n'
        f'{inner}"prv_version": {encode_basestring(prv.version)}{chunks}\n{indent}}}'
    )


def serialize_prv(prv: Prv) -> bytes:
    """Return the ``.prv`` file bytes: docs/formats.md §1 layout, UTF-8, final newline.

    The text is exactly ``json.dumps(prv.to_json_object(), indent=4,
    ensure_ascii=False) + "\\n"``.
    """
    out: list[str] = []
    _prv_lines(prv, "", out)
    out.append("\n")
    return "".join(out).encode("utf-8")


def serialize_prvdir(prvdir: PrvDir) -> bytes:
    """Return the ``.prvdir`` file bytes: docs/formats.md §2 layout, UTF-8, final newline.

    ``{"files": {...}, "dirs": {...}}`` at every level, names sorted, 4-space indent,
    exactly as ``json.dumps(..., indent=4, ensure_ascii=False)`` would write it, but
    without recursion, so any depth serializes.
    """
    out: list[str] = []
    # The stack holds either a directory to open at a given indent, or a literal
    # string to emit once everything pushed after it is written.
    stack: list[tuple[PrvDir, str] | str] = [(prvdir, "")]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        node, indent = item
        i1 = indent + "    "
        i2 = i1 + "    "
        out.append("{\n" + i1 + '"files": ')
        if node.files:
            out.append("{")
            first = True
            for name, prv in node.files.items():
                out.append(("\n" if first else ",\n") + i2 + encode_basestring(name) + ": ")
                first = False
                _prv_lines(prv, i2, out)
            out.append("\n" + i1 + "}")
        else:
            out.append("{}")
        out.append(",\n" + i1 + '"dirs": ')
        if not node.dirs:
            out.append("{}\n" + indent + "}")
            continue
        # Push in reverse so the first directory is written first.
        stack.append("\n" + i1 + "}\n" + indent + "}")
        names = list(node.dirs.items())
        for index in range(len(names) - 1, -1, -1):
            name, sub = names[index]
            stack.append((sub, i2))
            lead = "{\n" if index == 0 else ",\n"
            stack.append(lead + i2 + encode_basestring(name) + ": ")
    out.append("\n")
    return "".join(out).encode("utf-8")


# --- parsing -------------------------------------------------------------------------


def _load_object(data: bytes | str, limits: PrvLimits) -> dict[str, Any]:
    if not isinstance(data, bytes | bytearray | memoryview | str):
        raise PrvFormatError("", "document must be bytes or text")
    if len(data) > limits.max_bytes:
        raise PrvFormatError("", f"document is larger than {limits.max_bytes} bytes")
    if not isinstance(data, str):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PrvFormatError("", f"not UTF-8 text (byte {exc.start})") from None
    else:
        text = data
    # A byte-order mark is not JSON, but editors on some systems add one.
    text = text.removeprefix("\ufeff")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PrvFormatError("", f"not JSON: {exc.msg} (line {exc.lineno})") from None
    except RecursionError:
        raise PrvFormatError("", "JSON nested too deeply") from None
    except ValueError as exc:  # e.g. an integer with thousands of digits
        raise PrvFormatError("", f"not usable JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise PrvFormatError("", "must be a JSON object")
    return obj


def _chunks_of(obj: dict[str, Any], where: str, warnings: list[str] | None) -> ChunkSpec | None:
    # The optional field: one we cannot check is left out (with a warning), never an
    # error, so the file is still verified whole (kbproto.chunks).
    value = obj.get("chunks")
    if value is None:
        return None
    spec, problem = parse_chunk_field(value)
    if problem is not None and warnings is not None:
        field_name = f"{where}.chunks" if where else "chunks"
        warnings.append(f"{field_name} ignored (whole-file check only): {problem}")
    return spec


def _prv_from_object(obj: object, where: str = "", warnings: list[str] | None = None) -> Prv:
    # Errors name fields relative to this object; callers inside a .prvdir prefix them.
    # ``where`` names the entry for warnings about an ignored ``chunks`` field.
    if not isinstance(obj, dict):
        raise PrvFormatError("", "must be a JSON object")
    chunks = _chunks_of(obj, where, warnings) if "chunks" in obj else None
    # Let the model validate (its checks are the same); only when it refuses, go
    # field by field to name the culprit.
    fcs = obj.get("original_fcs")
    head = fcs[len(FCS_PREFIX) :] if type(fcs) is str and fcs.startswith(FCS_PREFIX) else None
    try:
        return Prv(
            sha1=obj.get("original_checksum"),  # type: ignore[arg-type]
            size=obj.get("original_size"),  # type: ignore[arg-type]
            head_sha1=head,  # type: ignore[arg-type]
            path=obj.get("original_path"),  # type: ignore[arg-type]
            version=obj.get("prv_version"),  # type: ignore[arg-type]
            chunks=chunks,
        )
    except LocalProtocolError:
        pass
    for key, check in (
        ("original_checksum", _check_sha1),
        ("original_size", _check_size),
        ("original_fcs", None),
        ("original_path", _check_path),
        ("prv_version", _check_version),
    ):
        if key not in obj:
            raise PrvFormatError(key, "missing")
        value = obj[key]
        if check is None:  # original_fcs
            ok = isinstance(value, str) and value.startswith(FCS_PREFIX)
            if not ok or _check_sha1(value[len(FCS_PREFIX) :]) is not None:
                raise PrvFormatError(key, f'must be "{FCS_PREFIX}" followed by a SHA-1')
        elif (problem := check(value)) is not None:
            raise PrvFormatError(key, problem)
    raise AssertionError("the model refused fields that all passed its checks")  # pragma: no cover


def parse_prv(
    data: bytes | str,
    *,
    limits: PrvLimits = _DEFAULT_LIMITS,
    warnings: list[str] | None = None,
) -> Prv:
    """Parse the bytes of a ``.prv`` file.

    Args:
        data: the whole document.
        limits: bounds on the input.
        warnings: if given, one line is appended per field read but ignored (a
            ``chunks`` field that cannot be checked: ``kbproto.chunks``).

    Returns:
        The ``Prv``; unknown fields are ignored.

    Raises:
        PrvFormatError: if the document is not a valid ``.prv``; ``field`` names the
            culprit. No other exception escapes.
    """
    return _prv_from_object(_load_object(data, limits), "", warnings)


def _entry_where(parents: list[tuple[int, str]], index: int) -> str:
    parts: list[str] = []
    while index > 0:
        parent, step = parents[index]
        parts.append(step)
        index = parent
    return ".".join(reversed(parts))


def _prvdir_from_object(
    obj: dict[str, Any], limits: PrvLimits, warnings: list[str] | None = None
) -> PrvDir:
    # Pass 1 (pre-order, explicit stack): check every directory object and remember
    # its parent, so pass 2 can build the frozen tree bottom-up without recursion.
    nodes: list[dict[str, Any]] = [obj]
    parents: list[tuple[int, str]] = [(-1, "")]
    names: list[str] = [""]
    depths: list[int] = [0]
    entries = 0
    stack = [0]
    while stack:
        index = stack.pop()
        node = nodes[index]
        for key in ("files", "dirs"):
            if key not in node:
                where = _entry_where(parents, index)
                raise PrvFormatError(f"{where}.{key}" if where else key, "missing")
            if not isinstance(node[key], dict):
                where = _entry_where(parents, index)
                raise PrvFormatError(f"{where}.{key}" if where else key, "must be a JSON object")
        entries += len(node["files"]) + len(node["dirs"])
        if entries > limits.max_entries:
            raise PrvFormatError("", f"more than {limits.max_entries} entries")
        for name, sub in node["dirs"].items():
            if name in node["files"]:
                where = _entry_where(parents, index)
                step = f"dirs[{json.dumps(name)}]"
                raise PrvFormatError(f"{where}.{step}" if where else step, "is also a file")
            child = len(nodes)
            parents.append((index, f"dirs[{json.dumps(name)}]"))
            names.append(name)
            depths.append(depths[index] + 1)
            if depths[child] > limits.max_depth:
                raise PrvFormatError(_entry_where(parents, child), "directories nested too deeply")
            if not isinstance(sub, dict):
                raise PrvFormatError(_entry_where(parents, child), "must be a JSON object")
            nodes.append(sub)
            stack.append(child)
    # Pass 2: children always come after their parent in ``nodes``, so building in
    # reverse order finds every subdirectory already built.
    built: list[PrvDir | None] = [None] * len(nodes)
    children: list[dict[str, PrvDir]] = [{} for _ in nodes]
    for index in range(len(nodes) - 1, -1, -1):
        node = nodes[index]
        files: dict[str, Prv] = {}
        for name, value in node["files"].items():
            try:
                if type(value) is dict and "chunks" in value:
                    # The entry's name only when a warning may need it (rare).
                    where = _entry_where(parents, index)
                    step = f"files[{json.dumps(name)}]"
                    entry = ".".join(part for part in (where, step) if part)
                    files[name] = _prv_from_object(value, entry, warnings)
                else:
                    files[name] = _prv_from_object(value)
            except PrvFormatError as exc:
                where = _entry_where(parents, index)
                step = f"files[{json.dumps(name)}]"
                full = ".".join(part for part in (where, step, exc.field) if part)
                raise PrvFormatError(full, exc.problem) from None
        try:
            built_node = PrvDir(files=files, dirs=children[index])
        except LocalProtocolError:
            raise _bad_name_error(node, _entry_where(parents, index)) from None
        built[index] = built_node
        if index > 0:
            children[parents[index][0]][names[index]] = built_node
    root = built[0]
    assert root is not None
    return root


def _bad_name_error(node: dict[str, Any], where: str) -> PrvFormatError:
    for key in ("files", "dirs"):
        for name in node[key]:
            if not is_valid_entry_name(name):
                step = f"{key}[{json.dumps(name)[:80]}]"
                return PrvFormatError(
                    f"{where}.{step}" if where else step,
                    "invalid name (empty, starts with '.', or holds / \\ or NUL)",
                )
    raise AssertionError("PrvDir refused a node with valid names")  # pragma: no cover


def parse_prvdir(
    data: bytes | str,
    *,
    limits: PrvLimits = _DEFAULT_LIMITS,
    warnings: list[str] | None = None,
) -> PrvDir:
    """Parse the bytes of a ``.prvdir`` file.

    Args:
        data: the whole document.
        limits: bounds on size, depth and entry count.
        warnings: as for ``parse_prv``; each line names the entry.

    Returns:
        The ``PrvDir``; extra fields at any level are ignored.

    Raises:
        PrvFormatError: if the document is not a valid ``.prvdir`` (not JSON, a
            missing ``files``/``dirs`` object, an unsafe name, a bad ``.prv`` inside,
            a limit crossed); ``field`` names the culprit. No other exception escapes.
    """
    return _prvdir_from_object(_load_object(data, limits), limits, warnings)


def parse_document(
    data: bytes | str,
    *,
    limits: PrvLimits = _DEFAULT_LIMITS,
    warnings: list[str] | None = None,
) -> Prv | PrvDir:
    """Parse either kind of document, telling them apart by their fields.

    A document with ``original_checksum`` is a ``.prv``; otherwise it must be a
    ``.prvdir``. ``warnings`` as for ``parse_prv``.

    Raises:
        PrvFormatError: as ``parse_prv`` or ``parse_prvdir``.
    """
    obj = _load_object(data, limits)
    if "original_checksum" in obj:
        return _prv_from_object(obj, "", warnings)
    return _prvdir_from_object(obj, limits, warnings)
