"""``sha1://`` and ``kbucket://`` URIs: the original clients' names for content and files.

Two forms (``docs/python-api.md``), those of the original clients (its ``src/index.js``
and ``kbucket/kbucketclient.py``):

* ``sha1://HEX[/NAME]`` names content by its SHA-1, wherever it is in the network. The
  optional ``NAME`` (its last path component) is only a file name to save it under.
* ``kbucket://NODE_ID/PATH`` names the file or directory ``PATH`` of the share
  ``NODE_ID``; it is read through any hub as ``/NODE_ID/prv/PATH`` (the file's SHA-1)
  and ``/NODE_ID/api/readdir/PATH`` (a listing). An empty ``PATH`` is the share's top.

Paths are taken as written, not percent-decoded (a share's names may hold ``%``), and
each component is percent-encoded when it becomes part of a URL (``url_path``). A
component that is empty, ``.``/``..``, starts with ``.`` or holds a backslash or NUL
is refused here: no share serves such a path, so the URI can only be a mistake or a
trick. Parsing is pure and cheap (no network, no heavy imports): the commands use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

__all__ = (
    "KBUCKET_SCHEME",
    "SHA1_SCHEME",
    "KBucketUri",
    "Sha1Uri",
    "UriError",
    "is_uri",
    "parse_uri",
    "sha1_uri",
)

SHA1_SCHEME = "sha1://"
KBUCKET_SCHEME = "kbucket://"
#: The longest URI accepted: a share path is at most 4096 characters (``Prv.path``).
_MAX_URI_CHARS = 8192
_SHA1_RE = re.compile(r"[0-9a-fA-F]{40}")
_NODE_ID_RE = re.compile(r"[0-9a-fA-F]{12}")


class UriError(ValueError):
    """A ``sha1://`` or ``kbucket://`` URI that cannot name anything (the message says why)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Sha1Uri:
    """``sha1://HEX[/NAME]``: content by its SHA-1.

    Attributes:
        sha1: 40 lowercase hex digits.
        name: the file name it suggests (its last component), or None.
    """

    sha1: str
    name: str | None = None

    def __post_init__(self) -> None:
        if _SHA1_RE.fullmatch(self.sha1) is None or self.sha1 != self.sha1.lower():
            raise UriError(f"not a SHA-1 (40 lowercase hex digits): {self.sha1[:60]!r}")
        if self.name is not None and len(_components(self.name, self.name)) != 1:
            raise UriError(f"not a file name: {self.name[:60]!r}")

    def __str__(self) -> str:
        return sha1_uri(self.sha1, self.name)


@dataclass(frozen=True, slots=True, kw_only=True)
class KBucketUri:
    """``kbucket://NODE_ID/PATH``: a file or directory of one share.

    Attributes:
        node_id: 12 lowercase hex digits.
        path: ``/``-separated components (``""``: the share's top directory).
    """

    node_id: str
    path: str = ""

    def __post_init__(self) -> None:
        if _NODE_ID_RE.fullmatch(self.node_id) is None or self.node_id != self.node_id.lower():
            raise UriError(f"not a node id (12 lowercase hex digits): {self.node_id[:60]!r}")
        if "/".join(_components(self.path, self.path)) != self.path:
            raise UriError(f"not a share path: {self.path[:80]!r}")

    def __str__(self) -> str:
        return f"{KBUCKET_SCHEME}{self.node_id}/{self.path}".rstrip("/")

    @property
    def name(self) -> str:
        """The last component of ``path`` (``""`` for the top directory)."""
        return self.path.rsplit("/", 1)[-1]

    def url_path(self, route: str) -> str:
        """``/NODE_ID/ROUTE/PATH`` with each component percent-encoded (``route``:
        ``prv``, ``api/readdir``, ``download``)."""
        encoded = "/".join(quote(part, safe="") for part in self.path.split("/") if part)
        return f"/{self.node_id}/{route}/{encoded}"

    def child(self, name: str) -> KBucketUri:
        """The URI of the entry ``name`` inside this directory."""
        return KBucketUri(node_id=self.node_id, path=f"{self.path}/{name}".lstrip("/"))


def is_uri(text: str) -> bool:
    """True if ``text`` starts with ``sha1://`` or ``kbucket://`` (any letter case)."""
    lowered = text[:10].lower()
    return lowered.startswith((SHA1_SCHEME, KBUCKET_SCHEME))


def _components(path: str, uri: str) -> list[str]:
    parts = [part for part in path.split("/") if part]
    for part in parts:
        if part.startswith(".") or "\\" in part or "\x00" in part:
            raise UriError(f"{uri}: the path component {part!r} names nothing a share serves")
    return parts


def parse_uri(text: str) -> Sha1Uri | KBucketUri:
    """Parse a ``sha1://`` or ``kbucket://`` URI.

    A trailing ``/`` and repeated ``/`` are ignored; the hex digits of a SHA-1 or node
    id may be upper case (they are stored lowercase).

    Raises:
        UriError: ``text`` is not one of the two forms, or names an impossible path.
    """
    if len(text) > _MAX_URI_CHARS:
        raise UriError(f"URI longer than {_MAX_URI_CHARS} characters")
    scheme = text[:10].lower()
    if scheme.startswith(SHA1_SCHEME):
        rest = text[len(SHA1_SCHEME) :]
        digest, _, name_path = rest.partition("/")
        if _SHA1_RE.fullmatch(digest) is None:
            raise UriError(f"{text}: sha1:// must be followed by 40 hex digits")
        parts = _components(name_path, text)
        return Sha1Uri(sha1=digest.lower(), name=parts[-1] if parts else None)
    if scheme.startswith(KBUCKET_SCHEME):
        rest = text[len(KBUCKET_SCHEME) :]
        node_id, _, path = rest.partition("/")
        if _NODE_ID_RE.fullmatch(node_id) is None:
            raise UriError(f"{text}: kbucket:// must be followed by a 12-hex-digit node id")
        return KBucketUri(node_id=node_id.lower(), path="/".join(_components(path, text)))
    raise UriError(f"not a sha1:// or kbucket:// URI: {text[:80]!r}")


def sha1_uri(sha1: str, name: str | None = None) -> str:
    """``sha1://SHA1`` or, with a file name, ``sha1://SHA1/NAME``."""
    return f"{SHA1_SCHEME}{sha1}/{name}" if name else f"{SHA1_SCHEME}{sha1}"
