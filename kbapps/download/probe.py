"""One source first: a large file's download starts on the one-source path and stops
it for the parallel one only when ``SourceRamp`` says more sources would help.

``one_source_first`` runs ``download_from_sources`` beside a watcher that reads the
clocks and the part's size every ``_TICK`` seconds and feeds them to a
``SourceRamp``. When the rule answers yes, the watcher cancels the transfer: the bytes
received so far are hashed and written (``Writer.close`` is shielded), so the part
holds a verified prefix, which ``download_in_pieces`` keeps (its whole units).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from kbapps.download.errors import SourceFailure
from kbapps.download.options import ClientOptions
from kbapps.download.partfile import PartFile
from kbapps.download.progress import Reporter
from kbapps.download.ramp import Reading, SourceRamp
from kbapps.download.results import EventSink
from kbapps.download.transfer import DeadOrigins, download_from_sources
from kbtransport.http_client import HttpClient

__all__ = ("Switched", "cpu_demand", "one_source_first")

#: Seconds between two readings.
_TICK = 0.1


@dataclass(frozen=True, slots=True)
class Switched:
    """The one-source transfer was stopped to engage more sources.

    Attributes:
        url: the URL it was reading from (None if none was asked yet).
        offset: the part's verified prefix then, in bytes.
        failures: the sources that failed before the switch, each with why.
    """

    url: str | None
    offset: int
    failures: tuple[SourceFailure, ...] = ()


def cpu_demand() -> float:
    """The CPU seconds this process used, plus, where Linux tells
    (``/proc/self/task/*/schedstat``, its second field), the seconds its threads were
    ready to run but waited for a CPU taken by other processes: on a loaded machine a
    client that wants the CPU and does not get it is still the bottleneck."""
    total = time.process_time()
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return total  # not Linux: waits are not counted
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/schedstat", "rb") as stats:
                total += int(stats.read().split()[1]) / 1e9
        except (OSError, ValueError, IndexError):
            continue  # the thread ended while read: the others still count
    return total


def _reading(part: PartFile) -> Reading:
    return Reading(time.monotonic(), cpu_demand(), part.offset)


async def _watch(ramp: SourceRamp, part: PartFile, transfer: anyio.CancelScope) -> None:
    while True:
        await anyio.sleep(_TICK)
        if ramp.feed(_reading(part)):
            transfer.cancel()
            return


async def one_source_first(
    client: HttpClient,
    sources: Sequence[str],
    part: PartFile,
    options: ClientOptions,
    reporter: Reporter,
    emit: EventSink,
    label: str,
    dead: DeadOrigins,
) -> tuple[str, int, int, list[SourceFailure]] | Switched:
    """Download ``part`` from ``sources`` one at a time (``download_from_sources``)
    until it is done or a ``SourceRamp`` fed from now on says to engage more sources.

    Returns:
        ``download_from_sources``'s result, or ``Switched`` when it was stopped for
        more sources: the part then holds a verified prefix of ``part.offset`` bytes,
        all counted by ``reporter``.

    Raises:
        DownloadFailedError: every source failed (as ``download_from_sources``).
    """
    ramp = SourceRamp(part.prv.size, _reading(part))
    result = None
    failed: Exception | None = None
    asked: list[str] = []
    failures: list[SourceFailure] = []

    def note(event: dict[str, Any]) -> None:
        if event.get("event") == "source":
            asked.append(str(event["url"]))
        emit(event)

    async with anyio.create_task_group() as group:
        with anyio.CancelScope() as transfer:
            group.start_soon(_watch, ramp, part, transfer)
            try:
                result = await download_from_sources(
                    client, sources, part, options, reporter, note, label, dead, failures
                )
            except Exception as exc:  # raised below, not wrapped in the task group's group
                failed = exc
        group.cancel_scope.cancel()
    if failed is not None:
        raise failed
    if result is not None:
        return result
    emit(
        {
            "event": "sources",
            "path": label,
            "sha1": part.prv.sha1,
            "offset": part.offset,
            "message": _why(ramp),
        }
    )
    return Switched(asked[-1] if asked else None, part.offset, tuple(failures))


def _why(ramp: SourceRamp) -> str:
    rate = (ramp.rate or 0) / 1e6
    fraction = ramp.fraction or 0.0
    return (
        f"one source sends {rate:.1f} MB/s while this client is busy {fraction:.0%} "
        "of the time: adding sources"
    )
