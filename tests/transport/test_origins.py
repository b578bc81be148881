"""The ``Origin`` policy of websocket and uplink upgrades (``kbtransport.origins``)."""

from __future__ import annotations

import pytest

from kbtransport.origins import OriginPolicy, canonical_origin


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://127.0.0.1:3240", "http://127.0.0.1:3240"),
        ("HTTPS://Example.ORG:443", "https://example.org"),
        ("http://example.org:80/", "http://example.org"),
        ("https://example.org:8443", "https://example.org:8443"),
        ("http://[::1]:3240", "http://[::1]:3240"),
        ("  http://localhost  ", "http://localhost"),
    ],
)
def test_canonical_origins(value: str, expected: str) -> None:
    assert canonical_origin(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "null",
        "",
        "*",
        "file:///etc/passwd",
        "ws://example.org",
        "chrome-extension://abcdef",
        "http://example.org/path",
        "http://example.org?x=1",
        "http://example.org#x",
        "http://user:pw@example.org",
        "http://",
        "http://exa mple.org",
        "http://example.org:99999",
        "http://example.org:port",
    ],
)
def test_what_is_not_an_origin(value: str) -> None:
    with pytest.raises(ValueError, match="origin"):
        canonical_origin(value)


def test_policy_allows_no_header_and_listed_origins_only() -> None:
    closed = OriginPolicy()
    assert closed.allows(None)
    assert not closed.allows("http://127.0.0.1:3240")
    assert not closed.allows("null")
    policy = OriginPolicy.of(["HTTPS://Lab.Example.org:443"])
    assert policy.allowed == frozenset({"https://lab.example.org"})
    assert policy.allows("https://lab.example.org")
    assert not policy.allows("https://lab.example.org:8443")
    assert not policy.allows("http://lab.example.org")
    assert not policy.allows("garbage")
    with pytest.raises(ValueError, match="origin"):
        OriginPolicy.of(["null"])
