"""What a download returns (``DownloadResult``, ``PrvDirResult``) and the events it reports.

Events (``on_event``) are plain JSON-ready dicts, one per happening, with an ``"event"``
key: ``source`` (a URL is tried), ``progress`` (rate-limited), ``done`` (a file is in
place), ``error`` (a source failed, or with ``"fatal": true`` a file failed),
``dropped`` (one of several sources used at once failed and was dropped),
``warning`` (the hub's size disagrees with the ``.prv``), ``resume`` (a ``.part`` left
by an earlier run is continued), ``kept`` (after Ctrl+C: a ``.part`` kept for the next
run) and, for a ``.prvdir``, ``finished``. ``kb-prv-download --json`` prints them as
JSON Lines (``docs/commands.md`` lists their fields).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kbapps.download.errors import EXIT_OK, ClientError, DownloadFailedError, SourceFailure

__all__ = (
    "DownloadResult",
    "EventSink",
    "PrvDirResult",
    "done_event",
    "error_event",
    "kept_event",
    "no_events",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class DownloadResult:
    """One file in place.

    Attributes:
        path: where it is (OUT, or the file inside the OUT directory).
        sha1: its content id.
        size: its size.
        origin: ``network``, ``cache`` (the content cache), ``part`` (a complete
            ``.part`` found on disk), ``present`` (already there, skipped), ``copy``
            (copied from an identical file of the same ``.prvdir``) or ``empty``.
        url: the source that delivered the last bytes (network only).
        resumed_from: bytes already on disk when the successful source started.
        transferred: bytes received from the network for this file.
        failures: sources that failed before one worked (or were dropped).
        sources: ``(url, bytes)`` each source delivered, for a file fetched from
            several at once (``kbapps.download.parallel``); empty otherwise.
    """

    path: Path
    sha1: str
    size: int
    origin: str
    url: str | None = None
    resumed_from: int = 0
    transferred: int = 0
    failures: tuple[SourceFailure, ...] = ()
    sources: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class PrvDirResult:
    """The outcome of a ``.prvdir`` download.

    Attributes:
        done: files in place (downloaded, copied or skipped).
        failed: ``(relative path, error)`` for every file that could not be fetched.
    """

    done: tuple[DownloadResult, ...]
    failed: tuple[tuple[str, ClientError], ...]

    @property
    def exit_code(self) -> int:
        """0 if every file is in place, else the worst exit code among the failures."""
        return max((err.exit_code for _, err in self.failed), default=EXIT_OK)


#: Receives events (JSON-ready dicts with an ``"event"`` key).
EventSink = Callable[[dict[str, Any]], None]


def no_events(event: dict[str, Any]) -> None:
    """The ``EventSink`` that drops every event."""
    del event


def done_event(result: DownloadResult, label: str) -> dict[str, Any]:
    """The ``done`` event of ``result`` (``label``: the path the user knows it by)."""
    event: dict[str, Any] = {
        "event": "done",
        "path": label,
        "sha1": result.sha1,
        "size": result.size,
        "from": result.origin,
    }
    if result.url is not None:
        event["url"] = result.url
        event["resumed_from"] = result.resumed_from
        event["transferred"] = result.transferred
    if result.sources:
        event["sources"] = dict(result.sources)
    return event


def kept_event(label: str, part_label: str, kept: int, size: int) -> dict[str, Any]:
    """The ``kept`` event: a cancelled download (Ctrl+C) of ``label`` left ``kept`` of
    its ``size`` bytes in the partial file ``part_label``, for the next run."""
    return {"event": "kept", "path": label, "part": part_label, "bytes": kept, "size": size}


def error_event(label: str, sha1: str, exc: ClientError) -> dict[str, Any]:
    """The fatal ``error`` event of a file that could not be fetched."""
    event: dict[str, Any] = {
        "event": "error",
        "fatal": True,
        "path": label,
        "sha1": sha1,
        "message": exc.message,
        "exit_code": exc.exit_code,
    }
    if isinstance(exc, DownloadFailedError):
        event["sources"] = [{"url": f.url, "error": f.error} for f in exc.failures]
    return event
