"""``kbucket-hub [DIR] [options]``: run a hub (docs/commands.md, kbucket-hub).

Parsing lives in ``kbapps.cli._node_command``, the node's life in ``kbapps.noderun``.
Exit codes (``docs/commands.md``): 0 after Ctrl+C/SIGTERM, 1 when the user answered
"no", 2 for bad input (options, ``--auto`` without the yes answer, a missing TLS
certificate, a corrupt ``.kbucket/``), 3 when the port could not be bound.
"""

from __future__ import annotations

import sys

from kbapps.cli._node_command import main_for

__all__ = ("main",)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the exit code."""
    return main_for("hub", "kbucket-hub", argv)


if __name__ == "__main__":
    sys.exit(main())
