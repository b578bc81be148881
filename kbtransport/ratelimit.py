"""One token bucket per node: the upload rate limit of a share (``--max-upload-rate``).

Strategy
--------
A node's uplink is one resource shared by all its connections, so the limit is one
``UploadLimiter`` object that every sender of response bodies asks before it sends: the
HTTP server (files by ``sendfile`` or read-and-send, streams, bytes) and the streams
served through the tree (``kbtransport.served_streams``, what a hub proxies).

The bucket holds at most ``burst`` tokens (bytes) and refills at ``rate`` bytes per
second. ``reserve(n)`` takes ``n`` tokens at once, even more than the bucket holds,
and returns how long the caller must wait before sending: the bucket may go into
debt, and the debt is paid back by waiting. Concurrent senders thus queue in the
order they reserved (each one's wait includes the debt of those before it), and a
piece larger than the bucket is never starved. Senders cut their bodies into pieces
of ``piece_size`` bytes, so the bytes leave in a steady stream of small bursts and no
connection holds the line for long.

The clock is injected (``kbtransport.env.Clock``; the event loop's by default), so the
arithmetic is tested with a fake clock and no sleeping. Only ``acquire`` sleeps, and a
cancelled ``acquire`` gives its tokens back: bytes never sent cost the others nothing.
"""

from __future__ import annotations

import anyio

from kbtransport.env import AnyioClock, Clock

__all__ = ("MAX_PIECE", "MIN_PIECE", "UploadLimiter")

#: Pieces are about 1/20 s of the rate: smooth enough that a download's progress looks
#: steady, and few enough (20 per second at any rate) that the cost per piece (a
#: ``sendfile`` call, a driver round trip) stays negligible.
_PIECES_PER_SECOND = 20
#: Smallest piece: below it, the per-piece cost would dominate at very low rates.
MIN_PIECE = 16 * 1024
#: Largest piece: the unlimited paths' own piece size (the HTTP server's file chunks,
#: the tree's ``_SEND_CHUNK``), so a limit never makes a piece larger than without one.
MAX_PIECE = 1024 * 1024


class UploadLimiter:
    """A token bucket of ``rate`` bytes per second shared by all of a node's senders.

    Args:
        rate: bytes per second, at least 1.
        clock: monotonic seconds (``AnyioClock`` by default: call from the event loop).
        burst: the bucket's size in bytes (default: one ``piece_size``); the bucket
            starts full.

    Raises:
        ValueError: ``rate`` or ``burst`` is not positive.
    """

    def __init__(self, rate: int, *, clock: Clock | None = None, burst: int | None = None) -> None:
        if rate < 1:
            raise ValueError("UploadLimiter.rate must be at least 1 byte per second")
        self.rate = rate
        #: Bytes a sender should send per ``acquire`` (see the module docstring).
        self.piece_size = min(MAX_PIECE, max(MIN_PIECE, rate // _PIECES_PER_SECOND))
        self.burst = burst if burst is not None else self.piece_size
        if self.burst < 1:
            raise ValueError("UploadLimiter.burst must be positive")
        self._clock: Clock = clock if clock is not None else AnyioClock()
        self._tokens = float(self.burst)
        self._stamp: float | None = None

    def reserve(self, nbytes: int) -> float:
        """Take ``nbytes`` tokens now; return the seconds to wait before sending them
        (0.0 when the bucket held them)."""
        now = self._clock.now()
        if self._stamp is not None:
            refill = (now - self._stamp) * self.rate
            self._tokens = min(float(self.burst), self._tokens + refill)
        self._stamp = now
        self._tokens -= nbytes
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def refund(self, nbytes: int) -> None:
        """Give back ``nbytes`` tokens reserved but never sent."""
        self._tokens = min(float(self.burst), self._tokens + nbytes)

    async def acquire(self, nbytes: int) -> None:
        """Wait until ``nbytes`` may be sent (``reserve``, then sleep); if cancelled
        while waiting, the tokens are given back."""
        delay = self.reserve(nbytes)
        if delay <= 0:
            return
        try:
            await anyio.sleep(delay)
        except BaseException:
            self.refund(nbytes)
            raise
