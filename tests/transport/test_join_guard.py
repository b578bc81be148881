"""Failed joins slowed down per address (``kbtransport.join_guard``): the guard alone,
and a hub slowing a passcode guesser, keeping its console short, still admitting the
right passcode."""

from __future__ import annotations

import anyio
import pytest

from kbtransport.errors import ConnectError
from kbtransport.join_guard import JoinBudget, JoinGuard
from tests.helpers import Ed25519Signer
from tests.hostile.helpers import run_share_core
from tests.transport.node_helpers import tree, wait_until

pytestmark = pytest.mark.anyio


# --- the join guard -----------------------------------------------------------------------


def test_failed_joins_get_free_tries_then_doubling_delays() -> None:
    guard = JoinGuard(JoinBudget(free_failures=2, first_delay=1.0, max_delay=4.0))
    now = 100.0
    for _ in range(2):  # the free failures
        assert guard.begin("a", now) == 0.0
        guard.finished("a", joined=False, now=now)
    assert guard.retry_after("a", now) == 0.0
    waits = []
    for _ in range(5):
        assert guard.retry_after("a", now) == 0.0
        assert guard.begin("a", now) == 0.0
        guard.finished("a", joined=False, now=now)
        wait = guard.retry_after("a", now)
        assert guard.begin("a", now) == wait  # too early: refused, not counted
        waits.append(wait)
        now += wait
    assert waits == [1.0, 2.0, 4.0, 4.0, 4.0]  # doubling, capped at max_delay
    assert guard.failures("a") == 7
    assert guard.retry_after("b", now) == 0.0  # another address is another client
    # A join that succeeds clears the address.
    assert guard.begin("a", now) == 0.0
    guard.finished("a", joined=True, now=now)
    assert guard.failures("a") == 0
    assert guard.retry_after("a", now) == 0.0


def test_parallel_attempts_are_spaced_like_sequential_ones() -> None:
    guard = JoinGuard(JoinBudget(free_failures=2, first_delay=1.0))
    # Two attempts in flight use the free turns; the third must wait already.
    assert guard.begin("a", 0.0) == 0.0
    assert guard.begin("a", 0.0) == 0.0
    assert guard.begin("a", 0.0) == 0.0  # counted as a failure to come: spaces the next
    assert guard.begin("a", 0.0) == 1.0
    assert guard.begin("a", 0.5) == 0.5
    for _ in range(3):
        guard.finished("a", joined=False, now=0.5)
    assert guard.failures("a") == 3
    guard.finished("zzz", joined=False, now=0.5)  # unknown: ignored
    assert guard.failures("zzz") == 0


def test_the_guard_forgets_quiet_addresses_and_bounds_its_table() -> None:
    guard = JoinGuard(JoinBudget(free_failures=0, forget_after=60.0, max_addresses=2))
    for client in ("a", "b"):
        guard.begin(client, 0.0)
        guard.finished(client, joined=False, now=0.0)
    assert guard.failures("a") == 1
    assert guard.begin("a", 70.0) == 0.0  # quiet for 70 s: starts over
    assert guard.failures("a") == 0
    guard.finished("a", joined=False, now=70.0)
    assert guard.begin("c", 70.0) == 0.0  # a third address: the least recent (b) goes
    assert guard.failures("b") == 0
    assert guard.failures("a") == 1


def test_the_console_gets_a_few_lines_and_a_summary_per_window() -> None:
    guard = JoinGuard(JoinBudget(log_lines=2, log_window=10.0))
    printed = [guard.should_print(f"10.0.0.{i % 3}", 1.0 + i) for i in range(6)]
    assert printed == [True, True, False, False, False, False]
    assert guard.summary_due() == 11.0
    assert guard.take_summary(10.0) is None  # the window is still open
    summary = guard.take_summary(11.0)
    assert summary is not None
    assert (summary.count, summary.addresses, summary.seconds) == (4, 3, 10.0)
    assert guard.take_summary(12.0) is None
    assert guard.summary_due() is None
    assert guard.should_print("10.0.0.1", 12.0)  # a new window


def test_join_budget_validates() -> None:
    for bad in (
        {"free_failures": -1},
        {"max_addresses": 0},
        {"log_lines": -1},
        {"first_delay": 0.0},
        {"first_delay": 5.0, "max_delay": 1.0},
        {"forget_after": 0.0},
        {"log_window": 0.0},
    ):
        with pytest.raises(ValueError, match="JoinBudget"):
            JoinBudget(**bad)


# --- in a real network ------------------------------------------------------------------


async def test_failed_joins_are_slowed_logged_in_a_few_lines_and_summed_up() -> None:
    budget = JoinBudget(
        free_failures=1, first_delay=0.3, max_delay=0.6, log_lines=2, log_window=3.0
    )
    async with tree() as t:
        hub = await t.hub("A", passcode="sesame", join_budget=budget)
        url = hub.local_url
        checked = throttled = 0
        # Every attempt runs to its end (one cut short would be a failure the hub
        # counts and we would not).
        deadline = anyio.current_time() + 1.2
        while anyio.current_time() < deadline:
            try:
                run = await run_share_core(url, Ed25519Signer(1), passcode="nope", seconds=3)
            except ConnectError as exc:  # the upgrade's 429
                if "429" not in str(exc):
                    raise
                throttled += 1
                await anyio.sleep(0.02)
                continue
            assert run.refused == "incorrect passcode for node hostile"
            checked += 1
        assert 1 <= checked <= 4  # one free, then one per 0.3 s, 0.6 s...
        assert throttled > checked
        failed = [line for line in t.lines.lines if line.startswith("A: join from")]
        assert failed == [
            "A: join from 127.0.0.1 failed: incorrect passcode for node hostile",
            failed[1],
        ]
        assert failed[1] in (
            "A: join from 127.0.0.1 failed: incorrect passcode for node hostile",
            "A: join from 127.0.0.1 failed: too many failed joins from this address"
            " (next try in 1 s)",
        )

        async def summed_up() -> bool:
            return any(line.startswith("A: join failures ") for line in t.lines.lines)

        await wait_until(summed_up, timeout=5, what="the summary line")
        (summary,) = [line for line in t.lines.lines if line.startswith("A: join failures")]
        assert summary == f"A: join failures {checked + throttled - 2} from 1"
        # The right passcode joins once the address's turn comes.
        await anyio.sleep(0.7)
        run = await run_share_core(url, Ed25519Signer(2), passcode="sesame", seconds=5)
        assert run.joined
