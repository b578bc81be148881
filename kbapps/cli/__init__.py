"""One typer application per console script."""

from __future__ import annotations

__all__ = ()
