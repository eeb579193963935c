"""Concurrent writes to one field: the later write by hybrid logical clock wins on every
device whatever the exchange order, the loser stays listed as a conflict, and writing the
field again clears it everywhere. Clocks are injected, so "later" is chosen by the test."""

from __future__ import annotations

from typing import Any

import pytest

from crdt_sync import NotFound, Replica
from tests.conftest import ReplicaFactory
from tests.helpers import ManualClock, exchange, share, space_state, typed

T0 = 1_700_000_000_000


def _pair(open_replica: ReplicaFactory) -> tuple[Replica, Replica, ManualClock, ManualClock]:
    clock_a, clock_b = ManualClock(T0), ManualClock(T0)
    a = open_replica("a", wall=clock_a)
    b = open_replica("b", wall=clock_b)
    a.space("s").put("c", "e", {"f": "base", "other": 0})
    exchange(a, b, "s")
    return a, b, clock_a, clock_b


def _both_ways(a: Replica, b: Replica, a_first: bool) -> None:
    if a_first:
        exchange(a, b, "s")
        exchange(b, a, "s")
    else:
        exchange(b, a, "s")
        exchange(a, b, "s")


@pytest.mark.parametrize("later", ["a", "b"])
@pytest.mark.parametrize("a_first", [True, False])
def test_later_hlc_wins_everywhere_and_the_loser_is_a_conflict(
        open_replica: ReplicaFactory, later: str, a_first: bool) -> None:
    a, b, clock_a, clock_b = _pair(open_replica)
    # Offline, both write the same field; the test decides whose clock is later.
    (clock_a if later == "a" else clock_b).advance(60_000)
    (clock_b if later == "a" else clock_a).advance(1_000)
    a.space("s").put("c", "e", {"f": "from-a"})
    b.space("s").put("c", "e", {"f": "from-b"})
    winner, loser = ("from-a", "from-b") if later == "a" else ("from-b", "from-a")
    winner_device = (a if later == "a" else b).device_id
    loser_device = (b if later == "a" else a).device_id

    _both_ways(a, b, a_first)
    for r in (a, b):
        sp = r.space("s")
        assert sp.get("c", "e") == {"f": winner, "other": 0}
        conflicts = sp.conflicts()
        assert len(conflicts) == 1
        c = conflicts[0]
        assert (c.collection, c.id, c.field) == ("c", "e", "f")
        assert c.winner.value == winner and c.winner.author == winner_device
        assert [(x.value, x.author) for x in c.losers] == [(loser, loser_device)]
        assert c.winner.hlc > c.losers[0].hlc
    assert space_state(a, "s") == space_state(b, "s")

    # Writing the field again (on the loser's side, which has now seen the winner) clears it.
    rewriter = b if later == "a" else a
    rewriter.space("s").put("c", "e", {"f": "settled"})
    _both_ways(a, b, a_first)
    for r in (a, b):
        assert r.space("s").get("c", "e") == {"f": "settled", "other": 0}
        assert r.space("s").conflicts() == []
    assert space_state(a, "s") == space_state(b, "s")


def test_a_device_whose_wall_clock_is_behind_still_beats_what_it_has_seen(
        open_replica: ReplicaFactory) -> None:
    # b's wall clock is an hour behind; after receiving a's write, b's write must still win
    # (the HLC moved past what it observed), and no conflict remains: it was not concurrent.
    a, b, clock_a, _ = _pair(open_replica)
    clock_a.advance(3_600_000)
    a.space("s").put("c", "e", {"f": "a-ahead"})
    exchange(a, b, "s")
    b.space("s").put("c", "e", {"f": "b-after"})
    exchange(b, a, "s")
    for r in (a, b):
        assert r.space("s").get("c", "e")["f"] == "b-after"
        assert r.space("s").conflicts() == []


def test_same_wall_time_is_decided_identically_everywhere(open_replica: ReplicaFactory) -> None:
    a, b, clock_a, clock_b = _pair(open_replica)
    clock_a.advance(5)
    clock_b.advance(5)  # the very same millisecond: the tie-break must still be global
    a.space("s").put("c", "e", {"f": "A"})
    b.space("s").put("c", "e", {"f": "B"})
    _both_ways(a, b, True)
    assert a.space("s").get("c", "e") == b.space("s").get("c", "e")
    assert typed([c.to_dict() for c in a.space("s").conflicts()]) == \
        typed([c.to_dict() for c in b.space("s").conflicts()])
    assert len(a.space("s").conflicts()) == 1


def test_three_way_conflict_lists_every_loser(open_replica: ReplicaFactory) -> None:
    clocks = [ManualClock(T0) for _ in range(3)]
    rs = [open_replica(f"r{i}", wall=clocks[i]) for i in range(3)]
    share(*rs, name="s")
    for i, r in enumerate(rs):
        clocks[i].advance(100 * (i + 1))  # r2 is latest
        r.space("s").put("c", "e", {"f": i})
    for src in rs:
        for dst in rs:
            if src is not dst:
                exchange(src, dst, "s")
    for r in rs:
        [c] = r.space("s").conflicts()
        assert c.winner.value == 2
        assert sorted(x.value for x in c.losers) == [0, 1]
        assert r.space("s").get("c", "e") == {"f": 2}


@pytest.mark.parametrize(("x", "y"), [(1, True), (1, 1.0), (0.0, -0.0), (b"1", "1"), (0, False)])
def test_values_equal_in_python_but_of_another_type_are_a_conflict(
        open_replica: ReplicaFactory, x: Any, y: Any) -> None:
    # Values keep their exact type, so 1 and True are different writes: whichever loses must
    # stay visible, even though 1 == True in Python.
    a, b, clock_a, clock_b = _pair(open_replica)
    clock_a.advance(10)
    clock_b.advance(20)
    a.space("s").put("c", "e", {"f": x})
    b.space("s").put("c", "e", {"f": y})
    _both_ways(a, b, True)
    for r in (a, b):
        assert typed(r.space("s").get("c", "e")["f"]) == typed(y)
        [c] = r.space("s").conflicts()
        assert typed(c.winner.value) == typed(y)
        assert [typed(x_.value) for x_ in c.losers] == [typed(x)]


def test_equal_concurrent_writes_are_not_a_conflict(open_replica: ReplicaFactory) -> None:
    a, b, clock_a, clock_b = _pair(open_replica)
    clock_a.advance(10)
    clock_b.advance(20)
    a.space("s").put("c", "e", {"f": {"k": [1, 2]}})
    b.space("s").put("c", "e", {"f": {"k": [1, 2]}})
    _both_ways(a, b, True)
    for r in (a, b):
        assert r.space("s").conflicts() == []


@pytest.mark.parametrize("later", ["delete", "put"])
def test_concurrent_delete_wins_over_a_write_that_never_saw_it(
        open_replica: ReplicaFactory, later: str) -> None:
    # docs/DESIGN.md: "a concurrent write that never saw the delete does not [revive it]" -
    # whichever has the later clock, and identically on both devices.
    a, b, clock_a, clock_b = _pair(open_replica)
    (clock_a if later == "delete" else clock_b).advance(1000)
    (clock_b if later == "delete" else clock_a).advance(10)
    a.space("s").delete("c", "e")
    b.space("s").put("c", "e", {"f": "edited"})
    _both_ways(a, b, True)
    for r in (a, b):
        with pytest.raises(NotFound):
            r.space("s").get("c", "e")
        assert r.space("s").list() == []
    assert space_state(a, "s", {("c", "e")}) == space_state(b, "s", {("c", "e")})
    # A write made after seeing the delete revives it, everywhere.
    b.space("s").put("c", "e", {"f": "revived"})
    _both_ways(a, b, True)
    for r in (a, b):
        assert r.space("s").get("c", "e")["f"] == "revived"
    assert space_state(a, "s", {("c", "e")}) == space_state(b, "s", {("c", "e")})


def test_conflicts_survive_reopen(open_replica: ReplicaFactory) -> None:
    a, b, clock_a, clock_b = _pair(open_replica)
    clock_a.advance(10)
    clock_b.advance(20)
    a.space("s").put("c", "e", {"f": "a"})
    b.space("s").put("c", "e", {"f": "b"})
    _both_ways(a, b, True)
    before = a.space("s").conflicts()
    assert len(before) == 1
    a.close()
    a = open_replica("a", wall=clock_a)
    assert a.space("s").conflicts() == before


def test_clock_never_runs_backwards_across_reopen(open_replica: ReplicaFactory) -> None:
    # The wall clock jumps back an hour between two runs (a wrong RTC after a battery swap):
    # the hybrid clock still orders this device's writes after everything it wrote before.
    clock = ManualClock(T0 + 3_600_000)
    a = open_replica("a", wall=clock)
    a.space("s").put("c", "e", {"f": 1})
    a.close()
    clock.ms = T0
    a = open_replica("a", wall=clock)
    a.space("s").put("c", "e", {"g": 2})
    a.space("s").put("c", "e", {"f": 3})
    hlcs = [change.hlc for change in a.space("s").history("c", "e")]
    assert len(hlcs) == 3
    assert hlcs == sorted(hlcs) and len(set(hlcs)) == 3
