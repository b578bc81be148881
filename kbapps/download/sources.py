"""The distinct sources of a find: its URLs grouped by the node that holds the bytes.

A find lists, for each share holding the content, the share's own URL and then the
same file through each hub on the way (``docs/http.md``, ``/find``): those URLs all
read from one node, whose uplink (and ``--max-upload-rate``) they share, so they
are one *source*, its URLs tried in order. A URL naming no node (``BASE/sha1/SHA1``:
the hub serves it from a holder of its choosing) is a source of its own, placed
after every node: it may be one of them, so it is a fallback, not a second source.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ("Source", "group_sources", "node_of")

#: ``BASE/ID/download/PATH`` and ``BASE/ID/sha1/SHA1``: the node id is the 12 hex digits.
_NODE_URL_RE = re.compile(r"https?://[^/]+(?:/[^/]+)*?/([0-9a-f]{12})/(?:download/|sha1/)")


@dataclass(frozen=True, slots=True)
class Source:
    """One place the bytes come from.

    Attributes:
        key: the node id, or the URL itself for a URL naming no node.
        urls: its URLs, best first (direct, then through hubs).
        node: whether ``key`` is a node id.
    """

    key: str
    urls: tuple[str, ...]
    node: bool


def node_of(url: str) -> str | None:
    """The node id a download URL reads from, or None when it names none."""
    match = _NODE_URL_RE.match(url)
    return match.group(1) if match else None


def group_sources(urls: Sequence[str]) -> tuple[Source, ...]:
    """``urls`` (best first) as sources: one per node in order of first appearance,
    then each URL naming no node alone."""
    nodes: dict[str, list[str]] = {}
    loose: list[str] = []
    for url in urls:
        node = node_of(url)
        if node is None:
            if url not in loose:
                loose.append(url)
        elif url not in nodes.setdefault(node, []):
            nodes[node].append(url)
    grouped = [Source(key, tuple(found), True) for key, found in nodes.items()]
    grouped += [Source(url, (url,), False) for url in loose]
    return tuple(grouped)
