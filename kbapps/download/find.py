"""Asking a hub where content is (``GET /find/SHA1``) and ordering the sources to try."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio

from kbapps.download.errors import HubUnreachableError
from kbtransport.errors import TransportError
from kbtransport.http_client import HttpClient, HttpResponse

__all__ = (
    "MAX_FIND_BYTES",
    "MAX_SOURCES",
    "FindResult",
    "download_sources",
    "error_text",
    "find_content",
    "short",
)

#: The find answer is a small JSON object; a hub holding a file in many shares lists
#: a few URLs each. 4 MiB is far above anything real.
MAX_FIND_BYTES = 4 * 1024 * 1024
#: Sources tried per file, at most (each may cost a connect timeout).
MAX_SOURCES = 32
#: Bytes of an error response body read to quote its message.
_MAX_ERROR_BODY = 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class FindResult:
    """A hub's answer to ``/find/SHA1`` (docs/http.md).

    Attributes:
        found: whether any node holds the content.
        size: the size the hub reported, if any.
        urls: the download URLs, best first, as the hub gave them (http/https only).
        response: the JSON object exactly as received.
    """

    found: bool
    size: int | None
    urls: tuple[str, ...]
    response: Mapping[str, Any]


def short(text: str, limit: int = 200) -> str:
    """``text`` on one line, cut to ``limit`` characters (for quoting a peer)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


async def error_text(response: HttpResponse) -> str:
    """One line describing an error response, quoting the node's ``{"error": ...}``."""
    # Never read much of a body.
    try:
        body = await response.read(_MAX_ERROR_BODY)
        obj = json.loads(body)
        if isinstance(obj, dict) and isinstance(obj.get("error"), str):
            return f"HTTP {response.status}: {short(obj['error'])}"
    except (TransportError, ValueError, RecursionError):
        pass
    return f"HTTP {response.status} {response.reason}".rstrip()


async def find_content(
    client: HttpClient, hub_url: str, sha1: str, *, within: float | None = None
) -> FindResult:
    """Ask ``hub_url`` where the content ``sha1`` is (``GET /find/SHA1``).

    Args:
        within: seconds the whole answer may take (None: no bound beyond the read
            timeout): a hub trickling its answer a byte at a time is not waited for.

    Raises:
        HubUnreachableError: no usable answer (connect failure, timeout, an error
            status, a body that is not docs/http.md's JSON, not complete ``within``).
    """
    url = f"{hub_url}/find/{sha1}"
    body = b""
    with anyio.move_on_after(math.inf if within is None else within) as scope:
        try:
            async with client.stream("GET", url) as response:
                if response.status != 200:
                    text = await error_text(response)
                    raise HubUnreachableError(f"hub {hub_url} answered {text}")
                body = await response.read(MAX_FIND_BYTES)
        except TransportError as exc:
            raise HubUnreachableError(f"cannot reach hub {hub_url}: {exc}") from None
    if scope.cancelled_caught:
        raise HubUnreachableError(f"hub {hub_url} did not answer the find within {within:g} s")
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: JSON nested too deep
        raise HubUnreachableError(f"hub {hub_url} sent a find answer that is not JSON") from None
    if not isinstance(obj, dict) or obj.get("success") is not True:
        error = obj.get("error") if isinstance(obj, dict) else None
        detail = f": {short(error)}" if isinstance(error, str) else ""
        raise HubUnreachableError(f"hub {hub_url} could not answer the find{detail}")
    found = obj.get("found") is True
    size = obj.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        size = None
    urls: list[str] = []
    raw_urls = obj.get("urls")
    if found and isinstance(raw_urls, list):
        for item in raw_urls:
            if (
                isinstance(item, str)
                and item.startswith(("http://", "https://"))
                and item not in urls
                and len(item) <= 8192
            ):
                urls.append(item)
            if len(urls) >= MAX_SOURCES:
                break
    return FindResult(found=found, size=size, urls=tuple(urls), response=obj)


def download_sources(found: FindResult, hub_url: str, sha1: str) -> tuple[str, ...]:
    """Return the URLs to try, best first.

    The hub's ``urls`` in its order (docs/http.md: direct from the share, then the hubs
    nearest the share, then the queried node), then ``<hub_url>/sha1/<sha1>``: the hub
    the user named is reachable (it just answered), even when the listen URLs the
    nodes advertise are not (a hub configured as ``localhost`` seen from elsewhere).
    """
    urls = list(found.urls[:MAX_SOURCES])
    last = f"{hub_url}/sha1/{sha1}"
    if last not in urls:
        urls.append(last)
    return tuple(urls)
