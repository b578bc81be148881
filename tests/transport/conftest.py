"""Shared fixtures for the transport tests: the anyio backends, TLS material, servers.

kbtransport is written against anyio's portable API, and its few asyncio-only speed
paths (``kbtransport._accel``) each fall back to it, so it must pass on asyncio and on
trio. The modules in ``BOTH_BACKENDS`` run on both: the HTTP server and client, the
websocket, the connection slots and ``_accel`` itself, where the two backends take
different paths. The others (the driver, budgets, routes: code with no backend-specific
path) run on asyncio only, to keep the default run short; ``tests/e2e/test_trio.py``
runs whole nodes and commands on trio besides (proxied and direct downloads, finds).
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import BinaryIO

import pytest
import trustme
from anyio.abc import ByteStream

from kbtransport import _accel, http_server

#: Test modules whose async tests run on asyncio and on trio (see the docstring).
BOTH_BACKENDS = frozenset(
    {
        "test_accel",
        "test_http_client",
        "test_http_server",
        "test_http_server_heads",
        "test_http_server_lean",
        "test_ratelimit",
        "test_sendfile_listener",
        "test_slots",
        "test_websocket",
    }
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "anyio_backend" in metafunc.fixturenames:
        both = Path(str(metafunc.module.__file__)).stem in BOTH_BACKENDS
        backends = ["asyncio", "trio"] if both else ["asyncio"]
        metafunc.parametrize("anyio_backend", backends, indirect=True)


@pytest.fixture
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def server_ssl(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture(scope="session")
def client_ssl(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
def sendfile_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Records ``(offset, length)`` of every piece of a file body that went out by
    sendfile."""
    calls: list[tuple[int, int]] = []
    original = _accel.sendfile

    async def spy(stream: ByteStream, file: BinaryIO, offset: int, length: int) -> bool:
        taken = await original(stream, file, offset, length)
        if taken:
            calls.append((offset, length))
        return taken

    monkeypatch.setattr(http_server, "sendfile", spy)
    return calls
