"""Who counts as one client for the per-client budgets (``docs/security.md`` §3).

Budgets per client (connections, proxied streams, failed joins) are kept per *address*:
a client cannot prove anything else about itself. An IPv4 address is one client. An
IPv6 host is usually given a whole /64 network and can pick any address inside it, so
the /64 is the client there; an IPv4-mapped IPv6 address (``::ffff:a.b.c.d``, what a
dual-stack listener reports for IPv4 peers) is its IPv4 address. Many people behind
one NAT share one address, which is why the per-client defaults leave room for a lab.
"""

from __future__ import annotations

import ipaddress

__all__ = ("client_key",)

#: The IPv6 prefix one client can be assumed to own (a customer site gets at least a /64).
_IPV6_PREFIX = 64


def client_key(host: str | None) -> str:
    """The budget key of the peer at ``host`` (an IP address as the socket reports it).

    ``None`` or anything that is not an IP address (a Unix socket, an in-memory test
    stream) is one shared key, ``""``.
    """
    if not host:
        return ""
    if ":" not in host:
        return host  # IPv4, the usual case: no parsing needed
    try:
        address = ipaddress.IPv6Address(host.split("%", 1)[0])
    except ValueError:
        return ""
    mapped = address.ipv4_mapped
    if mapped is not None:
        return str(mapped)
    network = ipaddress.IPv6Network((address, _IPV6_PREFIX), strict=False)
    return str(network)
