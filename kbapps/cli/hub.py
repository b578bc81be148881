"""``kbucket-hub [DIR] [options]``: run a hub (SPEC §3.2).

Parsing lives in ``kbapps.cli._node_command``, the node's life in ``kbapps.noderun``.
Exit codes: 0 after Ctrl+C/SIGTERM, 1 when the user answered "no" or the port could not
be bound, 2 for bad input (options, ``--auto`` without the yes answer, a missing TLS
certificate, a corrupt ``.kbucket/``).
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
