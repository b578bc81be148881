"""The headers of user bytes, and the worker-script refusal (``kbtransport.usercontent``)."""

from __future__ import annotations

import pytest

from kbtransport.served_streams import request_from_target
from kbtransport.usercontent import USER_CONTENT_POLICY, is_worker_request, user_content_headers


@pytest.mark.parametrize(
    ("declared", "content_type", "attachment"),
    [
        ("text/plain", "text/plain", False),
        ("text/plain; charset=utf-8", "text/plain; charset=utf-8", False),
        ("application/json", "application/json", False),
        ("IMAGE/PNG", "IMAGE/PNG", False),
        ("video/mp4", "video/mp4", False),
        ("audio/x-wav", "audio/x-wav", False),
        ("text/html", "text/html", True),
        ("text/html; charset=utf-8", "text/html; charset=utf-8", True),
        ("image/svg+xml", "image/svg+xml", True),
        ("application/xhtml+xml", "application/xhtml+xml", True),
        ("text/xml", "text/xml", True),
        ("application/pdf", "application/pdf", True),
        ("text/javascript", "text/javascript", True),
        ("application/octet-stream", "application/octet-stream", True),
        (None, "application/octet-stream", True),
        ("", "application/octet-stream", True),
        ("text/html, text/plain", "application/octet-stream", True),
        ("text/plain\x00", "application/octet-stream", True),
        ("nonsense", "application/octet-stream", True),
        ('text/plain; charset="utf-8"', 'text/plain; charset="utf-8"', False),
    ],
)
def test_user_content_headers(declared: str | None, content_type: str, attachment: bool) -> None:
    headers = dict(user_content_headers(declared))
    assert headers["Content-Type"] == content_type
    assert headers["Content-Security-Policy"] == USER_CONTENT_POLICY
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert ("Content-Disposition" in headers) is attachment
    if attachment:
        assert headers["Content-Disposition"] == "attachment"


def test_the_policy_sandboxes_and_loads_nothing() -> None:
    directives = [d.strip() for d in USER_CONTENT_POLICY.split(";")]
    assert directives[0] == "sandbox"  # no allow-scripts, no allow-same-origin
    assert "default-src 'none'" in directives
    assert "frame-ancestors 'none'" in directives
    assert "script" not in USER_CONTENT_POLICY


@pytest.mark.parametrize(
    ("headers", "worker"),
    [
        ((), False),
        ((("Service-Worker", "script"),), True),
        ((("Sec-Fetch-Dest", "serviceworker"),), True),
        ((("Sec-Fetch-Dest", "SharedWorker"),), True),
        ((("Sec-Fetch-Dest", "worker"),), True),
        ((("Sec-Fetch-Dest", "document"),), False),
        ((("Sec-Fetch-Dest", "script"),), False),
        ((("Sec-Fetch-Dest", "empty"),), False),
    ],
)
def test_worker_requests(headers: tuple[tuple[str, str], ...], worker: bool) -> None:
    request = request_from_target("GET", "/0123456789ab/download/sw.js", headers)
    assert is_worker_request(request) is worker
