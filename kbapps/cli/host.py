"""``kbucket-host [DIR] [options]``: share a directory (SPEC §3.1).

Parsing lives in ``kbapps.cli._node_command``, the node's life in ``kbapps.noderun``.
Exit codes: 0 after Ctrl+C/SIGTERM, 1 when the user answered "no" or no port could be
bound, 2 for bad input (options, ``--auto`` without the yes answers, a corrupt
``.kbucket/``).
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
