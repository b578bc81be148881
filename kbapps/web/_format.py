"""Numbers, sizes, durations and name order as the pages show them.

Sizes and counts match ``app.js`` (``humanSize``, ``exactBytes``, ``plural``) so a row
reads the same whether the server or the script drew it.
"""

from __future__ import annotations

import re
import unicodedata
from decimal import ROUND_HALF_UP, Decimal

__all__ = ("duration", "exact_bytes", "human_size", "natural_key", "plural")

_UNITS = ("KB", "MB", "GB", "TB", "PB", "EB")
_DIGITS = re.compile(r"(\d+)")
_TENTH = Decimal("0.1")
_ONE = Decimal(1)


def human_size(size: int) -> str:
    """``734 KB``, ``1.3 MB``, ``12 B``: decimal units, three significant digits at most."""
    if size < 1000:
        return f"{size} B"
    value = float(size)
    unit = -1
    while value >= 999.95 and unit < len(_UNITS) - 1:
        value /= 1000
        unit += 1
    # As JavaScript's toFixed(1) and Math.round: the exact value, halves up
    # (Python's formatting rounds halves to even: 1.25 would show as 1.2).
    step = _TENTH if value < 10 else _ONE
    shown = Decimal(value).quantize(step, rounding=ROUND_HALF_UP)
    return f"{shown} {_UNITS[unit]}"


def exact_bytes(size: int) -> str:
    """``734,002 bytes``."""
    return f"{size:,} bytes"


def plural(count: int, word: str) -> str:
    """``1 file``, ``10,000 files``."""
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def duration(seconds: int) -> str:
    """``45 s``, ``12 min``, ``3 h 12 min``, ``2 d 4 h``: two units at most."""
    if seconds < 60:
        return f"{seconds} s"
    minutes, _ = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days:,} d {hours} h"


def natural_key(name: str) -> tuple[tuple[tuple[int, int, str], ...], str]:
    """Sort key: case- and accent-blind, digit runs by value, then the exact name.

    Close to the order the page's script uses (``Intl.Collator`` with ``numeric``), so
    the first page drawn by the server lists entries as the script will.
    """
    base = unicodedata.normalize("NFKD", name)
    base = "".join(c for c in base if not unicodedata.combining(c)).lower()
    parts: list[tuple[int, int, str]] = []
    for part in _DIGITS.split(base):
        if not part:
            continue
        if part.isdecimal():
            # By value without int(): a run of any length, compared by its length
            # without leading zeros, then digit by digit.
            digits = part.lstrip("0")
            parts.append((0, len(digits), digits))
        else:
            parts.append((1, 0, part))
    return tuple(parts), name
