"""Clock values from other devices, tried as an attacker would (issue 11, finding 3).

Each test first reproduces an attack that worked against the code before the clock rules
(docs/PROTOCOL.md, "Clocks"), then asserts the promise: one clock range for the envelope's
HLC, its items and the register clocks inside its updates; a register never above its
envelope's HLC; no received value moves a device's clock past its wall time plus the allowed
skew; and envelopes stamped further ahead than that are held back, not stored and not lost.
Hostile devices are real replicas with a wall clock set where the attack needs it, or
envelopes signed by hand with the engine's own code.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pycrdt import Doc, Map

from crdt_sync import Rejected, Replica
from crdt_sync.envelope import open_envelope, seal
from crdt_sync.hlc import COUNTER_BITS, MAX_HLC, HybridClock
from crdt_sync.identity import Identity
from crdt_sync.payload import encode_payload, pack_item
from crdt_sync.transports.memory import MemoryNetwork
from tests.helpers import ManualClock, exchange
from tests.sync_helpers import FAST, SPACE, admit, data_payload, sync_over

DAY_MS = 24 * 3600 * 1000
NOW_MS = 1_790_000_000_000  # the tests' "now" (2026), injected as every honest wall clock
YEAR_3000_MS = 32_503_680_000_000


def wires(replica: Replica, space: str = SPACE) -> list[bytes]:
    """Every envelope ``replica`` holds of ``space``, in arrival order."""
    return replica._store.envelopes_since(space, {})  # the test reads what a peer would get


def register_update(client: int, field: str, hlc: int, author: str, value: object) -> bytes:
    """A Yjs update that writes one register the way crdt_sync.entity does."""
    doc: Doc[object] = Doc(client_id=client)
    regs = doc.get("f", type=Map)
    regs[f"{field}\x00{client}"] = cbor2.dumps([hlc, author, 0, value])
    return doc.get_update()


def signed(key: Identity, seq: int, prev: bytes, hlc: int, items: list[tuple[str, str, bytes]]) -> bytes:
    return seal(key, SPACE, seq, prev, hlc, data_payload(key, seq, encode_payload(items))).wire


# -- the range, and what a received time does to this device's clock ------------------------
def test_hlc_just_below_the_old_limit_does_not_break_an_honest_device(tmp_path: Path) -> None:
    """Before: an envelope stamped just below 2**62 was taken; the receiver's clock jumped to
    it, its next edits were stamped at 2**62 and every other device refused them."""
    far = admit(Replica(tmp_path / "far", wall=lambda: (MAX_HLC - 1) >> COUNTER_BITS))
    honest_wall, other_wall = ManualClock(NOW_MS), ManualClock(NOW_MS)
    honest = admit(Replica(tmp_path / "honest", wall=honest_wall))
    other = admit(Replica(tmp_path / "other", wall=other_wall))
    try:
        far.space(SPACE).put("eq", "pump", {"status": "far"})
        far.seal()
        stamped = open_envelope(wires(far)[0]).hlc
        assert MAX_HLC - stamped <= 1 << COUNTER_BITS  # just below the range's end
        honest.receive(wires(far), "peer far")  # a direct receive: no hold-back on this path
        honest.space(SPACE).put("eq", "valve", {"status": "ok"})
        honest.seal()
        mine = [open_envelope(w) for w in wires(honest) if open_envelope(w).author == honest.device_id]
        assert mine[-1].hlc >> COUNTER_BITS <= NOW_MS + DAY_MS, "the received time moved the clock"
        exchange(honest, other, SPACE)  # the other device takes the honest device's edits
        assert other.version_vector(SPACE)[honest.device_id] == 1
        exchange(other, honest, SPACE)  # and the honest device still pulls
    finally:
        for r in (far, honest, other):
            r.close()


def test_envelope_hlc_out_of_range_is_refused(tmp_path: Path) -> None:
    key = Identity.generate()
    with admit(Replica(tmp_path / "r")) as replica:
        admit(replica)
        for hlc in (MAX_HLC, 1 << 63, 2**64 - 1):
            wire = signed(key, 1, b"", hlc, [("eq", "pump", pack_item(1, register_update(
                7, "status", 1, key.id, "x")))])
            with pytest.raises(Rejected) as refused:
                replica.receive([wire], "peer")
            assert refused.value.reason == "clock-range"
        assert replica.version_vector(SPACE) == {}


def test_item_above_its_envelope_is_refused(tmp_path: Path) -> None:
    key = Identity.generate()
    env_hlc = NOW_MS << COUNTER_BITS
    with admit(Replica(tmp_path / "r")) as replica:
        admit(replica)
        wire = signed(key, 1, b"", env_hlc, [("eq", "pump", pack_item(env_hlc + 1, register_update(
            7, "status", env_hlc, key.id, "x")))])
        with pytest.raises(Rejected) as refused:
            replica.receive([wire], "peer")
        assert refused.value.reason == "item-clock"


# -- register clocks ------------------------------------------------------------------------
@pytest.mark.parametrize("register_hlc", [2**64 - 1, MAX_HLC, (NOW_MS << COUNTER_BITS) + 1])
def test_register_clock_above_its_envelope_is_refused(tmp_path: Path, register_hlc: int) -> None:
    """Before: a register clock of 2**64-1 won its field, and the process that loaded it
    could not write anything again (its clock ran past 64 bits: struct.error)."""
    key = Identity.generate()
    env_hlc = NOW_MS << COUNTER_BITS
    with admit(Replica(tmp_path / "r", wall=ManualClock(NOW_MS))) as replica:
        admit(replica)
        sp = replica.space(SPACE)
        sp.put("eq", "pump", {"status": "ok"})
        replica.seal()
        sp.get("eq", "pump")  # loaded: the update applies to a cached entity
        wire = signed(key, 1, b"", env_hlc, [("eq", "pump", pack_item(env_hlc, register_update(
            7, "status", register_hlc, key.id, "hostile")))])
        with pytest.raises(Rejected) as refused:
            replica.receive([wire], "peer")
        assert refused.value.reason == "register-clock"
        assert sp.get("eq", "pump") == {"status": "ok"}
        sp.put("eq", "pump", {"status": "still writable"})
        replica.seal()
        assert sp.get("eq", "pump") == {"status": "still writable"}


def test_register_clock_checked_on_an_entity_not_loaded(tmp_path: Path) -> None:
    key = Identity.generate()
    env_hlc = NOW_MS << COUNTER_BITS
    with admit(Replica(tmp_path / "r", wall=ManualClock(NOW_MS))) as replica:
        admit(replica)
        wire = signed(key, 1, b"", env_hlc, [("eq", "new", pack_item(env_hlc, register_update(
            7, "status", 2**64 - 1, key.id, "hostile")))])
        with pytest.raises(Rejected) as refused:
            replica.receive([wire], "peer")
        assert refused.value.reason == "register-clock"
        assert replica.space(SPACE).list() == []
        replica.space(SPACE).put("eq", "other", {"ok": True})
        replica.seal()


def test_register_clock_equal_to_its_envelope_is_taken(tmp_path: Path) -> None:
    key = Identity.generate()
    env_hlc = NOW_MS << COUNTER_BITS
    with admit(Replica(tmp_path / "r", wall=ManualClock(NOW_MS))) as replica:
        admit(replica)
        wire = signed(key, 1, b"", env_hlc, [("eq", "pump", pack_item(env_hlc, register_update(
            7, "status", env_hlc, key.id, "theirs")))])
        assert replica.receive([wire], "peer").applied == 1
        assert replica.space(SPACE).get("eq", "pump") == {"status": "theirs"}


# -- the year-3000 device ---------------------------------------------------------------------
def test_year_3000_does_not_drag_the_clock(tmp_path: Path) -> None:
    """Before: every time a device received moved its clock, so one device set to the year
    3000 dragged every device that received from it to the year 3000."""
    with admit(Replica(tmp_path / "y3k", wall=lambda: YEAR_3000_MS)) as y3k, \
            admit(Replica(tmp_path / "honest", wall=ManualClock(NOW_MS))) as honest:
        y3k.space(SPACE).put("eq", "pump", {"status": "from the future"})
        y3k.seal()
        honest.receive(wires(y3k), "peer y3k")  # the direct API: only the bound on observe
        honest.space(SPACE).put("eq", "valve", {"status": "ok"})
        honest.seal()
        mine = [e for e in map(open_envelope, wires(honest)) if e.author == honest.device_id]
        assert mine[-1].hlc >> COUNTER_BITS <= NOW_MS + DAY_MS


async def test_year_3000_is_held_back_by_a_peer_session(tmp_path: Path) -> None:
    """Over a session the receiver holds the year-3000 envelopes back: it stores none, its
    clock stays, the session ends synced (apart from what is held back) instead of failing,
    and the sender's status says that the peer refused its clock, and by how much."""
    honest_wall = ManualClock(NOW_MS)
    with admit(Replica(tmp_path / "y3k", wall=lambda: YEAR_3000_MS)) as y3k, \
            admit(Replica(tmp_path / "honest", wall=honest_wall)) as honest:
        for r in (y3k, honest):
            admit(r)
        honest.space(SPACE).put("eq", "pump", {"status": "honest"})
        honest.seal()
        y3k.space(SPACE).put("eq", "pump", {"status": "from the future"})
        y3k.seal()
        before = honest._clock.last
        a, b = MemoryNetwork(seed=1).pair()
        out_y, out_h = await sync_over(y3k, honest, a, b, config=FAST)
        assert out_y.synced and out_h.synced, (out_y.closed, out_h.closed)
        assert y3k.device_id not in honest.version_vector(SPACE)
        assert honest.space(SPACE).get("eq", "pump") == {"status": "honest"}
        assert honest._clock.last == before
        # the year-3000 device got the honest edit (it is not refused by anyone)
        assert y3k.version_vector(SPACE)[honest.device_id] == 1
        refused = y3k.status().clock_refusals
        assert [(r.peer, r.space, r.author, r.seq) for r in refused] == [
            (honest.device_id, SPACE, y3k.device_id, 1)]
        assert refused[0].ahead_ms >= YEAR_3000_MS - NOW_MS - DAY_MS


async def test_held_back_until_the_receivers_clock_catches_up(tmp_path: Path) -> None:
    """Nothing is lost: the envelope stays with its author, later seqs of that author wait
    too, and all of them are taken by a later session once the receiver's clock agrees."""
    receiver_wall = ManualClock(NOW_MS)
    with admit(Replica(tmp_path / "ahead", wall=lambda: NOW_MS + 2 * DAY_MS, seal_interval=0)) as ahead, \
            admit(Replica(tmp_path / "receiver", wall=receiver_wall)) as receiver:
        admit(receiver)
        for i in range(3):
            ahead.space(SPACE).put("eq", f"pump-{i}", {"n": i})
            ahead.seal()
        a, b = MemoryNetwork(seed=2).pair()
        out_a, out_r = await sync_over(ahead, receiver, a, b, config=FAST)
        assert out_a.synced and out_r.synced
        assert ahead.device_id not in receiver.version_vector(SPACE)
        refused = ahead.status().clock_refusals
        assert [(r.author, r.seq, r.mine) for r in refused] == [(ahead.device_id, 1, True)]
        assert 2 * DAY_MS - 1000 <= refused[0].ahead_ms <= 2 * DAY_MS

        receiver_wall.advance(DAY_MS + 60_000)  # now 1 day minus a minute behind: allowed
        a, b = MemoryNetwork(seed=3).pair()
        out_a, out_r = await sync_over(ahead, receiver, a, b, config=FAST)
        assert out_a.synced and out_r.synced
        assert receiver.version_vector(SPACE)[ahead.device_id] == 3
        assert ahead.status().clock_refusals == []  # the receiver acknowledged them


def test_a_live_session_resends_once_the_peer_may_have_caught_up(tmp_path: Path) -> None:
    """The sender stops sending a chain the peer holds back and tries again ``ahead_ms``
    later in the same session (sans-I/O: time is passed in)."""
    from crdt_sync.protocol import Session
    from crdt_sync.protocol.messages import ClockSkew, Envelopes
    from tests.sync_helpers import opened

    receiver_wall = ManualClock(NOW_MS)
    with admit(Replica(tmp_path / "ahead", wall=lambda: NOW_MS + 2 * DAY_MS, seal_interval=0)) as ahead, \
            admit(Replica(tmp_path / "receiver", wall=receiver_wall)) as receiver:
        admit(receiver)
        ahead.space(SPACE).put("eq", "pump", {"n": 1})
        ahead.seal()
        # (time jumps by two days here: no pings in between, so no silence timeout)
        quiet = dataclasses.replace(FAST, dead_after=1e9, ping_interval=1e9)
        s_a, s_r = Session(ahead.sync_host, 0.0, quiet), Session(receiver.sync_host, 0.0, quiet)
        seen: list[object] = []

        def run(to_r: list[bytes], to_a: list[bytes], now: float) -> None:
            for _ in range(100):  # bounded exchange until both sides are quiet
                if not to_r and not to_a:
                    return
                for f in to_r:
                    seen.append(opened(s_r, f))
                    to_a += s_r.receive(f, now)
                to_r = []
                for f in to_a:
                    seen.append(opened(s_a, f))
                    to_r += s_a.receive(f, now)
                to_a = []
            raise AssertionError("the sessions did not go quiet")

        run(s_a.start(), s_r.start(), 0.0)
        assert any(isinstance(m, ClockSkew) for m in seen)
        assert s_a.synced and s_r.synced and s_a.closed is None and s_r.closed is None
        sent = sum(isinstance(m, Envelopes) for m in seen)
        deadline = s_a.next_deadline()
        assert deadline is not None and deadline >= 2 * DAY_MS / 1000  # the retry
        run(s_a.tick(1.0), s_r.tick(1.0), 1.0)  # nothing is resent before the peer may have caught up
        assert sum(isinstance(m, Envelopes) for m in seen) == sent
        receiver_wall.advance(2 * DAY_MS)
        later = 2 * DAY_MS / 1000 + 1
        run(s_a.tick(later), s_r.tick(later), later)
        assert receiver.version_vector(SPACE)[ahead.device_id] == 1


def test_a_bundle_from_the_future_waits(tmp_path: Path) -> None:
    """A bundle is a receipt too: its envelopes stamped too far ahead are not imported (nor
    their author's later ones), the rest is, and importing the same file again once the
    clocks agree takes them."""
    wall = ManualClock(NOW_MS)
    with admit(Replica(tmp_path / "ahead", wall=lambda: NOW_MS + 2 * DAY_MS)) as ahead, \
            admit(Replica(tmp_path / "honest", wall=ManualClock(NOW_MS - 1000))) as honest, \
            admit(Replica(tmp_path / "target", wall=wall)) as target:
        honest.space(SPACE).put("eq", "pump", {"status": "honest"})
        honest.seal()
        exchange(honest, ahead, SPACE)  # the bundle will carry the honest chain too
        for i in range(2):
            ahead.space(SPACE).put("eq", "pump", {"status": f"ahead {i}"})
            ahead.seal()
        bundle = ahead.export_bundle(SPACE)
        first = target.import_bundle(bundle)
        assert (first.applied, first.held_back) == (1, 2)
        assert 2 * DAY_MS - 1000 <= first.ahead_ms <= 2 * DAY_MS
        assert target.space(SPACE).get("eq", "pump") == {"status": "honest"}
        assert ahead.device_id not in target.version_vector(SPACE)
        wall.advance(DAY_MS + 60_000)
        again = target.import_bundle(bundle)
        assert (again.applied, again.duplicates, again.held_back) == (2, 1, 0)
        assert target.space(SPACE).get("eq", "pump") == {"status": "ahead 1"}


def test_the_skew_option_is_checked(tmp_path: Path) -> None:
    for bad in (0, -1.0, float("nan"), 400 * 24 * 3600):
        with pytest.raises(ValueError, match="max_clock_skew"):
            admit(Replica(tmp_path / "r", max_clock_skew=bad))
    with admit(Replica(tmp_path / "r", max_clock_skew=60.0, wall=ManualClock(NOW_MS))) as replica:
        admit(replica)
        assert replica.sync_host.max_clock_skew_ms == 60_000


@pytest.mark.parametrize("seed", range(6))
async def test_hold_back_over_a_lossy_link(tmp_path: Path, seed: int) -> None:
    """Lost, duplicated and reordered frames (CLOCK_SKEW included) cost resends, never a
    stuck or failed session: both sides end synced, the honest chain arrives, the one ahead
    does not."""
    from crdt_sync.transports.memory import LinkConditions

    lossy = LinkConditions(latency=0.001, jitter=0.002, loss=0.2, duplicate=0.2, reorder=0.3)
    with admit(Replica(tmp_path / "ahead", wall=lambda: NOW_MS + 3 * DAY_MS, seal_interval=0)) as ahead, \
            admit(Replica(tmp_path / "honest", wall=ManualClock(NOW_MS), seal_interval=0)) as honest, \
            admit(Replica(tmp_path / "receiver", wall=ManualClock(NOW_MS))) as receiver:
        admit(receiver)
        for i in range(5):
            honest.space(SPACE).put("eq", f"h-{i}", {"n": i})
            honest.seal()
        exchange(honest, ahead, SPACE)  # the device ahead forwards the honest chain too
        for i in range(5):
            ahead.space(SPACE).put("eq", f"a-{i}", {"n": i})
            ahead.seal()
        a, b = MemoryNetwork(seed).pair(lossy, lossy)
        out_a, out_r = await sync_over(ahead, receiver, a, b, config=FAST)
        # (either side's "synced": the other may miss the last frames on such a link)
        assert out_a.synced or out_r.synced, (out_a.closed, out_r.closed)
        assert receiver.version_vector(SPACE) == {honest.device_id: 5}
        assert receiver.rejections() == [] and ahead.rejections() == []
        a, b = MemoryNetwork(seed).pair()  # and again over a clean link
        out_a, out_r = await sync_over(ahead, receiver, a, b, config=FAST)
        assert out_a.synced and out_r.synced, (out_a.closed, out_r.closed)
        assert receiver.version_vector(SPACE) == {honest.device_id: 5}
        assert [(r.author, r.seq) for r in ahead.status().clock_refusals] == [(ahead.device_id, 1)]


@given(steps=st.lists(st.one_of(
    st.tuples(st.just("now"), st.integers(0, 10)),
    st.tuples(st.just("observe"), st.integers(0, 2**64 - 1)),
    st.tuples(st.just("wall"), st.integers(-5 * DAY_MS, 5 * DAY_MS))), max_size=60))
def test_the_clock_is_bounded_and_strictly_increasing(steps: list[tuple[str, int]]) -> None:
    """Whatever it observes, the clock never passes wall + skew by observing (only by
    counting up from there), and every time it hands out is above the previous ones."""
    wall = ManualClock(NOW_MS)
    clock = HybridClock(wall, 2**64 - 1)  # even the time it starts from is bounded
    assert clock.last == (NOW_MS + DAY_MS) << COUNTER_BITS
    handed: list[int] = []
    for kind, value in steps:
        if kind == "wall":
            wall.ms = max(0, NOW_MS + value)
        elif kind == "observe":
            before = clock.last
            clock.observe(value)
            assert clock.last == max(before, min(value, (wall.ms + DAY_MS) << COUNTER_BITS))
        else:
            for _ in range(value):
                handed.append(clock.now())
    assert handed == sorted(set(handed))
    assert all(t < MAX_HLC for t in handed)
