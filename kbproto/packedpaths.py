"""A direct share child's ``(path, size)`` per content id, packed into a few bytes.

Strategy
--------
A hub answers finds for its direct shares itself (docs/protocol.md §6), so it keeps,
for each content id a share reports, the ``(path, size)`` it reported. Files of a lab
share sit by the thousand in few directories (``run42/img_000123.tif``), so a path is
split at its last ``/``: the directory part is interned once per child, with a
reference count (freed with its last file), and each entry packs into the bytes a
``kbproto.contenttable.ContentTable`` record carries as its tail::

    varint(size) varint(directory number) file name (UTF-8)

A short name costs the hub its own length plus three or four bytes, instead of a
Python ``str`` and ``tuple`` (~120 bytes) per entry. What the interned directories
take (``held_bytes``) is charged to the child's index quota (``kbproto.budget``), so
a share that puts every file in a directory of its own pays for them.
"""

from __future__ import annotations

from kbproto.budget import DIR_BYTES
from kbproto.contenttable import read_varint, varint

__all__ = ("PackedPaths",)

#: One-byte varints, ready-made.
_BYTE = [bytes((value,)) for value in range(0x80)]
#: Lone surrogates can come in through JSON escapes; keep them round-trip exact.
_ERRORS = "surrogatepass"


class PackedPaths:
    """Packs one child's ``(path, size)`` entries, interning their directories."""

    __slots__ = ("_dirs", "_free", "_numbers", "_refs", "held_bytes")

    def __init__(self) -> None:
        self._dirs: list[str] = []
        self._refs: list[int] = []
        self._numbers: dict[str, int] = {}
        self._free: list[int] = []
        #: Bytes the interned directories cost (``kbproto.budget.DIR_BYTES`` each, and
        #: their names).
        self.held_bytes = 0

    @property
    def directories(self) -> int:
        """Directories interned now."""
        return len(self._numbers)

    def pack(self, path: str, size: int) -> bytes:
        """``path`` and ``size`` as one tail; holds a reference to the directory until
        ``release`` of the tail."""
        cut = path.rfind("/") + 1
        directory = path[:cut]
        number = self._numbers.get(directory)
        if number is None:
            if self._free:
                number = self._free.pop()
                self._dirs[number] = directory
            else:
                number = len(self._dirs)
                self._dirs.append(directory)
                self._refs.append(0)
            self._numbers[directory] = number
            self.held_bytes += _dir_cost(directory)
        self._refs[number] += 1
        # Most shares have fewer than 128 directories: their number is one byte.
        code = _BYTE[number] if number < 0x80 else varint(number)
        return varint(size) + code + path[cut:].encode("utf-8", _ERRORS)

    def unpack(self, tail: bytes) -> tuple[str, int]:
        """The ``(path, size)`` of a tail from ``pack``."""
        size, offset = read_varint(tail, 0)
        number, offset = read_varint(tail, offset)
        return self._dirs[number] + tail[offset:].decode("utf-8", _ERRORS), size

    def release(self, tail: bytes) -> None:
        """The entry ``tail`` is gone: drop its directory's reference."""
        _size, offset = read_varint(tail, 0)
        number, _ = read_varint(tail, offset)
        self._refs[number] -= 1
        if not self._refs[number]:
            self.held_bytes -= _dir_cost(self._dirs[number])
            del self._numbers[self._dirs[number]]
            self._dirs[number] = ""
            self._free.append(number)


def _dir_cost(directory: str) -> int:
    """Bytes one interned ``directory`` costs."""
    return DIR_BYTES + len(directory.encode("utf-8", _ERRORS))
