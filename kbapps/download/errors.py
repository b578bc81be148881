"""What can go wrong in a download, as exceptions carrying the command's exit code.

``ClientError`` and its subclasses are what ``kbapps.download`` raises to its callers;
``SourceError`` and its subclasses stay inside the package: one source failed, and the
next is tried.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = (
    "EXIT_BAD_INPUT",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "BadInputError",
    "ClientError",
    "ConflictError",
    "DownloadFailedError",
    "HubUnreachableError",
    "NotFoundError",
    "SourceError",
    "SourceFailure",
    "Unreachable",
    "WrongBytes",
)

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_BAD_INPUT = 2
EXIT_UNREACHABLE = 3


class ClientError(Exception):
    """A download or find that cannot succeed; ``exit_code`` is the command's exit code.

    Attributes:
        message: one line saying what went wrong.
        exit_code: 1 not found, 2 bad input, 3 unreachable / no source worked.
    """

    exit_code = EXIT_UNREACHABLE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadInputError(ClientError):
    """The arguments are unusable: a bad hub URL, an OUT that cannot be written."""

    exit_code = EXIT_BAD_INPUT


class ConflictError(BadInputError):
    """OUT (or files inside a ``.prvdir``'s OUT) hold other content; nothing was changed.

    Attributes:
        conflicts: one line per file in the way (its path and what it holds).
    """

    def __init__(self, message: str, conflicts: Sequence[str]) -> None:
        super().__init__(message)
        self.conflicts = tuple(conflicts)


class NotFoundError(ClientError):
    """The hub answered that no node of the network holds the content."""

    exit_code = EXIT_NOT_FOUND


class HubUnreachableError(ClientError):
    """The hub could not be asked (connect, timeout, error status, unusable answer)."""

    exit_code = EXIT_UNREACHABLE


@dataclass(frozen=True, slots=True)
class SourceFailure:
    """One source that did not deliver, and why (one line)."""

    url: str
    error: str


class DownloadFailedError(ClientError):
    """Every source failed; ``failures`` lists each source and its error, in order."""

    exit_code = EXIT_UNREACHABLE

    def __init__(self, message: str, failures: Sequence[SourceFailure]) -> None:
        super().__init__(message)
        self.failures = tuple(failures)


class SourceError(Exception):
    """This source failed; try the next one (never leaves the package)."""


class WrongBytes(SourceError):
    """The bytes on disk do not hash to what the ``.prv`` says."""


class Unreachable(SourceError):
    """No response at all: connect refused or timed out, or no answer."""
