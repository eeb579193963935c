"""The conformance suite's direct cases, in the shape they take with the relay as the peer.

The suite (``tests/conformance/``) runs every case that two devices can run through a relay on
the relay's store-and-forward harness already. Its direct cases cannot: they drive one end of a
link by hand, or assert on both sessions of one link. Here each is stated with the relay as
that end: a transfer to the relay is cut and resumed, a device hangs up on the relay right
after its last frames, and the relay is the victim of a hostile frame.
``test_every_direct_case_has_a_relay_version`` fails when the suite gains a direct case that
has no version here yet.
"""

from __future__ import annotations

import asyncio
import inspect
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import tests.conformance.test_suite as suite
from crdt_sync.protocol import Session
from crdt_sync.protocol.messages import (
    E_MALFORMED,
    E_TOO_LARGE,
    ERROR_NAMES,
    MAX_FRAME,
    Hello,
    decode,
)
from tests.conformance.harness import (
    BIG_BATCH,
    BIG_COUNT,
    BIG_SPACE,
    Faults,
    HandDriven,
    copy_big_template,
    deliver_then_hang_up,
    open_link,
)
from tests.conformance.relay import RelayHubHarness, one_session, relay_hub_harness
from tests.conftest import ReplicaFactory
from tests.helpers import SHARED, share
from tests.relay_helpers import rejections, wait_until
from tests.sync_helpers import WAIT, applied, duplicates, expected_code, fill


@pytest.fixture
async def links(tmp_path: Path) -> AsyncIterator[RelayHubHarness]:
    async with relay_hub_harness(tmp_path / "transport") as harness:
        yield harness


# -- interruption and resume -------------------------------------------------------------------
async def test_disconnect_mid_transfer_then_resume(links: RelayHubHarness, open_replica: ReplicaFactory,
                                                   big_template: Path, tmp_path: Path) -> None:
    copy_big_template(big_template, tmp_path)
    a, b = open_replica("a"), open_replica("b")
    space = a.space_id(BIG_SPACE)
    fill(b, "b", 5, space)
    total, relay = SHARED + BIG_COUNT, links.relay  # a's chain: b holds its SHARED first ones

    async with open_link(links, Faults(disconnect_after_frames=24)) as (la, _lb):
        first = await one_session(a, la, BIG_BATCH)
    got = links.hub.version_vector(space).get(a.device_id, 0)
    acked = a.peer_version_vector(relay.device_id, space).get(a.device_id, 0)
    assert not first.synced
    assert 0 < got < total, f"the drop did not fall mid-transfer ({got} of {total})"
    assert 0 < acked <= got  # what a saw acknowledged, the relay has committed

    sessions: list[Session] = []
    async with open_link(links) as (la, _lb):
        second = await one_session(a, la, BIG_BATCH, on_session=sessions.append)
    assert second.synced and second.ok
    assert sessions[0].envelopes_out == total - got, "resumed from the wrong place"
    assert links.hub.version_vector(space) == {a.device_id: total}

    outcomes = await links.sync(b, a, config=BIG_BATCH)
    assert applied(outcomes[0]) == BIG_COUNT and duplicates(outcomes[0]) == 0
    assert a.version_vector(space) == b.version_vector(space)
    assert len(a.space(space).list()) == len(b.space(space).list()) == BIG_COUNT + 5
    assert b.space(space).get("equipment", f"big-{BIG_COUNT - 1}") == {"n": BIG_COUNT - 1, "by": "big"}
    assert a.rejections() == [] and b.rejections() == []
    assert links.hub.rejections() == []


async def test_peer_closing_right_after_its_last_frames(links: RelayHubHarness,
                                                        open_replica: ReplicaFactory) -> None:
    """A device sends its envelopes, its final ACK and BYE, and hangs up at once: the relay
    cannot answer, but must still store what the device delivered."""
    a, b = open_replica("a"), open_replica("b")
    space = share(a, b)
    fill(a, "a", 1, space)
    fill(b, "b", 1, space)
    await links.upload(a)  # the relay holds a's envelope
    async with open_link(links) as (_la, lb):
        await deliver_then_hang_up(b, lb, a, space)

    async def stored() -> bool:
        return links.hub.version_vector(space).get(b.device_id, 0) == 1

    await wait_until(stored, "the relay to store what b sent before hanging up")
    async with open_link(links) as (la, _lb):
        last = await one_session(a, la)
    assert last.synced
    assert a.version_vector(space) == b.version_vector(space) == {a.device_id: SHARED + 1, b.device_id: 1}


# -- hostile frames: the relay is the victim ------------------------------------------------------
@pytest.mark.parametrize("stage", ["before-handshake", "in-sync"])
async def test_oversized_frame_is_refused(links: RelayHubHarness, open_replica: ReplicaFactory,
                                          stage: str) -> None:
    frame = b"\x5a" + (MAX_FRAME + 1).to_bytes(4, "big") + bytes(MAX_FRAME + 1)  # a CBOR bstr
    assert frame == suite.OVERSIZED
    assert expected_code(frame) == E_TOO_LARGE
    assert links.max_frame is not None and len(frame) < links.max_frame  # reaches the session
    await _hostile_frame(open_replica, links, frame, stage, E_TOO_LARGE)


@pytest.mark.parametrize("garbage", ["random", "empty", "truncated"])
@pytest.mark.parametrize("stage", ["before-handshake", "in-sync"])
async def test_garbage_frame_is_refused(links: RelayHubHarness, open_replica: ReplicaFactory,
                                        garbage: str, stage: str) -> None:
    frame = {"random": random.Random(7).randbytes(300), "empty": b"",
             "truncated": bytes.fromhex("8600010158208a88e3dd7409f195")}[garbage]
    assert frame == suite.GARBAGE[garbage]
    assert expected_code(frame) == E_MALFORMED
    await _hostile_frame(open_replica, links, frame, stage, E_MALFORMED)


async def _hostile_frame(open_replica: ReplicaFactory, links: RelayHubHarness, frame: bytes,
                         stage: str, code: int) -> None:
    relay = links.relay
    device, attacker = open_replica("device"), open_replica("attacker")
    space = share(device, attacker)  # a member gone hostile: its frames are the attack
    fill(device, "v", 3, space)
    fill(attacker, "x", 1, space)
    await links.upload(device)
    before = links.hub.version_vector(space)
    async with open_link(links) as (lx, _lb):
        peer = HandDriven(attacker, lx)
        if stage == "before-handshake":
            async with asyncio.timeout(WAIT):
                assert isinstance(decode(await lx.recv()), Hello)
        else:
            await peer.authenticate()
        await lx.send(frame)
        error = await peer.error_reply()
    assert error.code == code, error
    assert await rejections(relay.url, ERROR_NAMES[code]) == 1
    assert links.hub.version_vector(space) == before  # nothing of the attacker's was taken
    assert links.hub.rejections() == []  # refused as a frame, before any envelope
    async with open_link(links) as (la, _lb):  # and the relay still serves devices
        again = await one_session(device, la)
    assert again.synced and again.ok


def test_every_direct_case_has_a_relay_version() -> None:
    def cases(module: object, fixture: str | None = None) -> set[str]:
        return {name for name, fn in vars(module).items()
                if name.startswith("test_") and callable(fn)
                and (fixture is None or fixture in inspect.signature(fn).parameters)}

    direct = cases(suite, "direct_harness")
    assert direct, "the suite has no direct cases: the check below would prove nothing"
    here = cases(inspect.getmodule(test_every_direct_case_has_a_relay_version))
    assert direct <= here, f"direct suite cases without a store-and-forward version: {sorted(direct - here)}"
