"""``PieceScheduler`` and ``group_sources``: the pure logic of parallel downloads,
driven without sockets (``kbapps.download.pieces``, ``kbapps.download.sources``)."""

from __future__ import annotations

import random

import pytest

from kbapps.download.partfile import PieceRecord
from kbapps.download.pieces import Piece, PieceScheduler
from kbapps.download.sources import Source, group_sources, node_of


def deliver(sched: PieceScheduler, source: str, count: int | None = None) -> set[str]:
    """Let ``source`` land ``count`` more units of its piece (all by default), from the
    next one its stream delivers; return the sources told to stop along the way."""
    piece = sched.piece_of(source)
    assert piece is not None
    stop: set[str] = set()
    landed = 0
    for index in range(piece.start, piece.end):
        if count is not None and landed == count:
            break
        try:
            _, finished = sched.unit_done(source, index)
        except ValueError:
            continue  # delivered before this call
        landed += 1
        stop |= finished
        if source in finished:
            break
    return stop


def test_pieces_are_handed_out_lowest_first_and_bounded() -> None:
    sched = PieceScheduler(10, 4)
    assert sched.assign("a") == Piece(0, 4)
    assert sched.assign("b") == Piece(4, 8)
    assert sched.assign("c") == Piece(8, 10)  # the tail is shorter
    assert sched.holding() == ("a", "b", "c")
    with pytest.raises(ValueError, match="already holds"):
        sched.assign("a")


def test_a_faster_source_does_more_work() -> None:
    # "fast" lands two pieces in the time "slow" lands one: it gets twice the pieces.
    sched = PieceScheduler(24, 2)
    done: dict[str, int] = {"fast": 0, "slow": 0}
    sched.assign("fast")
    sched.assign("slow")
    tick = 0
    while not sched.complete:
        tick += 1
        for name, every in (("fast", 1), ("slow", 2)):
            piece = sched.piece_of(name) or sched.assign(name)
            if piece is None or tick % every:
                continue
            deliver(sched, name)
            done[name] += 1
            sched.release(name)
            sched.assign(name)
    assert done["fast"] >= 2 * done["slow"] - 1
    assert sched.done_ranges() == [(0, 24)]


def test_a_failed_source_keeps_its_landed_units_and_frees_the_rest() -> None:
    sched = PieceScheduler(8, 4)
    assert sched.assign("a") == Piece(0, 4)
    assert sched.assign("b") == Piece(4, 8)
    deliver(sched, "b", 2)  # units 4 and 5 land, then b fails
    sched.release("b")
    assert sched.done_ranges() == [(4, 6)]
    # The next asker gets b's unfinished units, not the landed ones.
    assert sched.assign("c") == Piece(6, 8)
    sched.release("a")  # a fails without landing anything: all its units are free
    assert sched.assign("d") == Piece(0, 4)


def test_the_end_game_steals_half_of_the_slowest_piece() -> None:
    sched = PieceScheduler(8, 4)
    sched.assign("a")  # 0-4
    sched.assign("b")  # 4-8
    deliver(sched, "a", 1)  # a has three units left, b four
    # c is idle: nothing is free, so it takes the second half of b's piece.
    assert sched.assign("c") == Piece(6, 8)
    assert sched.piece_of("b") == Piece(4, 6)
    # b stops once it landed its (shorter) piece; c's units are not b's any more.
    assert deliver(sched, "b") == {"b"}
    sched.release("b")
    # Next: a has units 1-3 left: it keeps the larger half (it is sending it already).
    assert sched.assign("b") == Piece(3, 4)
    assert sched.piece_of("a") == Piece(0, 3)
    for name in ("a", "b", "c"):
        deliver(sched, name)
        sched.release(name)
    assert sched.complete


def test_the_last_unit_is_duplicated_and_the_first_lander_wins() -> None:
    sched = PieceScheduler(4, 2)
    sched.assign("a")  # 0-2
    sched.assign("b")  # 2-4
    deliver(sched, "a", 1)
    deliver(sched, "b", 1)
    # One unit left each: c duplicates a's (the first with most left), d b's.
    assert sched.assign("c") == Piece(1, 2)
    assert sched.assign("d") == Piece(3, 4)
    assert sched.assign("e") is None  # every piece with units left is duplicated
    # c lands unit 1 first: a is told to stop, and so is c (done).
    assert deliver(sched, "c") == {"a", "c"}
    # a's stream still delivers unit 1 before it stops: it does not count again.
    new, _ = sched.unit_done("a", 1)
    assert new is False
    for name in ("a", "c"):
        sched.release(name)
    assert sched.done_count == 3
    assert deliver(sched, "b") == {"b", "d"}
    assert sched.complete
    sched.release("b")
    sched.release("d")
    assert sched.done_ranges() == [(0, 4)]


def test_a_released_twin_lets_its_piece_be_duplicated_again() -> None:
    sched = PieceScheduler(1, 4)
    sched.assign("a")
    assert sched.assign("b") == Piece(0, 1)
    assert sched.assign("c") is None
    sched.release("b")  # the duplicate failed
    assert sched.assign("c") == Piece(0, 1)


def test_resumed_units_are_never_handed_out() -> None:
    sched = PieceScheduler(10, 3, done=[0, 1, 5, 9])
    assert sched.done_count == 4
    assert sched.assign("a") == Piece(2, 5)
    assert sched.assign("b") == Piece(6, 9)
    # Nothing is free: c takes the second half of the first piece with most left.
    assert sched.assign("c") == Piece(4, 5)
    assert sched.piece_of("a") == Piece(2, 4)
    with pytest.raises(ValueError, match="no unit"):
        PieceScheduler(3, 1, done=[3])
    with pytest.raises(ValueError, match="piece_units"):
        PieceScheduler(3, 0)


def test_unit_done_out_of_order_is_refused() -> None:
    sched = PieceScheduler(4, 2)
    sched.assign("a")
    with pytest.raises(ValueError, match="not next"):
        sched.unit_done("a", 1)
    with pytest.raises(ValueError, match="not next"):
        sched.unit_done("nobody", 0)
    sched.release("nobody")  # no-op


@pytest.mark.parametrize("seed", range(30))
def test_random_runs_always_complete_every_unit_once(seed: int) -> None:
    """Sources land, fail and get duplicated at random: the file always completes,
    each unit counted new exactly once."""
    rng = random.Random(seed)
    units = rng.randrange(1, 40)
    sched = PieceScheduler(units, rng.randrange(1, 6), done=rng.sample(range(units), units // 4))
    counted = sched.done_count
    names = [f"s{i}" for i in range(rng.randrange(1, 5))]
    for _ in range(10_000):
        if sched.complete:
            break
        name = rng.choice(names)
        piece = sched.piece_of(name)
        if piece is None:
            sched.assign(name)
            continue
        action = rng.random()
        if action < 0.1:
            sched.release(name)  # a failure
            continue
        # The next unit of its stream: the first of its piece it has not delivered.
        for held in range(piece.start, piece.end):
            try:
                new, finished = sched.unit_done(name, held)
            except ValueError:
                continue
            break
        else:
            pytest.fail(f"{name} holds {piece} with nothing left to deliver")
        counted += new
        if name in finished:
            sched.release(name)
    assert sched.complete
    assert counted == units
    assert sched.done_ranges() == [(0, units)]


def test_piece_record_bytes_and_truncation() -> None:
    record = PieceRecord(4, ((0, 2), (3, 5)))
    assert list(record.units()) == [0, 1, 3, 4]
    assert record.nbytes(18) == 8 + 6  # the last unit (16-18) is 2 bytes
    # A part of 13 bytes holds units 0-1 whole; unit 3 (12-16) and 4 (16-18) are cut.
    assert record.within(13, 18).runs == ((0, 2),)
    assert record.within(18, 18) == record


def test_sources_are_nodes_and_urls_naming_none_come_last() -> None:
    node_a, node_b = "0123456789ab", "ba9876543210"
    urls = [
        f"http://share-a:2000/{node_a}/download/x.bin",
        "http://hub:3240/sha1/" + "f" * 40,
        f"http://share-b:2001/{node_b}/download/x.bin",
        f"http://hub:3240/{node_a}/download/x.bin",
        f"http://hub:3240/{node_b}/sha1/{'f' * 40}",
        f"http://share-a:2000/{node_a}/download/x.bin",
    ]
    assert node_of(urls[0]) == node_a
    assert node_of(urls[1]) is None
    assert group_sources(urls) == (
        Source(node_a, (urls[0], urls[3]), True),
        Source(node_b, (urls[2], urls[4]), True),
        Source(urls[1], (urls[1],), False),
    )
