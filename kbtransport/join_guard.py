"""Slowing down failed joins per address, and keeping the console readable under a flood.

Theory of operation
-------------------
A child joins a hub by opening a websocket and answering the hub's challenge; the core
refuses a wrong passcode, a bad signature, a duplicate id (``kbproto.handshake``).
Nothing stopped one address from trying passcodes as fast as the hub answered
(200-400 tries a second). The core knows why a join failed but not who tried (it does
no I/O and sees no address); the transport knows the address, so the rate limit lives
here: ``kbtransport.node`` asks ``JoinGuard.retry_after`` before it accepts a websocket
upgrade and ``JoinGuard.begin`` when the link starts, and reports how each attempt
ended (joined, or not: refused, timed out, dropped during the handshake).

Per client (``kbtransport.clients``: an address; an IPv6 /64) the guard counts failed
joins. The first ``free_failures`` cost nothing (a mistyped passcode, a child
restarting); after that, attempts are spaced by a delay that doubles with every
failure, from ``first_delay`` to ``max_delay``, and an attempt that comes too early is
refused at once with 429 and ``Retry-After`` (no handshake, no signature check). An
attempt still in progress counts as a failure until it ends, so attempts made in
parallel are spaced like sequential ones. A join that succeeds clears the address's
record; so does ``forget_after`` seconds without a failure.

The console gets at most ``log_lines`` lines about refused joins per ``log_window``
(``take_summary`` then reports how many more there were, from how many addresses), so a
flood of attempts is a few lines, not one per try.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ("JoinBudget", "JoinGuard", "RefusalSummary")


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinBudget:
    """How fast one address may try to join after failed joins (times in seconds).

    Attributes:
        free_failures: failed joins an address gets with no delay: 3 (a mistyped
            passcode, a child restarting).
        first_delay: the wait after the first failure past the free ones: 1 s.
        max_delay: the wait doubles with each further failure up to this: 60 s, so a
            guesser gets about one try a minute, and a person who fixed a typo waits
            at most a minute (a refused child redials with its own backoff anyway).
        forget_after: an address with no failed join for this long starts over: 10 min.
        max_addresses: addresses remembered at once (the least recently seen is
            forgotten first): 10,000 records of a few dozen bytes.
        log_lines: refused joins printed in full per ``log_window``; the others are
            summed up in one line at the end of the window.
        log_window: seconds of one console window: 60 s.
    """

    free_failures: int = 3
    first_delay: float = 1.0
    max_delay: float = 60.0
    forget_after: float = 600.0
    max_addresses: int = 10_000
    log_lines: int = 5
    log_window: float = 60.0

    def __post_init__(self) -> None:
        if self.free_failures < 0 or self.max_addresses < 1 or self.log_lines < 0:
            raise ValueError("JoinBudget counts must not be negative (max_addresses >= 1)")
        if not 0 < self.first_delay <= self.max_delay:
            raise ValueError("JoinBudget needs 0 < first_delay <= max_delay")
        if self.forget_after <= 0 or self.log_window <= 0:
            raise ValueError("JoinBudget.forget_after and log_window must be positive")


@dataclass(frozen=True, slots=True)
class RefusalSummary:
    """Refused joins not printed in full during one console window.

    Attributes:
        count: how many.
        addresses: from how many clients.
        seconds: the window's length.
    """

    count: int
    addresses: int
    seconds: float


class _Record:
    __slots__ = ("failures", "last_failure", "next_allowed", "pending")

    def __init__(self) -> None:
        self.failures = 0
        self.pending = 0
        self.next_allowed = 0.0
        self.last_failure = 0.0


class JoinGuard:
    """Failed joins per client and the console's refusal lines (see the module docstring).

    Args:
        budget: the delays and bounds.
    """

    def __init__(self, budget: JoinBudget) -> None:
        self.budget = budget
        # Insertion order is recency: a record is moved to the end when used.
        self._records: dict[str, _Record] = {}
        self._window_end: float | None = None
        self._printed = 0
        self._unprinted = 0
        self._unprinted_from: dict[str, None] = {}

    def retry_after(self, client: str, now: float) -> float:
        """Seconds ``client`` must wait before its next attempt (0.0: none). A pure
        check, for refusing an attempt before any work is done for it."""
        record = self._records.get(client)
        return max(0.0, record.next_allowed - now) if record is not None else 0.0

    def begin(self, client: str, now: float) -> float:
        """An attempt of ``client`` starts: 0.0 if it may go on (``finished`` must
        follow), else the seconds it must wait (an attempt made in parallel with
        others that already used the address's turn)."""
        record = self._record(client, now)
        if now < record.next_allowed:
            return record.next_allowed - now
        record.pending += 1
        over = record.failures + record.pending - self.budget.free_failures
        if over > 0:
            # Counted as failed until it ends: the next attempt waits already.
            record.next_allowed = now + self._delay(over)
        return 0.0

    def finished(self, client: str, *, joined: bool, now: float) -> None:
        """An admitted attempt of ``client`` ended: it joined, or it failed."""
        record = self._records.get(client)
        if record is None:  # forgotten meanwhile (the table was full)
            return
        record.pending = max(0, record.pending - 1)
        if joined:
            record.failures = 0
            record.next_allowed = 0.0
            if not record.pending:
                del self._records[client]
            return
        record.failures += 1
        record.last_failure = now
        over = record.failures + record.pending - self.budget.free_failures
        if over > 0:
            record.next_allowed = max(record.next_allowed, now + self._delay(over))

    def failures(self, client: str) -> int:
        """Failed joins counted against ``client`` now."""
        record = self._records.get(client)
        return record.failures if record is not None else 0

    def should_print(self, client: str, now: float) -> bool:
        """A join of ``client`` was refused: True if its line goes to the console,
        False if it is only counted for the window's summary line."""
        if self._window_end is None or now >= self._window_end:
            self._window_end = now + self.budget.log_window
            self._printed = 0
        if self._printed < self.budget.log_lines:
            self._printed += 1
            return True
        self._unprinted += 1
        if len(self._unprinted_from) < self.budget.max_addresses:
            self._unprinted_from[client] = None
        return False

    def summary_due(self) -> float | None:
        """When the pending summary should be printed (the window's end), or None."""
        return self._window_end if self._unprinted else None

    def take_summary(self, now: float) -> RefusalSummary | None:
        """The refused joins not printed in the window that ended by ``now``; None if
        there were none or the window is still open."""
        if not self._unprinted or self._window_end is None or now < self._window_end:
            return None
        summary = RefusalSummary(self._unprinted, len(self._unprinted_from), self.budget.log_window)
        self._unprinted = 0
        self._unprinted_from.clear()
        return summary

    def _record(self, client: str, now: float) -> _Record:
        record = self._records.pop(client, None)
        if (
            record is not None
            and not record.pending
            and now - record.last_failure >= self.budget.forget_after
        ):
            record = None  # quiet long enough: start over
        if record is None:
            record = _Record()
            while len(self._records) >= self.budget.max_addresses:
                del self._records[next(iter(self._records))]
        self._records[client] = record
        return record

    def _delay(self, over: int) -> float:
        """The wait after ``over`` failures past the free ones (doubling, capped)."""
        budget = self.budget
        return min(budget.max_delay, budget.first_delay * 2.0 ** min(over - 1, 64))
