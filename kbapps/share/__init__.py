"""The share side of kbucket: path safety, directory listing and file serving (docs/security.md)."""

from __future__ import annotations

from kbapps.share.paths import (
    NotFoundError as NotFoundError,
)
from kbapps.share.paths import (
    SharedFile as SharedFile,
)
from kbapps.share.paths import (
    ShareDir as ShareDir,
)
from kbapps.share.paths import (
    SharePathError as SharePathError,
)
from kbapps.share.paths import (
    UnsafePathError as UnsafePathError,
)
from kbapps.share.server import build_share_router as build_share_router

__all__ = (
    "NotFoundError",
    "ShareDir",
    "SharePathError",
    "SharedFile",
    "UnsafePathError",
    "build_share_router",
)
