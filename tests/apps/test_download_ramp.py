"""``SourceRamp``: the rule that engages more sources, driven with fake readings
(``kbapps.download.ramp``)."""

from __future__ import annotations

import time

import pytest

from kbapps.download.probe import cpu_demand
from kbapps.download.ramp import BUSY, MIN_LEFT, WINDOW, Reading, SourceRamp

MB = 1_000_000
SIZE = 1000 * MB


def flowing(size: int, at: Reading, **kw: float) -> SourceRamp:
    """A ramp whose first bytes arrived at ``at`` (its first window starts there)."""
    rule = SourceRamp(size, Reading(at.wall - 5.0, at.cpu - 5.0, at.done - 1), **kw)
    assert not rule.feed(Reading(at.wall - 4.0, at.cpu - 4.0, at.done - 1))  # no bytes
    assert not rule.feed(at)  # the first bytes: the window starts
    assert rule.fraction is None
    return rule


def ramp(**kw: float) -> SourceRamp:
    return flowing(SIZE, Reading(0.0, 0.0, 0), **kw)


def test_a_slow_source_with_an_idle_client_engages_more() -> None:
    rule = ramp()
    assert not rule.feed(Reading(WINDOW / 2, 0.01, 4 * MB))  # window not over yet
    assert rule.feed(Reading(WINDOW, 0.02, 8 * MB))
    assert rule.fraction == pytest.approx(0.02 / WINDOW)
    assert rule.rate == pytest.approx(8 * MB / WINDOW)


def test_a_busy_client_keeps_one_source() -> None:
    # 400 MB/s with the client's process using a core and more: the client is the
    # bottleneck, whatever the rate.
    rule = ramp()
    assert not rule.feed(Reading(1.0, 1.3, 400 * MB))
    assert rule.fraction == pytest.approx(1.3)
    # Busy at exactly the threshold still counts as busy.
    rule = ramp()
    assert not rule.feed(Reading(1.0, BUSY, 100 * MB))


def test_each_window_is_judged_alone_so_a_later_slowdown_engages_more() -> None:
    rule = ramp()
    assert not rule.feed(Reading(1.0, 1.0, 300 * MB))  # fast, client-bound
    assert not rule.feed(Reading(2.0, 1.9, 600 * MB))  # still
    assert rule.feed(Reading(3.0, 1.95, 610 * MB))  # the source slowed to 10 MB/s
    assert rule.rate == pytest.approx(10 * MB)


def test_a_stalled_source_engages_more() -> None:
    rule = ramp()
    assert not rule.feed(Reading(1.0, 1.0, 300 * MB))
    assert rule.feed(Reading(2.0, 1.0, 300 * MB))  # nothing arrived, nothing to do
    assert rule.rate == 0


def test_little_left_finishes_on_one_source() -> None:
    # 10 MB/s with under MIN_LEFT seconds of it left: not worth a switch.
    left = int(10 * MB * MIN_LEFT * 0.9)
    rule = flowing(100 * MB, Reading(0.0, 0.0, 90 * MB - left))
    assert not rule.feed(Reading(1.0, 0.05, 100 * MB - left))
    assert rule.rate == pytest.approx(10 * MB)
    # The same rate with more left: engage.
    rule = flowing(100 * MB, Reading(0.0, 0.0, 50 * MB))
    assert rule.feed(Reading(1.0, 0.05, 60 * MB))
    # Complete: nothing left at all.
    rule = flowing(100 * MB, Reading(0.0, 0.0, 90 * MB))
    assert not rule.feed(Reading(1.0, 0.05, 100 * MB))


def test_an_emptied_part_restarts_the_window() -> None:
    rule = ramp()
    assert not rule.feed(Reading(1.0, 1.0, 300 * MB))  # busy: the next window starts
    assert not rule.feed(Reading(1.5, 1.0, 0))  # wrong bytes: the part was emptied
    assert not rule.feed(Reading(1.75, 1.0, 0))  # no bytes yet: no window
    assert not rule.feed(Reading(2.0, 1.0, MB))  # bytes again: a new window starts
    assert not rule.feed(Reading(2.0 + WINDOW / 2, 1.0, 2 * MB))
    assert rule.feed(Reading(2.0 + WINDOW, 1.0, 3 * MB))
    assert rule.rate == pytest.approx(2 * MB / WINDOW)


def test_a_request_being_set_up_is_not_judged() -> None:
    # Seconds without a first byte (connecting, the source opening the file) say
    # nothing about the source's rate; the first window starts with the first bytes.
    rule = SourceRamp(SIZE, Reading(0.0, 0.0, 0))
    assert not rule.feed(Reading(3 * WINDOW, 0.0, 0))
    assert rule.fraction is None
    assert not rule.feed(Reading(4 * WINDOW, 0.0, MB))
    assert rule.feed(Reading(5 * WINDOW, 0.0, 2 * MB))


def test_bad_parameters_are_refused() -> None:
    for kw in ({"window": 0.0}, {"busy": 0.0}, {"min_left": -1.0}):
        with pytest.raises(ValueError, match="SourceRamp"):
            ramp(**kw)


def test_cpu_demand_counts_at_least_the_cpu_used() -> None:
    before = cpu_demand()
    spent = time.process_time()
    while time.process_time() - spent < 0.05:
        pass  # burn a little CPU
    after = cpu_demand()
    assert after - before >= 0.05
    assert after >= time.process_time()
