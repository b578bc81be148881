"""Shared fixtures for the transport tests: the anyio backends, TLS material, servers.

Every transport test runs on asyncio and on trio: kbtransport is written against anyio's
portable API, and the few asyncio-only speed paths (``kbtransport._accel``) each fall
back to it, so both backends must pass the same tests.
"""

from __future__ import annotations

import ssl

import pytest
import trustme


@pytest.fixture(params=["asyncio", "trio"])
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
