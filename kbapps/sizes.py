"""Sizes and rates as people type them: ``500M``, ``20G``, ``1.5GiB``, ``4096``.

One grammar for every option that takes bytes (``--cache-size``, ``--min-speed``,
``--max-upload-rate``): a number, then optionally K, M, G or T (powers of 1024), then
optionally ``B`` or ``iB``; case and surrounding blanks do not matter.
"""

from __future__ import annotations

import re

__all__ = ("size_in_bytes",)

_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?")
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def size_in_bytes(text: str) -> int | None:
    """The bytes ``text`` names (fractions of a byte dropped), or None if it is not a
    size."""
    match = _SIZE_RE.fullmatch(text.strip().upper())
    if match is None:
        return None
    return int(float(match.group(1)) * _UNITS[match.group(2)])
