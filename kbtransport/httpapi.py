"""The HTTP routes every node serves the same way (docs/http.md), over a running ``Node``.

``build_node_app(node, local)`` returns the node's whole HTTP app:

* a websocket upgrade on any path: a child link (the core refuses it on a share);
* ``GET /find/SHA1[/NAME]`` and ``GET /ID/api/find/SHA1[/NAME]``: ``Node.find``, answered
  with the JSON of docs/http.md (``urls`` best first: the share's own URL, each hub
  between the share and this node, then this node; each ``BASE/ID/download/PATH``,
  PATH URL-encoded);
* ``GET, HEAD /sha1/SHA1``: the content from wherever it is (this share's own file
  through ``local``, else a proxied request to a share holding it). A proxied body
  (and one of ``/ID/sha1/SHA1`` for another node) is checked against SHA1 as it
  streams and cut before its end if it does not match; that source is not asked for
  that id again (``kbtransport.contentcheck``);
* ``GET, HEAD /sha1/SHA1/chunks``: the content's digest list (``kbproto.chunks``), from
  the first share holding the content that has one (``/ID/sha1/SHA1/chunks``); a
  source whose announced length cannot be the list's (32 bytes per 1 MiB of the size
  the find gave) is skipped. Nothing else is checked here: only the reader's ``.prv``
  holds the root a list must hash to (``docs/security.md``, "Chunk digests");
* ``/ID/...`` for this node: ``GET /ID/api/nodeinfo`` here, a hub's cached content
  (``/ID/download/SHA1``, ``/ID/sha1/SHA1``) from its relay cache, anything else to
  ``local``;
* ``/ID/...`` for any other node id: proxied through the tree with ``open_request``
  and streamed back (status, headers, body; Range and HEAD pass through); 404 unknown
  node, 502 a node on the way failed, 504 timed out. A hub with a relay cache answers
  ``/ID/sha1/SHA1`` from it, and ``/ID/download/PATH`` too once the share confirmed
  (a 304 to ``If-None-Match``) that PATH still holds the content it last named for
  it (docs/protocol.md §13);
* everything else (``/``, ``/web/...``): ``local``.

Every proxied answer keeps only ``PROXIED_RESPONSE_HEADERS`` of the target's and gets
this node's user-content headers (``kbtransport.usercontent``); an upgrade from a web
page whose origin is not allowed (``NodeAppConfig.origins``) and a request for a
worker's script are refused with 403. CORS headers and OPTIONS preflights are added by
the HTTP server (``ServerConfig.cors``).
``own_node_app(node, local)`` is the part serving this node's own id; a ``Node`` uses it
for requests that reach it through the tree. ``served_request_app`` adds, for a hub
with a relay cache, the content requests its core takes instead of relaying them
(``HubCore.take_content_requests``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from kbproto.chunks import DIGEST_BYTES, chunk_count
from kbproto.errors import LocalProtocolError
from kbproto.events import LookupResolved
from kbproto.ids import is_node_id, is_sha1
from kbproto.messages import FindResult
from kbtransport.apijson import cache_json, find_body, node_info_json
from kbtransport.cacheserve import (
    JOIN_IDLE,
    KnownPaths,
    Tee,
    cached_response,
    entry_response,
    is_plain_get,
    joined_response,
)
from kbtransport.contentcheck import EMPTY_SHA1, BadSources, ContentCheck, covers_whole
from kbtransport.http import (
    App,
    Request,
    Response,
    error_response,
    json_response,
)
from kbtransport.node import Node
from kbtransport.origins import OriginPolicy
from kbtransport.proxied import forwarded_headers, proxied_response, reset_response
from kbtransport.proxy_stream import ProxyResponse, StreamResetError
from kbtransport.relaycache import RelayCache
from kbtransport.served_streams import discard_response, request_from_target
from kbtransport.usercontent import is_worker_request

__all__ = (
    "NodeAppConfig",
    "build_node_app",
    "own_node_app",
    "served_request_app",
)

_log = logging.getLogger("kbtransport.httpapi")


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeAppConfig:
    """Policies of a node's HTTP routes (docs/security.md).

    Attributes:
        origins: web origins whose pages may open a websocket or an uplink to this
            node (``kbtransport.origins``); none by default, so every upgrade that
            carries an ``Origin`` header is refused with 403.
        bad_sources_kept: the memory of sources caught sending wrong bytes for a
            content id (see the attribute's comment).
        cache: a hub's relay cache (``kbtransport.relaycache``): content ids are
            answered from it first, and whole proxied bodies fill it; None: no cache.
    """

    origins: OriginPolicy = field(default_factory=OriginPolicy)
    #: How many (share, content id) pairs that sent wrong bytes are remembered and not
    #: asked again (``kbtransport.contentcheck.BadSources``; ~200 bytes each).
    bad_sources_kept: int = 4096
    cache: RelayCache | None = None

    def __post_init__(self) -> None:
        if self.bad_sources_kept < 1:
            raise ValueError("NodeAppConfig.bad_sources_kept must be positive")


_JSON_HEADERS = (("Content-Type", "application/json; charset=utf-8"),)
#: The answer to a find nothing matched (immutable, so one serves every such find).
_NOT_FOUND = json_response(200, {"success": True, "found": False})
#: A find for a malformed SHA-1 finds nothing: 200 with ``found: false`` (and why), as
#: the original hubs answered, so the original clients print "not found" instead of an
#: HTTP error (``kb-prv-find`` of the original tool, ``kbucketclient.py``'s findFile).
#: Our own clients check the SHA-1 before asking and never send one.
_MALFORMED_NOT_FOUND = json_response(
    200,
    {"success": True, "found": False, "reason": "Malformed SHA-1 (40 hex digits expected)"},
)
#: The answer to an upgrade from a web page whose origin is not allowed.
_CROSS_SITE_UPGRADE = error_response(
    403, "Websocket and uplink upgrades from web pages are refused (Origin not allowed)"
)
#: The answer to a request for a worker's script (``is_worker_request``).
_NO_WORKER_SCRIPTS = error_response(403, "A node serves no worker scripts")
#: Most find answers kept between two driver steps (see ``build_node_app``).
_ANSWERS_KEPT = 4096
#: Downloads by path whose content id a hub remembers (``KnownPaths``: ~300 bytes
#: each): the paths recently downloaded through it, far more than are hot at once.
_PATHS_KEPT = 16384


def _client(request: Request) -> str | None:
    """The client's address: proxied streams count against its share."""
    return request.client[0] if request.client is not None else None


def _list_length(size: int) -> int:
    """The length of a digest list of content of ``size`` bytes, as shares compute it
    (``kbproto.chunks.CHUNK_SIZE`` chunks)."""
    return DIGEST_BYTES * chunk_count(size)


def own_node_app(node: Node, local: App, cache: RelayCache | None = None) -> App:
    """The app for requests addressed to ``node`` itself: nodeinfo here, a hub's cached
    content (``/ID/download/SHA1`` and ``/ID/sha1/SHA1``, what its find results name,
    docs/protocol.md §13) from ``cache``, else ``local``."""

    async def app(request: Request) -> Response:
        segments = request.segments
        if (
            cache is not None
            and len(segments) == 3
            and segments[1] in ("download", "sha1")
            and is_sha1(segments[2])
            and request.method in ("GET", "HEAD")
            and (hit := cached_response(request, cache, segments[2], segments[2])) is not None
        ):
            return hit
        if (
            len(segments) in (3, 4)
            and segments[1:3] == ("api", "nodeinfo")
            and (len(segments) == 3 or segments[3] == "")
        ):
            if request.method not in ("GET", "HEAD"):
                return error_response(405, f"Method {request.method} not allowed here")
            return await _nodeinfo(node)
        return await local(request)

    return app


def served_request_app(node: Node, own: App, whole: App) -> App:
    """The app for requests that reach a hub through the tree: ``own`` (its own
    routes) for those addressed to it, ``whole`` (``build_node_app``'s) for
    ``/ID/sha1/SHA1`` of another node, which the core hands over instead of relaying
    them once ``HubCore.take_content_requests`` is on: ``whole`` answers them from the
    relay cache, or fetches them (one upstream transfer for many requesters) and fills
    the cache on the way (docs/protocol.md §13)."""

    async def app(request: Request) -> Response:
        segments = request.segments
        if (
            len(segments) == 3
            and segments[0] != node.node_id
            and segments[1] == "sha1"
            and is_node_id(segments[0])
        ):
            return await whole(request)
        return await own(request)

    return app


async def _nodeinfo(node: Node) -> Response:
    snap = await node.snapshot()
    payload: dict[str, object] = {"success": True, "info": node_info_json(snap.info)}
    if snap.parent_info is not None:
        payload["parent_hub_info"] = node_info_json(snap.parent_info)
    if node.is_hub:
        hubs: dict[str, object] = {}
        leaves: dict[str, object] = {}
        for child in snap.children:
            # name and listen_url as the original sent them; description and owner
            # (from the child's signed registration) so a hub's page can list its
            # children without asking each of them.
            entry = {
                "name": child.name,
                "listen_url": child.listen_url,
                "description": child.description,
                "owner": child.owner,
            }
            (hubs if child.node_type == "hub" else leaves)[child.node_id] = entry
        payload["child_hubs"] = hubs
        payload["child_leaf_nodes"] = leaves
    payload["metrics"] = node.metrics.to_json(node.clock.now())
    cache = node.metrics.relay_cache
    if cache is not None:
        payload["cache"] = cache_json(cache)
    return json_response(200, payload)


def build_node_app(node: Node, local: App, config: NodeAppConfig | None = None) -> App:
    """The node's whole HTTP app (see the module docstring); ``config``'s policies
    (``NodeAppConfig()`` if None) apply to every route."""
    config = config if config is not None else NodeAppConfig()
    origins = config.origins
    bad_sources = BadSources(config.bad_sources_kept)
    cache = config.cache
    known_paths = KnownPaths(_PATHS_KEPT)
    own = own_node_app(node, local, cache)
    own_url = node.info.listen_url

    metrics = node.metrics

    def found(results: tuple[FindResult, ...]) -> Response:
        if not results:
            return _NOT_FOUND
        return Response(status=200, headers=_JSON_HEADERS, body=find_body(results, own_url))

    # An answer given at once (``Node.answer_now``, a pure read of the core) stays
    # exact until the driver's next step, so its whole response is reused until then:
    # a repeated find (a popular file, a find flood) costs a dictionary lookup. Worth
    # ~10 % of a hub's CPU per find (docs/benchmarks.md, "Speed paths of kbtransport").
    driver = node.driver
    answers: dict[tuple[str, str | None], Response] = {}
    answers_step = -1

    def find_now(raw_sha1: str, share_id: str | None) -> Response | None:
        """The answer if this node gives it at once (or a 400 for a malformed share
        id); None: ask the tree."""
        nonlocal answers_step
        key = (raw_sha1, share_id)
        if driver.steps != answers_step or not driver.running:
            answers.clear()
            answers_step = driver.steps
        else:
            answer = answers.get(key)
            if answer is not None:
                return answer
        sha1 = raw_sha1.lower()
        if not is_sha1(sha1):
            return _MALFORMED_NOT_FOUND
        try:
            results = node.answer_now(sha1, share_id)
        except LocalProtocolError as exc:
            return error_response(400, str(exc))
        if results is None:
            return None
        answer = found(results)
        if len(answers) < _ANSWERS_KEPT:
            answers[key] = answer
        return answer

    async def find(raw_sha1: str, share_id: str | None) -> Response:
        # find_now validated the SHA-1 and share id (node.find checks them again).
        try:
            answer = await node.find(raw_sha1.lower(), share_id=share_id)
        except LocalProtocolError as exc:
            return error_response(400, str(exc))
        return found(answer.results if isinstance(answer, LookupResolved) else ())

    def content_check(response: ProxyResponse, source: str, sha1: str) -> ContentCheck | None:
        """The check of ``source``'s answer for content ``sha1``; None for a partial
        range, which cannot be checked alone and is served as it comes
        (docs/security.md, "Content named by SHA-1")."""
        if not covers_whole(response.status, response.header("content-range")):
            return None

        def mismatch() -> None:
            bad_sources.add(source, sha1)
            _log.warning("node %s sent bytes not hashing to %s: cut, not asked again", source, sha1)

        return ContentCheck(sha1, mismatch)

    async def cached_or(
        request: Request, sha1: str, fetch: Callable[[], Awaitable[Response]]
    ) -> Response:
        """The relay cache's answer for content ``sha1`` (an entry, or a fill in
        progress to join), else ``fetch()``'s. Single flight: while one plain GET
        fetches ``sha1`` upstream, others wait (``JOIN_IDLE`` at most) for its fill to
        begin, then join it; if it does not fill, they fetch themselves."""
        if cache is None or request.method not in ("GET", "HEAD"):
            return await fetch()
        answer = cached_response(request, cache, sha1, sha1) or joined_response(
            request, cache, sha1, sha1
        )
        if answer is not None:
            return answer
        cache.stats.misses += 1
        if not is_plain_get(request):
            return await fetch()
        if not cache.claim(sha1):
            await cache.wait_claim(sha1, JOIN_IDLE)
            joined = joined_response(request, cache, sha1, sha1) or cached_response(
                request, cache, sha1, sha1
            )
            return joined if joined is not None else await fetch()
        try:
            return await fetch()
        finally:
            cache.release(sha1)

    def cache_tee(
        request: Request, response: ProxyResponse, sha1: str, *, checked: bool
    ) -> Tee | None:
        """A tee filling the cache with ``response``'s body: a whole 200 for a GET
        asking no range (ranged requests never fill; docs/protocol.md, "Relay cache")."""
        length = response.content_length
        if (
            cache is None
            or request.method != "GET"
            or response.status != 200
            or length is None
            or request.header("range") is not None
        ):
            return None
        fill = cache.begin(sha1, length)
        return None if fill is None else Tee(fill, checked=checked)

    def etag_sha1(response: ProxyResponse) -> str:
        """The content id a share named in its ``ETag`` (``"SHA1"``), else ""."""
        etag = (response.header("etag") or "").strip()
        inner = etag[1:-1].lower() if len(etag) == 42 and etag[0] == etag[-1] == '"' else ""
        return inner if is_sha1(inner) else ""

    def lies_at_once(response: ProxyResponse, source: str, sha1: str) -> bool:
        """True (and ``source`` remembered) if the head alone shows a lie: the whole
        content in 0 bytes for an id that is not the empty content's. Such a response
        would be complete once its head is sent, before any check could cut it."""
        if (
            sha1 == EMPTY_SHA1
            or response.content_length != 0
            or not covers_whole(response.status, response.header("content-range"))
        ):
            return False
        bad_sources.add(source, sha1)
        _log.warning("node %s announced no bytes for %s: not asked again", source, sha1)
        return True

    async def proxy(request: Request, node_id: str) -> Response:
        segments = request.segments
        # /ID/sha1/SHA1 names its content: it is checked like /sha1/SHA1.
        sha1 = segments[2].lower() if len(segments) == 3 and segments[1] == "sha1" else ""
        named = is_sha1(sha1)
        if named and bad_sources.has(node_id, sha1):
            return error_response(502, "That node sent wrong bytes for this content")
        if named:
            return await cached_or(request, sha1, lambda: fetch(request, node_id, sha1))
        if (
            cache is not None
            and len(segments) > 2
            and segments[1] == "download"
            and request.method in ("GET", "HEAD")
            and request.header("if-none-match") is None
        ):
            return await by_path(request, node_id)
        return await fetch(request, node_id, "")

    async def by_path(request: Request, node_id: str) -> Response:
        """A download by path, from the cache when the share confirms the path still
        holds the content it last named for it (docs/protocol.md §13): the request
        goes on with ``If-None-Match: "SHA1"``; a 304 naming that id is answered from
        the entry (opened before asking, so it cannot go meanwhile), anything else is
        the share's own answer, passed on as usual."""
        assert cache is not None
        target = request.target.decode("ascii")
        known = known_paths.get(node_id, target)
        opened = cache.open_entry(known) if known is not None else None
        if known is None or opened is None:
            return await fetch(request, node_id, "")
        headers = (*forwarded_headers(request), ("If-None-Match", f'"{known}"'))
        try:
            response = await node.open_request(
                node_id, request.method, target, headers, client=_client(request)
            )
        except StreamResetError as exc:
            # The share is not reachable (stopped, 404 unknown node): the path has no
            # answer without it, whatever the cache holds.
            opened[0].close()
            return reset_response(exc)
        except LocalProtocolError as exc:
            opened[0].close()
            return error_response(400, f"Cannot route this request: {exc}")
        except BaseException:
            opened[0].close()
            raise
        if response.status == 304 and etag_sha1(response) == known:
            await response.aclose()
            return entry_response(request, cache, known, opened, request.segments[-1])
        opened[0].close()
        return by_path_response(request, node_id, response)

    def by_path_response(request: Request, node_id: str, response: ProxyResponse) -> Response:
        """The share's answer to a download by path, passed on. Its ``ETag`` names the
        file's content (the share names only content it hashed and that is unchanged
        since): remembered for the next download of the path, and a whole body fills
        the cache (the tee hashes it; it is kept only if it hashes to that id)."""
        named_by_etag = etag_sha1(response)
        if cache is not None and response.status < 400:
            known_paths.learn(node_id, request.target.decode("ascii"), named_by_etag)
        tee = cache_tee(request, response, named_by_etag, checked=False) if named_by_etag else None
        return proxied_response(response, request.method, tee=tee)

    async def fetch(request: Request, node_id: str, sha1: str) -> Response:
        """``proxy``'s request to ``node_id``; ``sha1`` if the target names content."""
        target = request.target.decode("ascii")
        segments = request.segments
        named = bool(sha1)
        try:
            response = await node.open_request(
                node_id, request.method, target, forwarded_headers(request), client=_client(request)
            )
        except StreamResetError as exc:
            return reset_response(exc)
        except LocalProtocolError as exc:
            return error_response(400, f"Cannot route this request: {exc}")
        if not named:
            if len(segments) > 2 and segments[1] == "download":
                return by_path_response(request, node_id, response)
            return proxied_response(response, request.method)
        if lies_at_once(response, node_id, sha1):
            await response.aclose()
            return error_response(502, "That node sent wrong bytes for this content")
        check = content_check(response, node_id, sha1)
        tee = cache_tee(request, response, sha1, checked=True) if check is not None else None
        return proxied_response(response, request.method, check, tee)

    async def from_holders(
        request: Request,
        sha1: str,
        suffix: str,
        missing: str,
        answer: Callable[[ProxyResponse, FindResult], Awaitable[tuple[bool, Response]]],
    ) -> Response:
        """What ``/sha1/SHA1{suffix}`` names, from the first holder of ``sha1`` serving it.

        Our own copy first, then the others in the order the find gave them. Each share
        is asked by SHA-1 (``/ID/sha1/SHA1{suffix}``), not by path: a share serves that
        only while its file is unchanged since hashing (docs/security.md), and answers
        404 otherwise, in which case the next holder is tried. ``answer`` turns a
        holder's answer into ours: ``(True, response)`` to send it, or ``(False,
        refusal)`` after closing it, to try the next holder (the refusal is sent if none
        serves). Holders remembered as sending wrong bytes for ``sha1`` are never asked.
        """
        sha1 = sha1.lower()
        if request.method not in ("GET", "HEAD"):
            return error_response(405, f"Method {request.method} not allowed here")
        if not is_sha1(sha1):
            return error_response(400, "Malformed SHA-1 (40 hex digits expected)")
        found = await node.find(sha1)
        if not isinstance(found, LookupResolved) or not found.results:
            return error_response(404, "Content not found")
        headers = forwarded_headers(request)
        last = error_response(404, missing)
        for result in sorted(found.results, key=lambda r: r.kbshare_id != node.node_id):
            source = result.kbshare_id
            target = f"/{source}/sha1/{sha1}{suffix}"
            if bad_sources.has(source, sha1):
                # It sent wrong bytes for this content before: never asked again.
                last = error_response(502, "Every source of this content sent wrong bytes")
                continue
            if source == node.node_id:
                local_response = await own(request_from_target(request.method, target, headers))
                if local_response.status != 404:
                    return local_response
                await discard_response(local_response)
                continue
            try:
                response = await node.open_request(
                    source, request.method, target, headers, client=_client(request)
                )
            except StreamResetError as exc:
                last = reset_response(exc)
                continue
            if response.status == 404 or response.status >= 500:
                await response.aclose()
                if response.status >= 500:
                    last = error_response(502, f"Share answered {response.status}")
                continue
            final, ours = await answer(response, result)
            if final:
                return ours
            last = ours
        return last

    async def by_sha1(request: Request, sha1: str) -> Response:
        async def checked(response: ProxyResponse, result: FindResult) -> tuple[bool, Response]:
            source, content = result.kbshare_id, sha1.lower()
            if lies_at_once(response, source, content):
                await response.aclose()
                return False, error_response(502, "Every source of this content sent wrong bytes")
            check = content_check(response, source, content)
            tee = cache_tee(request, response, content, checked=True) if check is not None else None
            return True, proxied_response(response, request.method, check, tee)

        if not is_sha1(sha1.lower()):
            return await from_holders(request, sha1, "", "Content not found", checked)
        return await cached_or(
            request,
            sha1.lower(),
            lambda: from_holders(request, sha1, "", "Content not found", checked),
        )

    async def chunks_by_sha1(request: Request, sha1: str) -> Response:
        async def sized(response: ProxyResponse, result: FindResult) -> tuple[bool, Response]:
            length = response.content_length
            if response.status == 200 and length not in (None, _list_length(result.size)):
                await response.aclose()
                _log.warning(
                    "node %s sent a digest list of the wrong length for %s", result.kbshare_id, sha1
                )
                refusal = error_response(502, "Every source sent a digest list of the wrong length")
                return False, refusal
            return True, proxied_response(response, request.method)

        return await from_holders(
            request, sha1, "/chunks", "No chunk digests for this content", sized
        )

    async def app(request: Request) -> Response:
        # A websocket upgrade on any path is a child link. (The loop finds the rare
        # ``Upgrade`` header without a call per request.) Every upgrade, websocket or
        # uplink, coming from a web page on an origin not allowed is refused first.
        for name, _value in request.headers:
            if name == b"upgrade":
                if not origins.allows(request.header("origin")):
                    return _CROSS_SITE_UPGRADE
                if request.wants_websocket:
                    return node.child_upgrade(request)
                break
        segments = request.segments
        first = segments[0] if segments else ""
        if first == "find" and len(segments) >= 2:
            if request.method != "GET":
                return error_response(405, f"Method {request.method} not allowed here")
            metrics.finds += 1
            sha1 = segments[1]
            return find_now(sha1, None) or await find(sha1, None)
        if is_worker_request(request):
            # No response of a node is a worker's script (kbtransport.usercontent); the
            # find route above answers JSON, which no browser runs as one.
            return _NO_WORKER_SCRIPTS
        if first == "_kblink" and len(segments) == 2:
            return node.uplink_accept(request, segments[1])
        if first == "sha1" and len(segments) == 2:
            return await by_sha1(request, segments[1])
        if first == "sha1" and len(segments) == 3 and segments[2] == "chunks":
            return await chunks_by_sha1(request, segments[1])
        if is_node_id(first):
            if len(segments) >= 4 and segments[1:3] == ("api", "find"):
                if request.method != "GET":
                    return error_response(405, f"Method {request.method} not allowed here")
                metrics.finds += 1
                sha1 = segments[3]
                return find_now(sha1, first) or await find(sha1, first)
            if first == node.node_id:
                return await own(request)
            return await proxy(request, first)
        return await local(request)

    return app
