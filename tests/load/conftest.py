"""Fixtures of the load tests: every process started is stopped at the end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.procs import Procs


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    """A ``Procs`` whose processes are all stopped when the test ends."""
    started = Procs(tmp_path.resolve())
    try:
        yield started
    finally:
        started.close()
