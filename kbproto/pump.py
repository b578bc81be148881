"""The drain helper shared by the simulator and the real driver (STYLE rule 11).

Strategy
--------
After every call into a core, a driver (a) hands every event to the app, (b) carries
out every action in order, and (c) re-reads the timer. Step (a) can call back into the
core (an app answering ``RequestReceived`` calls ``respond``), which can queue more
events and actions, so the helper loops until both queues are empty. Keeping this one
function pure and shared means the simulator runs exactly the driver's drain order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from kbproto.actions import Action
from kbproto.core import NodeCore
from kbproto.events import Event

__all__ = ("Drained", "drain")


class Drained(NamedTuple):
    """What one drain produced: actions to perform in order, and the next deadline.

    A named tuple (immutable, like a frozen dataclass) because one is built after
    every call into a core, and a tuple costs about half a frozen dataclass to build.
    """

    actions: tuple[Action, ...]
    timer: float | None


def drain(core: NodeCore, on_event: Callable[[Event], None] | None = None) -> Drained:
    """Drain ``core``: events to ``on_event`` first, then actions, until both are empty.

    Args:
        core: any ``NodeCore``.
        on_event: the app's handler; it may call the core's commands (their events and
            actions are drained in the same call). None drops events.

    Returns:
        The actions in the order the driver must perform them, and ``get_timer()``.
    """
    actions: list[Action] = []
    next_event, next_action = core.next_event, core.next_action
    while True:
        event = next_event()
        if event is not None:
            if on_event is not None:
                on_event(event)
            continue
        action = next_action()
        if action is None:
            break
        actions.append(action)
    return Drained(tuple(actions), core.get_timer())
