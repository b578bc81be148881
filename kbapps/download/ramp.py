"""``SourceRamp``: whether a large download should engage more sources than one.

Pure arithmetic, no I/O and no clock: the caller feeds cumulative readings (wall
seconds, the process's CPU seconds, bytes on disk) and the rule answers. Tested with
fake readings (``tests/apps/test_download_ramp.py``).

A large file found on several nodes starts from one source, the best (the plain
one-source path, whole-file SHA-1 only). Over each *window* of at least
``window`` seconds, the first starting with the first bytes (a request's set-up says
nothing of the source's rate), the rule compares the client's CPU time to the wall
time (its CPU *demand*: the time it ran, plus the time it was ready to run but
waited for a CPU taken by other processes, ``probe.cpu_demand``):

- the client's process used ``busy`` of one core or more (``cpu / wall >= busy``):
  the client, checking and writing the bytes, sets the pace, not the source; another
  source would only add work (a SHA-256 per chunk on top of the SHA-1, and on one
  machine the other share's CPU), so the download stays on one source;
- under ``busy``: the client mostly waits for the source, which delivers at most
  ``busy`` of what this client can check and write per second (``bytes / cpu`` is
  that capacity, ``bytes / wall`` the rate, and their ratio is the CPU fraction), so
  more sources can help, and the rule says to engage them, unless what is left would
  take under ``min_left`` seconds at the window's rate (switching costs a request per
  source, the digest list and a re-read of the bytes already on disk).

Each window that does not engage starts the next one, so a source that slows down
later (or stalls after its first bytes: no bytes, no CPU) still brings the others
in. Bytes going down (a source's wrong bytes emptied the part) restart the wait for
the first bytes. A source that never sends is dropped by the time-outs
(``--min-speed``, the read time-out), and the next URL is tried.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ("BUSY", "MIN_LEFT", "WINDOW", "Reading", "SourceRamp")

#: Seconds of one window: short, since every second at one source is a second the
#: others are idle (a 64 MiB file from two 8 MiB/s sources takes 4 s in all: a
#: 0.5 s window measured 1.79x of one source, under the 1.8x target), yet long
#: enough for the CPU clock to say something.
WINDOW = 0.25
#: The CPU fraction (of one core) at which the client counts as the bottleneck. A
#: source-bound transfer uses a few percent (8 MB/s: ~0.05 here); a client-bound one
#: a whole core or more (the event loop and the writer thread). A quarter leaves room
#: for a loaded machine; the time a client waits for a CPU counts as busy, so a
#: starved client is not taken for an idle one (measured: without it, an unpaced
#: transfer starved to 25 % of a core engaged a second source).
BUSY = 0.25
#: Seconds of transfer left at the current rate under which switching is not worth it.
MIN_LEFT = 1.0


@dataclass(frozen=True, slots=True)
class Reading:
    """Cumulative readings at one moment of a transfer.

    Attributes:
        wall: seconds on a monotonic clock.
        cpu: the process's CPU seconds (every thread: the writer hashes in one),
            plus the seconds it waited for a CPU where that is known.
        done: bytes on disk so far.
    """

    wall: float
    cpu: float
    done: int


class SourceRamp:
    """Decides, reading by reading, when one source is not enough.

    Args:
        size: the file's size in bytes.
        start: the readings when the transfer starts.
        window: seconds of a window (at least this long before a decision).
        busy: the CPU fraction at which the client is the bottleneck.
        min_left: seconds of transfer left under which one source finishes alone.

    Raises:
        ValueError: ``window`` or ``busy`` is not positive, or ``min_left`` is negative.
    """

    def __init__(
        self,
        size: int,
        start: Reading,
        window: float = WINDOW,
        busy: float = BUSY,
        min_left: float = MIN_LEFT,
    ) -> None:
        if window <= 0 or busy <= 0 or min_left < 0:
            raise ValueError("SourceRamp: window and busy must be positive, min_left not negative")
        self.size = size
        self.window = window
        self.busy = busy
        self.min_left = min_left
        self._start = start
        self._flowing = False
        #: The last window's CPU fraction and rate (bytes per second), once one ended.
        self.fraction: float | None = None
        self.rate: float | None = None

    def feed(self, now: Reading) -> bool:
        """Take the readings ``now``; True when more sources should be engaged now."""
        wall = now.wall - self._start.wall
        if now.done < self._start.done or not self._flowing:
            # Before the first byte (a request's set-up is not the source's rate), or
            # the part was emptied: measure afresh.
            self._flowing = now.done > self._start.done
            self._start = now
            return False
        if wall < self.window:
            return False
        self.fraction = (now.cpu - self._start.cpu) / wall
        self.rate = (now.done - self._start.done) / wall
        self._start = now
        if self.fraction >= self.busy:
            return False
        left = self.size - now.done
        return left > 0 and (self.rate == 0 or left / self.rate >= self.min_left)
