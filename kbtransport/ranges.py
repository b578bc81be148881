"""HTTP ``Range`` handling for file downloads (RFC 9110 §14), and a file response helper.

Choices, kept compatible with the original share (Express ``res.sendFile``, i.e. the
``send`` package, see ``reference/kbucket-original.md``):

- One range (``bytes=a-b``, ``bytes=a-``, ``bytes=-n``) gives 206 with
  ``Content-Range: bytes a-b/size``. An end past the file is clipped to the last byte.
- A range that cannot be satisfied (start at or past the end, or ``-0``) gives 416 with
  ``Content-Range: bytes */size``.
- **Several ranges give 200 with the whole file**, as the original did: multipart
  responses are rarely wanted and would need a framing our proxies do not carry.
- A header that is not a valid ``bytes=`` range is ignored (200 whole), as RFC 9110
  asks of a server that does not understand it.
- ``If-Range`` with an ETag that does not match the current one gives 200 whole.
  ``If-None-Match`` matching the ETag gives 304.
- The file's bytes go out with ``kbtransport.usercontent.user_content_headers``: a
  sandboxing Content-Security-Policy, ``nosniff``, and ``attachment`` for active types.
"""

from __future__ import annotations

import mimetypes
import re
from dataclasses import dataclass
from typing import BinaryIO

from kbtransport.http import FileBody, Request, Response, error_response
from kbtransport.usercontent import user_content_headers

__all__ = (
    "ByteRange",
    "RangeNotSatisfiable",
    "content_type_for",
    "file_response",
    "parse_range",
)

_SPEC_RE = re.compile(r"\s*(\d*)\s*-\s*(\d*)\s*")
#: Longer Range headers are ignored rather than parsed (bounded work per request).
_MAX_RANGE_HEADER = 1024


@dataclass(frozen=True, slots=True)
class ByteRange:
    """An inclusive byte range ``[start, end]`` within a representation of ``size`` bytes."""

    start: int
    end: int
    size: int

    @property
    def length(self) -> int:
        """Number of bytes in the range."""
        return self.end - self.start + 1

    @property
    def content_range(self) -> str:
        """The ``Content-Range`` value, e.g. ``bytes 0-99/1000``."""
        return f"bytes {self.start}-{self.end}/{self.size}"


class RangeNotSatisfiable(Exception):
    """The request's only range lies outside the representation (answer 416)."""

    def __init__(self, size: int) -> None:
        super().__init__(f"range not satisfiable for size {size}")
        self.size = size


def parse_range(value: str | None, size: int) -> ByteRange | None:
    """Interpret a ``Range`` header against a representation of ``size`` bytes.

    Returns:
        The single range to serve, or None to serve the whole representation (no
        header, an unparsable one, a unit other than ``bytes``, or several ranges).

    Raises:
        RangeNotSatisfiable: the single range does not overlap the representation.
    """
    if value is None or len(value) > _MAX_RANGE_HEADER:
        return None
    unit, sep, specs = value.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    parts = specs.split(",")
    if len(parts) != 1:
        return None  # several ranges: 200 with the whole file (documented above)
    match = _SPEC_RE.fullmatch(parts[0])
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if first == "" and last == "":
        return None
    if first == "":
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        return ByteRange(max(0, size - suffix), size - 1, size)
    start = int(first)
    if last != "" and int(last) < start:
        return None  # invalid syntax (last < first): ignore the header
    if start >= size:
        raise RangeNotSatisfiable(size)
    end = size - 1 if last == "" else min(int(last), size - 1)
    return ByteRange(start, end, size)


def content_type_for(name: str) -> str:
    """Guess a ``Content-Type`` from a file name's extension (``mimetypes``)."""
    guessed, encoding = mimetypes.guess_type(name, strict=False)
    if guessed is None or encoding is not None:
        # .gz/.bz2 files are served as the bytes they are, not as a transfer coding.
        return "application/octet-stream"
    return guessed


def _etag_matches(header: str, etag: str) -> bool:
    candidates = [c.strip() for c in header.split(",")]
    return "*" in candidates or etag in candidates or f"W/{etag}" in candidates


def file_response(
    request: Request,
    file: BinaryIO,
    size: int,
    *,
    name: str,
    etag: str | None = None,
    extra_headers: tuple[tuple[str, str], ...] = (),
) -> Response:
    """Answer ``request`` (GET or HEAD) with ``file``, honouring Range/If-Range/If-None-Match.

    Args:
        request: the request; its ``Range``, ``If-Range`` and ``If-None-Match`` headers
            are used.
        file: an open binary regular file; ownership passes to the returned response
            (the server closes it), and it is closed here when no body is sent.
        size: the file's size as stat'ed when it was opened.
        name: the file name, for ``Content-Type``.
        etag: the quoted strong ETag (``'"<sha1>"'``) when the content id is known.
        extra_headers: more headers for every answer.

    Returns:
        200 whole, 206 partial, 304 not modified or 416 not satisfiable; the 200 and
        206 carry ``user_content_headers`` for the type guessed from ``name``.
    """
    headers: list[tuple[str, str]] = [("Accept-Ranges", "bytes"), *extra_headers]
    if etag is not None:
        headers.append(("ETag", etag))
    if etag is not None:
        inm = request.header("if-none-match")
        if inm is not None and _etag_matches(inm, etag):
            file.close()
            return Response(status=304, headers=tuple(headers))
    common = len(headers)
    # User bytes: never run in this node's origin (kbtransport.usercontent).
    headers += user_content_headers(content_type_for(name))
    range_header = request.header("range")
    if_range = request.header("if-range")
    if range_header is not None and if_range is not None and if_range.strip() != etag:
        range_header = None  # the client's copy is stale: send it all (RFC 9110 §13.1.5)
    try:
        byte_range = parse_range(range_header, size)
    except RangeNotSatisfiable:
        file.close()
        return error_response(
            416, "Range not satisfiable", (*headers[:common], ("Content-Range", f"bytes */{size}"))
        )
    if byte_range is None:
        return Response(
            status=200, headers=tuple(headers), body=FileBody(file=file, offset=0, length=size)
        )
    headers.append(("Content-Range", byte_range.content_range))
    return Response(
        status=206,
        headers=tuple(headers),
        body=FileBody(file=file, offset=byte_range.start, length=byte_range.length),
    )
