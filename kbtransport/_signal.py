"""A re-armable wake-up shared by a stream's driver-side and app-side tasks."""

from __future__ import annotations

import anyio

__all__ = ("Signal",)


class Signal:
    """``set`` wakes the current waiter; ``wait`` returns once set, then re-arms."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = anyio.Event()

    def set(self) -> None:
        """Wake the task waiting (or the next one to wait)."""
        self._event.set()

    async def wait(self) -> None:
        """Wait until ``set``; the next ``wait`` waits for the next ``set``."""
        await self._event.wait()
        self._event = anyio.Event()
