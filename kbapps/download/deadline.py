"""The minimum progress a source must make, or it is dropped (``docs/security.md``).

The read timeout alone ends a transfer only after a full silence: a source sending one
byte every ten seconds never trips it and would hold a download forever. So each
source must deliver at least ``min_speed * window`` bytes (or all that is left) within
every ``window`` seconds, counted from the request: when that many have arrived, a new
window starts; when a window ends short, the transfer is cancelled and the next source
continues from the bytes already on disk (a window may end up to an eighth of its
length early: moving the deadline costs a timer, so it moves only once it lags by
that much). The response head counts against the first window, so a source trickling
its headers is dropped too. The defaults (1 KiB/s over
30 s) drop only a source that is hardly sending at all: a slow but real link passes.
"""

from __future__ import annotations

import math

import anyio

__all__ = ("DEFAULT_MIN_SPEED", "DEFAULT_SPEED_WINDOW", "ProgressDeadline")

#: Bytes per second a source must average over each window (``--min-speed``).
DEFAULT_MIN_SPEED = 1024
#: The window, in seconds (``--speed-window``): long enough for a connection that
#: stalls a while and recovers, short enough that a trickling source costs little.
DEFAULT_SPEED_WINDOW = 30.0
#: A window may start late by at most 1/_SLACK of its length (see ``feed``).
_SLACK = 8


class ProgressDeadline:
    """Cancels a transfer whose source falls under ``min_speed`` over a ``window``.

    Use ``scope()`` around the request and its body, and ``feed`` each piece of body
    received; after the ``with`` block, ``expired`` says whether the deadline ended it.

    Args:
        min_speed: bytes per second; 0 turns the deadline off.
        window: seconds.
        remaining: the body bytes still expected (the last window needs only those).
    """

    def __init__(self, min_speed: int, window: float, remaining: int) -> None:
        self._window = window
        self._rate = min_speed
        self._remaining = remaining
        self._need = self._needed()
        self._got = 0
        self._scope: anyio.CancelScope | None = None

    def _needed(self) -> int:
        return min(math.ceil(self._rate * self._window), self._remaining)

    def scope(self) -> anyio.CancelScope:
        """The cancel scope to run the transfer in (its first window starts now)."""
        deadline = anyio.current_time() + self._window if self._rate > 0 else math.inf
        self._scope = anyio.CancelScope(deadline=deadline)
        return self._scope

    def feed(self, nbytes: int) -> None:
        """Count ``nbytes`` received; enough for this window starts the next one."""
        self._got += nbytes
        if self._got >= self._need and self._scope is not None and self._rate > 0:
            self._remaining -= self._got
            self._got = 0
            self._need = self._needed()
            deadline = anyio.current_time() + self._window
            # Moving a scope's deadline re-arms a timer (~5 us): a fast source meets
            # the need with every chunk, so the deadline moves only once it lags by an
            # eighth of the window (the next window then has at least 7/8 of it).
            if deadline - self._scope.deadline >= self._window / _SLACK:
                self._scope.deadline = deadline

    @property
    def expired(self) -> bool:
        """True if the deadline cancelled the transfer."""
        return self._scope is not None and self._scope.cancelled_caught

    def reason(self) -> str:
        """Why the source was dropped, in one line (for the error list and ``--json``)."""
        return (
            f"too slow: {self._got} bytes in {self._window:g} s, under the "
            f"{self._need} needed (--min-speed {self._rate} B/s over --speed-window "
            f"{self._window:g} s)"
        )
