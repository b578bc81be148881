"""The simulator's seeds past ``COVERED_SEEDS`` run without coverage (``no_cover``, see
``scenarios.py``); under ``--no-cov`` pytest-cov has no controller to pause and fails on
that marker, so the marker is dropped when coverage is off."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("no_cov", default=False):
        return
    for item in items:
        item.own_markers = [m for m in item.own_markers if m.name != "no_cover"]
