"""Turn a fuzzer's byte string into structured choices, deterministically.

atheris ships ``FuzzedDataProvider``; the harnesses use this small reader instead so
they behave identically under atheris, under the smoke test (plain bytes) and when
replaying a crash file by hand. Reading past the end yields zeros, so every input is
a valid script and the fuzzer's mutations map smoothly onto choices.
"""

from __future__ import annotations

__all__ = ("ByteReader",)


class ByteReader:
    """Consumes ``data`` front to back."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    @property
    def remaining(self) -> int:
        """Bytes not consumed yet."""
        return len(self._data) - self._pos

    def byte(self) -> int:
        """The next byte (0 past the end)."""
        if self._pos >= len(self._data):
            return 0
        value = self._data[self._pos]
        self._pos += 1
        return value

    def below(self, n: int) -> int:
        """A number in ``[0, n)`` from one or two bytes (``n`` >= 1)."""
        if n <= 256:
            return self.byte() % n
        return ((self.byte() << 8) | self.byte()) % n

    def take(self, n: int) -> bytes:
        """Up to ``n`` next bytes."""
        chunk = self._data[self._pos : self._pos + n]
        self._pos += len(chunk)
        return chunk

    def rest(self) -> bytes:
        """Everything not consumed yet."""
        return self.take(self.remaining)

    def chunks(self, data: bytes) -> list[bytes]:
        """Cut ``data`` into pieces whose sizes come from this reader (1..256 bytes)."""
        pieces: list[bytes] = []
        pos = 0
        while pos < len(data):
            size = 1 + self.byte() % 64 if self.remaining else len(data) - pos
            pieces.append(data[pos : pos + size])
            pos += size
        return pieces
