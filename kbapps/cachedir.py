"""Where the per-user caches live (docs/commands.md, kb-prv-create).

The hash cache of ``kb-prv-create`` and the download cache of ``kb-prv-download`` share
one directory: ``$KBUCKET_CACHE_DIR`` if it is set, else the platform's user cache
directory, ``$XDG_CACHE_HOME/kbucket`` or ``~/.cache/kbucket`` on Linux. A share keeps
its own caches inside its ``.kbucket/`` instead (docs/formats.md §3).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

__all__ = (
    "CACHE_DIR_ENV",
    "ensure_user_cache_dir",
    "ensure_user_cache_path",
    "user_cache_dir",
    "user_cache_path",
)

#: Environment variable that overrides the cache directory (the original Python
#: client used the same name).
CACHE_DIR_ENV = "KBUCKET_CACHE_DIR"


def user_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """Return the per-user cache directory, without creating it.

    Args:
        env: the environment to read (defaults to ``os.environ``); tests pass a dict.

    Returns:
        ``$KBUCKET_CACHE_DIR`` if set and non-empty; else ``$XDG_CACHE_HOME/kbucket``
        if ``XDG_CACHE_HOME`` is an absolute path (the XDG spec says to ignore a
        relative one); else ``~/.cache/kbucket``.
    """
    from pathlib import Path

    return Path(user_cache_path(env))


def user_cache_path(env: Mapping[str, str] | None = None) -> str:
    """``user_cache_dir`` as a string, without importing ``pathlib`` (with
    ``urllib.parse`` and ``ipaddress``: a few ms of every ``kb-prv-create``)."""
    env = os.environ if env is None else env
    override = env.get(CACHE_DIR_ENV, "")
    if override:
        return os.path.expanduser(override)
    xdg = env.get("XDG_CACHE_HOME", "")
    if xdg and os.path.isabs(xdg):
        return os.path.join(xdg, "kbucket")
    home = env.get("HOME", "") or os.path.expanduser("~")
    return os.path.join(home, ".cache", "kbucket")


def ensure_user_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """Return the per-user cache directory, creating it (mode 0700) if needed.

    Raises:
        OSError: if it cannot be created (for example, a read-only home).
    """
    from pathlib import Path

    return Path(ensure_user_cache_path(env))


def ensure_user_cache_path(env: Mapping[str, str] | None = None) -> str:
    """``ensure_user_cache_dir`` as a string (see ``user_cache_path``).

    Raises:
        OSError: if it cannot be created.
    """
    path = user_cache_path(env)
    # 0700: cached content and the list of files a user hashed are private.
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path
