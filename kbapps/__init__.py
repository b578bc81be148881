"""kbapps: the kbucket commands, node configuration, share index and download client."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ("__version__",)
