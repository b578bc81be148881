"""Structured trace records: how a core reports what it did, without logging (rule 20).

Strategy
--------
A core never configures or calls a logger. It hands small frozen records to an
injected ``TraceSink``; kbapps turns them into log lines, the simulator into its run
trace and digest. The default sink drops everything, so tracing costs one call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from kbproto.ids import LinkId

__all__ = ("ListTraceSink", "NullTraceSink", "TraceRecord", "TraceSink")


@dataclass(frozen=True, slots=True, kw_only=True)
class TraceRecord:
    """One thing a core did.

    Attributes:
        now: the ``now`` of the call that produced it.
        category: ``link`` (opened, joined, closed), ``timer``, ``index``, ``lookup``,
            ``stream`` or ``error``.
        link_id: the link concerned, if any.
        detail: a short human-readable summary (never key material).
    """

    now: float
    category: str
    link_id: LinkId | None
    detail: str


class TraceSink(Protocol):
    """Receives trace records."""

    def record(self, record: TraceRecord) -> None:
        """Accept one record (must not call back into the core)."""
        ...


class NullTraceSink:
    """Drops every record (the default)."""

    def record(self, record: TraceRecord) -> None:
        """Do nothing."""


class ListTraceSink:
    """Keeps every record in ``records`` (tests and the simulator)."""

    def __init__(self) -> None:
        self.records: list[TraceRecord] = []

    def record(self, record: TraceRecord) -> None:
        """Append ``record``."""
        self.records.append(record)
