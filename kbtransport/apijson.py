"""The JSON bodies a node writes itself (docs/http.md): find answers and the parts of
nodeinfo.

``find_body`` is the find route's one JSON writer, written out directly (see its
docstring for why); ``node_info_json`` and ``cache_json`` build the objects of
``/ID/api/nodeinfo`` that ``json_response`` then encodes.
"""

from __future__ import annotations

import json.encoder
from urllib.parse import quote

from kbproto.messages import FindResult, NodeInfo
from kbtransport.relaycache import RelayCache

__all__ = ("cache_json", "find_body", "node_info_json")


def cache_json(cache: RelayCache) -> dict[str, int]:
    """The ``cache`` object of a hub's nodeinfo (docs/http.md): what its relay cache
    holds and has done since the process started."""
    stats = cache.stats
    return {
        "entries": cache.entries,
        "bytes": cache.size,
        "bound": cache.bound,
        "hits": stats.hits,
        "misses": stats.misses,
        "bytes_served": stats.bytes_served,
        "fills": stats.fills,
        "fills_dropped": stats.fills_dropped,
    }


def node_info_json(info: NodeInfo) -> dict[str, object]:
    """The ``info`` object of nodeinfo (public fields only; never a private key)."""
    return {
        "node_id": info.node_id,
        "node_type": info.node_type,
        "name": info.name,
        "description": info.description,
        "owner": info.owner,
        "owner_email": info.owner_email,
        "listen_url": info.listen_url,
        "public_key": info.public_key,
    }


#: The string escaping of ``json.dumps(..., ensure_ascii=False)`` (C-accelerated).
_json_string = json.encoder.encode_basestring


def _download_tail(result: FindResult) -> str:
    return f"/{result.kbshare_id}/download/{quote(result.path, safe='/')}"


def _find_urls(results: tuple[FindResult, ...], own_url: str) -> list[str]:
    """``urls`` of the find answer (see ``find_body``)."""
    # chains[i][d]: result i's URL at distance d from its share ("" if that node has no
    # listen URL); URLs are listed by distance, so every direct source comes first.
    tails = [_download_tail(result) for result in results]
    chains: list[list[str]] = []
    for result, tail in zip(results, tails, strict=True):
        bases = [result.share_url, *(url for _, url in result.hops)]
        chains.append([base.rstrip("/") + tail if base else "" for base in bases])
    urls: list[str] = []
    depth = max((len(chain) for chain in chains), default=0)
    for level in range(depth):
        for chain in chains:
            if level < len(chain) and chain[level] and chain[level] not in urls:
                urls.append(chain[level])
    if own_url:
        own = own_url.rstrip("/")
        for tail in tails:
            url = own + tail
            if url not in urls:
                urls.append(url)
    return urls


def find_body(results: tuple[FindResult, ...], own_url: str) -> bytes:
    """The find answer for ``results`` (at least one) asked at the node whose URL is
    ``own_url``, as JSON bytes (``docs/http.md``)::

        {"success":true,"found":true,"size":N,"urls":[...],
         "results":[{"kbshare_id":...,"size":N,"path":...}, ...]}

    ``urls`` is best first: every result's share URL, then the hubs in between by
    distance from the share, then this node's own URL; duplicates and empty base URLs
    (a node that has none) are left out.

    Written out directly, the route's one JSON writer: building the dicts and lists
    only to hand them to ``json.dumps`` cost ~20 µs more per find, some 7 % of a
    hub's CPU per find (``docs/benchmarks.md``). Strings go through the escaping
    function ``json.dumps(..., ensure_ascii=False)`` uses, integers are their ``repr``.
    """
    urls = ",".join(map(_json_string, _find_urls(results, own_url)))
    items = ",".join(
        f'{{"kbshare_id":{_json_string(r.kbshare_id)},"size":{r.size:d},'
        f'"path":{_json_string(r.path)}}}'
        for r in results
    )
    text = (
        f'{{"success":true,"found":true,"size":{results[0].size:d},'
        f'"urls":[{urls}],"results":[{items}]}}'
    )
    return text.encode("utf-8")
