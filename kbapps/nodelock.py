"""One running node per directory: the lock file ``DIR/.kbucket/node.lock``.

Strategy
--------
Two ``kbucket-host`` processes on one directory would both index it and both try to
join the hub under the same node id (the hub refuses the second, which then retries
for ever). So a node takes an exclusive lock on ``.kbucket/node.lock`` before it
writes anything or binds a port, and keeps it until it exits; a second node finds the
lock taken and stops at once with one line naming the running one.

The lock is a POSIX record lock (``fcntl.lockf``), not ``flock``: record locks belong
to the process, so the hashing workers a share forks do not inherit it and cannot
keep it alive after the node died, and the kernel drops it when the process ends,
however it ends (``kill -9`` included). A stale file left by a dead node is therefore
harmless: it is locked again and rewritten.

The file holds one line of JSON (``pid``, ``command``, and once the node listens,
``web``: its web page), only for that message; nothing reads it for any decision.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any

from kbapps.config import SetupError

__all__ = ("LOCK_FILE_NAME", "NodeLock")

#: The lock's file name inside ``.kbucket/``.
LOCK_FILE_NAME = "node.lock"
#: A lock file larger than this was not written by us; it is not quoted.
_MAX_LOCK_TEXT = 4096


class NodeLock:
    """The exclusive lock of one node directory, held until ``release`` or exit."""

    def __init__(self, fd: int, command: str) -> None:
        self._fd = fd
        self._command = command

    @classmethod
    def acquire(cls, kbucket_dir: Path, command: str) -> NodeLock:
        """Take the lock of the node whose ``.kbucket/`` is ``kbucket_dir``.

        Args:
            kbucket_dir: the node's ``DIR/.kbucket`` (must exist).
            command: ``kbucket-host`` or ``kbucket-hub``, quoted to a second node.

        Raises:
            SetupError: exit 2, when another process holds the lock (the message
                names it) or the lock file cannot be opened.
        """
        path = kbucket_dir / LOCK_FILE_NAME
        try:
            # O_NOFOLLOW: a planted symlink must not make us create or truncate a file
            # elsewhere; the file is never truncated on open (the holder's text stays
            # readable for the message below).
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise SetupError(f"{path}: cannot open the node lock: {exc.strerror or exc}") from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _describe(_read_text(fd))
            os.close(fd)
            directory = kbucket_dir.parent
            raise SetupError(
                f"{directory} is already served by {holder}; stop it first (one node per directory)"
            ) from None
        lock = cls(fd, command)
        lock.note()
        return lock

    def note(self, **details: str) -> None:
        """Rewrite the lock file with this process's id, command and ``details``
        (such as ``web=URL``), for the message a second node prints."""
        record: dict[str, Any] = {"pid": os.getpid(), "command": self._command, **details}
        data = (json.dumps(record) + "\n").encode("utf-8")
        with contextlib.suppress(OSError):  # only the message depends on it
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        """Drop the lock (closing the file releases it); safe to call twice."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _read_text(fd: int) -> str:
    try:
        return os.pread(fd, _MAX_LOCK_TEXT + 1, 0).decode("utf-8", "replace")
    except OSError:
        return ""


def _describe(text: str) -> str:
    """``kbucket-host (pid 123, web interface http://…)`` from the holder's record, or
    ``another kbucket process`` when the record cannot be read."""
    try:
        record = json.loads(text) if len(text) <= _MAX_LOCK_TEXT else None
    except ValueError:
        record = None
    if not isinstance(record, dict):
        return "another kbucket process"
    command = record.get("command")
    pid = record.get("pid")
    web = record.get("web")
    name = command if command in ("kbucket-host", "kbucket-hub") else "another kbucket process"
    parts = [f"pid {pid}"] if isinstance(pid, int) and not isinstance(pid, bool) else []
    # The URL was written by a node on this machine, but the file is in a directory
    # others may share: quote it only if it looks like one of ours.
    if isinstance(web, str) and web.startswith(("http://", "https://")) and web.isprintable():
        parts.append(f"web interface {web[:200]}")
    return f"{name} ({', '.join(parts)})" if parts else name
