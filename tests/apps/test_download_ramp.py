"""``SourceRamp``: the rule that engages more sources, driven with fake readings
(``kbapps.download.ramp``)."""

from __future__ import annotations

import pytest

from kbapps.download.ramp import BUSY, MIN_LEFT, WINDOW, Reading, SourceRamp

MB = 1_000_000
SIZE = 1000 * MB


def ramp(**kw: float) -> SourceRamp:
    return SourceRamp(SIZE, Reading(0.0, 0.0, 0), **kw)


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
    rule = SourceRamp(100 * MB, Reading(0.0, 0.0, 90 * MB - left))
    assert not rule.feed(Reading(1.0, 0.05, 100 * MB - left))
    assert rule.rate == pytest.approx(10 * MB)
    # The same rate with more left: engage.
    rule = SourceRamp(100 * MB, Reading(0.0, 0.0, 50 * MB))
    assert rule.feed(Reading(1.0, 0.05, 60 * MB))
    # Complete: nothing left at all.
    rule = SourceRamp(100 * MB, Reading(0.0, 0.0, 90 * MB))
    assert not rule.feed(Reading(1.0, 0.05, 100 * MB))


def test_an_emptied_part_restarts_the_window() -> None:
    rule = ramp()
    assert not rule.feed(Reading(1.0, 1.0, 300 * MB))  # busy: the next window starts
    assert not rule.feed(Reading(1.6, 1.0, 0))  # wrong bytes: the part was emptied
    assert not rule.feed(Reading(1.6 + WINDOW / 2, 1.0, MB))  # a new window, not over
    assert rule.feed(Reading(1.6 + WINDOW, 1.0, 2 * MB))
    assert rule.rate == pytest.approx(2 * MB / WINDOW)


def test_bad_parameters_are_refused() -> None:
    for kw in ({"window": 0.0}, {"busy": 0.0}, {"min_left": -1.0}):
        with pytest.raises(ValueError, match="SourceRamp"):
            ramp(**kw)
