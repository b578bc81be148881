"""Response heads of one HTTP server, built by h11 once per distinct head and reused.

h11 validates every header of every response (twice: building the event and cleaning
it up for sending), the largest cost of a small response such as a find answer. A
``ResponseHeads`` keeps, per server:

* each distinct set of the app's headers split into the ones that decide framing and
  keep-alive (``Content-Length``, ``Transfer-Encoding``, ``Connection``: these go
  through h11 every time, so its connection state stays right) and the others,
  validated by h11 once and kept as header lines;
* each distinct h11 ``Response`` event (status, framing headers, length): h11 events
  are immutable and h11 never changes one when sending it (it builds a new one when it
  must add ``Connection: close``), so one built event serves every response with the
  same head.

The server's own headers (``Server``, the CORS pair) and the app's other headers are
spliced in before the blank line that ends h11's head; the wire bytes differ from
h11's only in header order. Both tables are bounded: past their size they start
over. Measured: a hub's CPU per find was ~1.13 times higher without them
(``docs/benchmarks.md``).
"""

from __future__ import annotations

from http import HTTPStatus

import h11

from kbtransport.http import Response

__all__ = ("ResponseHeads", "validated_block")

#: Response headers h11 must see to frame the body and decide keep-alive.
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection"})
#: Most distinct response heads kept as built h11 events.
_EVENT_CACHE_SIZE = 1024
#: Most distinct header sets kept (apps mostly answer with a few constant sets;
#: per-response values such as Content-Range make new ones: the table then restarts).
_BLOCK_CACHE_SIZE = 256
#: Most reason phrases kept (an ``HTTPStatus`` lookup costs a few µs; apps may invent
#: statuses, so the table is bounded too).
_REASON_CACHE_SIZE = 1000

_Block = tuple[tuple[tuple[bytes, bytes], ...], bytes]


def validated_block(headers: list[tuple[bytes, bytes]]) -> bytes:
    """``headers`` as header lines, after h11's own validation.

    Raises:
        h11.LocalProtocolError: a malformed header (as h11 would when sending it).
    """
    h11.Response(status_code=200, headers=headers)
    return b"".join(b"%s: %s\r\n" % (name, value) for name, value in headers)


class ResponseHeads:
    """The response heads of one server (see the module docstring).

    Args:
        base_headers: the headers every response carries (validated here).
    """

    def __init__(self, base_headers: list[tuple[bytes, bytes]]) -> None:
        self._base = validated_block(base_headers)
        self._events: dict[tuple[int, tuple[tuple[bytes, bytes], ...], int | None], h11.Response]
        self._events = {}
        self._blocks: dict[tuple[tuple[str, str], ...], _Block] = {}
        self._reasons: dict[int, bytes] = {}

    def head(self, conn: h11.Connection, response: Response, length: int | None) -> bytes:
        """The bytes of ``response``'s head (``length``: its ``Content-Length``), sent
        through ``conn`` so its state moves on as for any head.

        Raises:
            h11.LocalProtocolError: a malformed header, or a head ``conn`` cannot send.
        """
        framing, block = self._block(response.headers)
        status = response.status
        key = (status, framing, length)
        event = self._events.get(key)
        if event is None:
            headers = list(framing)
            if length is not None:
                headers.append((b"content-length", str(length).encode("ascii")))
            event = h11.Response(status_code=status, headers=headers, reason=self._reason(status))
            if len(self._events) >= _EVENT_CACHE_SIZE:
                self._events.clear()
            self._events[key] = event
        head = conn.send(event)
        # h11 ends a head with an empty line; ours go right before it.
        assert head.endswith(b"\r\n\r\n"), head
        return b"".join((head[:-2], self._base, block, b"\r\n"))

    def _block(self, headers: tuple[tuple[str, str], ...]) -> _Block:
        """Split an app's response headers into framing ones (for h11) and the rest as
        validated header lines, kept per distinct tuple of headers."""
        if type(headers) is not tuple:  # a list from a careless app: make it a key
            headers = tuple((str(n), str(v)) for n, v in headers)
        cached = self._blocks.get(headers)
        if cached is not None:
            return cached
        framing: list[tuple[bytes, bytes]] = []
        other: list[tuple[bytes, bytes]] = []
        for name, value in headers:
            pair = (name.encode("latin-1"), value.encode("latin-1"))
            (framing if pair[0].lower() in _FRAMING else other).append(pair)
        result = (tuple(framing), validated_block(other))
        if len(self._blocks) >= _BLOCK_CACHE_SIZE:
            self._blocks.clear()
        self._blocks[headers] = result
        return result

    def _reason(self, status: int) -> bytes:
        reason = self._reasons.get(status)
        if reason is None:
            try:
                reason = HTTPStatus(status).phrase.encode("ascii")
            except ValueError:
                reason = b""
            if len(self._reasons) < _REASON_CACHE_SIZE:
                self._reasons[status] = reason
        return reason
