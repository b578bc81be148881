"""How the synchronous API runs async code: one event loop in a thread of its own.

A library cannot call ``anyio.run`` from whatever thread its caller is on: inside
Jupyter, or any asyncio program, that thread already runs a loop, and ``anyio.run``
refuses to nest. So the synchronous API hands every coroutine to one background thread
running its own loop (anyio's ``start_blocking_portal``), started on first use and
stopped when the interpreter exits. Objects bound to that loop (the HTTP client of an
open ``RemoteFile``) live there for their whole life. After a ``fork`` the child starts
a loop thread of its own (the parent's thread does not exist in the child).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

__all__ = ("loop_stopped", "run_in_loop")

T = TypeVar("T")

_lock = threading.Lock()
_portal: BlockingPortal | None = None
_stack: contextlib.ExitStack | None = None
_owner_pid = 0
_exiting = False


def _get_portal() -> BlockingPortal:
    global _portal, _stack, _owner_pid
    with _lock:
        if _exiting:
            raise RuntimeError("the interpreter is exiting: kbucket's API loop is stopped")
        if _portal is None or _owner_pid != os.getpid():
            stack = contextlib.ExitStack()
            _portal = stack.enter_context(start_blocking_portal(name="kbucket-api-loop"))
            _stack, _owner_pid = stack, os.getpid()
        return _portal


@atexit.register
def _stop() -> None:
    global _portal, _stack, _exiting
    with _lock:
        _exiting = True
        if _stack is not None and _owner_pid == os.getpid():
            _stack.close()
        _portal, _stack = None, None


def loop_stopped() -> bool:
    """True once the interpreter is exiting (files still open are closed without it)."""
    return _exiting


def run_in_loop(func: Callable[..., Awaitable[T]], *args: object) -> T:
    """Run ``func(*args)`` on the API's event loop thread and return its result
    (exceptions propagate). Must not be called from that thread itself (an async
    caller uses ``kbapps.api.aio`` instead)."""
    return _get_portal().call(func, *args)
