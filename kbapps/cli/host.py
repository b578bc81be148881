"""``kbucket-host [DIR] [options]``: share a directory (docs/commands.md, kbucket-host).

Parsing lives in ``kbapps.cli._node_command``, the node's life in ``kbapps.noderun``.
Exit codes (``docs/commands.md``): 0 after Ctrl+C/SIGTERM, 1 when the user answered
"no", 2 for bad input (options, ``--auto`` without the yes answers, a corrupt
``.kbucket/``), 3 when no port could be bound.
"""

from __future__ import annotations

import sys

from kbapps.cli._node_command import main_for

__all__ = ("main",)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the exit code."""
    return main_for("leaf", "kbucket-host", argv)


if __name__ == "__main__":
    sys.exit(main())
