"""The transport conformance cases, written once (see :mod:`tests.conformance`).

Cases taking ``harness`` run on every registered transport; cases taking ``direct_harness``
run on the point-to-point ones. They run real replicas on real data directories through
:func:`crdt_sync.transports.driver.run_session` over the transport under test. Where a
store-and-forward hub sits between the replicas, the same case states what the hub must hold
as well (``harness.hub``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import random
from pathlib import Path
from typing import Any

import pytest

from crdt_sync import Replica
from crdt_sync.cli import main as cli_main
from crdt_sync.protocol import Authenticated
from crdt_sync.protocol.messages import (
    E_GOING_AWAY,
    E_MALFORMED,
    E_NORMAL,
    E_TOO_LARGE,
    MAX_FRAME,
    Hello,
    decode,
)
from crdt_sync.transports.base import TransportError
from crdt_sync.transports.driver import run_session
from tests.conformance.harness import (
    BIG_BATCH,
    BIG_COUNT,
    BIG_SPACE,
    Faults,
    HandDriven,
    TransportHarness,
    copy_big_template,
    deliver_then_hang_up,
    open_link,
)
from tests.conftest import ReplicaFactory
from tests.helpers import SHARED, share
from tests.relay_helpers import arrival, synced_flag
from tests.sync_helpers import (
    FAST,
    WAIT,
    applied,
    duplicates,
    expected_code,
    fill,
    snapshot,
    wait_event,
)


def seen_peer(harness: TransportHarness, other: Replica) -> str:
    """The peer a replica's sessions see when it syncs with ``other`` through ``harness``."""
    return harness.hub.device_id if harness.hub is not None else other.device_id


# -- connect and sync ----------------------------------------------------------------------------
async def test_one_shot_sync_converges(harness: TransportHarness, open_replica: ReplicaFactory) -> None:
    a, b = open_replica("a"), open_replica("b")
    space = share(a, b)
    fill(a, "a", 5, space)
    fill(b, "b", 3, space)
    a.space(space).put("equipment", "shared", {"status": "ok"})
    b.space(space).put("equipment", "shared", {"notes": "checked"})
    only_a = a.space("only-a")  # b does not keep it: must not reach b
    only_a.put("equipment", "x", {"n": 1})

    outcomes = await harness.sync(a, b)
    # Point to point, one session each, with each other; through a hub, a uploads, b takes a's
    # and uploads, a takes b's.
    expected = [b.device_id, a.device_id] if harness.hub is None else [harness.hub.device_id] * 4
    assert [outcome.peer for outcome in outcomes] == expected
    for outcome in outcomes:
        assert outcome.synced and outcome.ok, outcome.closed
    assert snapshot(a, space).key() == snapshot(b, space).key()
    assert len(snapshot(a, space).rows) == 5 + 3 + 1
    assert b.space(space).get("equipment", "shared") == {"status": "ok", "notes": "checked"}
    assert only_a.id not in b.spaces()
    if harness.hub is not None:
        assert only_a.id in harness.hub.spaces()  # the relay keeps every space it is given
    assert a.rejections() == [] and b.rejections() == []


async def test_status_shows_what_the_peer_acknowledged(harness: TransportHarness,
                                                       open_replica: ReplicaFactory) -> None:
    a, b = open_replica("a"), open_replica("b")
    space = share(a, b)
    fill(a, "a", 3, space)
    fill(b, "b", 2, space)
    outcomes = await harness.sync(a, b)
    assert all(outcome.synced for outcome in outcomes), [o.closed for o in outcomes]
    vv = a.version_vector(space)
    assert vv == b.version_vector(space) and len(vv) == 2

    def peers(status: dict[str, Any]) -> dict[str, Any]:
        return {p["device"]: p["version_vector"] for p in status["spaces"][space]["peers"]}

    assert peers(a.status().to_dict()) == {seen_peer(harness, b): vv}  # through a hub, a's peer is the hub
    # b took a's bundle of the grants (share): it has seen a hold those, which through a hub
    # stays the last it heard from a itself
    from_bundle = {} if harness.hub is None else {a.device_id: {a.device_id: SHARED}}
    assert peers(b.status().to_dict()) == {seen_peer(harness, a): vv, **from_bundle}
    assert a.status().spaces[space].unacknowledged == 0
    a.close()  # the command opens the data directory itself
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main(["status", "--json", "--data", str(a.path)]) == 0
    assert peers(json.loads(out.getvalue())) == {seen_peer(harness, b): vv}


# -- live push ---------------------------------------------------------------------------------
async def test_live_push_after_catch_up(harness: TransportHarness, open_replica: ReplicaFactory) -> None:
    a, b = open_replica("a"), open_replica("b")
    space = share(a, b)  # b holds only what a's grant gave it, and keeps the space
    fill(a, "a", 2, space)
    stop = asyncio.Event()
    (a_ready, a_events), (b_ready, b_events) = synced_flag(space), synced_flag(space)
    async with open_link(harness) as (la, lb), asyncio.timeout(4 * WAIT), asyncio.TaskGroup() as tg:
        ta = tg.create_task(run_session(a, la, live=True, stop=stop, config=FAST, on_event=a_events))
        tb = tg.create_task(run_session(b, lb, live=True, stop=stop, config=FAST, on_event=b_events))
        try:
            await wait_event(a_ready, "a to catch up")
            await wait_event(b_ready, "b to catch up (through a hub: a's first edits came through it)")
            to_b, to_a = arrival(b, "pushed-a", space), arrival(a, "pushed-b", space)
            a.space(space).put("equipment", "pushed-a", {"status": "new"})
            await wait_event(to_b, "a's live edit to reach b")
            b.space(space).put("equipment", "pushed-b", {"status": "also"})
            await wait_event(to_a, "b's live edit to reach a")
        finally:
            stop.set()
    assert b.space(space).get("equipment", "pushed-a") == {"status": "new"}
    assert a.space(space).get("equipment", "pushed-b") == {"status": "also"}
    assert snapshot(a, space).key() == snapshot(b, space).key()
    for outcome in (ta.result(), tb.result()):
        assert outcome.closed is not None and outcome.closed.code in (E_NORMAL, E_GOING_AWAY)


# -- interruption and resume -------------------------------------------------------------------
async def test_disconnect_mid_transfer_then_resume(direct_harness: TransportHarness,
                                                   open_replica: ReplicaFactory,
                                                   big_template: Path, tmp_path: Path) -> None:
    copy_big_template(big_template, tmp_path)
    a, b = open_replica("a"), open_replica("b")
    space = a.space_id(BIG_SPACE)
    fill(b, "b", 5, space)
    total = BIG_COUNT  # what b lacks of a's chain (it holds the SHARED envelopes before them)

    # Handshake and HAVEs are about ten frames; the drop comes a few batches later.
    first = await direct_harness.sync(a, b, faults=Faults(disconnect_after_frames=24), config=BIG_BATCH)
    to_b, to_a = applied(first[1]), applied(first[0])
    assert not first[0].synced and not first[1].synced
    assert 0 < to_b < total, f"the drop did not fall mid-transfer ({to_b} of {total})"
    assert len(b.space(space).list()) == 5 + to_b  # what was acknowledged is committed

    second = await direct_harness.sync(a, b, config=BIG_BATCH)
    assert second[0].synced and second[1].synced
    # Each envelope applied exactly once over both sessions, and nothing sent twice.
    assert applied(second[1]) == total - to_b, "resumed from the wrong place"
    assert applied(second[0]) == 5 - to_a
    assert duplicates(second[0]) == duplicates(second[1]) == 0
    assert a.version_vector(space) == b.version_vector(space)
    assert len(a.space(space).list()) == len(b.space(space).list()) == total + 5
    assert b.space(space).get("equipment", f"big-{total - 1}") == {"n": total - 1, "by": "big"}
    assert a.rejections() == [] and b.rejections() == []


async def test_peer_closing_right_after_its_last_frames(direct_harness: TransportHarness,
                                                        open_replica: ReplicaFactory) -> None:
    """The peer sends envelopes, its final ACK and BYE, and hangs up at once.

    What the peer delivered must still be read, and the session ends synced with a normal
    close. When the hang-up is instant (memory), the answer to the envelopes cannot be sent and
    the peer's BYE ends the session (``by_peer``). A WebSocket closes by handshake: the answer
    still goes out, the peer's final ACK completes the sync, and either side may say BYE first.
    """
    a, b = open_replica("a"), open_replica("b")
    space = share(a, b)
    fill(a, "a", 1, space)
    fill(b, "b", 1, space)
    async with open_link(direct_harness) as (la, lb), asyncio.TaskGroup() as tg:
        task = tg.create_task(run_session(a, la, config=FAST, timeout=WAIT))
        await deliver_then_hang_up(b, lb, a, space)
    outcome = task.result()
    assert outcome.synced, outcome.closed
    assert outcome.closed is not None and outcome.closed.code == E_NORMAL, outcome.closed
    if direct_harness.instant_hangup:
        assert outcome.closed.by_peer, outcome.closed
    assert a.version_vector(space) == b.version_vector(space) == {a.device_id: SHARED + 1, b.device_id: 1}


# -- duplication and reordering ----------------------------------------------------------------
@pytest.mark.parametrize("faults", [Faults(duplicate=0.3, seed=1), Faults(reorder=0.3, seed=2),
                                    Faults(duplicate=0.25, reorder=0.25, seed=3)],
                         ids=["duplicate", "reorder", "both"])
async def test_duplicated_and_reordered_frames_converge(harness: TransportHarness,
                                                        open_replica: ReplicaFactory,
                                                        faults: Faults) -> None:
    a, b = open_replica("a", seal_interval=0), open_replica("b", seal_interval=0)
    space = share(a, b)
    fill(a, "a", 40, space)
    fill(b, "b", 30, space)
    with a.space(space).transaction() as tx:
        tx.entity("equipment", "a-0").text("notes").append("from a")
    with b.space(space).transaction() as tx:
        tx.entity("equipment", "a-0").list("parts").append("from b")
    config = dataclasses.replace(FAST, batch_count=4)  # many frames to disturb

    outcomes = await harness.sync(a, b, faults=faults, config=config)
    if harness.hub is None:
        # The side that finishes first closes the link; its last frames may be lost with it,
        # so only one side is sure to see the end. The data is what must agree.
        oa, ob = outcomes
        assert oa.synced or ob.synced, (oa.closed, ob.closed)
    assert snapshot(a, space).key() == snapshot(b, space).key()
    assert a.version_vector(space) == {a.device_id: SHARED + 41, b.device_id: 31}
    if harness.hub is not None:
        assert harness.hub.version_vector(space) == a.version_vector(space)
        assert harness.hub.rejections() == []
    assert a.space(space).get("equipment", "a-0") == {"n": 0, "by": "a", "notes": "from a",
                                                    "parts": ["from b"]}
    assert a.rejections() == [] and b.rejections() == []


# -- hostile frames ----------------------------------------------------------------------------
OVERSIZED = b"\x5a" + (MAX_FRAME + 1).to_bytes(4, "big") + bytes(MAX_FRAME + 1)  # a CBOR bstr
GARBAGE = {"random": random.Random(7).randbytes(300), "empty": b"",
           "truncated": bytes.fromhex("8600010158208a88e3dd7409f195")}


@pytest.mark.parametrize("stage", ["before-handshake", "in-sync"])
async def test_oversized_frame_is_refused(direct_harness: TransportHarness, open_replica: ReplicaFactory,
                                          stage: str) -> None:
    frame = OVERSIZED
    assert expected_code(frame) == E_TOO_LARGE
    if direct_harness.max_frame is not None and direct_harness.max_frame < len(frame):
        async with open_link(direct_harness) as (la, _lb):
            with pytest.raises(TransportError):
                await la.send(frame)  # the transport itself refuses it: equally safe
        return
    await _hostile_frame(open_replica, direct_harness, frame, stage, E_TOO_LARGE)


@pytest.mark.parametrize("garbage", ["random", "empty", "truncated"])
@pytest.mark.parametrize("stage", ["before-handshake", "in-sync"])
async def test_garbage_frame_is_refused(direct_harness: TransportHarness, open_replica: ReplicaFactory,
                                        garbage: str, stage: str) -> None:
    frame = GARBAGE[garbage]
    assert expected_code(frame) == E_MALFORMED
    await _hostile_frame(open_replica, direct_harness, frame, stage, E_MALFORMED)


async def _hostile_frame(open_replica: ReplicaFactory, harness: TransportHarness, frame: bytes,
                         stage: str, code: int) -> None:
    victim, attacker = open_replica("victim"), open_replica("attacker")
    space = share(victim, attacker)  # a member gone hostile: its frames, not its rights, are the attack
    fill(victim, "v", 3, space)
    fill(attacker, "x", 1, space)
    before = snapshot(victim, space)
    async with open_link(harness) as (lv, lx), asyncio.TaskGroup() as tg:
        session = tg.create_task(run_session(victim, lv, config=FAST, timeout=WAIT))
        peer = HandDriven(attacker, lx)
        if stage == "before-handshake":
            async with asyncio.timeout(WAIT):
                assert isinstance(decode(await lx.recv()), Hello)
        else:
            await peer.authenticate()
        await lx.send(peer.seal(frame) if stage == "in-sync" else frame)
        error = await peer.error_reply()
    outcome = session.result()
    assert error.code == code, error
    assert outcome.closed is not None
    assert (outcome.closed.code, outcome.closed.by_peer) == (code, False)
    assert not outcome.synced
    assert (stage == "in-sync") == any(isinstance(e, Authenticated) for e in outcome.events)
    assert snapshot(victim, space) == before
    assert victim.rejections() == []
