"""What is at each target before anything is written: nothing, the content, or a conflict.

The rule (``docs/security.md``): a download never replaces something silently. A
target already holding the content is kept as it is; anything else at a target's
name (a file with other content, a symlink, a special file) is a conflict that stops
the whole download before any change, unless ``--force`` (``ClientOptions.force``)
allows replacing it: the name is then replaced, never written through. A directory
at a target's name, or a directory on the way that is a symlink or a file, is never
replaced, ``--force`` or not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kbapps.download.places import Occupant, Place
from kbapps.download.present import present_files
from kbproto.prv import Prv

__all__ = ("Conflict", "Survey", "survey")


@dataclass(frozen=True, slots=True)
class Conflict:
    """Something in a target's way.

    Attributes:
        reason: one line: the path and what is there.
        replaceable: ``--force`` may replace it (a file or a symlink at the name).
    """

    reason: str
    replaceable: bool


@dataclass(frozen=True, slots=True)
class Survey:
    """The targets, sorted by what is at them (keys: the labels passed in).

    Attributes:
        present: targets already holding their content (kept, not downloaded).
        conflicts: targets with something else in the way.
    """

    present: frozenset[str]
    conflicts: dict[str, Conflict]


def survey(targets: Sequence[tuple[str, Place, Prv]], hash_cache_path: Path | None) -> Survey:
    """Look at every ``(label, place, prv)`` target; nothing is written or followed.

    A regular file of the right size is hashed (through the per-user hash cache at
    ``hash_cache_path``) to tell the content from other content.
    """
    conflicts: dict[str, Conflict] = {}
    files: list[tuple[str, Path, Prv]] = []
    for label, place, prv in targets:
        occupant, reason = place.inspect()
        if occupant is Occupant.FILE:
            files.append((label, place.path, prv))
        elif occupant is Occupant.OTHER:
            conflicts[label] = Conflict(reason, replaceable=True)
        elif occupant is not Occupant.NOTHING:  # a directory, or a blocked way
            conflicts[label] = Conflict(reason, replaceable=False)
    present = present_files(files, hash_cache_path)
    for label, path, _prv in files:
        if label not in present:
            conflicts[label] = Conflict(f"{path} holds other content", replaceable=True)
    return Survey(present=frozenset(present), conflicts=conflicts)
