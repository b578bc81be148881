"""Names of the files a command makes beside the one it writes, made to fit the file system.

A download writes ``OUT.part`` and ``OUT.part.json`` beside OUT, ``kb-prv-create``
writes its document to a temporary name beside OUT first, and both make temporary
files with random names. A file system limits one name to ``NAME_MAX`` bytes (255 on
Linux's usual file systems), so OUT's own name may fit while ``OUT.part`` does not.
``fitting_name`` keeps the usual name whenever it fits and otherwise shortens the
start: the name's first bytes, cut at a character boundary, then ``~`` and 16 hex
digits of the SHA-1 of the whole name, then the suffix. The same OUT always gives the
same name (a later run finds its ``.part`` again), and two OUT names in one directory
give two names (``docs/commands.md``, "Partial files").
"""

from __future__ import annotations

import os

__all__ = ("DEFAULT_NAME_MAX", "fitting_name", "name_max")

#: ``NAME_MAX`` where the file system cannot be asked: Linux's ext4, xfs, btrfs, tmpfs.
DEFAULT_NAME_MAX = 255
#: Hex digits of the name's SHA-1 in a shortened name: 64 bits, no collision in practice
#: between the few long names of one directory.
_HASH_DIGITS = 16


def name_max(directory: int | str | os.PathLike[str]) -> int:
    """The longest name, in bytes, the file system of ``directory`` (an open
    descriptor or a path) allows; ``DEFAULT_NAME_MAX`` if it cannot say."""
    try:
        if isinstance(directory, int):
            limit = os.fpathconf(directory, "PC_NAME_MAX")
        else:
            limit = os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError):
        return DEFAULT_NAME_MAX
    return limit if limit > 0 else DEFAULT_NAME_MAX


def fitting_name(name: str, suffix: str, limit: int, *, reserve: int = 0) -> str:
    """``name + suffix`` if it and ``reserve`` more bytes fit in ``limit`` bytes, else a
    shortened name that does (see the module docstring).

    Args:
        name: the name the file belongs to (OUT's name), one path component.
        suffix: what marks the file (``.part``).
        limit: the longest name allowed, in bytes (``name_max``).
        reserve: bytes a name derived from this one appends (``.json`` for the
            sidecar of a ``.part``), so that it fits too.

    Raises:
        ValueError: ``limit`` is too small for any shortened name.
    """
    encoded = os.fsencode(name)
    room = limit - reserve - len(os.fsencode(suffix))
    if len(encoded) <= room:
        return name + suffix
    import hashlib  # here: kb-prv-create's cached runs never need it (start-up time)

    digest = hashlib.sha1(encoded).hexdigest()[:_HASH_DIGITS]
    keep = room - len(digest) - 1
    if keep < 0:
        raise ValueError(f"no name of {limit} bytes holds {suffix!r} and a hash")
    # Cut at a character boundary: never between the bytes of one UTF-8 character.
    while 0 < keep < len(encoded) and encoded[keep] & 0xC0 == 0x80:
        keep -= 1
    return f"{os.fsdecode(encoded[:keep])}~{digest}{suffix}"
